//! End to end, as root: the `socks` method with the real programs (microsocks on the gateway,
//! tun2proxy on the subscriber) across the Babel mesh of [`mnigs_lab::scenario::Scenario`] (sub — relay —
//! gw — inet, two hops). The subscriber finds the gateway by itself and reaches a TCP listener
//! on the Internet host, and resolves a name at the Internet host's DNS server, both through the
//! gateway's proxy (the listener sees the gateway's uplink address: no routing, no NAT); a
//! disconnect and SIGTERM leave both nodes as they were; after the subscriber is killed, the
//! lease runs out and the gateway's server goes. Skips loudly without root (or without the
//! programs); fails under MNIGS_E2E=1.

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
    in_ns(&ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["example", "net"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        sock.send_to(&q, (Testbed::INET_HOST, 53))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
        if n < q.len() + 16 || buf[..2] != [0x12, 0x34] {
            return Err(format!("bad answer {:?}", &buf[..n]));
        }
        Ok([buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]])
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

fn scenario(lease: u32) -> Scenario {
    let extra = "config socks 'socks'\n\toption interface 'mnsocks'\n\
                 \toption directory '@DIR@/@NODE@-socks'\n";
    let s =
        Scenario::with_methods(EXE.as_ref(), lease, "auto", &["socks"], extra).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s
}

#[test]
fn socks_reaches_tcp_and_dns_over_a_babel_mesh_and_leaves_nothing() {
    if !gate("socks_reaches_tcp_and_dns_over_a_babel_mesh_and_leaves_nothing") {
        return;
    }
    let mut s = scenario(60);
    let (port, seen) = serve_inet(&s);
    let before = [s.system_state(Node::Sub), s.system_state(Node::Gw)];
    assert!(
        tcp_from_sub(&s, port).is_err(),
        "negative control: without mnigs sub cannot reach inet"
    );
    assert!(dns_from_sub(&s).is_err(), "negative control: no DNS");

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
    let mut got = Err(String::new());
    assert!(
        wait_for(Duration::from_secs(10), || {
            got = tcp_from_sub(&s, port);
            got.is_ok()
        }),
        "TCP through the proxy: {got:?}\n{}",
        s.tail(Node::Sub)
    );
    assert_eq!(got.unwrap(), BANNER);
    let peers = seen.lock().unwrap().clone();
    assert!(
        !peers.is_empty()
            && peers
                .iter()
                .all(|p| p.ip() == std::net::IpAddr::V4(Testbed::GW_UPLINK)),
        "inet saw the connections from the gateway's uplink address: {peers:?}"
    );
    let mut dns = Err(String::new());
    assert!(
        wait_for(Duration::from_secs(10), || {
            dns = dns_from_sub(&s);
            dns.is_ok()
        }),
        "DNS through the proxy: {dns:?}"
    );
    assert_eq!(dns.unwrap(), ANSWER);
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

    // Disconnect: the gateway's server and the subscriber's tun2proxy go, sub is as before.
    s.cli(Node::Sub, &["disconnect"]).unwrap();
    assert_eq!(
        s.system_state(Node::Sub),
        before[0],
        "disconnect leaves nothing on sub"
    );
    assert_eq!(count(&s, Node::Sub, "tun2proxy-bin"), 0);
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
    if !gate("socks_lease_expiry_after_sigkill_cleans_the_gateway") {
        return;
    }
    let lease = 8;
    let mut s = scenario(lease);
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
    // The subscriber's tun2proxy outlived its daemon; the next daemon removes it.
    s.start(Node::Sub).unwrap();
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert_eq!(
        s.system_state(Node::Sub),
        sub_before,
        "sub after a restart and SIGTERM"
    );
    assert_eq!(count(&s, Node::Sub, "tun2proxy-bin"), 0);
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
    let extra = "config socks 'socks'\n\toption interface 'mnsocks'\n\
                 \toption directory '@DIR@/@NODE@-socks'\n";
    let mut s = Scenario::with_methods(EXE.as_ref(), 60, "auto", &["socks", "wireguard"], extra)
        .expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    let script = "add table inet mnigs_t15\n\
                  add chain inet mnigs_t15 in { type filter hook input priority 0 ; }\n\
                  add rule inet mnigs_t15 in iifname != \"lo\" tcp dport 10800-11052 drop\n";
    s.bed
        .exec_in(
            &s.bed.ns(Node::Gw),
            &["nft", "-f", "-"],
            Some(script),
            Duration::from_secs(10),
        )
        .expect("firewall");
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
    assert!(
        wait_for(Duration::from_secs(5), || count(&s, Node::Gw, "microsocks")
            == 0),
        "the socks lease was released and its server stopped"
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
}
