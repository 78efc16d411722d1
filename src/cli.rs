//! The command line: argh definitions and the client commands that talk to a running daemon.
//!
//! Exit codes: 0 success, 1 the action failed or the config is invalid, 3 the daemon is not running.

use crate::client::{self, ClientError};
use crate::config::{Config, model};
use crate::daemon;
use crate::json::{self, object};
use argh::FromArgs;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/config/mnigs";

/// Exit code: the daemon does not answer.
pub const EXIT_NOT_RUNNING: i32 = 3;

fn default_config() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG)
}

#[derive(FromArgs, Debug)]
/// mnigs: Mesh Network Internet Gateway System.
pub struct Args {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
/// The subcommands.
pub enum Cmd {
    /// run the daemon
    Daemon(DaemonArgs),
    /// show the daemon's state
    Status(StatusArgs),
    /// list known gateways
    Gateways(GatewaysArgs),
    /// list subscriber sessions on this gateway
    Sessions(SessionsArgs),
    /// scan the mesh for gateways now
    Scan(ScanArgs),
    /// connect to a gateway
    Connect(ConnectArgs),
    /// leave the current gateway
    Disconnect(DisconnectArgs),
    /// check a configuration file
    CheckConfig(CheckArgs),
    /// single-host demo in network namespaces (root)
    Demo(DemoArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "daemon")]
/// Run the daemon in the foreground.
pub struct DaemonArgs {
    /// configuration file
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
}

macro_rules! read_command {
    ($t:ident, $name:literal, $doc:literal) => {
        #[derive(FromArgs, Debug)]
        #[argh(subcommand, name = $name)]
        #[doc = $doc]
        pub struct $t {
            /// configuration file
            #[argh(option, short = 'c', default = "default_config()")]
            pub config: PathBuf,
            /// print JSON
            #[argh(switch)]
            pub json: bool,
        }
    };
}
read_command!(StatusArgs, "status", "Show the daemon's state.");
read_command!(
    GatewaysArgs,
    "gateways",
    "List the gateways this node knows."
);
read_command!(
    SessionsArgs,
    "sessions",
    "List the subscriber sessions on this gateway."
);
read_command!(ScanArgs, "scan", "Scan the mesh for gateways now.");
read_command!(
    DisconnectArgs,
    "disconnect",
    "Leave the current gateway and stay offline until scan or connect."
);

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "connect")]
/// Connect to the gateway at ADDRESS.
pub struct ConnectArgs {
    /// gateway mesh address
    #[argh(positional)]
    pub address: String,
    /// gateway RPC port
    #[argh(option, short = 'p')]
    pub port: Option<u16>,
    /// tunnel method
    #[argh(option, short = 'm')]
    pub method: Option<String>,
    /// configuration file
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check-config")]
/// Check a configuration file; print every problem as FILE:LINE: section.option: message.
pub struct CheckArgs {
    /// configuration file
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
    /// print JSON: {"success", "file", "problems": [{file, line, place, severity, message}]}
    #[argh(switch)]
    pub json: bool,
    /// check the text on stdin instead (FILE only names it in messages); a JSON object
    /// {"config": TEXT}, as LuCI's rpcd plugin passes its arguments, is taken too
    #[argh(switch)]
    pub stdin: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
/// Build a four-node mesh in network namespaces, run a gateway and a subscriber, and reach the fake Internet through the tunnel.
pub struct DemoArgs {
    /// keep the demo running until Ctrl-C instead of tearing it down at once
    #[argh(switch)]
    pub hold: bool,
    /// the demo on cjdns: real cjdroute nodes (MNIGS_CJDROUTE or cjdroute on PATH) and IpTunnel
    #[argh(switch)]
    pub cjdns: bool,
}

/// Runs the parsed command line; returns the exit code.
pub fn main(args: Args) -> i32 {
    if args.version {
        println!("mnigs {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let Some(cmd) = args.command else {
        eprintln!("mnigs: no command given; try `mnigs help`");
        return 1;
    };
    match cmd {
        Cmd::Daemon(a) => match daemon::run(&a.config) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mnigs: {e}");
                1
            }
        },
        Cmd::CheckConfig(a) if a.stdin => check_config(&a.config, a.json, stdin_config(&a.config)),
        Cmd::CheckConfig(a) => check_config(&a.config, a.json, model::load(&a.config)),
        // The demo is the lab's program (lab/, a dev-only workspace member), never the router's.
        Cmd::Demo(_) => {
            eprintln!("mnigs: the demo is the lab's: cargo run --release -p mnigs-lab -- demo");
            1
        }
        Cmd::Status(a) => client_cmd(&a.config, a.json, "status", json!({}), print_status),
        Cmd::Gateways(a) => {
            client_cmd(&a.config, a.json, "listGateways", json!({}), print_gateways)
        }
        Cmd::Sessions(a) => {
            client_cmd(&a.config, a.json, "listSessions", json!({}), print_sessions)
        }
        Cmd::Scan(a) => client_cmd(&a.config, a.json, "scan", json!({}), print_scan),
        Cmd::Disconnect(a) => client_cmd(&a.config, a.json, "disconnect", json!({}), print_left),
        Cmd::Connect(a) => {
            if a.address.parse::<IpAddr>().is_err() {
                let msg = format!(
                    "'{}' is not an IPv4 or IPv6 address",
                    a.address.escape_debug()
                );
                return fail(a.json, &msg, 1);
            }
            let mut params = object!({"address": a.address});
            if let Some(p) = a.port {
                json::set(&mut params, "port", &p);
            }
            if let Some(m) = a.method {
                json::set(&mut params, "method", &m);
            }
            client_cmd(&a.config, a.json, "connect", params, print_connected)
        }
    }
}

type Checked = Result<(Config, Vec<model::Problem>), Vec<model::Problem>>;

/// `check-config --stdin`: the config text on stdin (at most 1 MiB), or `{"config": TEXT}`.
fn stdin_config(path: &Path) -> Checked {
    use std::io::Read;
    let problem = |message: String| {
        vec![model::Problem {
            severity: model::Severity::Error,
            file: path.to_path_buf(),
            line: 0,
            place: String::new(),
            message,
        }]
    };
    let mut text = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| problem(format!("cannot read stdin: {e}")))?;
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_slice(text.as_bytes())
            .map_err(|e| problem(format!("stdin is not JSON: {e}")))?;
        let Some(config) = v["config"].as_str() else {
            return Err(problem("the JSON on stdin has no \"config\" string".into()));
        };
        return model::from_text(config, path);
    }
    model::from_text(&text, path)
}

fn check_config(path: &Path, as_json: bool, checked: Checked) -> i32 {
    if as_json {
        let (ok, problems) = match checked {
            Ok((_, warnings)) => (true, warnings),
            Err(problems) => (false, problems),
        };
        let list: Vec<Value> = problems
            .iter()
            .map(|p| {
                object!({"file": p.file.display().to_string(), "line": p.line, "place": p.place,
                         "severity": if p.is_error() { "error" } else { "warning" },
                         "message": p.message, "text": p.to_string()})
            })
            .collect();
        let v = object!({"success": ok, "file": path.display().to_string(), "problems": list});
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
        return i32::from(!ok);
    }
    match checked {
        Ok((_, warnings)) => {
            for w in &warnings {
                println!("{w}");
            }
            println!("{}: ok", path.display());
            0
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            1
        }
    }
}

/// Where the CLI reaches the daemon: loopback when it listens on a wildcard address.
pub fn control_addr(cfg: &Config) -> SocketAddr {
    let ip = match cfg.main.listen.first() {
        None => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(IpAddr::V6(a)) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(IpAddr::V4(a)) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(a) => *a,
    };
    SocketAddr::new(ip, cfg.main.rpc_port)
}

fn client_cmd(path: &Path, as_json: bool, method: &str, params: Value, human: fn(&Value)) -> i32 {
    let cfg = match daemon::load_config(path) {
        Ok(c) => c,
        Err(e) => return fail(as_json, &format!("{}: {e}", path.display()), 1),
    };
    let addr = control_addr(&cfg);
    let timeout = if method == "scan" || method == "connect" {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    let (message, code) = match client::call_local(addr, method, params, timeout) {
        Ok(v) => {
            let failed = v.get("success") == Some(&Value::Bool(false));
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else if failed {
                eprintln!("mnigs: {}", s(&v["errorMsg"]));
            } else {
                human(&v);
            }
            return i32::from(failed);
        }
        Err(ClientError::Connect(a, e)) => (
            format!(
                "the daemon is not running (no answer on {a}: {e}); start it with `/etc/init.d/mnigs start` or `mnigs daemon -c FILE`"
            ),
            EXIT_NOT_RUNNING,
        ),
        Err(ClientError::Rpc(e)) if e.code == crate::rpc::dispatch::FORBIDDEN => (e.message, 1),
        Err(e) => (e.to_string(), 1),
    };
    fail(as_json, &message, code)
}

/// Reports a failure: on stderr, and with `--json` also as a JSON object on stdout (so that
/// scripts such as the LuCI backend always get JSON); returns `code`.
fn fail(as_json: bool, message: &str, code: i32) -> i32 {
    eprintln!("mnigs: {message}");
    if as_json {
        let v = object!({"success": false, "errorMsg": message, "exitCode": code,
                         "notRunning": code == EXIT_NOT_RUNNING});
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
    }
    code
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => json::text(other),
    }
}

fn print_left(v: &Value) {
    match v["left"].as_str() {
        Some(name) => {
            println!("left {name}; staying offline until `mnigs scan` or `mnigs connect`")
        }
        None => println!("not connected; staying offline until `mnigs scan` or `mnigs connect`"),
    }
}

fn print_connected(v: &Value) {
    println!(
        "connected to {}; `mnigs status` shows the tunnel",
        s(&v["gateway"])
    );
}

fn print_status(v: &Value) {
    println!("node        {} (mnigs {})", s(&v["name"]), s(&v["version"]));
    match &v["gateway"] {
        Value::Null => println!("gateway     disabled"),
        g => println!(
            "gateway     {} of {} subscribers, methods {}",
            s(&g["terms"]["subscribers"]),
            s(&g["terms"]["maxSubscribers"]),
            g["methods"]
                .as_array()
                .map(|m| m.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        ),
    }
    match &v["subscriber"] {
        Value::Null => println!("subscriber  disabled"),
        sub => {
            println!("subscriber  {}", s(&sub["state"]));
            if !sub["gateway"].is_null() {
                let g = &sub["gateway"];
                println!(
                    "  via       {} at {} port {}",
                    s(&g["name"]),
                    s(&g["address"]),
                    s(&g["port"])
                );
                let addresses: Vec<String> = [&sub["ipv4"], &sub["ipv6"]]
                    .into_iter()
                    .filter(|a| !a.is_null())
                    .map(s)
                    .collect();
                println!(
                    "  tunnel    {} {} ({})",
                    s(&sub["interface"]),
                    addresses.join(", "),
                    s(&sub["method"])
                );
                println!("  lease     {} s left", s(&sub["leaseLeft"]));
                println!("  quality   {}", quality_line(g));
            }
            if !sub["standby"].is_null() {
                let b = &sub["standby"];
                println!(
                    "  standby   {} via {}, {}",
                    s(&b["name"]),
                    s(&b["interface"]),
                    quality_line(b)
                );
            }
            let f = &sub["lastFailover"];
            if !f.is_null() {
                println!(
                    "  last move {} {} → {} in {:.0} ms: {}",
                    s(&f["kind"]),
                    s(&f["from"]),
                    s(&f["to"]),
                    f["durationMs"].as_f64().unwrap_or(0.0),
                    s(&f["reason"])
                );
            }
            if !sub["lastError"].is_null() {
                println!("  error     {}", s(&sub["lastError"]));
            }
        }
    }
}

/// Score, RTT and loss of a gateway in `status`.
fn quality_line(g: &Value) -> String {
    let q = &g["quality"];
    format!(
        "score {:.1}, rtt {}, loss {:.0} %",
        g["score"].as_f64().unwrap_or(f64::NAN),
        q["rttMs"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{r:.1} ms")),
        q["loss"].as_f64().unwrap_or(0.0) * 100.0
    )
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    let empty = rows.is_empty();
    for r in rows {
        line(r);
    }
    if empty {
        println!("(none)");
    }
}

fn print_gateways(v: &Value) {
    let rows = v["gateways"].as_array().cloned().unwrap_or_default();
    table(
        &[
            "NAME", "ADDRESS", "PORT", "HOPS", "FOUND BY", "LOAD", "SEEN", "FAILURES",
        ],
        rows.iter()
            .map(|g| {
                let t = &g["info"]["terms"];
                vec![
                    s(&g["name"]),
                    addresses(g),
                    s(&g["port"]),
                    hops(&g["hops"]),
                    s(&g["how"]),
                    format!("{}/{}", s(&t["subscribers"]), s(&t["maxSubscribers"])),
                    format!("{}s ago", s(&g["seenAgo"])),
                    s(&g["failures"]),
                ]
            })
            .collect(),
    );
}

/// A node's addresses (`listGateways` lists each node once), comma-separated.
fn addresses(g: &Value) -> String {
    match g["addresses"].as_array() {
        Some(list) if !list.is_empty() => list.iter().map(s).collect::<Vec<_>>().join(","),
        _ => s(&g["address"]),
    }
}

/// A hop count, or "?" where nobody knows it (0).
fn hops(v: &Value) -> String {
    match v.as_u64() {
        Some(n) if n > 0 => n.to_string(),
        _ => "?".into(),
    }
}

fn print_sessions(v: &Value) {
    let rows = v["sessions"].as_array().cloned().unwrap_or_default();
    table(
        &["NAME", "ADDRESS", "METHOD", "IPV4", "IPV6", "EXPIRES"],
        rows.iter()
            .map(|x| {
                vec![
                    s(&x["name"]),
                    s(&x["address"]),
                    s(&x["method"]),
                    s(&x["ipv4"]),
                    s(&x["ipv6"]),
                    format!("{}s", s(&x["expiresIn"])),
                ]
            })
            .collect(),
    );
}

fn print_scan(v: &Value) {
    let rows = v["gateways"].as_array().cloned().unwrap_or_default();
    table(
        &["NAME", "ADDRESS", "PORT", "HOPS", "FOUND BY", "RTT"],
        rows.iter()
            .map(|g| {
                vec![
                    s(&g["name"]),
                    addresses(g),
                    s(&g["port"]),
                    hops(&g["hops"]),
                    s(&g["how"]),
                    format!("{:.1} ms", g["rttMs"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect(),
    );
}
