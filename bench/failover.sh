#!/bin/sh
# Failover benchmark: runs the two-gateway E2E tests (as root, in network namespaces) RUNS times
# (default 3) and prints each case's outage — lost pings × 100 ms while the subscriber pings the
# fake Internet host — and the probe packets the subscriber sent through each tunnel meanwhile
# (nftables counters in its namespace), next to the reference figures measured on the same kind of mesh (issue 5):
#   naive shell watchdog (3 failed pings, then switch to a running WireGuard server): 2.2–2.4 s
#   Babel withdrawing a dead gateway's route (1 s hellos): 3–4 s
# The *_with_shipped_defaults cases run with the shipped defaults (only the roles, the gateways'
# wan_interface and uplink_target set; nothing on the subscriber); the others with tuned settings.
# Usage: sudo [RUNS=3] bench/failover.sh     (needs ip, babeld, wg, wireguard-go, nft, ping)
#        sudo bench/failover.sh --short       (CI: one run of the cold cases, tuned and shipped uplink cut)
#        sudo [RUNS=3] FILTER=shipped_defaults bench/failover.sh   (only the tests whose name contains it)
# Fails (exit 1) unless every test passes and every case of the tests run reports its outage: 15
# cases (cold and hot tuned (a)-(d), fail_closed, cold and hot shipped uplink, kill and mesh cut) and
# 2 fail-backs, or 5 and 1 with --short (with FILTER only the tests must pass).
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
filter=
cases=15
failbacks=2
if [ "${1:-}" = --short ]; then
	runs=1
	filter="cold_failover_between_two_gateways cold_uplink_cut_with_shipped_defaults"
	cases=5
	failbacks=1
elif [ -n "${FILTER:-}" ]; then
	filter=$FILTER
	cases=
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
i=1
while [ "$i" -le "$runs" ]; do
	# shellcheck disable=SC2086 # $filter is test names or nothing
	MNIGS_E2E=1 cargo test --test e2e_failover -- --nocapture --test-threads=1 $filter >>"$log" 2>&1 || {
		tail -50 "$log"
		echo "failover.sh: FAILED: cargo test failed"
		exit 1
	}
	i=$((i + 1))
done
echo "outage per case over $runs run(s): min / median / max, and the median against the references"
echo "case                              min    med    max    vs naive watchdog 2.3 s   vs Babel 3.5 s"
grep -o 'OUTAGE .*' "$log" | sed 's/^OUTAGE //' |
	sed 's/^\([^:]*\): \([0-9.]*\) s.*/\1|\2/' |
	awk -F'|' '
	{ n[$1]++; v[$1, n[$1]] = $2; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
	END {
		for (j = 1; j <= k; j++) {
			c = order[j]; m = n[c]
			for (a = 1; a <= m; a++) x[a] = v[c, a] + 0
			for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (x[b] < x[a]) { t = x[a]; x[a] = x[b]; x[b] = t }
			med = x[int((m + 1) / 2)]
			if (c ~ /fail back|fail_closed/) { r1 = "(planned move / no gateway)"; r2 = "" }
			else if (med == 0) { r1 = "no loss"; r2 = "no loss" }
			else { r1 = sprintf("%.1fx shorter", 2.3 / med); r2 = sprintf("%.1fx shorter", 3.5 / med) }
			printf "%-32s %4.1f s %4.1f s %4.1f s   %-25s %s\n", c, x[1], med, x[m], r1, r2
		}
	}'
echo "probe packets sub sent per tunnel during each case's ping series (sampled every 100 ms; at most 10 in any second is the rule):"
grep -o 'PROBES .*' "$log" | grep -v 'no samples' | sed 's/^PROBES /  /' || true
grep -o 'FAILBACK .*' "$log" || true
grep -o 'SHIPPED .*' "$log" || true
[ -n "$cases" ] || exit 0
seen=$(grep -o 'OUTAGE [^:]*: [0-9.]* s' "$log" | sed 's/: [0-9.]* s$//' | sort -u | wc -l)
back=$(grep -o 'FAILBACK [a-z]*: back on gw1 [0-9.]* s' "$log" | sort -u -k2,2 | wc -l)
if [ "$seen" -ne "$cases" ] || [ "$back" -ne "$failbacks" ]; then
	echo "failover.sh: FAILED: $seen case(s) and $back fail-back(s) reported, expected $cases and $failbacks"
	exit 1
fi
