//! Gossip (the seed's "DHT"): `nodeInfo` carries the gateways a node knows, and a subscriber
//! takes those as candidates of its own, never as gateways: each is verified with our own
//! `nodeInfo` probe before it is stored or used, so a forged entry costs one probe and is dropped.
//!
//! Bounds against amplification: a node advertises at most [`MAX_ADVERTISED`] gateways it
//! verified itself within [`MAX_AGE_S`]; a scan takes at most [`MAX_PER_NODE`] entries from one
//! answer and [`MAX_PER_SCAN`] in all, runs one gossip round only (entries learned from
//! gossip-learned gateways are not followed in the same scan), and skips entries older than
//! [`MAX_AGE_S`] or pointing at what the scan already probed.

use super::{Answer, Candidate};
use crate::protocol::GossipEntry;
use crate::store::GatewayRow;
use std::collections::HashSet;
use std::net::IpAddr;

/// Gateways one `nodeInfo` advertises at most.
pub const MAX_ADVERTISED: usize = 16;
/// Entries taken from one answer at most.
pub const MAX_PER_NODE: usize = 16;
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
}
