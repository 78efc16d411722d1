#!/bin/sh
# OpenVPN signing vs. the gateway's lock (issue 21 item 5): nodeInfo latency at an OpenVPN gateway
# (in a network-namespace lab), idle and while 4 sources send junk certificate requests (they
# pass the PEM check, then fail signing) in a loop. Prints median / p90 / max of 200 calls each.
# Usage: sudo bench/openvpn_lock.sh   (needs ip, openvpn, openssl, nft, conntrack, curl)
set -eu
cd "$(dirname "$0")/.."
MNIGS_E2E=1 cargo test --test e2e_malicious openvpn_lock_bench -- --ignored --nocapture --test-threads=1 2>&1 |
	grep -oE 'OVLOCK.*|panicked.*|test result: FAILED.*' | sed 's/^OVLOCK //'
