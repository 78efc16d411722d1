//! End to end, as root: the openvpn and route methods and the fallback between methods, on a
//! layer-2 mesh (one bridge) built here:
//!
//! ```text
//!  s1 e0 10.78.0.11/24 ──┐
//!                        ├── br0 10.78.0.1/24  gw  wan0 198.51.100.1 ── 198.51.100.2 inet (lo 203.0.113.7)
//!  s2 e0 10.78.0.12/24 ──┘
//! ```
//!
//! The subscribers have no default route; `inet` knows only its uplink subnet, so an echo reply
//! reaches a subscriber only through the gateway's NAT. Skips loudly without root (or without
//! openvpn); fails under MNIGS_E2E=1.

#[path = "common/e2e.rs"]
mod e2e_common;

use mnigs::sys::cmd;
use mnigs_lab::Lab;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const INET_HOST: &str = "203.0.113.7";
const INET_HOST6: &str = "2001:db8:113::7";
const GW: &str = "10.78.0.1";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this test should run: the common E2E gate plus openvpn and openssl.
fn gate(test: &str) -> bool {
    e2e_common::gate_with(test, &["openvpn", "openssl"])
}

/// The bridge mesh, on a [`Lab`]; dropping it stops everything started in it and deletes it.
struct Bed {
    lab: Lab,
    /// `<pid>x<n>`, unique on the host: part of the WireGuard interface names.
    tag: String,
    /// Each node's running daemon.
    daemons: Vec<(String, u32)>,
    /// Whether the gateway hands out IPv6 addresses too (its default pool).
    v6_pool: bool,
}

const NODES: [&str; 4] = ["gw", "s1", "s2", "inet"];

impl Bed {
    fn build() -> Bed {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let letter = |i: u32| char::from(b'a' + (i % 26) as u8);
        let lab = Lab::new(&format!("me{}{}", letter(n / 26), letter(n))).unwrap();
        let bed = Bed {
            lab,
            tag,
            daemons: vec![],
            v6_pool: false,
        };
        // wireguard-go's control sockets are host-wide: the lab removes those left behind.
        bed.lab.own_ifnames(&bed.ifname(""));
        for n in NODES {
            bed.lab.add_ns(n).unwrap();
            // No DAD: link-local addresses are final at once, so before/after listings compare.
            let off = [
                "/proc/sys/net/ipv4/conf/all/rp_filter",
                "/proc/sys/net/ipv6/conf/all/accept_dad",
                "/proc/sys/net/ipv6/conf/default/accept_dad",
            ];
            let mut argv = vec!["tee"];
            argv.extend(off);
            bed.exec_in(n, &argv, Some("0\n")).unwrap();
            // The gateway turns forwarding on and leaves it on; start with it on.
            let on = [
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv6/conf/all/forwarding",
            ];
            if n == "gw" {
                let mut argv = vec!["tee"];
                argv.extend(on);
                bed.exec_in(n, &argv, Some("1\n")).unwrap();
            }
        }
        let ns = |n: &str| bed.ns(n);
        let veth = |a: &str, an: &str, b: &str, bn: &str| {
            cmd::run(&[
                "ip",
                "link",
                "add",
                an,
                "netns",
                &ns(a),
                "type",
                "veth",
                "peer",
                "name",
                bn,
                "netns",
                &ns(b),
            ])
            .unwrap();
        };
        veth("gw", "gp1", "s1", "e0");
        veth("gw", "gp2", "s2", "e0");
        veth("gw", "wan0", "inet", "wan0");
        let batch = |n: &str, lines: &[&str]| {
            let input = lines.join("\n") + "\n";
            cmd::run_input(&["ip", "-n", &ns(n), "-batch", "-"], &input).unwrap();
        };
        batch(
            "gw",
            &[
                "link set lo up",
                "link add br0 type bridge",
                "link set gp1 master br0",
                "link set gp2 master br0",
                "link set gp1 up",
                "link set gp2 up",
                "link set br0 up",
                "address add 10.78.0.1/24 dev br0",
                "link set wan0 up",
                "address add 198.51.100.1/24 dev wan0",
                "route add default via 198.51.100.2",
                "address add 2001:db8:100::1/64 dev wan0",
                "route add ::/0 via 2001:db8:100::2",
            ],
        );
        for (n, a) in [("s1", "10.78.0.11/24"), ("s2", "10.78.0.12/24")] {
            batch(
                n,
                &[
                    "link set lo up",
                    "link set e0 up",
                    &format!("address add {a} dev e0"),
                ],
            );
        }
        batch(
            "inet",
            &[
                "link set lo up",
                "link set wan0 up",
                "address add 198.51.100.2/24 dev wan0",
                "address add 203.0.113.7/32 dev lo",
                "address add 2001:db8:100::2/64 dev wan0",
                "address add 2001:db8:113::7/128 dev lo",
            ],
        );
        bed
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.lab.tag)
    }

    /// Interface names that are unique on the host (wireguard-go's sockets are shared).
    fn ifname(&self, role: &str) -> String {
        format!("w{}{role}", self.tag)
    }

    fn exec_in(&self, node: &str, argv: &[&str], input: Option<&str>) -> Result<String, String> {
        self.lab
            .exec_full(&self.ns(node), argv, input, Duration::from_secs(90))
            .map_err(|e| e.to_string())
    }

    fn exec(&self, node: &str, argv: &[&str]) -> Result<String, String> {
        self.exec_in(node, argv, None)
    }

    fn conf(&self, node: &str) -> PathBuf {
        self.lab.dir.join(format!("{node}.uci"))
    }

    fn log(&self, node: &str) -> PathBuf {
        self.lab.dir.join(format!("{node}.log"))
    }

    fn ovpn_dir(&self, node: &str) -> PathBuf {
        self.lab.dir.join(format!("{node}-ovpn"))
    }

    /// Writes `node`'s UCI file: a gateway (gw) or a subscriber offering/using `methods`.
    fn write_conf(&self, node: &str, methods: &[&str], lease: u32) {
        let list: String = methods
            .iter()
            .map(|m| format!("\tlist method '{m}'\n"))
            .collect();
        let pool6 = if self.v6_pool {
            ""
        } else {
            "\toption ipv6_pool ''\n"
        };
        let role = if node == "gw" {
            format!(
                "config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\
                 \toption lease_seconds '{lease}'\n{pool6}{list}\n"
            )
        } else {
            format!(
                "config subscriber 'subscriber'\n\toption enabled '1'\n{list}\n\
                 config discovery 'd'\n\toption method 'routes'\n\toption protocol '99'\n\
                 \toption timeout_ms '500'\n\n"
            )
        };
        let text = format!(
            "config mnigs 'main'\n\toption name '{node}'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             {role}\
             config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wgc}'\n\n\
             config openvpn 'openvpn'\n\toption interface 'ovs'\n\toption client_interface 'ovc'\n\
             \toption directory '{ovpn}'\n",
            db = self.lab.dir.join(format!("{node}.db")).display(),
            wg = self.ifname(&format!("{node}g")),
            wgc = self.ifname(&format!("{node}c")),
            ovpn = self.ovpn_dir(node).display(),
        );
        std::fs::write(self.conf(node), text).unwrap();
    }

    fn cli(&self, node: &str, args: &[&str]) -> Result<String, String> {
        let conf = self.conf(node).display().to_string();
        let mut argv = vec![EXE];
        argv.extend_from_slice(args);
        argv.extend(["-c", &conf]);
        self.exec(node, &argv)
    }

    fn status(&self, node: &str) -> Value {
        let out = self.cli(node, &["status", "--json"]).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    /// Starts `node`'s daemon and waits until its RPC answers.
    fn start(&mut self, node: &str) {
        // A fresh log each start (the lab appends).
        let _ = std::fs::remove_file(self.log(node));
        let conf = self.conf(node).display().to_string();
        let pid = self
            .lab
            .spawn(
                &self.ns(node),
                &[EXE, "daemon", "-c", &conf],
                &self.log(node),
            )
            .unwrap();
        self.daemons.push((node.to_string(), pid));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(node, &["status", "--json"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{node} did not come up:\n{}", self.tail(node));
    }

    /// SIGTERM (or SIGKILL) to `node`'s daemon; waits for it to end.
    fn stop(&mut self, node: &str, signal: i32) {
        let i = self.daemons.iter().position(|(n, _)| n == node).unwrap();
        let (_, pid) = self.daemons.remove(i);
        if !self.lab.signal(pid, signal, Duration::from_secs(20)) {
            panic!("{node} did not stop:\n{}", self.tail(node));
        }
    }

    fn tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.log(node)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn ping(&self, node: &str) -> bool {
        self.exec(node, &["ping", "-n", "-c", "1", "-W", "1", INET_HOST])
            .is_ok()
    }

    fn ping6(&self, node: &str) -> bool {
        self.exec(
            node,
            &["ping", "-6", "-n", "-c", "1", "-W", "1", INET_HOST6],
        )
        .is_ok()
    }

    fn ping_within(&self, node: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.ping(node) {
                return true;
            }
        }
        false
    }

    /// Waits until pings from `node` fail three times in a row; returns how long that took.
    fn cut_within(&self, node: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut fails = 0;
        while start.elapsed() < limit {
            if self.ping(node) {
                fails = 0;
            } else {
                fails += 1;
                if fails == 3 {
                    return Some(start.elapsed());
                }
            }
        }
        None
    }

    /// Links, addresses, routes, rules and nftables of `node`, to compare before and after.
    fn state(&self, node: &str) -> String {
        mnigs_lab::scenario::network_state(|argv| self.exec(node, argv).unwrap_or_default())
    }

    /// PIDs of processes in `node`'s namespace that are not our children.
    fn ns_pids(&self, node: &str) -> Vec<i32> {
        cmd::run(&["ip", "netns", "pids", &self.ns(node)])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// Asserts two state listings are equal, naming the lines that differ.
fn assert_same(before: &str, after: &str, what: &str) {
    let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
    let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        before == after,
        "{what} changed\n  gone: {gone:#?}\n  new: {new:#?}"
    );
}

fn connect(bed: &Bed, node: &str, method: Option<&str>) -> Result<String, String> {
    let mut args = vec!["connect", GW];
    if let Some(m) = method {
        args.extend(["-m", m]);
    }
    bed.cli(node, &args)
}

fn openvpn_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("openvpn.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn openvpn_carries_two_subscribers_and_expiry_cuts_one() {
    if !gate("openvpn_carries_two_subscribers_and_expiry_cuts_one") {
        return;
    }
    let mut bed = Bed::build();
    bed.v6_pool = true;
    let before: Vec<String> = ["gw", "s2"].iter().map(|n| bed.state(n)).collect();
    assert!(!bed.ping6("s1"), "negative control (IPv6)");
    assert!(
        !bed.ping("s1"),
        "negative control: s1 reaches inet without a gateway"
    );
    bed.write_conf("gw", &["openvpn"], 6);
    bed.write_conf("s1", &["openvpn"], 0);
    bed.write_conf("s2", &["openvpn"], 0);
    bed.start("gw");
    bed.start("s1");
    bed.start("s2");
    for s in ["s1", "s2"] {
        let out = connect(&bed, s, Some("openvpn"));
        assert!(
            out.is_ok(),
            "{s}: {out:?}\n{}\n{}",
            bed.tail(s),
            bed.tail("gw")
        );
        let st = bed.status(s);
        assert_eq!(st["subscriber"]["method"], "openvpn", "{st}");
        assert!(
            bed.ping_within(s, Duration::from_secs(10)),
            "{s} cannot ping through openvpn"
        );
        // IPv6 from the gateway's pool, NATed like IPv4.
        assert!(st["subscriber"]["ipv6"].is_string(), "{st}");
        let start = Instant::now();
        let mut ok6 = false;
        while !ok6 && start.elapsed() < Duration::from_secs(10) {
            ok6 = bed.ping6(s);
        }
        assert!(ok6, "{s} cannot ping6 through openvpn");
    }
    // Each subscriber holds its own certificate, issued for its own key.
    let c1 = std::fs::read_to_string(bed.ovpn_dir("s1").join("client/client.crt")).unwrap();
    let c2 = std::fs::read_to_string(bed.ovpn_dir("s2").join("client/client.crt")).unwrap();
    assert_ne!(c1, c2);
    let ccd = bed.ovpn_dir("gw").join("server/ccd");
    assert_eq!(std::fs::read_dir(&ccd).unwrap().count(), 2);

    // s1's daemon dies hard: its openvpn client keeps running, but its lease is no longer
    // renewed. On expiry the gateway cuts exactly that client off.
    bed.stop("s1", libc::SIGKILL);
    let s1_client = openvpn_pid(&bed.ovpn_dir("s1").join("client"));
    assert!(s1_client.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0));
    assert!(
        bed.ping("s1"),
        "s1's orphaned tunnel should still work before expiry"
    );
    let cut = bed.cut_within("s1", Duration::from_secs(20));
    assert!(
        cut.is_some(),
        "s1 still reaches inet after its lease expired\n{}",
        bed.tail("gw")
    );
    println!(
        "openvpn: s1 cut off {:?} after its daemon died (lease 6 s)",
        cut.unwrap()
    );
    assert_eq!(
        std::fs::read_dir(&ccd).unwrap().count(),
        1,
        "only s1's client config goes\n--- gw\n{}\n--- s2\n{}",
        bed.tail("gw"),
        bed.tail("s2")
    );
    let daemon_log = std::fs::read_to_string(bed.log("gw")).unwrap();
    assert!(
        !daemon_log.contains("left something behind"),
        "the expiry did not remove everything:\n{daemon_log}"
    );
    // The orphaned client keeps trying (after its 10 s ping timeout), and is refused: its
    // certificate has no client-config file any more.
    let gw_log = bed.ovpn_dir("gw").join("server/openvpn.log");
    let refused = "client-config-dir authentication failed";
    let deadline = Instant::now() + Duration::from_secs(25);
    while Instant::now() < deadline
        && !std::fs::read_to_string(&gw_log)
            .unwrap_or_default()
            .contains(refused)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&gw_log).unwrap_or_default();
    assert!(
        text.contains(refused),
        "no refusal in the server log:\n{text}"
    );
    assert!(!bed.ping("s1"), "s1's client got back in");
    // s2 was not disturbed.
    assert!(bed.ping("s2"), "s2 lost its tunnel when s1 was cut off");
    assert_eq!(bed.status("s2")["subscriber"]["state"], "connected");

    // Release (s2 disconnects), then SIGTERM everywhere: nothing is left behind.
    bed.cli("s2", &["disconnect"]).unwrap();
    assert!(!bed.ping("s2"));
    bed.stop("s2", libc::SIGTERM);
    bed.stop("gw", libc::SIGTERM);
    assert_eq!(
        bed.ns_pids("gw"),
        Vec::<i32>::new(),
        "gw's openvpn server survived"
    );
    assert_eq!(
        bed.ns_pids("s2"),
        Vec::<i32>::new(),
        "s2's openvpn client survived"
    );
    let after: Vec<String> = ["gw", "s2"].iter().map(|n| bed.state(n)).collect();
    assert_same(&before[0], &after[0], "gw state");
    assert_same(&before[1], &after[1], "s2 state");
}

#[test]
fn route_method_on_a_bridge() {
    if !gate("route_method_on_a_bridge") {
        return;
    }
    let mut bed = Bed::build();
    let before: Vec<String> = ["gw", "s1"].iter().map(|n| bed.state(n)).collect();
    bed.write_conf("gw", &["route"], 6);
    bed.write_conf("s1", &["route"], 0);
    bed.start("gw");
    bed.start("s1");
    assert!(!bed.ping("s1"), "negative control");
    let out = connect(&bed, "s1", Some("route"));
    assert!(out.is_ok(), "{out:?}\n{}", bed.tail("s1"));
    let st = bed.status("s1");
    assert_eq!(st["subscriber"]["method"], "route", "{st}");
    assert_eq!(st["subscriber"]["interface"], "e0", "{st}");
    assert!(
        bed.ping_within("s1", Duration::from_secs(5)),
        "s1 cannot ping via route"
    );
    // A node on the same segment routing via the gateway without a lease is not NATed.
    bed.exec("s2", &["ip", "route", "add", "default", "via", GW])
        .unwrap();
    assert!(!bed.ping("s2"), "s2 got out without a lease");
    bed.exec("s2", &["ip", "route", "del", "default"]).unwrap();

    bed.cli("s1", &["disconnect"]).unwrap();
    assert!(!bed.ping("s1"), "s1 still gets out after release");
    let mid = bed.state("gw");
    assert!(
        !mid.contains("proto 77"),
        "gateway kept the route after release:\n{mid}"
    );

    // Expiry: s1 connects again and its daemon dies; once the 6 s lease has run out the gateway
    // is listed exactly as after the release.
    assert!(connect(&bed, "s1", Some("route")).is_ok());
    assert!(bed.ping_within("s1", Duration::from_secs(5)));
    assert_ne!(bed.state("gw"), mid, "the lease shows on the gateway");
    bed.stop("s1", libc::SIGKILL);
    let cut = bed.cut_within("s1", Duration::from_secs(20));
    assert!(cut.is_some(), "s1 still gets out after its lease expired");
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.state("gw") != mid && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same(&mid, &bed.state("gw"), "gw after the expiry");
    println!(
        "route: s1 cut off {:?} after its daemon died (lease 6 s)",
        cut.unwrap()
    );
    // s1's daemon comes back, finds its own leftovers and clears them on SIGTERM.
    bed.start("s1");
    bed.stop("s1", libc::SIGTERM);
    bed.stop("gw", libc::SIGTERM);
    assert_same(&before[0], &bed.state("gw"), "gw state");
    assert_same(&before[1], &bed.state("s1"), "s1 state");
}

#[test]
fn falls_back_to_wireguard_when_openvpn_is_broken() {
    if !gate("falls_back_to_wireguard_when_openvpn_is_broken") {
        return;
    }
    // Killed: the gateway notices when asked and refuses openvpn with a temporary error.
    fallback(libc::SIGKILL, "the openvpn server is not running");
}

#[test]
fn falls_back_to_wireguard_when_openvpn_does_not_answer() {
    if !gate("falls_back_to_wireguard_when_openvpn_does_not_answer") {
        return;
    }
    // Frozen: the port stays open but nothing answers; the subscriber gives up after its
    // bound for a silent server (3 s), not after the whole handshake bound (20 s).
    fallback(libc::SIGSTOP, "no answer from the server within");
}

/// The gateway offers [openvpn, wireguard] and its openvpn server gets `signal`; the subscriber
/// (preferring openvpn) must end up on wireguard with the openvpn failure, saying `why`, logged
/// and counted in its store.
fn fallback(signal: i32, why: &str) {
    let mut bed = Bed::build();
    let before: Vec<String> = ["gw", "s1"].iter().map(|n| bed.state(n)).collect();
    bed.write_conf("gw", &["openvpn", "wireguard"], 30);
    bed.write_conf("s1", &["openvpn", "wireguard"], 0);
    bed.start("gw");
    // The gateway still offers openvpn, but its server is gone.
    let server = openvpn_pid(&bed.ovpn_dir("gw").join("server")).expect("server pid");
    assert_eq!(unsafe { libc::kill(server, signal) }, 0);
    // Discovery finds the gateway by a host route of protocol 99 (as a mesh protocol would
    // install it); the subscriber then chooses and falls back on its own.
    bed.exec(
        "s1",
        &[
            "ip",
            "route",
            "add",
            "10.78.0.1/32",
            "dev",
            "e0",
            "proto",
            "99",
        ],
    )
    .unwrap();
    let started = Instant::now();
    bed.start("s1");
    let mut st = bed.status("s1");
    while st["subscriber"]["state"] != "connected" && started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(200));
        st = bed.status("s1");
    }
    assert_eq!(st["subscriber"]["state"], "connected", "{}", bed.tail("s1"));
    println!("fallback: connected after {:?}", started.elapsed());
    assert_eq!(st["subscriber"]["method"], "wireguard", "{st}");
    let gws: Value =
        serde_json::from_str(&bed.cli("s1", &["gateways", "--json"]).unwrap()).unwrap();
    println!("fallback: the subscriber's stored gateways: {gws}");
    let failures = gws["gateways"][0]["failures"].as_u64().unwrap_or(0);
    assert!(
        failures >= 1,
        "the store does not count the openvpn failure: {gws}"
    );
    let log = std::fs::read_to_string(bed.log("s1")).unwrap();
    let failed = log
        .lines()
        .find(|l| l.contains("gw via openvpn: ") && l.contains(why));
    assert!(
        failed.is_some(),
        "no openvpn failure ({why}) logged:\n{log}"
    );
    println!("fallback: {}", failed.unwrap());
    assert!(bed.ping_within("s1", Duration::from_secs(10)));
    // bench/fallback.sh reads this line.
    println!(
        "fallback: Internet reached after {:.2}s",
        started.elapsed().as_secs_f64()
    );
    // Nothing of the failed openvpn attempt is left on the subscriber.
    assert!(bed.exec("s1", &["ip", "link", "show", "ovc"]).is_err());
    let client = openvpn_pid(&bed.ovpn_dir("s1").join("client"));
    assert!(
        client.is_none(),
        "the failed openvpn client still has a pid file"
    );

    unsafe { libc::kill(server, libc::SIGCONT) };
    bed.stop("s1", libc::SIGTERM);
    bed.stop("gw", libc::SIGTERM);
    bed.exec(
        "s1",
        &[
            "ip",
            "route",
            "del",
            "10.78.0.1/32",
            "dev",
            "e0",
            "proto",
            "99",
        ],
    )
    .unwrap();
    assert_same(&before[0], &bed.state("gw"), "gw state");
    assert_same(&before[1], &bed.state("s1"), "s1 state");
}

/// OpenVPN across the Babel mesh of [`mnigs_lab::scenario::Scenario`] (two hops, IPv6 link-locals,
/// discovery by Babel routes): the subscriber finds the gateway, connects by openvpn on its own,
/// gets back in after a gateway restart, and SIGTERM while connected leaves both nodes as they
/// were.
#[test]
fn openvpn_over_a_babel_mesh_and_sigterm_cleans_up() {
    if !gate("openvpn_over_a_babel_mesh_and_sigterm_cleans_up") {
        return;
    }
    use mnigs_lab::scenario::Scenario;
    use mnigs_lab::testbed::Node;
    let extra = "config openvpn 'openvpn'\n\toption interface 'ovs'\n\toption client_interface 'ovc'\n\
                 \toption directory '@DIR@/@NODE@-ovpn'\n";
    let mut s =
        Scenario::with_methods(EXE.as_ref(), 60, "auto", &["openvpn"], extra).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    let before = [s.system_state(Node::Gw), s.system_state(Node::Sub)];
    assert!(!s.ping_inet("1"), "negative control");
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let never = std::sync::atomic::AtomicBool::new(false);
    let st = s.wait_connected(Duration::from_secs(60), &never).unwrap();
    assert_eq!(st["subscriber"]["method"], "openvpn", "{st}");
    let start = Instant::now();
    let mut ok = false;
    while !ok && start.elapsed() < Duration::from_secs(10) {
        ok = s.ping_inet("1");
    }
    assert!(
        ok,
        "no ping through openvpn over the mesh\n{}",
        s.tail(Node::Sub)
    );
    // A gateway restart: the session is restored from the store, the server comes back with the
    // same CA, and the subscriber's client gets back in by itself.
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    assert!(!s.ping_inet("1"), "ping passed with the gateway down");
    s.start(Node::Gw).unwrap();
    let start = Instant::now();
    let mut back = false;
    while !back && start.elapsed() < Duration::from_secs(40) {
        back = s.ping_inet("1");
    }
    assert!(
        back,
        "no ping after the gateway restarted\n{}\n--- gw\n{}\n--- server log\n{}\n--- client log\n{}",
        s.tail(Node::Sub),
        s.tail(Node::Gw),
        std::fs::read_to_string(s.bed.dir.join("gw-ovpn/server/openvpn.log")).unwrap_or_default(),
        std::fs::read_to_string(s.bed.dir.join("sub-ovpn/client/openvpn.log")).unwrap_or_default()
    );
    println!(
        "openvpn: back {:?} after the gateway restarted",
        start.elapsed()
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    let pids = s.bed.netns_pids();
    let babeld: Vec<u32> = Node::MESH
        .iter()
        .filter_map(|n| s.bed.babeld_pid(*n))
        .collect();
    let others: Vec<&u32> = pids.iter().filter(|p| !babeld.contains(p)).collect();
    assert!(others.is_empty(), "processes left in the mesh: {others:?}");
    assert_same(&before[0], &s.system_state(Node::Gw), "gw state");
    assert_same(&before[1], &s.system_state(Node::Sub), "sub state");
}

/// One gateway serving two methods at once: s1 by openvpn, s2 by wireguard. Both methods put the
/// pool's prefix on their interface, so only per-subscriber host routes send each reply back
/// through the right tunnel.
#[test]
fn one_gateway_serves_openvpn_and_wireguard_at_once() {
    if !gate("one_gateway_serves_openvpn_and_wireguard_at_once") {
        return;
    }
    let mut bed = Bed::build();
    let before = bed.state("gw");
    bed.write_conf("gw", &["openvpn", "wireguard"], 30);
    bed.write_conf("s1", &["openvpn"], 0);
    bed.write_conf("s2", &["wireguard"], 0);
    bed.start("gw");
    bed.start("s1");
    bed.start("s2");
    for (s, m) in [("s1", "openvpn"), ("s2", "wireguard")] {
        let out = connect(&bed, s, Some(m));
        assert!(out.is_ok(), "{s}: {out:?}\n{}", bed.tail(s));
        assert_eq!(bed.status(s)["subscriber"]["method"], m);
    }
    for s in ["s1", "s2"] {
        assert!(
            bed.ping_within(s, Duration::from_secs(10)),
            "{s} cannot ping while the other method is in use too"
        );
    }
    bed.cli("s1", &["disconnect"]).unwrap();
    assert!(bed.ping("s2"), "s2 lost its tunnel when s1 left");
    bed.cli("s2", &["disconnect"]).unwrap();
    for n in ["s1", "s2", "gw"] {
        bed.stop(n, libc::SIGTERM);
    }
    assert_same(&before, &bed.state("gw"), "gw state");
}
