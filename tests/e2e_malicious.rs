//! End to end, as root: a malicious subscriber and a mesh node without a lease try to reach
//! what a gateway shares nothing of (README "Threat model"), for each tunnel method this kernel
//! runs (wireguard through wireguard-go, openvpn, route). The lab:
//!
//! ```text
//!  s1 e0 10.78.0.11 ─┐                                      lan 192.168.1.10 (the gateway's LAN)
//!  s2 e0 10.78.0.12 ─┼─ br0 10.78.0.1  gw  lan0 192.168.1.1 ─┘
//!  m  e0 10.78.0.13 ─┘  (the mesh)         wan0 198.51.100.1 ── 198.51.100.2 inet
//!                                                                lo 203.0.113.7 (the Internet)
//!                                                                lo 10.200.0.7 (private net
//!                                                                   on the WAN side)
//! ```
//!
//! `inet` and `lan` route the mesh and pool ranges back to the gateway, so any packet the
//! gateway forwarded untranslated or into the wrong place gets its answer: every "cannot" below
//! would be seen. Skips loudly without root (openvpn: without openvpn); fails under MNIGS_E2E=1.

use mnigs::sys::cmd;
use mnigs_lab::netlab::Lab;
use mnigs_lab::testbed::e2e_gate;
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const GW_MESH: &str = "10.78.0.1";
const GW_LAN: &str = "192.168.1.1";
const GW_WAN: &str = "198.51.100.1";
const GW_TUNNEL: &str = "100.127.0.1";
const LAN_HOST: &str = "192.168.1.10";
const INET_HOST: &str = "203.0.113.7";
const WAN_PRIVATE: &str = "10.200.0.7";
const RPC: u16 = 65533;

struct Bed {
    lab: Lab,
    method: &'static str,
    ns: std::collections::BTreeMap<&'static str, String>,
    pids: Vec<(String, u32)>,
    /// Extra option lines for the gateway section.
    gw_extra: String,
    /// Extra option lines for the main section.
    main_extra: String,
    /// Extra option lines for the subscribers' discovery section.
    discovery_extra: String,
    /// Tells the WireGuard interfaces of this process's labs apart (wireguard-go's control
    /// sockets are shared by all namespaces).
    tag: String,
}

impl Bed {
    fn build(label: &str, method: &'static str) -> Bed {
        Bed::build_with(label, method, None)
    }

    /// With `uplink_mbit`, a "modem" (a bridge) sits between `wan0` and `inet` and limits
    /// uploads to that rate: the uplink's bottleneck is outside the gateway.
    fn build_with(label: &str, method: &'static str, uplink_mbit: Option<u32>) -> Bed {
        let lab = Lab::new(label).unwrap();
        let mut ns = std::collections::BTreeMap::new();
        for n in ["gw", "s1", "s2", "m", "lan", "inet", "modem"] {
            if n == "modem" && uplink_mbit.is_none() {
                continue;
            }
            ns.insert(n, lab.add_mesh_ns(n).unwrap());
        }
        let bed = Bed {
            lab,
            method,
            ns,
            pids: vec![],
            gw_extra: String::new(),
            discovery_extra: String::new(),
            main_extra: String::new(),
            tag: method[..1].to_string(),
        };
        for (n, port) in [("s1", "p1"), ("s2", "p2"), ("m", "p3")] {
            bed.lab.veth(&bed.ns["gw"], port, &bed.ns[n], "e0").unwrap();
        }
        bed.lab
            .veth(&bed.ns["gw"], "lan0", &bed.ns["lan"], "e0")
            .unwrap();
        if let Some(mbit) = uplink_mbit {
            bed.lab
                .veth(&bed.ns["gw"], "wan0", &bed.ns["modem"], "g0")
                .unwrap();
            bed.lab
                .veth(&bed.ns["modem"], "i0", &bed.ns["inet"], "wan0")
                .unwrap();
            let rate = format!("{mbit}mbit");
            let mut lines = vec![
                "link add br0 type bridge".to_string(),
                "link set g0 master br0".into(),
                "link set i0 master br0".into(),
                "link set br0 up".into(),
            ];
            // Uploads: the modem's queue towards the Internet. (Downloads are limited on the
            // Internet host's own interface, see `fair_share_run`.)
            lines.push("x qdisc add dev i0 root handle 1: htb default 1".into());
            lines.push(format!(
                "x class add dev i0 parent 1: classid 1:1 htb rate {rate} ceil {rate}"
            ));
            let (ip, tc): (Vec<&String>, Vec<&String>) =
                lines.iter().partition(|l| !l.starts_with("x "));
            let ip: Vec<&str> = ip.iter().map(|l| l.as_str()).collect();
            bed.batch("modem", &ip);
            for l in tc {
                let mut argv = vec!["tc"];
                argv.extend(l[2..].split(' '));
                bed.exec("modem", &argv).unwrap();
            }
        } else {
            bed.lab
                .veth(&bed.ns["gw"], "wan0", &bed.ns["inet"], "wan0")
                .unwrap();
        }
        bed.batch(
            "gw",
            &[
                "link add br0 type bridge",
                "link set p1 master br0",
                "link set p2 master br0",
                "link set p3 master br0",
                "link set br0 up",
                "address add 10.78.0.1/24 dev br0",
                "address add 192.168.1.1/24 dev lan0",
                "address add 198.51.100.1/24 dev wan0",
                "route add default via 198.51.100.2",
            ],
        );
        for (n, a) in [("s1", "11"), ("s2", "12"), ("m", "13")] {
            bed.batch(n, &[&format!("address add 10.78.0.{a}/24 dev e0")]);
        }
        bed.batch(
            "lan",
            &[
                "address add 192.168.1.10/24 dev e0",
                "route add default via 192.168.1.1",
            ],
        );
        bed.batch(
            "inet",
            &[
                "address add 198.51.100.2/24 dev wan0",
                "address add 203.0.113.7/32 dev lo",
                "address add 10.200.0.7/32 dev lo",
                // Answers to anything the gateway forwards untranslated get back.
                "route add 10.78.0.0/24 via 198.51.100.1",
                "route add 100.127.0.0/24 via 198.51.100.1",
                "route add 192.168.1.0/24 via 198.51.100.1",
            ],
        );
        bed.exec("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        bed.exec("gw", &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])
            .unwrap();
        bed
    }

    fn batch(&self, node: &str, lines: &[&str]) {
        let input = lines.join("\n") + "\n";
        cmd::run_input(&["ip", "-n", &self.ns[node], "-batch", "-"], &input)
            .unwrap_or_else(|e| panic!("{node}: {e}"));
    }

    fn exec(&self, node: &str, argv: &[&str]) -> Result<String, String> {
        self.lab
            .exec_full(&self.ns[node], argv, None, Duration::from_secs(90))
            .map_err(|e| e.to_string())
    }

    fn conf(&self, node: &str) -> PathBuf {
        self.lab.dir.join(format!("{node}.uci"))
    }

    fn log(&self, node: &str) -> PathBuf {
        self.lab.dir.join(format!("{node}.log"))
    }

    fn write_conf(&self, node: &str) {
        let role = if node == "gw" {
            format!(
                "config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\
                 \toption lease_seconds '60'\n\toption ipv6_pool ''\n\tlist method '{}'\n\
                 \tlist mesh_interface 'br0'\n{}\n",
                self.method, self.gw_extra
            )
        } else {
            format!(
                "config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method '{}'\n\
                 \toption probe_interval_ms '500'\n\toption down_after '20'\n\n\
                 config discovery 'd'\n\toption method 'routes'\n\toption protocol '99'\n{}\n",
                self.method, self.discovery_extra
            )
        };
        let tag = &self.tag;
        let text = format!(
            "config mnigs 'main'\n\toption name '{node}'\n\toption database '{db}'\n\
             \toption log_level 'debug'\n{main_extra}\n{role}\
             config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wgc}'\n\n\
             config openvpn 'openvpn'\n\toption interface 'ovs'\n\toption client_interface 'ovc'\n\
             \toption directory '{ovpn}'\n",
            main_extra = self.main_extra,
            db = self.lab.dir.join(format!("{node}.db")).display(),
            wg = self.lab.unique_ifname(&format!("{tag}{node}g")),
            wgc = self.lab.unique_ifname(&format!("{tag}{node}c")),
            ovpn = self.lab.dir.join(format!("{node}-ovpn")).display(),
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

    fn start(&mut self, node: &str) {
        self.write_conf(node);
        let conf = self.conf(node).display().to_string();
        let pid = self
            .lab
            .spawn(
                &self.ns[node],
                &[EXE, "daemon", "-c", &conf],
                &self.log(node),
            )
            .unwrap();
        self.pids.push((node.to_string(), pid));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(node, &["status", "--json"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{node} did not come up:\n{}\n…\n{}",
            self.problems(node),
            self.tail(node)
        );
    }

    /// The error and warning lines of `node`'s log.
    fn problems(&self, node: &str) -> String {
        let log = std::fs::read_to_string(self.log(node)).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("error") || l.contains("warn") || l.contains("cannot"))
            .collect();
        lines.join("\n")
    }

    fn tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.log(node)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn connect(&self, node: &str) -> Value {
        let out = self.cli(node, &["connect", GW_MESH, "-m", self.method]);
        assert!(
            out.is_ok(),
            "{node} connect: {out:?}\n{}\ngateway:\n{}",
            self.tail(node),
            self.problems("gw")
        );
        let st = self.cli(node, &["status", "--json"]).unwrap();
        serde_json::from_str(&st).unwrap()
    }

    /// Whether `node` gets an echo reply from `dst` (three tries, so a slow lab is no "cannot").
    fn ping(&self, node: &str, dst: &str, src: Option<&str>) -> bool {
        let mut argv = vec!["ping", "-n", "-c", "1", "-W", "1"];
        if let Some(s) = src {
            argv.extend(["-I", s]);
        }
        argv.push(dst);
        (0..3).any(|_| self.exec(node, &argv).is_ok())
    }

    /// Whether a TCP connection from `node` to `dst:port` is accepted within 2 s.
    fn tcp(&self, node: &str, dst: &str, port: u16) -> bool {
        let addr: SocketAddr = format!("{dst}:{port}").parse().unwrap();
        self.lab
            .run_in(&self.ns[node], move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
            })
            .unwrap()
    }

    /// Fails naming every attempt that got through; the attempts run at once.
    fn reaches_none(&self, tries: &[(Try<'_>, &str)]) {
        let reached: Vec<&str> = std::thread::scope(|scope| {
            let handles: Vec<_> = tries
                .iter()
                .map(|(t, what)| {
                    scope.spawn(move || {
                        let got = match *t {
                            Try::Ping(node, dst, src) => self.ping(node, dst, src),
                            Try::Tcp(node, dst, port) => self.tcp(node, dst, port),
                        };
                        (got, *what)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|(got, _)| *got)
                .map(|(_, what)| what)
                .collect()
        });
        assert!(
            reached.is_empty(),
            "{} ({}): {reached:?}",
            self.method,
            self.lab.dir.display()
        );
    }

    fn pool_address(status: &Value) -> String {
        let s = &status["subscriber"];
        s["ipv4"]
            .as_str()
            .or_else(|| s["address"].as_str())
            .unwrap_or_else(|| panic!("no tunnel address in {status}"))
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }
}

/// One attempt to reach something: ping (from, to, source address) or TCP (from, to, port).
enum Try<'a> {
    Ping(&'a str, &'a str, Option<&'a str>),
    Tcp(&'a str, &'a str, u16),
}

impl Drop for Bed {
    fn drop(&mut self) {
        for (_, pid) in self.pids.drain(..) {
            self.lab.stop(pid, Duration::from_secs(10));
        }
    }
}

fn suite(label: &str, method: &'static str) {
    suite_with(label, method, "auto");
}

/// The suite with the gateway's `option nat` (`auto` picks nftables here, `iptables` the
/// iptables equivalent).
fn suite_with(label: &str, method: &'static str, nat: &str) {
    let test = format!("malicious_subscriber_{method}_{nat}");
    if !e2e_gate(&test) {
        return;
    }
    if method == "openvpn" && !(cmd::available("openvpn") && cmd::available("openssl")) {
        assert!(
            std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
            "{test}: openvpn/openssl not installed (MNIGS_E2E=1 forbids skipping)"
        );
        eprintln!("SKIPPED {test}: openvpn/openssl not installed");
        return;
    }
    if !cmd::available("conntrack") {
        assert!(
            std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
            "{test}: `conntrack` is not installed (MNIGS_E2E=1 forbids skipping)"
        );
        eprintln!("SKIPPED {test}: `conntrack` is not installed");
        return;
    }
    let mut bed = Bed::build(label, method);
    bed.gw_extra = format!("\toption nat '{nat}'\n");
    if nat == "iptables" {
        bed.tag.push('i');
    }
    // The lab itself works: the LAN reaches the Internet through the gateway's own routing,
    // and the mesh node reaches the gateway.
    bed.exec("inet", &["ip", "route", "show"]).unwrap();
    assert!(bed.ping("m", GW_MESH, None), "lab: mesh");
    bed.start("gw");
    bed.start("s1");
    bed.start("s2");
    let st1 = bed.connect("s1");
    let st2 = bed.connect("s2");
    let a1 = Bed::pool_address(&st1);
    let a2 = Bed::pool_address(&st2);
    assert_ne!(a1, a2);

    // What a subscriber is for: the Internet, the gateway's tunnel address and its RPC port.
    assert!(bed.ping("s1", INET_HOST, None), "s1 reaches the Internet");
    assert!(bed.ping("s2", INET_HOST, None), "s2 reaches the Internet");
    if method != "route" {
        // (the route method has no tunnel: the gateway keeps no pool address)
        assert!(
            bed.ping("s1", GW_TUNNEL, None),
            "s1 pings the gateway's tunnel address"
        );
        assert!(bed.tcp("s1", GW_TUNNEL, RPC), "RPC on the tunnel address");
    }
    // Finding 1: nothing that is not the Internet.
    bed.reaches_none(&[
        (Try::Ping("s1", LAN_HOST, None), "s1 reached a LAN host"),
        (
            Try::Ping("s1", GW_LAN, None),
            "s1 reached the router's LAN address",
        ),
        (
            Try::Tcp("s1", GW_LAN, RPC),
            "s1 reached a service on the LAN address",
        ),
        (
            Try::Tcp("s1", GW_WAN, RPC),
            "s1 reached a service on the WAN address",
        ),
        (
            Try::Ping("s1", WAN_PRIVATE, None),
            "s1 reached the WAN-side private net",
        ),
        (
            Try::Ping("s1", &a2, None),
            "s1 reached the other subscriber",
        ),
        (
            Try::Ping("s2", &a1, None),
            "s2 reached the other subscriber",
        ),
    ]);

    // Finding 2: a mesh node without a lease routing via the gateway gets nowhere off the mesh.
    bed.exec("m", &["ip", "route", "add", "default", "via", GW_MESH])
        .unwrap();
    // Finding 3: nor with a subscriber's pool address as its source (spoofing).
    bed.exec(
        "m",
        &["ip", "address", "add", &format!("{a1}/32"), "dev", "e0"],
    )
    .unwrap();
    bed.reaches_none(&[
        (Try::Ping("m", INET_HOST, None), "m got out without a lease"),
        (
            Try::Ping("m", LAN_HOST, None),
            "m reached the LAN without a lease",
        ),
        (Try::Ping("m", WAN_PRIVATE, None), "m reached the WAN side"),
        (
            Try::Ping("m", INET_HOST, Some(&a1)),
            "m got out with s1's address",
        ),
    ]);
    bed.exec(
        "m",
        &["ip", "address", "del", &format!("{a1}/32"), "dev", "e0"],
    )
    .unwrap();

    // Finding 4 (release flushes conntrack): s1's connections are tracked while it holds the
    // lease, and forgotten with it.
    // (s1's address now: its daemon may have registered again meanwhile, under load)
    let st: Value = serde_json::from_str(&bed.cli("s1", &["status", "--json"]).unwrap()).unwrap();
    let a1 = Bed::pool_address(&st);
    assert!(
        bed.ping("s1", INET_HOST, None),
        "s1 lost the Internet ({a1}):\n{}\ngateway:\n{}",
        bed.tail("s1"),
        bed.problems("gw")
    );
    let tracked = |bed: &Bed| {
        bed.exec("gw", &["conntrack", "-L", "-f", "ipv4", "-s", &a1])
            .unwrap_or_default()
    };
    let before = tracked(&bed);
    assert!(
        before.contains(INET_HOST),
        "positive control: {before}\n{}",
        bed.exec("gw", &["conntrack", "-L"]).unwrap_or_default()
    );

    // A former subscriber keeps nothing: after disconnect it is a mesh node like m.
    bed.cli("s1", &["disconnect"]).unwrap();
    let left = tracked(&bed);
    assert!(
        !left.contains(INET_HOST),
        "release left s1's connections: {left}"
    );
    bed.exec("s1", &["ip", "route", "replace", "default", "via", GW_MESH])
        .unwrap();
    bed.reaches_none(&[
        (
            Try::Ping("s1", LAN_HOST, None),
            "s1 kept LAN access after release",
        ),
        (
            Try::Ping("s1", INET_HOST, None),
            "s1 kept Internet access after release",
        ),
        // Finding 6: the WAN side never reaches the RPC server.
        (
            Try::Tcp("inet", GW_WAN, RPC),
            "the RPC server answers on the WAN",
        ),
    ]);
    // s2 is unaffected.
    assert!(
        bed.ping("s2", INET_HOST, None),
        "s2 still reaches the Internet"
    );
    // The freed address rests: s1 coming back gets neither its old address nor s2's.
    let a3 = Bed::pool_address(&bed.connect("s1"));
    assert!(a3 != a1 && a3 != a2, "{a3} handed out again at once");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bed.ping("s1", INET_HOST, None) {
        assert!(
            Instant::now() < deadline,
            "s1 not back on the Internet with {a3}:\n{}\ngateway:\n{}",
            bed.tail("s1"),
            bed.problems("gw")
        );
    }
}

/// Item 4: a subscriber-only node with a WAN of its own (no firewall of ours there) answers
/// RPC on its mesh interface and to its local CLI, and never on the WAN, also when the WAN
/// side aims at its mesh address.
#[test]
fn a_subscriber_only_node_never_answers_on_its_wan() {
    let test = "a_subscriber_only_node_never_answers_on_its_wan";
    if !e2e_gate(test) {
        return;
    }
    let mut bed = Bed::build("malsw", "wireguard");
    bed.discovery_extra = "\tlist interface 'e0'\n".into();
    bed.lab
        .veth(&bed.ns["s1"], "wan1", &bed.ns["inet"], "s1w")
        .unwrap();
    bed.batch("s1", &["address add 198.51.101.1/24 dev wan1"]);
    bed.batch(
        "inet",
        &[
            "address add 198.51.101.2/24 dev s1w",
            "route add 10.78.0.11/32 via 198.51.101.1",
        ],
    );
    // The lab works: the WAN side reaches s1 (echo), the mesh too.
    assert!(bed.ping("inet", "198.51.101.1", None), "lab: s1's WAN");
    assert!(
        bed.ping("inet", "10.78.0.11", None),
        "lab: s1's mesh address from the WAN"
    );
    // start() waits for the local CLI's `status`: the owner's path works.
    bed.start("s1");
    assert!(
        bed.tcp("m", "10.78.0.11", RPC),
        "a mesh caller is not answered"
    );
    let info = bed.cli("s1", &["status", "--json"]);
    assert!(info.is_ok(), "local CLI: {info:?}");
    bed.reaches_none(&[
        (
            Try::Tcp("inet", "198.51.101.1", RPC),
            "the RPC server answers on s1's WAN address",
        ),
        (
            Try::Tcp("inet", "10.78.0.11", RPC),
            "the RPC server answers the WAN side on s1's mesh address",
        ),
    ]);
    // Still there for the mesh afterwards.
    assert!(
        bed.tcp("m", "10.78.0.11", RPC),
        "a mesh caller is not answered"
    );
}

#[test]
fn malicious_subscriber_wireguard() {
    suite("malwg", "wireguard");
}

#[test]
fn malicious_subscriber_openvpn() {
    suite("malov", "openvpn");
}

#[test]
fn malicious_subscriber_route() {
    suite("malrt", "route");
}

#[test]
fn malicious_subscriber_wireguard_iptables() {
    suite_with("malwgi", "wireguard", "iptables");
}

#[test]
fn malicious_subscriber_route_iptables() {
    suite_with("malrti", "route", "iptables");
}

/// Throughput in Mbit/s that reached the receiver, from an `iperf3 -J` client's report (TCP:
/// `sum_received`; UDP: the sent rate less the datagrams lost).
fn mbits(json: &str) -> f64 {
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("iperf3: {e}: {json}"));
    let end = &v["end"];
    if let Some(bps) = end["sum_received"]["bits_per_second"].as_f64() {
        return bps / 1e6;
    }
    let sum = &end["sum"];
    let bps = sum["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {json}"));
    bps * (1.0 - sum["lost_percent"].as_f64().unwrap_or(0.0) / 100.0) / 1e6
}

/// One fair-share measurement over a 20 Mbit/s uplink (both ways): B moves data with one TCP
/// stream alone, then while A floods (8 TCP streams, or UDP at 40 Mbit/s), downloads (`-R`)
/// or uploads. Returns B's Mbit/s (alone, during the TCP flood, during the UDP flood) and A's
/// during each flood.
/// The fair-share lab: a 20 Mbit/s uplink both ways, iperf3 servers on ports 5201-5203 of the
/// Internet host, a gateway sharing `shaped_kbit` (0: no shaping) both ways, both subscribers
/// connected.
fn fair_share_bed(method: &'static str, label: &str, shaped_kbit: u32) -> Bed {
    let mut bed = Bed::build_with(label, method, Some(20));
    // Downloads: 20 Mbit/s leave the Internet side towards the gateway (as in the issue's setup).
    for line in [
        "qdisc add dev wan0 root handle 1: htb default 1",
        "class add dev wan0 parent 1: classid 1:1 htb rate 20mbit ceil 20mbit",
    ] {
        let mut argv = vec!["tc"];
        argv.extend(line.split(' '));
        bed.exec("inet", &argv).unwrap();
    }
    bed.gw_extra =
        format!("\toption bandwidth_down '{shaped_kbit}'\n\toption bandwidth_up '{shaped_kbit}'\n");
    let log = bed.lab.dir.join("iperf.log");
    for port in ["5201", "5202", "5203"] {
        bed.lab
            // Bound, so that datagrams are answered from the address they were sent to.
            .spawn(
                &bed.ns["inet"],
                &["iperf3", "-s", "-p", port, "-B", INET_HOST],
                &log,
            )
            .unwrap();
    }
    bed.start("gw");
    bed.start("s1");
    bed.start("s2");
    bed.connect("s1");
    bed.connect("s2");
    std::thread::sleep(Duration::from_millis(500));
    bed
}

fn fair_share_run(method: &'static str, label: &str, shaped_kbit: u32, download: bool) -> [f64; 5] {
    let bed = fair_share_bed(method, label, shaped_kbit);
    let dir = if download { "-R" } else { "" };
    // B's transfer; a run whose control connection stalls is tried again (a loaded machine).
    let b = |bed: &Bed, secs: &str| {
        let mut argv = vec![
            "iperf3",
            "-c",
            INET_HOST,
            "-p",
            "5202",
            "-J",
            "-t",
            secs,
            "-O",
            "1",
            "--connect-timeout",
            "3000",
        ];
        if download {
            argv.push(dir);
        }
        for _ in 0..3 {
            match bed
                .lab
                .exec_full(&bed.ns["s2"], &argv, None, Duration::from_secs(25))
            {
                Ok(out) => return mbits(&out),
                Err(e) => eprintln!("B's iperf3 failed, again: {e}"),
            }
        }
        panic!("B's iperf3 failed three times");
    };
    let alone = b(&bed, "6");
    let flood = |args: &[&str]| {
        let ns = bed.ns["s1"].clone();
        let mut argv = vec!["ip", "netns", "exec", &ns, "iperf3", "-c", INET_HOST];
        argv.extend_from_slice(args);
        argv.extend(["-J", "-t", "10"]);
        if download {
            argv.push(dir);
        }
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let a = std::thread::spawn(move || cmd::run_full(&argv, None, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_secs(2));
        let during = b(&bed, "6");
        let a = match a.join().unwrap() {
            Ok(o) => mbits(&o),
            Err(e) => {
                eprintln!("flood failed: {e}");
                -1.0
            }
        };
        (during, a)
    };
    let (tcp, a_tcp) = flood(&["-p", "5201", "-P", "8"]);
    // Datagrams that fit the tunnel unfragmented.
    let (udp, a_udp) = flood(&["-p", "5203", "-u", "-b", "40M", "-l", "1200"]);
    [alone, tcp, udp, a_tcp, a_udp]
}

/// The fair-share bench (issue 21, item 3): `bench/fairshare.sh` runs it. Prints B's share of
/// the 20 Mbit/s uplink while A floods, without shaping and with `bandwidth_down`/`bandwidth_up`
/// `SHAPED_KBIT` (default 19000; a little below the uplink, so the queue forms on the gateway).
#[test]
#[ignore = "a benchmark: bench/fairshare.sh"]
fn fair_share_bench() {
    if !e2e_gate("fair_share_bench") || !cmd::available("iperf3") {
        eprintln!("SKIPPED fair_share_bench: needs root, the e2e programs and iperf3");
        return;
    }
    let method: &'static str = match std::env::var("METHOD").as_deref() {
        Ok("route") => "route",
        Ok("openvpn") => "openvpn",
        _ => "wireguard",
    };
    // QUICK=1: the shaped download case only (the one whose target is hard to meet).
    let quick = std::env::var("QUICK").as_deref() == Ok("1");
    for download in [true, false] {
        if quick && !download {
            continue;
        }
        let shaped: u32 = std::env::var("SHAPED_KBIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(19000);
        for (label, kbit) in [("fsoff", 0), ("fson", shaped)] {
            if quick && kbit == 0 {
                continue;
            }
            let [alone, tcp, udp, a_tcp, a_udp] = fair_share_run(method, label, kbit, download);
            println!(
                "FAIRSHARE {method} {} shaped {kbit} kbit/s: B alone {alone:.1} Mbit/s; \
                 A 8 TCP streams: B {tcp:.1} ({:.0} % of 20), A {a_tcp:.1}; \
                 A UDP 40M: B {udp:.1} ({:.0} % of 20), A {a_udp:.1}",
                if download { "download" } else { "upload" },
                tcp / 20.0 * 100.0,
                udp / 20.0 * 100.0
            );
        }
    }
}

/// Bytes sent by each subscriber class (`7e:1xx` under `7e:2`) of our qdisc on any interface of
/// the gateway, from `tc -s class show`, keyed by "interface class".
fn session_classes(bed: &Bed) -> std::collections::BTreeMap<String, u64> {
    let links = bed.exec("gw", &["ip", "-o", "link", "show"]).unwrap();
    let mut classes = std::collections::BTreeMap::new();
    for dev in links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|d| d.split('@').next().unwrap())
    {
        let shown = bed
            .exec("gw", &["tc", "-s", "class", "show", "dev", dev])
            .unwrap_or_default();
        let mut current: Option<String> = None;
        for line in shown.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"class") {
                current = (words.get(2).is_some_and(|c| c.starts_with("7e:1"))
                    && words.get(4) == Some(&"7e:2"))
                .then(|| format!("{dev} {}", words[2]));
            } else if let (Some(key), Some(&"Sent")) = (&current, words.first()) {
                let sent = words.get(1).and_then(|b| b.parse().ok()).unwrap_or(0);
                classes.insert(key.clone(), sent);
                current = None;
            }
        }
    }
    classes
}

/// The fair-share bench's short form (`bench/fairshare.sh --short`, run by CI): correctness,
/// not the share. With shaping on, each connected subscriber has its class under our qdisc on
/// the WAN (uploads) and where its downloads leave; both subscribers, moving data at once (3 s
/// each way), get data through, and every one of those classes carried some of it. Prints
/// `FAIRSHARE-CHECK ok` at the end.
#[test]
#[ignore = "a benchmark's short form: bench/fairshare.sh --short"]
fn fair_share_short() {
    let required = std::env::var_os("MNIGS_E2E").is_some();
    if !e2e_gate("fair_share_short") || !cmd::available("iperf3") {
        assert!(
            !required,
            "fair_share_short needs iperf3 (MNIGS_E2E is set)"
        );
        eprintln!("SKIPPED fair_share_short: needs root, the e2e programs and iperf3");
        return;
    }
    let method: &'static str = match std::env::var("METHOD").as_deref() {
        Ok("route") => "route",
        Ok("openvpn") => "openvpn",
        _ => "wireguard",
    };
    let bed = fair_share_bed(method, "fsck", 19000);
    let before = session_classes(&bed);
    let wan: Vec<&String> = before.keys().filter(|k| k.starts_with("wan0 ")).collect();
    let down: Vec<&String> = before.keys().filter(|k| !k.starts_with("wan0 ")).collect();
    assert_eq!(wan.len(), 2, "upload classes on wan0: {before:?}");
    assert_eq!(down.len(), 2, "download classes: {before:?}");
    for download in [true, false] {
        let run = |node: &str, port: &str| {
            let ns = bed.ns[node].clone();
            let mut argv: Vec<String> = ["ip", "netns", "exec", &ns, "iperf3", "-c", INET_HOST]
                .iter()
                .chain(&["-p", port, "-J", "-t", "3", "--connect-timeout", "3000"])
                .map(|s| s.to_string())
                .collect();
            if download {
                argv.push("-R".into());
            }
            std::thread::spawn(move || cmd::run_full(&argv, None, Duration::from_secs(20)))
        };
        let (a, b) = (run("s1", "5201"), run("s2", "5202"));
        let way = if download { "download" } else { "upload" };
        for (who, t) in [("A", a), ("B", b)] {
            let out = t
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("{who}'s {way}: {e}"));
            let m = mbits(&out);
            println!("FAIRSHARE-CHECK {method} {way}: {who} {m:.1} Mbit/s");
            assert!(m > 0.1, "{who}'s {way} moved {m} Mbit/s");
        }
    }
    let after = session_classes(&bed);
    println!("FAIRSHARE-CHECK classes (bytes sent): {after:?}");
    for (class, sent) in &before {
        let now = after.get(class).copied().unwrap_or(0);
        assert!(
            now > sent + 100_000,
            "class {class} carried {} bytes (all: {after:?})",
            now.saturating_sub(*sent)
        );
    }
    println!("FAIRSHARE-CHECK ok");
}

/// One `nodeInfo` from `node` to the gateway's mesh address; its latency in ms.
fn node_info_ms(bed: &Bed, node: &str) -> f64 {
    bed.lab
        .run_in(&bed.ns[node], || {
            use std::io::{Read, Write};
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"nodeInfo"}"#;
            let req = format!(
                "POST /jsonrpc HTTP/1.1\r\nHost: {GW_MESH}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let t = Instant::now();
            let addr: SocketAddr = format!("{GW_MESH}:{RPC}").parse().unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.contains("\"result\""), "{out}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .unwrap()
}

/// (median, 90th percentile, max) of `n` nodeInfo latencies from s1.
fn node_info_stats(bed: &Bed, n: usize) -> (f64, f64, f64) {
    let mut v: Vec<f64> = (0..n).map(|_| node_info_ms(bed, "s1")).collect();
    v.sort_by(f64::total_cmp);
    (v[n / 2], v[n * 9 / 10], v[n - 1])
}

/// Issue 21 item 5: `nodeInfo` latency at an OpenVPN gateway, idle and while 4 sources send
/// junk certificate requests (they pass the PEM check and fail signing) as fast as they can.
/// Run by bench/openvpn_lock.sh; prints `OVLOCK` lines.
#[test]
#[ignore = "a benchmark: bench/openvpn_lock.sh"]
fn openvpn_lock_bench() {
    if !e2e_gate("openvpn_lock_bench") {
        return;
    }
    let mut bed = Bed::build("ovlk", "openvpn");
    bed.main_extra = "\toption rate_limit '0'\n".into();
    bed.start("gw");
    // bench/openvpn_lock.sh --short asks for fewer calls.
    let calls: usize = std::env::var("MNIGS_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let junk = r#"{"jsonrpc":"2.0","id":1,"method":"requestConnection","params":{"name":"j","method":"openvpn","options":{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIBAzCBqgIBADAbMRkwFwYDVQQD\nQUJD+/==\n-----END CERTIFICATE REQUEST-----\n"}}}"#;
    let body = bed.lab.dir.join("junk.json");
    std::fs::write(&body, junk).unwrap();
    for _ in 0..20 {
        node_info_ms(&bed, "s1");
    }
    let (med, p90, max) = node_info_stats(&bed, calls);
    println!("OVLOCK idle: nodeInfo median {med:.2} ms, p90 {p90:.2} ms, max {max:.2} ms");
    let url = format!("http://{GW_MESH}:{RPC}/jsonrpc");
    // Refusals are counted from the first junk request on (a short run measures only briefly).
    let before = std::fs::read_to_string(bed.log("gw")).unwrap_or_default();
    let mut loops = vec![];
    for i in 0..4 {
        let src = format!("10.78.0.{}", 21 + i);
        bed.batch("m", &[&format!("address add {src}/24 dev e0")]);
        let script = format!(
            "while :; do curl -s --max-time 5 -o /dev/null --interface {src} -H 'Content-Type: application/json' \
             --data-binary @{} {url}; done",
            body.display()
        );
        let pid = bed
            .lab
            .spawn(
                &bed.ns["m"],
                &["bash", "-c", &script],
                &bed.lab.dir.join(format!("junk{i}.log")),
            )
            .unwrap();
        loops.push(pid);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (med, p90, max) = node_info_stats(&bed, calls);
    let after = std::fs::read_to_string(bed.log("gw")).unwrap_or_default();
    let refused = after[before.len().min(after.len())..]
        .matches("cannot configure session")
        .count();
    println!(
        "OVLOCK 4 junk CSR loops: nodeInfo median {med:.2} ms, p90 {p90:.2} ms, max {max:.2} ms \
         ({refused} junk requests refused since the loops started)"
    );
    for pid in loops {
        // SAFETY: a signal to a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(
        refused > 0,
        "no junk request reached the gateway while nodeInfo was measured"
    );
}
