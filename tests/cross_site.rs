//! What a web page from another site can make the owner's browser send to the node, tried over
//! real HTTP against the real RPC server and node in this process (no root): every form of
//! cross-site request a browser can send without a CORS preflight, a foreign or missing Origin,
//! a DNS-rebinding Host, a missing or wrong token — for every action method, from an
//! authorized_network caller. Each is refused with 403 or 415 before the method runs (its
//! answer never comes back, no command runs, the node's status is unchanged), while the same
//! call as the page sends it reaches the method. One test function: the command log is
//! process-wide.

use mnigs::config::Config;
use mnigs::rpc::dispatch::Services;
use mnigs::rpc::server::Server;
use mnigs::store::Store;
use mnigs::sys::cmd;
use mnigs::web::token_in_page;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::{Arc, Mutex};

/// One exchange: status and body.
fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn post(port: u16, headers: &str, body: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "POST /jsonrpc HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// What the method itself answers on a node without the subscriber role.
const REACHED: &str = "the subscriber role is disabled on this node";

#[test]
fn cross_site_attempts_on_every_action_are_refused_before_the_method_runs() {
    let mut cfg = Config::default();
    cfg.main.name = "victim".into();
    cfg.main.hostname = vec!["router.lan".into()];
    let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
    let node = Arc::new(Services::new(cfg, store, None, None));
    let server = Server::start(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 0, node).unwrap();
    let port = server.port();
    let me = format!("127.0.0.1:{port}");

    // The owner's page, and the token in it.
    let (status, page) = http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: {me}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);
    let token = token_in_page(&page).expect("the owner's page carries the token");
    assert_eq!(token, server.token());

    let status_of = || {
        let (_, body) = post(
            port,
            &format!("Host: {me}\r\n"),
            r#"{"jsonrpc":"2.0","id":1,"method":"status","params":{}}"#,
        );
        let mut v: Value = serde_json::from_str(&body).unwrap();
        v["id"] = Value::Null;
        v
    };
    let before = status_of();
    assert_eq!(before["result"]["name"], "victim", "{before}");
    cmd::clear_history();

    let actions = [
        ("disconnect", json!({})),
        ("scan", json!({})),
        ("connect", json!({"address": "127.0.0.9"})),
    ];
    let good = format!(
        "Host: {me}\r\nOrigin: http://{me}\r\nContent-Type: application/json\r\nX-Mnigs-Token: {token}\r\n"
    );
    // (what, headers, body or None for the JSON-RPC body, expected status)
    let attempts: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "text/plain simple request from another site",
            format!(
                "Host: {me}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain;charset=UTF-8\r\n"
            ),
            None,
            403,
        ),
        (
            "text/plain with no Origin",
            format!("Host: {me}\r\nContent-Type: text/plain\r\nX-Mnigs-Token: {token}\r\n"),
            None,
            415,
        ),
        (
            "form-encoded body",
            format!(
                "Host: {me}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Mnigs-Token: {token}\r\n"
            ),
            Some("x=1".into()),
            0,
        ),
        (
            "form-encoded JSON-looking body",
            format!(
                "Host: {me}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Mnigs-Token: {token}\r\n"
            ),
            None,
            415,
        ),
        (
            "multipart body",
            format!(
                "Host: {me}\r\nContent-Type: multipart/form-data; boundary=b\r\nX-Mnigs-Token: {token}\r\n"
            ),
            None,
            415,
        ),
        (
            "no Content-Type",
            format!("Host: {me}\r\nX-Mnigs-Token: {token}\r\n"),
            None,
            415,
        ),
        (
            "foreign Origin with everything else right",
            good.replace(
                &format!("Origin: http://{me}"),
                "Origin: http://evil.example",
            ),
            None,
            403,
        ),
        (
            "Origin null (sandboxed frame)",
            good.replace(&format!("Origin: http://{me}"), "Origin: null"),
            None,
            403,
        ),
        (
            "DNS rebinding: the attacker's name resolving to the node",
            good.replace(&me, &format!("evil.example:{port}")),
            None,
            403,
        ),
        (
            "rebinding Host without Origin",
            format!(
                "Host: evil.example:{port}\r\nContent-Type: application/json\r\nX-Mnigs-Token: {token}\r\n"
            ),
            None,
            403,
        ),
        (
            "token missing",
            good.replace(&format!("X-Mnigs-Token: {token}\r\n"), ""),
            None,
            403,
        ),
        (
            "token wrong",
            good.replace(&token, &"0".repeat(32)),
            None,
            403,
        ),
        (
            "token of the right length but one digit off",
            good.replace(
                &token,
                &format!(
                    "{}{}",
                    &token[..31],
                    if token.ends_with('0') { '1' } else { '0' }
                ),
            ),
            None,
            403,
        ),
    ];
    for (method, params) in &actions {
        let rpc =
            json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
        for (what, headers, body, expect) in &attempts {
            let body = body.clone().unwrap_or_else(|| rpc.clone());
            let (status, answer) = post(port, headers, &body);
            assert!(
                !answer.contains(REACHED),
                "{method}, {what}: the method ran: {answer}"
            );
            if *expect == 0 {
                // Not JSON at all: a parse error, nothing run.
                let v: Value = serde_json::from_str(&answer).unwrap();
                assert_eq!(v["error"]["code"], -32700, "{method}, {what}: {answer}");
                continue;
            }
            assert_eq!(status, *expect, "{method}, {what}: {answer}");
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert!(
                v["error"]["message"].is_string(),
                "{method}, {what}: {answer}"
            );
        }
        // The same call as the page sends it reaches the method.
        let (status, answer) = post(port, &good, &rpc);
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.contains(REACHED),
            "{method} as the page sends it: {answer}"
        );
        // A name the owner lists is the node too.
        let listed = good.replace(&me, &format!("router.lan:{port}"));
        assert!(post(port, &listed, &rpc).1.contains(REACHED));
    }
    assert_eq!(cmd::history(), Vec::<String>::new(), "no command ran");
    assert_eq!(status_of(), before, "the node's state is unchanged");

    // Reads and the page are kept from rebound names too (they would hand out the token).
    let rebound = format!("Host: evil.example:{port}\r\n");
    let (status, _) = post(
        port,
        &rebound,
        r#"{"jsonrpc":"2.0","id":1,"method":"status","params":{}}"#,
    );
    assert_eq!(status, 403);
    let (status, page) = http(
        port,
        &format!("GET / HTTP/1.1\r\n{rebound}Connection: close\r\n\r\n"),
    );
    assert_eq!(status, 403);
    assert!(token_in_page(&page).is_none());
    // Other nodes still reach the mesh methods by address, whatever Host they name.
    let (status, info) = post(
        port,
        &rebound,
        r#"{"jsonrpc":"2.0","id":1,"method":"nodeInfo","params":{}}"#,
    );
    assert_eq!(status, 200);
    assert!(info.contains("\"victim\""), "{info}");
    server.stop();
}
