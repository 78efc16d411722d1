//! The RPC server's bounds over real sockets on loopback (no root): a flooding client and a
//! slow-loris client, each from its own 127.0.0.x source, do not stop a normal client from a third
//! source from registering; oversized or over-long headers get 431, a stalled request 408, and a
//! source over its connection cap 429 (every refusal is read: tests/rpc_refusals.rs).

use mnigs::config::Config;
use mnigs::rpc::limits::Limits;
use mnigs::rpc::server::Server;
use serde_json::{Value, json};
#[path = "common/daemon.rs"]
mod daemon_common;
#[path = "common/gateway.rs"]
mod gateway_common;
use daemon_common::{Daemon, free_port, loopback_config};
use gateway_common::{connect_from, counting_node, serve};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const LIMITS: fn() -> Limits = || Limits {
    max_connections: 16,
    max_per_source: 4,
    read_timeout: Duration::from_secs(2),
    rate: 5.0,
    burst: 10.0,
    rate_exempt: Vec::new(),
    reserved: 2,
    ..Limits::default()
};

fn gateway() -> (Server, SocketAddr) {
    let mut cfg = Config::default();
    cfg.gateway.max_subscribers = 10;
    serve(
        counting_node(cfg),
        &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        LIMITS(),
    )
}

/// Sends `bytes` from `from` and returns the answer's status code and body, or `None` when the
/// server cut the connection before answering.
fn exchange(from: Ipv4Addr, to: SocketAddr, bytes: &[u8]) -> Option<(u16, String)> {
    let mut s = connect_from(from, to);
    s.write_all(bytes).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    parse_answer(&out)
}

fn parse_answer(out: &str) -> Option<(u16, String)> {
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn rpc(method: &str, params: Value) -> Vec<u8> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn flood_and_slow_loris_do_not_stop_another_source_from_registering() {
    let (server, gw) = gateway();
    let loris = Ipv4Addr::new(127, 0, 0, 66);
    let flooder = Ipv4Addr::new(127, 0, 0, 77);
    let alice = Ipv4Addr::new(127, 0, 0, 11);

    // Slow loris: connections that send half a request line and then nothing. The first
    // max_per_source are held (until the read timeout), the rest refused at once.
    let mut held = Vec::new();
    let mut refused_at_once = 0;
    for _ in 0..12 {
        let mut s = connect_from(loris, gw);
        s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost:").unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut out = String::new();
        if s.read_to_string(&mut out).is_ok() || !out.is_empty() {
            assert_eq!(parse_answer(&out).map(|a| a.0), Some(429), "{out}");
            refused_at_once += 1;
        }
    }
    assert_eq!(refused_at_once, 12 - 4, "all but max_per_source refused");

    // Flood: four threads sending requests back to back from one source.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, refused) = (stop.clone(), served.clone(), refused.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match exchange(flooder, gw, &rpc("listSessions", json!({}))) {
                        Some((200, _)) => served.fetch_add(1, Ordering::SeqCst),
                        _ => refused.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    while refused.load(Ordering::SeqCst) < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }

    // The normal client registers while both attacks are on.
    let ask = json!({"name": "alice", "method": "wireguard", "options": {"publicKey": "k"}});
    let (status, body) = exchange(alice, gw, &rpc("requestConnection", ask)).expect("answered");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"]["success"], true, "{answer}");

    stop.store(true, Ordering::SeqCst);
    for t in flood {
        t.join().unwrap();
    }
    let (served, refused) = (
        served.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    eprintln!("flooder: {served} served, {refused} refused");
    assert!(
        refused >= 50 && served >= 1,
        "{served} served, {refused} refused"
    );

    // The held slow-loris connections are answered 408 and closed after the read timeout.
    let mut timed_out = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if parse_answer(&out).map(|a| a.0) == Some(408) {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 4, "every held connection timed out");
    server.stop();
}

#[test]
fn oversized_headers_are_refused() {
    let (server, gw) = gateway();
    let me = Ipv4Addr::new(127, 0, 0, 21);
    let long = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, _) = exchange(me, gw, long.as_bytes()).expect("answered");
    assert_eq!(status, 431);
    let many: String = (0..100).map(|n| format!("X-H{n}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: gw\r\n{many}\r\n");
    let (status, _) = exchange(me, gw, many.as_bytes()).expect("answered");
    assert_eq!(status, 431);
    let chunked = b"POST /jsonrpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(exchange(me, gw, chunked).map(|a| a.0), Some(501));
    let huge = b"POST /jsonrpc HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n{}";
    assert_eq!(exchange(me, gw, huge).map(|a| a.0), Some(413));
    // Still served normally afterwards.
    let (status, body) = exchange(me, gw, &rpc("listSessions", json!({}))).unwrap();
    assert_eq!(status, 200, "{body}");
    server.stop();
}

/// The real daemon with the shipped limits, authorized_network only 127.0.0.1: eight mesh
/// sources each hold eight half-sent requests (every connection they may take, 64 tried), and
/// the owner's CLI (`status`, `status --json`, `disconnect` — what LuCI runs) is still answered
/// by the daemon, not told "server busy".
#[test]
fn eight_by_eight_held_connections_do_not_lock_the_owner_out() {
    use std::process::{Command, Stdio};
    const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
    let dir = std::env::temp_dir().join(format!("mnigs-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = loopback_config(
        &dir,
        "hold",
        port,
        "\tlist authorized_network '127.0.0.1/32'\n\toption read_timeout '60'\n",
    );
    let daemon = Daemon(
        Command::new(EXE)
            .args(["daemon", "-c", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(to).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "daemon not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cli = |args: &[&str]| {
        let out = Command::new(EXE)
            .args(args)
            .args(["-c", config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    let mut held = Vec::new();
    for n in 1..=8u8 {
        for _ in 0..8 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 1, n), to);
            s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost:").unwrap();
            held.push(s);
        }
    }
    // Let the daemon take them all in; the ones beyond the mesh's share are answered 503.
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
            refused += 1;
        }
    }
    assert!(
        refused <= 8,
        "{refused} of 64 refused: the mesh holds its share"
    );

    let (code, out) = cli(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("node        hold"), "{out}");
    let (code, out) = cli(&["status", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(&["disconnect"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the subscriber role is disabled on this node"),
        "disconnect reached the daemon: {out}"
    );
    assert!(!out.contains("busy"), "{out}");
    drop(held);
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}
