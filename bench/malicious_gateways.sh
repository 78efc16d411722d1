#!/usr/bin/env bash
# Bounds against hostile gateways (tests/malicious_gateway.rs): 16 gateways answering 1 MB names
# and COUNT answering the largest valid nodeInfo, all found in one scan by a real subscriber;
# prints its RSS before/after, the rows kept, the database size and the listGateways answer. Root only.
#   bench/malicious_gateways.sh [COUNT=1000]
#   bench/malicious_gateways.sh --short    (CI, seconds: COUNT=270, just over the store's cap)
# Fails (exit 1) unless the test passes and its line shows the bounds: rows kept <= 256 (the
# subscriber's cap, MAX_STORED_GATEWAYS) and the cap reached when COUNT > 256, listGateways'
# answer < 1 MiB, database + WAL < 8 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --short ]; then set -- 270; fi
count=${1:-1000}
cap=256
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
MNIGS_E2E=1 MNIGS_BENCH_GATEWAYS=$count \
	cargo test --test malicious_gateway huge_answers -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^malicious_gateway|panicked|assert|test result' "$log" || true
fail() {
	echo "malicious_gateways.sh: FAILED: $*"
	tail -30 "$log"
	exit 1
}
[ "$status" -eq 0 ] || fail "cargo test exited with $status"
grep -q 'test result: ok. 1 passed' "$log" || fail "expected the test to pass"
line="$(grep -E '^malicious_gateway bounds:' "$log")" || fail "no 'malicious_gateway bounds:' line"
field() { sed -nE "s/.*$1.*/\\1/p" <<<"$line"; }
found="$(field '\(([0-9]+) answered in time\)')"
rows="$(field 'store ([0-9]+) rows')"
db="$(field 'DB\+WAL ([0-9]+) bytes')"
answer="$(field 'listGateways ([0-9]+) bytes')"
for v in "$found" "$rows" "$db" "$answer"; do
	[ -n "$v" ] || fail "cannot read the line: $line"
done
[ "$rows" -le "$cap" ] || fail "$rows rows kept, more than the cap $cap"
if [ "$found" -gt "$cap" ] && [ "$rows" -ne "$cap" ]; then
	fail "$found gateways found but $rows rows kept (expected the cap $cap)"
fi
[ "$answer" -lt $((1 << 20)) ] || fail "listGateways answer $answer bytes"
[ "$db" -lt $((8 << 20)) ] || fail "database + WAL $db bytes"
echo "malicious_gateways.sh: ok ($found of $count found, $rows rows kept, listGateways $answer bytes, DB+WAL $db bytes)"
