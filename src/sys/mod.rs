//! The only place with side effects on the system: spawning programs, touching `/proc` and
//! writing the tunnel methods' files.
//!
//! # Layout
//! - `cmd.rs`: run an argv (never a shell) with a timeout, capture stdout/stderr, log every command.
//! - `fs.rs`: the tunnel methods' state files (private directories, whole-file writes, removal).
//! - `net.rs`: addresses, routes, links and forwarding, built on `cmd`.
//! - `firewall.rs`: the gateway's forward/input policy and NAT (nftables or iptables).
//! - `shaper.rs`: per-subscriber fair shares of the uplink (`tc` HTB classes).
//! - `icmp.rs`: ICMP echo probes over a raw socket, optionally bound to an interface.
//! - `no_timerfd.rs`: big-endian MIPS only, the C library's timerfd calls fail (a struct layout
//!   fault between rustix and musl made the async reactor spin).

pub mod cmd;
pub mod firewall;
pub mod fs;
pub mod icmp;
pub mod net;
#[cfg(all(target_arch = "mips", target_endian = "big", target_env = "musl"))]
mod no_timerfd;
pub mod shaper;

/// How many sockets a burst of probes may open: the soft open-file limit, raised to the hard
/// limit first (a scan of thousands of candidates wants ~1,000 at once), less 64 kept for the
/// daemon's own files, server connections and child pipes.
pub fn fd_budget() -> usize {
    const RESERVE: u64 = 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 256;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let cur = lim.rlim_cur.min(1 << 20);
    cur.saturating_sub(RESERVE).max(1) as usize
}
