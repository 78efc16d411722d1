//! End to end, as root: a subscriber holds a WireGuard session; the relay node, another mesh
//! node, asks the same gateway for a session with the subscriber's public key (public: it
//! travels in every requestConnection). The gateway refuses with a permanent error naming the
//! key, `wg show` on the gateway is unchanged (the subscriber's peer keeps its addresses and
//! endpoint) and the subscriber stays connected. The relay with a key of its own is served, and
//! re-keying that session to the subscriber's key is refused the same way.

use mnigs::demo::Scenario;
use mnigs::testbed::{Node, Testbed, e2e_gate};
use serde_json::{Value, json};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

/// `requestConnection` from `node` to the gateway, over bash's /dev/tcp (no client program
/// needed in the namespace); returns the result object.
fn request_from(s: &Scenario, node: Node, key: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "requestConnection",
        "params": {"name": "thief", "method": "wireguard", "options": {"publicKey": key}}})
    .to_string();
    let gw = Testbed::mesh_v4(Node::Gw);
    let request = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {gw}:65533\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    let before = wg_dump(&s);
    let victim_key = before
        .lines()
        .next()
        .and_then(|l| l.split(' ').next())
        .expect("the subscriber's peer")
        .to_string();
    let sid = |s: &Scenario| s.status(Node::Gw).expect("status")["gateway"]["sessions"].clone();
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
    assert_eq!(wg_dump(&s), with_relay, "wg show changed by the re-key");
    assert!(with_relay.contains(&before), "the victim's peer as it was");
    let st = s.status(Node::Sub).expect("status");
    assert_eq!(st["subscriber"]["state"], "connected", "{st}");
}
