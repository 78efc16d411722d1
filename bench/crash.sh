#!/usr/bin/env bash
# Crash reconciliation soak: SIGKILLs the gateway or subscriber daemon at seeded random moments
# during connect, release or an idle lease, ROUNDS times, checking after each restart that
# nothing is stale and both databases pass integrity_check (tests/e2e_crash.rs). Root only.
#   bench/crash.sh [ROUNDS=50] [SEED=8]
set -euo pipefail
cd "$(dirname "$0")/.."
MNIGS_E2E=1 MNIGS_CRASH_ROUNDS=${1:-50} MNIGS_CRASH_SEED=${2:-8} \
	cargo test --test e2e_crash -- --nocapture 2>&1 | grep -E '^seed|kills:|panicked|differs|extra|missing|test result'
