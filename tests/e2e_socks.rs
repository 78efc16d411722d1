//! End to end, as root: the `socks` method with the real programs (microsocks on the gateway,
//! tun2proxy on the subscriber) across the Babel mesh of [`mnigs_lab::scenario::Scenario`] (sub — relay —
//! gw — inet, two hops). The subscriber finds the gateway by itself and reaches a TCP listener
//! on the Internet host, and resolves a name at the Internet host's DNS server, both through the
//! gateway's proxy (the listener sees the gateway's uplink address: no routing, no NAT); a
//! disconnect and SIGTERM leave both nodes as they were; after the subscriber is killed, the
//! lease runs out and the gateway's server goes. The first test runs again with
//! hev-socks5-tunnel (OpenWrt's tun2socks; `MNIGS_HEV_SOCKS5_TUNNEL`, built by
//! tests/tools/build-hev-socks5-tunnel) as the subscriber's client, whose DNS is its own mapping
//! of names to addresses that the gateway resolves at the Internet host's DNS server. Skips
//! loudly without root (or without the programs); fails under MNIGS_E2E=1.

#[path = "common/e2e.rs"]
mod e2e_common;

use mnigs::sys::cmd;
use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);
/// The address the Internet host's DNS server gives every name.
const ANSWER: [u8; 4] = [192, 0, 2, 53];
const BANNER: &[u8] = b"hello from inet\n";

fn gate(test: &str) -> bool {
    e2e_common::gate_with(test, &["microsocks", "tun2proxy-bin"])
}

/// The subscriber's tun2socks program under test.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// `tun2proxy-bin` on PATH, the default of `option client`.
    Tun2proxy,
    /// hev-socks5-tunnel at `MNIGS_HEV_SOCKS5_TUNNEL`, set as `option client`.
    Hev,
}

impl Client {
    /// The config lines that select it, when `test` should run with it ([`gate`],
    /// [`gate_hev`]); `None` skips.
    fn gate(self, test: &str) -> Option<String> {
        match self {
            Client::Tun2proxy => gate(test).then(String::new),
            Client::Hev => gate_hev(test).map(|hev| format!("\toption client '{hev}'\n")),
        }
    }

    /// Its name in /proc/PID/comm (15 bytes at most).
    fn comm(self) -> &'static str {
        match self {
            Client::Tun2proxy => "tun2proxy-bin",
            Client::Hev => "hev-socks5-tunn",
        }
    }
}

/// The hev-socks5-tunnel to test (`MNIGS_HEV_SOCKS5_TUNNEL`, else the one the build script
/// left in target/), when the test should run: [`gate`] with it instead of tun2proxy; none
/// skips loudly, or fails under MNIGS_E2E=1.
fn gate_hev(test: &str) -> Option<String> {
    // Where tests/tools/build-hev-socks5-tunnel (run by .ci/deps) puts it, if not set.
    let built = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/hev-socks5-tunnel/0.1.10/hev-socks5-tunnel"
    );
    let hev = std::env::var("MNIGS_HEV_SOCKS5_TUNNEL").ok().or_else(|| {
        std::path::Path::new(built)
            .exists()
            .then(|| built.to_string())
    });
    let Some(hev) = hev else {
        assert!(
            std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
            "{test}: MNIGS_HEV_SOCKS5_TUNNEL is not set (tests/tools/build-hev-socks5-tunnel \
             builds it; MNIGS_E2E=1 forbids skipping)"
        );
        eprintln!(
            "SKIPPED {test}: MNIGS_HEV_SOCKS5_TUNNEL is not set (build it with \
             tests/tools/build-hev-socks5-tunnel)"
        );
        return None;
    };
    e2e_common::gate_with(test, &["microsocks", &hev]).then_some(hev)
}

/// A resolver configuration for the processes started in namespace `ns` from now on (`ip
/// netns exec` mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf); removed on drop.
struct NetnsResolver(std::path::PathBuf);

impl NetnsResolver {
    fn new(ns: &str, server: std::net::Ipv4Addr) -> NetnsResolver {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        let guard = NetnsResolver(dir);
        std::fs::write(
            guard.0.join("resolv.conf"),
            format!("nameserver {server}\noptions timeout:2 attempts:2\n"),
        )
        .expect("resolv.conf");
        guard
    }
}

impl Drop for NetnsResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The name the Internet host's DNS server answers with its own address in the hev test.
const INET_NAME: &str = "inet.example";

/// Runs `f` on a thread that entered network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// A DNS answer to `query` (one question): every A question gets [`ANSWER`].
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut out = query.to_vec();
    out[2] = 0x81;
    out[3] = 0x80;
    out[6..8].copy_from_slice(&[0, 1]);
    out[8..12].copy_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    out.extend_from_slice(&ANSWER);
    out
}

/// Starts, on the Internet host, a TCP listener that sends [`BANNER`] (on a free port) and a
/// DNS server over TCP on port 53; returns the port and the peers the listener saw.
fn serve_inet(s: &Scenario) -> (u16, Arc<Mutex<Vec<SocketAddr>>>) {
    let ns = s.bed.ns(Node::Inet);
    let host = Testbed::INET_HOST;
    let (tcp, dns) = in_ns(&ns, move || {
        (
            TcpListener::bind((host, 0)).expect("listener"),
            TcpListener::bind((host, 53)).expect("DNS listener"),
        )
    });
    let port = tcp.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let peers = seen.clone();
    std::thread::spawn(move || {
        for c in tcp.incoming().flatten() {
            peers.lock().unwrap().push(c.peer_addr().unwrap());
            let mut c = c;
            let _ = c.write_all(BANNER);
        }
    });
    std::thread::spawn(move || {
        for c in dns.incoming().flatten() {
            let mut c = c;
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut len = [0u8; 2];
            while c.read_exact(&mut len).is_ok() {
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if c.read_exact(&mut q).is_err() || q.len() < 12 {
                    break;
                }
                let a = dns_answer(&q);
                let mut msg = (a.len() as u16).to_be_bytes().to_vec();
                msg.extend_from_slice(&a);
                let _ = c.write_all(&msg);
            }
        }
    });
    (port, seen)
}

/// Starts, on the Internet host, a DNS server over UDP on port 53 that gives [`INET_NAME`] the
/// Internet host's address; returns the names it was asked for and by whom.
fn serve_inet_udp_dns(s: &Scenario) -> Arc<Mutex<Vec<(SocketAddr, String)>>> {
    let ns = s.bed.ns(Node::Inet);
    let host = Testbed::INET_HOST;
    let sock = in_ns(&ns, move || UdpSocket::bind((host, 53)).expect("UDP DNS"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let Some(name) = question_name(q) else {
                continue;
            };
            log.lock().unwrap().push((from, name.clone()));
            let a_question = q.get(q.len() - 4..q.len() - 2) == Some(&[0, 1][..]);
            let a = if name == INET_NAME && a_question {
                let mut a = dns_answer(q);
                let len = a.len();
                a[len - 4..].copy_from_slice(&host.octets());
                a
            } else {
                // Not an A question (no answer records), or no such name (NXDOMAIN).
                let mut a = q.to_vec();
                a[2] = 0x81;
                a[3] = if name == INET_NAME { 0x80 } else { 0x83 };
                a
            };
            let _ = sock.send_to(&a, from);
        }
    });
    asked
}

/// The name in the question of DNS message `q` (one question), dotted.
fn question_name(q: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_string());
        i += 1 + len;
    }
    q.get(i + 4)?;
    Some(labels.join("."))
}

/// Asks the DNS server at `server` (UDP, port 53) for `name`'s A record, from the calling
/// thread's namespace; the address that ends the answer.
fn ask_a(server: std::net::Ipv4Addr, name: &str) -> Result<std::net::Ipv4Addr, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, (server, 53)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
    if n < q.len() + 16 || buf[..2] != [0x12, 0x34] {
        return Err(format!("bad answer {:?}", &buf[..n]));
    }
    Ok(std::net::Ipv4Addr::new(
        buf[n - 4],
        buf[n - 3],
        buf[n - 2],
        buf[n - 1],
    ))
}

/// From sub: asks hev-socks5-tunnel's DNS mapping for [`INET_NAME`], connects to the address
/// it gives on `port` and reads the banner; returns the address and the banner.
fn mapped_name_from_sub(s: &Scenario, port: u16) -> Result<(std::net::Ipv4Addr, Vec<u8>), String> {
    let ns = s.bed.ns(Node::Sub);
    in_ns(&ns, move || {
        let ip = ask_a(mnigs::tunnel::socks::MAPDNS_ADDRESS, INET_NAME)?;
        let addr = SocketAddr::from((ip, port));
        let mut c =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut got = vec![0u8; BANNER.len()];
        c.read_exact(&mut got).map_err(|e| format!("{addr}: {e}"))?;
        Ok((ip, got))
    })
}

/// From sub: connects to the Internet host's listener and reads its banner.
fn tcp_from_sub(s: &Scenario, port: u16) -> Result<Vec<u8>, String> {
    let ns = s.bed.ns(Node::Sub);
    in_ns(&ns, move || {
        let addr = SocketAddr::from((Testbed::INET_HOST, port));
        let mut c =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut got = vec![0u8; BANNER.len()];
        c.read_exact(&mut got).map_err(|e| e.to_string())?;
        Ok(got)
    })
}

/// Whether a TCP connection from `node` to `addr` is accepted within 2 s.
fn connects(s: &Scenario, node: Node, addr: SocketAddr) -> bool {
    in_ns(&s.bed.ns(node), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
}

/// The TCP ports the gateway's SOCKS servers listen on (10800 and up).
fn socks_ports(s: &Scenario) -> Vec<u16> {
    let out = cmd::run(&["ip", "netns", "exec", &s.bed.ns(Node::Gw), "ss", "-Htln"]).unwrap();
    let mut v: Vec<u16> = out
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .filter(|p| (10800..11100).contains(p))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// From sub: asks the Internet host's DNS server (UDP, port 53) for an A record.
fn dns_from_sub(s: &Scenario) -> Result<[u8; 4], String> {
    let ns = s.bed.ns(Node::Sub);
    in_ns(&ns, || {
        ask_a(Testbed::INET_HOST, "example.net").map(|ip| ip.octets())
    })
}

/// The programs (by name) running in `node`'s namespace.
fn programs(s: &Scenario, node: Node) -> Vec<String> {
    cmd::run(&["ip", "netns", "pids", &s.bed.ns(node)])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

fn count(s: &Scenario, node: Node, program: &str) -> usize {
    programs(s, node)
        .iter()
        .filter(|p| p.as_str() == program)
        .count()
}

fn sessions(s: &Scenario) -> usize {
    let out = s.cli(Node::Gw, &["sessions", "--json"]).expect("sessions");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["sessions"].as_array().expect("list").len()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `f` until it succeeds or `limit` has passed ([`wait_for`]); its last result.
fn ok_within<T>(limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = Err("not tried".to_string());
    wait_for(limit, || {
        last = f();
        last.is_ok()
    });
    last
}

/// [`scenario`] with `more` (`\toption …\n` lines) in the socks section.
fn scenario_with(lease: u32, more: &str) -> Scenario {
    let extra = format!(
        "config socks 'socks'\n\toption interface 'mnsocks'\n\
         \toption directory '@DIR@/@NODE@-socks'\n{more}"
    );
    let s =
        Scenario::with_methods(EXE.as_ref(), lease, "auto", &["socks"], &extra).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s
}

#[test]
fn socks_reaches_tcp_and_dns_over_a_babel_mesh_and_leaves_nothing() {
    let test = "socks_reaches_tcp_and_dns_over_a_babel_mesh_and_leaves_nothing";
    reaches_tcp_and_dns_and_leaves_nothing(Client::Tun2proxy, test);
}

/// The same with hev-socks5-tunnel as the subscriber's client. DNS: sub asks hev's mapping for
/// a name, connects to the address it got, and the gateway's proxy resolves the name at the
/// Internet host's DNS server (the gateway's resolver) and connects there.
#[test]
fn socks_with_hev_socks5_tunnel_reaches_tcp_and_dns_and_leaves_nothing() {
    let test = "socks_with_hev_socks5_tunnel_reaches_tcp_and_dns_and_leaves_nothing";
    reaches_tcp_and_dns_and_leaves_nothing(Client::Hev, test);
}

/// The subscriber's hev-socks5-tunnel YAML file (present only while it starts).
fn client_yml(s: &Scenario) -> std::path::PathBuf {
    s.bed.dir.join("sub-socks/client/client.yml")
}

/// Sub two hops from gw, socks with `client`: TCP and DNS reach the Internet host through the
/// gateway's proxy; disconnect and SIGTERM leave both nodes as before.
fn reaches_tcp_and_dns_and_leaves_nothing(client: Client, test: &str) {
    let Some(more) = client.gate(test) else {
        return;
    };
    let mut s = scenario_with(60, &more);
    // hev: the gateway resolves names at the Internet host (set before its daemon starts).
    let _resolver = (client == Client::Hev)
        .then(|| NetnsResolver::new(&s.bed.ns(Node::Gw), Testbed::INET_HOST));
    let (port, seen) = serve_inet(&s);
    let asked = serve_inet_udp_dns(&s);
    let before = [s.system_state(Node::Sub), s.system_state(Node::Gw)];
    assert!(
        tcp_from_sub(&s, port).is_err(),
        "negative control: without mnigs sub cannot reach inet"
    );
    assert!(dns_from_sub(&s).is_err(), "negative control: no DNS");
    assert!(
        mapped_name_from_sub(&s, port).is_err(),
        "negative control: no DNS mapping"
    );

    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let st = s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert_eq!(st["subscriber"]["method"], "socks", "{st}");
    assert_eq!(st["subscriber"]["interface"], "mnsocks", "{st}");
    assert_eq!(
        count(&s, Node::Gw, "microsocks"),
        1,
        "{:?}",
        programs(&s, Node::Gw)
    );
    let got = ok_within(Duration::from_secs(10), || tcp_from_sub(&s, port));
    let got = got.unwrap_or_else(|e| panic!("TCP through the proxy: {e}\n{}", s.tail(Node::Sub)));
    assert_eq!(got, BANNER);
    let peers = seen.lock().unwrap().clone();
    assert!(
        !peers.is_empty()
            && peers
                .iter()
                .all(|p| p.ip() == std::net::IpAddr::V4(Testbed::GW_UPLINK)),
        "inet saw the connections from the gateway's uplink address: {peers:?}"
    );
    match client {
        Client::Tun2proxy => {
            let dns = ok_within(Duration::from_secs(10), || dns_from_sub(&s));
            assert_eq!(dns, Ok(ANSWER), "DNS through the proxy");
        }
        Client::Hev => {
            let got = ok_within(Duration::from_secs(10), || mapped_name_from_sub(&s, port));
            let (mapped, banner) = got.unwrap_or_else(|e| {
                let tail = s.tail(Node::Sub);
                panic!("a name through hev's DNS mapping and the proxy: {e}\n{tail}")
            });
            assert_eq!(banner, BANNER);
            assert_eq!(
                mapped.octets()[..2],
                mnigs::tunnel::socks::MAPDNS_NETWORK.octets()[..2],
                "an address of the mapping, not the Internet host's"
            );
            let names = asked.lock().unwrap().clone();
            assert!(
                names.iter().any(|(from, name)| name == INET_NAME
                    && from.ip() == std::net::IpAddr::V4(Testbed::GW_UPLINK)),
                "the gateway resolved the name at the Internet host's DNS server: {names:?}"
            );
            // UDP to any other DNS server does not pass (microsocks has no UDP ASSOCIATE).
            assert!(
                dns_from_sub(&s).is_err(),
                "plain UDP DNS with hev and microsocks"
            );
            // The password was never in an argv, and its file is gone once hev read it.
            let pids = cmd::run(&["ip", "netns", "pids", &s.bed.ns(Node::Sub)]).unwrap();
            let argvs: Vec<Vec<String>> = pids
                .split_whitespace()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == client.comm())
                })
                .map(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .unwrap_or_default()
                        .split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).to_string())
                        .collect()
                })
                .collect();
            assert!(
                argvs.len() == 1 && argvs[0].len() == 2 && argvs[0][1].ends_with("client.yml"),
                "hev runs with its file name only: {argvs:?}"
            );
            assert!(
                !client_yml(&s).exists(),
                "the YAML file is removed once read"
            );
        }
    }
    // The session's proxy port is its owner's alone (the gateway's firewall): the relay, a mesh
    // node without a lease, and the Internet side cannot even connect, while sub can.
    let ports = socks_ports(&s);
    assert_eq!(ports.len(), 1, "one server listening: {ports:?}");
    let at = |ip: std::net::IpAddr| SocketAddr::new(ip, ports[0]);
    let gw = [
        at(Testbed::mesh_v4(Node::Gw).into()),
        at(Testbed::mesh_v6(Node::Gw).into()),
    ];
    assert!(
        gw.iter().any(|a| connects(&s, Node::Sub, *a)),
        "control: the owner connects to its proxy port {}",
        ports[0]
    );
    for a in gw {
        assert!(
            !connects(&s, Node::Relay, a),
            "a mesh node without the session connected to {a}"
        );
    }
    assert!(
        !connects(&s, Node::Inet, at(Testbed::GW_UPLINK.into())),
        "the Internet side connected to the gateway's SOCKS port"
    );
    // The probe (a SOCKS5 login) keeps the link up: still connected after some rounds.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        s.status(Node::Sub).unwrap()["subscriber"]["state"],
        "connected",
        "{}",
        s.tail(Node::Sub)
    );

    // Disconnect: the gateway's server and the subscriber's tun2socks go, sub is as before.
    s.cli(Node::Sub, &["disconnect"]).unwrap();
    assert_eq!(
        s.system_state(Node::Sub),
        before[0],
        "disconnect leaves nothing on sub"
    );
    assert_eq!(count(&s, Node::Sub, client.comm()), 0);
    assert!(!client_yml(&s).exists());
    assert!(
        wait_for(Duration::from_secs(5), || count(&s, Node::Gw, "microsocks")
            == 0),
        "release stops the session's server: {:?}",
        programs(&s, Node::Gw)
    );
    assert_eq!(sessions(&s), 0);
    assert!(tcp_from_sub(&s, port).is_err(), "no TCP after disconnect");

    // Scan connects again; SIGTERM then leaves both nodes as they were.
    s.cli(Node::Sub, &["scan"]).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(wait_for(Duration::from_secs(10), || tcp_from_sub(&s, port).is_ok()));
    s.assert_sigterm_leaves_nothing(&[(Node::Sub, &before[0]), (Node::Gw, &before[1])]);
    assert!(!client_yml(&s).exists());
    for n in [Node::Sub, Node::Gw] {
        let left: Vec<String> = programs(&s, n)
            .into_iter()
            .filter(|p| p != "babeld")
            .collect();
        assert!(left.is_empty(), "{} runs {left:?} after SIGTERM", n.name());
    }
}

#[test]
fn socks_lease_expiry_after_sigkill_cleans_the_gateway() {
    lease_expiry_after_sigkill(
        Client::Tun2proxy,
        "socks_lease_expiry_after_sigkill_cleans_the_gateway",
    );
}

/// The same with hev-socks5-tunnel: the one the killed subscriber daemon left (with its TUN)
/// is stopped by the next daemon.
#[test]
fn socks_with_hev_socks5_tunnel_leftover_after_sigkill_is_cleaned() {
    let test = "socks_with_hev_socks5_tunnel_leftover_after_sigkill_is_cleaned";
    lease_expiry_after_sigkill(Client::Hev, test);
}

/// Sub connects with `client` and is killed: the lease expires and the gateway's server goes;
/// the next subscriber daemon removes the client the killed one left.
fn lease_expiry_after_sigkill(client: Client, test: &str) {
    let Some(more) = client.gate(test) else {
        return;
    };
    let lease = 8;
    let mut s = scenario_with(lease, &more);
    let (port, _) = serve_inet(&s);
    let sub_before = s.system_state(Node::Sub);
    s.start(Node::Gw).unwrap();
    let idle = s.configured(Node::Gw);
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(wait_for(Duration::from_secs(10), || tcp_from_sub(&s, port).is_ok()));
    assert!(s.stop(Node::Sub, libc::SIGKILL));
    let killed = Instant::now();
    assert_eq!(
        count(&s, Node::Gw, "microsocks"),
        1,
        "live right after the kill"
    );
    assert!(
        wait_for(Duration::from_secs(u64::from(lease) + 4), || {
            count(&s, Node::Gw, "microsocks") == 0
        }),
        "the expired session's server is stopped: {:?}\n{}",
        programs(&s, Node::Gw),
        s.tail(Node::Gw)
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before its time"
    );
    assert_eq!(sessions(&s), 0);
    mnigs_lab::scenario::assert_same_config(&s.configured(Node::Gw), &idle, "gw after the expiry");
    // The subscriber's tun2socks outlived its daemon; the next daemon removes it.
    assert_eq!(
        count(&s, Node::Sub, client.comm()),
        1,
        "left by the killed daemon"
    );
    s.start(Node::Sub).unwrap();
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert_eq!(
        s.system_state(Node::Sub),
        sub_before,
        "sub after a restart and SIGTERM"
    );
    assert_eq!(count(&s, Node::Sub, client.comm()), 0);
    assert!(!client_yml(&s).exists());
    assert!(s.stop(Node::Gw, libc::SIGTERM));
}

/// The gateway offers socks and wireguard, the subscriber prefers socks; the gateway's SOCKS ports
/// silently drop everything (a firewall), so socks cannot come up: the subscriber gives it up
/// within its 4 s bring-up limit and connects by wireguard, within 5 s of the first registration.
#[test]
fn socks_that_cannot_come_up_falls_back_to_the_next_method_within_5_s() {
    if !gate("socks_that_cannot_come_up_falls_back_to_the_next_method_within_5_s") {
        return;
    }
    falls_back_within_5_s("", true);
}

/// The subscriber names a hev-socks5-tunnel that is not there (the package not installed): the
/// proxy takes the login, the client cannot start, and the subscriber connects by wireguard
/// within 5 s, with no YAML file left behind.
#[test]
fn socks_with_a_missing_client_falls_back_within_5_s() {
    if !e2e_common::gate_with(
        "socks_with_a_missing_client_falls_back_within_5_s",
        &["microsocks"],
    ) {
        return;
    }
    falls_back_within_5_s("\toption client '/nonexistent/hev-socks5-tunnel'\n", false);
}

/// Gateway and subscriber with socks and wireguard (`more` in the socks section), the gateway's
/// SOCKS ports dropped if `drop_ports`: socks fails and wireguard is registered within 5 s.
fn falls_back_within_5_s(more: &str, drop_ports: bool) {
    let extra = format!(
        "config socks 'socks'\n\toption interface 'mnsocks'\n\
         \toption directory '@DIR@/@NODE@-socks'\n{more}"
    );
    let mut s = Scenario::with_methods(EXE.as_ref(), 60, "auto", &["socks", "wireguard"], &extra)
        .expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    if drop_ports {
        e2e_common::drop_tcp_to_gw(&s, "10800-11052");
    }
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    // Watch the subscriber's log for the two registrations.
    let [socks_at, failed_at, wg_at] = e2e_common::watch_log(
        &s.log(Node::Sub),
        [
            ": socks 100.127.",
            "via socks: tunnel setup failed",
            ": wireguard 100.127.",
        ],
        Duration::from_secs(40),
    );
    let (Some(a), Some(b)) = (socks_at, wg_at) else {
        panic!(
            "expected a socks then a wireguard registration:\n{}\n--- gateway:\n{}",
            s.tail(Node::Sub),
            s.tail(Node::Gw)
        );
    };
    let took = b.duration_since(a);
    println!(
        "socks given up after {:?}, wireguard registered after {took:?}",
        failed_at.map(|f| f.duration_since(a))
    );
    assert!(
        took < Duration::from_secs(5),
        "fallback took {took:?}: more than 5 s"
    );
    let st = s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert_eq!(st["subscriber"]["method"], "wireguard", "{st}");
    assert!(
        s.tail(Node::Sub).contains("via socks: tunnel setup failed"),
        "{}",
        s.tail(Node::Sub)
    );
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "wireguard carries traffic"
    );
    assert_eq!(
        count(&s, Node::Sub, "tun2proxy-bin"),
        0,
        "nothing left of socks"
    );
    assert!(!client_yml(&s).exists(), "no YAML file left");
    assert!(
        drop_ports || s.tail(Node::Sub).contains("/nonexistent/hev-socks5-tunnel"),
        "the error names the program: {}",
        s.tail(Node::Sub)
    );
    assert!(
        wait_for(Duration::from_secs(5), || count(&s, Node::Gw, "microsocks")
            == 0),
        "the socks lease was released and its server stopped"
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
}
