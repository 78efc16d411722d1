//! Discovery on layer 2: the kernel's ARP and NDP tables of the configured interfaces (batman-adv's
//! `bat0`, a mesh bridge) name the nodes we talked to recently; an optional bounded sweep of an
//! IPv4 prefix covers the others, whose entries are cold.

use super::Candidate;
use crate::config::DiscoveryConfig;
use crate::config::model::MAX_SWEEP_ADDRESSES;
use crate::sys::net;
use serde_json::Value;
use std::net::IpAddr;

/// Neighbour states that say nobody answers at the address.
const DEAD_STATES: &[&str] = &["FAILED", "INCOMPLETE", "NOARP"];

/// Neighbours of every configured interface (all interfaces if none is configured), then the sweep.
pub fn discover(cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::new();
    let interfaces: Vec<Option<&str>> = if cfg.interfaces.is_empty() {
        vec![None]
    } else {
        cfg.interfaces.iter().map(|i| Some(i.as_str())).collect()
    };
    for ifname in interfaces {
        for v6 in [false, true] {
            let json = match ifname {
                Some(i) => net::neighbours_json(v6, i),
                None => net::neighbours_json_all(v6),
            }
            .map_err(|e| format!("reading neighbours: {e}"))?;
            out.extend(candidates(&json, cfg)?);
        }
    }
    out.extend(sweep(cfg));
    Ok(super::dedup(out))
}

/// Candidates from `ip -j neigh` output: live entries inside the configured prefixes, one per port.
/// Link-local IPv6 neighbours are left out (a candidate carries no zone); their global
/// addresses appear in the table too once we talk to them.
pub fn candidates(json: &str, cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let entries: Vec<Value> = serde_json::from_slice(json.as_bytes())
        .map_err(|e| format!("unexpected `ip -j neigh` output: {e}"))?;
    let mut out = Vec::new();
    for e in &entries {
        let Some(address) = e
            .get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let states: Vec<&str> = e
            .get("state")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if states.iter().any(|s| DEAD_STATES.contains(s)) {
            continue;
        }
        if e.get("dev").and_then(Value::as_str).is_some_and(|dev| {
            !cfg.interfaces.is_empty() && !cfg.interfaces.iter().any(|i| i == dev)
        }) {
            continue;
        }
        if !usable(address) || !in_prefixes(cfg, address) {
            continue;
        }
        push(&mut out, cfg, address, "neighbours:table", 1);
    }
    Ok(out)
}

/// Every host address of `option sweep` (not the network and broadcast addresses of prefixes
/// longer than /31), at most [`MAX_SWEEP_ADDRESSES`].
pub fn sweep(cfg: &DiscoveryConfig) -> Vec<Candidate> {
    let Some(p) = cfg.sweep else {
        return Vec::new();
    };
    let count = p.host_count().min(MAX_SWEEP_ADDRESSES);
    let (first, last) = if count > 2 {
        (1, count - 2)
    } else {
        (0, count - 1)
    };
    let mut out = Vec::new();
    for n in first..=last {
        if let Some(a) = p.nth_host(n) {
            push(&mut out, cfg, a, "neighbours:sweep", 0);
        }
    }
    out
}

fn push(out: &mut Vec<Candidate>, cfg: &DiscoveryConfig, address: IpAddr, how: &str, hops: u32) {
    for port in &cfg.ports {
        out.push(Candidate {
            address,
            port: *port,
            how: how.to_string(),
            hops,
        });
    }
}

fn usable(a: IpAddr) -> bool {
    let link_local = match a {
        IpAddr::V4(_) => false,
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || link_local)
}

fn in_prefixes(cfg: &DiscoveryConfig, a: IpAddr) -> bool {
    cfg.prefixes.is_empty() || cfg.prefixes.iter().any(|p| p.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DiscoveryConfig {
        DiscoveryConfig {
            method: "neighbours".into(),
            protocol: None,
            interfaces: vec!["bat0".into()],
            ..DiscoveryConfig::default()
        }
    }

    const NEIGH: &str = r#"[
      {"dst":"10.9.0.2","dev":"bat0","lladdr":"02:00:00:00:00:02","state":["REACHABLE"]},
      {"dst":"10.9.0.3","dev":"bat0","lladdr":"02:00:00:00:00:03","state":["STALE"]},
      {"dst":"10.9.0.4","dev":"bat0","state":["FAILED"]},
      {"dst":"10.9.0.5","dev":"bat0","state":["INCOMPLETE"]},
      {"dst":"10.9.0.6","dev":"eth0","lladdr":"02:00:00:00:00:06","state":["REACHABLE"]},
      {"dst":"fe80::2","dev":"bat0","lladdr":"02:00:00:00:00:02","router":null,"state":["REACHABLE"]},
      {"dst":"fd09::2","dev":"bat0","lladdr":"02:00:00:00:00:02","state":["DELAY"]},
      {"dst":"ff02::1","dev":"bat0","state":["NOARP"]}
    ]"#;

    #[test]
    fn live_neighbours_of_the_configured_interfaces() {
        let c = candidates(NEIGH, &cfg()).unwrap();
        let addrs: Vec<String> = c.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(addrs, ["10.9.0.2", "10.9.0.3", "fd09::2"]);
        assert_eq!(c[0].how, "neighbours:table");
        let mut f = cfg();
        f.prefixes = vec!["fd09::/64".parse().unwrap()];
        assert_eq!(candidates(NEIGH, &f).unwrap().len(), 1);
        assert!(candidates("[", &f).unwrap_err().contains("ip -j neigh"));
    }

    #[test]
    fn sweep_covers_hosts_only_and_is_bounded() {
        let mut f = cfg();
        f.sweep = Some("10.9.0.0/29".parse().unwrap());
        let c = sweep(&f);
        let addrs: Vec<String> = c.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(addrs.first().map(String::as_str), Some("10.9.0.1"));
        assert_eq!(addrs.last().map(String::as_str), Some("10.9.0.6"));
        assert_eq!(c.len(), 6);
        f.sweep = Some("10.9.0.0/22".parse().unwrap());
        assert_eq!(sweep(&f).len(), 1022);
        // A prefix built by hand past the bound is cut at the bound.
        f.sweep = Some("10.0.0.0/16".parse().unwrap());
        assert_eq!(sweep(&f).len(), 1022);
        f.sweep = Some("10.9.0.4/31".parse().unwrap());
        assert_eq!(sweep(&f).len(), 2);
    }
}
