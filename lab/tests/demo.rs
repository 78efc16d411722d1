//! The single-host demo, `mnigs-demo`, as README runs it (`cargo run --release -p mnigs-lab --
//! demo`): as root it tells its story on Babel (`demo`) and on cjdns (`demo --cjdns`, with
//! `MNIGS_CJDROUTE`); without cjdroute it says what is missing; every other command line is
//! mnigs's own.

use mnigs_lab::cjdlab;
use mnigs_lab::testbed::e2e_gate;
use std::path::Path;

const EXE: &str = env!("CARGO_BIN_EXE_mnigs-demo");

/// The demos here run one at a time (each builds a mesh and runs two daemons).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `mnigs-demo args` (one demo at a time): it must succeed and print every one of `lines`.
fn tells(args: &[&str], lines: &[&str]) {
    let _one = serial();
    let out = std::process::Command::new(EXE).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    for line in lines {
        assert!(text.contains(line), "missing {line:?} in:\n{text}\n{err}");
    }
}

#[test]
fn demo_tells_its_story() {
    if !e2e_gate("demo_tells_its_story") {
        return;
    }
    tells(
        &["demo"],
        &[
            "babeld started on sub, relay and gw",
            "Babel routes converged in ",
            "before mnigs: ping sub → Internet host 203.0.113.7 fails, as it should",
            "gateway daemon up on gw (fd77::3)",
            "gateway found and registered: gw at ",
            "Internet reachable: ping sub → 203.0.113.7 works",
            "disconnected: ping now fails again",
            "] done",
        ],
    );
}

#[test]
fn other_command_lines_are_mnigs_own() {
    let out = std::process::Command::new(EXE)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("mnigs ") && text.ends_with('\n'), "{text}");
    let out = std::process::Command::new(EXE)
        .args(["check-config", "/nonexistent/mnigs.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/mnigs.conf"), "{err}");
}

#[test]
fn demo_cjdns_tells_its_story() {
    if cjdlab::gate("demo_cjdns_tells_its_story").is_none() {
        return;
    }
    tells(
        &["demo", "--cjdns"],
        &[
            "cjdroute started and peered on sub, relay and gw",
            "before mnigs: ping sub → Internet host 203.0.113.7 fails, as it should",
            "gateway found and registered: gw at fc",
            " via cjdns, tunnel cjdsub with 100.127.0.2",
            "Internet reachable: ping sub → 203.0.113.7 works",
            "disconnected: ping now fails again; sub's addresses and routes are as before mnigs",
            "] done",
        ],
    );
}

#[test]
fn demo_cjdns_without_cjdroute_says_what_is_missing() {
    // No root needed: the check comes first. PATH without cjdroute, MNIGS_CJDROUTE empty.
    let path = "/usr/sbin:/usr/bin:/sbin:/bin";
    let on_path = path
        .split(':')
        .any(|d| Path::new(d).join("cjdroute").exists());
    let run = |value: &str| {
        std::process::Command::new(EXE)
            .args(["demo", "--cjdns"])
            .env("PATH", path)
            .env(cjdlab::ENV, value)
            .output()
            .unwrap()
    };
    if !on_path {
        let out = run("");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cjdroute is not installed")
                && err.contains("MNIGS_CJDROUTE")
                && err.contains("libsodium23"),
            "{err}"
        );
    }
    let out = run("/nonexistent/cjdroute");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MNIGS_CJDROUTE=/nonexistent/cjdroute: cannot run it"),
        "{err}"
    );
}
