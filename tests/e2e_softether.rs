//! End to end, as root: the `softether` method with Debian's SoftEther VPN server (in gw's
//! namespace) and client (in sub's), across the Babel mesh of [`mnigs_lab::scenario::Scenario`] (sub —
//! relay — gw — inet). The subscriber pings the Internet host through a hub user made for its
//! session; disconnect leaves sub as before and deletes the user; after the subscriber is killed
//! the lease expires and the user and its session go; SIGTERM leaves both nodes as they were.
//!
//! SoftEther keeps its state in fixed host paths (/var/lib/softether, /run/softether): this test
//! creates those directories, and removes the server's and client's config files it made, so
//! it must not run beside a real SoftEther on the same host. Skips loudly without root (or without
//! the programs); fails under MNIGS_E2E=1.

#[path = "common/e2e.rs"]
mod e2e_common;

use mnigs::sys::cmd;
use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);
/// SoftEther's state is per host: one test at a time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const SERVER: &str = "/usr/libexec/softether/vpnserver/vpnserver";
const CLIENT: &str = "/usr/libexec/softether/vpnclient/vpnclient";
const VPNCMD: &str = "/usr/libexec/softether/vpncmd/vpncmd";
const ADMIN_PASSWORD: &str = "mnigsTestAdmin1";
const STATE_DIRS: [&str; 3] = ["/var/lib/softether", "/run/softether", "/var/log/softether"];

fn gate(test: &str) -> bool {
    e2e_common::gate_with(test, &[SERVER, CLIENT, VPNCMD])
}

/// Removes the SoftEther state files this test's server and client wrote.
fn clear_state() {
    for d in STATE_DIRS {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

/// Whether a TCP connection from `node` to `addr` is accepted within 2 s (from a thread that
/// entered the node's namespace).
fn connects(s: &Scenario, node: Node, addr: SocketAddr) -> bool {
    let path = format!("/run/netns/{}", s.bed.ns(node));
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
    .join()
    .expect("thread in the namespace")
}

fn server_cmd(s: &Scenario, command: &[&str]) -> Result<String, String> {
    let pw = format!("/PASSWORD:{ADMIN_PASSWORD}");
    let mut argv = vec![
        VPNCMD,
        "127.0.0.1:5555",
        "/SERVER",
        &pw,
        "/ADMINHUB:mnigs",
        "/CMD",
    ];
    argv.extend_from_slice(command);
    s.bed.exec(Node::Gw, &argv).map_err(|e| e.to_string())
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

/// Waits (40 s at most) until sub reaches the Internet through its tunnel, and says how long that
/// took and how many new sessions sub had asked for by then because one carried nothing. (A
/// SoftEther client stopped while it retried a session the gateway had ended makes one or two
/// sessions that carry nothing: the hub lists them with 0 bytes and the client's TCP connection to
/// the server is gone moments after they were established. The subscriber takes its tunnel down
/// before releasing, so only a new daemon after a killed one meets that here. The daemon then asks
/// its gateway anew, about every 3.5 s; the wait covers `FRUITLESS` such sessions in a row and the
/// first back-off after them.) On failure: both logs' tails, the hub's sessions and MAC table,
/// sub's addresses and neighbours.
fn online(s: &Scenario, what: &str) {
    let start = Instant::now();
    let ok = s.ping_within(Duration::from_secs(40));
    let log = std::fs::read_to_string(s.log(Node::Sub)).unwrap_or_default();
    let anew = log
        .lines()
        .filter(|l| l.contains("warn: ") && l.contains("new tunnel never did: asking it anew"))
        .count();
    println!(
        "softether: {what}: online after {:?}; new sessions asked for because one carried \
         nothing, in this subscriber's log so far: {anew}",
        start.elapsed()
    );
    if !ok {
        let sub = |argv: &[&str]| {
            s.bed
                .exec(Node::Sub, argv)
                .unwrap_or_else(|e| e.to_string())
        };
        panic!(
            "{what}: no ping\n{}\n--- gw\n{}\n--- hub sessions\n{}\n--- hub MAC table\n{}\n\
             --- sub addresses\n{}\n--- sub neighbours\n{}",
            s.tail(Node::Sub),
            s.tail(Node::Gw),
            server_cmd(s, &["SessionList"]).unwrap_or_else(|e| e),
            server_cmd(s, &["MacTable"]).unwrap_or_else(|e| e),
            sub(&["ip", "-br", "addr"]),
            sub(&["ip", "neigh"]),
        );
    }
}

/// The Babel-mesh scenario with both daemons listing `methods`, a SoftEther server running in
/// gw's namespace (admin password set) and a client in sub's.
fn with_softether(methods: &[&str], lease: u32) -> Scenario {
    for d in STATE_DIRS {
        std::fs::create_dir_all(d).unwrap();
    }
    clear_state();
    let extra = format!(
        "config softether 'softether'\n\toption vpncmd '{VPNCMD}'\n\toption admin_password '{ADMIN_PASSWORD}'\n\
         \toption device 'mnse'\n\toption client_nic 'mnse'\n\toption directory '@DIR@/@NODE@-se'\n"
    );
    let s = Scenario::with_methods(EXE.as_ref(), lease, "auto", methods, &extra).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.bed
        .spawn(
            Node::Gw,
            &[SERVER, "execsvc"],
            &s.bed.dir.join("vpnserver.log"),
        )
        .unwrap();
    s.bed
        .spawn(
            Node::Sub,
            &[CLIENT, "execsvc"],
            &s.bed.dir.join("vpnclient.log"),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            s.bed
                .exec(
                    Node::Gw,
                    &[
                        VPNCMD,
                        "127.0.0.1:5555",
                        "/SERVER",
                        "/CMD",
                        "ServerPasswordSet",
                        ADMIN_PASSWORD,
                    ],
                )
                .is_ok()
        }),
        "the SoftEther server answers"
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            s.bed
                .exec(
                    Node::Sub,
                    &[VPNCMD, "localhost", "/CLIENT", "/CMD", "AccountList"],
                )
                .is_ok()
        }),
        "the SoftEther client answers"
    );
    s
}

#[test]
fn softether_over_a_babel_mesh_release_expiry_and_sigterm() {
    if !gate("softether_over_a_babel_mesh_release_expiry_and_sigterm") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let lease = 8;
    let mut s = with_softether(&["softether"], lease);
    let before = [s.system_state(Node::Sub), s.system_state(Node::Gw)];
    assert!(!s.ping_inet("1"), "negative control");

    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let st = s.wait_connected(Duration::from_secs(40), &NEVER).unwrap();
    assert_eq!(st["subscriber"]["method"], "softether", "{st}");
    assert_eq!(st["subscriber"]["interface"], "vpn_mnse", "{st}");
    online(&s, "first connection");
    let users = server_cmd(&s, &["UserList"]).unwrap();
    assert!(users.contains("mn647f0002"), "{users}");
    // The gateway's firewall: the mesh reaches the server's VPN port, not its admin port or its
    // other listeners (which the server opens on every address).
    let gw = std::net::IpAddr::from(Testbed::mesh_v4(Node::Gw));
    assert!(
        connects(&s, Node::Relay, SocketAddr::new(gw, 443)),
        "control: the mesh reaches SoftEther's port 443"
    );
    for port in [992, 1194, 5555] {
        assert!(
            !connects(&s, Node::Relay, SocketAddr::new(gw, port)),
            "the mesh reached SoftEther's port {port}"
        );
    }

    // The gateway daemon is killed and restarted: it finds its hub and bridge and makes the
    // restored session's user anew (new password); the established SoftEther session survives
    // (the server keeps it), so traffic flows on.
    assert!(s.stop(Node::Gw, libc::SIGKILL));
    s.start(Node::Gw).unwrap();
    let back = Instant::now();
    assert!(
        wait_for(Duration::from_secs(40), || s.ping_inet("1")),
        "no ping after the gateway restarted\n{}\n--- gw\n{}",
        s.tail(Node::Sub),
        s.tail(Node::Gw)
    );
    println!(
        "softether: back {:?} after the gateway was killed and restarted",
        back.elapsed()
    );

    // Disconnect: the user goes, sub is as before.
    s.cli(Node::Sub, &["disconnect"]).unwrap();
    assert_eq!(
        s.system_state(Node::Sub),
        before[0],
        "disconnect leaves nothing on sub"
    );
    let users = server_cmd(&s, &["UserList"]).unwrap();
    assert!(
        !users.contains("mn647f0002"),
        "release deletes the user: {users}"
    );
    assert!(!s.ping_inet("1"));

    // Again, then the subscriber is killed: the lease runs out, the user and its session go.
    s.cli(Node::Sub, &["scan"]).unwrap();
    s.wait_connected(Duration::from_secs(40), &NEVER).unwrap();
    online(&s, "second connection");
    // The released address rests (the gateway's quarantine): this session has another one, so
    // look for any pool user (`mn647f…`), not the first one's name.
    let users = server_cmd(&s, &["UserList"]).unwrap();
    assert!(
        users.contains("mn647f"),
        "a user for the new session: {users}"
    );
    assert!(s.stop(Node::Sub, libc::SIGKILL));
    assert!(
        wait_for(Duration::from_secs(u64::from(lease) + 5), || {
            server_cmd(&s, &["UserList"]).is_ok_and(|u| !u.contains("mn647f"))
        }),
        "expiry deletes the user\n{}",
        s.tail(Node::Gw)
    );
    // The user goes first, then its session (the client keeps retrying, and is refused).
    assert!(
        wait_for(Duration::from_secs(5), || {
            server_cmd(&s, &["SessionList"]).is_ok_and(|l| !l.to_lowercase().contains("mn647f"))
        }),
        "expiry disconnects the session: {}",
        server_cmd(&s, &["SessionList"]).unwrap_or_default()
    );
    assert!(!s.ping_inet("1"), "no Internet after the expiry");
    // The next subscriber daemon removes what the killed one left; SIGTERM leaves both as before.
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(40), &NEVER).unwrap();
    online(&s, "after the subscriber's restart");
    s.assert_sigterm_leaves_nothing(&[(Node::Sub, &before[0]), (Node::Gw, &before[1])]);
    let _ = cmd::available("ip");
    drop(s);
    clear_state();
}

/// The gateway offers softether and wireguard, the subscriber prefers softether; the gateway's
/// SoftEther port silently drops everything from the mesh, so no session comes up: the subscriber
/// gives softether up within its 3 s bring-up limit and connects by wireguard within 5 s.
#[test]
fn softether_that_cannot_come_up_falls_back_to_the_next_method_within_5_s() {
    if !gate("softether_that_cannot_come_up_falls_back_to_the_next_method_within_5_s") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = with_softether(&["softether", "wireguard"], 60);
    e2e_common::drop_tcp_to_gw(&s, "443");
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let [first, next] = e2e_common::watch_log(
        &s.log(Node::Sub),
        [": softether 100.127.", ": wireguard 100.127."],
        Duration::from_secs(40),
    );
    let (Some(a), Some(b)) = (first, next) else {
        panic!(
            "expected a softether then a wireguard registration:\n{}",
            s.tail(Node::Sub)
        );
    };
    let took = b.duration_since(a);
    println!("softether given up, wireguard registered after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "fallback took {took:?}: more than 5 s"
    );
    let st = s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert_eq!(st["subscriber"]["method"], "wireguard", "{st}");
    assert!(
        s.ping_within(Duration::from_secs(5)),
        "wireguard carries traffic"
    );
    assert!(
        s.bed
            .exec(Node::Sub, &["ip", "link", "show", "dev", "vpn_mnse"])
            .is_err(),
        "nothing left of softether on sub"
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    drop(s);
    clear_state();
}

/// A SoftEther server at the gateway's address that is not the one the grant names gets no
/// session: here the gateway's own server takes another certificate while the daemon still hands
/// out the old one (as an attacker's server on the path would). The client checks the grant's
/// certificate, so it never logs in again and no traffic flows (without the check it would
/// reconnect at once). When the gateway daemon restarts with the new certificate, that is a
/// changed key at a pinned address: refused, until the operator connects to it by address.
#[test]
fn a_softether_server_with_another_certificate_gets_no_session() {
    if !gate("a_softether_server_with_another_certificate_gets_no_session") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = with_softether(&["softether"], 60);
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let st = s.wait_connected(Duration::from_secs(40), &NEVER).unwrap();
    assert_eq!(st["subscriber"]["method"], "softether", "{st}");
    online(&s, "connection to the gateway's server");
    let gw = st["subscriber"]["gateway"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    server_cmd(&s, &["ServerCertRegenerate", "impostor"]).expect("new server certificate");
    let listing = server_cmd(&s, &["SessionList"]).unwrap();
    let user = mnigs::tunnel::softether::user_name(std::net::Ipv4Addr::new(100, 127, 0, 2));
    let sessions = mnigs::tunnel::softether::sessions_of(&listing, &user);
    assert!(!sessions.is_empty(), "{listing}");
    for session in &sessions {
        server_cmd(&s, &["SessionDisconnect", session]).unwrap();
    }
    // For 15 s the client tries again (the lease is still good), with the grant's certificate.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let listing = server_cmd(&s, &["SessionList"]).unwrap_or_default();
        assert!(
            !listing.to_lowercase().contains("mn647f"),
            "a session with a server of another certificate: {listing}\n{}",
            s.tail(Node::Sub)
        );
        assert!(!s.ping_inet("1"), "traffic through the other server");
    }

    // The gateway itself now presents the new certificate: a changed key at a pinned address.
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    s.start(Node::Gw).unwrap();
    s.cli(Node::Sub, &["disconnect"]).unwrap();
    s.cli(Node::Sub, &["scan"]).unwrap();
    assert!(
        wait_for(Duration::from_secs(40), || std::fs::read_to_string(
            s.log(Node::Sub)
        )
        .is_ok_and(|l| l.contains("pinned at first contact"))),
        "the new certificate was not refused as a changed key\n{}",
        s.tail(Node::Sub)
    );
    assert!(!s.ping_inet("1"));
    // The operator accepts it by connecting to the gateway by address.
    assert!(!gw.is_empty(), "{st}");
    s.cli(Node::Sub, &["connect", &gw]).expect("mnigs connect");
    assert!(
        s.ping_within(Duration::from_secs(20)),
        "no traffic after the operator accepted the new certificate\n{}",
        s.tail(Node::Sub)
    );
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    drop(s);
    clear_state();
}
