#!/usr/bin/env bash
# Fair-share benchmark (issue 21): a gateway with a 20 Mbit/s uplink (both ways, a "modem" bridge
# between its WAN and the Internet) and two subscribers. B moves data with one TCP stream alone,
# then while A floods with 8 TCP streams or UDP at 40 Mbit/s, downloads and uploads; without
# shaping (bandwidth_down/up 0) and with 19000 kbit/s. Prints B's share of the uplink.
# Usage: sudo [METHOD=wireguard|openvpn] [SHAPED_KBIT=19000] [QUICK=1: shaped download only] bench/fairshare.sh   (needs ip, wg, wireguard-go, nft,
# iperf3, conntrack; the machine should be otherwise idle: wireguard-go is CPU bound)
#        sudo [METHOD=...] bench/fairshare.sh --short   (CI, seconds: test fair_share_short, shaping on:
# each subscriber has its classes, both move data at once for 3 s each way, every class carries
# some; checks correctness, not the share)
# Fails (exit 1) unless the test passes and prints its results.
set -euo pipefail
cd "$(dirname "$0")/.."
test=fair_share_bench
if [ "${1:-}" = --short ]; then test=fair_share_short; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
MNIGS_E2E=1 cargo test --test e2e_malicious "$test" -- --exact --ignored --nocapture --test-threads=1 >"$log" 2>&1 ||
	status=$?
grep -oE 'FAIRSHARE.*|panicked.*|test result.*' "$log" | sed 's/^FAIRSHARE //' || true
fail() {
	echo "fairshare.sh: FAILED: $*"
	tail -30 "$log"
	exit 1
}
[ "$status" -eq 0 ] || fail "cargo test exited with $status"
grep -q 'test result: ok. 1 passed' "$log" || fail "expected $test to pass"
if [ "$test" = fair_share_short ]; then
	grep -q 'FAIRSHARE-CHECK ok' "$log" || fail "no 'FAIRSHARE-CHECK ok' line"
else
	want=4
	if [ "${QUICK:-}" = 1 ]; then want=1; fi
	[ "$(grep -c 'FAIRSHARE ' "$log")" -eq "$want" ] || fail "expected $want FAIRSHARE lines"
fi
