//! Hostile requests against a real gateway RPC server in this process (no root needed): each
//! gets a clear error and no program runs. One test function, one process: the command log is
//! process-wide.

use mnigs::config::Config;
use mnigs::gateway::service::Gateway;
use mnigs::rpc::dispatch::Services;
use mnigs::rpc::server::Server;
use mnigs::store::Store;
use mnigs::sys::cmd;
use mnigs::tunnel::Method;
use mnigs::tunnel::socks::{self, Socks};
use mnigs::tunnel::softether::{self, Softether};
use mnigs::tunnel::wireguard::Wireguard;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

const KEY: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

fn raw_post(addr: SocketAddr, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may refuse before reading everything.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    raw_post(addr, body.to_string().as_bytes()).1
}

fn start(cfg: Config) -> (Server, SocketAddr) {
    let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
    let wg = Wireguard::with_keys("mnigs-nx-test", 51820, 1420, KEY.into(), KEY.into());
    let gw = Gateway::new(cfg.gateway.clone(), vec![Box::new(wg)], store.clone(), None);
    let node = Arc::new(Services::new(cfg, store, Some(gw), None));
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let server = Server::start(&[ip], 0, node).unwrap();
    let port = server.port();
    (server, SocketAddr::new(ip, port))
}

fn connection(name: &str, key: Value) -> Value {
    json!({"name": name, "method": "wireguard", "options": {"publicKey": key}})
}

/// Refused either as an application failure or as a JSON-RPC error (a too-large body, a bad type).
fn assert_refused(v: &Value, what: &str) {
    let failed = v["result"]["success"] == false && v["result"]["errorMsg"].is_string();
    let error = v["error"]["message"].is_string();
    assert!(failed || error, "{what} was not refused");
}

fn assert_failure(v: &Value, mentions: &str) {
    let r = &v["result"];
    assert_eq!(r["success"], false, "{v}");
    let msg = r["errorMsg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(mentions),
        "error '{msg}' should mention '{mentions}'"
    );
}

/// More than a hundred values that must never reach a program's argv.
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "a;reboot",
        "a|reboot",
        "a&reboot",
        "a&&reboot",
        "a||reboot",
        "$(reboot)",
        "`reboot`",
        "${IFS}",
        "a>b",
        "a<b",
        "a>>b",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\0b",
        "a b",
        " a",
        "a ",
        "-x",
        "--help",
        "-",
        "--",
        "-rf",
        "'a'",
        "\"a\"",
        "a'b",
        "a\"b",
        "a\\b",
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "*",
        "?",
        "[a]",
        "{a,b}",
        "~root",
        "a#b",
        "#a",
        "a%n",
        "%s%s%s",
        "a=b",
        "a:b",
        "a,b",
        "a\u{0}",
        "a\u{7f}",
        "a\u{1b}[31m",
        "a\u{200b}b",
        "a\u{202e}b",
        "a\u{feff}",
        "\u{430}dmin",
        "wg\u{2010}0",
        "ａｂｃ",
        "名前",
        "😀",
        "a\u{85}b",
        "a\u{2028}b",
        "\u{ff0d}x",
        "a\\x00",
        "%00",
        "%0a",
        "a\u{c}b",
        "a\u{b}b",
        "a\u{3000}b",
        "\u{200d}",
        "a\u{180e}b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in [64, 65, 256, 4097, 70_000] {
        v.push("a".repeat(n));
    }
    for c in [
        "$", ";", "|", "&", "`", "\\", "'", "\"", "\n", "*", "!", "(", ")", "<", ">", "^", "~",
        "#", " ",
    ] {
        v.push(format!("eth0{c}"));
        v.push(format!("{c}eth0"));
    }
    v.push(String::new());
    v
}

#[test]
fn hostile_requests_get_clear_errors_and_run_nothing() {
    let mut cfg = Config::default();
    cfg.gateway.enabled = true;
    let (server, addr) = start(cfg.clone());
    cmd::clear_history();

    // Protocol-level faults.
    let (_, v) = raw_post(addr, b"this is not json");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (status, v) = raw_post(addr, &vec![b' '; 1024 * 1024]);
    assert_eq!(status, 413);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 65536"),
        "{v}"
    );
    assert_eq!(
        call(addr, "noSuchMethod", json!({}))["error"]["code"],
        -32601
    );
    let wrong_type = call(
        addr,
        "requestConnection",
        json!({"name": 5, "method": "wireguard"}),
    );
    assert_eq!(wrong_type["error"]["code"], -32602);
    assert!(
        wrong_type["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name must be a string")
    );
    assert_eq!(
        call(addr, "renewConnection", json!({}))["error"]["code"],
        -32602
    );
    assert_eq!(
        call(addr, "requestConnection", json!([1, 2]))["error"]["code"],
        -32602
    );

    // Application-level refusals, each naming the problem.
    let openvpn = json!({"name": "n1", "method": "openvpn", "options": {}});
    assert_failure(&call(addr, "requestConnection", openvpn), "not offered");
    for bad_key in [
        json!("short"),
        json!(KEY.replace('=', "A")),
        json!("$(reboot)"),
        json!("-x"),
        json!(42),
        json!(null),
    ] {
        assert_failure(
            &call(addr, "requestConnection", connection("n1", bad_key)),
            "publicKey",
        );
    }
    for bad_name in [
        "a;rm -rf /",
        "$(reboot)",
        "`id`",
        "a\nb",
        "-x",
        "",
        "näme",
        &"x".repeat(100),
    ] {
        assert_failure(
            &call(addr, "requestConnection", connection(bad_name, json!(KEY))),
            "name",
        );
    }
    let bad_sid = json!({"sid": "../../etc", "name": "n1", "method": "wireguard", "options": {"publicKey": KEY}});
    assert_failure(&call(addr, "requestConnection", bad_sid), "sid");
    assert_failure(
        &call(addr, "renewConnection", json!({"sid": "0".repeat(32)})),
        "unknown",
    );
    assert_failure(
        &call(addr, "releaseConnection", json!({"sid": "x; ls"})),
        "unknown",
    );

    // The same table through every string parameter of the gateway's methods.
    let values = hostile_values();
    assert!(values.len() >= 100, "{} hostile values", values.len());
    for bad in &values {
        let what = |field: &str| format!("{field} {:?}", bad.chars().take(40).collect::<String>());
        let m = json!({"name": "n1", "method": bad, "options": {"publicKey": KEY}});
        let sid =
            json!({"sid": bad, "name": "n1", "method": "wireguard", "options": {"publicKey": KEY}});
        let requests = [
            (
                "requestConnection",
                connection(bad, json!(KEY)),
                what("name"),
            ),
            (
                "requestConnection",
                connection("n1", json!(bad)),
                what("publicKey"),
            ),
            ("requestConnection", m, what("method")),
            ("requestConnection", sid, what("sid")),
            ("renewConnection", json!({"sid": bad}), what("renew sid")),
            (
                "releaseConnection",
                json!({"sid": bad}),
                what("release sid"),
            ),
            ("connect", json!({"address": bad}), what("connect address")),
        ];
        for (method, params, what) in requests {
            assert_refused(&call(addr, method, params), &what);
        }
    }

    assert_eq!(
        cmd::history(),
        Vec::<String>::new(),
        "no program ran for any hostile request"
    );
    assert_eq!(
        call(addr, "listSessions", json!({}))["result"]["sessions"],
        json!([])
    );

    // Control: a well-formed request does reach the tunnel method (which fails here, as the
    // interface does not exist), and the failed grant is undone.
    let ok = call(addr, "requestConnection", connection("n1", json!(KEY)));
    assert_eq!(ok["result"]["temporaryError"], true, "{ok}");
    assert!(
        cmd::history()
            .iter()
            .any(|c| c.starts_with("wg set mnigs-nx-test peer")),
        "{:?}",
        cmd::history()
    );
    assert_eq!(
        call(addr, "listSessions", json!({}))["result"]["sessions"],
        json!([])
    );
    server.stop();

    // And through UCI: every option that reaches an argv rejects each value, naming the option.
    cmd::clear_history();
    for bad in &values {
        let quoted = bad.replace('\\', "\\\\").replace('"', "\\\"");
        for (section, option) in [
            ("gateway", "wan_interface"),
            ("main", "name"),
            ("wireguard", "interface"),
            ("gateway", "method"),
            ("socks", "interface"),
            ("socks", "listen"),
            ("socks", "port"),
            ("socks", "client"),
            ("softether", "admin"),
            ("softether", "hub"),
            ("softether", "port"),
            ("softether", "device"),
            ("softether", "client_nic"),
        ] {
            let ty = if section == "main" { "mnigs" } else { section };
            let text = format!("config {ty} '{section}'\n\toption {option} \"{quoted}\"\n");
            let result = mnigs::config::model::from_text(&text, "t".as_ref());
            if bad.is_empty() && (option == "name" || option == "method") {
                continue; // an empty name means the host name; an empty method list is allowed
            }
            let problems =
                result.expect_err(&format!("{section}.{option} = {bad:?} must be refused"));
            assert!(
                problems
                    .iter()
                    .any(|p| p.line >= 1 && (p.place.contains(option) || p.place.is_empty())),
                "{section}.{option} = {bad:?}: {problems:?}"
            );
        }
    }
    assert_eq!(
        cmd::history(),
        Vec::<String>::new(),
        "config checks run nothing either"
    );

    // A hostile gateway's socks grant: every field is refused before the subscriber runs
    // anything (tun2proxy's argv carries the port, user name and password).
    let dir = std::env::temp_dir().join(format!("mnigs-hostile-socks-{}", std::process::id()));
    let mut socks = Socks::new(
        socks::Side::Client,
        &dir,
        "mnigs-nx-sx",
        10800,
        1500,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .unwrap();
    let good = json!({"port": 10800, "username": "mn1", "password": "abc"});
    for bad in &values {
        for field in ["username", "password", "port"] {
            let mut extra = good.clone();
            extra[field] = json!(bad);
            let mut grant = json!({"success": true, "sid": "0".repeat(32), "timeout": 60,
                "method": "socks", "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
            for (k, v) in extra.as_object().unwrap() {
                grant[k] = v.clone();
            }
            let grant: mnigs::protocol::Grant = serde_json::from_value(grant).unwrap();
            let e = socks
                .connect(IpAddr::V4(Ipv4Addr::LOCALHOST), &grant)
                .expect_err(&format!("socks grant {field} = {bad:?} must be refused"));
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
    for port in [json!(0), json!(65536), json!(-1), json!(1.5), json!(null)] {
        let grant: mnigs::protocol::Grant = serde_json::from_value(json!({"success": true,
            "sid": "0".repeat(32), "timeout": 60, "method": "socks", "ipv4": "100.127.0.2",
            "cidr4": 24, "ipv4gateway": "100.127.0.1", "port": port, "username": "u",
            "password": "p"}))
        .unwrap();
        assert!(
            socks
                .connect(IpAddr::V4(Ipv4Addr::LOCALHOST), &grant)
                .is_err()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        cmd::history(),
        Vec::<String>::new(),
        "no program ran for any hostile socks grant"
    );

    // The same for a softether grant: its fields go into vpncmd commands.
    let dir = std::env::temp_dir().join(format!("mnigs-hostile-se-{}", std::process::id()));
    let mut se = Softether::new(
        softether::Side::Client,
        softether::Setup {
            vpncmd: "vpncmd".into(),
            admin: "127.0.0.1:5555".into(),
            admin_password: String::new(),
            hub: "mnigs".into(),
            port: 443,
            device: "mnnx".into(),
            directory: dir.clone(),
        },
    )
    .unwrap();
    let good = json!({"port": 443, "hub": "mnigs", "username": "mn1", "password": "abc",
        "serverCert": "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"});
    for bad in &values {
        for field in ["hub", "username", "password", "port", "serverCert"] {
            let mut grant = json!({"success": true, "sid": "0".repeat(32), "timeout": 60,
                "method": "softether", "ipv4": "100.127.0.2", "cidr4": 24,
                "ipv4gateway": "100.127.0.1"});
            for (k, v) in good.as_object().unwrap() {
                grant[k] = v.clone();
            }
            grant[field] = json!(bad);
            let grant: mnigs::protocol::Grant = serde_json::from_value(grant).unwrap();
            let e = se
                .connect(IpAddr::V4(Ipv4Addr::LOCALHOST), &grant)
                .expect_err(&format!(
                    "softether grant {field} = {bad:?} must be refused"
                ));
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        cmd::history(),
        Vec::<String>::new(),
        "no program ran for any hostile softether grant"
    );

    // Local control methods are refused to callers outside authorized_network.
    cfg.main.authorized_network = vec!["10.99.0.0/16".parse().unwrap()];
    let (server, addr) = start(cfg);
    for m in [
        "status",
        "listGateways",
        "listSessions",
        "scan",
        "connect",
        "disconnect",
    ] {
        let v = call(addr, m, json!({}));
        assert_eq!(v["error"]["code"], -32001, "{m}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("authorized_network")
        );
    }
    assert_eq!(
        call(addr, "nodeInfo", json!({}))["result"]["gateway"],
        true,
        "nodeInfo stays public"
    );
    server.stop();
}
