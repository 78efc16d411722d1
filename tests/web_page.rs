//! The built-in page over real HTTP, without root: a daemon with no role on loopback whose
//! authorized_network leaves loopback out, so the test is a "mesh" caller, under each
//! `option web`; and an authorized caller, who always gets the full page. Then an in-process
//! gateway with a subscriber session: read-only callers see the session and the graph, not its id.

use mnigs::config::Config;
use mnigs::rpc::limits::Limits;
use mnigs::web::Access;
use serde_json::{Value, json};
#[path = "common/daemon.rs"]
mod daemon_common;
#[path = "common/gateway.rs"]
mod gateway_common;
use daemon_common::free_port;
use gateway_common::{counting_node, serve};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
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
    let port = free_port();
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
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
}

fn rpc(port: u16, method: &str) -> Value {
    rpc_with(port, method, "")
}

/// A call with extra header lines (each ending in CRLF).
fn rpc_with(port: u16, method: &str, headers: &str) -> Value {
    let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{method}\",\"params\":{{}}}}");
    let (_, _, answer) = http(
        port,
        &format!(
            "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    serde_json::from_str(&answer).unwrap()
}

/// An action as the page sends it: JSON, with the token from the page just served.
fn act(port: u16, method: &str) -> Value {
    let (_, _, page) = get(port, "/");
    let token = mnigs::web::token_in_page(&page).expect("the page carries a token");
    rpc_with(
        port,
        method,
        &format!("Content-Type: application/json\r\nX-Mnigs-Token: {token}\r\n"),
    )
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
    let (_, _, page) = get(d.1, "/");
    assert_eq!(
        mnigs::web::token_in_page(&page),
        None,
        "a read-only caller gets no token"
    );
    for m in ["scan", "connect", "disconnect"] {
        assert!(refused(&rpc(d.1, m)), "{m} must be refused");
        let json = "Content-Type: application/json\r\nX-Mnigs-Token: 00\r\n";
        assert!(refused(&rpc_with(d.1, m, json)), "{m} must be refused");
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
    let scan = act(d.1, "scan");
    assert_eq!(scan["result"]["success"], false, "{scan}");
    assert!(
        scan["result"]["errorMsg"]
            .as_str()
            .unwrap()
            .contains("subscriber role is disabled"),
        "{scan}"
    );
    drop(d);

    // An authorized caller gets everything even with web off.
    let d = start(&dir, "127.0.0.0/8", "off");
    assert_eq!(get(d.1, "/").0, 200);
    assert_eq!(rpc(d.1, "status")["result"]["access"], "full");
    let disconnect = act(d.1, "disconnect");
    assert_eq!(disconnect["result"]["success"], false, "{disconnect}");
    assert!(!refused(&disconnect));
    drop(d);
    let _ = std::fs::remove_dir_all(dir);
}

/// A JSON-RPC call to port `to` on 127.0.0.1 from the local address `from`.
fn call_from(from: Ipv4Addr, to: u16, method: &str, params: Value) -> Value {
    gateway_common::call_from(
        from,
        SocketAddr::from((Ipv4Addr::LOCALHOST, to)),
        method,
        params,
    )
}

#[test]
fn read_only_callers_see_sessions_and_graph_without_session_ids() {
    let mut cfg = Config::default();
    cfg.main.name = "gw-page".into();
    cfg.main.authorized_network = vec!["127.0.0.1/32".parse().unwrap()];
    cfg.main.web = Access::Readonly;
    let (server, addr) = serve(
        counting_node(cfg),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Limits::default(),
    );
    let port = addr.port();

    let subscriber = Ipv4Addr::new(127, 0, 0, 5);
    let grant = call_from(
        subscriber,
        port,
        "requestConnection",
        json!({"name": "sub-5", "method": "wireguard", "options": {}}),
    );
    let sid = grant["result"]["sid"]
        .as_str()
        .expect("granted")
        .to_string();

    let owner = call_from(Ipv4Addr::LOCALHOST, port, "listSessions", json!({}));
    assert_eq!(owner["result"]["sessions"][0]["sid"], sid.as_str());

    let stranger = Ipv4Addr::new(127, 0, 0, 9);
    let list = call_from(stranger, port, "listSessions", json!({}));
    let session = &list["result"]["sessions"][0];
    assert_eq!(session["name"], "sub-5", "{list}");
    assert_eq!(session["address"], "127.0.0.5");
    assert!(session.get("sid").is_none(), "session id leaked: {list}");
    let status = call_from(stranger, port, "status", json!({}));
    assert_eq!(status["result"]["access"], "readonly");
    assert!(
        status["result"]["gateway"]["sessions"][0]
            .get("sid")
            .is_none(),
        "{status}"
    );
    assert!(
        !status.to_string().contains(&sid),
        "session id leaked: {status}"
    );

    let graph = call_from(stranger, port, "meshGraph", json!({}));
    let g = &graph["result"];
    assert_eq!(g["nodes"][0]["gateway"], true, "{graph}");
    assert_eq!(g["nodes"][1]["kind"], "subscriber", "{graph}");
    assert_eq!(g["nodes"][1]["name"], "sub-5");
    assert_eq!(g["links"][0]["how"], "session");
    assert_eq!(g["links"][0]["to"], "self");

    let release = call_from(stranger, port, "releaseConnection", json!({"sid": sid}));
    assert_eq!(
        release["result"]["success"], false,
        "only the owner may release"
    );
    assert!(call_from(stranger, port, "disconnect", json!({}))["error"]["code"] == -32001);
    server.stop();
}
