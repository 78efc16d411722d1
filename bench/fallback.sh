#!/usr/bin/env bash
# Fallback between methods: the gateway offers [openvpn, wireguard], its openvpn server is
# frozen (SIGSTOP: the port swallows packets), the subscriber prefers openvpn. Measured: from
# the subscriber's start to the first answered ping through the WireGuard tunnel it falls back
# to (tests/e2e_methods.rs, falls_back_to_wireguard_when_openvpn_does_not_answer).
# Target ≤ 5 s (issue 14). Root only.
#   bench/fallback.sh [RUNS=3]
#   bench/fallback.sh --short       (CI: 1 run; checks that it works, not the target)
# Fails (exit 1) if a run fails, or (not --short) if the median is over the target.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
if [ "${1:-}" = --short ]; then short=1; set -- 1; fi
runs=${1:-3}
target=5.0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
secs=()
for i in $(seq "$runs"); do
	status=0
	MNIGS_E2E=1 cargo test --test e2e_methods falls_back_to_wireguard_when_openvpn_does_not_answer \
		-- --nocapture --exact >"$log" 2>&1 || status=$?
	if [ "$status" -ne 0 ]; then
		echo "fallback.sh: FAILED: run $i: cargo test exited with $status"
		tail -40 "$log"
		exit 1
	fi
	s=$(sed -n 's/^fallback: Internet reached after \([0-9.]*\)s$/\1/p' "$log")
	[ -n "$s" ] || { echo "fallback.sh: FAILED: no 'Internet reached after' line"; tail -20 "$log"; exit 1; }
	grep -E '^fallback: (connected after|.* gw via )' "$log" | sed "s/^/run $i: /" || true
	echo "run $i: start to Internet ${s} s"
	secs+=("$s")
done
median=$(printf '%s\n' "${secs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
verdict=$(awk -v m="$median" -v t="$target" 'BEGIN {print (m <= t) ? "ok" : "OVER"}')
ratio=$(awk -v m="$median" -v t="$target" 'BEGIN {printf "%.2f", m / t}')
echo "blocked openvpn -> wireguard, start to Internet: median ${median} s of ${runs} run(s), target <= ${target} s (${ratio} of target) ${verdict}"
if [ "$short" -eq 0 ] && [ "$verdict" != ok ]; then exit 1; fi
