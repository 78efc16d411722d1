#!/usr/bin/env bash
# Every refused caller reads why (issue 14 item 2), on loopback without root: rounds of N
# simultaneous requestConnection callers from N sources against a gateway with 20 connections
# for the mesh and room for 10 subscribers (granted / temporary refusals read / connection
# errors), and one source over 8 connections at a time, reconnecting at once (requests not
# served, requests per second).
# Usage: bench/rpc_refusals.sh [--short]   (default: 5 rounds of 200 callers, 16,000 requests)
# --short (CI): 1 round of 100 callers, 2,000 requests; fails on any connection error or
# unserved request within the share (a correctness check, never a speed figure).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 callers=200 requests=16000
[ "${1:-}" = --short ] && { rounds=1 callers=100 requests=2000; }
out="$(MNIGS_BENCH_ROUNDS=$rounds MNIGS_BENCH_CALLERS=$callers MNIGS_BENCH_REQUESTS=$requests \
	cargo test --test rpc_refusals refusals_bench -- --ignored --nocapture --test-threads=1 2>&1)" ||
	{ echo "$out" | grep -v 'session granted' | tail -40 >&2; exit 1; }
echo "$out" | grep -oE 'REFUSALS.*' | sed 's/^REFUSALS //'
echo "$out" | grep -q "test result: ok. 1 passed" || { echo "refusals_bench did not run" >&2; exit 1; }
