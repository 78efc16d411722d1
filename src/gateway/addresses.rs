//! The node's own mesh addresses, as a gateway lists them in `nodeInfo` (pure): a subscriber
//! that reaches the gateway at several of them (IPv4 and IPv6, several mesh protocols) then
//! counts one node, not one gateway per address (`discovery::nodes`).

use crate::prefix::{Prefix, is_special};
use crate::protocol::MAX_ADDRESSES;
use std::net::IpAddr;

/// From every `(interface, address)` of the node: the ones a mesh node may reach it at.
/// - With the mesh interfaces known (`mesh`): those on them, and on `lo` (where Babel and
///   OLSR routers keep their main address); else every interface but the WAN (`wan`).
/// - Never loopback, link-local or multicast addresses, nor those in the subscriber pools
///   (the gateway's tunnel ends).
///
/// Sorted, at most [`MAX_ADDRESSES`].
pub fn mesh_addresses(
    all: &[(String, IpAddr)],
    mesh: &[String],
    wan: &str,
    pools: &[Prefix],
) -> Vec<IpAddr> {
    let on_mesh = |ifname: &str| {
        if mesh.is_empty() {
            ifname != wan
        } else {
            ifname == "lo" || mesh.iter().any(|m| m == ifname)
        }
    };
    let mut out: Vec<IpAddr> = all
        .iter()
        .filter(|(ifname, a)| {
            on_mesh(ifname) && !is_special(*a) && !pools.iter().any(|p| p.contains(*a))
        })
        .map(|(_, a)| *a)
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_ADDRESSES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<(String, IpAddr)> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("lo", "10.77.0.3"),
            ("mesh0", "fd77::3"),
            ("mesh0", "fe80::1"),
            ("wan", "203.0.113.2"),
            ("br-lan", "192.168.1.1"),
            ("mnw0", "100.127.0.1"),
            ("mnw0", "fd7e:7e7e::1"),
        ]
        .iter()
        .map(|(i, a)| (i.to_string(), a.parse().unwrap()))
        .collect()
    }

    fn pools() -> Vec<Prefix> {
        vec![
            crate::validate::prefix("100.127.0.0/24").unwrap(),
            crate::validate::prefix("fd7e:7e7e::/64").unwrap(),
        ]
    }

    fn show(v: Vec<IpAddr>) -> Vec<String> {
        v.iter().map(IpAddr::to_string).collect()
    }

    #[test]
    fn the_mesh_side_is_listed_and_nothing_else() {
        let known = show(mesh_addresses(&all(), &["mesh0".into()], "wan", &pools()));
        assert_eq!(known, ["10.77.0.3", "fd77::3"], "the LAN stays unlisted");
        let unknown = show(mesh_addresses(&all(), &[], "wan", &pools()));
        assert_eq!(unknown, ["10.77.0.3", "192.168.1.1", "fd77::3"]);
        let many: Vec<(String, IpAddr)> = (1..=20)
            .map(|n| ("lo".to_string(), format!("10.77.1.{n}").parse().unwrap()))
            .collect();
        assert_eq!(mesh_addresses(&many, &[], "wan", &[]).len(), MAX_ADDRESSES);
    }
}
