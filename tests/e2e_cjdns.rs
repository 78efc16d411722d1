//! End to end, as root, against the real cjdroute (`MNIGS_CJDROUTE`, cjdns v22.1; `.ci/run` sets it):
//! cjdroute nodes in namespaces linked by veths (`mnigs_lab::cjdlab`), mnigs daemons on them.
//! Skips loudly without root or cjdroute; fails under MNIGS_E2E=1 when something is missing.
//!
//! - `iptunnel_on_real_cjdroute`: sub — r1 — r2 — {gw, gwb}, both gateways offering cjdns
//!   IpTunnel with an Internet host behind them. Discovery walks the five nodes; the subscriber
//!   connects, pings the Internet host, disconnects and reconnects three times: its addresses,
//!   routes of every table, rules and nftables are listed before and after each disconnect and
//!   must be equal, and cjdroute keeps no RouteGen prefix (none duplicated while connected).
//!   Then its gateway's cjdroute dies: it fails over to the other gateway, leaving nothing of
//!   the first session. SIGKILL and a restart take the session up again without duplicating
//!   anything; the last gateway stopping (lease lost, nowhere to go) and SIGTERM each leave the
//!   node as before.
//! - `cjdns_carrying_nothing_falls_over_to_wireguard`: the gateway's IpTunnel carries no IPv4
//!   (dropped on its cjdns tun): cjdns is not reported connected; the subscriber falls over to
//!   WireGuard over the cjdns addresses on the same node, and traffic flows through it.
//! - `a_tun_cjdroute_could_not_configure_is_not_reported_connected`: the subscriber's cjdroute drops
//!   its privileges (its default) and mostly cannot put the granted address on its tun: then not
//!   connected (when its one privileged thread does it after all, connected and traffic flows).
//!
//! `mnigs-demo demo --cjdns` (the demo on cjdns) is tested with the lab: lab/tests/demo.rs.

#[path = "common/lab.rs"]
mod lab_common;
use lab_common::write;
use mnigs::discovery::cjdns as api;
use mnigs::tunnel::cjdns as method;
use mnigs_lab::cjdlab::{self, CjdMesh};
use mnigs_lab::netlab::Lab;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const INET: &str = cjdlab::INET_HOST;

/// The tests here run one at a time (each runs several cjdroutes and daemons).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn uplinks(lab: &Lab, gateways: &[&str]) {
    lab.cjd_uplinks(gateways).unwrap();
}

fn log_of(path: &Path) -> String {
    lab_common::log_tail(path, 5000)
}

/// Starts a gateway daemon on `node` offering `methods`; returns its config and log.
fn start_gateway(
    lab: &Lab,
    node: &cjdlab::CjdNode,
    name: &str,
    pool: u8,
    methods: &[&str],
) -> (String, PathBuf, u32) {
    let text = lab.cjd_gateway_config(node, name, pool, 5, methods);
    let conf = write(lab, &format!("{name}.uci"), &text);
    let log = lab.dir.join(format!("{name}.log"));
    let pid = lab
        .spawn(&node.ns, &[EXE, "daemon", "-c", &conf], &log)
        .unwrap();
    let start = Instant::now();
    while status(lab, &node.ns, &conf).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} did not start:\n{}",
            log_of(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (conf, log, pid)
}

fn subscriber_conf(lab: &Lab, node: &cjdlab::CjdNode, methods: &[&str]) -> String {
    write(
        lab,
        "sub.uci",
        &lab.cjd_subscriber_config(node, "sub", methods),
    )
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

/// Waits until the subscriber is connected to `gateway` (any if `None`); returns its status.
fn wait_connected(
    lab: &Lab,
    ns: &str,
    conf: &str,
    gateway: Option<&str>,
    limit: Duration,
    logs: &[&Path],
) -> Value {
    let start = Instant::now();
    loop {
        let s = status(lab, ns, conf);
        if let Some(s) = &s
            && s["subscriber"]["state"] == "connected"
            && gateway.is_none_or(|g| s["subscriber"]["gateway"]["name"] == g)
        {
            return s.clone();
        }
        if start.elapsed() > limit {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| format!("--- {}:\n{}", p.display(), log_of(p)))
                .collect();
            panic!(
                "subscriber not connected to {gateway:?} within {limit:?}: {s:#?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping(lab: &Lab, ns: &str) -> bool {
    (0..10).any(|_| {
        lab.exec(ns, &["ping", "-n", "-c", "1", "-W", "1", INET])
            .is_ok()
    })
}

fn state(lab: &Lab, ns: &str) -> String {
    mnigs_lab::scenario::network_state(|argv| lab.exec(ns, argv).unwrap_or_default())
}

/// cjdroute's RouteGen prefixes (IPv4 then IPv6) on node `i`.
fn prefixes(lab: &Lab, mesh: &CjdMesh, i: usize) -> Vec<String> {
    let n = mesh.nodes[i].clone();
    lab.run_in(&mesh.nodes[i].ns, move || {
        let mut admin = n.admin().unwrap();
        let mut out = method::routegen_prefixes(&mut admin, false).unwrap();
        out.extend(method::routegen_prefixes(&mut admin, true).unwrap());
        out
    })
    .unwrap()
}

fn cli(lab: &Lab, ns: &str, conf: &str, args: &[&str]) -> String {
    let mut argv = vec![EXE];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-c", conf]);
    lab.exec_full(ns, &argv, None, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("mnigs {args:?}: {e}"))
}

fn wait_state(lab: &Lab, ns: &str, want: &str, what: &str) {
    // The daemon answers the control call before every last command has returned.
    let start = Instant::now();
    loop {
        let now = state(lab, ns);
        if now == want {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            mnigs_lab::scenario::assert_same_config(&now, want, what);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn iptunnel_on_real_cjdroute() {
    let Some(exe) = cjdlab::gate("iptunnel_on_real_cjdroute") else {
        return;
    };
    let _one = serial();
    let t0 = Instant::now();
    let lab = Lab::new("cjd").unwrap();
    let mut mesh = lab
        .cjdroute_mesh(
            &exe,
            &["sub", "r1", "r2", "gw", "gwb"],
            &[(0, 1), (1, 2), (2, 3), (2, 4)],
        )
        .unwrap();
    let nodes = mesh.nodes.clone();
    let (sub, gw, gwb) = (&nodes[0], &nodes[3], &nodes[4]);
    eprintln!("[{:?}] five cjdroutes up", t0.elapsed());

    // Discovery: the walk from sub finds all five nodes with their hop counts.
    let start = Instant::now();
    let w = loop {
        let n = sub.clone();
        let w = lab
            .run_in(&sub.ns, move || {
                api::walk(
                    &mut n.admin()?,
                    api::Caps {
                        max_depth: 8,
                        max_nodes: 100,
                    },
                )
            })
            .unwrap()
            .unwrap();
        if w.nodes.len() == 5 || start.elapsed() > Duration::from_secs(30) {
            break w;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let depth = |n: &cjdlab::CjdNode| {
        w.nodes
            .iter()
            .find(|x| x.address == n.address)
            .map(|x| x.depth)
    };
    assert_eq!(w.nodes.len(), 5, "{w:#?}");
    assert_eq!(
        nodes.iter().map(depth).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2), Some(3), Some(3)]
    );
    assert_eq!(w.failures, 0);
    // Our key, as mnigs reads it, is the one cjdroute.conf holds.
    let n = sub.clone();
    let own = lab
        .run_in(&sub.ns, move || {
            mnigs::cjdns::admin::node_key(&mut n.admin()?)
        })
        .unwrap()
        .unwrap();
    assert_eq!(own, sub.key);
    eprintln!("[{:?}] discovery walked the mesh", t0.elapsed());

    uplinks(&lab, &[&gw.ns, &gwb.ns]);
    let (_, gw_log, gw_pid) = start_gateway(&lab, gw, "gw", 127, &["cjdns"]);
    let (_, gwb_log, gwb_pid) = start_gateway(&lab, gwb, "gwb", 126, &["cjdns"]);
    let before = state(&lab, &sub.ns);
    assert!(!ping(&lab, &sub.ns), "no Internet before mnigs");
    let sub_conf = subscriber_conf(&lab, sub, &["cjdns"]);
    let sub_log = lab.dir.join("sub.log");
    let pid = lab
        .spawn(&sub.ns, &[EXE, "daemon", "-c", &sub_conf], &sub_log)
        .unwrap();
    let logs = [sub_log.as_path(), gw_log.as_path(), gwb_log.as_path()];
    let s = wait_connected(
        &lab,
        &sub.ns,
        &sub_conf,
        None,
        Duration::from_secs(60),
        &logs,
    );
    assert_eq!(s["subscriber"]["method"], "cjdns", "{s:#}");
    let first = s["subscriber"]["gateway"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ping(&lab, &sub.ns), "ping through {first}");
    eprintln!("[{:?}] connected to {first}, ping works", t0.elapsed());

    // Disconnect and reconnect: the node is as before every time; prefixes never pile up.
    let address = |name: &str| {
        if name == "gw" {
            gw.address
        } else {
            gwb.address
        }
    };
    for round in 0..3 {
        let p = prefixes(&lab, &mesh, 0);
        assert_eq!(
            p.len(),
            2,
            "one IPv4 and one IPv6 prefix (round {round}): {p:?}"
        );
        cli(&lab, &sub.ns, &sub_conf, &["disconnect"]);
        wait_state(&lab, &sub.ns, &before, &format!("after disconnect {round}"));
        assert_eq!(prefixes(&lab, &mesh, 0), Vec::<String>::new());
        assert!(!ping(&lab, &sub.ns), "no Internet after disconnect");
        let to = address(&first).to_string();
        cli(&lab, &sub.ns, &sub_conf, &["connect", &to]);
        wait_connected(
            &lab,
            &sub.ns,
            &sub_conf,
            Some(&first),
            Duration::from_secs(30),
            &logs,
        );
        assert!(ping(&lab, &sub.ns), "ping after reconnect {round}");
    }
    eprintln!("[{:?}] 3 disconnect/connect rounds", t0.elapsed());

    // The first gateway's node dies: failover to the other, nothing of the first left.
    let (dead, other) = if first == "gw" { (3, "gwb") } else { (4, "gw") };
    mesh.stop(dead, Duration::from_secs(2));
    wait_connected(
        &lab,
        &sub.ns,
        &sub_conf,
        Some(other),
        Duration::from_secs(60),
        &logs,
    );
    assert!(ping(&lab, &sub.ns), "ping through {other}");
    let p = prefixes(&lab, &mesh, 0);
    assert_eq!(p.len(), 2, "only the new session's prefixes: {p:?}");
    let pool = if other == "gw" {
        "100.127."
    } else {
        "100.126."
    };
    assert!(p[0].starts_with(pool), "{p:?}");
    let tun = lab
        .exec(
            &sub.ns,
            &["ip", "-o", "-4", "addr", "show", "dev", &sub.tun],
        )
        .unwrap();
    assert_eq!(tun.lines().count(), 1, "one IPv4 address on the tun: {tun}");
    eprintln!("[{:?}] failed over to {other}", t0.elapsed());

    // SIGKILL and a restart: the saved session is taken up again, nothing is duplicated.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(lab.stop(pid, Duration::from_secs(5)));
    let pid = lab
        .spawn(&sub.ns, &[EXE, "daemon", "-c", &sub_conf], &sub_log)
        .unwrap();
    wait_connected(
        &lab,
        &sub.ns,
        &sub_conf,
        Some(other),
        Duration::from_secs(60),
        &logs,
    );
    assert!(ping(&lab, &sub.ns), "ping after the restart");
    assert_eq!(prefixes(&lab, &mesh, 0), p, "the same prefixes, once");
    eprintln!(
        "[{:?}] SIGKILL + restart took the session up again",
        t0.elapsed()
    );

    // The lease is lost (the last gateway goes away, taking its IpTunnel connections along, and
    // its 5 s lease runs out unrenewed): with no gateway left, the node is as before.
    let other_pid = if other == "gw" { gw_pid } else { gwb_pid };
    assert!(lab.stop(other_pid, Duration::from_secs(10)));
    let start = Instant::now();
    while state(&lab, &sub.ns) != before && start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_state(&lab, &sub.ns, &before, "after the lease was lost");
    assert_eq!(prefixes(&lab, &mesh, 0), Vec::<String>::new());
    eprintln!("[{:?}] lease lost left nothing", t0.elapsed());

    // SIGTERM: as before.
    assert!(lab.stop(pid, Duration::from_secs(10)));
    wait_state(&lab, &sub.ns, &before, "after SIGTERM");
    assert_eq!(prefixes(&lab, &mesh, 0), Vec::<String>::new());
    eprintln!("[{:?}] SIGTERM left nothing", t0.elapsed());
}

#[test]
fn cjdns_carrying_nothing_falls_over_to_wireguard() {
    let Some(exe) = cjdlab::gate("cjdns_carrying_nothing_falls_over_to_wireguard") else {
        return;
    };
    let _one = serial();
    let t0 = Instant::now();
    let lab = Lab::new("cjw").unwrap();
    let mesh = lab.cjdroute_mesh(&exe, &["sub", "gw"], &[(0, 1)]).unwrap();
    let (sub, gw) = (&mesh.nodes[0], &mesh.nodes[1]);
    uplinks(&lab, &[&gw.ns]);
    let (_, gw_log, _) = start_gateway(&lab, gw, "gw", 127, &["cjdns", "wireguard"]);
    // The gateway's IpTunnel carries no IPv4: dropped on its cjdns tun.
    let rules = format!(
        "table ip cjblock {{\n chain blockin {{\n type filter hook input priority -10;\n iifname \"{t}\" drop\n }}\n \
         chain blockfwd {{\n type filter hook forward priority -10;\n iifname \"{t}\" drop\n }}\n}}\n",
        t = gw.tun
    );
    lab.exec_full(
        &gw.ns,
        &["nft", "-f", "-"],
        Some(&rules),
        Duration::from_secs(10),
    )
    .unwrap();
    let before = state(&lab, &sub.ns);
    let sub_conf = subscriber_conf(&lab, sub, &["cjdns", "wireguard"]);
    let sub_log = lab.dir.join("sub.log");
    let pid = lab
        .spawn(&sub.ns, &[EXE, "daemon", "-c", &sub_conf], &sub_log)
        .unwrap();
    let s = wait_connected(
        &lab,
        &sub.ns,
        &sub_conf,
        Some("gw"),
        Duration::from_secs(60),
        &[&sub_log, &gw_log],
    );
    assert_eq!(s["subscriber"]["method"], "wireguard", "{s:#}");
    let log = std::fs::read_to_string(&sub_log).unwrap();
    assert!(
        log.contains("no answer from the gateway's tunnel address 100.127.0.1"),
        "cjdns was tried and refused: {}",
        log_of(&sub_log)
    );
    // Nothing of the cjdns attempt is left: WireGuard (over the fc00::/8 addresses) carries it.
    assert_eq!(prefixes(&lab, &mesh, 0), Vec::<String>::new());
    let tun = lab
        .exec(
            &sub.ns,
            &["ip", "-o", "-4", "addr", "show", "dev", &sub.tun],
        )
        .unwrap();
    assert!(
        tun.trim().is_empty(),
        "no IPv4 left on cjdroute's tun: {tun}"
    );
    assert!(ping(&lab, &sub.ns), "ping through WireGuard over cjdns");
    let route = lab.exec(&sub.ns, &["ip", "route", "get", INET]).unwrap();
    assert!(!route.contains(&sub.tun), "{route}");
    assert!(lab.stop(pid, Duration::from_secs(10)));
    wait_state(&lab, &sub.ns, &before, "after SIGTERM");
    eprintln!("[{:?}] cjdns → WireGuard over cjdns", t0.elapsed());
}

#[test]
fn a_tun_cjdroute_could_not_configure_is_not_reported_connected() {
    let Some(exe) = cjdlab::gate("a_tun_cjdroute_could_not_configure_is_not_reported_connected")
    else {
        return;
    };
    let _one = serial();
    let lab = Lab::new("cjp").unwrap();
    // The subscriber's cjdroute drops its privileges (cjdroute's default): it reports the
    // granted address but cannot put it on its tun.
    let mesh = lab
        .cjdroute_mesh_dropping(&exe, &["sub", "gw"], &[(0, 1)], &[0])
        .unwrap();
    let (sub, gw) = (&mesh.nodes[0], &mesh.nodes[1]);
    uplinks(&lab, &[&gw.ns]);
    let (_, gw_log, _) = start_gateway(&lab, gw, "gw", 127, &["cjdns"]);
    let sub_conf = subscriber_conf(&lab, sub, &["cjdns"]);
    let sub_log = lab.dir.join("sub.log");
    lab.spawn(&sub.ns, &[EXE, "daemon", "-c", &sub_conf], &sub_log)
        .unwrap();
    // Whether the address reaches the tun depends on which of cjdroute's threads (most lost
    // CAP_NET_ADMIN) sets it up: mostly it fails. Either way "connected" must mean traffic flows.
    let start = Instant::now();
    let mut log = String::new();
    while start.elapsed() < Duration::from_secs(40) {
        log = std::fs::read_to_string(&sub_log).unwrap_or_default();
        if log.contains("tunnel setup failed") || log.contains("tunnel cjdsub up") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_up = log.find("tunnel cjdsub up");
    let first_failed = log.find("tunnel setup failed");
    match (first_failed, first_up) {
        (Some(f), up) if up.is_none_or(|u| f < u) => {
            assert!(
                log[f..].contains("cjdroute reports the tunnel"),
                "{}",
                log_of(&sub_log)
            );
            let on_tun = lab
                .exec(
                    &sub.ns,
                    &["ip", "-o", "-4", "addr", "show", "dev", &sub.tun],
                )
                .unwrap();
            assert!(on_tun.trim().is_empty(), "{on_tun}");
            eprintln!("cjdroute could not configure its tun: not reported connected");
        }
        (_, Some(_)) => {
            // cjdroute's one privileged thread did it: then the tunnel must really carry traffic.
            assert!(ping(&lab, &sub.ns), "reported up, but nothing flows");
            eprintln!("cjdroute configured its tun after all: connected, and traffic flows");
        }
        _ => panic!(
            "neither up nor failed within 40 s:\n{}\n{}",
            log_of(&sub_log),
            log_of(&gw_log)
        ),
    }
}
