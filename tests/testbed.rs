//! The namespace test bed itself: Babel converges, the mesh carries IPv4 and IPv6, only the
//! gateway reaches the fake Internet, and nothing is left behind — also after a panic.
//!
//! Needs root and the end-to-end programs; skipped loudly otherwise (`MNIGS_E2E=1` makes a
//! missing prerequisite a failure).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mnigs_lab::testbed::{Node, Testbed, e2e_gate};

/// Namespaces and PIDs a testbed had, to check after it is gone.
#[derive(Default)]
struct Footprint {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    sockets: Vec<String>,
}

impl Footprint {
    fn assert_gone(&self) {
        let listed = mnigs::sys::cmd::run(&["ip", "netns", "list"]).unwrap();
        for ns in &self.namespaces {
            assert!(
                !Path::new("/var/run/netns").join(ns).exists(),
                "{ns} still exists"
            );
            assert!(
                !listed.split_whitespace().any(|w| w == ns),
                "{ns} still listed:\n{listed}"
            );
        }
        for pid in &self.pids {
            assert!(ended(*pid), "process {pid} we started still runs");
        }
        for socket in &self.sockets {
            assert!(!Path::new(socket).exists(), "{socket} was left behind");
        }
    }
}

/// Gone or a zombie waiting for a slow reaper.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            matches!(state, Some("Z" | "X"))
        }
        Err(_) => true,
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Whether `line` of `ip -o -4 route show` covers `host` with anything but a default route.
fn covers(line: &str, host: Ipv4Addr) -> bool {
    let mut words = line.split_whitespace();
    let mut first = words.next().unwrap_or("");
    if matches!(
        first,
        "unicast" | "local" | "broadcast" | "unreachable" | "blackhole" | "prohibit" | "throw"
    ) {
        first = words.next().unwrap_or("");
    }
    if first == "default" {
        return false;
    }
    let (addr, len) = first.split_once('/').unwrap_or((first, "32"));
    let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(addr) & mask == u32::from(host) & mask
}

fn footprint(testbed: &Testbed) -> Footprint {
    let mut pids = testbed.children();
    pids.extend(testbed.netns_pids());
    pids.sort_unstable();
    pids.dedup();
    Footprint {
        namespaces: Node::ALL.iter().map(|n| testbed.ns(*n)).collect(),
        pids,
        sockets: Vec::new(),
    }
}

#[test]
fn testbed_converges_routes_and_cleans_up() {
    if !e2e_gate("testbed_converges_routes_and_cleans_up") {
        return;
    }
    let testbed = Testbed::build().expect("testbed builds");
    let elapsed = testbed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    eprintln!("testbed {}: Babel converged in {elapsed:?}", testbed.tag);
    assert!(elapsed < Duration::from_secs(20));

    // babeld runs in the foreground as our child, under its own PID, in the right namespace.
    for node in Node::MESH {
        let pid = testbed.babeld_pid(node).expect("babeld runs");
        assert_eq!(comm(pid), "babeld");
        assert!(testbed.children().contains(&pid));
        let listed = mnigs::sys::cmd::run(&["ip", "netns", "pids", &testbed.ns(node)]).unwrap();
        assert!(
            listed.split_whitespace().any(|p| p == pid.to_string()),
            "{listed}"
        );
    }

    // Babel host routes from sub to gw's mesh addresses (v4 over IPv6 next hops).
    let gw4 = Testbed::mesh_v4(Node::Gw).to_string();
    let gw6 = Testbed::mesh_v6(Node::Gw).to_string();
    let routes4 = testbed
        .exec(Node::Sub, &["ip", "-4", "route", "show", "proto", "babel"])
        .unwrap();
    let routes6 = testbed
        .exec(Node::Sub, &["ip", "-6", "route", "show", "proto", "babel"])
        .unwrap();
    eprintln!("sub's Babel routes:\n{routes4}{routes6}");
    assert!(
        routes4.lines().any(|l| l.starts_with(&format!("{gw4} "))),
        "{routes4}"
    );
    assert!(
        routes6.lines().any(|l| l.starts_with(&format!("{gw6} "))),
        "{routes6}"
    );
    assert!(testbed.has_mesh_routes(Node::Sub, Node::Relay));

    // The mesh carries both families end to end.
    testbed
        .exec(Node::Sub, &["ping", "-c1", "-W1", &gw4])
        .expect("sub reaches gw over IPv4");
    testbed
        .exec(Node::Sub, &["ping", "-c1", "-W1", &gw6])
        .expect("sub reaches gw over IPv6");

    // The gateway reaches the Internet host; the subscriber (not yet NATed) does not.
    let inet = Testbed::INET_HOST.to_string();
    testbed
        .exec(Node::Gw, &["ping", "-c1", "-W1", &inet])
        .expect("gw reaches INET_HOST");
    let negative = testbed.exec(Node::Sub, &["ping", "-c1", "-W1", &inet]);
    assert!(
        negative.is_err(),
        "sub must not reach INET_HOST yet: {negative:?}"
    );

    // Only the default route (sub) or nothing (relay) leads towards INET_HOST; inet has no
    // way back into the mesh or to CGNAT addresses.
    for node in [Node::Sub, Node::Relay] {
        let table = testbed
            .exec(node, &["ip", "-o", "-4", "route", "show", "table", "all"])
            .unwrap();
        let wrong: Vec<&str> = table
            .lines()
            .filter(|l| covers(l, Testbed::INET_HOST))
            .collect();
        assert!(
            wrong.is_empty(),
            "{node:?} has routes to INET_HOST: {wrong:?}"
        );
    }
    assert!(
        testbed
            .exec(Node::Relay, &["ip", "route", "get", &inet])
            .is_err()
    );
    let inet_table = testbed
        .exec(
            Node::Inet,
            &["ip", "-o", "-4", "route", "show", "table", "all"],
        )
        .unwrap();
    for unreachable in [Testbed::mesh_v4(Node::Sub), Ipv4Addr::new(100, 64, 0, 1)] {
        let wrong: Vec<&str> = inet_table
            .lines()
            .filter(|l| covers(l, unreachable))
            .collect();
        assert!(wrong.is_empty(), "inet routes to {unreachable}: {wrong:?}");
    }
    assert_eq!(testbed.wan_ifname(), "wan0");

    // spawn + stop of a plain child.
    let log = testbed.dir.join("sleep.log");
    let sleeper = testbed.spawn(Node::Inet, &["sleep", "300"], &log).unwrap();
    assert!(testbed.stop(sleeper, libc::SIGTERM, Duration::from_secs(2)));
    assert!(ended(sleeper));
    assert!(!testbed.children().contains(&sleeper));
    assert!(
        !testbed.stop(1, libc::SIGTERM, Duration::from_millis(10)),
        "PID 1 is not ours"
    );

    // A daemon that forks away from us (wireguard-go) must still die with the testbed, and its
    // control socket must go too.
    let ifname = testbed.unique_ifname("g");
    assert!(ifname.len() <= 15);
    testbed
        .exec(Node::Gw, &["wireguard-go", &ifname])
        .expect("wireguard-go starts");
    let socket = format!("/var/run/wireguard/{ifname}.sock");
    assert!(Path::new(&socket).exists(), "{socket}");
    let wg_pids = mnigs::sys::cmd::run(&["ip", "netns", "pids", &testbed.ns(Node::Gw)]).unwrap();
    let wg_pid = wg_pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| comm(*p).starts_with("wireguard"))
        .expect("wireguard-go lives in gw's namespace");
    // A second one, stopped with SIGKILL through `stop`, leaves its socket for Drop to remove.
    let ifname2 = testbed.unique_ifname("g2");
    testbed
        .exec(Node::Gw, &["wireguard-go", &ifname2])
        .expect("wireguard-go starts");
    let socket2 = format!("/var/run/wireguard/{ifname2}.sock");
    let wg2_pid = testbed
        .netns_pids()
        .into_iter()
        .find(|p| *p != wg_pid && comm(*p).starts_with("wireguard"))
        .expect("second wireguard-go");
    assert!(testbed.stop(wg2_pid, libc::SIGKILL, Duration::from_secs(2)));
    assert!(
        Path::new(&socket2).exists(),
        "SIGKILL leaves the socket behind"
    );

    let mut footprint = footprint(&testbed);
    assert!(footprint.pids.contains(&wg_pid));
    footprint.sockets = vec![socket, socket2];
    let dir = testbed.dir.clone();
    drop(testbed);
    footprint.assert_gone();
    assert!(!dir.exists());
}

#[test]
fn panic_inside_a_test_still_cleans_up() {
    if !e2e_gate("panic_inside_a_test_still_cleans_up") {
        return;
    }
    let seen: Mutex<Footprint> = Mutex::new(Footprint::default());
    let outcome = std::panic::catch_unwind(|| {
        let testbed = Testbed::build().expect("testbed builds");
        let log = testbed.dir.join("sleep.log");
        testbed.spawn(Node::Relay, &["sleep", "300"], &log).unwrap();
        *seen.lock().unwrap() = footprint(&testbed);
        assert_eq!(seen.lock().unwrap().pids.len(), 4, "3 babeld + sleep");
        panic!("deliberate panic with a live testbed");
    });
    assert!(outcome.is_err());
    seen.lock().unwrap().assert_gone();
}

/// Not a test on its own: builds a testbed and dies without dropping it, as a crashed run
/// would. Driven by `stale_testbeds_of_dead_runs_are_removed`.
#[test]
#[ignore = "helper, run by stale_testbeds_of_dead_runs_are_removed"]
fn crash_with_live_testbed() {
    let Some(report) = std::env::var_os("MNIGS_TESTBED_CRASH_REPORT") else {
        return;
    };
    let testbed = Testbed::build().expect("testbed builds");
    let mut text = testbed.tag.clone();
    for pid in testbed.children() {
        text.push_str(&format!(" {pid}"));
    }
    std::fs::write(report, text).unwrap();
    std::process::abort();
}

#[test]
fn stale_testbeds_of_dead_runs_are_removed() {
    if !e2e_gate("stale_testbeds_of_dead_runs_are_removed") {
        return;
    }
    let report = std::env::temp_dir().join(format!("mnigs-crash-report-{}", std::process::id()));
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_with_live_testbed",
            "--ignored",
            "--nocapture",
        ])
        .env("MNIGS_TESTBED_CRASH_REPORT", &report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper aborts");
    let text = std::fs::read_to_string(&report).expect("the helper reported its testbed");
    std::fs::remove_file(&report).unwrap();
    let mut words = text.split_whitespace();
    let tag = words.next().unwrap().to_string();
    let pids: Vec<u32> = words.map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 3, "three babeld outlived their owner");
    let namespaces: Vec<String> = ["sub", "relay", "gw", "inet"]
        .iter()
        .map(|n| format!("{}{tag}-{n}", mnigs_lab::testbed::NS_PREFIX))
        .collect();
    for ns in &namespaces {
        assert!(
            Path::new("/var/run/netns").join(ns).exists(),
            "{ns} was left"
        );
    }
    assert!(pids.iter().all(|p| !ended(*p)), "babeld still runs");

    let removed = mnigs_lab::testbed::cleanup_stale(mnigs_lab::testbed::NS_PREFIX);
    for ns in &namespaces {
        assert!(removed.contains(ns), "{ns} not removed: {removed:?}");
    }
    // Live testbeds (those of the tests running in parallel in this process) are left alone.
    let ours = format!(
        "{}{:06x}",
        mnigs_lab::testbed::NS_PREFIX,
        std::process::id()
    );
    assert!(
        !removed.iter().any(|ns| ns.starts_with(&ours)),
        "a live testbed was removed: {removed:?}"
    );
    Footprint {
        namespaces,
        pids,
        sockets: Vec::new(),
    }
    .assert_gone();
    assert!(
        !std::env::temp_dir()
            .join(format!("mnigs-testbed-{tag}"))
            .exists()
    );
}
