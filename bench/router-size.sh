#!/usr/bin/env bash
# Size on the router: for each router CPU, the stripped static binary that openwrt/cross-build
# makes and the compressed packages openwrt/build-package makes of it (.ipk, and .apk when
# MNIGS_APK names apk-tools v3), against the targets: mips/mipsel binary <= 2.0 MB, aarch64/armv7
# <= 1.5 MB, every package <= 1.0 MB (MB = 1,000,000 bytes).
#   bench/router-size.sh [TARGET...]      (default: all four; a cold build is 2-12 min each)
#   bench/router-size.sh --short          (CI, seconds: mips_24kc only, never builds: packs the
#                                          binary $MNIGS_MIPS_BINARY, which .ci/run has built,
#                                          or else openwrt/cross-build's last mips build)
# Fails (exit 1) when a size is over its target. --short checks what works, not the size target
# (CI runs benches for correctness, never for a target): it fails when the binary is not a
# big-endian MIPS ELF or a package is missing (.apk too when MNIGS_APK is set), and prints OVER
# beside a size over its target without failing.
# MNIGS_CROSS_RUSTFLAGS and MNIGS_CROSS_TARGET_DIR pass through to openwrt/cross-build, to
# measure a variant without touching the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
short=
if [ "${1:-}" = --short ]; then
	short=1
	shift
	[ $# -eq 0 ] || { echo "router-size.sh: --short takes no TARGET (it is mips_24kc)" >&2; exit 2; }
	set -- mips_24kc
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mips_24kc mipsel_24kc aarch64_cortex-a53 arm_cortex-a7_neon-vfpv4)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail() {
	echo "router-size.sh: FAILED: $*" >&2
	exit 1
}
printf '%-26s %12s %8s %12s %12s %12s\n' ARCH binary target ipk apk luci-ipk
status=0
for arch in "${targets[@]}"; do
	start=$SECONDS
	if [ -n "$short" ]; then
		bin="${MNIGS_MIPS_BINARY:-${MNIGS_CROSS_TARGET_DIR:-$PWD/target/cross/build}/mips-unknown-linux-musl/mnigs}"
		[ -f "$bin" ] || fail "no mips binary at $bin: --short never builds; set MNIGS_MIPS_BINARY or run openwrt/cross-build mips_24kc first"
		# ELF, 32-bit, big-endian, e_machine 8 (MIPS): the router's CPU, not the host's.
		header="$(od -An -tx1 -N20 "$bin" | tr -d ' \n')"
		if [ "${header:0:12}" != 7f454c460102 ] || [ "${header:36:4}" != 0008 ]; then
			fail "$bin is not a 32-bit big-endian MIPS ELF (header $header)"
		fi
	else
		bin="$(openwrt/cross-build "$arch" 2>"$out/build.log")" || { cat "$out/build.log" >&2; exit 1; }
	fi
	secs=$((SECONDS - start))
	case "$arch" in
		mips*) limit=2000000 ;;
		*) limit=1500000 ;;
	esac
	openwrt/build-package "$arch" --binary "$bin" --out "$out/$arch" >"$out/package.log" 2>&1 ||
		{ cat "$out/package.log" >&2; fail "openwrt/build-package $arch"; }
	size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo -; fi; }
	b="$(size "$bin")"
	ipk="$(size "$out/$arch"/mnigs_*_"$arch".ipk)"
	apk="$(size "$out/$arch"/mnigs-[0-9]*.apk)"
	luci="$(size "$out/$arch"/luci-app-mnigs_*_all.ipk)"
	luci_apk="$(size "$out/$arch"/luci-app-mnigs-[0-9]*.apk)"
	verdict=ok
	[ "$b" -le "$limit" ] || verdict="OVER"
	for p in "$ipk" "$apk" "$luci" "$luci_apk"; do
		[ "$p" = - ] || [ "$p" -le 1000000 ] || verdict="OVER"
	done
	if [ -n "$short" ]; then
		wanted=("$ipk" "$luci")
		[ -z "${MNIGS_APK:-}" ] || wanted+=("$apk" "$luci_apk")
		for p in "${wanted[@]}"; do
			[ "$p" != - ] || verdict="MISSING"
		done
	fi
	if [ -n "$short" ]; then
		[ "$verdict" != MISSING ] || status=1
	else
		[ "$verdict" = ok ] || status=1
	fi
	printf '%-26s %12s %8s %12s %12s %12s  %s (build %d s)\n' "$arch" "$b" "$limit" "$ipk" "$apk" "$luci" "$verdict" "$secs"
done
[ "$status" -eq 0 ] || { echo "router-size.sh: FAILED: a size over its target or a package missing (see above)" >&2; }
exit "$status"
