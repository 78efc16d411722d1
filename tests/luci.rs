//! luci-app-mnigs without a router: every view passes `node --check`, the menu and ACL files are
//! valid JSON granting exactly what the views call (reads vs writes), and the rpcd plugin, run
//! the way rpcd runs it (`list`, then `call METHOD` with JSON on stdin), answers with JSON from a
//! running daemon (no role, on loopback) and when the daemon is down. shellcheck runs on the
//! plugin when it is installed.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

fn app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("luci-app-mnigs")
}

fn plugin() -> PathBuf {
    app().join("root/usr/libexec/rpcd/luci.mnigs")
}

fn views() -> Vec<PathBuf> {
    let dir = app().join("htdocs/luci-static/resources/view/mnigs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("views")
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn json_file(rel: &str) -> Value {
    let text = std::fs::read_to_string(app().join(rel)).expect(rel);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// The methods of luci.mnigs a view declares with rpc.declare.
fn declared_methods(js: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for chunk in js.split("rpc.declare(").skip(1) {
        let decl = &chunk[..chunk.find("})").unwrap_or(chunk.len())];
        assert!(decl.contains("object: 'luci.mnigs'"), "{decl}");
        let m = decl.split("method: '").nth(1).expect("method");
        out.insert(m[..m.find('\'').unwrap()].to_string());
    }
    out
}

#[test]
fn views_parse_and_acl_grants_exactly_what_they_use() {
    let node_ok = Command::new("node").arg("--version").output().is_ok();
    let views = views();
    assert_eq!(views.len(), 2, "settings.js and status.js");
    let mut used = BTreeSet::new();
    for v in &views {
        if node_ok {
            let out = Command::new("node").arg("--check").arg(v).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                v.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        } else if std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1") {
            panic!("node is not installed; `node --check` cannot run");
        }
        let js = std::fs::read_to_string(v).unwrap();
        assert!(js.starts_with("'use strict';"), "{}", v.display());
        used.extend(declared_methods(&js));
    }
    let menu = json_file("root/usr/share/luci/menu.d/luci-app-mnigs.json");
    for (path, entry) in menu.as_object().unwrap() {
        assert!(path.starts_with("admin/services/mnigs"), "{path}");
        if entry["action"]["type"] == "view" {
            let view = entry["action"]["path"].as_str().unwrap();
            let file = app().join(format!("htdocs/luci-static/resources/view/{view}.js"));
            assert!(file.exists(), "menu points to missing {view}");
        }
    }
    assert_eq!(
        menu["admin/services/mnigs"]["depends"]["acl"][0],
        "luci-app-mnigs"
    );
    let acl = json_file("root/usr/share/rpcd/acl.d/luci-app-mnigs.json");
    let grants = |kind: &str| -> BTreeSet<String> {
        acl["luci-app-mnigs"][kind]["ubus"]["luci.mnigs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    };
    let (read, write) = (grants("read"), grants("write"));
    let want_read: BTreeSet<String> = ["status", "gateways", "sessions"].map(String::from).into();
    let want_write: BTreeSet<String> = ["scan", "connect", "disconnect"].map(String::from).into();
    assert_eq!(read, want_read, "read grants only the reading methods");
    assert_eq!(write, want_write, "write grants only the actions");
    let granted: BTreeSet<String> = read.union(&write).cloned().collect();
    assert_eq!(used, granted, "the ACL grants exactly what the views call");
    assert_eq!(acl["luci-app-mnigs"]["read"]["uci"][0], "mnigs");
    assert_eq!(acl["luci-app-mnigs"]["write"]["uci"][0], "mnigs");
    let make = std::fs::read_to_string(app().join("Makefile")).unwrap();
    assert!(make.contains("include ../../luci.mk"));
}

/// Runs the plugin as rpcd does: argv `list` or `call METHOD`, JSON on stdin, in `dir` with
/// our mnigs first on PATH and the config in MNIGS_CONFIG.
fn rpcd(args: &[&str], stdin: &str, config: &Path) -> Value {
    let bin_dir = Path::new(EXE).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(plugin())
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("MNIGS_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"));
    assert!(v.is_object(), "rpcd needs an object: {text}");
    v
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rpcd_plugin_answers_from_a_running_daemon() {
    let dir = std::env::temp_dir().join(format!("mnigs-luci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("mnigs");
    std::fs::write(
        &config,
        format!(
            "config mnigs 'main'\n\toption name 'luci-test'\n\toption rpc_port '{port}'\n\
             \tlist listen '127.0.0.1'\n\toption database '{}'\n",
            dir.join("db").display()
        ),
    )
    .unwrap();

    // Down: still JSON, saying so.
    let down = rpcd(&["call", "status"], "{}", &config);
    assert_eq!(down["success"], false, "{down}");
    assert_eq!(down["notRunning"], true, "{down}");

    let list = rpcd(&["list"], "", &config);
    let methods: BTreeSet<&str> = list
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        methods,
        [
            "connect",
            "disconnect",
            "gateways",
            "scan",
            "sessions",
            "status"
        ]
        .into()
    );
    assert_eq!(list["connect"]["port"], 65533, "signature types by example");

    let daemon = Daemon(
        Command::new(EXE)
            .args(["daemon", "-c", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let status = loop {
        let v = rpcd(&["call", "status"], "{}", &config);
        if v["success"] == true || start.elapsed() > Duration::from_secs(10) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["success"], true, "{status}");
    assert_eq!(status["name"], "luci-test");
    assert_eq!(status["access"], "full");
    assert!(status["subscriber"].is_null());

    let gws = rpcd(&["call", "gateways"], "{}", &config);
    assert_eq!(gws["success"], true);
    assert!(gws["gateways"].is_array());
    let sess = rpcd(&["call", "sessions"], "{}", &config);
    assert_eq!(sess["sessions"], Value::Array(vec![]));

    // Actions reach the daemon, which answers that this node has no subscriber role.
    for (method, args) in [
        ("scan", "{}"),
        ("disconnect", "{}"),
        (
            "connect",
            "{ \"address\": \"10.77.0.3\", \"port\": 65533, \"method\": \"wireguard\" }",
        ),
    ] {
        let v = rpcd(&["call", method], args, &config);
        assert_eq!(v["success"], false, "{method}: {v}");
        assert!(
            v["errorMsg"].as_str().unwrap().contains("subscriber role"),
            "{method}: {v}"
        );
    }
    // Hostile or malformed arguments never reach mnigs as anything but a refusal.
    for args in [
        "{ \"address\": \"$(touch /tmp/pwned)\" }",
        "{ \"address\": \"10.0.0.1; reboot\" }",
        "{}",
        "not json",
    ] {
        let v = rpcd(&["call", "connect"], args, &config);
        assert_eq!(v["success"], false, "{args}: {v}");
    }
    let v = rpcd(
        &["call", "connect"],
        "{ \"address\": \"10.0.0.1\", \"port\": \"1; reboot\" }",
        &config,
    );
    assert_eq!(v["errorMsg"], "invalid port", "{v}");
    let v = rpcd(
        &["call", "connect"],
        "{ \"address\": \"10.0.0.1; reboot\" }",
        &config,
    );
    assert_eq!(v["errorMsg"], "invalid address", "{v}");
    let v = rpcd(&["call", "reboot"], "{}", &config);
    assert_eq!(v["errorMsg"], "unknown method");
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rpcd_plugin_passes_shellcheck() {
    let Ok(out) = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(plugin())
        .output()
    else {
        eprintln!("SKIPPED shellcheck: not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
