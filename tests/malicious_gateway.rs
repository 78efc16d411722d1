//! "A malicious gateway cannot harm its subscribers" (issue 20), tried as an attacker would: a
//! fake gateway speaking the protocol, driven by a scenario per test, in a namespace of its own,
//! and a real `mnigs daemon` subscriber with a LAN (`lan0`: 192.168.50.1/24, fd50::1/64) and a
//! route to a rival gateway's mesh address (10.77.1.9), linked by `mesh0` (10.77.0.0/24,
//! fd77::/64). Each test also shows that the attack is seen when it is not stopped (a positive
//! control), so it can fail.
//!
//! Items: grants (1), hook environment (3), log lines (4), bounds (5), identity (6), OpenVPN
//! pushes (7, a real mnigs gateway whose OpenVPN server pushes more than the grant), gossip (8);
//! the built-in page's text-only rendering (2) is checked without root.

use mnigs::client;
use mnigs_lab::netlab::Lab;
use mnigs_lab::testbed::e2e_gate;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const RPC: &str = "127.0.0.1:65533";

type Behaviour = Box<dyn FnMut(IpAddr, &str, &Value) -> Value + Send>;

/// One call the fake gateway received: the address it was sent to, the method and params.
#[derive(Debug, Clone)]
struct Seen {
    to: IpAddr,
    method: String,
    params: Value,
}

/// A fake gateway: answers JSON-RPC on port 65533 of every address of its namespace as its
/// behaviour says, and records every call.
struct Fake {
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

/// Starts a thread inside network namespace `ns` running `f` (a namespace is per thread).
fn thread_in<F: FnOnce() + Send + 'static>(ns: &str, f: F) {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        tx.send(()).unwrap();
        f();
    });
    rx.recv().unwrap();
}

fn listen_in(ns: &str, at: SocketAddr) -> TcpListener {
    let (tx, rx) = std::sync::mpsc::channel();
    thread_in(ns, move || {
        let l = TcpListener::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}"));
        tx.send(l).unwrap();
    });
    rx.recv().unwrap()
}

fn read_request(s: &mut std::net::TcpStream) -> Option<Value> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return serde_json::from_slice(&buf[end + 4..end + 4 + len]).ok();
            }
        }
    }
}

impl Fake {
    fn start(ns: &str, behaviour: Behaviour) -> Fake {
        let listener = listen_in(ns, "[::]:65533".parse().unwrap());
        listener.set_nonblocking(true).unwrap();
        let fake = Fake {
            behaviour: Arc::new(Mutex::new(behaviour)),
            seen: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (b, seen, stop) = (fake.behaviour.clone(), fake.seen.clone(), fake.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (b, seen) = (b.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let to = s.local_addr().unwrap().ip().to_canonical();
                    let Some(req) = read_request(&mut s) else {
                        return;
                    };
                    let method = req["method"].as_str().unwrap_or("").to_string();
                    let params = req["params"].clone();
                    seen.lock().unwrap().push(Seen {
                        to,
                        method: method.clone(),
                        params: params.clone(),
                    });
                    let result = (b.lock().unwrap())(to, &method, &params);
                    let body =
                        json!({"jsonrpc": "2.0", "id": req["id"], "result": result}).to_string();
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        fake
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn node_info(name: &str) -> Value {
    json!({"success": true, "name": name, "version": "0.1.0", "gateway": true, "methods": ["route"],
           "terms": {"maxSubscribers": 10, "subscribers": 0, "leaseSeconds": 60, "price": 0,
                     "bandwidthDown": 0, "bandwidthUp": 0},
           "uplink": {"healthy": true, "checkedAgo": 1}, "gateways": []})
}

fn grant(extra: Value) -> Value {
    let mut g = json!({"success": true, "sid": "00112233445566778899aabbccddeeff", "timeout": 60,
        "method": "route", "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
    for (k, v) in extra.as_object().unwrap() {
        g[k] = v.clone();
    }
    g
}

/// A gateway answering `info` to nodeInfo and `grant` to requestConnection.
fn gateway(info: Value, grant: Value) -> Behaviour {
    Box::new(move |_, method, _| match method {
        "nodeInfo" => info.clone(),
        "requestConnection" => grant.clone(),
        _ => json!({"success": true, "timeout": 60}),
    })
}

/// The subscriber and the fake gateway's namespaces.
struct Bed {
    lab: Lab,
    sub: String,
    gw: String,
    daemon: Option<u32>,
}

impl Bed {
    fn new(label: &str) -> Bed {
        let lab = Lab::new(label).expect("lab");
        let sub = lab.add_mesh_ns("sub").unwrap();
        let gw = lab.add_mesh_ns("gw").unwrap();
        lab.veth(&sub, "mesh0", &gw, "mesh0").unwrap();
        let bed = Bed {
            lab,
            sub,
            gw,
            daemon: None,
        };
        bed.batch(
            "sub",
            "addr add 10.77.0.1/24 dev mesh0\naddr add fd77::1/64 dev mesh0 nodad\n\
             link add lan0 type veth peer name lan1\nlink set lan0 up\nlink set lan1 up\naddr add 192.168.50.1/24 dev lan0\n\
             addr add fd50::1/64 dev lan0 nodad\nroute add 10.77.1.9/32 via 10.77.0.3\n",
        );
        bed.batch(
            "gw",
            "addr add 10.77.0.3/24 dev mesh0\naddr add fd77::3/64 dev mesh0 nodad\n",
        );
        bed
    }

    fn ns(&self, node: &str) -> &str {
        if node == "sub" { &self.sub } else { &self.gw }
    }

    /// Runs `ip -batch -` with `lines` in `node`.
    fn batch(&self, node: &str, lines: &str) {
        self.lab
            .exec_full(
                self.ns(node),
                &["ip", "-batch", "-"],
                Some(lines),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{node}: {e}"));
    }

    fn exec(&self, node: &str, argv: &[&str]) -> String {
        self.lab.exec(self.ns(node), argv).unwrap()
    }

    fn path(&self, f: &str) -> PathBuf {
        self.lab.dir.join(f)
    }

    /// Writes the subscriber's config (`extra`: lines for its subscriber section; `sections`:
    /// more sections) and a hook recording each call, then starts the daemon.
    fn start_subscriber(&mut self, extra: &str, sections: &str) {
        let hooks = self.path("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let hook = self.path("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nenv > '{}/'\"$MNIGS_EVENT.$$\"\n",
                hooks.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = format!(
            "config mnigs 'main'\n\toption name 'sub'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'route'\n\
             \toption scan_interval '3600'\n\toption on_register '{hook}'\n\toption on_connect '{hook}'\n{extra}\n\
             config discovery 'd'\n\toption method 'routes'\n\toption protocol '99'\n\toption timeout_ms '800'\n\n\
             config openvpn 'openvpn'\n\toption client_interface 'ovc'\n\toption directory '{ovpn}'\n\n{sections}",
            db = self.path("sub.db").display(),
            hook = hook.display(),
            ovpn = self.path("sub-ovpn").display(),
        );
        std::fs::write(self.path("sub.uci"), conf).unwrap();
        let conf = self.path("sub.uci").display().to_string();
        let pid = self
            .lab
            .spawn(
                &self.sub.clone(),
                &[EXE, "daemon", "-c", &conf],
                &self.path("sub.log"),
            )
            .unwrap();
        self.daemon = Some(pid);
        let start = Instant::now();
        while self.rpc("status", json!({})).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A control call to the subscriber daemon as its owner (with the page token), from inside its
    /// namespace.
    fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let method = method.to_string();
        self.lab
            .run_in(&self.sub, move || {
                client::call_local(
                    RPC.parse().unwrap(),
                    &method,
                    params,
                    Duration::from_secs(60),
                )
                .map_err(|e| e.to_string())
            })
            .unwrap()
    }

    fn connect(&self, address: &str) -> Value {
        self.rpc("connect", json!({"address": address})).unwrap()
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("sub.log")).unwrap_or_default())
            .to_string()
    }

    /// Addresses and routes of every table, both families, of the subscriber.
    fn snapshot(&self) -> String {
        let mut out = String::new();
        for argv in [
            &["ip", "-o", "addr", "show"][..],
            &["ip", "-4", "route", "show", "table", "all"],
            &["ip", "-6", "route", "show", "table", "all"],
        ] {
            out.push_str(&self.exec("sub", argv));
        }
        out
    }

    /// The hook calls recorded so far: (event, environment).
    fn hook_calls(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in std::fs::read_dir(self.path("hooks")).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let event = name.split('.').next().unwrap_or("").to_string();
            out.push((event, std::fs::read_to_string(f.path()).unwrap_or_default()));
        }
        out
    }

    /// Waits until `ok`, at most 60 s (the OpenVPN test's server and client take most of 30 s on
    /// a loaded machine: it once timed out there at 30 s).
    fn wait_for(&self, what: &str, mut ok: impl FnMut(&Bed) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon.take() {
            self.lab.stop(pid, Duration::from_secs(5));
        }
    }
}

fn no_control(v: &str) -> bool {
    !v.chars().any(|c| c.is_control() && c != '\n')
}

/// Items 1 and 3: grants that would put the LAN, the mesh or a rival gateway's address on the
/// tunnel are refused, released and leave the node as it was; no hook sees them.
#[test]
fn grants_cannot_take_the_lan_the_mesh_or_a_rival() {
    if !e2e_gate("grants_cannot_take_the_lan_the_mesh_or_a_rival") {
        return;
    }
    let mut bed = Bed::new("mgga");
    let fake = Fake::start(&bed.gw.clone(), gateway(node_info("gw"), grant(json!({}))));
    bed.start_subscriber("", "");
    let before = bed.snapshot();
    let attacks = [
        (
            "half the LAN",
            json!({"ipv4": "192.168.50.2", "cidr4": 25, "ipv4gateway": "192.168.50.1"}),
            "outside",
        ),
        (
            "a rival gateway's mesh address",
            json!({"ipv4": "10.77.1.9", "cidr4": 32, "ipv4gateway": "10.77.1.1"}),
            "outside",
        ),
        (
            "the mesh /64",
            json!({"ipv6": "fd77::5", "cidr6": 96, "ipv6gateway": "fd77::1"}),
            "overlaps fd77::",
        ),
        (
            "part of the LAN's /64",
            json!({"ipv6": "fd50::80", "cidr6": 121}),
            "of lan0",
        ),
        ("a /8", json!({"ipv4": "100.64.0.2", "cidr4": 8}), "cidr4"),
        (
            "a newline in the address",
            json!({"ipv4": "100.127.0.2\nMNIGS_X=1"}),
            "ipv4",
        ),
        (
            "a sid for the hook",
            json!({"sid": "ab\nMNIGS_SID=$(reboot)"}),
            "sid",
        ),
        ("another method", json!({"method": "wireguard"}), "method"),
    ];
    for (what, g, needle) in attacks {
        let sid = grant(g.clone())["sid"].clone();
        fake.set(gateway(node_info("gw"), grant(g)));
        let released_before = fake
            .seen()
            .iter()
            .filter(|s| s.method == "releaseConnection")
            .count();
        let out = bed.connect("10.77.0.3");
        assert_eq!(out["success"], false, "{what}: {out}");
        let msg = out["errorMsg"].as_str().unwrap();
        assert!(
            msg.contains("unacceptable grant") && msg.contains(needle),
            "{what}: {msg}"
        );
        assert!(no_control(msg), "{what}: {msg:?}");
        assert_eq!(bed.snapshot(), before, "{what}: the node changed");
        let released: Vec<Seen> = fake
            .seen()
            .into_iter()
            .filter(|s| s.method == "releaseConnection")
            .collect();
        assert_eq!(released.len(), released_before + 1, "{what}: released");
        assert_eq!(released.last().unwrap().params["sid"], sid, "{what}");
    }
    assert!(
        bed.hook_calls().is_empty(),
        "a hook ran: {:?}",
        bed.hook_calls()
    );
    // Counted as failures of that gateway.
    let st = bed.rpc("status", json!({})).unwrap();
    assert!(
        st["subscriber"]["lastError"]
            .as_str()
            .unwrap()
            .contains("unacceptable grant"),
        "{st}"
    );
    // Positive control: a grant inside the allow rule is used, and the hook sees it.
    fake.set(gateway(node_info("gw"), grant(json!({}))));
    let out = bed.connect("10.77.0.3");
    assert_eq!(out["success"], true, "{out}\n{}", bed.log());
    assert!(
        bed.exec("sub", &["ip", "-o", "addr", "show", "dev", "mesh0"])
            .contains("100.127.0.2/32")
    );
    bed.wait_for("the register hook", |b| {
        b.hook_calls().iter().any(|(e, _)| e == "register")
    });
    let calls = bed.hook_calls();
    let (_, env) = calls.iter().find(|(e, _)| e == "register").unwrap();
    assert!(env.contains("MNIGS_IPV4=100.127.0.2\n"), "{env}");
    assert!(env.contains("MNIGS_GATEWAY_NAME=gw\n"), "{env}");
}

/// Items 3 and 4: a hostile name or refusal text reaches no log line, hook or status as is.
#[test]
fn hostile_text_forges_no_log_line_and_reaches_no_hook() {
    if !e2e_gate("hostile_text_forges_no_log_line_and_reaches_no_hook") {
        return;
    }
    let mut bed = Bed::new("mggb");
    bed.batch("gw", "addr add 10.77.0.4/24 dev mesh0\n");
    let evil_name = "gw\nmnigs[1] info: forged name\u{1b}[31m$(reboot)";
    let evil_refusal = "full\nmnigs[1] error: forged refusal\u{1b}]0;pwned\u{7}";
    let fake = Fake::start(
        &bed.gw.clone(),
        Box::new(
            move |to, method, _| match (to.to_string().as_str(), method) {
                ("10.77.0.3", "nodeInfo") => node_info(evil_name),
                (_, "nodeInfo") => node_info("gw4"),
                (_, "requestConnection") => {
                    json!({"success": false, "errorMsg": evil_refusal, "temporaryError": false})
                }
                _ => json!({"success": true}),
            },
        ),
    );
    bed.start_subscriber("", "");
    let out = bed.connect("10.77.0.3");
    assert_eq!(out["success"], false, "{out}");
    assert!(
        out["errorMsg"].as_str().unwrap().contains("nodeInfo name"),
        "{out}"
    );
    let out = bed.connect("10.77.0.4");
    assert_eq!(out["success"], false, "{out}");
    let msg = out["errorMsg"].as_str().unwrap();
    assert!(msg.contains("forged refusal") && no_control(msg), "{msg:?}");
    // Positive control: both answers were received.
    let seen = fake.seen();
    assert!(seen.iter().any(|s| s.method == "requestConnection"));
    let log = bed.log();
    assert!(
        log.contains("forged refusal"),
        "the refusal is logged (escaped)"
    );
    let pid = bed.daemon.unwrap();
    for line in log.lines() {
        if line.contains("forged") {
            assert!(
                line.starts_with(&format!("mnigs[{pid}] ")),
                "forged line: {line:?}"
            );
        }
    }
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{7}'),
        "raw escape bytes in the log"
    );
    let st = bed.rpc("status", json!({})).unwrap();
    assert!(no_control(&st.to_string()));
    assert!(bed.hook_calls().is_empty());
}

/// Item 5: huge answers are refused at the door; hundreds of maximal gateways leave the store,
/// the daemon's memory and the answers to `listGateways` bounded.
#[test]
fn huge_answers_and_many_gateways_stay_bounded() {
    if !e2e_gate("huge_answers_and_many_gateways_stay_bounded") {
        return;
    }
    let mut bed = Bed::new("mggc");
    // bench/malicious_gateways.sh sets MNIGS_BENCH_GATEWAYS (e.g. 1000).
    let many: u32 = std::env::var("MNIGS_BENCH_GATEWAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let huge = 16u32;
    let addr = |i: u32| format!("10.77.{}.{}", 2 + i / 250, 1 + i % 250);
    let mut gw_lines = String::new();
    let mut sub_lines = String::new();
    for i in 0..huge + many {
        gw_lines.push_str(&format!("addr add {}/32 dev mesh0\n", addr(i)));
        sub_lines.push_str(&format!("route add {}/32 dev mesh0 proto 99\n", addr(i)));
    }
    bed.batch("gw", &gw_lines);
    bed.batch("sub", &sub_lines);
    let big_name = "x".repeat(1 << 20);
    let _fake = Fake::start(
        &bed.gw.clone(),
        Box::new(move |to, method, _| {
            let IpAddr::V4(v4) = to else { return json!({}) };
            let o = v4.octets();
            let i = u32::from(o[2] - 2) * 250 + u32::from(o[3]) - 1;
            match method {
                "nodeInfo" if i < huge => node_info(&big_name),
                "nodeInfo" => {
                    // As large as the checks allow: a 63-character name, 16 methods, 16 entries.
                    let mut info = node_info(&format!("{:x<63}", format!("g{i}-")));
                    info["methods"] = json!(vec!["route"; 16]);
                    info["gateways"] = json!(
                        (0..16)
                            .map(|j| json!({"address": format!("10.77.0.{}", 100 + j),
                        "port": 65533, "seenAgo": 1}))
                            .collect::<Vec<_>>()
                    );
                    info["uplink"]["healthy"] = json!(false);
                    info
                }
                _ => json!({"success": false, "errorMsg": "no", "temporaryError": false}),
            }
        }),
    );
    bed.start_subscriber("", "");
    let rss = |b: &Bed| -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", b.daemon.unwrap())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss(&bed);
    let started = Instant::now();
    let scan = bed.rpc("scan", json!({})).expect("scan answers");
    let took = started.elapsed();
    let found = scan["gateways"].as_array().unwrap();
    // The maximal ones are gateways (a few may miss the probe timeout on a loaded machine), the
    // huge ones are dropped.
    let n = found.len() as u32;
    assert!(
        n <= many && n >= many * 3 / 4,
        "{n} of {many} gateways found"
    );
    assert!(
        found
            .iter()
            .all(|g| g["name"].as_str().unwrap().len() <= 63)
    );
    let listed = bed
        .rpc("listGateways", json!({}))
        .expect("listGateways answers");
    let stored = listed["gateways"].as_array().unwrap().len();
    assert_eq!(stored, found.len().min(256), "store capped");
    let answer = listed.to_string().len();
    let db = std::fs::metadata(bed.path("sub.db")).unwrap().len()
        + std::fs::metadata(bed.path("sub.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let after = rss(&bed);
    // A second and third scan of the same mesh: memory stays where it is.
    bed.rpc("scan", json!({})).expect("scan answers");
    bed.rpc("scan", json!({})).expect("scan answers");
    let again = rss(&bed);
    eprintln!(
        "malicious_gateway bounds: {huge} huge + {many} maximal gateways ({n} answered in time), scan {took:?}, \
         RSS {before} -> {after} kB (after two more scans {again} kB), store {stored} rows, DB+WAL {db} bytes, listGateways {answer} bytes"
    );
    assert!(answer < 1 << 20, "listGateways answer {answer} bytes");
    assert!(db < 8 << 20, "database {db} bytes");
    assert!(after < before + 30_000, "RSS {before} -> {after} kB");
    assert!(
        again < after + 4_000,
        "RSS grows scan after scan: {after} -> {again} kB"
    );
}

/// Item 6: a node calling itself like the preferred gateway and refusing everyone neither hides
/// it nor makes it pay; its "uplink unhealthy" does not drop the real one.
#[test]
fn an_impostor_cannot_hide_or_drop_the_preferred_gateway() {
    if !e2e_gate("an_impostor_cannot_hide_or_drop_the_preferred_gateway") {
        return;
    }
    let mut bed = Bed::new("mggd");
    bed.batch("gw", "addr add 10.77.0.4/24 dev mesh0\n");
    bed.batch(
        "sub",
        "route add 10.77.0.3/32 dev mesh0 proto 99\nroute add 10.77.0.4/32 dev mesh0 proto 99\n",
    );
    let impostor_sick = Arc::new(AtomicBool::new(false));
    let sick = impostor_sick.clone();
    let fake = Fake::start(
        &bed.gw.clone(),
        Box::new(move |to, method, _| {
            let impostor = to.to_string() == "10.77.0.4";
            match method {
                "nodeInfo" => {
                    let mut info = node_info("gwa");
                    if impostor {
                        info["terms"]["bandwidthDown"] = json!(10_000_000);
                        info["uplink"]["healthy"] = json!(!sick.load(Ordering::SeqCst));
                    }
                    info
                }
                "requestConnection" if impostor => {
                    json!({"success": false, "errorMsg": "go away", "temporaryError": false})
                }
                "requestConnection" => grant(json!({})),
                _ => json!({"success": true, "timeout": 60}),
            }
        }),
    );
    bed.start_subscriber(
        "\toption prefer 'gwa'\n\tlist probe_target '10.77.0.3'\n\toption failback_after '0'\n",
        "",
    );
    bed.wait_for("a connection to the real gwa", |b| {
        let st = b.rpc("status", json!({})).unwrap();
        st["subscriber"]["gateway"]["address"] == "10.77.0.3"
    });
    let asked: HashSet<String> = fake
        .seen()
        .iter()
        .filter(|s| s.method == "requestConnection")
        .map(|s| s.to.to_string())
        .collect();
    assert!(
        asked.contains("10.77.0.4"),
        "positive control: the impostor ranked first and was tried ({asked:?})"
    );
    // The impostor says "uplink unhealthy" under the name of the gateway in use.
    impostor_sick.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        bed.rpc("scan", json!({})).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = bed.rpc("status", json!({})).unwrap();
    assert_eq!(st["subscriber"]["gateway"]["address"], "10.77.0.3", "{st}");
    let requests_to_real = fake
        .seen()
        .iter()
        .filter(|s| s.method == "requestConnection" && s.to.to_string() == "10.77.0.3")
        .count();
    assert_eq!(requests_to_real, 1, "the real gwa was never dropped");
    assert!(
        !bed.log().contains("reports its uplink unhealthy"),
        "{}",
        bed.log()
    );
}

/// Issue 14, item 4: answers join into one node only when each lists the other's address. An
/// impostor claiming the name and the addresses of the gateway in use (and reporting its uplink
/// unhealthy) joins nothing: the gateway stays in use and both are listed. Positive control: once
/// the real gateway lists the impostor's address too, they are one node, and the impostor's
/// unhealthy answer then does make the subscriber leave.
#[test]
fn an_impostor_claiming_a_gateways_addresses_is_not_that_gateway() {
    if !e2e_gate("an_impostor_claiming_a_gateways_addresses_is_not_that_gateway") {
        return;
    }
    let mut bed = Bed::new("mggn");
    bed.batch("gw", "addr add 10.77.0.4/24 dev mesh0\n");
    bed.batch(
        "sub",
        "route add 10.77.0.3/32 dev mesh0 proto 99\nroute add 10.77.0.4/32 dev mesh0 proto 99\n",
    );
    let real_lists_impostor = Arc::new(AtomicBool::new(false));
    let lists = real_lists_impostor.clone();
    let _fake = Fake::start(
        &bed.gw.clone(),
        Box::new(move |to, method, _| {
            let impostor = to.to_string() == "10.77.0.4";
            match method {
                "nodeInfo" => {
                    let mut info = node_info("gwa");
                    if impostor {
                        info["addresses"] = json!(["10.77.0.3", "10.77.0.4"]);
                        info["uplink"]["healthy"] = json!(false);
                    } else if lists.load(Ordering::SeqCst) {
                        info["addresses"] = json!(["10.77.0.3", "10.77.0.4"]);
                    } else {
                        info["addresses"] = json!(["10.77.0.3"]);
                    }
                    info
                }
                "requestConnection" if impostor => {
                    json!({"success": false, "errorMsg": "go away", "temporaryError": false})
                }
                "requestConnection" => grant(json!({})),
                _ => json!({"success": true, "timeout": 60}),
            }
        }),
    );
    bed.start_subscriber("\tlist probe_target '10.77.0.3'\n", "");
    bed.wait_for("a connection to the real gwa", |b| {
        let st = b.rpc("status", json!({})).unwrap();
        st["subscriber"]["gateway"]["address"] == "10.77.0.3"
    });
    for _ in 0..3 {
        bed.rpc("scan", json!({})).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = bed.rpc("status", json!({})).unwrap();
    assert_eq!(st["subscriber"]["gateway"]["address"], "10.77.0.3", "{st}");
    assert!(
        !bed.log().contains("reports its uplink unhealthy"),
        "{}",
        bed.log()
    );
    let listed = bed.rpc("listGateways", json!({})).unwrap();
    let entries = listed["gateways"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries.len(),
        2,
        "the impostor is a node of its own: {listed}"
    );

    // Positive control: the real gateway lists the other address as its own.
    real_lists_impostor.store(true, Ordering::SeqCst);
    bed.wait_for("the joined node's unhealthy answer to be acted on", |b| {
        let _ = b.rpc("scan", json!({}));
        b.log().contains("reports its uplink unhealthy")
    });
    let listed = bed.rpc("listGateways", json!({})).unwrap();
    let entries = listed["gateways"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "one node now: {listed}");
    assert_eq!(entries[0]["addresses"].as_array().map(Vec::len), Some(2));
}

/// Item 8: gossip cannot make the subscriber probe loopback, its LAN or the Internet, and a
/// rotating list buys a node no more than its budget of targets.
#[test]
fn gossip_cannot_point_the_subscriber_anywhere() {
    if !e2e_gate("gossip_cannot_point_the_subscriber_anywhere") {
        return;
    }
    let mut bed = Bed::new("mgge");
    bed.batch("sub", "route add 10.77.0.3/32 dev mesh0 proto 99\naddr add 192.168.50.7/24 dev lan0\naddr add fd50::7/64 dev lan0 nodad\n");
    let mut gw_lines = String::from("addr add 10.77.0.5/24 dev mesh0\n");
    for i in 0..40 {
        gw_lines.push_str(&format!("addr add 10.77.0.{}/24 dev mesh0\n", 100 + i));
    }
    bed.batch("gw", &gw_lines);
    // Listeners where a hostile list points: loopback and the LAN (both families).
    let traps: Vec<(SocketAddr, TcpListener)> =
        ["127.0.0.1:65534", "192.168.50.7:65532", "[fd50::7]:65532"]
            .iter()
            .map(|a| {
                let a: SocketAddr = a.parse().unwrap();
                let l = listen_in(&bed.sub, a);
                l.set_nonblocking(true).unwrap();
                (a, l)
            })
            .collect();
    let round = Arc::new(Mutex::new(0u32));
    let r = round.clone();
    let fake = Fake::start(
        &bed.gw.clone(),
        Box::new(move |to, method, _| {
            if method != "nodeInfo" {
                return json!({"success": false, "errorMsg": "no", "temporaryError": false});
            }
            if to.to_string() != "10.77.0.3" {
                let mut info = node_info("far");
                info["uplink"]["healthy"] = json!(false);
                return info;
            }
            let k = *r.lock().unwrap();
            let mut list: Vec<Value> = [
                "127.0.0.1:65534",
                "192.168.50.7:65532",
                "[fd50::7]:65532",
                "203.0.113.7:65533",
                "10.77.0.5:65533",
            ]
            .iter()
            .map(|a| {
                let a: SocketAddr = a.parse().unwrap();
                json!({"address": a.ip().to_string(), "port": a.port(), "seenAgo": 1})
            })
            .collect();
            // A fresh set of mesh targets every round.
            list.truncate(5);
            list.extend((0..10).map(|j| {
                json!({"address": format!("10.77.0.{}", 100 + 10 * k + j), "port": 65533, "seenAgo": 1})
            }));
            let mut info = node_info("near");
            info["gateways"] = json!(list);
            info["uplink"]["healthy"] = json!(false);
            info
        }),
    );
    // Truncated to 16 entries by the nodeInfo check: 5 fixed + 10 rotating fit.
    bed.start_subscriber("", "config discovery 'g'\n\toption method 'gossip'\n");
    let mut learned = Vec::new();
    for k in 0..3 {
        *round.lock().unwrap() = k;
        let out = bed.rpc("scan", json!({})).unwrap();
        learned.extend(
            out["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["address"].as_str().unwrap().to_string()),
        );
    }
    assert!(
        learned.iter().any(|a| a == "10.77.0.5"),
        "positive control: a plausible mesh address is followed ({learned:?})"
    );
    for (a, l) in &traps {
        assert!(l.accept().is_err(), "the subscriber probed {a}");
    }
    let probed: HashSet<String> = fake
        .seen()
        .iter()
        .filter(|s| s.method == "nodeInfo" && s.to.to_string().starts_with("10.77.0.1"))
        .map(|s| s.to.to_string())
        .collect();
    // 10.77.0.5 and the rotating targets share one budget of 16 per source and hour.
    assert!(
        !probed.is_empty() && probed.len() < 16,
        "rotating targets probed: {} ({probed:?})",
        probed.len()
    );
    assert!(
        bed.log().contains("not followed"),
        "dropped entries are logged"
    );
}

/// Item 2 (the part that is ours): the built-in page renders remote text as text only and keeps
/// its Content-Security-Policy.
#[test]
fn the_built_in_page_inserts_no_remote_html() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
    for f in std::fs::read_dir(&root).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if !(name.ends_with(".js") || name.ends_with(".html")) {
            continue;
        }
        let text = std::fs::read_to_string(f.path()).unwrap();
        for sink in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML(",
            "document.write(",
            "eval(",
            "new Function",
            "srcdoc",
        ] {
            assert!(!text.contains(sink), "{name} uses {sink}");
        }
    }
    let csp = mnigs::web::CONTENT_SECURITY_POLICY;
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let server =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rpc/server.rs"))
            .unwrap();
    assert!(
        server.contains("web::CONTENT_SECURITY_POLICY"),
        "the page is served with it"
    );
}

/// Item 7: an OpenVPN server that pushes an IPv6 address inside the LAN's /64 instead of the
/// granted one (its per-client file rewritten after mnigs wrote it), plus routes to the LAN and
/// the mesh, a redirect and timers: the subscriber takes none of it — the tun does not carry the
/// grant, so the tunnel is refused, and the LAN and the mesh keep their routes.
#[test]
fn an_openvpn_server_pushes_nothing_beyond_the_grant() {
    if !e2e_gate("an_openvpn_server_pushes_nothing_beyond_the_grant") {
        return;
    }
    for p in ["openvpn", "openssl", "nft"] {
        if !mnigs::sys::cmd::available(p) {
            assert!(
                std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
                "`{p}` is not installed (MNIGS_E2E=1 forbids skipping)"
            );
            eprintln!("SKIPPED an_openvpn_server_pushes_nothing_beyond_the_grant: no `{p}`");
            return;
        }
    }
    let mut bed = Bed::new("mggf");
    bed.batch(
        "gw",
        "link add wan0 type veth peer name wan1\nlink set wan0 up\nlink set wan1 up\n\
         addr add 198.51.100.1/24 dev wan0\n",
    );
    bed.batch("sub", "route add 10.77.0.3/32 dev mesh0 proto 99\n");
    // The gateway's openvpn: pushes of its own, and for 60 s every per-client file it is given
    // rewritten to hand out fd50::80/121 (in the subscriber's LAN) instead of the grant, every 5 ms
    // (every 50 ms a fast client sometimes connected before the rewrite, 1 run in 4).
    let evil = bed.path("evilbin");
    std::fs::create_dir_all(&evil).unwrap();
    let real = ["/usr/sbin/openvpn", "/usr/bin/openvpn", "/sbin/openvpn"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("openvpn binary");
    let ccd = bed.path("gw-ovpn/server/ccd");
    std::fs::write(
        evil.join("openvpn"),
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --mode server \"*)\n\
             (for i in $(seq 12000); do for f in {ccd}/*; do [ -f \"$f\" ] && \\\n\
             sed -i 's|^ifconfig-ipv6-push .*|ifconfig-ipv6-push fd50::80/121 fd50::1|' \"$f\"; \\\n\
             done; sleep 0.005; done) >/dev/null 2>&1 </dev/null &\n\
             exec {real} \"$@\" --push 'route 192.168.50.0 255.255.255.0' --push 'route-ipv6 fd77::/64' \\\n\
             --push 'redirect-gateway def1' --push 'ping-restart 3600' ;;\nesac\nexec {real} \"$@\"\n",
            ccd = ccd.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(evil.join("openvpn"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gw_conf = bed.path("gw.uci");
    std::fs::write(
        &gw_conf,
        format!(
            "config mnigs 'main'\n\toption name 'evil'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\
             \toption lease_seconds '60'\n\tlist method 'openvpn'\n\n\
             config openvpn 'openvpn'\n\toption interface 'ovs'\n\toption directory '{ovpn}'\n",
            db = bed.path("gw.db").display(),
            ovpn = bed.path("gw-ovpn").display(),
        ),
    )
    .unwrap();
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", evil.display());
    let gw_conf = gw_conf.display().to_string();
    let gw_ns = bed.gw.clone();
    bed.lab
        .spawn(
            &gw_ns,
            &["env", &path, EXE, "daemon", "-c", &gw_conf],
            &bed.path("gw.log"),
        )
        .unwrap();
    let before = bed.snapshot();
    bed.start_subscriber("\tlist method 'openvpn'\n", "");
    let client_log = bed.path("sub-ovpn/client/openvpn.log");
    bed.wait_for("the subscriber to refuse the tunnel", |b| {
        let st = b.rpc("status", json!({})).unwrap();
        st["subscriber"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("granted"))
    });
    let st = bed.rpc("status", json!({})).unwrap();
    assert_ne!(st["subscriber"]["state"], "connected", "{st}");
    let why = st["subscriber"]["lastError"].as_str().unwrap().to_string();
    assert!(why.contains("lacks the granted fd7e:7e7e::2/64"), "{why}");
    // Positive control: the malicious address and routes did reach the client…
    let log = String::from_utf8_lossy(&std::fs::read(&client_log).unwrap_or_default()).to_string();
    let gw_log =
        String::from_utf8_lossy(&std::fs::read(bed.path("gw.log")).unwrap_or_default()).to_string();
    assert!(
        log.contains("fd50::80/121") || bed.log().contains("fd50::80/121"),
        "positive control: the pushed fd50::80/121 reached the client\n{log}\n{gw_log}"
    );
    // …and none of it stayed: no tun, no address, no route changed.
    assert!(
        !bed.exec("sub", &["ip", "-o", "addr", "show"])
            .contains("fd50::80")
    );
    for (dst, dev) in [
        ("192.168.50.9", "lan0"),
        ("fd50::81", "lan0"),
        ("fd77::9", "mesh0"),
        ("10.77.0.3", "mesh0"),
    ] {
        let route = bed.exec("sub", &["ip", "route", "get", dst]);
        assert!(route.contains(&format!("dev {dev}")), "{dst}: {route}");
    }
    assert_eq!(
        bed.snapshot(),
        before,
        "the subscriber's addresses and routes changed"
    );
}

/// Item 6, the key: a gateway's WireGuard key is pinned per mesh address at first contact; a
/// node presenting another key at that address is refused until the operator connects to it.
#[test]
fn a_gateway_key_is_pinned_at_first_contact() {
    if !e2e_gate("a_gateway_key_is_pinned_at_first_contact") {
        return;
    }
    let mut bed = Bed::new("mggg");
    bed.batch("sub", "route add 10.77.0.3/32 dev mesh0 proto 99\n");
    let k1 = format!("{}=", "A".repeat(43));
    let k2 = format!("{}E=", "A".repeat(42));
    let key = Arc::new(Mutex::new(k1.clone()));
    let k = key.clone();
    let fake = Fake::start(
        &bed.gw.clone(),
        Box::new(move |_, method, _| match method {
            "nodeInfo" => {
                let mut info = node_info("gw");
                info["methods"] = json!(["wireguard"]);
                info
            }
            "requestConnection" => grant(json!({"method": "wireguard",
                "publicKey": *k.lock().unwrap(), "listenPort": 51820})),
            _ => json!({"success": true, "timeout": 60}),
        }),
    );
    let (wg, wgc) = (bed.lab.unique_ifname("pg"), bed.lab.unique_ifname("pc"));
    bed.start_subscriber(
        "\tlist method 'wireguard'\n\toption probe_interval_ms '500'\n\toption down_after '100'\n",
        &format!(
            "config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wgc}'\n"
        ),
    );
    let t0 = Instant::now();
    bed.wait_for("the first contact, pinned", |b| {
        b.log().contains(&format!("pinned wireguard {k1}"))
    });
    eprintln!("pin: first contact after {:?}", t0.elapsed());
    bed.rpc("disconnect", json!({})).unwrap();
    eprintln!("pin: disconnected after {:?}", t0.elapsed());
    // Another node at the same address (or the gateway with another key): not used on its own.
    *key.lock().unwrap() = k2.clone();
    let refused_before = fake
        .seen()
        .iter()
        .filter(|s| s.method == "releaseConnection")
        .count();
    bed.rpc("scan", json!({})).unwrap();
    eprintln!("pin: scanned after {:?}", t0.elapsed());
    let st = bed.rpc("status", json!({})).unwrap();
    assert_ne!(st["subscriber"]["state"], "connected", "{st}");
    let why = st["subscriber"]["lastError"].as_str().unwrap_or("");
    assert!(why.contains("pinned at first contact"), "{st}");
    assert!(
        fake.seen()
            .iter()
            .filter(|s| s.method == "releaseConnection")
            .count()
            > refused_before,
        "the refused lease was released"
    );
    assert!(!bed.log().contains(&format!("pinned wireguard {k2}")));
    // The operator asks for it by address: the new key is accepted and pinned.
    let out = bed.connect("10.77.0.3");
    assert_eq!(out["success"], true, "{out}\n{}", bed.log());
    assert!(bed.log().contains(&format!("pinned wireguard {k2}")));
    bed.rpc("disconnect", json!({})).unwrap();
}
