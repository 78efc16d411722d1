#!/usr/bin/env bash
# Bounds against hostile gateways (tests/malicious_gateway.rs): 16 gateways answering 1 MB names
# and COUNT answering the largest valid nodeInfo, all found in one scan by a real subscriber;
# prints its RSS before/after, the rows kept, the database size and the listGateways answer. Root only.
#   bench/malicious_gateways.sh [COUNT=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
MNIGS_E2E=1 MNIGS_BENCH_GATEWAYS=${1:-1000} \
	cargo test --test malicious_gateway huge_answers -- --nocapture 2>&1 |
	grep -E '^malicious_gateway|panicked|assert|test result'
