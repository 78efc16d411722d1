//! Gossip (the seed's "DHT"): `nodeInfo` carries the gateways a node knows, and a subscriber
//! takes those as candidates of its own, never as gateways: each is verified with our own
//! `nodeInfo` probe before it is stored or used, so a forged entry costs one probe and is dropped.
//!
//! Bounds against amplification: a node advertises at most [`MAX_ADVERTISED`] gateways it
//! verified itself within [`MAX_AGE_S`]; a scan takes at most [`MAX_PER_NODE`] entries from one
//! answer and [`MAX_PER_SCAN`] in all, runs one gossip round only (entries learned from
//! gossip-learned gateways are not followed in the same scan), and skips entries older than
//! [`MAX_AGE_S`] or pointing at what the scan already probed.

//!
//! Gossip cannot make us probe just anything ([`Gate`]): an entry is followed only if it is a
//! plausible mesh address — not loopback, link-local, multicast or one of our own addresses, and
//! routed (by a route more specific than a default `/0` or `/1`) through an interface on which
//! discovery found the nodes that answered this scan, so neither our LAN nor the Internet behind a
//! tunnel — and each gossiping node may point us at no more than [`BUDGET_PER_SOURCE`] distinct
//! targets per [`BUDGET_WINDOW`], however it rotates its list.

use super::{Answer, Candidate};
use crate::prefix::Prefix;
use crate::protocol::GossipEntry;
use crate::store::GatewayRow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Gateways one `nodeInfo` advertises at most.
pub const MAX_ADVERTISED: usize = 16;
/// Entries taken from one answer at most: what [`crate::trust`] keeps of one.
pub const MAX_PER_NODE: usize = crate::trust::MAX_GOSSIP;
/// Entries taken in one scan at most.
pub const MAX_PER_SCAN: usize = 256;
/// Oldest sighting advertised or followed, in seconds.
pub const MAX_AGE_S: u64 = 3600;

/// What our `nodeInfo` advertises: stored gateways that answered within [`MAX_AGE_S`] and have no
/// failures since, most recent first.
pub fn advertised(rows: &[GatewayRow], now: i64) -> Vec<GossipEntry> {
    let mut rows: Vec<&GatewayRow> = rows
        .iter()
        .filter(|r| r.failures == 0)
        .filter(|r| r.address.parse::<IpAddr>().is_ok())
        .filter(|r| (now - r.last_seen).max(0) as u64 <= MAX_AGE_S)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_seen));
    rows.into_iter()
        .take(MAX_ADVERTISED)
        .map(|r| GossipEntry {
            address: r.address.clone(),
            port: r.port,
            seen_ago: (now - r.last_seen).max(0) as u64,
        })
        .collect()
}

/// New candidates from the gossip in `answers`, leaving out what was `probed` already.
pub fn candidates(answers: &[Answer], probed: &HashSet<(IpAddr, u16)>) -> Vec<Candidate> {
    let mut seen = probed.clone();
    let mut out = Vec::new();
    for a in answers {
        // One round only: what gossip taught us is not asked for more gossip in this scan.
        if a.candidate.how.starts_with("gossip") {
            continue;
        }
        for e in a.info.gateways.iter().take(MAX_PER_NODE) {
            if out.len() >= MAX_PER_SCAN {
                return out;
            }
            let Ok(address) = e.address.parse::<IpAddr>() else {
                continue;
            };
            if e.port == 0
                || e.seen_ago > MAX_AGE_S
                || address.is_unspecified()
                || address.is_multicast()
                || !seen.insert((address, e.port))
            {
                continue;
            }
            out.push(Candidate {
                address,
                port: e.port,
                how: format!("gossip:{}", a.candidate.address),
                hops: a.candidate.hops.saturating_add(1),
            });
        }
    }
    out
}

/// Distinct targets one gossiping node may make us probe per [`BUDGET_WINDOW`].
pub const BUDGET_PER_SOURCE: usize = 16;
/// The window of the per-source budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// Gossiping nodes remembered by the budget at most (the oldest windows are dropped first).
const BUDGET_SOURCES: usize = 1024;

/// What the node routes where: (prefix, interface) of every route more specific than `/1`, in
/// any table, and the node's own addresses. Read once per gossip round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Routes.
    pub routes: Vec<(Prefix, String)>,
    /// Our own addresses.
    pub own: Vec<IpAddr>,
}

impl View {
    /// Reads the routes and addresses of this node (empty, so nothing is followed, if that fails).
    pub fn load() -> View {
        let routes = [false, true]
            .iter()
            .filter_map(|v6| crate::sys::net::routes_json(*v6, None).ok())
            .collect::<Vec<_>>();
        let addrs = crate::sys::cmd::run(&["ip", "-j", "addr", "show"]).unwrap_or_default();
        let refs: Vec<&str> = routes.iter().map(String::as_str).collect();
        View::parse(&addrs, &refs)
    }

    /// [`View::load`] from the text of `ip -j addr show` and `ip -j route show table all`.
    pub fn parse(addrs: &str, routes: &[&str]) -> View {
        let mut view = View::default();
        for (p, why) in crate::sys::net::parse_local_prefixes(addrs, &[], &[]) {
            if why.starts_with("address of") {
                view.own.push(p.addr);
            }
        }
        for text in routes {
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(text.as_bytes()).unwrap_or_default();
            for r in list {
                let kind = r["type"].as_str().unwrap_or("unicast");
                let (Some(dst), Some(dev)) = (r["dst"].as_str(), r["dev"].as_str()) else {
                    continue;
                };
                if kind != "unicast" {
                    continue;
                }
                let (addr, len) = dst.split_once('/').unwrap_or((dst, ""));
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                let host = if ip.is_ipv4() { 32 } else { 128 };
                let len = len.parse::<u8>().unwrap_or(host).min(host);
                if len > 1 {
                    view.routes
                        .push((Prefix { addr: ip, len }, dev.to_string()));
                }
            }
        }
        view
    }

    /// The interface of the most specific route to `ip`, if there is one.
    pub fn dev_of(&self, ip: IpAddr) -> Option<&str> {
        self.routes
            .iter()
            .filter(|(p, _)| p.contains(ip))
            .max_by_key(|(p, _)| p.len)
            .map(|(_, d)| d.as_str())
    }
}

/// Why a gossip entry is no plausible mesh address, or `None` if it is one. `mesh` are the
/// interfaces the scan's answering nodes are routed through.
pub fn implausible(target: IpAddr, view: &View, mesh: &HashSet<String>) -> Option<&'static str> {
    let link_local = match target {
        IpAddr::V4(a) => a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    if target.is_loopback() || target.is_unspecified() || target.is_multicast() || link_local {
        return Some("loopback, link-local or multicast");
    }
    if view.own.contains(&target) {
        return Some("one of our own addresses");
    }
    match view.dev_of(target) {
        None => Some("not routed through the mesh (default route only)"),
        Some(dev) if !mesh.contains(dev) => {
            Some("routed through an interface that is not the mesh")
        }
        Some(_) => None,
    }
}

/// The per-source budget of gossip targets.
#[derive(Debug, Default)]
pub struct Budget {
    sources: HashMap<IpAddr, (Instant, HashSet<(IpAddr, u16)>)>,
}

impl Budget {
    /// Whether `source` may still make us probe `target` at `now` (a target it named before in
    /// the window is free); records it if so.
    pub fn allow(&mut self, source: IpAddr, target: (IpAddr, u16), now: Instant) -> bool {
        if !self.sources.contains_key(&source) && self.sources.len() >= BUDGET_SOURCES {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.sources.remove(&a);
            }
        }
        let (start, seen) = self
            .sources
            .entry(source)
            .or_insert_with(|| (now, HashSet::new()));
        if now.duration_since(*start) >= BUDGET_WINDOW {
            *start = now;
            seen.clear();
        }
        if seen.contains(&target) {
            return true;
        }
        if seen.len() >= BUDGET_PER_SOURCE {
            return false;
        }
        seen.insert(target);
        true
    }
}

/// The gossip candidates of one round that pass [`implausible`] and the [`Budget`]; the others
/// are dropped (and logged at debug level).
pub fn gate(
    learned: Vec<Candidate>,
    answers: &[Answer],
    view: &View,
    budget: &mut Budget,
    now: Instant,
) -> Vec<Candidate> {
    let mesh: HashSet<String> = answers
        .iter()
        .filter(|a| !a.candidate.how.starts_with("gossip"))
        .filter_map(|a| view.dev_of(a.candidate.address))
        .map(str::to_string)
        .collect();
    learned
        .into_iter()
        .filter(|c| {
            let source = c
                .how
                .strip_prefix("gossip:")
                .and_then(|s| s.parse::<IpAddr>().ok());
            let why = implausible(c.address, view, &mesh).or_else(|| match source {
                Some(s) if budget.allow(s, (c.address, c.port), now) => None,
                Some(_) => Some("its source used up its gossip budget"),
                None => Some("no source"),
            });
            if let Some(why) = why {
                crate::debug!(
                    "gossip entry {} from {}: not followed, {why}",
                    c.socket(),
                    c.how
                );
            }
            why.is_none()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NodeInfo;
    use std::time::Duration;

    fn row(address: &str, last_seen: i64, failures: u32) -> GatewayRow {
        GatewayRow {
            address: address.into(),
            port: 65533,
            name: "g".into(),
            info: serde_json::Value::Null,
            how: "routes:babel".into(),
            hops: 1,
            first_seen: 0,
            last_seen,
            failures,
        }
    }

    #[test]
    fn advertises_fresh_healthy_gateways_bounded() {
        let now = 10_000;
        let mut rows = vec![
            row("10.0.0.1", now - 5, 0),
            row("10.0.0.2", now - 4000, 0),
            row("10.0.0.3", now - 1, 2),
            row("not an address", now, 0),
        ];
        let a = advertised(&rows, now);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].address.as_str(), a[0].seen_ago), ("10.0.0.1", 5));
        for i in 0..40 {
            rows.push(row(&format!("10.0.1.{i}"), now - i, 0));
        }
        let a = advertised(&rows, now);
        assert_eq!(a.len(), MAX_ADVERTISED);
        assert_eq!(a[0].address, "10.0.1.0");
    }

    fn answer(from: &str, how: &str, entries: &[(&str, u16, u64)]) -> Answer {
        let info = NodeInfo {
            success: true,
            name: "n".into(),
            version: "0".into(),
            gateway: false,
            methods: vec![],
            terms: Default::default(),
            uplink: Default::default(),
            gateways: entries
                .iter()
                .map(|(a, p, s)| GossipEntry {
                    address: a.to_string(),
                    port: *p,
                    seen_ago: *s,
                })
                .collect(),
            addresses: vec![],
        };
        Answer {
            candidate: Candidate {
                address: from.parse().unwrap(),
                port: 65533,
                how: how.into(),
                hops: 2,
            },
            info,
            rtt: Duration::from_millis(1),
            node: None,
        }
    }

    #[test]
    fn takes_new_fresh_entries_once_and_one_round_only() {
        let probed: HashSet<(IpAddr, u16)> = [("10.0.0.1".parse().unwrap(), 65533)].into();
        let answers = vec![
            answer(
                "10.0.0.1",
                "routes:babel",
                &[
                    ("10.0.0.9", 65533, 3),
                    ("10.0.0.1", 65533, 0),      // already probed
                    ("10.0.0.8", 65533, 99_999), // too old
                    ("nonsense", 65533, 0),
                    ("0.0.0.0", 65533, 0),
                    ("10.0.0.7", 0, 0),
                ],
            ),
            answer("10.0.0.2", "routes:babel", &[("10.0.0.9", 65533, 1)]),
            answer("10.0.0.9", "gossip:10.0.0.1", &[("10.0.0.6", 65533, 1)]),
        ];
        let c = candidates(&answers, &probed);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].address.to_string(), "10.0.0.9");
        assert_eq!((c[0].how.as_str(), c[0].hops), ("gossip:10.0.0.1", 3));
        let many: Vec<(String, u16, u64)> = (0..100)
            .map(|i| (format!("10.1.0.{i}"), 65533, 0))
            .collect();
        let many: Vec<(&str, u16, u64)> =
            many.iter().map(|(a, p, s)| (a.as_str(), *p, *s)).collect();
        let answers: Vec<Answer> = (0..40)
            .map(|i| answer(&format!("10.2.0.{i}"), "routes", &many))
            .collect();
        assert_eq!(candidates(&answers, &HashSet::new()).len(), MAX_PER_NODE);
        let distinct: Vec<Answer> = (0..40)
            .map(|i| {
                let own: Vec<(String, u16, u64)> = (0..16)
                    .map(|j| (format!("10.3.{i}.{j}"), 65533, 0))
                    .collect();
                let own: Vec<(&str, u16, u64)> =
                    own.iter().map(|(a, p, s)| (a.as_str(), *p, *s)).collect();
                answer(&format!("10.2.0.{i}"), "routes", &own)
            })
            .collect();
        assert_eq!(candidates(&distinct, &HashSet::new()).len(), MAX_PER_SCAN);
    }

    #[test]
    fn only_plausible_mesh_addresses_within_budget_are_followed() {
        let addrs = r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"mesh0","addr_info":[{"local":"10.77.0.1","prefixlen":24}]},
            {"ifname":"br-lan","addr_info":[{"local":"192.168.50.1","prefixlen":24}]}]"#;
        let routes = r#"[{"dst":"default","dev":"wan"},{"dst":"0.0.0.0/1","dev":"mnw0"},
            {"dst":"10.77.0.0/24","dev":"mesh0"},{"dst":"10.77.1.5","dev":"mesh0","table":"12"},
            {"dst":"192.168.50.0/24","dev":"br-lan"},{"type":"local","dst":"127.0.0.0/8","dev":"lo"}]"#;
        let view = View::parse(addrs, &[routes]);
        assert_eq!(view.dev_of("10.77.1.5".parse().unwrap()), Some("mesh0"));
        let src = answer("10.77.0.3", "routes:babel", &[]);
        let entries = [
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("fe80::1", false),
            ("224.0.0.1", false),
            ("10.77.0.1", false),    // ourselves
            ("192.168.50.7", false), // our LAN
            ("203.0.113.7", false),  // the Internet (default route / tunnel halves)
            ("10.77.0.9", true),     // the mesh
            ("10.77.1.5", true),     // a mesh route of another table
        ];
        let learned: Vec<Candidate> = entries
            .iter()
            .map(|(a, _)| Candidate {
                address: a.parse().unwrap(),
                port: 65533,
                how: "gossip:10.77.0.3".into(),
                hops: 1,
            })
            .collect();
        let mut budget = Budget::default();
        let now = Instant::now();
        let kept: Vec<String> = gate(learned, std::slice::from_ref(&src), &view, &mut budget, now)
            .iter()
            .map(|c| c.address.to_string())
            .collect();
        let want: Vec<&str> = entries.iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(kept, want);
        // Rotating lists: 16 distinct targets per source and window, then nothing new…
        let rotating = |from: u32| -> Vec<Candidate> {
            (from..from + 10)
                .map(|i| Candidate {
                    address: format!("10.77.0.{}", 20 + i).parse().unwrap(),
                    port: 65533,
                    how: "gossip:10.77.0.3".into(),
                    hops: 1,
                })
                .collect()
        };
        let first = gate(
            rotating(0),
            std::slice::from_ref(&src),
            &view,
            &mut budget,
            now,
        )
        .len();
        let second = gate(
            rotating(10),
            std::slice::from_ref(&src),
            &view,
            &mut budget,
            now,
        )
        .len();
        assert_eq!(first + second + 2, BUDGET_PER_SOURCE);
        // …while a target already named stays free, and the next window starts afresh.
        assert_eq!(
            gate(
                rotating(0),
                std::slice::from_ref(&src),
                &view,
                &mut budget,
                now
            )
            .len(),
            10
        );
        let later = now + BUDGET_WINDOW;
        assert_eq!(
            gate(
                rotating(30),
                std::slice::from_ref(&src),
                &view,
                &mut budget,
                later
            )
            .len(),
            10
        );
    }
}
