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
//! configures our addresses and routes itself (RouteGen, protocol 52), which we wait for
//! (`IpTunnel_showConnection`). Connected means traffic flows: the granted address must be on the
//! tun, routes must lead into it, and an echo to the gateway's tunnel address through the tun
//! must be answered; otherwise everything is taken down again and the next method is tried.
//!
//! cjdroute's `IpTunnel_removeConnection` leaves the address and the routes on its tun (and
//! every reconnect adds one more RouteGen prefix), so taking a dial down also removes its RouteGen
//! prefixes (`RouteGen_removePrefix`, `RouteGen_commit`) and deletes its addresses. What was
//! dialled is written to a ledger file before `IpTunnel_connectTo`, so a restart after SIGKILL
//! still knows what to clean up.
//!
//! Every admin call goes through [`crate::cjdns::admin::UdpAdmin`]; every step finds what
//! exists first, so running it twice changes nothing.

use super::{GatewayNet, Method, Peer, TunnelError, host_routes};
use crate::cjdns::admin::{Admin, AdminTarget, UdpAdmin, node_key};
use crate::cjdns::bencode::Value;
use crate::cjdns::keys::check_key;
use crate::json;
use crate::protocol::Grant;
use crate::sys::cmd::{self, CmdError};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The field of `options` (request) and of the grant that carries a cjdns key.
pub const KEY_FIELD: &str = "key";

/// Connections looked at, at most, when searching one by key.
const MAX_CONNECTIONS: usize = 256;

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

/// `IpTunnel_removeConnection`; a connection that is already gone (`not_found`) is no error.
pub fn remove_connection(admin: &mut dyn Admin, number: i64) -> Result<(), String> {
    match admin.call(
        "IpTunnel_removeConnection",
        Value::dict([("connection", Value::Int(number))]),
    ) {
        Err(e) if e.ends_with(": not_found") => Ok(()),
        other => other.map(drop),
    }
}

/// RouteGen pages looked at, at most.
const MAX_ROUTE_PAGES: i64 = 64;

/// `RouteGen_getPrefixes` of one family, every page: `addr/prefix` as cjdroute lists them (one
/// entry per `IpTunnel` connection that ever got addresses, duplicates included).
pub fn routegen_prefixes(admin: &mut dyn Admin, ip6: bool) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for page in 0..MAX_ROUTE_PAGES {
        let v = admin.call(
            "RouteGen_getPrefixes",
            Value::dict([("ip6", Value::Int(ip6.into())), ("page", Value::Int(page))]),
        )?;
        let routes: Vec<String> = v
            .get("routes")
            .and_then(Value::as_list)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect();
        // A page past the end is empty (or, on some builds, the last page again).
        if routes.is_empty() || out.ends_with(&routes) {
            break;
        }
        out.extend(routes);
    }
    Ok(out)
}

/// `RouteGen_removePrefix` (every duplicate of `route` at once); false if there was none.
pub fn routegen_remove_prefix(admin: &mut dyn Admin, route: &str) -> Result<bool, String> {
    match admin.call(
        "RouteGen_removePrefix",
        Value::dict([("route", Value::str(route))]),
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.ends_with(": no_such_route") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `RouteGen_commit`: cjdroute rewrites the routes on `tun` from its prefixes.
pub fn routegen_commit(admin: &mut dyn Admin, tun: &str) -> Result<(), String> {
    admin
        .call(
            "RouteGen_commit",
            Value::dict([("tunName", Value::str(tun))]),
        )
        .map(drop)
}

/// The address of a RouteGen prefix (`100.127.0.2/0` → 100.127.0.2).
pub fn prefix_address(route: &str) -> Option<IpAddr> {
    route.split_once('/')?.0.parse().ok()
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

/// What the gateway side set up for one subscriber, for shutdown.
/// Aligned like a lease so that its map shares its code with the others (see
/// [`crate::sys::firewall::Session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(align(8))]
struct Admitted {
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

/// A subscriber's dial: the gateway's key and the addresses cjdroute was given. Kept in the
/// ledger file from before `IpTunnel_connectTo` until the dial is cleaned up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialled {
    /// The gateway's key.
    pub key: String,
    /// The IPv4 address granted.
    pub ipv4: Option<Ipv4Addr>,
    /// The IPv6 address granted.
    pub ipv6: Option<Ipv6Addr>,
}

impl Dialled {
    fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.map(IpAddr::V4);
        v4.into_iter().chain(self.ipv6.map(IpAddr::V6)).collect()
    }
}

/// Checks that traffic flows: an echo to the address through the interface is answered within
/// the time given.
pub type Probe = fn(IpAddr, &str, Duration) -> bool;

fn icmp_probe(target: IpAddr, ifname: &str, timeout: Duration) -> bool {
    crate::sys::icmp::echo(target, Some(ifname), timeout).is_ok()
}

/// The addresses on `ifname` with their prefix lengths (none if it does not exist).
pub fn tun_addresses(ifname: &str) -> Result<Vec<(IpAddr, u8)>, TunnelError> {
    let text = match cmd::run(&["ip", "-j", "addr", "show", "dev", ifname]) {
        Ok(t) => t,
        Err(e) if absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(parse_addresses(&text))
}

/// `ip -j addr show`'s addresses.
pub fn parse_addresses(json_text: &str) -> Vec<(IpAddr, u8)> {
    let v: serde_json::Value = serde_json::from_slice(json_text.as_bytes()).unwrap_or_default();
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let local = a["local"].as_str().and_then(|l| l.parse().ok());
            let len = a["prefixlen"].as_u64().and_then(|n| u8::try_from(n).ok());
            if let (Some(local), Some(len)) = (local, len) {
                out.push((local, len));
            }
        }
    }
    out
}

/// Whether routes of the family lead into `ifname` other than the kernel's own prefix routes
/// (cjdroute's RouteGen installs them with protocol 52).
fn tun_has_routes(ifname: &str, v6: bool) -> Result<bool, TunnelError> {
    let fam = if v6 { "-6" } else { "-4" };
    let text = cmd::run(&["ip", "-j", fam, "route", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(text.as_bytes()).unwrap_or_default();
    Ok(v.as_array().into_iter().flatten().any(|r| {
        r["protocol"].as_str() != Some("kernel") && r["dst"].as_str() != Some("fe80::/64")
    }))
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
    /// Boxed: a map of one-pointer values shares its code with the other maps of boxed values
    /// (leases, the firewall's sessions): smaller on a router.
    admitted: BTreeMap<String, Box<Admitted>>,
    /// Subscriber: what we dialled.
    dialled: Option<Dialled>,
    /// Subscriber: where what we dialled is remembered across a crash.
    ledger: Option<PathBuf>,
    /// Subscriber: how a new tunnel is checked for traffic.
    probe: Probe,
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
            ledger: None,
            probe: icmp_probe,
        }
    }

    /// Remembers what the subscriber dials in `path`, so that a restart (after SIGKILL) cleans
    /// it up.
    pub fn with_ledger(mut self, path: &Path) -> Cjdns {
        self.ledger = Some(path.to_path_buf());
        self
    }

    /// Replaces the echo through the tunnel that proves traffic flows (tests without traffic).
    pub fn with_probe(mut self, probe: Probe) -> Cjdns {
        self.probe = probe;
        self
    }

    fn read_ledger(&self) -> Option<Dialled> {
        let path = self.ledger.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        match serde_json::from_slice(text.as_bytes()) {
            Ok(d) => Some(d),
            Err(e) => {
                crate::warn!("cjdns: ignoring {}: {e}", path.display());
                None
            }
        }
    }

    fn write_ledger(&self, d: Option<&Dialled>) -> Result<(), TunnelError> {
        let Some(path) = &self.ledger else {
            return Ok(());
        };
        let r = match d {
            Some(d) => {
                let tmp = path.with_extension("tmp");
                let text = serde_json::to_string(d).unwrap_or_default();
                crate::sys::fs::replace(path, &tmp, text)
            }
            None => match crate::sys::fs::remove_file(path) {
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        r.map_err(|e| TunnelError::Invalid(format!("cjdns ledger: {e}")))
    }

    /// Takes a dial down completely: its IpTunnel connections, its RouteGen prefixes (then
    /// committed) and its addresses on the tun; the node is as before the dial.
    fn clean_up(&mut self, d: &Dialled) -> Result<(), TunnelError> {
        let mut admin = self.admin()?;
        let mut addresses = d.addresses();
        for (n, c) in find_connections(&mut admin, &d.key, true).map_err(admin_err)? {
            addresses.extend(c.ip4.map(|(a, _, _)| IpAddr::V4(a)));
            addresses.extend(c.ip6.map(|(a, _, _)| IpAddr::V6(a)));
            remove_connection(&mut admin, n).map_err(admin_err)?;
        }
        for ip6 in [false, true] {
            for route in routegen_prefixes(&mut admin, ip6).map_err(admin_err)? {
                if prefix_address(&route).is_some_and(|a| addresses.contains(&a)) {
                    routegen_remove_prefix(&mut admin, &route).map_err(admin_err)?;
                }
            }
        }
        routegen_commit(&mut admin, &self.tun).map_err(admin_err)?;
        for (a, len) in tun_addresses(&self.tun)? {
            if addresses.contains(&a) {
                let fam = if a.is_ipv4() { "-4" } else { "-6" };
                match cmd::run(&[
                    "ip",
                    fam,
                    "addr",
                    "del",
                    &format!("{a}/{len}"),
                    "dev",
                    &self.tun,
                ]) {
                    Err(e) if !absent(&e) => return Err(e.into()),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Waits until cjdroute has the granted addresses for connection `number`, its tun carries
    /// them and routes into it, and an echo to the gateway's tunnel address is answered.
    fn check_up(
        &self,
        admin: &mut dyn Admin,
        number: i64,
        want: &Dialled,
        gateway_ip: IpAddr,
    ) -> Result<(), TunnelError> {
        let deadline = Instant::now() + self.wait;
        let key = &want.key;
        // cjdroute asks the gateway for our addresses, then configures the tun itself.
        loop {
            let c = show_connection(admin, number).map_err(admin_err)?;
            match c.ip4 {
                Some((a, _, _)) if Some(a) == want.ipv4 => break,
                Some((a, _, _)) => {
                    return Err(TunnelError::Invalid(format!(
                        "cjdroute got {a} from {key}, but the gateway granted {}",
                        want.ipv4.map_or("no IPv4".into(), |g| g.to_string())
                    )));
                }
                None if Instant::now() >= deadline => {
                    return Err(TunnelError::Invalid(format!(
                        "cjdroute got no address from {key} within {:?}",
                        self.wait
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        loop {
            let on_tun: Vec<IpAddr> = tun_addresses(&self.tun)?
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            let missing: Vec<IpAddr> = want
                .addresses()
                .into_iter()
                .filter(|a| !on_tun.contains(a))
                .collect();
            let routed = tun_has_routes(&self.tun, false)?
                && (want.ipv6.is_none() || tun_has_routes(&self.tun, true)?);
            if missing.is_empty() && routed {
                break;
            }
            if Instant::now() >= deadline {
                let what = if missing.is_empty() {
                    "no routes into it".to_string()
                } else {
                    format!("not {missing:?} on it")
                };
                return Err(TunnelError::Invalid(format!(
                    "cjdroute reports the tunnel to {key} up, but {} has {what} within {:?}",
                    self.tun, self.wait
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if (self.probe)(
                gateway_ip,
                &self.tun,
                left.clamp(Duration::from_millis(100), Duration::from_millis(500)),
            ) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TunnelError::Invalid(format!(
                    "no answer from the gateway's tunnel address {gateway_ip} through {} within {:?}",
                    self.tun, self.wait
                )));
            }
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

/// Whether `ip` failed only because what it was to remove is not there (`Error: ipv4: Address
/// not found.`, `Error: ipv6: address not found.`, older: `Cannot assign requested address`).
fn absent(e: &CmdError) -> bool {
    let s = e.stderr().to_ascii_lowercase();
    [
        "cannot assign requested address",
        "address not found",
        "cannot find device",
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
            Box::new(Admitted {
                ipv4: peer.ipv4,
                ipv6: peer.ipv6,
            }),
        );
        for (fam, addr) in Self::own_addresses(&net) {
            cmd::run(&["ip", fam, "addr", "replace", &addr, "dev", &self.tun])?;
        }
        host_routes(&self.tun, peer, true)?;
        let mut fields = Map::new();
        json::put(&mut fields, KEY_FIELD, &own_key);
        Ok(fields)
    }

    fn ingress(&self, _peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        Ok(super::Ingress::Forwarded {
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
                json::put(&mut options, KEY_FIELD, &key);
            }
            // The gateway refuses a request without a key, and the next method is tried.
            Err(e) => crate::warn!("cjdns: cannot find our own key: {e}"),
        }
        options
    }

    fn connect(&mut self, _gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let ((ipv4, _), ipv6) = super::wireguard::grant_addresses(grant)?;
        let key = key_in(&grant.extra, "the gateway's answer").map_err(TunnelError::Invalid)?;
        let gateway_ip: IpAddr = grant.ipv4gateway.parse().map_err(|_| {
            TunnelError::Invalid("gateway's answer has an invalid ipv4gateway".into())
        })?;
        let want = Dialled {
            key: key.clone(),
            ipv4: Some(ipv4),
            ipv6: ipv6.map(|(a, _)| a),
        };
        // Another dial (also one a crashed run left behind) is taken down first.
        let prior = self.dialled.clone().or_else(|| self.read_ledger());
        if prior.as_ref().is_some_and(|p| *p != want) {
            self.dialled = prior;
            self.disconnect()?;
        }
        self.write_ledger(Some(&want))?;
        self.dialled = Some(want.clone());
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
        match self.check_up(&mut admin, number, &want, gateway_ip) {
            Ok(()) => Ok(self.tun.clone()),
            Err(e) => {
                // Nothing half-up stays behind; the caller tries the next method.
                if let Err(c) = self.disconnect() {
                    crate::warn!("cjdns: cleaning up after a failed connect: {c}");
                }
                Err(e)
            }
        }
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        let Some(d) = self.dialled.clone().or_else(|| self.read_ledger()) else {
            return Ok(());
        };
        self.dialled = Some(d.clone());
        self.clean_up(&d)?;
        self.write_ledger(None)?;
        self.dialled = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn admitted_keys_are_aligned_like_leases() {
        // 8, as a lease is (`gateway::leases`' own test pins that): see `Admitted`.
        assert_eq!(std::mem::align_of::<Admitted>(), 8);
    }

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
    fn routegen_prefixes_and_tun_addresses_are_read() {
        assert_eq!(
            prefix_address("100.127.0.2/0"),
            Some("100.127.0.2".parse().unwrap())
        );
        assert_eq!(
            prefix_address("fd7e:7e7e::2/0"),
            Some("fd7e:7e7e::2".parse().unwrap())
        );
        for bad in ["", "100.127.0.2", "x/0", "/0"] {
            assert_eq!(prefix_address(bad), None, "{bad:?}");
        }
        // `ip -j addr show dev cjdsub` on a connected subscriber (iproute2 6.1).
        let listing = r#"[{"ifindex":3,"ifname":"cjdsub","flags":["POINTOPOINT","MULTICAST","NOARP","UP","LOWER_UP"],"mtu":1304,"addr_info":[{"family":"inet","local":"100.127.0.2","prefixlen":32,"scope":"global","label":"cjdsub"},{"family":"inet6","local":"fd7e:7e7e::2","prefixlen":128,"scope":"global"},{"family":"inet6","local":"fc86:1010:1850:abdb:43da:904e:490:57e1","prefixlen":8,"scope":"global"}]}]"#;
        assert_eq!(
            parse_addresses(listing),
            [
                ("100.127.0.2".parse().unwrap(), 32),
                ("fd7e:7e7e::2".parse().unwrap(), 128),
                ("fc86:1010:1850:abdb:43da:904e:490:57e1".parse().unwrap(), 8),
            ]
        );
        assert!(parse_addresses("").is_empty());
        assert!(
            parse_addresses("[{\"addr_info\":[{\"local\":\"x\",\"prefixlen\":8}]}]").is_empty()
        );
    }

    #[test]
    fn a_ledger_entry_round_trips() {
        let d = Dialled {
            key: KEY.into(),
            ipv4: Some("100.127.0.2".parse().unwrap()),
            ipv6: None,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Dialled>(&text).unwrap(), d);
        assert_eq!(d.addresses(), ["100.127.0.2".parse::<IpAddr>().unwrap()]);
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
