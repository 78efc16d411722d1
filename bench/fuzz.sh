#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) and prints executions, time and crashes per target.
#   bench/fuzz.sh [SECONDS_PER_TARGET] [MAX_RUNS] [TARGET...]
#   bench/fuzz.sh --short      (5 s per target; .ci/run gives each 30 s)
# Defaults: 30 s, no run cap (-1), every target. Needs cargo-fuzz (`cargo install cargo-fuzz`)
# and RUSTC_BOOTSTRAP=1 on stable Rust (set here). Each run starts from the committed seeds in
# fuzz/corpus/TARGET, copied to a scratch dir so the repository's corpus stays small; a crash
# leaves its input in fuzz/artifacts/TARGET and makes the script exit 1, and so does a target
# that executed no input at all (a fuzzer that does not run finds nothing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if [ "${1:-}" = --short ]; then set -- 5; fi
secs=${1:-30}
runs=${2:--1}
targets=("${@:3}")
[ ${#targets[@]} -gt 0 ] || targets=(rpc_request uci bencode yggdrasil_stream http_request)
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-18s %12s %8s %10s %s\n' target executions seconds exec/s result
for t in "${targets[@]}"; do
	mkdir -p "$scratch/$t" "artifacts/$t"
	cp corpus/"$t"/* "$scratch/$t"/
	log="$scratch/$t.log"
	start=$(date +%s)
	if cargo fuzz run -O "$t" "$scratch/$t" -- -max_total_time="$secs" -runs="$runs" \
		-rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
		result=ok
	else
		result="CRASH (input in fuzz/artifacts/$t)"
		failed=1
		tail -40 "$log"
	fi
	end=$(date +%s)
	execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
	speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
	if [ "$result" = ok ] && [ "${execs:-0}" -eq 0 ]; then
		result="FAILED: no input executed"
		failed=1
		tail -40 "$log"
	fi
	printf '%-18s %12s %8s %10s %s\n' "$t" "${execs:-?}" "$((end - start))" "${speed:-?}" "$result"
done
exit $failed
