//! The gateway's RPC surface under competition, in this process on loopback (no root): callers are
//! told apart by source address (127.0.0.0/8 gives us many), a session belongs to its caller, and
//! 100 callers racing for 10 slots get exactly 10 sessions and 10 tunnel peers.

use mnigs::config::Config;
use mnigs::rpc::limits::Limits;
use mnigs::rpc::server::Server;
use serde_json::{Value, json};
use std::collections::HashSet;
#[path = "common/gateway.rs"]
mod gateway_common;
use gateway_common::{CountingMethod, counting_node_with, serve};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier, Mutex};

fn call_from(from: Ipv4Addr, to: SocketAddr, method: &str, params: Value) -> Value {
    gateway_common::call_from(from, to, method, params)["result"].clone()
}

fn gateway(max: u32) -> (Server, SocketAddr, Arc<Mutex<HashSet<String>>>) {
    let mut cfg = Config::default();
    cfg.gateway.max_subscribers = max;
    let method = CountingMethod::default();
    let peers = method.0.clone();
    let node = counting_node_with(cfg, method);
    let (server, addr) = serve(
        node,
        &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        Limits::default(),
    );
    (server, addr, peers)
}

fn ask(key: &str) -> Value {
    json!({"name": "n", "method": "wireguard", "options": {"publicKey": key}})
}

#[test]
fn only_the_owner_may_renew_or_release_and_repeats_are_idempotent() {
    let (server, gw, peers) = gateway(10);
    let alice = Ipv4Addr::new(127, 0, 0, 11);
    let mallory = Ipv4Addr::new(127, 0, 0, 66);
    let grant = call_from(alice, gw, "requestConnection", ask("alice"));
    assert_eq!(grant["success"], true, "{grant}");
    let sid = grant["sid"].as_str().unwrap().to_string();
    assert_eq!(sid.len(), 32);

    let again = call_from(alice, gw, "requestConnection", ask("alice"));
    assert_eq!(
        again["sid"],
        sid.as_str(),
        "a repeat returns the same session"
    );
    assert_eq!(again["ipv4"], grant["ipv4"]);

    for m in ["renewConnection", "releaseConnection"] {
        let v = call_from(mallory, gw, m, json!({"sid": sid}));
        assert_eq!(v["success"], false, "{m} from another address");
        assert!(
            v["errorMsg"].as_str().unwrap().contains("another address"),
            "{v}"
        );
    }
    let mut stolen = ask("mallory");
    stolen["sid"] = json!(sid);
    let v = call_from(mallory, gw, "requestConnection", stolen);
    assert_eq!(v["success"], false, "naming another's sid is refused: {v}");
    assert_eq!(peers.lock().unwrap().len(), 1, "mallory changed nothing");

    assert_eq!(
        call_from(alice, gw, "renewConnection", json!({"sid": sid}))["success"],
        true
    );
    assert_eq!(
        call_from(alice, gw, "releaseConnection", json!({"sid": sid}))["success"],
        true
    );
    assert!(peers.lock().unwrap().is_empty());
    assert_eq!(
        call_from(alice, gw, "renewConnection", json!({"sid": sid}))["success"],
        false
    );
    server.stop();
}

#[test]
fn a_hundred_callers_racing_for_ten_slots() {
    let (server, gw, peers) = gateway(10);
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100u8)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                call_from(
                    Ipv4Addr::new(127, 0, 1, i + 1),
                    gw,
                    "requestConnection",
                    ask(&format!("key{i}")),
                )
            })
        })
        .collect();
    let answers: Vec<Value> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let granted: Vec<&Value> = answers.iter().filter(|a| a["success"] == true).collect();
    let full = answers
        .iter()
        .filter(|a| a["success"] == false && a["temporaryError"] == true)
        .count();
    assert_eq!(granted.len(), 10, "exactly max_subscribers sessions");
    assert_eq!(full, 90, "everyone else is told to come back later");
    let addresses: HashSet<&str> = granted
        .iter()
        .map(|g| g["ipv4"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 10, "distinct tunnel addresses");
    assert_eq!(
        peers.lock().unwrap().len(),
        10,
        "exactly 10 tunnel peers configured"
    );
    let listed = call_from(Ipv4Addr::LOCALHOST, gw, "listSessions", json!({}));
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 10);
    server.stop();
}

#[test]
fn another_subscribers_key_is_refused_and_its_session_untouched() {
    let (server, gw, peers) = gateway(10);
    let alice = Ipv4Addr::new(127, 0, 0, 12);
    let mallory = Ipv4Addr::new(127, 0, 0, 67);
    let grant = call_from(alice, gw, "requestConnection", ask("alice-key"));
    assert_eq!(grant["success"], true, "{grant}");
    // Who holds what (expiresIn left out: it ticks).
    let sessions = || {
        let list = call_from(Ipv4Addr::LOCALHOST, gw, "listSessions", json!({}));
        let rows: Vec<String> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {}",
                    s["sid"], s["address"], s["ipv4"], s["grantedAt"]
                )
            })
            .collect();
        rows
    };

    let before = sessions();

    // A newcomer with alice's key (public: it travels in every requestConnection).
    let stolen = call_from(mallory, gw, "requestConnection", ask("alice-key"));
    assert_eq!(stolen["success"], false, "{stolen}");
    assert_eq!(stolen["temporaryError"], false, "permanent: {stolen}");
    assert!(
        stolen["errorMsg"]
            .as_str()
            .unwrap()
            .contains("WireGuard public key belongs to a live session of another subscriber"),
        "{stolen}"
    );
    assert_eq!(sessions(), before, "alice's session untouched");
    assert_eq!(
        *peers.lock().unwrap(),
        HashSet::from(["alice-key".to_string()]),
        "no tunnel end re-pointed"
    );

    // A holder of its own session re-keying to alice's key is refused the same way.
    let own = call_from(mallory, gw, "requestConnection", ask("mallory-key"));
    assert_eq!(own["success"], true, "{own}");
    let rekey = call_from(mallory, gw, "requestConnection", ask("alice-key"));
    assert_eq!(rekey["success"], false, "{rekey}");
    assert_eq!(
        *peers.lock().unwrap(),
        HashSet::from(["alice-key".to_string(), "mallory-key".to_string()])
    );

    // Alice re-registering with her own key keeps her session.
    let again = call_from(alice, gw, "requestConnection", ask("alice-key"));
    assert_eq!(again["sid"], grant["sid"], "{again}");
    server.stop();
}
