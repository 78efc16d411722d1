#!/usr/bin/env bash
# OpenVPN signing vs. the gateway's lock (issue 21 item 5): nodeInfo latency at an OpenVPN gateway
# (in a network-namespace lab), idle and while 4 sources send junk certificate requests (they
# pass the PEM check, then fail signing) in a loop. Prints median / p90 / max of 200 calls each.
# Usage: sudo bench/openvpn_lock.sh [--short]   (needs ip, openvpn, openssl, nft, conntrack, curl)
# --short (CI): 20 calls each; fails unless every nodeInfo was answered and junk requests reached
# the gateway and were refused meanwhile (a correctness check, never a latency figure).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=200
[ "${1:-}" = --short ] && calls=20
out="$(MNIGS_E2E=1 MNIGS_BENCH_CALLS=$calls cargo test --test e2e_malicious openvpn_lock_bench -- \
	--ignored --nocapture --test-threads=1 2>&1)" || { echo "$out" | tail -40 >&2; exit 1; }
echo "$out" | grep -oE 'OVLOCK.*' | sed 's/^OVLOCK //'
echo "$out" | grep -q "test result: ok. 1 passed" || { echo "openvpn_lock_bench did not run" >&2; exit 1; }
