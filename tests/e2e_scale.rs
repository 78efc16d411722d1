//! A gateway for many subscribers (issue 14): the kernel work of registrations, releases, the
//! restore after a restart and an expiry sweep is done in batches, and a batch that fails half
//! way leaves nothing behind.
//!
//! A real daemon (WireGuard, nftables) runs in a lab namespace; the callers are threads of this
//! process that entered the namespace, each request from its own loopback address (127.0.0.0/8
//! is all local there), so one process plays a thousand subscribers.
//!
//! - `a_failed_batch_leaves_no_half_state` (e2e): a fake `nft` first on the daemon's PATH
//!   refuses every transaction that adds one pool address; 32 callers at once. Whoever was
//!   given that address is refused, everyone else is served, and the sessions listed, the
//!   WireGuard peers, the host routes and the nftables sets agree.
//! - `gateway_scale_bench` / `gateway_scale_short` (ignored; `bench/gateway-scale.sh`): the
//!   figures, each against its target.

use mnigs_lab::netlab::Lab;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/e2e.rs"]
mod e2e_common;
#[path = "common/gateway.rs"]
mod gateway_common;
#[path = "common/lab.rs"]
mod lab_common;

/// The daemon measured: `MNIGS_BENCH_EXE` (the bench script's release build), else this
/// build's.
fn exe() -> String {
    std::env::var("MNIGS_BENCH_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mnigs").to_string())
}
/// The daemon's RPC port inside its own namespace (no host port is used).
const PORT: u16 = 65533;
/// Callers at once.
const CONCURRENCY: usize = 32;

/// The loopback address subscriber `i` calls from.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8 + 1, 1)
}

/// A WireGuard public key for subscriber `i` (any 32 bytes are a key to `wg`).
fn key(i: usize) -> String {
    let mut bytes = [0x5au8; 32];
    bytes[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One JSON-RPC call from `from`; the `result` (or the whole answer if it has none).
fn call(from: Ipv4Addr, method: &str, params: Value) -> Result<Value, String> {
    let mut s = gateway_common::connect_from(from, SocketAddr::from(([127, 0, 0, 1], PORT)));
    // An older daemon (for a before/after) may keep 32 callers waiting for many seconds.
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    write!(
        s,
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{from}: write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("{from}: read: {e}"))?;
    let json = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("{from}: no HTTP body in {answer:?}"))?;
    let v: Value = serde_json::from_str(json).map_err(|e| format!("{from}: {e}: {json}"))?;
    Ok(v.get("result").cloned().unwrap_or(v))
}

/// A call's result and how long it took, once it ran.
type Timed<T> = Option<(T, Duration)>;

/// Runs `job(i)` for `i` in `0..n` on [`CONCURRENCY`] threads inside namespace `ns`; returns
/// each call's result and how long it took, in order of `i`.
fn burst<T: Send + 'static>(
    ns: &str,
    n: usize,
    job: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<(T, Duration)> {
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let out: Arc<Mutex<Vec<Timed<T>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let threads: Vec<_> = (0..CONCURRENCY.min(n))
        .map(|_| {
            let (job, next, out) = (job.clone(), next.clone(), out.clone());
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
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let t = Instant::now();
                    let r = job(i);
                    out.lock().unwrap()[i] = Some((r, t.elapsed()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    let v = std::mem::take(&mut *out.lock().unwrap());
    v.into_iter().map(|x| x.expect("every call ran")).collect()
}

fn request(i: usize) -> Result<Value, String> {
    call(
        source(i),
        "requestConnection",
        json!({"name": format!("sub{i}"), "method": "wireguard",
               "options": {"publicKey": key(i)}}),
    )
}

/// A gateway daemon in a lab namespace.
struct Gw {
    lab: Lab,
    ns: String,
    conf: String,
    log: PathBuf,
    wg: String,
    pid: Option<u32>,
    /// Extra environment for the daemon (`PATH=…`).
    env: Vec<String>,
}

impl Gw {
    fn new(label: &str, n: usize, lease_seconds: u32) -> Gw {
        let lab = Lab::new(label).expect("lab");
        let ns = lab.add_ns("gw").expect("namespace");
        let inet = lab.add_ns("inet").expect("namespace");
        lab.veth(&ns, "wan0", &inet, "up0").expect("veth");
        for (n, i, a) in [
            (&ns, "wan0", "198.51.100.1/24"),
            (&inet, "up0", "198.51.100.2/24"),
        ] {
            lab.exec(n, &["ip", "addr", "add", a, "dev", i]).unwrap();
            lab.exec(n, &["ip", "link", "set", i, "up"]).unwrap();
        }
        let wg = lab.unique_ifname("gs");
        let conf = lab_common::write(
            &lab,
            "gw.conf",
            &format!(
                "config mnigs 'main'\n\toption name 'gw'\n\tlist listen '127.0.0.1'\n\
                 \toption database '{db}'\n\toption log_level 'debug'\n\n\
                 config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\
                 \toption nat 'nft'\n\toption uplink_check '0'\n\toption max_subscribers '{n}'\n\
                 \toption max_sessions_per_source '1'\n\toption ipv4_pool '100.64.0.0/21'\n\
                 \toption lease_seconds '{lease_seconds}'\n\tlist method 'wireguard'\n\n\
                 config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wg}c'\n",
                db = lab.dir.join("gw.db").display()
            ),
        );
        let log = lab.dir.join("gw.log");
        Gw {
            lab,
            ns,
            conf,
            log,
            wg,
            pid: None,
            env: Vec::new(),
        }
    }

    fn start(&mut self) {
        let exe = exe();
        let mut argv: Vec<&str> = vec!["env"];
        argv.extend(self.env.iter().map(String::as_str));
        argv.extend([exe.as_str(), "daemon", "-c", &self.conf]);
        self.pid = Some(self.lab.spawn(&self.ns, &argv, &self.log).expect("daemon"));
        let start = Instant::now();
        while call_in(&self.ns, "nodeInfo").is_err() {
            assert!(
                // An older daemon restores its sessions one by one before it serves.
                start.elapsed() < Duration::from_secs(300),
                "the gateway did not answer: {}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.lab.stop(pid, Duration::from_secs(20));
        }
    }

    fn tail(&self) -> String {
        lab_common::log_tail(&self.log, 4000)
    }

    fn exec(&self, argv: &[&str]) -> String {
        self.lab.exec(&self.ns, argv).unwrap_or_default()
    }

    /// The WireGuard peers' public keys.
    fn peers(&self) -> Vec<String> {
        self.exec(&["wg", "show", &self.wg, "peers"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pool addresses in one of our nft sets.
    fn nft_set(&self, set: &str) -> Vec<String> {
        self.exec(&["nft", "list", "set", "inet", "mnigs", set])
            .split([' ', ',', '\n', '\t', '{', '}'])
            .filter(|w| w.starts_with("100.64.") || w.starts_with("fd7e:"))
            .map(str::to_string)
            .collect()
    }

    /// The host routes to subscribers on the WireGuard interface.
    fn routes(&self) -> Vec<String> {
        let mut v: Vec<String> = ["-4", "-6"]
            .iter()
            .flat_map(|fam| {
                self.exec(&["ip", fam, "route", "show", "dev", &self.wg])
                    .lines()
                    .filter(|l| !l.contains('/') && !l.starts_with("fe80"))
                    .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }

    /// `listSessions` (from 127.0.0.1, an authorized network).
    fn sessions(&self) -> Vec<Value> {
        let v = call_in(&self.ns, "listSessions").expect("listSessions");
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (polling every 20 ms, at most `limit`) until the gateway has `n` peers; how long.
    fn wait_peers(&self, n: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        while self.peers().len() != n {
            assert!(
                start.elapsed() < limit,
                "{} peer(s), not {n}, after {limit:?}: {}",
                self.peers().len(),
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// The daemon's CPU time so far (user + system).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid.unwrap())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 (1-based); `after` starts at field 3.
        let ticks = f[11] + f[12];
        // SAFETY: sysconf has no side effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz.max(1))
    }

    /// How many programs the daemon has run so far (its debug log names each one).
    fn programs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("debug: run: ")
            .count()
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid.unwrap())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local-control call from 127.0.0.1 inside `ns`.
fn call_in(ns: &str, method: &str) -> Result<Value, String> {
    let path = format!("/run/netns/{ns}");
    let method = method.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err("setns".to_string());
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", PORT)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string();
        write!(
            s,
            "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        let (_, json) = answer.split_once("\r\n\r\n").ok_or("no body")?;
        let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        v.get("result").cloned().ok_or_else(|| v.to_string())
    })
    .join()
    .map_err(|_| "caller panicked".to_string())?
}

fn gate(test: &str) -> bool {
    e2e_common::gate_with(test, &["wg", "nft", "wireguard-go"])
}

/// A fake `nft` in a new directory: it refuses every transaction that adds `poison` to a set,
/// and hands everything else to the real `nft`.
fn poisoned_nft(dir: &Path, poison: &str) -> PathBuf {
    let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nft");
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n# test fake: refuses a transaction adding {poison}\n\
         in=$(mktemp)\ncat > \"$in\"\n\
         if grep -q '^add element.*[ ,{{]{re}[ ,}}]' \"$in\"; then\n\
         \techo 'injected failure' >&2; rm -f \"$in\"; exit 1\nfi\n\
         {real} \"$@\" < \"$in\"\nrc=$?\nrm -f \"$in\"\nexit $rc\n",
        re = poison.replace('.', "\\.")
    );
    let path = bin.join("nft");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_failed_batch_leaves_no_half_state() {
    if !gate("a_failed_batch_leaves_no_half_state") {
        return;
    }
    let n = 64;
    let mut gw = Gw::new("batch", n, 300);
    // Slot 5's address: whoever is given it is refused by the fake, in a batch and alone.
    let poison = "100.64.0.7";
    let bin = poisoned_nft(&gw.lab.dir, poison);
    gw.env = vec![format!(
        "PATH={}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )];
    gw.start();
    let answers = burst(&gw.ns, n, request);
    let granted: Vec<(usize, &Value)> = answers
        .iter()
        .enumerate()
        .filter(|(_, (a, _))| a.as_ref().is_ok_and(|v| v["success"] == true))
        .map(|(i, (a, _))| (i, a.as_ref().unwrap()))
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter_map(|(a, _)| a.as_ref().ok())
        .filter(|v| v["success"] == false)
        .collect();
    assert_eq!(
        granted.len() + refused.len(),
        n,
        "every caller got an answer: {answers:?}"
    );
    assert!(
        !refused.is_empty(),
        "the injected failure refused nobody: {}",
        gw.tail()
    );
    for r in &refused {
        assert_eq!(r["temporaryError"], true, "{r}");
    }
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        log.contains("session(s) failed, configuring them one by one"),
        "no batch of several failed (the test did not hit the middle of a batch): {}",
        gw.tail()
    );
    assert!(granted.iter().all(|(_, g)| g["ipv4"] != poison));
    // The book, the tunnel, the routes and the firewall agree: the granted ones, nothing else.
    let mut want_keys: Vec<String> = granted.iter().map(|(i, _)| key(*i)).collect();
    want_keys.sort();
    let mut peers = gw.peers();
    peers.sort();
    assert_eq!(
        peers, want_keys,
        "WireGuard peers are not the granted sessions"
    );
    let mut want4: Vec<String> = granted
        .iter()
        .map(|(_, g)| g["ipv4"].as_str().unwrap().to_string())
        .collect();
    want4.sort();
    let mut tun4 = gw.nft_set("tun4");
    tun4.sort();
    assert_eq!(tun4, want4, "the firewall admits other addresses");
    let mut want6: Vec<String> = granted
        .iter()
        .map(|(_, g)| g["ipv6"].as_str().unwrap().to_string())
        .collect();
    want6.sort();
    let mut tun6 = gw.nft_set("tun6");
    tun6.sort();
    assert_eq!(tun6, want6, "the firewall admits other IPv6 addresses");
    let mut want_routes: Vec<String> = want4.iter().chain(&want6).cloned().collect();
    want_routes.sort();
    assert_eq!(gw.routes(), want_routes, "host routes");
    let listed = gw.sessions();
    assert_eq!(listed.len(), granted.len(), "listSessions: {listed:?}");
    // The store holds them too, and only them: a restart restores exactly these.
    gw.stop();
    gw.env.clear();
    gw.start();
    gw.wait_peers(granted.len(), Duration::from_secs(20));
    let mut peers = gw.peers();
    peers.sort();
    assert_eq!(peers, want_keys, "restored from the store");
    gw.stop();
}

/// How many sessions to measure with (the targets are the issue's, for 1,000).
struct Figures {
    n: usize,
}

fn row(what: &str, value: f64, unit: &str, target: f64) {
    let ratio = if value > 0.0 {
        target / value
    } else {
        f64::INFINITY
    };
    println!(
        "SCALE {what:<44} {value:>9.3} {unit:<4} target ≤ {target:<6} {ratio:>7.2}x  {}",
        if value <= target { "ok" } else { "MISSED" }
    );
}

/// The programs the daemon ran in a phase (a figure the machine's load does not change).
fn programs(what: &str, n: usize) {
    println!("SCALE   programs run: {n} ({what})");
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn bench(f: Figures) {
    let n = f.n;
    let mut gw = Gw::new("scale", n, 300);
    gw.start();
    println!(
        "SCALE sessions {n}, {CONCURRENCY} callers at once, WireGuard interface {}",
        gw.wg
    );

    // Registrations.
    let p = gw.programs();
    let t = Instant::now();
    let answers = burst(&gw.ns, n, request);
    let took = t.elapsed();
    let sids: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, (a, _))| match a {
            Ok(v) if v["success"] == true => v["sid"].as_str().unwrap().to_string(),
            other => panic!("request {i}: {other:?}\n{}", gw.tail()),
        })
        .collect();
    let lat: Vec<Duration> = answers.iter().map(|(_, d)| *d).collect();
    assert_eq!(gw.peers().len(), n, "every session has its peer");
    assert_eq!(gw.nft_set("tun4").len(), n, "every session is admitted");
    row(
        &format!("{n} registrations (s)"),
        took.as_secs_f64(),
        "s",
        3.0,
    );
    println!(
        "SCALE   registrations per second {:.0}, p50 {:.0} ms, p99 {:.0} ms",
        n as f64 / took.as_secs_f64(),
        percentile(lat.clone(), 0.5).as_secs_f64() * 1000.0,
        percentile(lat, 0.99).as_secs_f64() * 1000.0
    );
    programs("registrations", gw.programs() - p);

    // Renew storm.
    let s = Arc::new(sids.clone());
    let t = Instant::now();
    let renewed = burst(&gw.ns, n, move |i| {
        call(source(i), "renewConnection", json!({"sid": s[i]}))
    });
    let took = t.elapsed();
    for (r, _) in &renewed {
        assert!(r.as_ref().is_ok_and(|v| v["success"] == true), "{r:?}");
    }
    row(
        &format!("renew storm of {n} (s)"),
        took.as_secs_f64(),
        "s",
        1.0,
    );

    // Idle CPU and memory with every session live.
    std::thread::sleep(Duration::from_secs(1));
    let (c0, t0) = (gw.cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle = (gw.cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    row("idle CPU (% of one core)", idle, "%", 1.0);
    row(
        &format!("RSS with {n} sessions (MB)"),
        gw.rss_kib() as f64 / 1024.0,
        "MB",
        8.0,
    );

    // Restart: from the daemon's start to every peer configured again.
    gw.stop();
    let p = gw.programs();
    let t = Instant::now();
    gw.start();
    gw.wait_peers(n, Duration::from_secs(120));
    let took = t.elapsed();
    assert_eq!(gw.nft_set("tun4").len(), n);
    row(
        &format!("restart, {n} sessions restored (s)"),
        took.as_secs_f64(),
        "s",
        3.0,
    );
    programs("start and restore", gw.programs() - p);

    // Releases.
    let s = Arc::new(sids);
    let p = gw.programs();
    let t = Instant::now();
    let released = burst(&gw.ns, n, move |i| {
        call(source(i), "releaseConnection", json!({"sid": s[i]}))
    });
    let took = t.elapsed();
    for (r, _) in &released {
        assert!(r.as_ref().is_ok_and(|v| v["success"] == true), "{r:?}");
    }
    assert_eq!(gw.peers().len(), 0, "a peer is left");
    assert_eq!(gw.nft_set("tun4").len(), 0, "an address is still admitted");
    row(&format!("{n} releases (s)"), took.as_secs_f64(), "s", 3.0);
    programs("releases", gw.programs() - p);

    // Expiry: every lease ends in the same second.
    let answers = burst(&gw.ns, n, request);
    assert!(
        answers
            .iter()
            .all(|(a, _)| a.as_ref().is_ok_and(|v| v["success"] == true))
    );
    gw.stop();
    let db = gw.lab.dir.join("gw.db");
    let ends = {
        let store = mnigs::store::Store::open(&db).expect("store");
        let ends = mnigs::clock::now() + 4;
        for row in store.sessions().unwrap() {
            store.set_session_expiry(&row.sid, ends).unwrap();
        }
        ends
    };
    gw.start();
    gw.wait_peers(n, Duration::from_secs(60));
    let unix = |t: i64| std::time::UNIX_EPOCH + Duration::from_secs(t as u64);
    while std::time::SystemTime::now() < unix(ends) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let p = gw.programs();
    let t = Instant::now();
    // Expired at `ends`: the sweep (at most a second later) removes them all.
    gw.wait_peers(0, Duration::from_secs(120));
    let start = Instant::now();
    while !gw.nft_set("tun4").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", gw.tail());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    row(
        &format!("{n} leases expiring at once, cleaned (s)"),
        took.as_secs_f64(),
        "s",
        3.0,
    );
    programs("expiry sweep", gw.programs() - p);
    assert!(gw.sessions().is_empty());
    gw.stop();
}

#[test]
#[ignore = "benchmark: bench/gateway-scale.sh"]
fn gateway_scale_bench() {
    if !gate("gateway_scale_bench") {
        return;
    }
    bench(Figures { n: 1000 });
}

#[test]
#[ignore = "benchmark: bench/gateway-scale.sh --short"]
fn gateway_scale_short() {
    if !gate("gateway_scale_short") {
        return;
    }
    let n = std::env::var("MNIGS_SCALE_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    bench(Figures { n });
    println!("SCALE-CHECK ok");
}
