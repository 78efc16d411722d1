//! Discovery from the kernel routing table: every host route a mesh routing protocol installed
//! (Babel = proto 42, …) names a node that may run mnigs; with `option route_gateways`, so does
//! the next hop of every other route (OLSR and BMX often route whole HNA prefixes via a node).
//!
//! `option protocol` takes a number or a name; the names of [`PROTOCOL_NUMBERS`] are turned into
//! numbers here, so they work even where `/etc/iproute2/rt_protos` lacks them (OpenWrt).

use super::Candidate;
use crate::config::DiscoveryConfig;
use crate::sys::net;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::net::IpAddr;

/// Route types that carry no traffic; Babel leaves `unreachable` routes for ~30 s after a withdrawal.
const DEAD_TYPES: &[&str] = &["unreachable", "blackhole", "prohibit", "throw"];

/// Route protocol names and the numbers their daemons install routes with. OLSR (olsrd) uses
/// `boot` unless its `RtProto` says otherwise; BMX6/7 and others: configure the number.
pub const PROTOCOL_NUMBERS: &[(&str, u8)] = &[
    ("redirect", 1),
    ("kernel", 2),
    ("boot", 3),
    ("olsr", 3),
    ("static", 4),
    ("ra", 9),
    ("zebra", 11),
    ("bird", 12),
    ("dhcp", 16),
    ("keepalived", 18),
    ("babel", 42),
    ("openr", 99),
    ("bgp", 186),
    ("isis", 187),
    ("ospf", 188),
    ("rip", 189),
    ("eigrp", 192),
];

/// What to pass to `ip route show proto`: a known name as its number, anything else as given.
pub fn protocol_selector(protocol: &str) -> String {
    PROTOCOL_NUMBERS
        .iter()
        .find(|(name, _)| *name == protocol)
        .map_or_else(|| protocol.to_string(), |(_, n)| n.to_string())
}

/// Reads IPv4 and IPv6 routes and turns the matching host routes into candidates.
pub fn discover(cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let proto = cfg.protocol.as_deref().map(protocol_selector);
    let mut out = Vec::new();
    for v6 in [false, true] {
        let json =
            net::routes_json(v6, proto.as_deref()).map_err(|e| format!("reading routes: {e}"))?;
        out.extend(candidates(&json, cfg)?);
    }
    Ok(super::dedup(out))
}

/// One route of `ip -j route`, borrowing from the text (a generic JSON tree of 10,000 routes
/// takes ~10 MB).
#[derive(Deserialize)]
struct Route<'a> {
    #[serde(borrow)]
    dst: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dev: Option<Cow<'a, str>>,
    #[serde(borrow)]
    gateway: Option<Cow<'a, str>>,
}

/// Candidates from `ip -j route` output, filtered by interface and prefix, one per configured port.
pub fn candidates(json: &str, cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let how = format!("routes:{}", cfg.protocol.as_deref().unwrap_or("any"));
    let mut out = Vec::new();
    let bad = |e: serde_json::Error| format!("unexpected `ip -j route` output: {e}");
    let mut de = serde_json::Deserializer::from_slice(json.as_bytes());
    de.deserialize_seq(EachRoute(|r: Route| take(&r, cfg, &how, &mut out)))
        .map_err(bad)?;
    de.end().map_err(bad)?;
    Ok(out)
}

/// Calls a closure on each route of the array as it is parsed, so a table of 100,000 routes
/// never exists as a vector.
struct EachRoute<F>(F);

impl<'de, F: FnMut(Route<'de>)> serde::de::Visitor<'de> for EachRoute<F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of routes")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(r) = seq.next_element::<Route<'de>>()? {
            (self.0)(r);
        }
        Ok(())
    }
}

/// Adds the candidates of one route, if it passes the filters.
fn take(r: &Route, cfg: &DiscoveryConfig, how: &str, out: &mut Vec<Candidate>) {
    if r.kind.as_deref().is_some_and(|t| DEAD_TYPES.contains(&t)) {
        return;
    }
    let dev = r.dev.as_deref().unwrap_or("");
    if !cfg.interfaces.is_empty() && !cfg.interfaces.iter().any(|i| i == dev) {
        return;
    }
    let address = match r.dst.as_deref().and_then(host_of) {
        Some(a) => a,
        None if cfg.route_gateways => match r.gateway.as_deref().and_then(next_hop) {
            Some(a) => a,
            None => return,
        },
        None => return,
    };
    if !cfg.prefixes.is_empty() && !cfg.prefixes.iter().any(|p| p.contains(address)) {
        return;
    }
    if address.is_loopback() || address.is_unspecified() || address.is_multicast() {
        return;
    }
    for port in &cfg.ports {
        out.push(Candidate {
            address,
            port: *port,
            how: how.to_string(),
            // The metric is the routing protocol's cost, not hops: measured later (hops.rs).
            hops: 0,
        });
    }
}

/// The next hop of a route, if it has one we can probe: link-local next hops need a zone that
/// a candidate does not carry, and Babel's IPv4 routes go via such IPv6 link-local hops.
fn next_hop(gateway: &str) -> Option<IpAddr> {
    let gw: IpAddr = gateway.parse().ok()?;
    let link_local = match gw {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    };
    (!link_local).then_some(gw)
}

/// The address of a host route (`10.77.0.3`, `10.77.0.3/32`, `fd77::3/128`), if it is one.
fn host_of(dst: &str) -> Option<IpAddr> {
    let (addr, len) = match dst.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = dst.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let full = if addr.is_ipv4() { 32 } else { 128 };
    (len == full).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DiscoveryConfig {
        DiscoveryConfig {
            section: "babel".into(),
            method: "routes".into(),
            protocol: Some("babel".into()),
            interfaces: vec![],
            ports: vec![65533],
            prefixes: vec![],
            concurrency: 8,
            timeout_ms: 500,
            ..DiscoveryConfig::default()
        }
    }

    const BABEL4: &str = r#"[
      {"dst":"10.77.0.2","gateway":"fe80::1","dev":"mesh0","protocol":"babel","metric":96,"flags":["onlink"]},
      {"dst":"10.77.0.3","gateway":"fe80::1","dev":"mesh0","protocol":"babel","metric":192,"flags":["onlink"]},
      {"dst":"10.77.9.0/24","gateway":"fe80::1","dev":"mesh0","protocol":"babel","metric":192,"flags":[]},
      {"type":"unreachable","dst":"10.77.0.9","dev":"lo","protocol":"babel","metric":4294967295,"flags":[]},
      {"dst":"10.77.0.4","gateway":"fe80::2","dev":"mesh1","protocol":"babel","metric":96,"flags":[]}
    ]"#;

    #[test]
    fn host_routes_become_candidates_and_dead_routes_are_skipped() {
        let c = candidates(BABEL4, &cfg()).unwrap();
        let addrs: Vec<String> = c.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(addrs, ["10.77.0.2", "10.77.0.3", "10.77.0.4"]);
        assert_eq!(c[1].hops, 0, "Babel's metric 192 is a cost, not 192 hops");
        assert_eq!(c[1].how, "routes:babel");
    }

    #[test]
    fn filters_by_interface_and_prefix_and_fans_out_ports() {
        let mut f = cfg();
        f.interfaces = vec!["mesh0".into()];
        f.ports = vec![65533, 8080];
        let c = candidates(BABEL4, &f).unwrap();
        assert_eq!(c.len(), 4);
        let mut f = cfg();
        f.prefixes = vec!["10.77.0.4/32".parse().unwrap()];
        assert_eq!(candidates(BABEL4, &f).unwrap().len(), 1);
    }

    #[test]
    fn ipv6_host_routes_and_bad_output() {
        let v6 = r#"[{"dst":"fd77::3","dev":"mesh0","protocol":"babel","metric":192},
                     {"dst":"fd77::/64","dev":"mesh0","protocol":"babel"},
                     {"dst":"default","dev":"mesh0"}]"#;
        let c = candidates(v6, &cfg()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].address.to_string(), "fd77::3");
        assert!(
            candidates("not json", &cfg())
                .unwrap_err()
                .contains("ip -j route")
        );
    }

    const OLSR4: &str = r#"[
      {"dst":"10.5.0.0/24","gateway":"10.1.0.7","dev":"wlan0","protocol":"boot","metric":2,"flags":[]},
      {"dst":"10.6.0.0/16","gateway":"10.1.0.7","dev":"wlan0","protocol":"boot","metric":3,"flags":[]},
      {"dst":"10.1.0.9","gateway":"10.1.0.7","dev":"wlan0","protocol":"boot","metric":2,"flags":[]},
      {"dst":"10.8.0.0/24","gateway":"169.254.3.1","dev":"wlan0","protocol":"boot","flags":[]},
      {"dst":"default","gateway":"10.1.0.1","dev":"wlan0","protocol":"boot","flags":[]}
    ]"#;

    #[test]
    fn non_host_routes_give_their_next_hops_only_when_asked() {
        let mut f = cfg();
        f.protocol = Some("olsr".into());
        let c = candidates(OLSR4, &f).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].address.to_string(), "10.1.0.9");
        f.route_gateways = true;
        let c = super::super::dedup(candidates(OLSR4, &f).unwrap());
        let addrs: Vec<String> = c.iter().map(|c| c.address.to_string()).collect();
        // 10.1.0.7 once (deduplicated), the host route, the default route's next hop; never
        // the link-local next hop.
        assert_eq!(addrs, ["10.1.0.7", "10.1.0.9", "10.1.0.1"]);
        assert_eq!(c[0].how, "routes:olsr");
    }

    #[test]
    fn protocol_names_become_numbers() {
        assert_eq!(protocol_selector("babel"), "42");
        assert_eq!(protocol_selector("olsr"), "3");
        assert_eq!(protocol_selector("bird"), "12");
        assert_eq!(protocol_selector("static"), "4");
        assert_eq!(protocol_selector("77"), "77");
        assert_eq!(protocol_selector("bmx7"), "bmx7");
        for (name, _) in PROTOCOL_NUMBERS {
            assert!(crate::validate::route_protocol(name).is_ok(), "{name}");
        }
    }
}
