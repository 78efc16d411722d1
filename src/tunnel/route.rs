//! Plain routing on a layer-2 mesh (batman-adv, one bridge): no tunnel at all.
//!
//! The subscriber puts its pool address on the interface that reaches the gateway and points
//! two half-default routes at the gateway, with the pool address as source. The gateway routes
//! that pool address back to the subscriber's own mesh address and NATs it like any other pool
//! address, so only subscribers holding a lease get out.
//!
//! Both sides mark their routes with protocol number [`PROTO`] so that removal touches nothing
//! else, even after a crash.

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::protocol::Grant;
use crate::sys::cmd::{self, CmdError};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Route protocol number of the routes this method adds.
pub const PROTO: &str = "77";

/// Suffix of the label our subscriber address carries (`e0:mn`).
const LABEL: &str = ":mn";

/// (address, interface) of each labelled address in `ip -o -4 addr show` output.
fn labelled(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let dev = w.get(1)?;
            let i = w.iter().position(|x| *x == "inet")?;
            let addr = w.get(i + 1)?;
            // `ip -o` ends each continued line with a backslash glued to the label.
            w.iter()
                .any(|x| x.trim_end_matches('\\').ends_with(LABEL))
                .then(|| (addr.to_string(), dev.to_string()))
        })
        .collect()
}

/// The halves that together override a default route without replacing it.
const HALVES: [&str; 2] = ["0.0.0.0/1", "128.0.0.0/1"];

fn absent(e: &CmdError) -> bool {
    let s = e.stderr();
    [
        "No such process",
        "Cannot find device",
        "not exist",
        "Address not found",
    ]
    .iter()
    .any(|m| s.contains(m))
}

fn ignore_absent(r: Result<String, CmdError>) -> Result<(), TunnelError> {
    match r {
        Err(e) if !absent(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// `via` argument for a next hop of either family (`inet6 ADDR` for IPv4 over an IPv6 hop).
fn via(next_hop: IpAddr) -> Vec<String> {
    match next_hop {
        IpAddr::V4(a) => vec!["via".into(), a.to_string()],
        IpAddr::V6(a) => vec!["via".into(), "inet6".into(), a.to_string()],
    }
}

/// The interface `ip route get` picks for `dst`.
fn dev_towards(dst: IpAddr) -> Result<String, TunnelError> {
    let out = cmd::run(&["ip", "-o", "route", "get", &dst.to_string()])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev"
            && let Some(dev) = words.next()
        {
            crate::validate::ifname(dev).map_err(TunnelError::Invalid)?;
            return Ok(dev.to_string());
        }
    }
    Err(TunnelError::Invalid(format!("no route to {dst}: {out}")))
}

/// The interface and neighbour (`via`, or `dst` itself when directly connected) that
/// `ip route get` picks for `dst`.
fn hop_towards(dst: IpAddr) -> Result<(String, IpAddr), TunnelError> {
    let out = cmd::run(&["ip", "-o", "route", "get", &dst.to_string()])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
    };
    let dev =
        after("dev").ok_or_else(|| TunnelError::Invalid(format!("no route to {dst}: {out}")))?;
    crate::validate::ifname(dev).map_err(TunnelError::Invalid)?;
    let hop = after("via").and_then(|v| v.parse().ok()).unwrap_or(dst);
    Ok((dev.to_string(), hop))
}

/// The MAC address in `ip -j neigh show ADDR` output, if the entry has one.
fn neighbour_mac(json: &str) -> Option<String> {
    let v: Vec<Value> = serde_json::from_slice(json.as_bytes()).ok()?;
    let mac = v.first()?.get("lladdr")?.as_str()?;
    let ok = mac.len() == 17
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| mac.to_ascii_lowercase())
}

/// The route method, for either role.
#[derive(Default)]
pub struct Route {
    /// Subscriber: the address we put on the mesh interface (`addr/32`, interface).
    added: Option<(String, String)>,
}

impl Route {
    /// A method instance.
    pub fn new() -> Route {
        Route::default()
    }
}

impl Method for Route {
    fn name(&self) -> &'static str {
        "route"
    }

    fn check_options(&self, _options: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }

    fn prepare(&mut self, _net: &GatewayNet) -> Result<(), TunnelError> {
        // Routes of an earlier run are dropped: the lease book re-adds the live ones.
        ignore_absent(cmd::run(&["ip", "-4", "route", "flush", "proto", PROTO]))
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        let dst = format!("{}/32", peer.ipv4);
        let mut argv: Vec<String> = ["ip", "-4", "route", "replace", &dst]
            .map(String::from)
            .to_vec();
        argv.extend(via(peer.owner));
        argv.extend(["proto".into(), PROTO.into()]);
        cmd::run(&argv)?;
        Ok(Map::new())
    }

    fn ingress(&self, peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        let (ifname, hop) = hop_towards(peer.owner)?;
        let fam = if hop.is_ipv6() { "-6" } else { "-4" };
        let out = cmd::run(&[
            "ip",
            "-j",
            fam,
            "neigh",
            "show",
            &hop.to_string(),
            "dev",
            &ifname,
        ])?;
        let mac = neighbour_mac(&out).ok_or_else(|| {
            TunnelError::Invalid(format!(
                "no link-layer address known for {hop} on {ifname}: cannot bind the route to it"
            ))
        })?;
        Ok(super::Ingress::Forwarded {
            ifname,
            mac: Some(mac),
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        let dst = format!("{}/32", peer.ipv4);
        ignore_absent(cmd::run(&[
            "ip", "-4", "route", "del", &dst, "proto", PROTO,
        ]))
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        ignore_absent(cmd::run(&["ip", "-4", "route", "flush", "proto", PROTO]))
    }

    fn request_options(&self) -> Map<String, Value> {
        Map::new()
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let ((ipv4, _), _) = super::wireguard::grant_addresses(grant)?;
        self.disconnect()?;
        let dev = dev_towards(gateway)?;
        let addr = format!("{ipv4}/32");
        let mut argv = vec!["ip", "-4", "addr", "replace", &addr, "dev", &dev];
        // The label finds the address again after a crash (labels are at most 15 characters).
        let label = format!("{dev}{LABEL}");
        if label.len() <= 15 {
            argv.extend(["label", &label]);
        }
        cmd::run(&argv)?;
        self.added = Some((addr, dev.clone()));
        for half in HALVES {
            let mut argv: Vec<String> = ["ip", "-4", "route", "replace", half]
                .map(String::from)
                .to_vec();
            argv.extend(via(gateway));
            argv.extend(["dev", &dev, "src", &ipv4.to_string(), "proto", PROTO].map(String::from));
            cmd::run(&argv)?;
        }
        Ok(dev)
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        for half in HALVES {
            ignore_absent(cmd::run(&[
                "ip", "-4", "route", "del", half, "proto", PROTO,
            ]))?;
        }
        let mut ours = self.added.take().into_iter().collect::<Vec<_>>();
        let pattern = format!("*{LABEL}");
        let listed = cmd::run(&["ip", "-o", "-4", "addr", "show", "label", &pattern])?;
        ours.extend(labelled(&listed));
        ours.sort();
        ours.dedup();
        for (addr, dev) in ours {
            ignore_absent(cmd::run(&["ip", "-4", "addr", "del", &addr, "dev", &dev]))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_addresses_are_found() {
        let out = "2: e0    inet 100.127.0.2/32 scope global e0:mn\\       valid_lft forever\n\
                   2: e0    inet 10.78.0.11/24 scope global e0\\       valid_lft forever\n";
        assert_eq!(
            labelled(out),
            [("100.127.0.2/32".to_string(), "e0".to_string())]
        );
    }

    #[test]
    fn neighbour_macs_are_checked() {
        let out = r#"[{"dst":"10.78.0.11","dev":"br0","lladdr":"02:AB:00:00:00:11","state":["REACHABLE"]}]"#;
        assert_eq!(neighbour_mac(out).as_deref(), Some("02:ab:00:00:00:11"));
        assert_eq!(
            neighbour_mac(r#"[{"dst":"10.78.0.11","dev":"br0","state":["FAILED"]}]"#),
            None
        );
        assert_eq!(
            neighbour_mac(r#"[{"lladdr":"02:ab:00:00:00:11; drop"}]"#),
            None
        );
        assert_eq!(neighbour_mac("[]"), None);
    }

    #[test]
    fn next_hop_of_either_family() {
        assert_eq!(via("10.0.0.1".parse().unwrap()), ["via", "10.0.0.1"]);
        assert_eq!(via("fe80::1".parse().unwrap()), ["via", "inet6", "fe80::1"]);
    }
}
