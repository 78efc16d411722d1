//! End to end, as root: a subscriber holds a WireGuard session; the relay node, another mesh
//! node, asks the same gateway for a session with the subscriber's public key (public: it
//! travels in every requestConnection). The gateway refuses with a permanent error naming the
//! key, `wg show` on the gateway is unchanged (the subscriber's peer keeps its addresses and
//! endpoint) and the subscriber stays connected. The relay with a key of its own is served, and
//! re-keying that session to the subscriber's key is refused the same way. And the per-source
//! cap: the subscriber and the relay share the mesh's fd77::/64, so with
//! `max_sessions_per_source '1'` the second of them is told to come back later over IPv6 while
//! over IPv4 (its own address) it is served.

#[path = "common/e2e.rs"]
mod e2e_common;
use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

/// `requestConnection` from `node` to the gateway's IPv4 mesh address.
fn request_from(s: &Scenario, node: Node, key: &str) -> Value {
    request_to(s, node, IpAddr::V4(Testbed::mesh_v4(Node::Gw)), key)
}

/// `requestConnection` from `node` to `gw`, over bash's /dev/tcp (no client program needed in
/// the namespace); returns the result object.
fn request_to(s: &Scenario, node: Node, gw: IpAddr, key: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "requestConnection",
        "params": {"name": "thief", "method": "wireguard", "options": {"publicKey": key}}})
    .to_string();
    let host = std::net::SocketAddr::new(gw, 65533);
    let request = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let script = format!("exec 3<>/dev/tcp/{gw}/65533; printf '%s' \"$1\" >&3; cat <&3");
    let raw = s
        .bed
        .exec_full(
            node,
            &["bash", "-c", &script, "bash", &request],
            None,
            Duration::from_secs(20),
        )
        .expect("request sent");
    let answer: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or("null"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"));
    answer["result"].clone()
}

fn wg_dump(s: &Scenario) -> String {
    let out = s
        .bed
        .exec(Node::Gw, &["wg", "show", &s.gw_wg, "dump"])
        .expect("wg show");
    // Drop the transfer counters and handshake time: traffic moves them.
    out.lines()
        .skip(1)
        .map(|l| l.split('\t').take(4).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn another_subscribers_wireguard_key_is_refused_and_wg_show_unchanged() {
    if !e2e_gate("another_subscribers_wireguard_key_is_refused_and_wg_show_unchanged") {
        return;
    }
    let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.start(Node::Gw).expect("gateway starts");
    s.start(Node::Sub).expect("subscriber starts");
    s.wait_connected(Duration::from_secs(30), &NEVER)
        .expect("subscriber connects");
    // After traffic has flowed: the first handshake may still move the peer's endpoint to the
    // address the subscriber's packets come from.
    assert!(s.ping_within(Duration::from_secs(10)), "traffic flows");
    let before = wg_dump(&s);
    let victim_key = before
        .lines()
        .next()
        .and_then(|l| l.split(' ').next())
        .expect("the subscriber's peer")
        .to_string();
    // The sessions as they are, apart from the seconds left (a second may tick over).
    let sid = |s: &Scenario| {
        let mut v = s.status(Node::Gw).expect("status")["gateway"]["sessions"].clone();
        for session in v.as_array_mut().into_iter().flatten() {
            if let Some(o) = session.as_object_mut() {
                o.remove("expiresIn");
            }
        }
        v
    };
    let sessions = sid(&s);

    let stolen = request_from(&s, Node::Relay, &victim_key);
    assert_eq!(stolen["success"], false, "{stolen}");
    assert_eq!(stolen["temporaryError"], false, "{stolen}");
    assert!(
        stolen["errorMsg"]
            .as_str()
            .unwrap_or_default()
            .contains("WireGuard public key belongs to a live session of another subscriber"),
        "{stolen}"
    );
    assert_eq!(wg_dump(&s), before, "wg show changed");
    assert_eq!(sid(&s), sessions);

    // With a key of its own the relay is served; re-keying to the victim's is refused.
    let own = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let granted = request_from(&s, Node::Relay, own);
    assert_eq!(granted["success"], true, "{granted}");
    let with_relay = wg_dump(&s);
    assert!(with_relay.contains(own), "{with_relay}");
    let rekey = request_from(&s, Node::Relay, &victim_key);
    assert_eq!(rekey["success"], false, "{rekey}");
    // Peers and their addresses as they were (the relay's endpoint may be filled in meanwhile:
    // the gateway dials a new subscriber's port), and the victim's peer exactly as before.
    // In any order: wireguard-go lists its peers in no fixed order.
    let keys_and_addresses = |dump: &str| -> Vec<String> {
        let mut v: Vec<String> = dump
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                format!("{} {}", f[0], f.get(3).unwrap_or(&""))
            })
            .collect();
        v.sort();
        v
    };
    let after = wg_dump(&s);
    assert_eq!(
        keys_and_addresses(&after),
        keys_and_addresses(&with_relay),
        "wg show changed by the re-key"
    );
    assert!(
        after.contains(&before),
        "the victim's peer as it was: {after}"
    );
    let st = s.status(Node::Sub).expect("status");
    assert_eq!(st["subscriber"]["state"], "connected", "{st}");
}

#[test]
fn one_ipv6_64_holds_at_most_max_sessions_per_source() {
    if !e2e_gate("one_ipv6_64_holds_at_most_max_sessions_per_source") {
        return;
    }
    let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
    let conf = s.config(Node::Gw);
    e2e_common::add_to_section(
        &conf,
        "config gateway 'gateway'\n",
        "\toption max_sessions_per_source '1'\n",
    );
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.start(Node::Gw).expect("gateway starts");
    let gw6 = IpAddr::V6(Testbed::mesh_v6(Node::Gw));
    let (k1, k2) = (
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    );
    let first = request_to(&s, Node::Sub, gw6, k1);
    assert_eq!(first["success"], true, "{first}");
    let second = request_to(&s, Node::Relay, gw6, k2);
    assert_eq!(second["success"], false, "{second}");
    assert_eq!(second["temporaryError"], true, "{second}");
    assert!(
        second["errorMsg"]
            .as_str()
            .unwrap_or_default()
            .contains("max_sessions_per_source"),
        "{second}"
    );
    let own_v4 = request_from(&s, Node::Relay, k2);
    assert_eq!(
        own_v4["success"], true,
        "an IPv4 address is its own source: {own_v4}"
    );
    let sessions = s.status(Node::Gw).expect("status")["gateway"]["sessions"].clone();
    assert_eq!(sessions.as_array().map(Vec::len), Some(2), "{sessions}");
}
