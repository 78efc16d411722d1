//! Discovery from the kernel routing table: every host route a mesh routing protocol installed
//! (Babel = proto 42, …) names a node that may run mnigs.

use super::Candidate;
use crate::config::DiscoveryConfig;
use crate::sys::net;
use serde_json::Value;
use std::net::IpAddr;

/// Route types that carry no traffic; Babel leaves `unreachable` routes for ~30 s after a withdrawal.
const DEAD_TYPES: &[&str] = &["unreachable", "blackhole", "prohibit", "throw"];

/// Reads IPv4 and IPv6 routes and turns the matching host routes into candidates.
pub fn discover(cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let proto = cfg.protocol.as_deref();
    let mut out = Vec::new();
    for v6 in [false, true] {
        let json = net::routes_json(v6, proto).map_err(|e| format!("reading routes: {e}"))?;
        out.extend(candidates(&json, cfg)?);
    }
    Ok(super::dedup(out))
}

/// Candidates from `ip -j route` output, filtered by interface and prefix, one per configured port.
pub fn candidates(json: &str, cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, String> {
    let routes: Vec<Value> =
        serde_json::from_str(json).map_err(|e| format!("unexpected `ip -j route` output: {e}"))?;
    let how = format!("routes:{}", cfg.protocol.as_deref().unwrap_or("any"));
    let mut out = Vec::new();
    for r in &routes {
        let Some(address) = host_of(r) else { continue };
        if r.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| DEAD_TYPES.contains(&t))
        {
            continue;
        }
        let dev = r.get("dev").and_then(Value::as_str).unwrap_or("");
        if !cfg.interfaces.is_empty() && !cfg.interfaces.iter().any(|i| i == dev) {
            continue;
        }
        if !cfg.prefixes.is_empty() && !cfg.prefixes.iter().any(|p| p.contains(address)) {
            continue;
        }
        if address.is_loopback() || address.is_unspecified() || address.is_multicast() {
            continue;
        }
        let metric = r.get("metric").and_then(Value::as_u64).unwrap_or(0);
        for port in &cfg.ports {
            out.push(Candidate {
                address,
                port: *port,
                how: how.clone(),
                hops: metric.min(u64::from(u32::MAX)) as u32,
            });
        }
    }
    Ok(out)
}

/// The address of a host route (`10.77.0.3`, `10.77.0.3/32`, `fd77::3/128`), if it is one.
fn host_of(route: &Value) -> Option<IpAddr> {
    let dst = route.get("dst")?.as_str()?;
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
        assert_eq!(c[1].hops, 192);
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
}
