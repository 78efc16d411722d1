//! The built-in page in a real browser (Debian's chromium, driven by playwright-core from
//! tests/browser/page.mjs) against the demo topology: chromium runs inside the subscriber's
//! namespace and uses the page on its loopback (full control; first a page of another origin tries
//! the actions cross-site, and a DNS-rebound page can neither read nor act), then inside the relay's namespace
//! against the subscriber's mesh address (outside authorized_network: read only, actions refused).
//! Screenshots go to target/browser/. Gated like the other end-to-end tests, plus chromium, node
//! and `npm ci` in tests/browser (`.ci/deps` installs them).

#[path = "common/browser.rs"]
mod browser_common;
#[path = "common/e2e.rs"]
mod e2e_common;
use browser_common::{browser_dir, missing_browser};
use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

/// Like `e2e_gate`, for what the browser needs on top.
fn browser_gate() -> bool {
    let missing = missing_browser();
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join("; ");
    if std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1") {
        panic!("web_browser: MNIGS_E2E=1 but the browser prerequisites are missing: {reason}");
    }
    eprintln!("\n!!!!!!!! SKIPPED web_browser: {reason} !!!!!!!!\n");
    false
}

fn drive(s: &Scenario, node: Node, args: &[&str]) -> String {
    let script = browser_dir().join("page.mjs");
    let script = script.to_string_lossy();
    let mut argv = vec!["node", script.as_ref()];
    argv.extend_from_slice(args);
    match s.bed.exec_full(node, &argv, None, Duration::from_secs(240)) {
        Ok(out) => out,
        Err(e) => panic!(
            "browser run {args:?} failed: {e}\nsubscriber log:\n{}",
            s.tail(Node::Sub)
        ),
    }
}

#[test]
fn page_in_chromium_scans_connects_and_disconnects() {
    if !e2e_gate("web_browser") || !browser_gate() {
        return;
    }
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&out_dir).expect("screenshot dir");
    for f in std::fs::read_dir(&out_dir).expect("read").flatten() {
        let _ = std::fs::remove_file(f.path());
    }
    let out = out_dir.to_string_lossy().to_string();

    let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
    // The subscriber shows mesh neighbours the read-only page, as the shipped config does.
    let conf = s.config(Node::Sub);
    e2e_common::add_to_section(&conf, "config mnigs 'main'\n", "\toption web 'readonly'\n");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.start(Node::Gw).expect("gateway starts");
    s.start(Node::Sub).expect("subscriber starts");
    s.wait_connected(Duration::from_secs(30), &NEVER)
        .expect("subscriber connects by itself");

    // What the CLI shows meanwhile (kept beside the screenshots for the README).
    let cli: Vec<String> = [["status"], ["gateways"]]
        .iter()
        .map(|a| {
            let out = s.cli(Node::Sub, a).expect("cli");
            format!("$ mnigs {}\n{out}", a[0])
        })
        .collect();
    std::fs::write(out_dir.join("cli.txt"), cli.join("")).expect("cli.txt");
    assert!(
        cli[0].contains(&format!("  tunnel    {}", s.sub_wg)),
        "{}",
        cli[0]
    );

    // The LuCI backend on the same node, run as rpcd runs it, sees the tunnel too.
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("luci-app-mnigs/root/usr/libexec/rpcd/luci.mnigs");
    let (bin, conf) = (
        format!("MNIGS_BIN={EXE}"),
        format!("MNIGS_CONFIG={}", s.config(Node::Sub).display()),
    );
    let answer = s
        .bed
        .exec_full(
            Node::Sub,
            &[
                "env",
                &bin,
                &conf,
                &plugin.to_string_lossy(),
                "call",
                "status",
            ],
            Some("{}"),
            Duration::from_secs(20),
        )
        .expect("rpcd plugin runs");
    let st: serde_json::Value = serde_json::from_str(&answer).expect("plugin prints JSON");
    assert_eq!(st["subscriber"]["state"], "connected", "{st}");
    assert_eq!(st["subscriber"]["interface"], s.sub_wg.as_str(), "{st}");

    // Another site's page in the owner's browser on the node itself (the most trusted source,
    // loopback) sends every action the ways a page may without asking: nothing happens.
    let sessions = |s: &Scenario| {
        let gw = s.status(Node::Gw).expect("gateway status");
        gw["gateway"]["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|x| format!("{} {}", x["sid"], x["address"]))
            .collect::<Vec<_>>()
    };
    let held = sessions(&s);
    assert_eq!(held.len(), 1, "{held:?}");
    let via = s.status(Node::Sub).expect("status")["subscriber"]["gateway"].clone();
    let log = drive(
        &s,
        Node::Sub,
        &["crosssite", "http://127.0.0.1:65533/", &out],
    );
    println!("{log}");
    assert!(
        log.contains("ok   the node received the cross-site POSTs"),
        "{log}"
    );
    // DNS rebinding: the attacker's name resolves to the node after its page loaded.
    let log = drive(&s, Node::Sub, &["rebind", "http://127.0.0.1:65533/", &out]);
    println!("{log}");
    assert!(
        log.contains("ok   disconnect refused to the rebound name"),
        "{log}"
    );
    let st = s.status(Node::Sub).expect("status");
    assert_eq!(
        st["subscriber"]["state"], "connected",
        "a page from another site changed the state: {st}"
    );
    assert_eq!(st["subscriber"]["gateway"]["address"], via["address"]);
    assert_eq!(sessions(&s), held, "the session at the gateway is the same");

    // A mesh neighbour, outside authorized_network, sees the page but cannot act.
    let sub_addr = Testbed::mesh_v4(Node::Sub);
    let remote_url = format!("http://{sub_addr}:65533/");
    let gw_addr = Testbed::mesh_v4(Node::Gw).to_string();
    let log = drive(
        &s,
        Node::Relay,
        &["readonly", &remote_url, &out, "gw", &gw_addr],
    );
    println!("{log}");
    assert!(log.contains("disconnect refused with -32001"), "{log}");
    let st = s.status(Node::Sub).expect("status");
    assert_eq!(
        st["subscriber"]["state"], "connected",
        "a read-only caller changed the state"
    );

    // The owner, on the node itself, drives every action.
    let log = drive(
        &s,
        Node::Sub,
        &[
            "full",
            "http://127.0.0.1:65533/",
            &out,
            "gw",
            &gw_addr,
            &s.sub_wg,
        ],
    );
    println!("{log}");
    assert!(log.contains("ok   Connect connects"), "{log}");
    let st = s.status(Node::Sub).expect("status");
    assert_eq!(st["subscriber"]["state"], "disconnected", "{st}");
    let gw = s.status(Node::Gw).expect("gateway status");
    assert_eq!(
        gw["gateway"]["sessions"].as_array().map(Vec::len),
        Some(0),
        "Disconnect must release the session at the gateway: {gw}"
    );
    for shot in [
        "page.png",
        "page-connected.png",
        "page-disconnected.png",
        "page-readonly.png",
    ] {
        let len = std::fs::metadata(out_dir.join(shot)).map_or(0, |m| m.len());
        assert!(
            len > 5000,
            "screenshot {shot} missing or empty ({len} bytes)"
        );
    }
}
