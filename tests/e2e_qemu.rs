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

    let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
    s.run_daemons_as(&[qemu, &mips]);
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    let sub_before = s.system_state(Node::Sub);
    let gw_before = s.system_state(Node::Gw);
    assert!(!s.ping_inet("1"), "no Internet from sub without mnigs");

    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    for node in [Node::Gw, Node::Sub] {
        let pid = s.pid(node).unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            cmdline.contains(qemu) && cmdline.contains(&mips),
            "the {} daemon is the mips build under qemu: {cmdline:?}",
            node.name()
        );
    }
    // Emulation is slower than the host: the same steps, a longer wait than e2e_core's.
    let status = s
        .wait_connected(Duration::from_secs(60), &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{e}; sub log:\n{}", s.tail(Node::Sub)));
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
