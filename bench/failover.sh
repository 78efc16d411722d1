#!/bin/sh
# Failover benchmark: runs the two-gateway E2E tests (as root, in network namespaces) and prints
# each case's outage — lost pings × 100 ms while the subscriber pings the fake Internet host —
# next to the reference figures measured on the same kind of mesh (issue 5):
#   naive shell watchdog (3 failed pings, then switch to a running WireGuard server): 2.2–2.4 s
#   Babel withdrawing a dead gateway's route (1 s hellos): 3–4 s
# Usage: sudo bench/failover.sh        (needs ip, babeld, wg, wireguard-go, nft, ping)
set -eu
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
MNIGS_E2E=1 cargo test --test e2e_failover -- --nocapture --test-threads=1 >"$log" 2>&1 || {
	tail -50 "$log"
	exit 1
}
echo "case                                  outage   vs naive watchdog (2.3 s)   vs Babel (3.5 s)"
grep -o 'OUTAGE .*' "$log" | sed 's/^OUTAGE //' | while IFS= read -r line; do
	label=${line%%:*}
	secs=$(printf '%s\n' "$line" | sed 's/^[^:]*: \([0-9.]*\) s.*/\1/')
	awk -v l="$label" -v s="$secs" 'BEGIN {
		r1 = s > 0 ? sprintf("%.1fx faster", 2.3 / s) : "no loss";
		r2 = s > 0 ? sprintf("%.1fx faster", 3.5 / s) : "no loss";
		printf "%-37s %4.1f s   %-27s %s\n", l, s, r1, r2 }'
done
grep -o 'FAILBACK .*' "$log" || true
