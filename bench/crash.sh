#!/usr/bin/env bash
# Crash reconciliation soak: SIGKILLs daemons at seeded random moments, ROUNDS times per test
# (tests/e2e_crash.rs): the gateway or subscriber during connect, release or an idle lease; and
# the subscriber, the gateway it leaves or the one it moves to during a failover between two
# gateways. After each restart nothing may be stale and every database passes integrity_check.
# Root only.
#   bench/crash.sh [ROUNDS=25] [SEED=8]     (2 × 25 = 50 kills by default)
#   bench/crash.sh --short                  (CI: 1 round per test)
# Fails (exit 1) unless both tests pass and each reports ROUNDS kills.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --short ]; then set -- 1; fi
rounds=${1:-25}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
MNIGS_E2E=1 MNIGS_CRASH_ROUNDS=$rounds MNIGS_CRASH_SEED=${2:-8} \
	cargo test --test e2e_crash daemons_killed -- --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
grep -E '^seed|kills|panicked|differs|extra|missing|test result' "$log" || true
fail() {
	echo "crash.sh: FAILED: $*"
	tail -40 "$log"
	exit 1
}
[ "$status" -eq 0 ] || fail "cargo test exited with $status"
grep -q 'test result: ok. 2 passed' "$log" || fail "expected 2 tests to pass"
for label in 'kills:' 'kills during failover:'; do
	grep -qE "^$rounds $label" "$log" || fail "no '$rounds $label' line"
done
