//! End to end, as root: a subscriber and two gateways on a Babel mesh, each gateway with its own
//! uplink to the fake Internet host. While the subscriber pings that host every 100 ms, gateway 1
//! loses (a) its uplink, (b) its daemon and tunnel (SIGKILL), (c) its mesh links; and (d) comes
//! back, which the subscriber follows only after the stability period. Each case asserts that the
//! subscriber moved and that traffic flows again, and prints the outage (lost pings × 100 ms) —
//! figures, not assertions; `bench/failover.sh` collects them.
//!
//! Cold failover (default) and hot standby are both run; fail_closed has its own test.
//!
//! Those cases run with tuned settings (`scan_interval 1`, `probe_target`, `prefer`, 1 s uplink
//! checks). The `*_with_shipped_defaults` tests run the uplink cut (and, on fresh meshes, the
//! daemon kill and the mesh cut) with nothing tuned (issue 18): the subscriber must notice a gateway
//! without Internet through its tunnel, by the uplink targets the gateway advertises.

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);
const PING_INTERVAL: Duration = Duration::from_millis(100);
/// `option failback_after` in these tests, seconds.
const FAILBACK_AFTER: u64 = 5;

fn subscriber_options(hot: bool, extra: &str) -> String {
    format!(
        "\toption scan_interval '1'\n\tlist probe_target '{}'\n\toption prefer 'gw1'\n\
         \toption failback_after '{FAILBACK_AFTER}'\n\toption hot_standby '{}'\n{extra}",
        Testbed::INET_HOST,
        u8::from(hot)
    )
}

fn ready(hot: bool, extra: &str) -> Scenario {
    let mut s =
        Scenario::two_gateways(EXE.as_ref(), &subscriber_options(hot, extra)).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(30))
        .expect("Babel converges");
    s.start(Node::Gw).unwrap();
    s.start(Node::Gw2).unwrap();
    s.watch_probes().expect("probe counters on sub");
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    s.wait_gateway("gw1", Duration::from_secs(10)).unwrap();
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "{}",
        s.tail(Node::Sub)
    );
    s
}

/// Runs `count` pings at 100 ms while `event` happens 1 s in; returns the outage in seconds
/// and what `event` returned. Prints the probe packets sub sent through each tunnel meanwhile
/// (issue 14: at most 10 a second per tunnel), sampled every 100 ms.
fn outage_during<T>(s: &Scenario, count: u32, label: &str, event: impl FnOnce() -> T) -> (f64, T) {
    let done = AtomicBool::new(false);
    let (lost, value, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = vec![];
            while !done.load(Ordering::Relaxed) {
                if let Ok(c) = s.probe_counts() {
                    samples.push((Instant::now(), c));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        let pinger = scope.spawn(|| s.ping_series(count, PING_INTERVAL));
        std::thread::sleep(Duration::from_secs(1));
        let value = event();
        let lost = pinger.join().expect("pinger").expect("ping series");
        done.store(true, Ordering::Relaxed);
        (lost, value, sampler.join().expect("probe sampler"))
    });
    println!("PROBES {label}: {}", probe_traffic(&samples));
    let outage = lost.len() as f64 * PING_INTERVAL.as_secs_f64();
    println!(
        "OUTAGE {label}: {:.1} s ({} of {count} pings lost at 100 ms: {lost:?})",
        outage,
        lost.len()
    );
    (outage, value)
}

/// Per interface that carried any (the tunnels): the probe packets sent between the first and the
/// last sample, and the most sent within any stretch of samples at most 1 s apart.
fn probe_traffic(samples: &[(Instant, BTreeMap<String, u64>)]) -> String {
    let (Some((t0, first)), Some((t1, last))) = (samples.first(), samples.last()) else {
        return "no samples".into();
    };
    let secs = t1.duration_since(*t0).as_secs_f64();
    let at = |i: usize, name: &str| samples[i].1.get(name).copied().unwrap_or(0);
    let sent = |name: &str| last[name] - first.get(name).copied().unwrap_or(0);
    last.keys()
        .filter(|name| sent(name) > 0)
        .map(|name| {
            let sent = sent(name);
            let mut most = 0;
            for i in 0..samples.len() {
                let j = (i..samples.len())
                    .take_while(|j| {
                        samples[*j].0.duration_since(samples[i].0) <= Duration::from_secs(1)
                    })
                    .last()
                    .unwrap_or(i);
                most = most.max(at(j, name) - at(i, name));
            }
            format!("{name} {sent} in {secs:.1} s (most in 1 s: {most})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn gw(s: &Scenario, argv: &[&str]) {
    s.bed.exec(Node::Gw, argv).expect("command on gw1");
}

fn failover_cases(hot: bool) {
    let mode = if hot { "hot" } else { "cold" };
    let mut s = ready(hot, "");
    if hot {
        let st = s.status(Node::Sub).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut standby = st["subscriber"]["standby"]["name"].clone();
        while standby != "gw2" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            standby = s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"].clone();
        }
        assert_eq!(standby, "gw2", "hot standby to gw2; {}", s.tail(Node::Sub));
    }

    // (a) gw1's uplink cut.
    let (a, ()) = outage_during(&s, 50, &format!("{mode} (a) uplink cut"), || {
        s.set_uplink(Node::Gw, false).unwrap();
    });
    s.wait_gateway("gw2", Duration::from_secs(5)).unwrap();
    assert!(
        s.ping_within(Duration::from_secs(3)),
        "traffic flows via gw2"
    );
    assert!(a < 5.0, "the outage ended within the series");
    let st = s.status(Node::Sub).unwrap();
    assert_eq!(st["subscriber"]["lastFailover"]["from"], "gw1");
    assert_eq!(st["subscriber"]["lastFailover"]["to"], "gw2");
    // gw1's own uplink check notices too, and nodeInfo says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let uplink = |s: &Scenario| s.status(Node::Gw).unwrap()["gateway"]["uplink"]["healthy"].clone();
    while uplink(&s) != false && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(uplink(&s), false, "gw1 reports its uplink unhealthy");

    // (d) gw1 back: the subscriber stays on gw2 for the stability period, then fails back.
    s.set_uplink(Node::Gw, true).unwrap();
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.sub_gateway().as_deref(),
        Some("gw2"),
        "no fail back before the stability period"
    );
    let (d, moved_after) = outage_during(&s, 150, &format!("{mode} (d) fail back"), || {
        s.wait_gateway("gw1", Duration::from_secs(30))
            .map(|_| back.elapsed())
    });
    let moved_after = moved_after.unwrap();
    println!(
        "FAILBACK {mode}: back on gw1 {:.1} s after its uplink returned (failback_after {FAILBACK_AFTER} s)",
        moved_after.as_secs_f64()
    );
    assert!(moved_after >= Duration::from_secs(FAILBACK_AFTER));
    assert!(
        s.ping_within(Duration::from_secs(3)),
        "traffic flows via gw1"
    );

    // (b) gw1's daemon and tunnel killed.
    let (b, ()) = outage_during(&s, 50, &format!("{mode} (b) SIGKILL"), || {
        kill_gateway(&s, Node::Gw)
    });
    s.gw_pid = None;
    s.wait_gateway("gw2", Duration::from_secs(5)).unwrap();
    assert!(s.ping_within(Duration::from_secs(3)));
    assert!(b < 5.0);

    // gw1 comes back as a fresh daemon; wait for the fail back before the next case.
    s.start(Node::Gw).unwrap();
    s.wait_gateway("gw1", Duration::from_secs(40)).unwrap();
    if hot {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"] != "gw2"
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(s.ping_within(Duration::from_secs(3)));

    // (c) gw1's mesh links down.
    let (c, ()) = outage_during(&s, 50, &format!("{mode} (c) mesh links down"), || {
        gw(&s, &["ip", "link", "set", "mesh0", "down"]);
    });
    s.wait_gateway("gw2", Duration::from_secs(5)).unwrap();
    assert!(s.ping_within(Duration::from_secs(3)));
    assert!(c < 5.0);

    let st = s.status(Node::Sub).unwrap();
    let sub = &st["subscriber"];
    assert!(sub["gateway"]["score"].is_number(), "{sub}");
    assert!(sub["gateway"]["quality"]["rttMs"].is_number(), "{sub}");
    assert!(sub["lastFailover"]["durationMs"].is_number(), "{sub}");
    println!(
        "SUMMARY {mode}: (a) {a:.1} s, (b) {b:.1} s, (c) {c:.1} s, (d) {d:.1} s\nstatus: {sub}"
    );
    // The store kept one summarised quality record per gateway, with gw1's three down events.
    let listed: serde_json::Value =
        serde_json::from_str(&s.cli(Node::Sub, &["gateways", "--json"]).unwrap()).unwrap();
    let gw1 = listed["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "gw1")
        .expect("gw1 listed")
        .clone();
    let q = &gw1["quality"];
    assert!(q["downEvents"].as_i64().unwrap() >= 3, "{gw1}");
    assert!(
        q["lastReason"].is_string() && q["probes"].as_u64().unwrap() > 10,
        "{gw1}"
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    // SIGTERM leaves no rule, table or tunnel behind.
    let rules = s.bed.exec(Node::Sub, &["ip", "rule", "show"]).unwrap();
    assert!(!rules.contains("3100"), "{rules}");
    for table in ["7101", "7102"] {
        let routes = s
            .bed
            .exec(Node::Sub, &["ip", "route", "show", "table", table])
            .unwrap_or_default();
        assert_eq!(routes.trim(), "", "table {table}");
    }
    let links = s
        .bed
        .exec(Node::Sub, &["ip", "-o", "link", "show"])
        .unwrap();
    assert!(!links.contains(&s.sub_wg), "{links}");
}

#[test]
fn cold_failover_between_two_gateways() {
    if !e2e_gate("cold_failover_between_two_gateways") {
        return;
    }
    failover_cases(false);
}

#[test]
fn hot_standby_failover_between_two_gateways() {
    if !e2e_gate("hot_standby_failover_between_two_gateways") {
        return;
    }
    failover_cases(true);
}

/// Echo requests to the Internet host leaving sub: (through its tunnel, any other way).
fn sub_leak_counts(s: &Scenario) -> (u64, u64) {
    let out = s
        .bed
        .exec(
            Node::Sub,
            &["nft", "list", "chain", "inet", "mnleak", "out"],
        )
        .expect("counter listing");
    let counts = mnigs_lab::scenario::nft_packet_counts(&out);
    assert_eq!(counts.len(), 2, "{out}");
    (counts[0], counts[1])
}

#[test]
fn fail_closed_drops_internet_traffic_while_no_gateway_is_up() {
    if !e2e_gate("fail_closed_drops_internet_traffic_while_no_gateway_is_up") {
        return;
    }
    let mut s = Scenario::two_gateways(
        EXE.as_ref(),
        &subscriber_options(false, "\toption fail_closed '1'\n"),
    )
    .expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(30))
        .expect("Babel converges");
    let script = format!(
        "table inet mnleak {{\n chain out {{ type filter hook output priority 0; policy accept;\n\
         ip daddr {inet} oifname \"{wg}\" counter\n ip daddr {inet} oifname != \"{wg}\" counter\n }}\n}}\n",
        inet = Testbed::INET_HOST,
        wg = s.sub_wg
    );
    s.bed
        .exec_full(
            Node::Sub,
            &["nft", "-f", "-"],
            Some(&script),
            Duration::from_secs(5),
        )
        .expect("leak counters");
    // A short lease: with no other gateway the subscriber keeps the dead tunnel (degraded)
    // until the lease cannot be renewed, then has none.
    let gw_conf = s.config(Node::Gw);
    let text = std::fs::read_to_string(&gw_conf).unwrap();
    std::fs::write(
        &gw_conf,
        text.replace("option lease_seconds '60'", "option lease_seconds '6'"),
    )
    .unwrap();
    // Only gw1 runs: once it dies no gateway is up.
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    s.wait_gateway("gw1", Duration::from_secs(30)).unwrap();
    assert!(s.ping_within(Duration::from_secs(5)));
    let (tunnel, leaked) = sub_leak_counts(&s);
    assert!(tunnel >= 1, "the counter sees tunnel traffic");
    assert_eq!(leaked, 0);

    let (outage, ()) = outage_during(&s, 80, "fail_closed, no gateway left", || {
        kill_gateway(&s, Node::Gw)
    });
    s.gw_pid = None;
    assert!(outage >= 2.0, "no gateway: the pings fail");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.sub_gateway().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.sub_gateway(), None, "the lease ran out: no tunnel");
    assert!(!s.ping_inet("1"));
    let (_, leaked) = sub_leak_counts(&s);
    assert_eq!(
        leaked, 0,
        "during the outage nothing left sub for the Internet host outside the tunnel"
    );
    // The mesh stays reachable.
    let gw2_mesh = Testbed::mesh_v4(Node::Gw2).to_string();
    s.bed
        .exec(Node::Sub, &["ping", "-n", "-c", "1", "-W", "2", &gw2_mesh])
        .expect("mesh reachable while fail_closed drops Internet traffic");

    // Control: without mnigs's rules the same ping leaks onto the mesh, and the counter sees it.
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(!s.ping_inet("1"));
    let (_, leaked) = sub_leak_counts(&s);
    assert!(leaked >= 1, "the leak counter works");
    let rules = s.bed.exec(Node::Sub, &["ip", "rule", "show"]).unwrap();
    assert!(
        !rules.contains("31002"),
        "SIGTERM removes the rules: {rules}"
    );
}

/// The shipped defaults on the test mesh (issue 18): the roles enabled, the gateways'
/// `wan_interface` and `uplink_target` (the fake Internet host: the public default targets do not
/// exist in the namespaces), pools that differ, and interface names unique to the run; everything
/// else — `uplink_interval`, lease length, the subscriber's probing, scanning and failback —
/// as shipped.
fn shipped_defaults(hot: bool) -> Scenario {
    let sub = if hot {
        "\toption hot_standby '1'\n"
    } else {
        ""
    };
    let mut s = Scenario::two_gateways(EXE.as_ref(), sub).expect("testbed");
    for node in [Node::Gw, Node::Gw2, Node::Sub] {
        let path = s.config(node);
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| {
                ![
                    "uplink_interval",
                    "lease_seconds",
                    "max_subscribers",
                    "timeout_ms",
                ]
                .iter()
                .any(|o| l.contains(&format!("option {o} ")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!text.contains("scan_interval") && !text.contains("probe_target"));
        std::fs::write(&path, text).unwrap();
    }
    s.bed
        .wait_converged(Duration::from_secs(30))
        .expect("Babel converges");
    s.start(Node::Gw).unwrap();
    s.start(Node::Gw2).unwrap();
    s.watch_probes().expect("probe counters on sub");
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "{}",
        s.tail(Node::Sub)
    );
    s
}

/// The gateway's uplink dies while it still answers on the mesh (an ISP outage): with nothing
/// tuned, the subscriber must be on the other gateway within seconds — on main before issue 18
/// it stayed on the dead one until its next scan (300 s). When the uplink returns, the
/// subscriber stays where it is (no flapping).
fn uplink_cut_with_shipped_defaults(hot: bool) {
    let mode = if hot { "hot" } else { "cold" };
    let s = shipped_defaults(hot);
    let first = s.sub_gateway().expect("connected");
    let (node, other) = if first == "gw1" {
        (Node::Gw, "gw2")
    } else {
        (Node::Gw2, "gw1")
    };
    // The gateways advertise what they check their uplink against, and the check works.
    let gw_status = s.status(node).unwrap();
    assert_eq!(
        gw_status["gateway"]["uplink"]["targets"],
        serde_json::json!([Testbed::INET_HOST.to_string()]),
        "{gw_status}"
    );
    assert_eq!(gw_status["gateway"]["uplinkCheck"]["state"], "working");
    if hot {
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"] != other
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"],
            other,
            "hot standby; {}",
            s.tail(Node::Sub)
        );
    }

    let (outage, ()) = outage_during(
        &s,
        50,
        &format!("{mode} shipped defaults, uplink cut"),
        || s.set_uplink(node, false).unwrap(),
    );
    s.wait_gateway(other, Duration::from_secs(5))
        .expect("the subscriber left the gateway without Internet");
    assert!(
        s.ping_within(Duration::from_secs(3)),
        "traffic flows via {other}"
    );
    assert!(outage < 5.0, "the outage ended within the series");
    let st = s.status(Node::Sub).unwrap();
    assert_eq!(st["subscriber"]["lastFailover"]["from"], first.as_str());
    assert_eq!(st["subscriber"]["lastFailover"]["to"], other);
    // The gateway's own check (shipped interval, 5 s) notices too.
    let unhealthy = |s: &Scenario| s.status(node).unwrap()["gateway"]["uplink"]["healthy"] == false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !unhealthy(&s) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(unhealthy(&s), "{first} reports its uplink unhealthy");

    // The uplink returns: no flapping back (failback_after 60 s by default, and no preference).
    s.set_uplink(node, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert_eq!(
            s.sub_gateway().as_deref(),
            Some(other),
            "stays on {other} after {first}'s uplink returned; {}",
            s.tail(Node::Sub)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(s.ping_within(Duration::from_secs(3)));
    if hot {
        // The gateway left behind becomes the standby again once it is back (an early scan,
        // not the regular one 300 s later), without carrying traffic before failback_after.
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"] != first.as_str()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(250));
        }
        let st = s.status(Node::Sub).unwrap();
        assert_eq!(
            st["subscriber"]["standby"]["name"],
            first.as_str(),
            "{first} is the standby again; {}",
            s.tail(Node::Sub)
        );
        assert_eq!(st["subscriber"]["gateway"]["name"], other);
    }
    println!("SHIPPED {mode}: uplink cut outage {outage:.1} s, {first} → {other}");
}

/// Kills `node`'s daemon and every other process of it but babeld (wireguard-go) with SIGKILL.
fn kill_gateway(s: &Scenario, node: Node) {
    let daemon = s.pid(node).expect("the gateway runs");
    let babeld = s.bed.babeld_pid(node);
    assert!(s.bed.stop(daemon, libc::SIGKILL, Duration::from_secs(5)));
    let ns = s.bed.ns(node);
    let pids = mnigs::sys::cmd::run(&["ip", "netns", "pids", &ns]).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if Some(pid) != babeld {
            s.bed.stop(pid, libc::SIGKILL, Duration::from_secs(5));
        }
    }
}

/// The daemon kill and the mesh cut with the shipped defaults, each on a fresh mesh (both
/// gateways known healthy): the figures for README's shipped-defaults column.
fn other_cases_with_shipped_defaults(hot: bool) {
    let mode = if hot { "hot" } else { "cold" };
    for (label, cut) in [
        ("daemon SIGKILL", kill_gateway as fn(&Scenario, Node)),
        ("mesh links down", |s: &Scenario, node: Node| {
            s.bed
                .exec(node, &["ip", "link", "set", "mesh0", "down"])
                .expect("mesh0 down");
        }),
    ] {
        let mut s = shipped_defaults(hot);
        let first = s.sub_gateway().expect("connected");
        let (node, other) = if first == "gw1" {
            (Node::Gw, "gw2")
        } else {
            (Node::Gw2, "gw1")
        };
        if hot {
            let deadline = Instant::now() + Duration::from_secs(15);
            while s.status(Node::Sub).unwrap()["subscriber"]["standby"]["name"] != other
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let (outage, ()) =
            outage_during(&s, 50, &format!("{mode} shipped defaults, {label}"), || {
                cut(&s, node)
            });
        if label == "daemon SIGKILL" {
            // Gone: the testbed must not signal its PID again.
            match node {
                Node::Gw => s.gw_pid = None,
                _ => s.gw2_pid = None,
            }
        }
        s.wait_gateway(other, Duration::from_secs(5)).unwrap();
        assert!(s.ping_within(Duration::from_secs(3)));
        assert!(outage < 5.0, "the outage ended within the series");
    }
}

#[test]
fn cold_uplink_cut_with_shipped_defaults() {
    if !e2e_gate("cold_uplink_cut_with_shipped_defaults") {
        return;
    }
    uplink_cut_with_shipped_defaults(false);
}

#[test]
fn hot_standby_uplink_cut_with_shipped_defaults() {
    if !e2e_gate("hot_standby_uplink_cut_with_shipped_defaults") {
        return;
    }
    uplink_cut_with_shipped_defaults(true);
}

#[test]
fn cold_kill_and_mesh_cut_with_shipped_defaults() {
    if !e2e_gate("cold_kill_and_mesh_cut_with_shipped_defaults") {
        return;
    }
    other_cases_with_shipped_defaults(false);
}

#[test]
fn hot_standby_kill_and_mesh_cut_with_shipped_defaults() {
    if !e2e_gate("hot_standby_kill_and_mesh_cut_with_shipped_defaults") {
        return;
    }
    other_cases_with_shipped_defaults(true);
}
