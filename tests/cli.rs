//! The command line as a user meets it (no root needed): check-config output, a daemon that is
//! not running, and the read commands against a running daemon with no role.

#[path = "common/daemon.rs"]
mod daemon_common;

use daemon_common::{free_port, loopback_config};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnigs-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mnigs(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).to_string()
}

#[test]
fn check_config_prints_every_problem_with_file_and_line() {
    let d = dir("check");
    let bad = d.join("bad");
    std::fs::write(
        &bad,
        "config mnigs 'main'\n\toption rpc_port 'abc'\n\toption colour 'blue'\n\nconfig gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'eth0; reboot'\n",
    )
    .unwrap();
    let out = mnigs(&["check-config", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let file = bad.display().to_string();
    assert!(
        stdout.contains(&format!("{file}:2: main.rpc_port: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{file}:3: main.colour: warning: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{file}:7: gateway.wan_interface: ")),
        "{stdout}"
    );

    let out = mnigs(&["check-config", "--json", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["success"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == 2 && p["place"] == "main.rpc_port" && p["severity"] == "error")
    );
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == 3 && p["severity"] == "warning")
    );

    let good = d.join("good");
    std::fs::write(&good, "config mnigs 'main'\n\toption name 'n1'\n").unwrap();
    let out = mnigs(&["check-config", "-c", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let missing = d.join("missing");
    let out = mnigs(&["check-config", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("missing"));
    std::fs::remove_dir_all(d).unwrap();
}

fn config(d: &std::path::Path, port: u16) -> PathBuf {
    loopback_config(d, "cli-node", port, "")
}

#[test]
fn client_commands_say_plainly_when_the_daemon_is_not_running() {
    let d = dir("down");
    let c = config(&d, free_port());
    for cmd in ["status", "gateways", "sessions", "scan", "disconnect"] {
        let out = mnigs(&[cmd, "-c", c.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{cmd}");
        assert!(
            text(&out.stderr).contains("daemon is not running"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }
    // With --json, scripts get a JSON object on stdout as well, and the same exit code.
    for cmd in ["status", "gateways", "sessions", "scan", "disconnect"] {
        let out = mnigs(&[cmd, "--json", "-c", c.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{cmd}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(v["success"], false);
        assert_eq!(v["notRunning"], true);
        assert_eq!(v["exitCode"], 3);
    }
    let out = mnigs(&["connect", "not-an-address", "-c", c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an IPv4 or IPv6 address"));
    let out = mnigs(&[
        "connect",
        "not-an-address",
        "--json",
        "-c",
        c.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["notRunning"], false);
    let out = mnigs(&["--version"]);
    assert!(text(&out.stdout).starts_with("mnigs "));
    std::fs::remove_dir_all(d).unwrap();
}

/// Our daemon child; killed if the test fails before stopping it.
struct Daemon(std::process::Child);

impl Daemon {
    fn terminate(mut self) -> bool {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn read_commands_against_a_running_daemon() {
    let d = dir("up");
    let c = config(&d, free_port());
    let cs = c.to_str().unwrap();
    let daemon = Daemon(
        Command::new(EXE)
            .args(["daemon", "-c", cs])
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let status = loop {
        let out = mnigs(&["status", "--json", "-c", cs]);
        if out.status.success() {
            break text(&out.stdout);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["name"], "cli-node");
    assert!(v["gateway"].is_null() && v["subscriber"].is_null());
    let human = text(&mnigs(&["status", "-c", cs]).stdout);
    assert!(
        human.contains("gateway     disabled") && human.contains("subscriber  disabled"),
        "{human}"
    );
    let out = mnigs(&["scan", "-c", cs]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "scan without the subscriber role fails"
    );
    assert!(text(&out.stderr).contains("subscriber role is disabled"));
    let gateways = text(&mnigs(&["gateways", "-c", cs]).stdout);
    assert!(
        gateways.starts_with("NAME") && gateways.contains("(none)"),
        "{gateways}"
    );
    assert!(daemon.terminate(), "daemon exits 0 on SIGTERM");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn demo_says_where_the_demo_is() {
    // The demo lives in the lab (lab/, `mnigs-demo`), not in the router's binary.
    let out = mnigs(&["demo", "--hold"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cargo run --release -p mnigs-lab -- demo"),
        "{err}"
    );
}
