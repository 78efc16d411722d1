#!/usr/bin/env bash
# Size on the router: for each router CPU, the stripped static binary that openwrt/cross-build
# makes and the compressed packages openwrt/build-package makes of it (.ipk, and .apk when
# MNIGS_APK names apk-tools v3), against the targets: mips/mipsel binary <= 2.0 MB, aarch64/armv7
# <= 1.5 MB, every package <= 1.0 MB (MB = 1,000,000 bytes).
#   bench/router-size.sh [TARGET...]      (default: all four; a cold build is 2-12 min each)
# MNIGS_CROSS_RUSTFLAGS and MNIGS_CROSS_TARGET_DIR pass through to openwrt/cross-build, to
# measure a variant without touching the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mips_24kc mipsel_24kc aarch64_cortex-a53 arm_cortex-a7_neon-vfpv4)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
printf '%-26s %12s %8s %12s %12s %12s\n' ARCH binary target ipk apk luci-ipk
status=0
for arch in "${targets[@]}"; do
	start=$SECONDS
	bin="$(openwrt/cross-build "$arch" 2>"$out/build.log")" || { cat "$out/build.log" >&2; exit 1; }
	secs=$((SECONDS - start))
	case "$arch" in
		mips*) limit=2000000 ;;
		*) limit=1500000 ;;
	esac
	openwrt/build-package "$arch" --binary "$bin" --out "$out/$arch" >/dev/null 2>&1
	size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo -; fi; }
	b="$(size "$bin")"
	ipk="$(size "$out/$arch"/mnigs_*_"$arch".ipk)"
	apk="$(size "$out/$arch"/mnigs-[0-9]*.apk)"
	luci="$(size "$out/$arch"/luci-app-mnigs_*_all.ipk)"
	verdict=ok
	[ "$b" -le "$limit" ] || verdict="OVER"
	for p in "$ipk" "$apk" "$luci"; do
		[ "$p" = - ] || [ "$p" -le 1000000 ] || verdict="OVER"
	done
	[ "$verdict" = ok ] || status=1
	printf '%-26s %12s %8s %12s %12s %12s  %s (build %d s)\n' "$arch" "$b" "$limit" "$ipk" "$apk" "$luci" "$verdict" "$secs"
done
exit "$status"
