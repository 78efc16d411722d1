//! As root: each method's steps run twice change nothing the second time, and removal leaves
//! what was there before. Every test runs on a thread moved into a fresh network namespace
//! (`unshare(CLONE_NEWNET)` affects only the calling thread, and the programs it starts inherit
//! it), so nothing touches the host's network. GRE and IPIP need kernel modules this machine
//! lacks; `tests/vm_tunnels.rs` covers them. Skips loudly without root; fails under MNIGS_E2E=1.

#[path = "common/netns.rs"]
mod netns;

use mnigs::protocol::Grant;
use mnigs::sys::cmd;
use mnigs::tunnel::openvpn::{Openvpn, Side};
use mnigs::tunnel::route::Route;
use mnigs::tunnel::{GatewayNet, Method, Peer};
use mnigs_lab::testbed::e2e_gate;
use netns::Setup;
use serde_json::Map;
use std::net::Ipv4Addr;
use std::path::Path;

/// Runs `f` on a thread inside a new network namespace holding a veth pair v0 (10.0.0.1/24)
/// and v1, both up, with its own `/sys` and no IPv6 duplicate address detection.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::in_netns(
        Setup {
            ip_batch: "link set lo up\nlink add v0 type veth peer name v1\n\
                       address add 10.0.0.1/24 dev v0\n\
                       link set v0 up\nlink set v1 up\n",
            own_sys: true,
            no_dad: true,
        },
        f,
    )
}

/// Addresses and routes of all tables, to compare.
fn state() -> String {
    let mut out = String::new();
    for argv in [
        &["ip", "-o", "link", "show"][..],
        &["ip", "-o", "addr", "show"],
        &["ip", "route", "show", "table", "all"],
    ] {
        out.push_str(&cmd::run(argv).unwrap());
    }
    out
}

/// Asserts two state listings are equal, naming the lines that differ.
fn assert_same(before: &str, after: &str) {
    let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
    let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        before == after,
        "state changed\n  gone: {gone:#?}\n  new: {new:#?}"
    );
}

fn grant(method: &str) -> Grant {
    Grant {
        success: true,
        sid: "0".repeat(32),
        timeout: 60,
        method: method.into(),
        ipv4: "100.127.0.2".into(),
        cidr4: 24,
        ipv4gateway: "100.127.0.1".into(),
        ipv6: None,
        cidr6: None,
        ipv6gateway: None,
        uplink_targets: Vec::new(),
        extra: Map::new(),
    }
}

fn net() -> GatewayNet {
    GatewayNet {
        ipv4: Ipv4Addr::new(100, 127, 0, 1),
        cidr4: 24,
        ipv6: None,
    }
}

#[test]
fn route_steps_are_idempotent_and_removal_is_complete() {
    if !e2e_gate("route_steps_are_idempotent_and_removal_is_complete") {
        return;
    }
    in_netns(|| {
        let before = state();
        let options = Map::new();
        let peer = Peer {
            owner: "10.0.0.2".parse().unwrap(),
            ipv4: Ipv4Addr::new(100, 127, 0, 2),
            ipv6: None,
            options: &options,
            via: None,
        };
        let mut gw = Route::new();
        gw.prepare(&net()).unwrap();
        gw.accept(&peer).unwrap();
        let once = state();
        assert!(
            once.contains("100.127.0.2 via 10.0.0.2 dev v0 proto 77"),
            "{once}"
        );
        gw.accept(&peer).unwrap();
        assert_same(&once, &state());
        gw.remove(&peer).unwrap();
        gw.remove(&peer).unwrap();
        assert_same(&before, &state());

        // The subscriber side, towards 10.0.0.2 (a neighbour on v0).
        let mut sub = Route::new();
        sub.connect("10.0.0.2".parse().unwrap(), &grant("route"))
            .unwrap();
        let once = state();
        assert!(
            once.contains("0.0.0.0/1 via 10.0.0.2 dev v0 proto 77 src 100.127.0.2"),
            "{once}"
        );
        sub.connect("10.0.0.2".parse().unwrap(), &grant("route"))
            .unwrap();
        assert_same(&once, &state());
        sub.disconnect().unwrap();
        sub.disconnect().unwrap();
        assert_same(&before, &state());
        // After a crash a new instance knows nothing, and still removes what the last one made.
        sub.connect("10.0.0.2".parse().unwrap(), &grant("route"))
            .unwrap();
        drop(sub);
        Route::new().disconnect().unwrap();
        assert_same(&before, &state());
        gw.shutdown().unwrap();
        assert_same(&before, &state());
    });
}

fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn openvpn_gateway_steps_are_idempotent_and_shutdown_is_complete() {
    if !e2e_gate("openvpn_gateway_steps_are_idempotent_and_shutdown_is_complete") {
        return;
    }
    if !cmd::available("openvpn") {
        assert!(
            std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
            "openvpn is not installed (MNIGS_E2E=1 forbids skipping)"
        );
        eprintln!("SKIPPED: openvpn is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mnigs-ovpn-idem-{}", std::process::id()));
    let cleanup = Cleanup(dir.clone());
    let d = dir.clone();
    in_netns(move || {
        let before = state();
        let client = Openvpn::new(Side::Client, &d, "ovc", 11194, 1400).unwrap();
        let options = client.request_options();
        let mut bad = options.clone();
        bad.insert("csr".into(), "--script-security 2".into());
        let mut gw = Openvpn::new(Side::Server, &d, "ovs", 11194, 1400).unwrap();
        assert!(gw.check_options(&options).is_ok());
        assert!(gw.check_options(&bad).is_err());
        gw.prepare(&net()).unwrap();
        let server = gw.pid().expect("server runs");
        let peer = Peer {
            owner: "10.0.0.2".parse().unwrap(),
            ipv4: Ipv4Addr::new(100, 127, 0, 2),
            ipv6: None,
            options: &options,
            via: None,
        };
        let ccd = d.join("server/ccd");
        let first = gw.accept(&peer).unwrap();
        let files = ls(&ccd);
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(ccd.join(&files[0])).unwrap();
        assert_eq!(text, "ifconfig-push 100.127.0.2 255.255.255.0\n");
        let second = gw.accept(&peer).unwrap();
        assert_eq!(first, second, "a second accept issued something new");
        assert_eq!(files, ls(&ccd));
        // Release: the file goes (no new handshake admitted); the running server stays.
        gw.remove(&peer).unwrap();
        gw.remove(&peer).unwrap();
        assert!(ls(&ccd).is_empty());
        assert_eq!(gw.pid(), Some(server));
        // Preparing again replaces the server.
        gw.prepare(&net()).unwrap();
        assert_ne!(gw.pid(), Some(server));
        gw.shutdown().unwrap();
        assert_eq!(gw.pid(), None);
        assert_eq!(
            unsafe { libc::kill(server, 0) },
            -1,
            "the first server still runs"
        );
        assert_same(&before, &state());
    });
    drop(cleanup);
}

/// Removes the test's directory and stops the server it may have left running (a failed
/// assertion skips `shutdown`), by the PID in its pid file.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let pidfile = self.0.join("server/openvpn.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"openvpn") {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
