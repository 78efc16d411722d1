//! Hop counts measured, where the discovery method knows none.
//!
//! A kernel route's metric is no hop count: Babel installs IPv4 routes with metric 0 and IPv6
//! ones with 1024 for the same neighbour, OLSR and BMX have metrics of their own. So a gateway
//! found through the routing table gets its distance from one ICMP echo: the reply's TTL (hop
//! limit for IPv6) tells how many routers it crossed ([`crate::sys::icmp::hops_from_ttl`]).
//! Without an answer (no raw socket, ICMP filtered) the distance stays unknown (0), which is shown
//! as "?", never as a number.
//!
//! What was measured, an answer or none, is kept for [`KEEP`] per address ([`Cache`]): a scan
//! every second would otherwise send an echo to every gateway each time, and wait out the
//! timeout for one that filters ICMP.

use super::Answer;
use crate::sys::icmp;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// At most this many echoes are in flight at once.
const AT_ONCE: usize = 16;
/// How long a measured distance (or the lack of an answer) is used before it is measured again.
pub const KEEP: Duration = Duration::from_secs(120);

/// Distances measured recently, per address: `None` when the echo went unanswered.
#[derive(Debug, Default)]
pub struct Cache {
    seen: HashMap<IpAddr, (Option<u32>, Instant)>,
}

impl Cache {
    /// Fills in the hops of the gateways among `answers` whose discovery method left them
    /// unknown: from the cache while fresh at `now`, else by `probe` (at most [`AT_ONCE`] at a
    /// time, each on its own thread), whose results are kept.
    pub fn fill<F>(&mut self, answers: &mut [Answer], now: Instant, probe: F)
    where
        F: Fn(IpAddr) -> Option<u32> + Sync,
    {
        self.seen
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < KEEP);
        let unknown = |a: &Answer| a.info.gateway && a.candidate.hops == 0;
        let mut todo: Vec<IpAddr> = answers
            .iter()
            .filter(|a| unknown(a) && !self.seen.contains_key(&a.candidate.address))
            .map(|a| a.candidate.address)
            .collect();
        todo.sort();
        todo.dedup();
        for batch in todo.chunks(AT_ONCE) {
            let probe = &probe;
            let found: Vec<(IpAddr, Option<u32>)> = std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|&at| s.spawn(move || (at, probe(at))))
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (at, hops) in found {
                self.seen.insert(at, (hops, now));
            }
        }
        for a in answers.iter_mut().filter(|a| unknown(a)) {
            if let Some((Some(h), _)) = self.seen.get(&a.candidate.address) {
                a.candidate.hops = *h;
            }
        }
    }
}

/// The distance to `at` from one ICMP echo ([`icmp::echo_reply`]), `None` without an answer.
pub fn echo_hops(at: IpAddr, timeout: Duration) -> Option<u32> {
    match icmp::echo_reply(at, None, timeout) {
        Ok(r) => r.ttl.map(icmp::hops_from_ttl),
        Err(e) => {
            crate::debug!("hops to {at}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Candidate;
    use crate::protocol::NodeInfo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(at: &str, hops: u32, gateway: bool) -> Answer {
        let candidate = Candidate {
            address: at.parse().unwrap(),
            port: 65533,
            how: "routes".into(),
            hops,
        };
        let info: NodeInfo = serde_json::from_value(serde_json::json!({
            "success": true, "name": "gw", "version": "1", "gateway": gateway
        }))
        .unwrap();
        Answer {
            candidate,
            info,
            rtt: Duration::from_millis(1),
            node: None,
        }
    }

    #[test]
    fn distances_are_measured_once_and_kept_for_a_while() {
        let asked = AtomicUsize::new(0);
        let probe = |at: IpAddr| {
            asked.fetch_add(1, Ordering::SeqCst);
            // 10.0.0.9 filters ICMP.
            (at != "10.0.0.9".parse::<IpAddr>().unwrap()).then_some(3)
        };
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let fresh = || {
            vec![
                answer("10.0.0.1", 0, true),
                answer("10.0.0.9", 0, true),
                answer("10.0.0.2", 2, true), // known from its discovery method
                answer("10.0.0.3", 0, false), // not a gateway
                answer("10.0.0.1", 0, true), // the same address twice: one echo
            ]
        };
        let mut a = fresh();
        cache.fill(&mut a, t0, probe);
        let hops: Vec<u32> = a.iter().map(|a| a.candidate.hops).collect();
        assert_eq!(hops, [3, 0, 2, 0, 3], "0 is unknown, shown as ?");
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        // The next scans within KEEP: from the cache, the silent one included.
        let mut a = fresh();
        cache.fill(&mut a, t0 + KEEP - Duration::from_secs(1), probe);
        assert_eq!(a[0].candidate.hops, 3);
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        // After KEEP both are measured again.
        let mut a = fresh();
        cache.fill(&mut a, t0 + KEEP, probe);
        assert_eq!(a[0].candidate.hops, 3);
        assert_eq!(asked.load(Ordering::SeqCst), 4);
    }
}
