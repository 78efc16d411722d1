//! Discovery over cjdns: a breadth-first walk of the cjdns network through the local admin API.
//!
//! Our own peers come from `InterfaceController_peerStats` (labels from us). Each node found is
//! then asked for its peers with `RouterModule_getPeers` on its full `v<ver>.<label>.<key>.k`
//! address, paging with `nearbyPath`; a peer's label (relative to the node) is spliced onto the
//! node's label to get the path from us. Our own label/key is never queried: cjdroute crashed
//! when asked for its own peers. Each node's fc00::/8 address is derived from its key, and
//! depth and node caps bound the walk.
//!
//! # Layout
//! - keys and labels (pure): [`key_bytes`], [`encode_key`], [`address_of`], [`splice`],
//!   [`PeerAddr`].
//! - [`Admin`]: one admin call; [`UdpAdmin`] speaks it over UDP with cookie + SHA-256 auth.
//! - [`walk`]: the breadth-first search, over any [`Admin`]; [`discover`]: config → candidates.

use super::Candidate;
use super::bencode::{self, Value};
use super::sha2::{hex, sha256, sha512};
use crate::config::DiscoveryConfig;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// cjdns' base32 alphabet (not RFC 4648), least significant bits first.
const ALPHABET: &[u8; 32] = b"0123456789bcdfghjklmnpqrstuvwxyz";

/// Where cjdroute's admin API listens unless configured otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:11234";

/// `RouterModule_getPeers` answers at most this many peers per page.
const PAGE: usize = 8;

/// Pages asked of one node at most (a node has at most a few dozen peers).
const MAX_PAGES: usize = 16;

/// The 32 key bytes of `name` (`<52 base32 chars>.k`, the `.k` optional).
pub fn key_bytes(name: &str) -> Result<[u8; 32], String> {
    let text = name.strip_suffix(".k").unwrap_or(name);
    if text.len() != 52 {
        return Err(format!(
            "cjdns key must be 52 characters, got {}",
            text.len()
        ));
    }
    let mut out = [0u8; 32];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .ok_or_else(|| format!("'{}' is not a cjdns base32 character", c as char))?;
        acc |= (v as u32) << bits;
        bits += 5;
        if bits >= 8 {
            if n == 32 {
                return Err("cjdns key too long".into());
            }
            out[n] = acc as u8;
            n += 1;
            acc >>= 8;
            bits -= 8;
        }
    }
    if n != 32 || acc != 0 {
        return Err("cjdns key has trailing bits".into());
    }
    Ok(out)
}

/// The text form (`….k`) of 32 key bytes.
pub fn encode_key(key: &[u8; 32]) -> String {
    let mut out = String::with_capacity(54);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in key {
        acc |= u32::from(*b) << bits;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[(acc & 31) as usize] as char);
            acc >>= 5;
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[(acc & 31) as usize] as char);
    }
    out.push_str(".k");
    out
}

/// A node's IPv6 address: the first 16 bytes of sha512(sha512(key)); a key whose address does
/// not start with 0xfc is not a valid cjdns key.
pub fn address_of(key: &[u8; 32]) -> Result<Ipv6Addr, String> {
    let h = sha512(&sha512(key));
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[..16]);
    if a[0] != 0xfc {
        return Err("key does not give an fc00::/8 address".into());
    }
    Ok(Ipv6Addr::from(a))
}

fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The path from us to `child` (a label relative to the node at `parent` from us), or `None`
/// if it would not fit in 64 bits: `((child ^ 1) << (bits(parent) − 1)) ^ parent`.
pub fn splice(parent: u64, child: u64) -> Option<u64> {
    let shift = bit_len(parent).checked_sub(1)?;
    if child == 0 || bit_len(child ^ 1) + shift > 64 {
        return None;
    }
    Some(((child ^ 1) << shift) ^ parent)
}

/// A label as cjdns writes it: `0000.0000.0000.0013`.
pub fn format_label(label: u64) -> String {
    let h = format!("{label:016x}");
    format!("{}.{}.{}.{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
}

/// A node address as the admin API writes it: `v22.0000.0000.0000.0013.<key>.k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// Protocol version.
    pub version: u32,
    /// Path label (relative to whoever answered).
    pub label: u64,
    /// Key text, with `.k`.
    pub key: String,
}

impl PeerAddr {
    /// Parses `v<ver>.<4×4 hex>.<key>.k`.
    pub fn parse(s: &str) -> Result<PeerAddr, String> {
        let bad = || format!("not a cjdns node address: {}", crate::validate::quoted(s));
        let parts: Vec<&str> = s.split('.').collect();
        let [v, a, b, c, d, key, k] = parts[..] else {
            return Err(bad());
        };
        let version = v
            .strip_prefix('v')
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if [a, b, c, d].iter().any(|g| g.len() != 4) || k != "k" {
            return Err(bad());
        }
        let label = u64::from_str_radix(&format!("{a}{b}{c}{d}"), 16).map_err(|_| bad())?;
        key_bytes(key)?;
        Ok(PeerAddr {
            version,
            label,
            key: format!("{key}.k"),
        })
    }

    /// The text form.
    pub fn render(&self) -> String {
        let key = self.key.strip_suffix(".k").unwrap_or(&self.key);
        format!("v{}.{}.{key}.k", self.version, format_label(self.label))
    }
}

/// One call of the cjdns admin API.
pub trait Admin {
    /// Calls `function` with `args` (a dictionary) and returns the answer dictionary, or why not.
    fn call(&mut self, function: &str, args: Value) -> Result<Value, String>;
}

/// cjdroute reads at most this many bytes of one admin request.
pub const MAX_REQUEST: usize = 512;

/// How long we reuse a cookie; cjdroute accepts one for about 20 s after it issued it.
const COOKIE_REUSE: Duration = Duration::from_secs(10);

/// The admin API over UDP: one bencoded dictionary per datagram, `txid` echoed.
///
/// With a password every call is authenticated. A cookie is reused for a few seconds (it saves a
/// round trip per call); when cjdroute refuses a reused cookie (`Auth failed.`, as it says for an
/// expired one) the call is retried once with a fresh cookie, so only a wrong password fails.
pub struct UdpAdmin {
    sock: UdpSocket,
    password: Option<String>,
    timeout: Duration,
    txid: u64,
    /// The last cookie and when we got it.
    cookie: Option<(String, Instant)>,
}

impl UdpAdmin {
    /// A client of the admin API at `addr`; with a password, every call is authenticated.
    pub fn connect(
        addr: SocketAddr,
        password: Option<String>,
        timeout: Duration,
    ) -> std::io::Result<UdpAdmin> {
        // Same family as the admin API; loopback when it is on loopback (cjdroute's default).
        let local: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
            (true, true) => "127.0.0.1:0",
            (true, false) => "0.0.0.0:0",
            (false, true) => "[::1]:0",
            (false, false) => "[::]:0",
        }
        .parse()
        .expect("literal");
        let sock = UdpSocket::bind(local)?;
        sock.connect(addr)?;
        Ok(UdpAdmin {
            sock,
            password,
            timeout,
            txid: 0,
            cookie: None,
        })
    }

    /// A fresh cookie from cjdroute.
    fn fresh_cookie(&mut self) -> Result<String, String> {
        let ctx = self.next_txid();
        let q = Value::dict([("q", Value::str("cookie")), ("txid", Value::str(&ctx))]);
        let c = self.exchange(&q.emit(), &ctx)?;
        let cookie = c
            .get("cookie")
            .and_then(Value::as_str)
            .ok_or("cjdns admin: no cookie in the answer")?
            .to_string();
        self.cookie = Some((cookie.clone(), Instant::now()));
        Ok(cookie)
    }

    /// One authenticated call with `cookie`.
    fn call_auth(
        &mut self,
        function: &str,
        args: Value,
        password: &str,
        cookie: &str,
    ) -> Result<Value, String> {
        let txid = self.next_txid();
        let raw = auth_request(function, args, password, cookie, &txid);
        self.exchange(&raw, &txid)
    }

    fn next_txid(&mut self) -> String {
        self.txid += 1;
        format!("m{}", self.txid)
    }

    /// Sends `raw` (which carries `txid`) and waits for the answer with that `txid`.
    fn exchange(&mut self, raw: &[u8], txid: &str) -> Result<Value, String> {
        if raw.len() > MAX_REQUEST {
            return Err(format!(
                "cjdns admin: request of {} bytes is over cjdroute's limit of {MAX_REQUEST}",
                raw.len()
            ));
        }
        self.sock
            .send(raw)
            .map_err(|e| format!("cjdns admin: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("cjdns admin: no answer in time".into());
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("cjdns admin: {e}")),
            };
            let Ok(v) = bencode::parse(&buf[..n]) else {
                continue;
            };
            if v.get("txid").and_then(Value::as_str) == Some(txid) {
                return Ok(v);
            }
        }
    }
}

/// The bytes of an authenticated call: the request carries `hash = hex(sha256(password +
/// cookie))`, then that hash is replaced, in place, by the hex SHA-256 of the whole encoding.
pub fn auth_request(
    function: &str,
    args: Value,
    password: &str,
    cookie: &str,
    txid: &str,
) -> Vec<u8> {
    let first = hex(&sha256(format!("{password}{cookie}").as_bytes()));
    let msg = Value::dict([
        ("q", Value::str("auth")),
        ("aq", Value::str(function)),
        ("args", args),
        ("cookie", Value::str(cookie)),
        ("hash", Value::str(&first)),
        ("txid", Value::str(txid)),
    ]);
    let mut raw = msg.emit();
    let second = hex(&sha256(&raw));
    let at = find(&raw, first.as_bytes()).expect("the hash is in the message");
    raw[at..at + 64].copy_from_slice(second.as_bytes());
    raw
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Admin for UdpAdmin {
    fn call(&mut self, function: &str, args: Value) -> Result<Value, String> {
        let v = match self.password.clone() {
            Some(pw) => {
                let reused = self
                    .cookie
                    .clone()
                    .filter(|(_, at)| at.elapsed() < COOKIE_REUSE);
                let first = match &reused {
                    Some((cookie, _)) => cookie.clone(),
                    None => self.fresh_cookie()?,
                };
                let v = self.call_auth(function, args.clone(), &pw, &first)?;
                if reused.is_some() && is_auth_failure(&v) {
                    // Most likely the cookie expired on cjdroute's clock: once more, fresh.
                    let cookie = self.fresh_cookie()?;
                    self.call_auth(function, args, &pw, &cookie)?
                } else {
                    v
                }
            }
            None => {
                let txid = self.next_txid();
                let raw = Value::dict([
                    ("q", Value::str(function)),
                    ("args", args),
                    ("txid", Value::str(&txid)),
                ])
                .emit();
                self.exchange(&raw, &txid)?
            }
        };
        match v.get("error").and_then(Value::as_str) {
            Some(e) if e != "none" => Err(format!("cjdns admin {function}: {e}")),
            _ => Ok(v),
        }
    }
}

/// Whether cjdroute refused the authentication (wrong password or expired cookie).
fn is_auth_failure(v: &Value) -> bool {
    v.get("error").and_then(Value::as_str) == Some("Auth failed.")
}

/// A node the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its key (`….k`).
    pub key: String,
    /// Its fc00::/8 address.
    pub address: Ipv6Addr,
    /// The path from us.
    pub label: u64,
    /// Protocol version it reported.
    pub version: u32,
    /// Hops from us (0: ourselves).
    pub depth: u32,
}

/// What a walk saw: nodes (ourselves first) and links between them, for candidates and the UI.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Nodes in the order found; `nodes[0]` is ourselves.
    pub nodes: Vec<Node>,
    /// Links as indices into `nodes`.
    pub links: Vec<(usize, usize)>,
    /// `RouterModule_getPeers` calls made.
    pub queries: u32,
    /// Calls that failed (a node that did not answer is a leaf for us).
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

/// The breadth-first walk from our node through `admin`.
pub fn walk(admin: &mut dyn Admin, caps: Caps) -> Result<Walk, String> {
    let me = admin.call("Core_nodeInfo", Value::dict([]))?;
    let my_addr = me
        .get("myAddr")
        .and_then(Value::as_str)
        .ok_or("Core_nodeInfo: no myAddr")?;
    let me = PeerAddr::parse(my_addr)?;
    let my_key = me.key.clone();
    let mut w = Walk::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    w.nodes.push(Node {
        address: address_of(&key_bytes(&my_key)?)?,
        key: my_key.clone(),
        label: 1,
        version: me.version,
        depth: 0,
    });
    index.insert(my_key.clone(), 0);
    let mut queue = VecDeque::new();

    for page in 0..MAX_PAGES as i64 {
        let v = admin.call(
            "InterfaceController_peerStats",
            Value::dict([("page", Value::Int(page))]),
        )?;
        for p in v.get("peers").and_then(Value::as_list).unwrap_or(&[]) {
            if p.get("state").and_then(Value::as_str) != Some("ESTABLISHED") {
                continue;
            }
            let Some(pa) = p.get("addr").and_then(Value::as_str) else {
                continue;
            };
            let Ok(pa) = PeerAddr::parse(pa) else {
                continue;
            };
            if let Some(i) = add(&mut w, &mut index, &pa, pa.label, 1, caps) {
                queue.push_back(i);
                w.links.push((0, i));
            }
        }
        if v.get("more").and_then(Value::as_int).unwrap_or(0) == 0 {
            break;
        }
    }

    while let Some(i) = queue.pop_front() {
        let node = w.nodes[i].clone();
        // Never ask our own node: cjdroute crashes on it.
        if node.depth >= caps.max_depth || node.key == my_key || node.label == 1 {
            continue;
        }
        let path = PeerAddr {
            version: node.version,
            label: node.label,
            key: node.key.clone(),
        }
        .render();
        let mut nearby: Option<u64> = None;
        for _ in 0..MAX_PAGES {
            let mut args = vec![("path", Value::str(&path))];
            if let Some(n) = nearby {
                args.push(("nearbyPath", Value::str(&format_label(n))));
            }
            w.queries += 1;
            // An unreachable node is answered with `{result: "timeout"}` and no peers after
            // some seconds: a failed query, not a node without peers.
            let answer = admin
                .call("RouterModule_getPeers", Value::dict(args))
                .and_then(|v| match v.get("result").and_then(Value::as_str) {
                    Some("peers") | None if v.get("peers").is_some() => Ok(v),
                    other => Err(format!("no peers in the answer (result {other:?})")),
                });
            let v = match answer {
                Ok(v) => v,
                Err(e) => {
                    crate::log::debug(&format!("cjdns: {path}: {e}"));
                    w.failures += 1;
                    break;
                }
            };
            let peers: Vec<PeerAddr> = v
                .get("peers")
                .and_then(Value::as_list)
                .unwrap_or(&[])
                .iter()
                .filter_map(|p| PeerAddr::parse(p.as_str()?).ok())
                .collect();
            for p in &peers {
                if p.label == 1 {
                    continue; // the node itself
                }
                let Some(from_us) = splice(node.label, p.label) else {
                    continue;
                };
                match index.get(&p.key) {
                    Some(&j) => {
                        if j != i && !w.links.contains(&(j, i)) && !w.links.contains(&(i, j)) {
                            w.links.push((i, j));
                        }
                    }
                    None => {
                        if let Some(j) = add(&mut w, &mut index, p, from_us, node.depth + 1, caps) {
                            w.links.push((i, j));
                            queue.push_back(j);
                        }
                    }
                }
            }
            let last = peers.last().map(|p| p.label);
            if peers.len() < PAGE || last.is_none() || last == nearby {
                break;
            }
            nearby = last;
        }
    }
    Ok(w)
}

/// Adds a newly seen node unless it is known, invalid, or the node cap is reached.
fn add(
    w: &mut Walk,
    index: &mut HashMap<String, usize>,
    pa: &PeerAddr,
    label: u64,
    depth: u32,
    caps: Caps,
) -> Option<usize> {
    if index.contains_key(&pa.key) || w.nodes.len() > caps.max_nodes as usize {
        return None;
    }
    let address = address_of(&key_bytes(&pa.key).ok()?).ok()?;
    w.nodes.push(Node {
        key: pa.key.clone(),
        address,
        label,
        version: pa.version,
        depth,
    });
    index.insert(pa.key.clone(), w.nodes.len() - 1);
    Some(w.nodes.len() - 1)
}

/// Candidates of a walk: every node but ourselves, on every configured port.
pub fn candidates(w: &Walk, ports: &[u16]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for n in w.nodes.iter().filter(|n| n.depth > 0) {
        for port in ports {
            out.push(Candidate {
                address: IpAddr::V6(n.address),
                port: *port,
                how: "cjdns".into(),
                hops: n.depth,
            });
        }
    }
    out
}

/// A client of cjdroute's admin API: the address and password from UCI (`admin`, `password`),
/// else from cjdroute.conf's text (`conf`: `admin.bind`, `admin.password`), else the default
/// address; cjdroute's password `NONE` turns authentication off.
pub fn open_admin(
    admin: Option<String>,
    password: Option<String>,
    conf: Option<String>,
    timeout: Duration,
) -> Result<UdpAdmin, String> {
    let (mut password, mut bind) = (password, None);
    if let Some(text) = conf {
        let (pw, b) = read_cjdroute_conf(&text)?;
        password = password.or(pw);
        bind = b;
    }
    let password = password.filter(|p| p != "NONE");
    let admin = admin.or(bind).unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let admin = admin.strip_prefix("tcp://").unwrap_or(&admin);
    let addr: SocketAddr = admin
        .replace("localhost:", "127.0.0.1:")
        .parse()
        .map_err(|_| format!("cjdns admin address {admin} is not HOST:PORT"))?;
    UdpAdmin::connect(addr, password, timeout).map_err(|e| format!("cjdns admin: {e}"))
}

/// The admin password and bind address from cjdroute.conf (JSON with comments).
pub fn read_cjdroute_conf(text: &str) -> Result<(Option<String>, Option<String>), String> {
    let v: serde_json::Value = serde_json::from_str(&strip_comments(text))
        .map_err(|e| format!("cjdroute.conf is not JSON: {e}"))?;
    let admin = &v["admin"];
    Ok((
        admin["password"].as_str().map(str::to_string),
        admin["bind"].as_str().map(str::to_string),
    ))
}

/// The node's public key (`….k`) from cjdroute.conf, if it has one.
pub fn read_cjdroute_public_key(text: &str) -> Result<Option<String>, String> {
    let v: serde_json::Value = serde_json::from_str(&strip_comments(text))
        .map_err(|e| format!("cjdroute.conf is not JSON: {e}"))?;
    Ok(v["publicKey"].as_str().map(str::to_string))
}

/// Removes `//` and `/* */` comments outside strings.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
            out.push(c);
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
            continue;
        } else {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Walks the cjdns network as `cfg` says and returns its nodes as candidates.
pub fn discover(cfg: &DiscoveryConfig) -> Result<super::Found, String> {
    let conf = cfg
        .cjdroute_conf
        .as_ref()
        .map(|p| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display())))
        .transpose()?;
    let timeout = Duration::from_millis(u64::from(cfg.timeout_ms));
    let mut client = open_admin(cfg.admin.clone(), cfg.password.clone(), conf, timeout)?;
    let caps = Caps {
        max_depth: cfg.max_depth,
        max_nodes: cfg.max_nodes,
    };
    let w = walk(&mut client, caps)?;
    crate::log::info(&format!(
        "cjdns: {} node(s), {} link(s), {} query(ies), {} failure(s)",
        w.nodes.len().saturating_sub(1),
        w.links.len(),
        w.queries,
        w.failures
    ));
    Ok(super::Found {
        candidates: candidates(&w, &cfg.ports),
        graph: Some(super::Graph::of_walk(
            w.nodes.iter().map(|n| (n.address, n.depth)),
            &w.links,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_address_and_password_come_from_uci_then_cjdroute_conf() {
        let t = Duration::from_millis(100);
        let peer = |a: &UdpAdmin| a.sock.peer_addr().unwrap().to_string();
        let conf = r#"{ // cjdroute.conf
            "admin": { "bind": "127.0.0.1:11999", "password": "secret" } }"#;
        let a = open_admin(None, None, Some(conf.into()), t).unwrap();
        assert_eq!(
            (peer(&a), a.password.as_deref()),
            ("127.0.0.1:11999".into(), Some("secret"))
        );
        let a = open_admin(
            Some("tcp://localhost:12000".into()),
            Some("uci".into()),
            Some(conf.into()),
            t,
        )
        .unwrap();
        assert_eq!(
            (peer(&a), a.password.as_deref()),
            ("127.0.0.1:12000".into(), Some("uci"))
        );
        let a = open_admin(None, Some("NONE".into()), None, t).unwrap();
        assert_eq!((peer(&a), a.password), (DEFAULT_ADMIN.into(), None));
        let e = open_admin(Some("cjdns.local".into()), None, None, t)
            .err()
            .unwrap();
        assert!(e.contains("cjdns.local is not HOST:PORT"), "{e}");
    }

    /// Key/address pairs published in cjdroute.conf examples.
    const PAIRS: &[(&str, &str)] = &[
        (
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k",
            "fcff:a215:1e7b:a4e9:c00d:813:93b3:7c87",
        ),
        (
            "hukfzjh5n30m10303bkhjg1wvuft90s0cqqg5jrjgg781dbly2z0.k",
            "fccf:4352:ac9:7d1f:b32b:ba08:f086:8432",
        ),
        (
            "kmzm4w0kj9bswd5qmx74nu7kusv5pj40vcsmp781j6xxgpd59z00.k",
            "fc41:94b5:925:7ba9:3959:11ab:a006:367a",
        ),
    ];

    #[test]
    fn addresses_from_keys() {
        for (key, addr) in PAIRS {
            let k = key_bytes(key).unwrap();
            assert_eq!(address_of(&k).unwrap().to_string(), *addr, "{key}");
            assert_eq!(encode_key(&k), *key);
        }
        assert!(key_bytes("u2jf87").is_err());
        assert!(key_bytes("a2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k").is_err());
        // 52 × 5 = 260 bits: the last 4 must be zero.
        assert!(key_bytes("u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8uz.k").is_err());
    }

    #[test]
    fn labels_splice_and_render() {
        assert_eq!(splice(0x13, 0x15), Some(0x153));
        assert_eq!(splice(1, 0x15), Some(0x15));
        assert_eq!(splice(0x13, 1), Some(0x13));
        assert_eq!(splice(1 << 62, 0x15), None);
        assert_eq!(splice(0, 0x15), None);
        assert_eq!(format_label(0x153), "0000.0000.0000.0153");
        let a = PeerAddr::parse(&format!("v22.0000.0000.0000.0153.{}", PAIRS[0].0)).unwrap();
        assert_eq!((a.version, a.label), (22, 0x153));
        assert_eq!(
            a.render(),
            format!("v22.0000.0000.0000.0153.{}", PAIRS[0].0)
        );
        assert!(PeerAddr::parse("v22.0000.0000.0153.x.k").is_err());
        assert!(PeerAddr::parse(&format!("22.0000.0000.0000.0153.{}", PAIRS[0].0)).is_err());
    }

    #[test]
    fn auth_hash_is_over_the_whole_request() {
        let raw = auth_request("ping", Value::dict([]), "pw", "1234", "t1");
        let v = bencode::parse(&raw).unwrap();
        let got = v.get("hash").and_then(Value::as_str).unwrap().to_string();
        let first = hex(&sha256(b"pw1234"));
        let mut with_first = raw.clone();
        let at = find(&raw, got.as_bytes()).unwrap();
        with_first[at..at + 64].copy_from_slice(first.as_bytes());
        assert_eq!(got, hex(&sha256(&with_first)));
        assert_eq!(v.get("aq").and_then(Value::as_str), Some("ping"));
    }

    #[test]
    fn password_from_cjdroute_conf() {
        let conf = r#"{
            // comment with "quotes"
            "privateKey": "x",
            /* block */ "admin": { "bind": "127.0.0.1:11234", "password": "a//b" }
        }"#;
        let (pw, bind) = read_cjdroute_conf(conf).unwrap();
        assert_eq!(pw.as_deref(), Some("a//b"));
        assert_eq!(bind.as_deref(), Some("127.0.0.1:11234"));
        assert!(read_cjdroute_conf("{").is_err());
        let with_key = format!("{{ /* x */ \"publicKey\": \"{}\" }}", PAIRS[0].0);
        assert_eq!(
            read_cjdroute_public_key(&with_key).unwrap().as_deref(),
            Some(PAIRS[0].0)
        );
        assert_eq!(read_cjdroute_public_key(conf).unwrap(), None);
    }
}
