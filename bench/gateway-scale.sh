#!/usr/bin/env bash
# Gateway scale benchmark (issue 14): one gateway daemon (WireGuard — wireguard-go where the
# kernel has no module — and nftables NAT) in a lab namespace; 1,000 subscribers, each calling
# from its own loopback address there, 32 at a time. Prints, each against its target: the time
# for 1,000 registrations (and registrations per second, p50/p99), a renew storm of all of them,
# the daemon's idle CPU and RSS with 1,000 sessions, a restart with 1,000 live sessions until
# every peer is configured again, 1,000 releases, and 1,000 leases expiring in the same second
# until they are all cleaned up.
# Usage: sudo bench/gateway-scale.sh           (1,000 sessions; the daemon is a release build)
#        sudo bench/gateway-scale.sh --short   (CI, seconds: 50 sessions, the debug build; checks
#                                               that every phase works, not the targets)
#        MNIGS_BENCH_EXE=/path/to/mnigs sudo -E bench/gateway-scale.sh   (another daemon build,
#                                               e.g. an older commit's, for a before/after)
# Needs ip, wg, wireguard-go, nft. The machine should be otherwise idle: every batch runs `wg`,
# `ip` and `nft`, and process start-up is what a loaded machine makes slow.
# Fails (exit 1) when something does not work, never on a figure missing its target.
set -euo pipefail
cd "$(dirname "$0")/.."
test=gateway_scale_bench
if [ "${1:-}" = --short ]; then test=gateway_scale_short; fi
if [ "$test" = gateway_scale_bench ] && [ -z "${MNIGS_BENCH_EXE:-}" ]; then
	cargo build --release --locked --bin mnigs
	export MNIGS_BENCH_EXE=$PWD/target/release/mnigs
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
MNIGS_E2E=1 cargo test --locked --test e2e_scale "$test" -- --exact --ignored --nocapture --test-threads=1 >"$log" 2>&1 ||
	status=$?
grep -oE 'SCALE.*|panicked.*|test result.*' "$log" | sed 's/^SCALE //' || true
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
fail() {
	echo "gateway-scale.sh: FAILED: $*"
	tail -30 "$log"
	exit 1
}
[ "$status" -eq 0 ] || fail "cargo test exited with $status"
grep -q 'test result: ok. 1 passed' "$log" || fail "expected $test to pass"
[ "$(grep -c '^SCALE .*target' "$log")" -eq 7 ] || fail "expected 7 figures"
if [ "$test" = gateway_scale_short ]; then
	grep -q 'SCALE-CHECK ok' "$log" || fail "no 'SCALE-CHECK ok' line"
fi
