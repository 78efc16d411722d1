#!/usr/bin/env bash
# Churn soak against one gateway (tests/e2e_soak.rs): two subscribers reconnecting, scanning,
# dying and expiring for SECONDS; prints the gateway's RSS and descriptors at start and end, the
# sessions at the end and the error lines of its log. Root only.
#   bench/soak.sh [SECONDS=600]
set -euo pipefail
cd "$(dirname "$0")/.."
MNIGS_E2E=1 MNIGS_SOAK_SECONDS=${1:-600} \
	cargo test --test e2e_soak -- --nocapture 2>&1 | grep -E '^soak|panicked|assert|test result'
