//! cjdroute's admin API: one call ([`Admin`]), the UDP client with cookie + SHA-256 auth
//! ([`UdpAdmin`]), where to find it and its password ([`open_admin`], [`AdminTarget`], cjdroute.conf),
//! and our own key ([`node_key`]).

use super::bencode::{self, Value};
use super::keys::PeerAddr;
use super::sha2::{hex, sha256};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where cjdroute's admin API listens unless configured otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:11234";

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
    let v: serde_json::Value = serde_json::from_slice(strip_comments(text).as_bytes())
        .map_err(|e| format!("cjdroute.conf is not JSON: {e}"))?;
    let admin = &v["admin"];
    Ok((
        admin["password"].as_str().map(str::to_string),
        admin["bind"].as_str().map(str::to_string),
    ))
}

/// The node's public key (`….k`) from cjdroute.conf, if it has one.
pub fn read_cjdroute_public_key(text: &str) -> Result<Option<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(strip_comments(text).as_bytes())
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

/// Our own key, from `Core_nodeInfo`.
pub fn node_key(admin: &mut dyn Admin) -> Result<String, String> {
    let v = admin.call("Core_nodeInfo", Value::dict([]))?;
    let addr = v
        .get("myAddr")
        .and_then(Value::as_str)
        .ok_or("Core_nodeInfo: no myAddr")?;
    Ok(PeerAddr::parse(addr)?.key)
}

/// Where cjdroute's admin API is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// `HOST:PORT` (or `tcp://HOST:PORT`); `None`: cjdroute.conf's bind, else the default.
    pub admin: Option<String>,
    /// The admin password; wins over cjdroute.conf's.
    pub password: Option<String>,
    /// cjdroute.conf, read at every use (cjdroute may be set up after mnigs starts).
    pub cjdroute_conf: Option<PathBuf>,
    /// Time one admin call may take.
    pub timeout: Duration,
}

impl AdminTarget {
    fn conf(&self) -> Result<Option<String>, String> {
        self.cjdroute_conf
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
            })
            .transpose()
    }

    /// A client of the admin API.
    pub fn open(&self) -> Result<UdpAdmin, String> {
        open_admin(
            self.admin.clone(),
            self.password.clone(),
            self.conf()?,
            self.timeout,
        )
    }

    /// Our key: from `Core_nodeInfo`, else cjdroute.conf's `publicKey`.
    pub fn own_key(&self) -> Result<String, String> {
        let from_api = self.open().and_then(|mut a| node_key(&mut a));
        match from_api {
            Ok(k) => Ok(k),
            Err(e) => match self.conf().ok().flatten() {
                Some(text) => read_cjdroute_public_key(&text)?.ok_or(e),
                None => Err(e),
            },
        }
    }
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
        let with_key = format!(
            "{{ /* x */ \"publicKey\": \"{}\" }}",
            crate::cjdns::keys::tests::PAIRS[0].0
        );
        assert_eq!(
            read_cjdroute_public_key(&with_key).unwrap().as_deref(),
            Some(crate::cjdns::keys::tests::PAIRS[0].0)
        );
        assert_eq!(read_cjdroute_public_key(conf).unwrap(), None);
    }
}
