//! The built-in page over real HTTP, without root: a daemon with no role on loopback whose
//! authorized_network leaves loopback out, so the test is a "mesh" caller, under each
//! `option web`; and an authorized caller, who always gets the full page.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

struct Daemon(Child, u16);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, authorized: &str, web: &str) -> Daemon {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join(format!("mnigs-{web}-{port}"));
    std::fs::write(
        &config,
        format!(
            "config mnigs 'main'\n\toption name 'page-test'\n\toption rpc_port '{port}'\n\
             \tlist listen '127.0.0.1'\n\toption database '{db}'\n\
             \tlist authorized_network '{authorized}'\n\toption web '{web}'\n",
            db = dir.join(format!("db-{port}")).display()
        ),
    )
    .unwrap();
    let child = Command::new(EXE)
        .args(["daemon", "-c", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon(child, port);
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "daemon not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

/// One HTTP exchange; returns status, headers (lowercased names) and body.
fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn get(port: u16, path: &str) -> (u16, String, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn rpc(port: u16, method: &str) -> Value {
    let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{method}\",\"params\":{{}}}}");
    let (_, _, answer) = http(
        port,
        &format!(
            "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    serde_json::from_str(&answer).unwrap()
}

fn refused(v: &Value) -> bool {
    v["error"]["code"] == -32001
}

#[test]
fn page_and_methods_follow_option_web() {
    let dir = std::env::temp_dir().join(format!("mnigs-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Read only: page and reads, no actions.
    let d = start(&dir, "10.99.0.0/16", "readonly");
    let (status, head, body) = get(d.1, "/");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains("<script src=\"/app.js\">"));
    let (status, head, js) = get(d.1, "/app.js");
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript") && js.contains("meshGraph"));
    assert_eq!(get(d.1, "/style.css").0, 200);
    assert_eq!(get(d.1, "/secret").0, 404);
    let st = rpc(d.1, "status");
    assert_eq!(st["result"]["access"], "readonly", "{st}");
    assert_eq!(rpc(d.1, "listGateways")["result"]["success"], true);
    assert_eq!(rpc(d.1, "listSessions")["result"]["success"], true);
    let graph = rpc(d.1, "meshGraph");
    assert_eq!(graph["result"]["nodes"][0]["kind"], "self", "{graph}");
    assert_eq!(graph["result"]["nodes"][0]["name"], "page-test");
    for m in ["scan", "connect", "disconnect"] {
        assert!(refused(&rpc(d.1, m)), "{m} must be refused");
    }
    drop(d);

    // Off: no page, no local method; nodeInfo still answers (other nodes need it).
    let d = start(&dir, "10.99.0.0/16", "off");
    let (status, _, _) = get(d.1, "/");
    assert_eq!(status, 403);
    assert_eq!(get(d.1, "/app.js").0, 403);
    for m in [
        "status",
        "listGateways",
        "listSessions",
        "meshGraph",
        "scan",
    ] {
        assert!(refused(&rpc(d.1, m)), "{m} must be refused");
    }
    assert_eq!(rpc(d.1, "nodeInfo")["result"]["name"], "page-test");
    drop(d);

    // Full: actions reach the node (which has no subscriber role to act with).
    let d = start(&dir, "10.99.0.0/16", "full");
    assert_eq!(rpc(d.1, "status")["result"]["access"], "full");
    let scan = rpc(d.1, "scan");
    assert_eq!(scan["result"]["success"], false, "{scan}");
    assert!(!refused(&scan));
    drop(d);

    // An authorized caller gets everything even with web off.
    let d = start(&dir, "127.0.0.0/8", "off");
    assert_eq!(get(d.1, "/").0, 200);
    assert_eq!(rpc(d.1, "status")["result"]["access"], "full");
    assert!(!refused(&rpc(d.1, "disconnect")));
    drop(d);
    let _ = std::fs::remove_dir_all(dir);
}
