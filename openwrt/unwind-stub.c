/* SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Stands in for libunwind in the MIPS release binary (openwrt/cross-build
 * links it first, so the linker takes nothing from zig's libunwind: 38 KB).
 *
 * That build aborts on panic and has no unwind tables, so nothing unwinds.
 * What std still reaches is its backtrace printer, and only from the
 * default panic hook for a second panic on the same thread, which an
 * aborting build never gets to (a panic inside the hook aborts without
 * calling it). Even there libunwind could not walk Rust frames without
 * their tables. So the walk ends at once: "stack backtrace:" and no frames.
 * The panic message (thread, file:line, message) is printed as before.
 *
 * The other functions are named by std's personality routine, which the
 * linker drops as unused; if one were ever called, it aborts, as the build
 * does on every panic anyway.
 */
#include <stdlib.h>

typedef int (*unwind_trace_fn)(void *ctx, void *arg);

int _Unwind_Backtrace(unwind_trace_fn fn, void *arg)
{
	(void)fn;
	(void)arg;
	return 5; /* _URC_END_OF_STACK */
}

unsigned long _Unwind_GetIP(void *ctx)
{
	(void)ctx;
	return 0;
}

void _Unwind_GetIPInfo(void) { abort(); }
void _Unwind_GetDataRelBase(void) { abort(); }
void _Unwind_GetTextRelBase(void) { abort(); }
void _Unwind_GetLanguageSpecificData(void) { abort(); }
void _Unwind_GetRegionStart(void) { abort(); }
void _Unwind_SetGR(void) { abort(); }
void _Unwind_SetIP(void) { abort(); }
