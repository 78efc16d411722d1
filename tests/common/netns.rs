//! A thread of its own network namespace, for tests that exercise library code (a tunnel
//! method's steps, a simulated cjdroute) as root without touching the host's network: the
//! namespace lives as long as the thread and the programs it starts inherit it.
//!
//! Included with `#[path = "common/netns.rs"] mod netns;` by the tests that need it.

#![allow(dead_code)]

use mnigs::sys::cmd;

/// What the fresh namespace gets before the test's code runs in it.
#[derive(Default)]
pub struct Setup {
    /// Commands for `ip -batch -` (e.g. `"link set lo up\n"`).
    pub ip_batch: &'static str,
    /// A mount namespace too, with a fresh `/sys`, so that `/sys/class/net` shows this network
    /// namespace's interfaces.
    pub own_sys: bool,
    /// IPv6 duplicate address detection off, so link-local addresses are final at once.
    pub no_dad: bool,
}

/// Runs `f` on a new thread moved into a new network namespace (`unshare(CLONE_NEWNET)` affects
/// only the calling thread) set up as `setup` says; returns what `f` returned. Panics when the
/// namespace cannot be made (not root) or `f` panics.
pub fn in_netns<T: Send + 'static>(setup: Setup, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let os = std::io::Error::last_os_error;
        let flags = if setup.own_sys {
            libc::CLONE_NEWNET | libc::CLONE_NEWNS
        } else {
            libc::CLONE_NEWNET
        };
        // SAFETY: unshare changes only this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(flags) }, 0, "unshare: {}", os());
        if setup.own_sys {
            // SAFETY: mounts in this thread's own mount namespace; the strings are NUL-terminated
            // literals.
            unsafe {
                let rc = libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
                assert_eq!(rc, 0, "make / private: {}", os());
                let rc = libc::mount(
                    c"sysfs".as_ptr(),
                    c"/sys".as_ptr(),
                    c"sysfs".as_ptr(),
                    0,
                    std::ptr::null(),
                );
                assert_eq!(rc, 0, "mount /sys: {}", os());
            }
        }
        if setup.no_dad {
            for f in ["all", "default"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/accept_dad"), "0\n").unwrap();
            }
        }
        cmd::run_input(&["ip", "-batch", "-"], setup.ip_batch).unwrap();
        f()
    })
    .join()
    .expect("namespace thread")
}
