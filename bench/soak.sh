#!/usr/bin/env bash
# Churn soak against one gateway (tests/e2e_soak.rs): two subscribers reconnecting, scanning,
# dying and expiring for SECONDS; prints the gateway's RSS and descriptors at start and end, the
# sessions at the end and the error lines of its log. Root only.
#   bench/soak.sh [SECONDS=600]
#   bench/soak.sh --short       (CI: 5 s of churn)
# Fails (exit 1) unless the test passes, both subscribers hold a session at the end and the
# gateway logged no error line.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --short ]; then set -- 5; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
MNIGS_E2E=1 MNIGS_SOAK_SECONDS=${1:-600} \
	cargo test --test e2e_soak -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^soak|panicked|assert|test result' "$log" || true
fail() {
	echo "soak.sh: FAILED: $*"
	tail -40 "$log"
	exit 1
}
[ "$status" -eq 0 ] || fail "cargo test exited with $status"
grep -q 'test result: ok. 1 passed' "$log" || fail "the soak test did not run and pass"
grep -qE '^soak .*sessions at end \["relay", "sub"\]; 0 error lines;' "$log" ||
	fail "expected both sessions at the end and no error line in the soak line"
