#!/usr/bin/env bash
# Crash reconciliation soak: SIGKILLs daemons at seeded random moments, ROUNDS times per test
# (tests/e2e_crash.rs): the gateway or subscriber during connect, release or an idle lease; and
# the subscriber, the gateway it leaves or the one it moves to during a failover between two
# gateways. After each restart nothing may be stale and every database passes integrity_check.
# Root only.
#   bench/crash.sh [ROUNDS=25] [SEED=8]     (2 × 25 = 50 kills by default)
set -euo pipefail
cd "$(dirname "$0")/.."
MNIGS_E2E=1 MNIGS_CRASH_ROUNDS=${1:-25} MNIGS_CRASH_SEED=${2:-8} \
	cargo test --test e2e_crash -- --nocapture --test-threads 1 2>&1 |
	grep -E '^seed|kills|panicked|differs|extra|missing|test result'
