//! End to end, as root: 20 subscriber daemons, each in its own namespace on the Babel mesh, start
//! at the same moment next to two equal gateways. Each ranks the gateways itself (seeded tie-band
//! draw plus the load each gateway reports); they must end up on both gateways, not all on one.

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const LEAVES: u8 = 20;

#[test]
fn twenty_subscribers_spread_over_two_equal_gateways() {
    if !e2e_gate("twenty_subscribers_spread_over_two_equal_gateways") {
        return;
    }
    let mut s = Scenario::two_gateways_with_leaves(EXE.as_ref(), "", LEAVES).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(30))
        .expect("Babel converges");
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..LEAVES {
        while !(s.bed.leaf_has_routes(i, Node::Gw) && s.bed.leaf_has_routes(i, Node::Gw2)) {
            assert!(
                Instant::now() < deadline,
                "leaf {i} has no routes to both gateways"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    s.start(Node::Gw).unwrap();
    s.start(Node::Gw2).unwrap();
    for i in 0..LEAVES {
        s.start_leaf(i).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut on: Vec<Option<String>> = vec![None; usize::from(LEAVES)];
    while on.iter().any(Option::is_none) {
        for i in 0..LEAVES {
            if on[usize::from(i)].is_some() {
                continue;
            }
            if let Ok(st) = s.leaf_status(i)
                && st["subscriber"]["state"] == "connected"
            {
                on[usize::from(i)] = st["subscriber"]["gateway"]["name"]
                    .as_str()
                    .map(str::to_string);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not all leaves connected: {on:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let on_gw1 = on.iter().filter(|g| g.as_deref() == Some("gw1")).count();
    let on_gw2 = on.iter().filter(|g| g.as_deref() == Some("gw2")).count();
    println!("SPREAD 20 subscribers: {on_gw1} on gw1, {on_gw2} on gw2: {on:?}");
    assert_eq!(on_gw1 + on_gw2, usize::from(LEAVES));
    assert!(
        on_gw1 >= 2 && on_gw2 >= 2,
        "spread over both gateways, not piled onto one: {on_gw1}/{on_gw2}"
    );
    // The gateways agree, and a leaf on each gateway reaches the Internet host.
    let sessions = |node| {
        let v: serde_json::Value =
            serde_json::from_str(&s.cli(node, &["sessions", "--json"]).unwrap()).unwrap();
        v["sessions"].as_array().unwrap().len()
    };
    assert_eq!((sessions(Node::Gw), sessions(Node::Gw2)), (on_gw1, on_gw2));
    for gw in ["gw1", "gw2"] {
        let i = on.iter().position(|g| g.as_deref() == Some(gw)).unwrap() as u8;
        let target = Testbed::INET_HOST.to_string();
        let ns = s.bed.leaf_ns(i);
        let ok = (0..20).any(|_| {
            s.bed
                .exec_in(
                    &ns,
                    &["ping", "-n", "-c", "1", "-W", "1", &target],
                    None,
                    Duration::from_secs(5),
                )
                .is_ok()
        });
        assert!(ok, "leaf {i} on {gw} reaches the Internet host");
    }
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    assert!(s.stop(Node::Gw2, libc::SIGTERM));
}
