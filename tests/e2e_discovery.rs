//! End to end, as root: discovery on real meshes in namespaces (netlab). Skips loudly without
//! root; fails under MNIGS_E2E=1 when something is missing.
//!
//! - Yggdrasil: four real `yggdrasil` daemons in a line, the gateway three hops from the
//!   subscriber; found by the breadth-first walk and by its NodeInfo advert, and the subscriber
//!   connects through it.

#[path = "common/lab.rs"]
mod lab_common;
use lab_common::write;
use mnigs::config::DiscoveryConfig;
use mnigs::discovery::{self, yggdrasil};
use mnigs_lab::netlab::Lab;
use mnigs_lab::testbed::e2e_gate;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

fn ok(r: Result<String, mnigs::sys::cmd::CmdError>) {
    r.expect("command in the lab");
}

/// Links `gw_ns` to a new `inet` namespace holding 203.0.113.7, as the gateway's uplink `wan0`.
fn uplink(lab: &Lab, gw_ns: &str) -> String {
    let inet = lab.add_ns("inet").unwrap();
    lab.veth(gw_ns, "wan0", &inet, "up0").unwrap();
    ok(lab.exec(
        gw_ns,
        &["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"],
    ));
    ok(lab.exec(
        &inet,
        &["ip", "addr", "add", "198.51.100.2/24", "dev", "up0"],
    ));
    ok(lab.exec(&inet, &["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]));
    ok(lab.exec(
        gw_ns,
        &["ip", "route", "add", "default", "via", "198.51.100.2"],
    ));
    inet
}

fn gateway_conf(lab: &Lab, name: &str) -> String {
    let wg = lab.unique_ifname(&format!("g{}", &name[name.len().saturating_sub(1)..]));
    format!(
        "config mnigs 'main'\n\toption name '{name}'\n\tlist listen '::'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
         config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\toption nat 'nft'\n\tlist method 'wireguard'\n\n\
         config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wg}c'\n",
        db = lab.dir.join(format!("{name}.db")).display()
    )
}

fn log_of(path: &Path) -> String {
    lab_common::log_tail(path, 6000)
}

/// The tests here run one at a time: each runs several daemons, and Yggdrasil's remote calls
/// (6 s timeouts) are the first thing to suffer on a loaded two-core machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mnigs status --json` in `ns`.
fn status(lab: &Lab, ns: &str, conf: &str) -> Option<Value> {
    let out = lab
        .exec_full(
            ns,
            &[EXE, "status", "--json", "-c", conf],
            None,
            Duration::from_secs(10),
        )
        .ok()?;
    serde_json::from_str(&out).ok()
}

#[test]
fn yggdrasil_gateway_three_hops_away_is_found_and_used() {
    if !e2e_gate("yggdrasil_gateway_three_hops_away_is_found_and_used") {
        return;
    }
    let _one_at_a_time = serial();
    mnigs::log::set_level(mnigs::log::Level::Debug);
    let lab = Lab::new("ygg").unwrap();
    let advert = json!({"mnigs": {"port": 65533}});
    let nodes = lab
        .yggdrasil_line(
            &["sub", "r1", "r2", "gw"],
            &[None, None, None, Some(advert)],
        )
        .unwrap();
    let (sub, gw) = (&nodes[0], &nodes[3]);

    // The key → address derivation agrees with the daemon's own.
    for n in &nodes {
        let key = yggdrasil::key_bytes(&n.key).unwrap();
        assert_eq!(yggdrasil::address_of(&key), n.address, "{}", n.ns);
    }

    // Walk from sub, inside its namespace (the admin socket is a file, reachable from here).
    let mut admin = yggdrasil::SocketAdmin::new(
        yggdrasil::Endpoint::parse(&sub.admin).unwrap(),
        Duration::from_secs(8),
    );
    let caps = yggdrasil::Caps {
        max_depth: 8,
        max_nodes: 100,
    };
    // Yggdrasil's routing needs a moment after the peerings are up before remote calls to far
    // nodes answer: walk again until the whole line and the gateway's NodeInfo are seen.
    let start = Instant::now();
    let w = loop {
        let w = yggdrasil::walk(&mut admin, caps).unwrap();
        let complete = w.nodes.len() == 4 && w.nodes.iter().any(|n| n.advert.is_some());
        if complete || start.elapsed() > Duration::from_secs(120) {
            break w;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let depth_of = |addr| w.nodes.iter().find(|n| n.address == addr).map(|n| n.depth);
    assert_eq!(w.nodes.len(), 4, "{} failure(s): {:?}", w.failures, w.nodes);
    assert_eq!(depth_of(gw.address), Some(3), "gateway three hops away");
    let c = yggdrasil::candidates(&w, &[65533], false);
    assert_eq!(c.len(), 3, "every other node by BFS");
    let only = yggdrasil::candidates(&w, &[65533], true);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].address, std::net::IpAddr::V6(gw.address));
    assert_eq!(only[0].how, "yggdrasil:nodeinfo");
    // The depth cap holds on the real mesh too.
    let w2 = yggdrasil::walk(
        &mut admin,
        yggdrasil::Caps {
            max_depth: 2,
            max_nodes: 100,
        },
    )
    .unwrap();
    assert_eq!(w2.nodes.len(), 3);

    // The real thing: a gateway daemon on gw, a subscriber on sub that finds it through
    // Yggdrasil only and reaches the fake Internet through it.
    let inet = uplink(&lab, &gw.ns);
    let _ = inet;
    let gw_conf = write(&lab, "gw.uci", &gateway_conf(&lab, "gw"));
    let gw_log = lab.dir.join("gw.log");
    lab.spawn(&gw.ns, &[EXE, "daemon", "-c", &gw_conf], &gw_log)
        .unwrap();
    let sub_conf = write(
        &lab,
        "sub.uci",
        &format!(
            "config mnigs 'main'\n\toption name 'sub'\n\tlist listen '::1'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'wireguard'\n\n\
             config discovery 'ygg'\n\toption method 'yggdrasil'\n\toption admin '{admin}'\n\toption nodeinfo_only '1'\n\toption timeout_ms '3000'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n",
            wg = lab.unique_ifname("s"),
            db = lab.dir.join("sub.db").display(),
            admin = sub.admin,
        ),
    );
    // Gateway up before the subscriber's first scan.
    let start = Instant::now();
    while status(&lab, &gw.ns, &gw_conf).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "gateway did not start:\n{}",
            log_of(&gw_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = DiscoveryConfig {
        section: "ygg".into(),
        method: "yggdrasil".into(),
        admin: Some(sub.admin.clone()),
        nodeinfo_only: true,
        ..DiscoveryConfig::default()
    };
    let sub_log = lab.dir.join("sub.log");
    lab.spawn(&sub.ns, &[EXE, "daemon", "-c", &sub_conf], &sub_log)
        .unwrap();
    let start = Instant::now();
    loop {
        let s = status(&lab, &sub.ns, &sub_conf);
        if s.as_ref()
            .is_some_and(|s| s["subscriber"]["state"] == "connected")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "subscriber not connected: {s:?}\nsub log:\n{}\ngw log:\n{}",
            log_of(&sub_log),
            log_of(&gw_log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pinged = (0..10).any(|_| {
        lab.exec(
            &sub.ns,
            &["ping", "-n", "-c", "1", "-W", "1", "203.0.113.7"],
        )
        .is_ok()
    });
    assert!(
        pinged,
        "ping through the gateway; sub log:\n{}",
        log_of(&sub_log)
    );
    // And the discovery section the subscriber used, run from here, names the gateway first.
    let (found, _) = discovery::gather(std::slice::from_ref(&cfg));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].address, std::net::IpAddr::V6(gw.address));
    // A full scan from sub's namespace: the gateway, and the map of the mesh for the UI.
    let bfs = DiscoveryConfig {
        nodeinfo_only: false,
        ..cfg
    };
    let r = lab
        .run_in(&sub.ns, move || {
            discovery::Scanner::new(Duration::ZERO)
                .scan(&[bfs])
                .unwrap()
        })
        .unwrap();
    let gws = r.gateways();
    assert_eq!(gws.len(), 1, "{}", r.to_json());
    assert_eq!(gws[0].candidate.how, "yggdrasil:nodeinfo");
    assert_eq!(gws[0].candidate.hops, 3);
    let (_, graph) = &r.graphs[0];
    assert_eq!(
        (graph.nodes.len(), graph.links.len()),
        (4, 3),
        "{}",
        r.to_json()
    );
    assert_eq!(
        r.to_json()["graphs"]["ygg"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

/// sub — near — far: sub's discovery reaches only `near`, a node running mnigs without a role
/// whose store knows the far gateway (and, forged, a non-gateway and an empty address).
#[test]
fn gossip_teaches_a_far_gateway_and_forgeries_are_dropped() {
    if !e2e_gate("gossip_teaches_a_far_gateway_and_forgeries_are_dropped") {
        return;
    }
    let _one_at_a_time = serial();
    use mnigs::discovery::Scanner;
    use mnigs::store::{GatewayRow, Store};
    let lab = Lab::new("gos").unwrap();
    let sub = lab.add_ns("sub").unwrap();
    let near = lab.add_ns("near").unwrap();
    let far = lab.add_ns("far").unwrap();
    lab.veth(&sub, "s0", &near, "n0").unwrap();
    lab.veth(&near, "n1", &far, "f0").unwrap();
    ok(lab.exec(&sub, &["ip", "addr", "add", "10.252.0.1/30", "dev", "s0"]));
    ok(lab.exec(&near, &["ip", "addr", "add", "10.252.0.2/30", "dev", "n0"]));
    ok(lab.exec(&near, &["ip", "addr", "add", "10.252.1.1/30", "dev", "n1"]));
    ok(lab.exec(&far, &["ip", "addr", "add", "10.252.1.2/30", "dev", "f0"]));
    ok(lab.exec(
        &sub,
        &["ip", "route", "add", "10.252.1.0/30", "via", "10.252.0.2"],
    ));
    ok(lab.exec(
        &far,
        &["ip", "route", "add", "10.252.0.0/30", "via", "10.252.1.1"],
    ));
    ok(lab.exec(&near, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    lab.veth(&far, "wan0", &far, "wan1").unwrap();
    ok(lab.exec(
        &far,
        &["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"],
    ));

    let gw_conf = write(&lab, "far.uci", &gateway_conf(&lab, "far"));
    let gw_log = lab.dir.join("far.log");
    lab.spawn(&far, &[EXE, "daemon", "-c", &gw_conf], &gw_log)
        .unwrap();

    // near knows the far gateway from an earlier scan of its own; two entries are forgeries.
    let db = lab.dir.join("near.db");
    {
        let store = Store::open(&db).unwrap();
        let t = mnigs::clock::now();
        for (address, gateway) in [
            ("10.252.1.2", true),
            ("10.252.1.1", false),
            ("10.252.1.3", false),
        ] {
            store
                .upsert_gateway(&GatewayRow {
                    address: address.into(),
                    port: 65533,
                    name: if gateway { "far" } else { "forged" }.into(),
                    info: Value::Null,
                    how: "routes:babel".into(),
                    hops: 1,
                    first_seen: t,
                    last_seen: t,
                    failures: 0,
                })
                .unwrap();
        }
    }
    let near_conf = write(
        &lab,
        "near.uci",
        &format!(
            "config mnigs 'main'\n\toption name 'near'\n\tlist listen '0.0.0.0'\n\toption database '{}'\n\toption log_level 'debug'\n",
            db.display()
        ),
    );
    let near_log = lab.dir.join("near.log");
    lab.spawn(&near, &[EXE, "daemon", "-c", &near_conf], &near_log)
        .unwrap();
    let start = Instant::now();
    while status(&lab, &near, &near_conf).is_none() || status(&lab, &far, &gw_conf).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "daemons did not start:\n{}\n{}",
            log_of(&near_log),
            log_of(&gw_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let reach = DiscoveryConfig {
        section: "l2".into(),
        method: "neighbours".into(),
        protocol: None,
        interfaces: vec!["s0".into()],
        sweep: Some("10.252.0.2/32".parse().unwrap()),
        timeout_ms: 500,
        ..DiscoveryConfig::default()
    };
    let gossip = DiscoveryConfig {
        section: "gossip".into(),
        method: "gossip".into(),
        ..DiscoveryConfig::default()
    };
    let (without, with) = lab
        .run_in(&sub, move || {
            let s = Scanner::new(Duration::ZERO);
            let without = s.scan(std::slice::from_ref(&reach)).unwrap();
            let with = s.scan(&[reach, gossip]).unwrap();
            (without, with)
        })
        .unwrap();
    // Alone, sub's discovery sees near only, which is no gateway.
    assert_eq!(without.answers.len(), 1, "{:?}", without.to_json());
    assert!(without.gateways().is_empty());
    assert_eq!(
        without.answers[0].info.gateways.len(),
        3,
        "near gossips its store"
    );
    // With gossip: the far gateway, verified by sub's own probe; the forgeries are gone.
    let gws = with.gateways();
    assert_eq!(gws.len(), 1, "{}", with.to_json());
    assert_eq!(gws[0].candidate.address.to_string(), "10.252.1.2");
    assert_eq!(gws[0].candidate.how, "gossip:10.252.0.2");
    assert_eq!(gws[0].info.name, "far");
    let g = with.methods.iter().find(|m| m.method == "gossip").unwrap();
    assert_eq!((g.found, g.gateways), (3, 1));
    assert!(
        with.answers
            .iter()
            .all(|a| a.candidate.address.to_string() != "10.252.1.1"),
        "the forged non-gateway is dropped"
    );
}

/// Starts a gateway daemon (with a stand-in uplink) in `ns`.
fn start_gateway(lab: &Lab, ns: &str, name: &str) -> (String, std::path::PathBuf) {
    lab.veth(ns, "wan0", ns, "wan1").unwrap();
    ok(lab.exec(ns, &["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"]));
    let conf = write(lab, &format!("{name}.uci"), &gateway_conf(lab, name));
    let log = lab.dir.join(format!("{name}.log"));
    lab.spawn(ns, &[EXE, "daemon", "-c", &conf], &log).unwrap();
    (conf, log)
}

/// Starts an mnigs daemon without a role (answers nodeInfo with `gateway: false`) in `ns`.
fn start_plain(lab: &Lab, ns: &str, name: &str) -> (String, std::path::PathBuf) {
    let conf = write(
        lab,
        &format!("{name}.uci"),
        &format!(
            "config mnigs 'main'\n\toption name '{name}'\n\tlist listen '0.0.0.0'\n\toption database '{}'\n",
            lab.dir.join(format!("{name}.db")).display()
        ),
    );
    let log = lab.dir.join(format!("{name}.log"));
    lab.spawn(ns, &[EXE, "daemon", "-c", &conf], &log).unwrap();
    (conf, log)
}

fn wait_up(lab: &Lab, daemons: &[(&str, &(String, std::path::PathBuf))]) {
    let start = Instant::now();
    for (ns, (conf, log)) in daemons {
        while status(lab, ns, conf).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "daemon in {ns} did not start:\n{}",
                log_of(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn names(r: &discovery::ScanReport) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = r
        .answers
        .iter()
        .map(|a| (a.info.name.clone(), a.info.gateway))
        .collect();
    v.sort();
    v
}

/// A Babel star: sub, g1, g2 and n around the hub r (which runs no mnigs). Both gateways and
/// the plain mnigs node are found by `routes` (proto babel) from sub.
#[test]
fn babel_mesh_with_two_gateways_and_a_plain_node_all_found() {
    if !e2e_gate("babel_mesh_with_two_gateways_and_a_plain_node_all_found") {
        return;
    }
    let _one_at_a_time = serial();
    let lab = Lab::new("bab").unwrap();
    let leaves = ["sub", "g1", "g2", "n"];
    let hub = lab.add_mesh_ns("r").unwrap();
    let mut ns = Vec::new();
    let mut hub_ifs = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let n = lab.add_mesh_ns(leaf).unwrap();
        let hub_if = format!("h{i}");
        lab.veth(&hub, &hub_if, &n, "m0").unwrap();
        ok(lab.exec(
            &n,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.78.0.{}/32", i + 2),
                "dev",
                "lo",
            ],
        ));
        lab.babeld(&n, &["m0"], "10.78.0.0/24").unwrap();
        hub_ifs.push(hub_if);
        ns.push(n);
    }
    ok(lab.exec(&hub, &["ip", "addr", "add", "10.78.0.1/32", "dev", "lo"]));
    ok(lab.exec(&hub, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    let hub_refs: Vec<&str> = hub_ifs.iter().map(String::as_str).collect();
    lab.babeld(&hub, &hub_refs, "10.78.0.0/24").unwrap();

    let g1 = start_gateway(&lab, &ns[1], "g1");
    let g2 = start_gateway(&lab, &ns[2], "g2");
    let n = start_plain(&lab, &ns[3], "n");
    wait_up(&lab, &[(&ns[1], &g1), (&ns[2], &g2), (&ns[3], &n)]);

    // Babel converged: every leaf has a host route to every other node (the answers need
    // the way back too).
    let start = Instant::now();
    for (i, leaf) in ns.iter().enumerate() {
        loop {
            let routes = lab
                .exec(leaf, &["ip", "-4", "route", "show", "proto", "babel"])
                .unwrap_or_default();
            if (1..=5)
                .filter(|a| *a != i + 2)
                .all(|a| routes.contains(&format!("10.78.0.{a} ")))
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "Babel did not converge in {leaf}: {routes}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let section = DiscoveryConfig {
        section: "babel".into(),
        timeout_ms: 1000,
        ..DiscoveryConfig::default()
    };
    let r = lab
        .run_in(&ns[0], move || {
            mnigs::discovery::Scanner::new(Duration::from_secs(60))
                .scan(&[section])
                .unwrap()
        })
        .unwrap();
    assert_eq!(r.candidates, 4, "r, g1, g2, n: {}", r.to_json());
    assert_eq!(
        names(&r),
        [
            ("g1".to_string(), true),
            ("g2".to_string(), true),
            ("n".to_string(), false)
        ]
    );
    assert_eq!(r.methods[0].method, "routes");
    assert_eq!((r.methods[0].found, r.methods[0].gateways), (4, 2));
}

/// An L2 mesh: a, b (gateway) and c (plain mnigs) on one bridge; `neighbours` finds both by the
/// sweep while the ARP table is cold, and then from the ARP table alone.
#[test]
fn l2_bridge_mesh_found_by_neighbours() {
    if !e2e_gate("l2_bridge_mesh_found_by_neighbours") {
        return;
    }
    let _one_at_a_time = serial();
    let lab = Lab::new("ltwo").unwrap();
    let br = lab.add_ns("br").unwrap();
    ok(lab.exec(&br, &["ip", "link", "add", "br0", "type", "bridge"]));
    ok(lab.exec(&br, &["ip", "link", "set", "br0", "up"]));
    let mut ns = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let n = lab.add_ns(name).unwrap();
        let port = format!("p{i}");
        lab.veth(&br, &port, &n, "e0").unwrap();
        ok(lab.exec(&br, &["ip", "link", "set", &port, "master", "br0"]));
        ok(lab.exec(
            &n,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.253.0.{}/24", i + 1),
                "dev",
                "e0",
            ],
        ));
        ns.push(n);
    }
    let b = start_gateway(&lab, &ns[1], "b");
    let c = start_plain(&lab, &ns[2], "c");
    wait_up(&lab, &[(&ns[1], &b), (&ns[2], &c)]);

    let sweep = DiscoveryConfig {
        section: "l2".into(),
        method: "neighbours".into(),
        protocol: None,
        interfaces: vec!["e0".into()],
        sweep: Some("10.253.0.0/24".parse().unwrap()),
        concurrency: 256,
        timeout_ms: 1000,
        ..DiscoveryConfig::default()
    };
    let table_only = DiscoveryConfig {
        sweep: None,
        ..sweep.clone()
    };
    let (swept, from_table) = lab
        .run_in(&ns[0], move || {
            let s = mnigs::discovery::Scanner::new(Duration::ZERO);
            (s.scan(&[sweep]).unwrap(), s.scan(&[table_only]).unwrap())
        })
        .unwrap();
    let want = [("b".to_string(), true), ("c".to_string(), false)];
    assert_eq!(names(&swept), want, "{}", swept.to_json());
    assert_eq!(swept.candidates, 254);
    // The sweep filled the ARP table; now it alone names the live neighbours.
    assert_eq!(names(&from_table), want, "{}", from_table.to_json());
    assert!(from_table.candidates < 10, "{}", from_table.to_json());
}
