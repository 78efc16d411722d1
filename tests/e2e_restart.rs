//! Gateway restarts under two live subscribers, as root: the subscriber node and the relay node
//! (a second subscriber, one hop from the gateway) ping the Internet host continuously while the
//! gateway is stopped with SIGTERM (`keep_sessions '1'`, the default) and with SIGKILL, then
//! started again 2 s later (longer than the subscribers take to call a silent path down). Both
//! get their traffic back within the lease with their sessions unchanged and nobody registering
//! by hand; the longest gap between answered pings is printed. With
//! `keep_sessions '0'` SIGTERM releases the sessions and the subscribers register anew by themselves.

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, Testbed, e2e_gate};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);
const LEASE: u32 = 30;

/// A `ping -D` running in `node`'s namespace towards the Internet host, logging timestamped replies.
struct Pinger {
    pid: u32,
    log: PathBuf,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Pinger {
    fn start(s: &Scenario, node: Node) -> Pinger {
        let log = s.bed.dir.join(format!("ping-{}.log", node.name()));
        let target = Testbed::INET_HOST.to_string();
        let argv = ["ping", "-n", "-D", "-i", "0.1", "-W", "1", &target];
        let pid = s.bed.spawn(node, &argv, &log).unwrap();
        Pinger { pid, log }
    }

    /// Unix times of the answered pings.
    fn answers(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect()
    }

    /// The last lines of the ping output.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn answered_since(&self, t: f64) -> bool {
        self.answers().iter().any(|&a| a > t)
    }

    /// The longest time without an answered ping from `from` on.
    fn longest_gap(&self, from: f64) -> Duration {
        let mut last = from;
        let mut gap: f64 = 0.0;
        for t in self.answers().into_iter().filter(|&t| t > from) {
            gap = gap.max(t - last);
            last = t;
        }
        Duration::from_secs_f64(gap)
    }
}

fn sids(s: &Scenario) -> Vec<String> {
    let out = s.cli(Node::Gw, &["sessions", "--json"]).expect("sessions");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let mut ids: Vec<String> = v["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["sid"].as_str().unwrap_or("?").to_string())
        .collect();
    ids.sort();
    ids
}

/// Writes the relay's subscriber config (like the subscriber's) and starts its daemon.
fn start_relay_subscriber(s: &Scenario) -> u32 {
    let conf = s.write_relay_config("debug").unwrap();
    let conf = conf.to_string_lossy().to_string();
    s.bed
        .spawn(
            Node::Relay,
            &[EXE, "daemon", "-c", &conf],
            &s.bed.dir.join("relay.log"),
        )
        .unwrap()
}

fn wait_both(s: &Scenario, sub: &Pinger, relay: &Pinger, since: f64, limit: Duration) {
    while !(sub.answered_since(since) && relay.answered_since(since)) {
        assert!(
            unix_now() - since < limit.as_secs_f64(),
            "no traffic back after {limit:?}; pings sub:\n{}\nrelay:\n{}\ngw log:\n{}",
            sub.tail(),
            relay.tail(),
            s.tail(Node::Gw)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_subscribers_keep_their_sessions_across_gateway_restarts() {
    if !e2e_gate("two_subscribers_keep_their_sessions_across_gateway_restarts") {
        return;
    }
    let mut s = Scenario::new(EXE.as_ref(), LEASE).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let relay_pid = start_relay_subscriber(&s);
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    let t0 = Instant::now();
    while sids(&s).len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "relay registers");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The relay has no route to the Internet host until its tunnel is up, and a ping started
    // before that ends at once with "Network is unreachable".
    s.wait_node_connected(Node::Relay, Duration::from_secs(30), &NEVER)
        .unwrap();
    let before = sids(&s);

    let sub = Pinger::start(&s, Node::Sub);
    let relay = Pinger::start(&s, Node::Relay);
    wait_both(&s, &sub, &relay, unix_now(), Duration::from_secs(10));
    let mut report = Vec::new();
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let down = unix_now();
        assert!(s.stop(Node::Gw, signal), "gateway stops");
        // Down for 2 s, well past the subscribers' detection (about 0.3 s): they see their
        // path go down and must keep their tunnel for the restored session.
        std::thread::sleep(Duration::from_secs(2));
        s.start(Node::Gw).unwrap();
        assert_eq!(sids(&s), before, "sessions restored, none added");
        wait_both(
            &s,
            &sub,
            &relay,
            down,
            Duration::from_secs(u64::from(LEASE)),
        );
        std::thread::sleep(Duration::from_secs(1));
        report.push(format!(
            "{}: longest ping gap sub {:?}, relay {:?}",
            if signal == libc::SIGTERM {
                "SIGTERM"
            } else {
                "SIGKILL"
            },
            sub.longest_gap(down),
            relay.longest_gap(down)
        ));
        assert_eq!(sids(&s), before, "no one registered again");
    }

    // The gateway answers on the mesh while its tunnel carries nothing for 4 s, as while a
    // restarted gateway brings its tunnels back: both subscribers see their path go down and
    // their gateway healthy at the scan that follows; they keep their sessions (for up to
    // 15 s of silence) instead of registering anew.
    let wg = s.wg_ifname(Node::Gw).to_string();
    let silence = format!(
        "table inet mnsilence {{\n\
         chain i {{ type filter hook input priority -10; iifname \"{wg}\" drop; }}\n\
         chain f {{ type filter hook forward priority -10; iifname \"{wg}\" drop; }}\n}}\n"
    );
    let down = unix_now();
    s.load_nft(Node::Gw, &silence).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !sub.answered_since(down + 1.0) && !relay.answered_since(down + 1.0),
        "control: the tunnel carried traffic while silenced"
    );
    s.load_nft(Node::Gw, "delete table inet mnsilence\n")
        .unwrap();
    wait_both(&s, &sub, &relay, down + 4.0, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    report.push(format!(
        "tunnel silent 4 s: longest ping gap sub {:?}, relay {:?}",
        sub.longest_gap(down),
        relay.longest_gap(down)
    ));
    assert_eq!(sids(&s), before, "no one registered again");
    let log = std::fs::read_to_string(s.log(Node::Sub)).unwrap();
    assert!(
        log.contains("keeping its tunnel"),
        "control: sub saw its path go down\n{}",
        s.tail(Node::Sub)
    );

    // keep_sessions '0': a clean stop releases both sessions; the subscribers notice and
    // register again by themselves.
    let conf = s.config(Node::Gw);
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replace("\toption nat", "\toption keep_sessions '0'\n\toption nat");
    std::fs::write(&conf, text).unwrap();
    assert!(s.stop(Node::Gw, libc::SIGKILL));
    s.start(Node::Gw).unwrap();
    let down = unix_now();
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    let log = std::fs::read_to_string(s.log(Node::Gw)).unwrap();
    assert!(
        log.contains("released 2 session(s) at shutdown"),
        "{}",
        s.tail(Node::Gw)
    );
    s.start(Node::Gw).unwrap();
    let after = sids(&s);
    assert!(
        after.iter().all(|sid| !before.contains(sid)),
        "released sessions are not restored: {after:?}"
    );
    wait_both(&s, &sub, &relay, down, Duration::from_secs(120));
    let t = Instant::now();
    while sids(&s).len() < 2 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    report.push(format!(
        "SIGTERM with keep_sessions 0: longest ping gap sub {:?}, relay {:?}, sessions again {}",
        sub.longest_gap(down),
        relay.longest_gap(down),
        sids(&s).len()
    ));
    for line in report {
        eprintln!("{line}");
    }
    for pid in [sub.pid, relay.pid] {
        s.bed.stop(pid, libc::SIGTERM, Duration::from_secs(5));
    }
    s.bed
        .stop(relay_pid, libc::SIGTERM, Duration::from_secs(15));
}
