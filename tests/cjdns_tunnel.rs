//! The cjdns IpTunnel method against simulated cjdroute admin APIs (`tests/common/cjdns_admin.rs`,
//! built from cjdroute's documented behaviour; cjdroute itself is not packaged for Debian).
//!
//! The admin client: auth, cookie reuse and expiry, `Auth failed.`, the other errors, padded
//! answers, the 512-byte limit and every IpTunnel call. The method: a full connection (gateway
//! accept → `IpTunnel_allowConnection`, subscriber connect → `IpTunnel_connectTo`, release →
//! `IpTunnel_removeConnection`) with every admin call and every argv asserted, run as root on a
//! thread in a network namespace of its own with tun interfaces standing in for cjdroute's
//! tuns; and a key that is not the caller's refused with no admin call and no command.

#[path = "common/cjdns_admin.rs"]
mod cjdns_admin;
#[path = "common/netns.rs"]
mod netns;

use cjdns_admin::{Mesh, Server};
use mnigs::cjdns::admin::{self, Admin, AdminTarget, UdpAdmin};
use mnigs::cjdns::bencode::Value;
use mnigs::cjdns::keys::check_key;
use mnigs::protocol::Grant;
use mnigs::sys::cmd;
use mnigs::tunnel::cjdns::{self, Cjdns, Connection};
use mnigs::tunnel::{GatewayNet, Method, Peer, TunnelError};
use mnigs_lab::testbed::e2e_gate;
use netns::Setup;
use serde_json::{Map, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "sim-admin-password";
const TTL: Duration = Duration::from_secs(20);

/// Tests that look at the process-wide command log run one at a time.
static COMMANDS: Mutex<()> = Mutex::new(());

fn client(s: &Server, password: Option<&str>) -> UdpAdmin {
    UdpAdmin::connect(
        s.addr,
        password.map(str::to_string),
        Duration::from_millis(500),
    )
    .unwrap()
}

fn mesh() -> Arc<Mutex<Mesh>> {
    Arc::new(Mutex::new(Mesh::default()))
}

#[test]
fn auth_succeeds_and_a_cookie_is_reused() {
    let k = cjdns_admin::key(1);
    let (_, s) = cjdns_admin::node(&k, &mesh(), Some(PASSWORD), TTL);
    let mut a = client(&s, Some(PASSWORD));
    assert_eq!(admin::node_key(&mut a).unwrap(), k);
    assert_eq!(cjdns::list_connections(&mut a).unwrap(), Vec::<i64>::new());
    assert_eq!(cjdns::list_connections(&mut a).unwrap(), Vec::<i64>::new());
    assert_eq!(
        s.stats.cookies.load(Ordering::SeqCst),
        1,
        "one cookie, reused"
    );
    assert_eq!(s.stats.auth_failures.load(Ordering::SeqCst), 0);
    assert_eq!(s.stats.unauthenticated.load(Ordering::SeqCst), 0);
    // Three answers (and the cookie): at least one had its first key's length padded.
    assert!(s.stats.padded.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_wrong_password_fails_with_auth_failed() {
    let (node, s) = cjdns_admin::node(&cjdns_admin::key(2), &mesh(), Some(PASSWORD), TTL);
    let mut a = client(&s, Some("not-the-password"));
    let e = cjdns::list_connections(&mut a).unwrap_err();
    assert!(e.contains("Auth failed."), "{e}");
    // A fresh cookie was refused: no retry.
    assert_eq!(s.stats.cookies.load(Ordering::SeqCst), 1);
    assert_eq!(s.stats.auth_failures.load(Ordering::SeqCst), 1);
    // With the reused cookie refused, one retry with a fresh one, refused as well.
    let key = cjdns_admin::key(3);
    let c = Connection {
        key,
        outgoing: false,
        ip4: Some((Ipv4Addr::new(100, 127, 0, 2), 0, 32)),
        ip6: None,
    };
    let e = cjdns::allow_connection(&mut a, &c).unwrap_err();
    assert!(e.contains("Auth failed."), "{e}");
    assert_eq!(s.stats.cookies.load(Ordering::SeqCst), 2);
    assert_eq!(s.stats.auth_failures.load(Ordering::SeqCst), 3);
    assert_eq!(s.stats.expired.load(Ordering::SeqCst), 0);
    assert!(node.lock().unwrap().conns.is_empty(), "nothing was allowed");
}

#[test]
fn an_expired_cookie_is_replaced_by_a_fresh_one() {
    let ttl = Duration::from_millis(200);
    let (node, s) = cjdns_admin::node(&cjdns_admin::key(4), &mesh(), Some(PASSWORD), ttl);
    let mut a = client(&s, Some(PASSWORD));
    assert!(cjdns::list_connections(&mut a).is_ok());
    std::thread::sleep(ttl + Duration::from_millis(150));
    let c = Connection {
        key: cjdns_admin::key(5),
        outgoing: false,
        ip4: Some((Ipv4Addr::new(100, 127, 0, 9), 0, 32)),
        ip6: None,
    };
    let n = cjdns::allow_connection(&mut a, &c).unwrap();
    assert_eq!(
        s.stats.expired.load(Ordering::SeqCst),
        1,
        "the old cookie expired"
    );
    assert_eq!(
        s.stats.cookies.load(Ordering::SeqCst),
        2,
        "and a new one was fetched"
    );
    // The call was made exactly once, with the fresh cookie.
    assert_eq!(node.lock().unwrap().conns.len(), 1);
    assert_eq!(cjdns::list_connections(&mut a).unwrap(), [n]);
}

#[test]
fn errors_are_reported() {
    let (_, s) = cjdns_admin::node(&cjdns_admin::key(6), &mesh(), Some(PASSWORD), TTL);
    // Without auth: functions that need it are refused; Core_nodeInfo is not.
    let mut anon = client(&s, None);
    assert_eq!(admin::node_key(&mut anon).unwrap(), cjdns_admin::key(6));
    let e = cjdns::list_connections(&mut anon).unwrap_err();
    assert!(e.contains("No functions matched your request"), "{e}");
    assert_eq!(s.stats.unauthenticated.load(Ordering::SeqCst), 1);
    let mut a = client(&s, Some(PASSWORD));
    let e = a.call("IpTunnel_noSuchThing", Value::dict([])).unwrap_err();
    assert!(e.contains("No functions matched"), "{e}");
    let e = cjdns::show_connection(&mut a, 42).unwrap_err();
    assert!(e.contains("connection not found"), "{e}");
    // Removing what is gone: cjdroute says `not_found`, which is no error for us.
    let e = a
        .call(
            "IpTunnel_removeConnection",
            Value::dict([("connection", Value::Int(42))]),
        )
        .unwrap_err();
    assert!(e.ends_with(": not_found"), "{e}");
    cjdns::remove_connection(&mut a, 42).unwrap();
    assert!(!cjdns::routegen_remove_prefix(&mut a, "100.127.0.2/0").unwrap());
    let e = cjdns::connect_to(&mut a, "not-a-key.k").unwrap_err();
    assert!(e.contains("IpTunnel_connectTo"), "{e}");
}

#[test]
fn requests_over_512_bytes_are_not_sent() {
    let (_, s) = cjdns_admin::node(&cjdns_admin::key(7), &mesh(), Some(PASSWORD), TTL);
    let mut a = client(&s, Some(PASSWORD));
    let big = Value::dict([("pad", Value::str(&"x".repeat(400)))]);
    let e = a.call("IpTunnel_listConnections", big).unwrap_err();
    assert!(e.contains("512"), "{e}");
    // The cookie was fetched, the oversized call never left.
    assert_eq!(s.stats.oversized.load(Ordering::SeqCst), 0);
    assert!(s.stats.functions().is_empty());
    // Just under the limit goes through.
    let fits = Value::dict([("pad", Value::str(&"x".repeat(250)))]);
    assert!(a.call("IpTunnel_listConnections", fits).is_ok());
    // cjdroute does not read more than 512 bytes: an oversized datagram gets no answer.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&[b'd'; 600], s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(sock.recv(&mut [0u8; 64]).is_err());
    assert_eq!(s.stats.oversized.load(Ordering::SeqCst), 1);
}

#[test]
fn every_iptunnel_call() {
    let m = mesh();
    let (gk, sk) = (cjdns_admin::key(8), cjdns_admin::key(9));
    let (gw, gs) = cjdns_admin::node(&gk, &m, Some(PASSWORD), TTL);
    let (sub, ss) = cjdns_admin::node(&sk, &m, Some(PASSWORD), TTL);
    let mut g = client(&gs, Some(PASSWORD));
    let mut s = client(&ss, Some(PASSWORD));
    let allowed = Connection {
        key: sk.clone(),
        outgoing: false,
        ip4: Some((Ipv4Addr::new(100, 127, 0, 2), 0, 32)),
        ip6: Some(("fd6d:6e69:6773::2".parse().unwrap(), 0, 128)),
    };
    let n = cjdns::allow_connection(&mut g, &allowed).unwrap();
    assert_eq!(cjdns::list_connections(&mut g).unwrap(), [n]);
    assert_eq!(cjdns::show_connection(&mut g, n).unwrap(), allowed);
    let stored = gw.lock().unwrap().conns[&n].clone();
    assert_eq!(stored.fields["ip4Prefix"], Value::Int(0));
    assert_eq!(stored.fields["ip6Alloc"], Value::Int(128));

    let out = cjdns::connect_to(&mut s, &gk).unwrap().unwrap();
    // As on cjdroute, the addresses come ~100 ms later.
    let early = cjdns::show_connection(&mut s, out).unwrap();
    assert_eq!((early.ip4, early.ip6), (None, None));
    std::thread::sleep(Duration::from_millis(300));
    let dialled = cjdns::show_connection(&mut s, out).unwrap();
    assert!(dialled.outgoing);
    assert_eq!(dialled.key, gk);
    assert_eq!((dialled.ip4, dialled.ip6), (allowed.ip4, allowed.ip6));
    assert_eq!(
        cjdns::find_connections(&mut s, &gk, true).unwrap(),
        [(out, dialled)]
    );
    assert!(
        cjdns::find_connections(&mut s, &gk, false)
            .unwrap()
            .is_empty()
    );

    cjdns::remove_connection(&mut g, n).unwrap();
    assert!(cjdns::list_connections(&mut g).unwrap().is_empty());
    cjdns::remove_connection(&mut s, out).unwrap();
    assert!(sub.lock().unwrap().conns.is_empty());
}

fn target(s: &Server) -> AdminTarget {
    AdminTarget {
        admin: Some(s.addr.to_string()),
        password: Some(PASSWORD.into()),
        cjdroute_conf: None,
        timeout: Duration::from_millis(500),
    }
}

fn net() -> GatewayNet {
    GatewayNet {
        ipv4: Ipv4Addr::new(100, 127, 0, 1),
        cidr4: 24,
        ipv6: Some(("fd6d:6e69:6773::1".parse().unwrap(), 64)),
    }
}

fn options(key: &str) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    m.insert("key".into(), json!(key));
    m
}

#[test]
fn a_key_that_is_not_the_callers_is_refused_before_anything_is_done() {
    let _one = COMMANDS.lock().unwrap_or_else(|e| e.into_inner());
    let (gk, sk, other) = (
        cjdns_admin::key(10),
        cjdns_admin::key(11),
        cjdns_admin::key(12),
    );
    let (gw, gs) = cjdns_admin::node(&gk, &mesh(), Some(PASSWORD), TTL);
    let mut m = Cjdns::new(target(&gs), "cjgw");
    m.prepare(&net()).unwrap();
    let opts = options(&sk);
    let liar = IpAddr::V6(check_key(&other).unwrap());
    cmd::clear_history();
    for owner in [liar, "10.0.0.2".parse().unwrap()] {
        let peer = Peer {
            owner,
            ipv4: Ipv4Addr::new(100, 127, 0, 2),
            ipv6: None,
            options: &opts,
            via: None,
        };
        match m.accept(&peer) {
            Err(TunnelError::Invalid(e)) => {
                assert!(
                    e.contains("belongs to") && e.contains(&owner.to_string()),
                    "{e}"
                )
            }
            other => panic!("accepted a key from {owner}: {other:?}"),
        }
    }
    assert!(gs.stats.functions().is_empty(), "no admin call");
    assert_eq!(gs.stats.cookies.load(Ordering::SeqCst), 0);
    assert!(
        cmd::history().is_empty(),
        "no command: {:?}",
        cmd::history()
    );
    assert!(gw.lock().unwrap().conns.is_empty());
    // A malformed key is refused by the options check already.
    assert!(m.check_options(&options("short.k")).is_err());
}

#[test]
fn the_gateway_service_refuses_a_borrowed_key_permanently_and_grants_nothing() {
    let _one = COMMANDS.lock().unwrap_or_else(|e| e.into_inner());
    let (gk, sk, other) = (
        cjdns_admin::key(13),
        cjdns_admin::key(14),
        cjdns_admin::key(15),
    );
    let (gw_node, gs) = cjdns_admin::node(&gk, &mesh(), Some(PASSWORD), TTL);
    let mut cfg = mnigs::config::Config::default();
    cfg.gateway.enabled = true;
    let store = Arc::new(Mutex::new(mnigs::store::Store::open_in_memory().unwrap()));
    let gw = mnigs::gateway::service::Gateway::new(
        cfg.gateway.clone(),
        vec![Box::new(Cjdns::new(target(&gs), "cjgw"))],
        store.clone(),
        None,
    );
    cmd::clear_history();
    let caller = mnigs::rpc::server::Caller {
        addr: IpAddr::V6(check_key(&other).unwrap()),
        host: None,
    };
    let ask = mnigs::protocol::ConnectionRequest {
        sid: None,
        name: "sub".into(),
        port: None,
        method: "cjdns".into(),
        options: options(&sk),
    };
    let answer = gw.request_connection(&caller, ask);
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["temporaryError"], false, "{answer}");
    let msg = answer["errorMsg"].as_str().unwrap();
    assert!(
        msg.contains("belongs to") && msg.contains(&caller.addr.to_string()),
        "{msg}"
    );
    assert_eq!(gw.sessions(), json!([]));
    assert!(gs.stats.functions().is_empty(), "no admin call");
    assert!(
        cmd::history().is_empty(),
        "no command: {:?}",
        cmd::history()
    );
    assert!(gw_node.lock().unwrap().conns.is_empty());
}

/// As root (skipping loudly otherwise), one such test at a time: [`in_netns`] with `f`.
fn as_root_in_netns(f: fn()) {
    if !e2e_gate("cjdns_tunnel") {
        return;
    }
    let _one = COMMANDS.lock().unwrap_or_else(|e| e.into_inner());
    in_netns(f);
}

/// Runs `f` on a thread in a new network namespace (loopback up, tun interfaces `cjgw` and
/// `cjsub` standing in for the two cjdroutes' tuns); the simulators it starts live there too.
/// Without duplicate address detection: an address still tentative has no local route yet, and a
/// state taken in that moment differs from one taken a second later (seen once in a full run).
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let ip_batch = "link set lo up\ntuntap add cjgw mode tun\ntuntap add cjsub mode tun\n\
                    link set cjgw addrgenmode none\nlink set cjsub addrgenmode none\n\
                    link set cjgw up\nlink set cjsub up\n";
    netns::in_netns(
        Setup {
            ip_batch,
            no_dad: true,
            ..Setup::default()
        },
        f,
    )
}

/// Addresses and routes of both families, all tables.
fn state() -> String {
    let mut out = String::new();
    for argv in [
        &["ip", "-o", "addr", "show"][..],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
    ] {
        out.push_str(&cmd::run(argv).unwrap());
    }
    out
}

/// The calls a simulator saw since the last look, with their arguments.
fn take(s: &Server) -> Vec<(String, Value)> {
    let c = s.stats.calls.lock().unwrap().clone();
    s.stats.clear_calls();
    c
}

fn names(c: &[(String, Value)]) -> Vec<&str> {
    c.iter().map(|(f, _)| f.as_str()).collect()
}

fn commands() -> Vec<String> {
    let h = cmd::history();
    cmd::clear_history();
    h
}

fn calls(s: &Server) -> Vec<String> {
    let f = s.stats.functions();
    s.stats.clear_calls();
    f
}

#[test]
fn a_full_cjdns_connection_makes_exactly_these_calls_and_commands() {
    as_root_in_netns(full_connection);
}

fn full_connection() {
    let m = mesh();
    let (gk, sk) = (cjdns_admin::key(20), cjdns_admin::key(21));
    let (gw_node, gs) = cjdns_admin::node(&gk, &m, Some(PASSWORD), TTL);
    let (sub_node, ss) = cjdns_admin::node(&sk, &m, Some(PASSWORD), TTL);
    let gw_addr = IpAddr::V6(check_key(&gk).unwrap());
    let sub_addr = IpAddr::V6(check_key(&sk).unwrap());
    // cjdroute puts its fc00::/8 address on its tun.
    for (dev, addr) in [("cjgw", gw_addr), ("cjsub", sub_addr)] {
        let a = format!("{addr}/8");
        cmd::run(&["ip", "-6", "addr", "add", &a, "dev", dev, "nodad"]).unwrap();
    }
    let before = state();

    let mut gw = Cjdns::new(target(&gs), "cjgw");
    sub_node.lock().unwrap().tun = Some("cjsub".into());
    let ledger = std::env::temp_dir().join(format!("mnigs-cjdns-ledger-{}", std::process::id()));
    // The tun stand-ins carry no traffic: the echo through the tunnel is the real tests' part.
    let mut sub = Cjdns::new(target(&ss), "cjsub")
        .with_wait(Duration::from_secs(2))
        .with_ledger(&ledger)
        .with_probe(|_, _, _| true);
    gw.prepare(&net()).unwrap();

    // Subscriber: the request carries our key, read through the admin API.
    let opts = sub.request_options();
    assert_eq!(opts, options(&sk));
    assert_eq!(calls(&ss), ["Core_nodeInfo"]);
    assert!(gw.check_options(&opts).is_ok());

    // Gateway: accept.
    let sub_v6: Ipv6Addr = "fd6d:6e69:6773::2".parse().unwrap();
    let peer = Peer {
        owner: sub_addr,
        ipv4: Ipv4Addr::new(100, 127, 0, 2),
        ipv6: Some(sub_v6),
        options: &opts,
        via: None,
    };
    commands();
    let fields = gw.accept(&peer).unwrap();
    assert_eq!(fields, options(&gk), "the grant carries the gateway's key");
    let seen = take(&gs);
    assert_eq!(
        names(&seen),
        [
            "Core_nodeInfo",
            "IpTunnel_listConnections",
            "IpTunnel_allowConnection"
        ]
    );
    let allow = Value::dict([
        ("publicKeyOfAuthorizedNode", Value::str(&sk)),
        ("ip4Address", Value::str("100.127.0.2")),
        ("ip4Prefix", Value::Int(0)),
        ("ip4Alloc", Value::Int(32)),
        ("ip6Address", Value::str("fd6d:6e69:6773::2")),
        ("ip6Prefix", Value::Int(0)),
        ("ip6Alloc", Value::Int(128)),
    ]);
    assert_eq!(seen[2].1, allow);
    assert_eq!(gw_node.lock().unwrap().conns.len(), 1);
    let conn = gw_node
        .lock()
        .unwrap()
        .conns
        .values()
        .next()
        .unwrap()
        .clone();
    let Value::Dict(mut expected) = allow.clone() else {
        unreachable!()
    };
    expected.remove(b"publicKeyOfAuthorizedNode".as_slice());
    assert_eq!(conn.key, sk);
    assert!(!conn.outgoing);
    assert_eq!(
        conn.fields,
        expected
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect()
    );
    assert_eq!(
        commands(),
        [
            "ip -4 addr replace 100.127.0.1/32 dev cjgw",
            "ip -6 addr replace fd6d:6e69:6773::1/128 dev cjgw",
            "ip -4 route replace 100.127.0.2/32 dev cjgw",
            "ip -6 route replace fd6d:6e69:6773::2/128 dev cjgw",
        ]
    );
    // Accepting again changes nothing.
    gw.accept(&peer).unwrap();
    assert_eq!(
        calls(&gs),
        ["IpTunnel_listConnections", "IpTunnel_showConnection"]
    );
    assert_eq!(gw_node.lock().unwrap().conns.len(), 1);
    commands();

    // Subscriber: connect with the grant.
    let grant = Grant {
        success: true,
        sid: "0".repeat(32),
        timeout: 60,
        method: "cjdns".into(),
        ipv4: "100.127.0.2".into(),
        cidr4: 24,
        ipv4gateway: "100.127.0.1".into(),
        ipv6: Some(sub_v6.to_string()),
        cidr6: Some(64),
        ipv6gateway: Some("fd6d:6e69:6773::1".into()),
        uplink_targets: Vec::new(),
        extra: fields,
    };
    assert_eq!(sub.connect(gw_addr, &grant).unwrap(), "cjsub");
    let seen = take(&ss);
    let n = names(&seen);
    assert_eq!(
        n[..2],
        ["IpTunnel_listConnections", "IpTunnel_connectTo"],
        "{n:?}"
    );
    // The address arrives later: showConnection is asked until it is there.
    assert!(
        n[2..].iter().all(|f| *f == "IpTunnel_showConnection") && n.len() >= 4,
        "{n:?}"
    );
    assert_eq!(
        seen[1].1,
        Value::dict([("publicKeyOfNodeToConnectTo", Value::str(&gk))])
    );
    let dialled = sub_node.lock().unwrap().conns.clone();
    assert_eq!(dialled.len(), 1);
    let out = dialled.values().next().unwrap();
    assert!(out.outgoing);
    assert_eq!(out.key, gk);
    assert_eq!(out.fields["ip4Address"], Value::str("100.127.0.2"));
    // cjdroute configures the subscriber's tun; we only look.
    let looked = commands();
    assert!(
        !looked.is_empty() && looked.iter().all(|c| c.starts_with("ip -j ")),
        "{looked:?}"
    );
    let on_tun = cmd::run(&["ip", "-o", "addr", "show", "dev", "cjsub"]).unwrap();
    assert!(on_tun.contains("100.127.0.2/32"), "{on_tun}");
    let remembered = std::fs::read_to_string(&ledger).unwrap();
    assert!(remembered.contains(&gk), "{remembered}");
    // Connecting again dials nothing new.
    sub.connect(gw_addr, &grant).unwrap();
    assert!(!calls(&ss).contains(&"IpTunnel_connectTo".to_string()));
    assert_eq!(sub_node.lock().unwrap().conns.len(), 1);
    commands();

    // Release: the gateway removes the connection and the host routes; the subscriber its dial.
    let number = *gw_node.lock().unwrap().conns.keys().next().unwrap();
    gw.remove(&peer).unwrap();
    let seen = take(&gs);
    assert_eq!(
        names(&seen),
        [
            "IpTunnel_listConnections",
            "IpTunnel_showConnection",
            "IpTunnel_removeConnection"
        ]
    );
    assert_eq!(seen[2].1, Value::dict([("connection", Value::Int(number))]));
    assert!(gw_node.lock().unwrap().conns.is_empty());
    assert_eq!(
        commands(),
        [
            "ip -4 route del 100.127.0.2/32 dev cjgw",
            "ip -6 route del fd6d:6e69:6773::2/128 dev cjgw",
        ]
    );
    commands();
    sub.disconnect().unwrap();
    assert_eq!(
        calls(&ss),
        [
            "IpTunnel_listConnections",
            "IpTunnel_showConnection",
            "IpTunnel_removeConnection",
            "RouteGen_getPrefixes",
            "RouteGen_getPrefixes",
            "RouteGen_removePrefix",
            "RouteGen_getPrefixes",
            "RouteGen_getPrefixes",
            "RouteGen_removePrefix",
            "RouteGen_commit",
        ]
    );
    assert!(sub_node.lock().unwrap().conns.is_empty());
    assert_eq!(
        sub_node.lock().unwrap().prefixes,
        [vec![], vec![]] as [Vec<String>; 2]
    );
    assert_eq!(
        commands(),
        [
            "ip -j addr show dev cjsub",
            "ip -4 addr del 100.127.0.2/32 dev cjsub",
            "ip -6 addr del fd6d:6e69:6773::2/128 dev cjsub",
        ]
    );
    assert!(!ledger.exists(), "the ledger is gone with the dial");
    gw.remove(&peer).unwrap();
    sub.disconnect().unwrap();

    // Shutdown (SIGTERM) takes our addresses off the tun: all is as before.
    commands();
    gw.shutdown().unwrap();
    assert_eq!(
        commands(),
        [
            "ip -4 addr del 100.127.0.1/32 dev cjgw",
            "ip -6 addr del fd6d:6e69:6773::1/128 dev cjgw",
        ]
    );
    assert_same(&before, &state());

    // Shutdown with a subscriber still admitted (SIGTERM during a lease) removes it too.
    gw.prepare(&net()).unwrap();
    gw.accept(&peer).unwrap();
    assert_eq!(gw_node.lock().unwrap().conns.len(), 1);
    gw.shutdown().unwrap();
    assert!(gw_node.lock().unwrap().conns.is_empty());
    assert_same(&before, &state());
}

fn assert_same(before: &str, after: &str) {
    let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
    let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        before == after,
        "state changed\n  gone: {gone:#?}\n  new: {new:#?}"
    );
}

#[test]
fn reconnects_a_crash_and_a_tunnel_that_carries_nothing_leave_nothing_behind() {
    as_root_in_netns(leave_nothing);
}

fn leave_nothing() {
    let m = mesh();
    let (gk, sk) = (cjdns_admin::key(30), cjdns_admin::key(31));
    let (_gw_node, gs) = cjdns_admin::node(&gk, &m, Some(PASSWORD), TTL);
    let (sub_node, ss) = cjdns_admin::node(&sk, &m, Some(PASSWORD), TTL);
    sub_node.lock().unwrap().tun = Some("cjsub".into());
    let gw_addr = IpAddr::V6(check_key(&gk).unwrap());
    let sub_addr = IpAddr::V6(check_key(&sk).unwrap());
    // cjdroute puts its fc00::/8 address on its tun.
    for (dev, addr) in [("cjgw", gw_addr), ("cjsub", sub_addr)] {
        let a = format!("{addr}/8");
        cmd::run(&["ip", "-6", "addr", "add", &a, "dev", dev, "nodad"]).unwrap();
    }
    let before = state();
    let ledger = std::env::temp_dir().join(format!("mnigs-cjdns-ledger2-{}", std::process::id()));
    let sub = || {
        Cjdns::new(target(&ss), "cjsub")
            .with_wait(Duration::from_secs(2))
            .with_ledger(&ledger)
    };
    let mut gw = Cjdns::new(target(&gs), "cjgw");
    gw.prepare(&net()).unwrap();
    let opts = options(&sk);
    let peer = Peer {
        owner: sub_addr,
        ipv4: Ipv4Addr::new(100, 127, 0, 2),
        ipv6: Some("fd6d:6e69:6773::2".parse().unwrap()),
        options: &opts,
        via: None,
    };
    let fields = gw.accept(&peer).unwrap();
    let grant = Grant {
        success: true,
        sid: "0".repeat(32),
        timeout: 60,
        method: "cjdns".into(),
        ipv4: "100.127.0.2".into(),
        cidr4: 24,
        ipv4gateway: "100.127.0.1".into(),
        ipv6: Some("fd6d:6e69:6773::2".into()),
        cidr6: Some(64),
        ipv6gateway: Some("fd6d:6e69:6773::1".into()),
        uplink_targets: Vec::new(),
        extra: fields,
    };
    let sub_state = || {
        let mut s = cmd::run(&["ip", "-o", "addr", "show", "dev", "cjsub"]).unwrap();
        for fam in ["-4", "-6"] {
            s.push_str(
                &cmd::run(&["ip", fam, "route", "show", "table", "all", "dev", "cjsub"]).unwrap(),
            );
        }
        s
    };
    let sub_before = sub_state();

    // Five connect/disconnect rounds: no prefix, address or route accumulates.
    let mut s = sub().with_probe(|_, _, _| true);
    for round in 0..5 {
        s.connect(gw_addr, &grant).unwrap();
        let n = sub_node.lock().unwrap().prefixes.clone();
        assert_eq!(n[0], ["100.127.0.2/0"], "round {round}");
        assert_eq!(n[1], ["fd6d:6e69:6773::2/0"], "round {round}");
        let up = sub_state();
        assert!(up.contains("0.0.0.0/1") && up.contains("8000::/1"), "{up}");
        s.disconnect().unwrap();
        assert_same(&sub_before, &sub_state());
    }

    // A crash (SIGKILL: the method is forgotten, cjdroute keeps everything): the next run's
    // first disconnect (what the supervisor does at start) cleans it up from the ledger.
    s.connect(gw_addr, &grant).unwrap();
    drop(s);
    assert_ne!(sub_before, sub_state());
    let mut restarted = sub().with_probe(|_, _, _| true);
    restarted.disconnect().unwrap();
    assert_same(&sub_before, &sub_state());
    assert!(sub_node.lock().unwrap().conns.is_empty());
    assert!(!ledger.exists());

    // A tunnel cjdroute reports up but that carries nothing: connect fails (so the next method
    // is tried) and nothing is left.
    let mut dead = sub().with_probe(|_, _, _| false);
    let e = dead.connect(gw_addr, &grant).unwrap_err().to_string();
    assert!(
        e.contains("no answer from the gateway's tunnel address 100.127.0.1"),
        "{e}"
    );
    assert_same(&sub_before, &sub_state());
    assert!(sub_node.lock().unwrap().conns.is_empty());
    assert_eq!(
        sub_node.lock().unwrap().prefixes,
        [vec![], vec![]] as [Vec<String>; 2]
    );
    assert!(!ledger.exists());

    // cjdroute reports the address but could not put it on its tun (privileges dropped).
    sub_node.lock().unwrap().tun = None;
    let mut bare = sub()
        .with_probe(|_, _, _| true)
        .with_wait(Duration::from_millis(600));
    let e = bare.connect(gw_addr, &grant).unwrap_err().to_string();
    assert!(
        e.contains("reports the tunnel") && e.contains("cjsub"),
        "{e}"
    );
    assert!(sub_node.lock().unwrap().conns.is_empty());
    sub_node.lock().unwrap().tun = Some("cjsub".into());

    gw.remove(&peer).unwrap();
    gw.shutdown().unwrap();
    assert_same(&before, &state());

    // A gateway stopped before any subscriber came: its addresses were never put on the tun,
    // and `ip` saying so ("Address not found", "address not found") is no error.
    let mut idle = Cjdns::new(target(&gs), "cjgw");
    idle.prepare(&net()).unwrap();
    commands();
    idle.shutdown().unwrap();
    assert_eq!(commands().len(), 2, "both deletions were tried");
    assert_same(&before, &state());
}
