//! Big-endian MIPS (ath79 and friends) only: the C library's timerfd functions are replaced by
//! ones that say "not supported", so the async reactor times its waits with epoll's own timeout.
//!
//! Why: on `mips-unknown-linux-musl` rustix can only use its libc backend, and it hands the C
//! library its own `struct itimerspec`, whose `tv_nsec` sits in the first half of the 8 bytes
//! after `tv_sec`. musl (time64) on a big-endian CPU keeps `tv_nsec` in the second half and
//! padding in the first, so it reads uninitialised padding as the nanoseconds (the old 32-bit
//! entry point, which the libc crate binds by default, misreads the struct just as badly). Seen
//! under qemu-mips with strace: every `timerfd_settime64` of async-io's reactor carried garbage
//! nanoseconds and failed with EINVAL, about 2,700 times a second, so the reactor thread spun
//! and every timeout fired late.
//!
//! polling (under async-io) treats a failing `timerfd_create` as "no timerfd" and waits with
//! `epoll_wait`'s millisecond timeout instead, which is all a timeout here needs. These three
//! symbols are the ones musl's timerfd code defines; defining all of them keeps that code out of
//! the link. Nothing else in mnigs uses a timerfd.

/// Fails with `ENOSYS`, as a kernel without timerfd would.
fn unsupported() -> libc::c_int {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// `timerfd_create(2)`: not supported here (see the module documentation).
#[unsafe(no_mangle)]
pub extern "C" fn timerfd_create(_clock: libc::c_int, _flags: libc::c_int) -> libc::c_int {
    unsupported()
}

/// `timerfd_settime(2)`: not supported here; never reached, as no timerfd is ever created.
#[unsafe(no_mangle)]
pub extern "C" fn timerfd_settime(
    _fd: libc::c_int,
    _flags: libc::c_int,
    _new: *const libc::c_void,
    _old: *mut libc::c_void,
) -> libc::c_int {
    unsupported()
}

/// `timerfd_gettime(2)`: not supported here; never reached, as no timerfd is ever created.
#[unsafe(no_mangle)]
pub extern "C" fn timerfd_gettime(_fd: libc::c_int, _current: *mut libc::c_void) -> libc::c_int {
    unsupported()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// CPU time of this process's `async-io` thread (the one that drives the reactor when no
    /// `block_on` does), in clock ticks; `None` before it exists.
    fn reactor_ticks() -> Option<u64> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find_map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                (comm.trim() == "async-io").then_some(())?;
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
    }

    /// The replacement is the one linked (not musl's), timers on two threads fire on time, and
    /// the reactor thread waits instead of spinning: with musl's timerfd it used 72 of the
    /// 150 ticks of the wait under qemu-mips, with this module 1.
    #[test]
    fn timers_work_without_a_timerfd() {
        // SAFETY: plain syscall wrapper; the return value is checked.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) };
        assert_eq!(fd, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS)
        );
        let start = Instant::now();
        let t = std::thread::spawn(|| {
            smol::block_on(smol::Timer::after(Duration::from_millis(1500)));
        });
        std::thread::sleep(Duration::from_millis(100));
        let before = reactor_ticks();
        smol::block_on(smol::Timer::after(Duration::from_millis(1200)));
        t.join().unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        let used = reactor_ticks()
            .zip(before)
            .map(|(a, b)| a - b)
            .expect("async-io's reactor thread runs");
        // 100 ticks a second: measured 1 with this module, 72 with musl's timerfd.
        assert!(
            used < 40,
            "the reactor thread used {used} ticks in {took:?}: it spins"
        );
    }
}
