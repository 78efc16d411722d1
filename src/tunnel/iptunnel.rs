//! GRE and IPIP: kernel point-to-point tunnels, one interface per subscriber on the gateway.
//!
//! The outer family follows the mesh address: IPv4 mesh addresses give `gre`/`ipip`, IPv6 ones
//! (cjdns, Yggdrasil, Babel over IPv6) give `ip6gre`/`ip6tnl mode ipip6`. Inside, the tunnel
//! carries IPv4 from the gateway's pool (GRE also IPv6 when the pool has it). The gateway's
//! interface is named `PREFIX` + the subscriber's tunnel address in hex, so it follows from the
//! session alone and a restarted gateway finds (and replaces) it.

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::json;
use crate::protocol::Grant;
use crate::sys::{cmd, net};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr};

/// GRE or IPIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Generic Routing Encapsulation.
    Gre,
    /// IP in IP (IPv4 over IPv4, or over IPv6 as `ipip6`).
    Ipip,
}

impl Kind {
    /// The method name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gre => "gre",
            Kind::Ipip => "ipip",
        }
    }

    /// `ip link add NAME` arguments after the name, for a tunnel to `remote` from `local`.
    pub fn link_args(self, remote: IpAddr, local: Option<IpAddr>) -> Vec<String> {
        let mut argv: Vec<String> = match (self, remote.is_ipv6()) {
            (Kind::Gre, false) => vec!["type".into(), "gre".into()],
            (Kind::Gre, true) => vec!["type".into(), "ip6gre".into()],
            (Kind::Ipip, false) => vec!["type".into(), "ipip".into()],
            (Kind::Ipip, true) => ["type", "ip6tnl", "mode", "ipip6"]
                .map(String::from)
                .to_vec(),
        };
        argv.extend(["remote".into(), remote.to_string()]);
        if let Some(l) = local.filter(|l| l.is_ipv6() == remote.is_ipv6()) {
            argv.extend(["local".into(), l.to_string()]);
        }
        argv.extend(["ttl".into(), "64".into()]);
        argv
    }
}

/// The gateway's interface for the subscriber with tunnel address `ipv4`.
pub fn gateway_ifname(prefix: &str, ipv4: Ipv4Addr) -> String {
    format!("{prefix}{:08x}", u32::from(ipv4))
}

/// A GRE or IPIP method instance.
pub struct IpTunnel {
    kind: Kind,
    /// Gateway: prefix of the per-subscriber interfaces (at most 7 characters).
    prefix: String,
    /// Subscriber: our tunnel interface.
    client_ifname: String,
    mtu: u16,
    /// Gateway: own tunnel address, set by `prepare`.
    own: Option<Ipv4Addr>,
}

impl IpTunnel {
    /// A method instance; `prefix` and `client_ifname` are validated interface names, `prefix`
    /// at most 7 characters so that prefix + 8 hex digits fits the kernel's 15.
    pub fn new(kind: Kind, prefix: &str, client_ifname: &str, mtu: u16) -> IpTunnel {
        IpTunnel {
            kind,
            prefix: prefix.to_string(),
            client_ifname: client_ifname.to_string(),
            mtu,
            own: None,
        }
    }

    fn create(
        &self,
        ifname: &str,
        remote: IpAddr,
        local: Option<IpAddr>,
    ) -> Result<(), TunnelError> {
        let mut argv: Vec<String> = ["ip", "link", "add", ifname].map(String::from).to_vec();
        argv.extend(self.kind.link_args(remote, local));
        cmd::run(&argv)?;
        Ok(())
    }

    /// Our interfaces left on the system (gateway side), by name prefix.
    fn leftovers(&self) -> Vec<String> {
        let out = cmd::run(&["ip", "-o", "link", "show"]).unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| {
                n.len() == self.prefix.len() + 8
                    && n.starts_with(&self.prefix)
                    && n[self.prefix.len()..]
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit())
            })
            .collect()
    }
}

/// Our source address towards `dst`, from `ip route get`.
fn source_towards(dst: IpAddr) -> Result<IpAddr, TunnelError> {
    let out = cmd::run(&["ip", "-o", "route", "get", &dst.to_string()])?;
    parse_src(&out)
        .ok_or_else(|| TunnelError::Invalid(format!("no source address towards {dst}: {out}")))
}

/// The `src` address of an `ip -o route get` line.
fn parse_src(route: &str) -> Option<IpAddr> {
    let mut words = route.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `ip addr replace LOCAL peer REMOTE/32 dev IF`.
fn point_to_point(ifname: &str, local: Ipv4Addr, remote: Ipv4Addr) -> Result<(), TunnelError> {
    let peer = format!("{remote}/32");
    cmd::run(&[
        "ip",
        "-4",
        "addr",
        "replace",
        &local.to_string(),
        "peer",
        &peer,
        "dev",
        ifname,
    ])?;
    Ok(())
}

impl Method for IpTunnel {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn check_options(&self, _options: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }

    fn prepare(&mut self, gw: &GatewayNet) -> Result<(), TunnelError> {
        for ifname in self.leftovers() {
            net::link_delete(&ifname)?;
        }
        self.own = Some(gw.ipv4);
        Ok(())
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        let own = self
            .own
            .ok_or_else(|| TunnelError::Invalid(format!("{} is not prepared", self.name())))?;
        let ifname = gateway_ifname(&self.prefix, peer.ipv4);
        let local = peer.via.and_then(|v| v.parse::<IpAddr>().ok());
        if !net::link_exists(&ifname) {
            self.create(&ifname, peer.owner, local)?;
        }
        point_to_point(&ifname, own, peer.ipv4)?;
        net::link_up(&ifname, self.mtu)?;
        let mut fields = Map::new();
        json::put(&mut fields, "mtu", &self.mtu);
        Ok(fields)
    }

    fn ingress(&self, peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        Ok(super::Ingress::Forwarded {
            ifname: gateway_ifname(&self.prefix, peer.ipv4),
            mac: None,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        Ok(net::link_delete(&gateway_ifname(&self.prefix, peer.ipv4))?)
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        for ifname in self.leftovers() {
            net::link_delete(&ifname)?;
        }
        Ok(())
    }

    fn request_options(&self) -> Map<String, Value> {
        Map::new()
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let ((ipv4, _), _) = super::wireguard::grant_addresses(grant)?;
        let gw4: Ipv4Addr = grant.ipv4gateway.parse().map_err(|_| {
            TunnelError::Invalid("gateway's answer has an invalid ipv4gateway".into())
        })?;
        let mtu = super::grant_mtu(grant, self.mtu);
        let ifname = self.client_ifname.clone();
        net::link_delete(&ifname)?;
        // IPv6 tunnels send nothing without a local address; ours is the one the gateway sees.
        self.create(&ifname, gateway, Some(source_towards(gateway)?))?;
        point_to_point(&ifname, ipv4, gw4)?;
        net::link_up(&ifname, mtu)?;
        net::route_internet_via(&ifname, false)?;
        Ok(ifname)
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        Ok(net::link_delete(&self.client_ifname)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_family_follows_the_mesh_address() {
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "fd77::2".parse().unwrap();
        let own6: IpAddr = "fd77::3".parse().unwrap();
        assert_eq!(
            Kind::Gre.link_args(v4, Some(own6)).join(" "),
            "type gre remote 10.0.0.2 ttl 64"
        );
        assert_eq!(
            Kind::Ipip.link_args(v6, Some(own6)).join(" "),
            "type ip6tnl mode ipip6 remote fd77::2 local fd77::3 ttl 64"
        );
        assert_eq!(
            Kind::Gre.link_args(v6, None).join(" "),
            "type ip6gre remote fd77::2 ttl 64"
        );
        assert_eq!(Kind::Ipip.link_args(v4, None)[1], "ipip");
    }

    #[test]
    fn source_of_a_route() {
        let line = "fd77::3 from :: dev m0 proto kernel src fd77::1 metric 256 pref medium";
        assert_eq!(parse_src(line), Some("fd77::1".parse().unwrap()));
        assert_eq!(
            parse_src("10.0.0.1 dev e0 src 10.0.0.2 uid 0"),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(parse_src("local 10.0.0.1 dev lo"), None);
    }

    #[test]
    fn gateway_interface_follows_the_session_address() {
        let name = gateway_ifname("mnt", Ipv4Addr::new(100, 127, 0, 2));
        assert_eq!(name, "mnt647f0002");
        assert!(crate::validate::ifname(&gateway_ifname("mnigsgr", Ipv4Addr::BROADCAST)).is_ok());
    }
}
