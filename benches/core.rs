//! Core-loop benchmark: `cargo bench --bench core` (as root for the mesh figures).
//!
//! Prints, each against its target:
//! - stripped release binary size of the router build, without the demo (target ≤ 2.0 MB),
//! - `nodeInfo` requests per second on loopback against a running daemon (target ≥ 5,000),
//! - idle RSS of a daemon with no role, and of a connected gateway and subscriber (target ≤ 4 MB),
//! - seconds from subscriber start to the first ping through the tunnel, once Babel has
//!   converged (target ≤ 1 s), the median of several runs on fresh meshes.

use mnigs::demo::Scenario;
use mnigs::rpc::client;
use mnigs::testbed::{Node, require_root};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const REQUESTS: usize = 20_000;
const CLIENT_THREADS: usize = 4;
const RUNS: usize = 5;

fn row(what: &str, value: f64, unit: &str, target: f64, higher_is_better: bool) {
    let ok = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    let ratio = if higher_is_better {
        value / target
    } else {
        target / value
    };
    println!(
        "{what:<48} {value:>10.3} {unit:<6} target {} {target:<8} {:>6.2}x  {}",
        if higher_is_better { "≥" } else { "≤" },
        ratio,
        if ok { "ok" } else { "MISSED" }
    );
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Requests per second and idle RSS of a daemon with no role, on loopback.
fn loopback() {
    let dir = std::env::temp_dir().join(format!("mnigs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = dir.join("bench.uci");
    let cfg = format!(
        "config mnigs 'main'\n\toption name 'bench'\n\toption rpc_port '{port}'\n\tlist listen '127.0.0.1'\n\toption database '{}'\n\toption log_level 'warn'\n",
        dir.join("bench.db").display()
    );
    std::fs::write(&conf, cfg).unwrap();
    let mut child = std::process::Command::new(EXE)
        .args(["daemon", "-c"])
        .arg(&conf)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let up = Instant::now();
    while client::call(
        addr,
        "nodeInfo",
        serde_json::json!({}),
        Duration::from_secs(1),
    )
    .is_err()
    {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "daemon did not come up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_mb(child.id());
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..REQUESTS / CLIENT_THREADS {
                    let v = client::call(
                        addr,
                        "nodeInfo",
                        serde_json::json!({}),
                        Duration::from_secs(5),
                    )
                    .expect("nodeInfo");
                    assert_eq!(v["success"], true);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rate = REQUESTS as f64 / start.elapsed().as_secs_f64();
    let busy = rss_mb(child.id());
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    row(
        &format!("nodeInfo requests/s ({CLIENT_THREADS} clients, new connection each)"),
        rate,
        "req/s",
        5000.0,
        true,
    );
    row("idle RSS, daemon with no role", idle, "MB", 4.0, false);
    println!(
        "{:<48} {busy:>10.3} MB     (informational)",
        "RSS right after the request burst"
    );
}

/// Subscriber start → first ping through the tunnel; RSS of the connected daemons.
fn mesh() {
    let never = AtomicBool::new(false);
    let mut times = Vec::new();
    let mut rss = (0.0f64, 0.0f64);
    for _ in 0..RUNS {
        let mut s = Scenario::new(EXE.as_ref(), 300).expect("testbed");
        s.bed
            .wait_converged(Duration::from_secs(20))
            .expect("Babel converges");
        s.start(Node::Gw).expect("gateway");
        let started = Instant::now();
        s.start(Node::Sub).expect("subscriber");
        s.wait_connected(Duration::from_secs(30), &never)
            .expect("connected");
        while !s.ping_inet("0.2") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no ping through the tunnel"
            );
        }
        times.push(started.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_secs(2));
        rss = (rss_mb(s.gw_pid.unwrap()), rss_mb(s.sub_pid.unwrap()));
        s.stop(Node::Sub, libc::SIGTERM);
        s.stop(Node::Gw, libc::SIGTERM);
    }
    times.sort_by(f64::total_cmp);
    println!("subscriber start → first ping, {RUNS} runs (s): {times:.3?}");
    row(
        "subscriber start → first ping (median)",
        times[RUNS / 2],
        "s",
        1.0,
        false,
    );
    row(
        "idle RSS, connected gateway daemon",
        rss.0,
        "MB",
        4.0,
        false,
    );
    row(
        "idle RSS, connected subscriber daemon",
        rss.1,
        "MB",
        4.0,
        false,
    );
}

/// Builds the binary routers get (no demo: `--no-default-features`) and returns its path.
fn router_binary() -> Option<std::path::PathBuf> {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = top.join("target").join("router");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(top)
        .status()
        .ok()?
        .success();
    built.then(|| target.join("release").join("mnigs"))
}

fn size_mb(path: &std::path::Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(f64::NAN)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    println!("mnigs core benchmark ({EXE})");
    match router_binary() {
        Some(router) => row(
            "router binary (no demo), stripped",
            size_mb(&router),
            "MB",
            2.0,
            false,
        ),
        None => println!("router binary: build FAILED"),
    }
    println!(
        "{:<48} {:>10.3} MB     (informational)",
        "default build (with the demo), stripped",
        size_mb(EXE.as_ref())
    );
    loopback();
    match require_root() {
        Ok(()) => mesh(),
        Err(e) => println!("mesh figures SKIPPED: {e}"),
    }
}
