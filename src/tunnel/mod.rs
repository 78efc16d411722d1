//! Tunnel methods: how a subscriber's traffic reaches its gateway.
//!
//! Each method is one file implementing [`Method`], with a gateway side (prepare once, accept and
//! remove subscribers, shut down) and a subscriber side (connect from the gateway's grant,
//! disconnect). Every step is idempotent: running it twice changes nothing the second time, so
//! reconciliation after a crash can simply run it again.
//!
//! # Layout
//! - `build.rs`: [`build`]: the methods a role runs, from the config (the one place that maps a
//!   method name to its type; add a new method there).
//! - `wireguard.rs`: WireGuard, kernel module when present, otherwise `wireguard-go`.
//! - `openvpn.rs`: one OpenVPN 2.6 server, a certificate per subscriber.
//! - `iptunnel.rs`: GRE and IPIP (over IPv4 or IPv6 mesh addresses), an interface per subscriber.
//! - `route.rs`: no tunnel, routes on a layer-2 mesh.
//! - `cjdns.rs`: cjdns IpTunnel, driven through cjdroute's admin API.
//! - `socks.rs`: a SOCKS5 server per subscriber on the gateway, tun2socks on the subscriber.
//! - `softether.rs`: a hub user per subscriber on a SoftEther VPN server, driven by vpncmd.

mod build;
pub mod cjdns;
pub mod iptunnel;
pub mod openvpn;
pub mod route;
pub mod socks;
pub mod softether;
pub mod wireguard;

use crate::protocol::Grant;
use crate::sys::cmd::CmdError;
pub use build::{Role, build, standby_ifname};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a tunnel step failed.
#[derive(Debug)]
pub enum TunnelError {
    /// A program failed.
    Command(CmdError),
    /// The gateway's answer or our own state lacked something the method needs.
    Invalid(String),
    /// A daemon's admin API (cjdroute's) failed or refused a call.
    Admin(String),
    /// The method cannot serve now, for a reason meant for the caller: the text names no path,
    /// command line or program output (the other variants may, and are only logged).
    Refused(String),
}

impl TunnelError {
    /// What the caller may be told, if anything.
    pub fn public(&self) -> Option<&str> {
        match self {
            TunnelError::Refused(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for TunnelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelError::Command(e) => e.fmt(f),
            TunnelError::Invalid(s) | TunnelError::Admin(s) | TunnelError::Refused(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for TunnelError {}

impl From<CmdError> for TunnelError {
    fn from(e: CmdError) -> Self {
        TunnelError::Command(e)
    }
}

/// The gateway's own addresses inside the tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNet {
    /// IPv4 address of the gateway's tunnel end.
    pub ipv4: Ipv4Addr,
    /// Prefix length of the IPv4 pool.
    pub cidr4: u8,
    /// IPv6 address and prefix length, if the gateway has an IPv6 pool.
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

/// One subscriber as the gateway side of a method sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer<'a> {
    /// The subscriber's mesh address (the source of its requests).
    pub owner: IpAddr,
    /// Its IPv4 address inside the tunnel.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address inside the tunnel.
    pub ipv6: Option<Ipv6Addr>,
    /// The method options it sent (already checked with [`Method::check_options`]).
    pub options: &'a Map<String, Value>,
    /// The gateway address the subscriber contacted, as it wrote it (for endpoints).
    pub via: Option<&'a str>,
}

/// The tunnel MTU the gateway's answer asks for (`mtu`), if it is one an IPv6-capable link can
/// carry (1280–9000); else `ours`.
pub fn grant_mtu(grant: &Grant, ours: u16) -> u16 {
    grant
        .extra
        .get("mtu")
        .and_then(Value::as_u64)
        .and_then(|m| u16::try_from(m).ok())
        .filter(|m| (1280..=9000).contains(m))
        .unwrap_or(ours)
}

pub use crate::validate::{MAX_CREDENTIAL, check_credential};

/// The login fields of a grant, for methods that connect to a TCP port with credentials (SOCKS,
/// SoftEther): the port (1–65535) and the text fields `keys`, each checked by
/// [`check_credential`], in the order asked.
pub fn grant_login<const N: usize>(
    grant: &Grant,
    keys: [&str; N],
) -> Result<(u16, [String; N]), TunnelError> {
    let bad = |m: String| TunnelError::Invalid(format!("gateway's answer: {m}"));
    let port = grant
        .extra
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("port must be a TCP port 1-65535".into()))?;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, k) in out.iter_mut().zip(keys) {
        let v = grant
            .extra
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{k} is missing")))?;
        check_credential(k, v).map_err(bad)?;
        *slot = v.to_string();
    }
    Ok((port, out))
}

/// Gateway: routes (or unroutes) one subscriber's tunnel addresses to `ifname` as host routes.
///
/// Methods that share one interface among subscribers (WireGuard, OpenVPN) all put the pool's
/// prefix on their interface; a host route per subscriber makes the reply path follow the
/// subscriber's own method, whichever interface's prefix route the kernel prefers.
pub fn host_routes(ifname: &str, peer: &Peer<'_>, add: bool) -> Result<(), TunnelError> {
    let v4 = format!("{}/32", peer.ipv4);
    let v6 = peer.ipv6.map(|a| format!("{a}/128"));
    for (fam, dst) in std::iter::once(("-4", v4)).chain(v6.map(|d| ("-6", d))) {
        if add {
            crate::sys::cmd::run(&["ip", fam, "route", "replace", &dst, "dev", ifname])?;
        } else {
            match crate::sys::cmd::run(&["ip", fam, "route", "del", &dst, "dev", ifname]) {
                Err(e)
                    if !e.stderr().contains("No such process")
                        && !e.stderr().contains("Cannot find device") =>
                {
                    return Err(e.into());
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Gateway: [`host_routes`] for many subscribers at once, with one `ip -batch`. Removing a
/// route already gone is no error.
pub fn host_routes_many(ifname: &str, peers: &[Peer<'_>], add: bool) -> Result<(), TunnelError> {
    let verb = if add { "replace" } else { "del" };
    let mut input = String::new();
    for peer in peers {
        input.push_str(&format!("route {verb} {}/32 dev {ifname}\n", peer.ipv4));
        if let Some(v6) = peer.ipv6 {
            input.push_str(&format!("route {verb} {v6}/128 dev {ifname}\n"));
        }
    }
    if input.is_empty() {
        return Ok(());
    }
    let argv: &[&str] = if add {
        &["ip", "-batch", "-"]
    } else {
        &["ip", "-force", "-batch", "-"]
    };
    match crate::sys::cmd::run_input(argv, &input) {
        Err(e)
            if !add
                && e.stderr().lines().all(|l| {
                    l.starts_with("Command failed")
                        || l.contains("No such process")
                        || l.contains("Cannot find device")
                        || l.trim().is_empty()
                }) =>
        {
            Ok(())
        }
        r => Ok(r.map(drop)?),
    }
}

/// Where a subscriber's packets reach the gateway, for the gateway's firewall
/// ([`crate::sys::firewall`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingress {
    /// Its packets (inside the tunnel) arrive on `ifname` and are forwarded if they carry its
    /// leased address.
    Forwarded {
        /// The interface its packets arrive on.
        ifname: String,
        /// The link-layer address they must come from, for a method without a tunnel that
        /// authenticates them (route); `None` for tunnels.
        mac: Option<String>,
    },
    /// Nothing of it is forwarded: it only uses TCP `port` on the gateway itself (a proxy whose
    /// connections leave from the gateway, socks), which only its owner's mesh address may reach.
    Local {
        /// The gateway's TCP port of this session.
        port: u16,
    },
}

/// Work a method does outside the gateway's lock ([`Method::slow_part`]); on success, what
/// undoes it if the request is refused after all.
pub type SlowPart = Box<dyn FnOnce() -> Result<Box<dyn FnOnce() + Send>, TunnelError> + Send>;

/// A tunnel method. Steps with a default body are no-ops a method overrides when it has
/// something to do there; `accept`/`remove` and `connect`/`disconnect` undo each other and have
/// no default.
pub trait Method: Send {
    /// The method's protocol name (`wireguard`, …).
    fn name(&self) -> &'static str;

    /// Checks a subscriber's method options before anything is configured; the error names the
    /// problem. By default a method uses no options, so none can be wrong.
    fn check_options(&self, _options: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }

    /// Checks a subscriber's options against the address its request came from, before any lease
    /// is granted (cjdns: the key must be the caller's own); most methods have nothing to check.
    fn check_caller(&self, _owner: IpAddr, _options: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }

    /// Gateway: sets up what all subscribers share (interface, keys, listen port, own addresses).
    /// By default there is nothing shared to set up.
    fn prepare(&mut self, _net: &GatewayNet) -> Result<(), TunnelError> {
        Ok(())
    }

    /// Gateway: the slow part of accepting a request with these (checked) options, to be run
    /// without holding the gateway's lock (OpenVPN: signing the certificate), before the lease
    /// is granted; `accept` then finds it done. The work returns an undo for when no lease is
    /// granted after all. `None`: nothing slow to do.
    fn slow_part(&self, _options: &Map<String, Value>) -> Option<SlowPart> {
        None
    }

    /// Gateway: configures one subscriber's tunnel end; returns the method's fields for the grant.
    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError>;

    /// Gateway: where the packets of the subscriber just accepted arrive (its tunnel interface),
    /// so that only they may use its addresses.
    fn ingress(&self, _peer: &Peer<'_>) -> Result<Ingress, TunnelError> {
        Err(TunnelError::Invalid(format!(
            "method {} cannot name its subscribers' interface",
            self.name()
        )))
    }

    /// Gateway: removes one subscriber's tunnel end.
    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError>;

    /// Gateway: configures the tunnel ends of several subscribers that are due at once (a burst
    /// of requests, the restore after a restart), all or nothing: on an error none of them is
    /// left configured. Returns each one's grant fields, in order. Methods that can configure
    /// many peers in one step override it; this one accepts them one by one.
    fn accept_many(&mut self, peers: &[Peer<'_>]) -> Result<Vec<Map<String, Value>>, TunnelError> {
        let mut fields = Vec::with_capacity(peers.len());
        for (i, peer) in peers.iter().enumerate() {
            match self.accept(peer) {
                Ok(f) => fields.push(f),
                Err(e) => {
                    for done in peers[..=i].iter().rev() {
                        let _ = self.remove(done);
                    }
                    return Err(e);
                }
            }
        }
        Ok(fields)
    }

    /// Gateway: removes the tunnel ends of several subscribers, as many as it can; the first
    /// error is returned. Methods that can remove many peers in one step override it.
    fn remove_many(&mut self, peers: &[Peer<'_>]) -> Result<(), TunnelError> {
        let mut first = Ok(());
        for peer in peers {
            if let Err(e) = self.remove(peer)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Gateway: removes everything [`Method::prepare`] made (by default nothing).
    fn shutdown(&mut self) -> Result<(), TunnelError> {
        Ok(())
    }

    /// Subscriber: the options to send in `requestConnection` (by default none).
    fn request_options(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Subscriber: brings the tunnel up from the gateway's grant and routes Internet traffic through
    /// it; the route to `gateway` itself stays on the mesh. Returns the interface name.
    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError>;

    /// Subscriber: takes the tunnel and its routes down.
    fn disconnect(&mut self) -> Result<(), TunnelError>;

    /// Subscriber: the method's own health probe of the tunnel that is up, for methods that
    /// carry no ICMP (socks); `None` means: probe with ICMP echo through the interface.
    fn probe(&self, _timeout: std::time::Duration) -> Option<Result<std::time::Duration, String>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_mtu_takes_only_sane_values() {
        let with = |mtu: Value| -> Grant {
            serde_json::from_value(serde_json::json!({
                "success": true, "sid": "s", "timeout": 60, "method": "wireguard",
                "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1", "mtu": mtu
            }))
            .unwrap()
        };
        assert_eq!(grant_mtu(&with(1400.into()), 1420), 1400);
        for bad in [
            Value::from(10),
            Value::from(70_000),
            Value::from(-1),
            Value::from("1400"),
        ] {
            assert_eq!(grant_mtu(&with(bad), 1420), 1420);
        }
        assert_eq!(grant_mtu(&with(Value::Null), 1380), 1380);
    }
}
