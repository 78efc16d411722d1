//! A simulated cjdroute admin API for tests, built from cjdroute's documented and observed
//! behaviour (see the notes on mesh admin APIs), never from hand-picked answers:
//!
//! - UDP, one bencoded dictionary per datagram, `txid` echoed; requests over 512 bytes are not
//!   read (dropped and counted).
//! - Answers zero-pad the FIRST key's length so the message length is a multiple of 8, as
//!   cjdroute pads to align (`d000001:q…`).
//! - `{q:"cookie"}` gives a decimal cookie from the simulator's clock (milliseconds here, so
//!   that the expiry, ~20 s on cjdroute, can be made short); an `auth` request must carry a
//!   cookie no older than the expiry and `hash` = sha256 of the request with the hash replaced
//!   by sha256(password + cookie); otherwise `Auth failed.`.
//! - A function that needs auth, called without it: `No functions matched your request, try
//!   Admin_availableFunctions()`.
//!
//! What the functions answer is up to a [`Functions`] implementation; [`Node`] is one cjdroute
//! with `Core_nodeInfo`, the IpTunnel and the RouteGen functions, and nodes registered in one
//! [`Mesh`] reach each other: a node's `IpTunnel_connectTo` gets the addresses its peer allowed
//! for it. As the real cjdroute (v22.1) does:
//! - the addresses arrive ~100 ms after `connectTo` (until then `showConnection` has none);
//! - then, if the node has a tun ([`Node::tun`]), it puts them on the tun itself, adds one
//!   RouteGen prefix per address (`addr/prefix`; again at every reconnect, duplicates included)
//!   and installs the routes (protocol 52; prefix 0: the /1 halves of the family);
//! - `removeConnection` leaves addresses, prefixes and routes; `RouteGen_removePrefix` removes
//!   every duplicate of a prefix and `RouteGen_commit` rewrites the tun's routes;
//! - errors: `not_found` (removeConnection), `no_such_route` (removePrefix).
//!
//! The simulator runs `ip` itself (not through mnigs' command runner, whose log tests assert).
#![allow(dead_code)]

use mnigs::cjdns::bencode::{self, Value};
use mnigs::cjdns::keys::PeerAddr;
use mnigs::cjdns::sha2::{hex, sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// cjdroute reads at most this many bytes of a request.
pub const MAX_REQUEST: usize = 512;

/// What the simulated functions answer.
pub trait Functions: Send + 'static {
    /// Whether `function` is callable only with auth.
    fn needs_auth(&self, function: &str) -> bool;
    /// The answer to `function(args)` (without `txid`, which the server adds).
    fn call(&mut self, function: &str, args: &Value) -> Vec<(String, Value)>;
    /// Whether the daemon has "crashed": from then on nothing is answered.
    fn crashed(&self) -> bool {
        false
    }
}

/// Counters of what the server saw.
#[derive(Default)]
pub struct Stats {
    /// Cookies handed out.
    pub cookies: AtomicU32,
    /// `auth` requests refused with `Auth failed.`, of which…
    pub auth_failures: AtomicU32,
    /// …were refused only because the cookie had expired.
    pub expired: AtomicU32,
    /// Auth-only functions called without auth.
    pub unauthenticated: AtomicU32,
    /// Requests over [`MAX_REQUEST`] bytes, dropped.
    pub oversized: AtomicU32,
    /// Answers whose first key length was zero-padded.
    pub padded: AtomicU32,
    /// Functions called (authenticated or not, refused or not) with their arguments.
    pub calls: Mutex<Vec<(String, Value)>>,
}

impl Stats {
    /// The names of the functions called, in order.
    pub fn functions(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Forgets the calls seen so far.
    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// A running simulated admin API.
pub struct Server {
    /// Where it listens (loopback of the calling thread's network namespace).
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<Stats>,
}

/// Serves `functions` on a loopback UDP port until the test process ends.
pub fn serve<F: Functions>(
    password: Option<&str>,
    cookie_ttl: Duration,
    functions: Arc<Mutex<F>>,
) -> Server {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    let password = password.map(str::to_string);
    let epoch = Instant::now();
    std::thread::spawn(move || {
        // A buffer larger than the limit, so oversized requests are seen and counted.
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            if n > MAX_REQUEST {
                st.oversized.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let raw = &buf[..n];
            let Ok(req) = bencode::parse(raw) else {
                continue;
            };
            if functions.lock().unwrap().crashed() {
                continue;
            }
            let now_ms = epoch.elapsed().as_millis() as u64 + 1_000_000;
            let txid = req.get("txid").cloned().unwrap_or(Value::str(""));
            let q = req.get("q").and_then(Value::as_str).unwrap_or("");
            let args = req.get("args").cloned().unwrap_or(Value::dict([]));
            let answer: Vec<(String, Value)> = match q {
                "cookie" => {
                    st.cookies.fetch_add(1, Ordering::SeqCst);
                    vec![("cookie".into(), Value::str(&now_ms.to_string()))]
                }
                "auth" => {
                    let f = req
                        .get("aq")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    st.calls.lock().unwrap().push((f.clone(), args.clone()));
                    match check_auth(raw, &req, password.as_deref(), now_ms, cookie_ttl) {
                        Ok(()) => functions.lock().unwrap().call(&f, &args),
                        Err(expired) => {
                            st.auth_failures.fetch_add(1, Ordering::SeqCst);
                            if expired {
                                st.expired.fetch_add(1, Ordering::SeqCst);
                            }
                            vec![("error".into(), Value::str("Auth failed."))]
                        }
                    }
                }
                f => {
                    st.calls.lock().unwrap().push((f.to_string(), args.clone()));
                    let mut funcs = functions.lock().unwrap();
                    if funcs.needs_auth(f) && password.is_some() {
                        st.unauthenticated.fetch_add(1, Ordering::SeqCst);
                        vec![(
                            "error".into(),
                            Value::str(
                                "No functions matched your request, try Admin_availableFunctions()",
                            ),
                        )]
                    } else {
                        funcs.call(f, &args)
                    }
                }
            };
            if functions.lock().unwrap().crashed() {
                continue;
            }
            let mut out = Value::Dict(
                answer
                    .into_iter()
                    .map(|(k, v)| (k.into_bytes(), v))
                    .chain([(b"txid".to_vec(), txid)])
                    .collect(),
            )
            .emit();
            // Zero-pad the first key's length up to 8-byte alignment.
            let pad = (8 - out.len() % 8) % 8;
            if pad > 0 {
                st.padded.fetch_add(1, Ordering::SeqCst);
                out.splice(1..1, std::iter::repeat_n(b'0', pad));
            }
            let _ = sock.send_to(&out, from);
        }
    });
    Server { addr, stats }
}

/// The auth rule; `Err(true)` when only the cookie's age is wrong.
fn check_auth(
    raw: &[u8],
    req: &Value,
    password: Option<&str>,
    now_ms: u64,
    ttl: Duration,
) -> Result<(), bool> {
    let (Some(hash), Some(c)) = (
        req.get("hash").and_then(Value::as_str),
        req.get("cookie").and_then(Value::as_str),
    ) else {
        return Err(false);
    };
    let Some(password) = password else {
        return Ok(());
    };
    let Ok(cookie) = c.parse::<u64>() else {
        return Err(false);
    };
    if hash.len() != 64 {
        return Err(false);
    }
    let first = hex(&sha256(format!("{password}{c}").as_bytes()));
    let Some(at) = raw.windows(64).position(|w| w == hash.as_bytes()) else {
        return Err(false);
    };
    let mut copy = raw.to_vec();
    copy[at..at + 64].copy_from_slice(first.as_bytes());
    if hex(&sha256(&copy)) != hash {
        return Err(false);
    }
    if cookie > now_ms || now_ms - cookie > ttl.as_millis() as u64 {
        return Err(true);
    }
    Ok(())
}

/// One IpTunnel connection of a simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The other node's key.
    pub key: String,
    /// Dialled by this node (`connectTo`).
    pub outgoing: bool,
    /// Address fields as `allowConnection` took them or the peer handed them out.
    pub fields: BTreeMap<String, Value>,
}

/// Simulated nodes by key, so that `connectTo` reaches the node with that key.
#[derive(Default)]
pub struct Mesh {
    nodes: HashMap<String, Arc<Mutex<Node>>>,
}

/// One simulated cjdroute: its key and IpTunnel connections.
pub struct Node {
    /// Its key (`….k`).
    pub key: String,
    /// Connections by number.
    pub conns: BTreeMap<i64, Conn>,
    /// Its tun, configured as cjdroute configures it (none: addresses and routes are only
    /// reported).
    pub tun: Option<String>,
    /// RouteGen prefixes (`addr/prefix`) of IPv4 and IPv6.
    pub prefixes: [Vec<String>; 2],
    /// Delay before a dialled connection gets its addresses.
    pub address_delay: Duration,
    next: i64,
    mesh: Arc<Mutex<Mesh>>,
    me: std::sync::Weak<Mutex<Node>>,
}

/// Runs `ip` with `args` (the simulator's own, so mnigs' command log stays ours).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// The routes RouteGen makes of one prefix (`addr/len`).
fn routes_of(prefix: &str) -> Vec<String> {
    match prefix.split_once('/') {
        Some((a, "0")) if a.contains(':') => vec!["::/1".into(), "8000::/1".into()],
        Some((_, "0")) => vec!["0.0.0.0/1".into(), "128.0.0.0/1".into()],
        Some(_) => vec![prefix.to_string()],
        None => vec![],
    }
}

const ADDRESS_FIELDS: [&str; 6] = [
    "ip4Address",
    "ip4Prefix",
    "ip4Alloc",
    "ip6Address",
    "ip6Prefix",
    "ip6Alloc",
];

impl Node {
    /// A node with `key`, registered in `mesh`.
    pub fn new(key: &str, mesh: &Arc<Mutex<Mesh>>) -> Arc<Mutex<Node>> {
        let node = Arc::new_cyclic(|me| {
            Mutex::new(Node {
                key: key.to_string(),
                conns: BTreeMap::new(),
                tun: None,
                prefixes: [Vec::new(), Vec::new()],
                address_delay: Duration::from_millis(100),
                next: 0,
                mesh: mesh.clone(),
                me: me.clone(),
            })
        });
        mesh.lock()
            .unwrap()
            .nodes
            .insert(key.to_string(), node.clone());
        node
    }

    fn add(&mut self, conn: Conn) -> i64 {
        let n = self.next;
        self.next += 1;
        self.conns.insert(n, conn);
        n
    }

    /// The addresses of connection `n` arrive: recorded, and (with a tun) put on it with their
    /// RouteGen prefixes and routes.
    fn addresses_arrive(&mut self, n: i64, fields: BTreeMap<String, Value>) {
        let Some(c) = self.conns.get_mut(&n) else {
            return;
        };
        c.fields = fields.clone();
        let Some(tun) = self.tun.clone() else { return };
        for (fam, a, p, alloc) in [
            ("-4", "ip4Address", "ip4Prefix", "ip4Alloc"),
            ("-6", "ip6Address", "ip6Prefix", "ip6Alloc"),
        ] {
            let Some(addr) = fields.get(a).and_then(Value::as_str) else {
                continue;
            };
            let int = |k: &str, d: i64| fields.get(k).and_then(Value::as_int).unwrap_or(d);
            let max = if fam == "-4" { 32 } else { 128 };
            let with_len = format!("{addr}/{}", int(alloc, max));
            let mut args = vec![fam, "addr", "replace", &with_len, "dev", &tun];
            if fam == "-6" {
                args.push("nodad");
            }
            ip(&args).expect("simulated cjdroute: address on its tun");
            self.prefixes[usize::from(fam == "-6")].push(format!("{addr}/{}", int(p, max)));
        }
        self.commit(&tun)
            .expect("simulated cjdroute: RouteGen commit");
    }

    /// RouteGen_commit: the tun's protocol-52 routes become those of the prefixes.
    fn commit(&self, tun: &str) -> Result<(), String> {
        for (i, fam) in ["-4", "-6"].iter().enumerate() {
            ip(&[fam, "route", "flush", "dev", tun, "proto", "52"])?;
            let mut routes: Vec<String> =
                self.prefixes[i].iter().flat_map(|p| routes_of(p)).collect();
            routes.sort();
            routes.dedup();
            for r in routes {
                ip(&[fam, "route", "replace", &r, "dev", tun, "proto", "52"])?;
            }
        }
        Ok(())
    }

    /// The addresses `peer` allowed for `key` (what its IpTunnel would send us).
    fn offered_by(&self, peer: &str) -> BTreeMap<String, Value> {
        let Some(node) = self.mesh.lock().unwrap().nodes.get(peer).cloned() else {
            return BTreeMap::new();
        };
        let node = node.lock().unwrap();
        node.conns
            .values()
            .find(|c| !c.outgoing && c.key == self.key)
            .map(|c| c.fields.clone())
            .unwrap_or_default()
    }
}

fn err(s: &str) -> Vec<(String, Value)> {
    vec![("error".into(), Value::str(s))]
}

fn ok(mut fields: Vec<(String, Value)>) -> Vec<(String, Value)> {
    fields.push(("error".into(), Value::str("none")));
    fields
}

fn valid_key(v: Option<&Value>) -> Option<String> {
    let k = v?.as_str()?;
    mnigs::cjdns::keys::check_key(k).ok()?;
    Some(k.to_string())
}

impl Functions for Node {
    fn needs_auth(&self, function: &str) -> bool {
        function != "Core_nodeInfo" && function != "ping"
    }

    fn call(&mut self, function: &str, args: &Value) -> Vec<(String, Value)> {
        match function {
            "ping" => vec![("q".into(), Value::str("pong"))],
            "Core_nodeInfo" => {
                let addr = PeerAddr {
                    version: 22,
                    label: 1,
                    key: self.key.clone(),
                };
                ok(vec![("myAddr".into(), Value::str(&addr.render()))])
            }
            "IpTunnel_allowConnection" => {
                let Some(key) = valid_key(args.get("publicKeyOfAuthorizedNode")) else {
                    return err("key must be 52 characters long");
                };
                let fields: BTreeMap<String, Value> = ADDRESS_FIELDS
                    .iter()
                    .filter_map(|f| Some((f.to_string(), args.get(f)?.clone())))
                    .collect();
                if !fields.contains_key("ip4Address") && !fields.contains_key("ip6Address") {
                    return err("Must specify ip4Address or ip6Address or both");
                }
                let n = self.add(Conn {
                    key,
                    outgoing: false,
                    fields,
                });
                ok(vec![("connection".into(), Value::Int(n))])
            }
            "IpTunnel_connectTo" => {
                let Some(key) = valid_key(args.get("publicKeyOfNodeToConnectTo")) else {
                    return err("key must be 52 characters long");
                };
                let fields = self.offered_by(&key);
                let n = self.add(Conn {
                    key,
                    outgoing: true,
                    fields: BTreeMap::new(),
                });
                if !fields.is_empty() {
                    // The gateway's answer comes back over the mesh a little later.
                    let me = self.me.clone();
                    let delay = self.address_delay;
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        if let Some(node) = me.upgrade() {
                            node.lock().unwrap().addresses_arrive(n, fields);
                        }
                    });
                }
                ok(vec![("connection".into(), Value::Int(n))])
            }
            "IpTunnel_listConnections" => ok(vec![(
                "connections".into(),
                Value::List(self.conns.keys().map(|n| Value::Int(*n)).collect()),
            )]),
            "IpTunnel_showConnection" => {
                let n = args.get("connection").and_then(Value::as_int).unwrap_or(-1);
                let Some(c) = self.conns.get(&n) else {
                    return err("connection not found");
                };
                let mut out: Vec<(String, Value)> = c
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.push(("key".into(), Value::str(&c.key)));
                out.push(("outgoing".into(), Value::Int(c.outgoing.into())));
                ok(out)
            }
            "IpTunnel_removeConnection" => {
                let n = args.get("connection").and_then(Value::as_int).unwrap_or(-1);
                match self.conns.remove(&n) {
                    Some(_) => ok(vec![("connection".into(), Value::Int(n))]),
                    None => err("not_found"),
                }
            }
            "RouteGen_getPrefixes" => {
                let ip6 = args.get("ip6").and_then(Value::as_int).unwrap_or(0) != 0;
                let page = args.get("page").and_then(Value::as_int).unwrap_or(0).max(0) as usize;
                let routes = self.prefixes[usize::from(ip6)]
                    .iter()
                    .skip(page * 16)
                    .take(16)
                    .map(|r| Value::str(r))
                    .collect();
                vec![("routes".into(), Value::List(routes))]
            }
            "RouteGen_removePrefix" => {
                let route = args.get("route").and_then(Value::as_str).unwrap_or("");
                let family = usize::from(route.contains(':'));
                let before = self.prefixes[family].len();
                self.prefixes[family].retain(|p| p != route);
                if self.prefixes[family].len() == before {
                    err("no_such_route")
                } else {
                    ok(vec![])
                }
            }
            "RouteGen_commit" => {
                let Some(tun) = args.get("tunName").and_then(Value::as_str) else {
                    return err("tunName required");
                };
                match self.commit(tun) {
                    Ok(()) => ok(vec![]),
                    Err(e) => err(&e),
                }
            }
            _ => err("No functions matched your request, try Admin_availableFunctions()"),
        }
    }
}

/// Serves a [`Node`] through an `Arc<Mutex<Node>>` shared with the mesh.
pub struct Shared(pub Arc<Mutex<Node>>);

impl Functions for Shared {
    fn needs_auth(&self, function: &str) -> bool {
        self.0.lock().unwrap().needs_auth(function)
    }
    fn call(&mut self, function: &str, args: &Value) -> Vec<(String, Value)> {
        self.0.lock().unwrap().call(function, args)
    }
}

/// A node with `key` in `mesh`, served with `password`; returns the node and its server.
pub fn node(
    key: &str,
    mesh: &Arc<Mutex<Mesh>>,
    password: Option<&str>,
    cookie_ttl: Duration,
) -> (Arc<Mutex<Node>>, Server) {
    let node = Node::new(key, mesh);
    let server = serve(
        password,
        cookie_ttl,
        Arc::new(Mutex::new(Shared(node.clone()))),
    );
    (node, server)
}

/// A reproducible valid cjdns key (its address starts with 0xfc), the `n`-th from `seed`.
pub fn key(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    loop {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        if mnigs::cjdns::keys::address_of(&k).is_ok() {
            return mnigs::cjdns::keys::encode_key(&k);
        }
    }
}
