//! The core end-to-end scenario with both daemons being the router build for big-endian MIPS
//! (`mips-unknown-linux-musl`, ath79), run by `qemu-mips-static`: the subscriber finds the gateway
//! over Babel, registers, pings the fake Internet host through the WireGuard tunnel, and SIGTERM
//! leaves nothing on either node. The programs the daemons call (`ip`, `wg`, `nft`,
//! wireguard-go) are the host's; the CLI asking them is the x86 build, so the JSON-RPC between
//! CPUs of both byte orders is exercised too.
//!
//! The mips binary comes from `MNIGS_MIPS_BINARY` (`.ci/run` builds it with
//! `openwrt/cross-build mips_24kc`); without it the test skips loudly. Needs root like every e2e
//! test (fails under `MNIGS_E2E=1` without it).

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, e2e_gate};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

#[test]
fn mips_daemons_under_qemu_connect_ping_and_tear_down() {
    let test = "mips_daemons_under_qemu_connect_ping_and_tear_down";
    let Some(mips) = std::env::var("MNIGS_MIPS_BINARY")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED {test}: MNIGS_MIPS_BINARY is not set (a mips build: \
             openwrt/cross-build mips_24kc; .ci/run sets it) !!!!!!!!\n"
        );
        return;
    };
    if !e2e_gate(test) {
        return;
    }
    let qemu = "qemu-mips-static";
    let version = Command::new(qemu)
        .args([&mips, "--version"])
        .output()
        .unwrap_or_else(|e| panic!("{qemu} (qemu-user-static) is needed: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("mnigs {}", env!("CARGO_PKG_VERSION")),
        "the mips binary runs under {qemu}"
    );
    let elf = std::fs::read(&mips).unwrap();
    assert_eq!(&elf[..6], b"\x7fELF\x01\x02", "32-bit big-endian ELF");
    let sections = Command::new("readelf")
        .args(["-SW", &mips])
        .output()
        .expect("readelf (binutils)");
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(sections.contains(".text"), "{sections}");
    assert!(
        !sections.contains(".pdr"),
        "openwrt/cross-build ships mips binaries without .pdr: {sections}"
    );

    let (mut s, [sub_before, gw_before], status) = connected(test, qemu, &mips);
    let sub = &status["subscriber"];
    assert_eq!(sub["gateway"]["name"], "gw");
    assert_eq!(sub["method"], "wireguard");
    assert_eq!(sub["ipv4"], "100.127.0.2");
    s.watch_inet().unwrap();
    assert!(
        s.ping_within(Duration::from_secs(10)),
        "ping through the tunnel; sub log:\n{}",
        s.tail(Node::Sub)
    );
    let (from_gw, all) = s.inet_counts().unwrap();
    assert!(
        from_gw >= 1 && from_gw == all,
        "inet sees the gateway's uplink address (NAT): {from_gw} of {all}"
    );
    let sessions = s.cli(Node::Gw, &["sessions", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&sessions).unwrap();
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{v}");

    s.assert_sigterm_leaves_nothing(&[(Node::Sub, &sub_before), (Node::Gw, &gw_before)]);
    assert!(!s.ping_inet("1"));
}

/// The mesh with both daemons started under `qemu` and the subscriber connected: the scenario,
/// the state of sub and gw before, and sub's status. A second try is made only for a diagnosed
/// emulator defect ([`stuck_forks`]); any other failure fails the test.
fn connected(test: &str, qemu: &str, mips: &str) -> (Scenario, [String; 2], serde_json::Value) {
    for attempt in 1..=2 {
        let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
        s.run_daemons_as(&[qemu, mips]);
        s.bed
            .wait_converged(Duration::from_secs(20))
            .expect("Babel converges");
        let before = [s.system_state(Node::Sub), s.system_state(Node::Gw)];
        assert!(!s.ping_inet("1"), "no Internet from sub without mnigs");

        s.start(Node::Gw).unwrap();
        s.start(Node::Sub).unwrap();
        for node in [Node::Gw, Node::Sub] {
            let pid = s.pid(node).unwrap();
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
            assert!(
                cmdline.contains(qemu) && cmdline.contains(mips),
                "the {} daemon is the mips build under qemu: {cmdline:?}",
                node.name()
            );
        }
        // Emulation is slower than the host: the same steps, a longer wait than e2e_core's.
        let e = match s.wait_connected(Duration::from_secs(60), &AtomicBool::new(false)) {
            Ok(status) => return (s, before, status),
            Err(e) => e,
        };
        let stuck: Vec<(&str, Vec<u32>)> = [Node::Gw, Node::Sub]
            .into_iter()
            .map(|n| (n.name(), s.pid(n).map(stuck_forks).unwrap_or_default()))
            .filter(|(_, pids)| !pids.is_empty())
            .collect();
        let logs = format!(
            "sub log:\n{}\ngw log:\n{}",
            s.tail(Node::Sub),
            s.tail(Node::Gw)
        );
        // Ours (forked by the daemons this test started), and they would outlive the testbed.
        for pid in stuck.iter().flat_map(|(_, pids)| pids) {
            // SAFETY: kill(2) on a PID found below our own daemon a moment ago.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if stuck.is_empty() || attempt == 2 {
            panic!("{e}; forks stuck before exec: {stuck:?}; {logs}");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! {test}: {e}; processes the emulated daemons forked never reached exec \
             ({stuck:?}): qemu-user runs a guest's fork as a host fork, and such a child can \
             hang (a router runs natively); the scenario runs once more !!!!!!!!\n{logs}\n"
        );
    }
    unreachable!("the second attempt returns or panics")
}

/// The descendants of `pid` (an emulated daemon) that are still the emulator itself rather than
/// a program it started: forks that have not reached `exec`. Only those seen twice, 2 s apart,
/// count (a fork is the emulator for a moment on its way to `exec`).
fn stuck_forks(pid: u32) -> Vec<u32> {
    let exe = |p: u32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    let Some(qemu) = exe(pid) else {
        return vec![];
    };
    let forks = || -> Vec<u32> {
        descendants(pid)
            .into_iter()
            .filter(|&c| exe(c).as_ref() == Some(&qemu))
            .collect()
    };
    let first = forks();
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(Duration::from_secs(2));
    let second = forks();
    first.into_iter().filter(|p| second.contains(p)).collect()
}

/// Every process below `pid`, from `/proc/*/stat` (the parent is the fourth field, after the
/// command name in parentheses).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .iter()
        .filter_map(|dir| {
            let p: u32 = dir.file_name()?.to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
