//! Hop counts measured, where the discovery method knows none.
//!
//! A kernel route's metric is no hop count: Babel installs IPv4 routes with metric 0 and IPv6
//! ones with 1024 for the same neighbour, OLSR and BMX have metrics of their own. So a gateway
//! found through the routing table gets its distance from one ICMP echo: the reply's TTL (hop
//! limit for IPv6) tells how many routers it crossed ([`crate::sys::icmp::hops_from_ttl`]).
//! Without an answer (no raw socket, ICMP filtered) the distance stays unknown (0), which is shown
//! as "?", never as a number.

use super::Answer;
use crate::sys::icmp;
use std::time::Duration;

/// At most this many echoes are in flight at once.
const AT_ONCE: usize = 16;

/// Fills in the hops of the gateways among `answers` whose discovery method left them unknown.
pub fn measure(answers: &mut [Answer], timeout: Duration) {
    let unknown: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].info.gateway && answers[i].candidate.hops == 0)
        .collect();
    for batch in unknown.chunks(AT_ONCE) {
        let found: Vec<(usize, Option<u32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let at = answers[i].candidate.address;
                    s.spawn(move || (i, hops_to(at, timeout)))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, hops) in found {
            if let Some(h) = hops {
                answers[i].candidate.hops = h;
            }
        }
    }
}

fn hops_to(at: std::net::IpAddr, timeout: Duration) -> Option<u32> {
    match icmp::echo_reply(at, None, timeout) {
        Ok(r) => r.ttl.map(icmp::hops_from_ttl),
        Err(e) => {
            crate::debug!("hops to {at}: {e}");
            None
        }
    }
}
