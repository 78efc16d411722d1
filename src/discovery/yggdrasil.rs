//! Discovery over Yggdrasil (0.4.x): a breadth-first walk through the local admin socket.
//!
//! `getSelf` names us, `getPeers` our peers; every node found is asked for its peers with
//! `debug_remoteGetPeers` (the key inside `arguments`) and for its NodeInfo with `getNodeInfo`.
//! A gateway may advertise itself in its Yggdrasil NodeInfo under an `mnigs` key
//! (`"NodeInfo": {"mnigs": {"port": 65533}}`), so subscribers can learn of it without probing
//! every node (`option nodeinfo_only`). Each node's 200::/7 address is derived from its key.
//!
//! The admin socket speaks JSON over a stream: requests `{"request", "arguments", "keepalive"}`,
//! pretty-printed answers `{"status", "error"?, "response"}`, several per connection;
//! [`JsonStream`] decodes them as they arrive.
//!
//! # Layout
//! - [`address_of`]: key → address (pure).
//! - [`JsonStream`]: incremental decoder of concatenated JSON values.
//! - [`Admin`] (one call), [`SocketAdmin`] (unix or TCP, reconnects after a timeout).
//! - [`Fanout`]: many remote calls at once, [`Sequential`] or [`Parallel`] (several connections).
//! - [`walk`] / [`walk_with`] (the search, level by level), [`candidates`], [`discover`].

use super::Candidate;
use crate::config::DiscoveryConfig;
use crate::json::object;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where Debian's yggdrasil listens unless configured otherwise.
pub const DEFAULT_ADMIN: &str = "unix:///var/run/yggdrasil/yggdrasil.sock";

/// Largest answer accepted from the admin socket.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// The address of a node: invert the key's bits, count the leading ones (n), then
/// `0x02, n`, followed by the bits after the first zero, to 16 bytes.
pub fn address_of(key: &[u8; 32]) -> Ipv6Addr {
    let mut out = [0u8; 16];
    out[0] = 0x02;
    let mut ones = 0u8;
    let mut seen_zero = false;
    let (mut acc, mut nbits, mut at) = (0u8, 0, 2);
    'bits: for byte in key.iter().map(|b| !b) {
        for i in (0..8).rev() {
            let bit = (byte >> i) & 1;
            if !seen_zero {
                if bit == 1 {
                    ones = ones.saturating_add(1);
                } else {
                    seen_zero = true;
                }
                continue;
            }
            acc = (acc << 1) | bit;
            nbits += 1;
            if nbits == 8 {
                out[at] = acc;
                at += 1;
                nbits = 0;
                if at == 16 {
                    break 'bits;
                }
            }
        }
    }
    out[1] = ones;
    Ipv6Addr::from(out)
}

/// The 32 bytes of a key written as 64 hex digits.
pub fn key_bytes(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "not a Yggdrasil key: {}",
            crate::validate::quoted(hex)
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Decodes JSON values that arrive back to back (pretty-printed, split anywhere) on a stream.
#[derive(Default)]
pub struct JsonStream {
    buf: Vec<u8>,
}

impl JsonStream {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, if one has arrived; an error if the bytes cannot become JSON.
    pub fn next_value(&mut self) -> Result<Option<Value>, String> {
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                let used = it.byte_offset();
                // A number running up to the end of what has arrived may go on in the next read
                // ("1" then "2" is 12): wait for a byte that ends it (found by fuzzing).
                if v.is_number() && used == self.buf.len() {
                    return Ok(None);
                }
                self.buf.drain(..used);
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(format!("admin socket sent bad JSON: {e}")),
            None => Ok(None),
        }
    }
}

/// One call of the Yggdrasil admin API.
pub trait Admin {
    /// Runs `request` with `arguments` and returns its `response` object.
    fn call(&mut self, request: &str, arguments: Value) -> Result<Value, String>;
}

/// Where the admin socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path`.
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// Parses `unix:///PATH` or `tcp://HOST:PORT` (HOST an address or `localhost`).
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        let hp = s.strip_prefix("tcp://").unwrap_or(s);
        hp.replace("localhost:", "127.0.0.1:")
            .parse()
            .map(Endpoint::Tcp)
            .map_err(|_| format!("bad Yggdrasil admin endpoint {s}"))
    }
}

trait Stream: Read + Write {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()>;
}
impl Stream for std::os::unix::net::UnixStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}
impl Stream for std::net::TcpStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

/// The admin API over its socket, one keepalive connection, reopened after a failed call
/// (a late answer would otherwise be taken for the next call's).
pub struct SocketAdmin {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<(Box<dyn Stream>, JsonStream)>,
}

impl SocketAdmin {
    /// A client of `endpoint`; each call may take `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> SocketAdmin {
        SocketAdmin {
            endpoint,
            timeout,
            conn: None,
        }
    }

    fn open(&self) -> Result<Box<dyn Stream>, String> {
        let s: Box<dyn Stream> = match &self.endpoint {
            Endpoint::Unix(p) => Box::new(
                std::os::unix::net::UnixStream::connect(p)
                    .map_err(|e| format!("yggdrasil admin {}: {e}", p.display()))?,
            ),
            Endpoint::Tcp(a) => Box::new(
                std::net::TcpStream::connect_timeout(a, self.timeout)
                    .map_err(|e| format!("yggdrasil admin {a}: {e}"))?,
            ),
        };
        Ok(s)
    }

    fn exchange(&mut self, request: &str, arguments: Value) -> Result<Value, String> {
        if self.conn.is_none() {
            self.conn = Some((self.open()?, JsonStream::default()));
        }
        let (stream, decoder) = self.conn.as_mut().expect("just opened");
        let body = object!({"request": request, "arguments": arguments, "keepalive": true});
        stream
            .write_all(crate::json::text(&body).as_bytes())
            .map_err(|e| format!("yggdrasil admin: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 8192];
        let mut total = 0;
        loop {
            if let Some(v) = decoder.next_value()? {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("yggdrasil admin: {request}: no answer in time"));
            }
            stream.set_timeout(left).map_err(|e| e.to_string())?;
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("yggdrasil admin: {request}: {e}"))?;
            if n == 0 {
                return Err("yggdrasil admin: connection closed".into());
            }
            total += n;
            if total > MAX_ANSWER {
                return Err("yggdrasil admin: answer too large".into());
            }
            decoder.push(&buf[..n]);
        }
    }
}

impl Admin for SocketAdmin {
    fn call(&mut self, request: &str, arguments: Value) -> Result<Value, String> {
        let v = self.exchange(request, arguments);
        if v.is_err() {
            self.conn = None;
        }
        let v = v?;
        if v["status"] != "success" {
            let e = v["error"].as_str().unwrap_or("failed");
            return Err(format!("yggdrasil admin: {request}: {e}"));
        }
        Ok(v["response"].clone())
    }
}

/// A node the walk found.
#[derive(Debug, Clone, PartialEq)]
pub struct YggdrasilNode {
    /// Its key (64 hex digits).
    pub key: String,
    /// Its 200::/7 address.
    pub address: Ipv6Addr,
    /// Hops from us (0: ourselves).
    pub depth: u32,
    /// The `mnigs` entry of its NodeInfo, if it advertises one.
    pub advert: Option<Value>,
}

/// What a walk saw.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Nodes in the order found; `nodes[0]` is ourselves.
    pub nodes: Vec<YggdrasilNode>,
    /// Links as indices into `nodes`.
    pub links: Vec<(usize, usize)>,
    /// Remote calls that failed (unreachable or old nodes).
    pub failures: u32,
}

/// Bounds of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Nodes at this depth are listed but not asked for their peers.
    pub max_depth: u32,
    /// Nodes found at most, not counting ourselves.
    pub max_nodes: u32,
}

/// The keys in a `debug_remoteGetPeers` answer (`{"<addr>": {"keys": [...]}}`).
fn remote_keys(v: &Value) -> Vec<String> {
    v.as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(|e| e["keys"].as_array())
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

/// Remote calls of one kind to many nodes; the walk asks level by level through this.
pub trait Fanout {
    /// A local call (`getSelf`, `getPeers`).
    fn call(&mut self, request: &str, arguments: Value) -> Result<Value, String>;
    /// `request` with `{"key": k}` for every key, answers in the same order.
    fn each(&mut self, request: &str, keys: &[String]) -> Vec<Result<Value, String>>;
}

/// One admin connection, one call after the other.
pub struct Sequential<'a>(pub &'a mut dyn Admin);

impl Fanout for Sequential<'_> {
    fn call(&mut self, request: &str, arguments: Value) -> Result<Value, String> {
        self.0.call(request, arguments)
    }

    fn each(&mut self, request: &str, keys: &[String]) -> Vec<Result<Value, String>> {
        keys.iter()
            .map(|k| self.0.call(request, object!({ "key": k })))
            .collect()
    }
}

/// Up to `workers` admin connections at once: a remote call takes milliseconds, but one to an
/// unreachable node takes Yggdrasil's 6 s timeout, which must not stall the whole walk.
pub struct Parallel {
    endpoint: Endpoint,
    timeout: Duration,
    workers: usize,
    local: SocketAdmin,
}

impl Parallel {
    /// Connections to `endpoint`, calls within `timeout`, at most `workers` at once.
    pub fn new(endpoint: Endpoint, timeout: Duration, workers: usize) -> Parallel {
        Parallel {
            local: SocketAdmin::new(endpoint.clone(), timeout),
            endpoint,
            timeout,
            workers: workers.max(1),
        }
    }
}

impl Fanout for Parallel {
    fn call(&mut self, request: &str, arguments: Value) -> Result<Value, String> {
        self.local.call(request, arguments)
    }

    fn each(&mut self, request: &str, keys: &[String]) -> Vec<Result<Value, String>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<Value, String>>>> =
            keys.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..self.workers.min(keys.len()) {
                crate::threads::spawn_scoped(scope, || {
                    let mut admin = SocketAdmin::new(self.endpoint.clone(), self.timeout);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(k) = keys.get(i) else { break };
                        let r = admin.call(request, object!({ "key": k }));
                        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Err("not asked".into()))
            })
            .collect()
    }
}

/// The breadth-first walk from our node over one admin connection; NodeInfo of every node found
/// is read too.
pub fn walk(admin: &mut dyn Admin, caps: Caps) -> Result<Walk, String> {
    walk_with(&mut Sequential(admin), caps)
}

/// The walk, level by level: every node of one depth is asked at once (through `fan`), and the
/// answers are merged in the order the nodes were found, so the result does not depend on
/// which answer came first.
pub fn walk_with(fan: &mut dyn Fanout, caps: Caps) -> Result<Walk, String> {
    let me = fan.call("getSelf", json!({}))?;
    let my_key = me["key"].as_str().ok_or("getSelf: no key")?.to_string();
    let mut w = Walk::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut links: HashSet<(usize, usize)> = HashSet::new();
    w.nodes.push(YggdrasilNode {
        address: address_of(&key_bytes(&my_key)?),
        key: my_key.clone(),
        depth: 0,
        advert: None,
    });
    index.insert(my_key, 0);
    let peers = fan.call("getPeers", json!({}))?;
    let mut level = Vec::new();
    for p in peers["peers"].as_array().into_iter().flatten() {
        let Some(k) = p["key"].as_str() else { continue };
        if let Some(i) = add(&mut w, &mut index, k, 1, caps) {
            link(&mut w, &mut links, 0, i);
            level.push(i);
        }
    }
    while !level.is_empty() {
        let depth = w.nodes[level[0]].depth;
        if depth >= caps.max_depth {
            break;
        }
        let keys: Vec<String> = level.iter().map(|i| w.nodes[*i].key.clone()).collect();
        let answers = fan.each("debug_remoteGetPeers", &keys);
        let mut next = Vec::new();
        for (i, answer) in level.iter().copied().zip(answers) {
            let found = match answer {
                Ok(v) => remote_keys(&v),
                Err(e) => {
                    crate::debug!("yggdrasil: peers of {}: {e}", w.nodes[i].key);
                    w.failures += 1;
                    continue;
                }
            };
            for k in found {
                match index.get(&k) {
                    Some(&j) => link(&mut w, &mut links, i, j),
                    None => {
                        if let Some(j) = add(&mut w, &mut index, &k, depth + 1, caps) {
                            link(&mut w, &mut links, i, j);
                            next.push(j);
                        }
                    }
                }
            }
        }
        level = next;
    }
    let keys: Vec<String> = w.nodes.iter().skip(1).map(|n| n.key.clone()).collect();
    for (i, answer) in fan.each("getNodeInfo", &keys).into_iter().enumerate() {
        match answer {
            Ok(v) => {
                w.nodes[i + 1].advert = v
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                    .find_map(|info| info.get("mnigs").cloned());
            }
            Err(_) => w.failures += 1,
        }
    }
    Ok(w)
}

/// Records the link between `a` and `b` once.
fn link(w: &mut Walk, links: &mut HashSet<(usize, usize)>, a: usize, b: usize) {
    if a != b && links.insert((a.min(b), a.max(b))) {
        w.links.push((a, b));
    }
}

fn add(
    w: &mut Walk,
    index: &mut HashMap<String, usize>,
    key: &str,
    depth: u32,
    caps: Caps,
) -> Option<usize> {
    if index.contains_key(key) || w.nodes.len() > caps.max_nodes as usize {
        return None;
    }
    let address = address_of(&key_bytes(key).ok()?);
    w.nodes.push(YggdrasilNode {
        key: key.to_string(),
        address,
        depth,
        advert: None,
    });
    index.insert(key.to_string(), w.nodes.len() - 1);
    Some(w.nodes.len() - 1)
}

/// Candidates of a walk: nodes advertising `mnigs` first (on the port they advertise), then,
/// unless `nodeinfo_only`, every other node on every configured port.
pub fn candidates(w: &Walk, ports: &[u16], nodeinfo_only: bool) -> Vec<Candidate> {
    let mut out = Vec::new();
    for n in w.nodes.iter().skip(1) {
        if let Some(a) = &n.advert {
            let port = a["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .unwrap_or(crate::config::DEFAULT_RPC_PORT);
            out.push(Candidate {
                address: IpAddr::V6(n.address),
                port,
                how: "yggdrasil:nodeinfo".into(),
                hops: n.depth,
            });
        }
    }
    if !nodeinfo_only {
        for n in w.nodes.iter().skip(1) {
            for port in ports {
                out.push(Candidate {
                    address: IpAddr::V6(n.address),
                    port: *port,
                    how: "yggdrasil".into(),
                    hops: n.depth,
                });
            }
        }
    }
    super::dedup(out)
}

/// Walks the Yggdrasil network as `cfg` says.
pub fn discover(cfg: &DiscoveryConfig) -> Result<super::Found, String> {
    let endpoint = Endpoint::parse(cfg.admin.as_deref().unwrap_or(DEFAULT_ADMIN))?;
    // Up to 16 admin connections: enough to hide the timeouts of dead nodes, few enough for
    // a router's Yggdrasil.
    let workers = (cfg.concurrency as usize).clamp(1, 16);
    let timeout = Duration::from_millis(u64::from(cfg.timeout_ms));
    let mut fan = Parallel::new(endpoint, timeout, workers);
    let caps = Caps {
        max_depth: cfg.max_depth,
        max_nodes: cfg.max_nodes,
    };
    let w = walk_with(&mut fan, caps)?;
    crate::info!(
        "yggdrasil: {} node(s), {} advertising mnigs, {} failure(s)",
        w.nodes.len().saturating_sub(1),
        w.nodes.iter().filter(|n| n.advert.is_some()).count(),
        w.failures
    );
    Ok(super::Found {
        candidates: candidates(&w, &cfg.ports, cfg.nodeinfo_only),
        graph: Some(super::Graph::of_walk(
            w.nodes.iter().map(|n| (n.address, n.depth)),
            &w.links,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn addresses_of_real_keys() {
        // Printed by `yggdrasil -useconffile … -address` (0.4.7) for generated keys.
        for (key, addr) in [
            (
                "0d1faa4c9b62e9fe0143b93ea8450c89d16e3c21f01195aa4443816da9583d3a",
                "204:5c0a:b66c:93a2:c03f:d788:d82a:f75e",
            ),
            (
                "1297f7b1190270b7a35d834868854c3e6d62a4e119af6bd28027705413bca08f",
                "203:d680:84ee:6fd8:f485:ca27:cb79:77ab",
            ),
        ] {
            assert_eq!(address_of(&key_bytes(key).unwrap()).to_string(), addr);
        }
        assert!(key_bytes("12").is_err());
        assert!(key_bytes(&"g".repeat(64)).is_err());
    }

    #[test]
    fn address_from_key() {
        // A key whose inverse starts with 0x0f: n = 4, then the bits after the first zero.
        let mut key = [0u8; 32];
        key[0] = 0xf0;
        key[1] = 0x0f;
        // inverse: 0f f0 ff ff … → no leading ones: n = 0; bits after the first 0: 0001111 1111 0000 …
        let a = address_of(&key);
        assert_eq!(a.octets()[0..4], [0x02, 0x00, 0x1f, 0xe1]);
        let key = [0u8; 32];
        // inverse: all ones → n = 255 saturates; nothing after.
        assert_eq!(address_of(&key).octets()[0..3], [0x02, 0xff, 0x00]);
    }

    #[test]
    fn decodes_pretty_printed_answers_split_anywhere() {
        let two = b"{\n  \"status\": \"success\",\n  \"response\": {\"a\": 1}\n}\n{\n  \"status\": \"error\", \"error\": \"x\"\n}\n";
        for cut in [1, 7, 40, 60, two.len() - 1] {
            let mut s = JsonStream::default();
            s.push(&two[..cut]);
            let mut got = Vec::new();
            while let Some(v) = s.next_value().unwrap() {
                got.push(v);
            }
            s.push(&two[cut..]);
            while let Some(v) = s.next_value().unwrap() {
                got.push(v);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0]["response"]["a"], 1);
            assert_eq!(got[1]["error"], "x");
        }
        let mut s = JsonStream::default();
        s.push(b"}{");
        assert!(s.next_value().is_err());
    }

    #[test]
    fn a_number_split_across_reads_is_one_number() {
        let mut s = JsonStream::default();
        s.push(b"1");
        assert_eq!(s.next_value().unwrap(), None, "12 may follow");
        s.push(b"2 ");
        assert_eq!(s.next_value().unwrap(), Some(serde_json::json!(12)));
        assert_eq!(s.next_value().unwrap(), None);
    }

    /// A fake admin over a line of keys k0 - k1 - … - k(n-1), k0 being us.
    struct Line {
        keys: Vec<String>,
        advert_at: usize,
        asked: Vec<String>,
    }

    impl Admin for Line {
        fn call(&mut self, request: &str, args: Value) -> Result<Value, String> {
            let at = |k: &str| self.keys.iter().position(|x| x == k);
            match request {
                "getSelf" => Ok(json!({"key": self.keys[0], "address": "200::"})),
                "getPeers" => Ok(json!({"peers": [{"key": self.keys[1]}]})),
                "debug_remoteGetPeers" => {
                    let k = args["key"].as_str().ok_or("no key")?;
                    self.asked.push(k.to_string());
                    let i = at(k).ok_or("timeout")?;
                    let mut keys = vec![self.keys[i - 1].clone()];
                    if i + 1 < self.keys.len() {
                        keys.push(self.keys[i + 1].clone());
                    }
                    Ok(json!({"200::1": {"keys": keys}}))
                }
                "getNodeInfo" => {
                    let k = args["key"].as_str().ok_or("no key")?;
                    let i = at(k).ok_or("timeout")?;
                    let info = if i == self.advert_at {
                        json!({"mnigs": {"port": 4000}, "name": "gw"})
                    } else {
                        json!({"buildname": "yggdrasil"})
                    };
                    Ok(json!({ k: info }))
                }
                _ => Err("unknown".into()),
            }
        }
    }

    fn line(n: usize) -> Line {
        Line {
            keys: (0..n).map(|i| format!("{:064x}", i * 7919 + 1)).collect(),
            advert_at: 3,
            asked: vec![],
        }
    }

    #[test]
    fn walks_breadth_first_with_caps_and_reads_nodeinfo() {
        let mut l = line(6);
        let caps = Caps {
            max_depth: 8,
            max_nodes: 100,
        };
        let w = walk(&mut l, caps).unwrap();
        assert_eq!(w.nodes.len(), 6);
        assert_eq!(
            w.nodes.iter().map(|n| n.depth).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(!l.asked.contains(&l.keys[0]), "never asks ourselves");
        let c = candidates(&w, &[65533], false);
        assert_eq!(c[0].how, "yggdrasil:nodeinfo");
        assert_eq!((c[0].port, c[0].hops), (4000, 3));
        assert_eq!(c.len(), 6);
        let only = candidates(&w, &[65533], true);
        assert_eq!(only.len(), 1);

        let mut l = line(6);
        let w = walk(
            &mut l,
            Caps {
                max_depth: 2,
                max_nodes: 100,
            },
        )
        .unwrap();
        assert_eq!(w.nodes.len(), 3);
        let mut l = line(6);
        let w = walk(
            &mut l,
            Caps {
                max_depth: 8,
                max_nodes: 3,
            },
        )
        .unwrap();
        assert_eq!(w.nodes.len(), 4);
    }

    /// A fake admin socket: us (k0) — hub (k1) — leaves k2…k21; the odd leaves are dead (remote
    /// calls to them never answer). Answers are pretty-printed, several per connection.
    fn fake_socket(dir: &std::path::Path) -> (Endpoint, Arc<AtomicUsize>) {
        use std::os::unix::net::UnixListener;
        let keys: Vec<String> = (0..22).map(|i| format!("{:064x}", i * 7919 + 1)).collect();
        let path = dir.join("ygg.sock");
        let l = UnixListener::bind(&path).unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let most2 = most.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let (keys, open, most) = (keys.clone(), open.clone(), most2.clone());
                std::thread::spawn(move || {
                    let now = open.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    let mut stream = JsonStream::default();
                    let mut buf = [0u8; 4096];
                    'conn: while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        stream.push(&buf[..n]);
                        while let Ok(Some(req)) = stream.next_value() {
                            let key = req["arguments"]["key"].as_str().unwrap_or("");
                            let at = keys.iter().position(|k| k == key).unwrap_or(0);
                            let response = match req["request"].as_str().unwrap_or("") {
                                "getSelf" => json!({"key": keys[0]}),
                                "getPeers" => json!({"peers": [{"key": keys[1]}]}),
                                _ if at >= 2 && at % 2 == 1 => {
                                    // A dead node: hold the connection, answer nothing.
                                    std::thread::sleep(Duration::from_secs(2));
                                    break 'conn;
                                }
                                "debug_remoteGetPeers" if at == 1 => {
                                    json!({"200::1": {"keys": keys[0..22].to_vec()}})
                                }
                                "debug_remoteGetPeers" => json!({"200::2": {"keys": [keys[1]]}}),
                                "getNodeInfo" => json!({ key: {"name": at} }),
                                _ => json!({}),
                            };
                            let answer = json!({"status": "success", "response": response});
                            let text = serde_json::to_string_pretty(&answer).unwrap() + "\n";
                            if c.write_all(text.as_bytes()).is_err() {
                                break 'conn;
                            }
                        }
                    }
                    open.fetch_sub(1, SeqCst);
                });
            }
        });
        (Endpoint::Unix(path), most)
    }

    #[test]
    fn parallel_walk_over_a_socket_survives_dead_nodes() {
        let dir = std::env::temp_dir().join(format!("mnigs-ygg-fake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (endpoint, most) = fake_socket(&dir);
        let caps = Caps {
            max_depth: 8,
            max_nodes: 100,
        };
        let mut fan = Parallel::new(endpoint, Duration::from_millis(300), 8);
        let w = walk_with(&mut fan, caps).unwrap();
        assert_eq!(w.nodes.len(), 22);
        assert_eq!(w.nodes.iter().filter(|n| n.depth == 2).count(), 20);
        // Ten dead leaves: their peers and their NodeInfo both fail.
        assert_eq!(w.failures, 20);
        assert_eq!(w.links.len(), 21);
        assert!(most.load(SeqCst) >= 2, "calls ran side by side");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
