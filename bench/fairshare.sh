#!/bin/sh
# Fair-share benchmark (issue 21): a gateway with a 20 Mbit/s uplink (both ways, a "modem" bridge
# between its WAN and the Internet) and two subscribers. B moves data with one TCP stream alone,
# then while A floods with 8 TCP streams or UDP at 40 Mbit/s, downloads and uploads; without
# shaping (bandwidth_down/up 0) and with 19000 kbit/s. Prints B's share of the uplink.
# Usage: sudo [METHOD=wireguard|openvpn] [SHAPED_KBIT=19000] [QUICK=1: shaped download only] bench/fairshare.sh   (needs ip, wg, wireguard-go, nft,
# iperf3, conntrack; the machine should be otherwise idle: wireguard-go is CPU bound)
set -eu
cd "$(dirname "$0")/.."
MNIGS_E2E=1 cargo test --test e2e_malicious fair_share_bench -- --ignored --nocapture --test-threads=1 2>&1 |
	grep -oE 'FAIRSHARE.*|panicked.*|failed.*' | sed 's/^FAIRSHARE //'
