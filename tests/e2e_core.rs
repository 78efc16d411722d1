//! End to end, as root: a gateway and a subscriber two Babel hops apart; the subscriber finds the
//! gateway by itself, registers, and reaches the fake Internet host through WireGuard (userspace
//! wireguard-go here, the kernel has no module). Skips loudly without root; fails under MNIGS_E2E=1.

use mnigs_lab::scenario::{Scenario, assert_same_config};
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

fn ready(lease: u32, nat: &str) -> Scenario {
    let s = Scenario::with_nat(EXE.as_ref(), lease, nat).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s
}

/// WireGuard peers configured on the gateway's interface.
fn gw_peers(s: &Scenario) -> usize {
    s.bed
        .exec(Node::Gw, &["wg", "show", &s.gw_wg, "peers"])
        .map(|o| o.lines().count())
        .unwrap_or(0)
}

/// The gateway's per-subscriber iptables NAT rules (empty when the chain is gone).
fn gw_iptables_rules(s: &Scenario) -> String {
    let out = s
        .bed
        .exec(
            Node::Gw,
            &["iptables", "-w", "-t", "nat", "-S", "MNIGS-NAT"],
        )
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with("-A"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Addresses in the gateway's NAT set (empty when the table is gone).
fn gw_nat_elements(s: &Scenario) -> String {
    let out = s
        .bed
        .exec(Node::Gw, &["nft", "list", "set", "inet", "mnigs", "sess4"])
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains("elements"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn sessions(s: &Scenario) -> usize {
    let out = s.cli(Node::Gw, &["sessions", "--json"]).expect("sessions");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["sessions"].as_array().expect("list").len()
}

#[test]
fn subscriber_finds_gateway_over_babel_and_reaches_the_internet() {
    if !e2e_gate("subscriber_finds_gateway_over_babel_and_reaches_the_internet") {
        return;
    }
    let mut s = ready(60, "auto");
    let sub_before = s.system_state(Node::Sub);
    let gw_before = s.system_state(Node::Gw);
    let default_before = s
        .bed
        .exec(Node::Sub, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(
        default_before.contains("default dev mesh0"),
        "sub has its original default route: {default_before}"
    );
    s.watch_inet().unwrap();
    assert!(
        !s.ping_inet("1"),
        "without mnigs the Internet host must be unreachable from sub"
    );

    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let status = s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    let sub = &status["subscriber"];
    assert_eq!(sub["gateway"]["name"], "gw");
    assert_eq!(sub["method"], "wireguard");
    assert_eq!(sub["interface"], s.sub_wg.as_str());
    assert_eq!(sub["ipv4"], "100.127.0.2");
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "ping through the tunnel; sub log:\n{}",
        s.tail(Node::Sub)
    );
    let (from_gw, all) = s.inet_counts().unwrap();
    assert!(
        from_gw >= 1,
        "inet saw the ping from the gateway's uplink address"
    );
    assert_eq!(
        from_gw, all,
        "every echo request reached inet from the uplink address (NAT)"
    );
    assert_eq!(gw_peers(&s), 1);
    assert!(gw_nat_elements(&s).contains("100.127.0.2"));
    assert_eq!(sessions(&s), 1);
    let gateways = s.cli(Node::Sub, &["gateways"]).unwrap();
    assert!(
        gateways.contains("gw") && gateways.contains("routes:babel"),
        "{gateways}"
    );
    // One node, one entry (issue 14): the gateway answers at its IPv4 and IPv6 mesh addresses,
    // each listing the other, and is listed once with both.
    let listed: serde_json::Value =
        serde_json::from_str(&s.cli(Node::Sub, &["gateways", "--json"]).unwrap()).unwrap();
    let entries = listed["gateways"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one gateway node: {listed}");
    let found: Vec<(String, u64)> = entries[0]["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let at = f["address"].as_str().unwrap_or("").to_string();
            (at, f["hops"].as_u64().unwrap_or(0))
        })
        .collect();
    assert!(
        found.iter().any(|(a, _)| a.contains(':')) && found.iter().any(|(a, _)| a.contains('.')),
        "both address families listed: {found:?}"
    );
    assert_eq!(entries[0]["addresses"].as_array().map(Vec::len), Some(2));
    // Hops are measured (the reply's TTL / hop limit), not read from the kernel metric, which
    // Babel sets to 0 for IPv4 and 1024 for IPv6: the gateway is two hops away on both.
    assert!(found.iter().all(|(_, h)| *h == 2), "{found:?}");
    assert_eq!(entries[0]["hops"], 2);
    let table = s.cli(Node::Sub, &["gateways"]).unwrap();
    assert!(
        table.contains("10.77.0.3,fd77::3") && table.lines().count() == 2,
        "one row with both addresses:\n{table}"
    );

    // Disconnect: the lease is released and the subscriber is back as it was.
    s.cli(Node::Sub, &["disconnect"]).unwrap();
    assert_eq!(
        s.system_state(Node::Sub),
        sub_before,
        "disconnect leaves nothing on sub"
    );
    assert_eq!(
        s.bed
            .exec(Node::Sub, &["ip", "route", "show", "default"])
            .unwrap(),
        default_before
    );
    assert_eq!(gw_peers(&s), 0, "release removes the peer");
    assert_eq!(gw_nat_elements(&s), "", "release removes the NAT entry");
    assert_eq!(sessions(&s), 0);
    assert!(!s.ping_inet("1"));
    assert_eq!(
        s.status(Node::Sub).unwrap()["subscriber"]["state"],
        "disconnected"
    );

    // Scan connects again.
    s.cli(Node::Sub, &["scan"]).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(s.ping_within(Duration::from_secs(5)));

    // SIGTERM tears everything down on both nodes.
    s.assert_sigterm_leaves_nothing(&[(Node::Sub, &sub_before), (Node::Gw, &gw_before)]);
    assert!(!s.ping_inet("1"));
}

#[test]
fn sessions_survive_a_gateway_restart_and_expire_when_the_subscriber_dies() {
    if !e2e_gate("sessions_survive_a_gateway_restart_and_expire_when_the_subscriber_dies") {
        return;
    }
    let lease = 8;
    let mut s = ready(lease, "iptables");
    s.start(Node::Gw).unwrap();
    let idle = s.configured(Node::Gw);
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(s.ping_within(Duration::from_secs(5)));
    assert!(
        gw_iptables_rules(&s).contains("-s 100.127.0.2/32 -o wan0 -j MASQUERADE"),
        "iptables NAT in use"
    );
    assert_eq!(
        gw_nat_elements(&s),
        "",
        "no nftables table of ours with nat 'iptables'"
    );
    s.watch_inet().unwrap();
    assert!(s.ping_within(Duration::from_secs(5)));
    let (from_gw, all) = s.inet_counts().unwrap();
    assert!(
        from_gw >= 1 && from_gw == all,
        "iptables NAT: inet sees the uplink address"
    );

    // The gateway restarts; the session comes back from the store and traffic flows again
    // without the subscriber registering anew.
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    assert_eq!(gw_peers(&s), 0);
    s.start(Node::Gw).unwrap();
    assert_eq!(sessions(&s), 1, "session restored from the store");
    assert_eq!(gw_peers(&s), 1);
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "traffic flows after the gateway restart; sub:\n{}\ngw:\n{}",
        s.tail(Node::Sub),
        s.tail(Node::Gw)
    );

    // The subscriber dies without releasing: the gateway keeps the lease until it runs out, then
    // removes the peer and the NAT entry.
    assert!(s.stop(Node::Sub, libc::SIGKILL));
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        gw_peers(&s),
        1,
        "the lease is still live right after the kill"
    );
    let limit = Duration::from_secs(u64::from(lease) + 3);
    while gw_peers(&s) > 0 && killed.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        gw_peers(&s),
        0,
        "peer removed after the lease ran out (waited {:?})",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not removed before its time"
    );
    assert_eq!(gw_iptables_rules(&s), "", "expiry removes the NAT rule");
    assert_eq!(sessions(&s), 0);
    // Listed in full: the gateway is exactly as before the subscriber came (routes, addresses,
    // peers, NAT), though it was restarted in between.
    assert_same_config(&s.configured(Node::Gw), &idle, "gw after the expiry");
    assert!(
        s.tail(Node::Gw).contains("expired"),
        "gateway log says the lease expired"
    );
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    let nat = s
        .bed
        .exec(Node::Gw, &["iptables", "-w", "-t", "nat", "-S"])
        .unwrap();
    assert!(
        !nat.contains("MNIGS"),
        "SIGTERM removes the iptables chain: {nat}"
    );
    let _ = Testbed::INET_HOST;
}
