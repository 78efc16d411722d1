//! cjdns IpTunnel: cjdroute carries the subscriber's traffic over cjdns; mnigs only drives it.
//!
//! Gateway: `IpTunnel_allowConnection` admits the subscriber's key with addresses from our pools
//! (`ip4Prefix 0`, so the subscriber's cjdroute makes the tunnel its default route; the same for
//! IPv6 when there is a pool). The key comes from the request's `options.key` and must be the
//! key of the node that asked: its fc00::/8 address has to be the request's source address,
//! checked before anything is configured. We then put our own tunnel addresses on cjdroute's
//! tun and a host route per subscriber there; NAT is the gateway service's. Removal finds the
//! connection by key (`IpTunnel_listConnections` + `IpTunnel_showConnection`) and calls
//! `IpTunnel_removeConnection`.
//!
//! Subscriber: `requestConnection` carries our key (`Core_nodeInfo`, or cjdroute.conf's
//! `publicKey`); the grant carries the gateway's key; `IpTunnel_connectTo` dials it and cjdroute
//! configures our addresses and routes itself, which we wait for (`IpTunnel_showConnection`).
//!
//! Every admin call goes through [`crate::discovery::cjdns::UdpAdmin`]; every step finds what
//! exists first, so running it twice changes nothing.

use super::{GatewayNet, Method, Peer, TunnelError, host_routes};
use crate::discovery::bencode::Value;
use crate::discovery::cjdns::{self as api, Admin, PeerAddr, UdpAdmin, read_cjdroute_public_key};
use crate::protocol::Grant;
use crate::sys::cmd::{self, CmdError};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The field of `options` (request) and of the grant that carries a cjdns key.
pub const KEY_FIELD: &str = "key";

/// Connections looked at, at most, when searching one by key.
const MAX_CONNECTIONS: usize = 256;

/// Checks a cjdns key (`<52 cjdns-base32 chars>.k` of a valid fc00::/8 node) and returns its
/// address.
pub fn check_key(key: &str) -> Result<Ipv6Addr, String> {
    let quoted = || crate::validate::quoted(key);
    if !key.ends_with(".k") || key.len() != 54 {
        return Err(format!(
            "cjdns key must be 52 base32 characters and '.k', got {}",
            quoted()
        ));
    }
    let bytes = api::key_bytes(key).map_err(|e| format!("{e}: {}", quoted()))?;
    api::address_of(&bytes).map_err(|e| format!("{e}: {}", quoted()))
}

/// The key in a request's options or a grant's fields, checked.
fn key_in(fields: &Map<String, serde_json::Value>, whose: &str) -> Result<String, String> {
    let key = fields
        .get(KEY_FIELD)
        .ok_or_else(|| format!("{whose} has no cjdns key ('{KEY_FIELD}')"))?
        .as_str()
        .ok_or_else(|| format!("{whose}'s cjdns key is not a string"))?;
    check_key(key)?;
    Ok(key.to_string())
}

/// Refuses `key` unless its fc00::/8 address is `owner`, the request's source.
pub fn key_owner_is(key: &str, owner: IpAddr) -> Result<(), String> {
    let address = check_key(key)?;
    if owner != IpAddr::V6(address) {
        return Err(format!(
            "cjdns key {key} belongs to {address}, but the request came from {owner}"
        ));
    }
    Ok(())
}

/// The subscriber's key, refused unless it is the key of the node that sent the request.
pub fn subscriber_key(peer: &Peer<'_>) -> Result<String, String> {
    let key = key_in(peer.options, "the request")?;
    key_owner_is(&key, peer.owner)?;
    Ok(key)
}

/// The addresses an IpTunnel connection hands out (`IpTunnel_allowConnection`'s arguments and
/// `IpTunnel_showConnection`'s answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The other node's key.
    pub key: String,
    /// Whether we dialled it (`connectTo`) rather than allowed it.
    pub outgoing: bool,
    /// IPv4 address, route prefix and allocation size.
    pub ip4: Option<(Ipv4Addr, u8, u8)>,
    /// IPv6 address, route prefix and allocation size.
    pub ip6: Option<(Ipv6Addr, u8, u8)>,
}

fn admin_err(e: String) -> TunnelError {
    TunnelError::Admin(e)
}

/// `IpTunnel_allowConnection`: admits `c.key` with its addresses; returns the connection number.
pub fn allow_connection(admin: &mut dyn Admin, c: &Connection) -> Result<i64, String> {
    let mut args = vec![("publicKeyOfAuthorizedNode", Value::str(&c.key))];
    if let Some((a, prefix, alloc)) = c.ip4 {
        args.push(("ip4Address", Value::str(&a.to_string())));
        args.push(("ip4Prefix", Value::Int(prefix.into())));
        args.push(("ip4Alloc", Value::Int(alloc.into())));
    }
    if let Some((a, prefix, alloc)) = c.ip6 {
        args.push(("ip6Address", Value::str(&a.to_string())));
        args.push(("ip6Prefix", Value::Int(prefix.into())));
        args.push(("ip6Alloc", Value::Int(alloc.into())));
    }
    let v = admin.call("IpTunnel_allowConnection", Value::dict(args))?;
    v.get("connection")
        .and_then(Value::as_int)
        .ok_or_else(|| "IpTunnel_allowConnection: no connection number".into())
}

/// `IpTunnel_connectTo`: dials `key`; returns the connection number if cjdroute told it.
pub fn connect_to(admin: &mut dyn Admin, key: &str) -> Result<Option<i64>, String> {
    let v = admin.call(
        "IpTunnel_connectTo",
        Value::dict([("publicKeyOfNodeToConnectTo", Value::str(key))]),
    )?;
    Ok(v.get("connection").and_then(Value::as_int))
}

/// `IpTunnel_listConnections`: the connection numbers.
pub fn list_connections(admin: &mut dyn Admin) -> Result<Vec<i64>, String> {
    let v = admin.call("IpTunnel_listConnections", Value::dict([]))?;
    Ok(v.get("connections")
        .and_then(Value::as_list)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_int)
        .take(MAX_CONNECTIONS)
        .collect())
}

/// `IpTunnel_showConnection`: one connection.
pub fn show_connection(admin: &mut dyn Admin, number: i64) -> Result<Connection, String> {
    let v = admin.call(
        "IpTunnel_showConnection",
        Value::dict([("connection", Value::Int(number))]),
    )?;
    let int = |k: &str| v.get(k).and_then(Value::as_int);
    let len = |k: &str, max: u8, default: u8| {
        int(k)
            .and_then(|n| u8::try_from(n).ok())
            .filter(|n| *n <= max)
            .unwrap_or(default)
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let ip4 = text("ip4Address")
        .and_then(|a| a.parse().ok())
        .map(|a| (a, len("ip4Prefix", 32, 32), len("ip4Alloc", 32, 32)));
    let ip6 = text("ip6Address")
        .and_then(|a| a.parse().ok())
        .map(|a| (a, len("ip6Prefix", 128, 128), len("ip6Alloc", 128, 128)));
    let key = text("key")
        .ok_or_else(|| format!("IpTunnel_showConnection {number}: no key"))?
        .to_string();
    Ok(Connection {
        key,
        outgoing: int("outgoing").unwrap_or(0) != 0,
        ip4,
        ip6,
    })
}

/// `IpTunnel_removeConnection`.
pub fn remove_connection(admin: &mut dyn Admin, number: i64) -> Result<(), String> {
    admin
        .call(
            "IpTunnel_removeConnection",
            Value::dict([("connection", Value::Int(number))]),
        )
        .map(drop)
}

/// The connections with `key` in the given direction, by number.
pub fn find_connections(
    admin: &mut dyn Admin,
    key: &str,
    outgoing: bool,
) -> Result<Vec<(i64, Connection)>, String> {
    let mut out = Vec::new();
    for n in list_connections(admin)? {
        let c = show_connection(admin, n)?;
        if c.key == key && c.outgoing == outgoing {
            out.push((n, c));
        }
    }
    Ok(out)
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
        api::open_admin(
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

/// What the gateway side set up for one subscriber, for shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Admitted {
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

/// The cjdns IpTunnel method, for either role.
pub struct Cjdns {
    target: AdminTarget,
    /// cjdroute's tun interface.
    tun: String,
    /// How long a subscriber waits for cjdroute to get its addresses.
    wait: Duration,
    /// Gateway: our tunnel addresses, set by `prepare`.
    net: Option<GatewayNet>,
    /// Gateway: our key, once known.
    own_key: Option<String>,
    /// Gateway: subscribers admitted by key.
    admitted: BTreeMap<String, Admitted>,
    /// Subscriber: the gateway's key we dialled.
    dialled: Option<String>,
}

impl Cjdns {
    /// A method instance; `tun` is a validated interface name (cjdroute's `tunDevice`).
    pub fn new(target: AdminTarget, tun: &str) -> Cjdns {
        Cjdns {
            target,
            tun: tun.to_string(),
            wait: Duration::from_secs(5),
            net: None,
            own_key: None,
            admitted: BTreeMap::new(),
            dialled: None,
        }
    }

    /// Sets how long `connect` waits for cjdroute to receive the subscriber's addresses.
    pub fn with_wait(mut self, wait: Duration) -> Cjdns {
        self.wait = wait;
        self
    }

    fn admin(&self) -> Result<UdpAdmin, TunnelError> {
        self.target.open().map_err(admin_err)
    }

    /// Our own addresses on cjdroute's tun, as `addr/len` with their `ip` family flag.
    fn own_addresses(net: &GatewayNet) -> Vec<(&'static str, String)> {
        let mut out = vec![("-4", format!("{}/32", net.ipv4))];
        if let Some((a, _)) = net.ipv6 {
            out.push(("-6", format!("{a}/128")));
        }
        out
    }

    /// Removes every IpTunnel connection of `key` in one direction.
    fn remove_all(admin: &mut dyn Admin, key: &str, outgoing: bool) -> Result<(), TunnelError> {
        for (n, _) in find_connections(admin, key, outgoing).map_err(admin_err)? {
            remove_connection(admin, n).map_err(admin_err)?;
        }
        Ok(())
    }
}

fn absent(e: &CmdError) -> bool {
    let s = e.stderr();
    [
        "Cannot assign requested address",
        "Cannot find device",
        "not exist",
    ]
    .iter()
    .any(|m| s.contains(m))
}

impl Method for Cjdns {
    fn name(&self) -> &'static str {
        "cjdns"
    }

    fn check_options(&self, options: &Map<String, serde_json::Value>) -> Result<(), String> {
        key_in(options, "the request").map(drop)
    }

    fn check_caller(
        &self,
        owner: IpAddr,
        options: &Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let key = key_in(options, "the request")?;
        key_owner_is(&key, owner)
    }

    fn prepare(&mut self, net: &GatewayNet) -> Result<(), TunnelError> {
        // cjdroute may start after us: its tun and key are looked up when a subscriber comes.
        self.net = Some(net.clone());
        Ok(())
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, serde_json::Value>, TunnelError> {
        // Before any admin call or command: the key must be the caller's own.
        let key = subscriber_key(peer).map_err(TunnelError::Invalid)?;
        let net = self
            .net
            .clone()
            .ok_or_else(|| TunnelError::Invalid("cjdns is not prepared".into()))?;
        let mut admin = self.admin()?;
        let own_key = match &self.own_key {
            Some(k) => k.clone(),
            None => node_key(&mut admin).map_err(admin_err)?,
        };
        self.own_key = Some(own_key.clone());
        let want = Connection {
            key: key.clone(),
            outgoing: false,
            // Prefix 0: the subscriber's cjdroute routes everything through the tunnel.
            ip4: Some((peer.ipv4, 0, 32)),
            ip6: peer.ipv6.map(|a| (a, 0, 128)),
        };
        let existing = find_connections(&mut admin, &key, false).map_err(admin_err)?;
        let keep = existing.iter().any(|(_, c)| *c == want);
        for (n, c) in &existing {
            if !keep || *c != want {
                remove_connection(&mut admin, *n).map_err(admin_err)?;
            }
        }
        if !keep {
            allow_connection(&mut admin, &want).map_err(admin_err)?;
        }
        self.admitted.insert(
            key,
            Admitted {
                ipv4: peer.ipv4,
                ipv6: peer.ipv6,
            },
        );
        for (fam, addr) in Self::own_addresses(&net) {
            cmd::run(&["ip", fam, "addr", "replace", &addr, "dev", &self.tun])?;
        }
        host_routes(&self.tun, peer, true)?;
        let mut fields = Map::new();
        fields.insert(KEY_FIELD.into(), json!(own_key));
        Ok(fields)
    }

    fn ingress(&self, _peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        Ok(super::Ingress {
            ifname: self.tun.clone(),
            mac: None,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        host_routes(&self.tun, peer, false)?;
        // A request whose key was refused configured nothing; there is nothing to find.
        let Ok(key) = key_in(peer.options, "the request") else {
            return Ok(());
        };
        let mut admin = self.admin()?;
        Self::remove_all(&mut admin, &key, false)?;
        self.admitted.remove(&key);
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        let mut problems = Vec::new();
        let admitted = std::mem::take(&mut self.admitted);
        if !admitted.is_empty() {
            match self.admin() {
                Ok(mut admin) => {
                    for key in admitted.keys() {
                        if let Err(e) = Self::remove_all(&mut admin, key, false) {
                            problems.push(e.to_string());
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let empty = Map::new();
        for (key, a) in &admitted {
            let peer = Peer {
                owner: IpAddr::V6(check_key(key).unwrap_or(Ipv6Addr::UNSPECIFIED)),
                ipv4: a.ipv4,
                ipv6: a.ipv6,
                options: &empty,
                via: None,
            };
            if let Err(e) = host_routes(&self.tun, &peer, false) {
                problems.push(e.to_string());
            }
        }
        if let Some(net) = self.net.take() {
            for (fam, addr) in Self::own_addresses(&net) {
                match cmd::run(&["ip", fam, "addr", "del", &addr, "dev", &self.tun]) {
                    Err(e) if !absent(&e) => problems.push(e.to_string()),
                    _ => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TunnelError::Admin(problems.join("; ")))
        }
    }

    fn request_options(&self) -> Map<String, serde_json::Value> {
        let mut options = Map::new();
        match self.target.own_key() {
            Ok(key) => {
                options.insert(KEY_FIELD.into(), json!(key));
            }
            // The gateway refuses a request without a key, and the next method is tried.
            Err(e) => crate::log::warn(&format!("cjdns: cannot find our own key: {e}")),
        }
        options
    }

    fn connect(&mut self, _gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let ((ipv4, _), _) = super::wireguard::grant_addresses(grant)?;
        let key = key_in(&grant.extra, "the gateway's answer").map_err(TunnelError::Invalid)?;
        if self.dialled.as_ref().is_some_and(|k| *k != key) {
            self.disconnect()?;
        }
        let mut admin = self.admin()?;
        let mut existing = find_connections(&mut admin, &key, true).map_err(admin_err)?;
        let number = match existing.pop() {
            Some((n, _)) => n,
            None => match connect_to(&mut admin, &key).map_err(admin_err)? {
                Some(n) => n,
                None => find_connections(&mut admin, &key, true)
                    .map_err(admin_err)?
                    .pop()
                    .map(|(n, _)| n)
                    .ok_or_else(|| admin_err("IpTunnel_connectTo made no connection".into()))?,
            },
        };
        self.dialled = Some(key.clone());
        // cjdroute asks the gateway for our addresses and configures the tun itself.
        let deadline = Instant::now() + self.wait;
        loop {
            let c = show_connection(&mut admin, number).map_err(admin_err)?;
            match c.ip4 {
                Some((a, _, _)) if a == ipv4 => return Ok(self.tun.clone()),
                Some((a, _, _)) => {
                    return Err(TunnelError::Invalid(format!(
                        "cjdroute got {a} from {key}, but the gateway granted {ipv4}"
                    )));
                }
                None if Instant::now() >= deadline => {
                    return Err(TunnelError::Invalid(format!(
                        "cjdroute got no address from {key} within {:?}",
                        self.wait
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        let Some(key) = self.dialled.clone() else {
            return Ok(());
        };
        let mut admin = self.admin()?;
        Self::remove_all(&mut admin, &key, true)?;
        self.dialled = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k";
    const ADDR: &str = "fcff:a215:1e7b:a4e9:c00d:813:93b3:7c87";

    fn options(key: &str) -> Map<String, serde_json::Value> {
        let mut m = Map::new();
        m.insert(KEY_FIELD.into(), json!(key));
        m
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(check_key(KEY).unwrap().to_string(), ADDR);
        for bad in [
            "",
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0",
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k.k",
            "a2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k",
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u.k",
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u1.k",
            "../../../../../../../../../../../../../../etc/passwd.k",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        let m = Cjdns::new(
            AdminTarget {
                admin: None,
                password: None,
                cjdroute_conf: None,
                timeout: Duration::from_millis(100),
            },
            "tun0",
        );
        assert!(m.check_options(&options(KEY)).is_ok());
        assert!(
            m.check_options(&Map::new())
                .unwrap_err()
                .contains("no cjdns key")
        );
        let mut not_text = Map::new();
        not_text.insert(KEY_FIELD.into(), json!(5));
        assert!(m.check_options(&not_text).is_err());
    }

    #[test]
    fn the_key_must_be_the_callers() {
        let opts = options(KEY);
        let mut peer = Peer {
            owner: ADDR.parse().unwrap(),
            ipv4: "100.127.0.2".parse().unwrap(),
            ipv6: None,
            options: &opts,
            via: None,
        };
        assert_eq!(subscriber_key(&peer).unwrap(), KEY);
        peer.owner = "fc00::1".parse().unwrap();
        let e = subscriber_key(&peer).unwrap_err();
        assert!(e.contains("belongs to") && e.contains("fc00::1"), "{e}");
        peer.owner = "10.0.0.2".parse().unwrap();
        assert!(subscriber_key(&peer).is_err());
    }
}
