//! End to end, as root: SIGHUP reloads the UCI file of a running daemon. The gateway's new terms
//! show in its status and in what the subscriber's scan reads from `nodeInfo`, the subscriber's
//! new intervals and max_price in its status, while the tunnel between them stays exactly as it
//! was (same session, peers, interface, connection time, traffic flowing). A restart-only option
//! changed in the file is reported and not applied. A max_price below the gateway's price makes
//! the tunnel invalid, and then, only then, it is left. SIGTERM leaves nothing behind.

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, e2e_gate};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

fn json(s: &Scenario, node: Node, args: &[&str]) -> Value {
    let out = s.cli(node, args).expect("cli");
    serde_json::from_str(&out).expect("JSON")
}

/// Session ids on the gateway.
fn sids(s: &Scenario) -> Vec<String> {
    json(s, Node::Gw, &["sessions", "--json"])["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["sid"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// WireGuard state of an interface (peers, keys, allowed IPs; not the moving counters).
fn wg_peers(s: &Scenario, node: Node, ifname: &str) -> String {
    let dump = s
        .bed
        .exec(node, &["wg", "show", ifname, "allowed-ips"])
        .unwrap_or_default();
    assert!(!dump.trim().is_empty(), "{ifname} has a peer");
    dump
}

/// The subscriber's connection, without the fields that move by themselves.
fn connection(s: &Scenario) -> Value {
    let mut sub = s.status(Node::Sub).unwrap()["subscriber"].clone();
    // Measurements that move by themselves: lease countdown, probe quality, scores.
    let obj = sub.as_object_mut().unwrap();
    obj.remove("leaseLeft");
    obj.remove("ranking");
    if let Some(g) = obj.get_mut("gateway").and_then(Value::as_object_mut) {
        for k in ["leaseLeft", "quality", "score"] {
            g.remove(k);
        }
    }
    sub
}

/// `node`'s log once it contains `needle`, or after 5 s.
fn log_within(s: &Scenario, node: Node, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(s.log(node)).unwrap_or_default();
        if log.contains(needle) || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn edit(s: &Scenario, node: Node, from: &str, to: &str) {
    let path = s.config(node);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} in {}", path.display());
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn hup(pid: Option<u32>) {
    let pid = Pid::from_raw(pid.expect("running") as i32);
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
}

/// Waits until `check` holds for `node`'s status (the reload is asynchronous to the signal).
fn wait_status(s: &Scenario, node: Node, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.status(node).unwrap();
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "status never changed: {v}\nlog:\n{}",
            s.tail(node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_applies_new_terms_and_keeps_the_tunnel() {
    if !e2e_gate("sighup_applies_new_terms_and_keeps_the_tunnel") {
        return;
    }
    let (mut s, [sub_before, gw_before]) =
        Scenario::connected(EXE.as_ref(), 60).expect("connected scenario");

    let sessions = sids(&s);
    assert_eq!(sessions.len(), 1);
    let gw_peers = wg_peers(&s, Node::Gw, &s.gw_wg);
    let sub_peers = wg_peers(&s, Node::Sub, &s.sub_wg);
    let conn = connection(&s);
    let terms = &s.status(Node::Gw).unwrap()["gateway"]["terms"];
    assert_eq!(
        (
            &terms["price"],
            &terms["maxSubscribers"],
            &terms["leaseSeconds"]
        ),
        (&Value::from(0), &Value::from(10), &Value::from(60))
    );

    // Gateway: new terms, and one restart-only option (the uplink) changed as well.
    edit(
        &s,
        Node::Gw,
        "\toption enabled '1'\n",
        "\toption enabled '1'\n\toption price '5'\n\toption bandwidth_down '50000'\n",
    );
    edit(
        &s,
        Node::Gw,
        "option max_subscribers '10'",
        "option max_subscribers '4'",
    );
    edit(
        &s,
        Node::Gw,
        "option lease_seconds '60'",
        "option lease_seconds '45'",
    );
    let wan = s.bed.wan_ifname().to_string();
    edit(
        &s,
        Node::Gw,
        &format!("option wan_interface '{wan}'"),
        "option wan_interface 'eth9'",
    );
    hup(s.gw_pid);
    let status = wait_status(&s, Node::Gw, |v| v["gateway"]["terms"]["price"] == 5);
    let terms = &status["gateway"]["terms"];
    assert_eq!(terms["maxSubscribers"], 4);
    assert_eq!(terms["leaseSeconds"], 45);
    assert_eq!(terms["bandwidthDown"], 50000);
    assert_eq!(terms["subscribers"], 1);
    // The new terms are live before the reload is logged: wait for its last line.
    let log = log_within(&s, Node::Gw, "kept until the daemon restarts");
    assert!(
        log.contains(
            "configuration reloaded: applied gateway.max_subscribers, gateway.lease_seconds, \
             gateway.price, gateway.bandwidth_down"
        ),
        "{log}"
    );
    assert!(
        log.contains("kept until the daemon restarts: gateway.wan_interface"),
        "{log}"
    );
    // The subscriber sees the new terms through nodeInfo; scanning while connected stays put.
    s.cli(Node::Sub, &["scan"]).unwrap();
    let seen = json(&s, Node::Sub, &["gateways", "--json"]);
    let gw = &seen["gateways"][0]["info"]["terms"];
    assert_eq!(
        (&gw["price"], &gw["maxSubscribers"]),
        (&Value::from(5), &Value::from(4))
    );

    // The tunnel is untouched: same session, same peers on both ends, same connection.
    assert_eq!(sids(&s), sessions);
    assert_eq!(wg_peers(&s, Node::Gw, &s.gw_wg), gw_peers);
    assert_eq!(wg_peers(&s, Node::Sub, &s.sub_wg), sub_peers);
    assert_eq!(connection(&s), conn);
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "traffic still flows (NAT still on the old uplink)"
    );

    // Subscriber: a shorter scan interval and a max_price the gateway still meets.
    edit(
        &s,
        Node::Sub,
        "\tlist method 'wireguard'\n",
        "\tlist method 'wireguard'\n\toption scan_interval '30'\n\toption max_price '10'\n",
    );
    hup(s.sub_pid);
    let v = wait_status(&s, Node::Sub, |v| v["subscriber"]["scanInterval"] == 30);
    assert_eq!(v["subscriber"]["maxPrice"], 10);
    assert_eq!(connection(&s)["state"], "connected");
    let mut now = connection(&s);
    for k in ["scanInterval", "maxPrice"] {
        now.as_object_mut().unwrap().remove(k);
    }
    let mut was = conn.clone();
    for k in ["scanInterval", "maxPrice"] {
        was.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(now, was, "the subscriber's tunnel is untouched");
    assert_eq!(sids(&s), sessions);
    assert!(s.ping_within(Duration::from_secs(5)));

    // A max_price below the gateway's price: the tunnel is no longer acceptable and is left.
    edit(
        &s,
        Node::Sub,
        "option max_price '10'",
        "option max_price '1'",
    );
    hup(s.sub_pid);
    let v = wait_status(&s, Node::Sub, |v| v["subscriber"]["gateway"].is_null());
    assert_eq!(v["subscriber"]["maxPrice"], 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sids(&s).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sids(&s).is_empty(), "the lease was released");

    // An invalid file is refused; the daemon keeps running with its last good config.
    edit(&s, Node::Gw, "option price '5'", "option price 'lots'");
    hup(s.gw_pid);
    let log = log_within(&s, Node::Gw, "reload refused");
    assert!(log.contains("reload refused"), "{}", s.tail(Node::Gw));
    // The CLI reads the port from the same file, so make it readable again (no SIGHUP).
    edit(&s, Node::Gw, "option price 'lots'", "option price '5'");
    assert_eq!(s.status(Node::Gw).unwrap()["gateway"]["terms"]["price"], 5);

    s.assert_sigterm_leaves_nothing(&[(Node::Sub, &sub_before), (Node::Gw, &gw_before)]);
}
