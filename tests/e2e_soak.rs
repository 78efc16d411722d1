//! Churn against one gateway, as root: two subscribers (the subscriber node and the relay node)
//! with a 6 s lease keep renewing, while seeded random steps release and reconnect one, run scans,
//! or SIGKILL the relay's daemon until its lease expires and restart it. Reports the gateway's RSS
//! and open descriptors at start and end, and checks at the end that the gateway holds exactly
//! the two live sessions (no lost or duplicated one, as many WireGuard peers), its database passes
//! `integrity_check`, and its log has no `error:` line.
//!
//! `MNIGS_SOAK_SECONDS` (default 10) bounds the churn; `bench/soak.sh` runs 600.

#[path = "common/rng.rs"]
mod rng;

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, e2e_gate};
use rng::Rng;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);
const LEASE: u32 = 6;

/// (resident KiB, open descriptors) of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn sessions(s: &Scenario) -> Vec<String> {
    let out = s.cli(Node::Gw, &["sessions", "--json"]).expect("sessions");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn gw_peers(s: &Scenario) -> usize {
    s.bed
        .exec(Node::Gw, &["wg", "show", &s.gw_wg, "peers"])
        .map(|o| o.lines().count())
        .unwrap_or(0)
}

/// The relay runs a second subscriber, configured like the first.
struct Relay {
    conf: String,
    pid: u32,
}

impl Relay {
    fn start(s: &Scenario) -> Relay {
        let conf = s.write_relay_config("info").unwrap();
        let mut r = Relay {
            conf: conf.to_string_lossy().to_string(),
            pid: 0,
        };
        r.spawn(s);
        r
    }

    fn spawn(&mut self, s: &Scenario) {
        let log = s.bed.dir.join("relay.log");
        self.pid = s
            .bed
            .spawn(Node::Relay, &[EXE, "daemon", "-c", &self.conf], &log)
            .unwrap();
    }

    fn cli(&self, s: &Scenario, args: &[&str]) -> Result<String, String> {
        let mut argv = vec![EXE];
        argv.extend_from_slice(args);
        argv.extend(["-c", self.conf.as_str()]);
        s.bed
            .exec_full(Node::Relay, &argv, None, Duration::from_secs(60))
            .map_err(|e| e.to_string())
    }
}

#[test]
fn churn_keeps_sessions_consistent_and_resources_flat() {
    if !e2e_gate("churn_keeps_sessions_consistent_and_resources_flat") {
        return;
    }
    let seconds: u64 = std::env::var("MNIGS_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = Rng(0x5eed_0008);
    let mut s = Scenario::new(EXE.as_ref(), LEASE).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    let gw = s.start(Node::Gw).unwrap();
    s.start(Node::Sub).unwrap();
    let mut relay = Relay::start(&s);
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let start_usage = usage(gw);
    let started = Instant::now();
    let mut steps = [0u32; 4];
    while started.elapsed() < Duration::from_secs(seconds) {
        let step = rng.next(4) as usize;
        steps[step] += 1;
        match step {
            0 => {
                // Release and connect again.
                let _ = s.cli(Node::Sub, &["disconnect"]);
                let _ = s.cli(Node::Sub, &["scan"]);
            }
            1 => {
                let _ = s.cli(Node::Sub, &["scan"]);
                let _ = relay.cli(&s, &["scan"]);
            }
            2 => {
                // The relay dies without releasing; its lease expires; it comes back.
                s.bed.stop(relay.pid, libc::SIGKILL, Duration::from_secs(5));
                std::thread::sleep(Duration::from_secs(u64::from(LEASE) + 2));
                relay.spawn(&s);
            }
            _ => std::thread::sleep(Duration::from_secs(u64::from(LEASE))),
        }
    }
    // Let both settle: connected, leases renewed.
    let _ = s.cli(Node::Sub, &["scan"]);
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    let t = Instant::now();
    while sessions(&s).len() != 2 && t.elapsed() < Duration::from_secs(30) {
        let _ = relay.cli(&s, &["scan"]);
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(u64::from(LEASE)));
    let end_usage = usage(gw);
    let mut names = sessions(&s);
    names.sort();
    let log = std::fs::read_to_string(s.log(Node::Gw)).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("] error:")).collect();
    eprintln!(
        "soak {:?}: steps reconnect/scan/kill-expire/idle {steps:?}; gateway RSS {} -> {} KiB, \
         fds {} -> {}; sessions at end {names:?}; {} error lines; {} log lines",
        started.elapsed(),
        start_usage.0,
        end_usage.0,
        start_usage.1,
        end_usage.1,
        errors.len(),
        log.lines().count()
    );
    assert_eq!(names, ["relay", "sub"], "one session per live subscriber");
    assert_eq!(gw_peers(&s), 2, "one peer per session");
    assert!(errors.is_empty(), "errors in the gateway log: {errors:#?}");
    let db = rusqlite::Connection::open_with_flags(
        s.bed.dir.join("gw.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    s.bed
        .stop(relay.pid, libc::SIGTERM, Duration::from_secs(15));
}
