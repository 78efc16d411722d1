//! What the subscriber probes through a tunnel, decided without I/O.
//!
//! A gateway whose ISP failed still answers on the mesh and on its tunnel address; only a probe
//! that crosses the gateway's uplink notices. So, unless the owner set `list probe_target`, the
//! subscriber probes the targets the gateway advertises (`uplinkTargets` in the lease answer,
//! else `uplink.targets` in its `nodeInfo`) through the tunnel, one per round in turn, and falls
//! back to the gateway's tunnel address when the gateway advertises none (older gateways, or
//! default targets that never answered there).
//!
//! Why probing and not (only) a notice from the gateway: the probe measures the very path the
//! subscriber's traffic takes (tunnel, gateway's forwarding and NAT, uplink), notices failures
//! the gateway's own check cannot see or sees late (its check runs every `uplink_interval`, 5 s
//! by default), and needs no new channel from gateway to subscriber. The gateway's own verdict
//! still reaches subscribers through `nodeInfo.uplink.healthy` at scans and through the refusal
//! of new leases.
//!
//! One target per round, in turn: the probe rate stays one echo per `probe_interval_ms`
//! (300 a minute at the default 200 ms, about 12 KB/min of echo requests and as much in
//! replies, plus tunnel overhead), spread over the advertised targets. A probe waits a few RTTs
//! of its path ([`timeout`]); an unanswered one is followed at once by another (to the next
//! target), within [`MAX_PER_SECOND`] packets per tunnel ([`Budget`]). One target that does not
//! answer costs loss, not the gateway: the path is down only after `down_after` unanswered
//! probes in a row, and with several targets those are several different targets.

use crate::protocol::{Grant, sane_uplink_targets};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// At most this many probe packets go through one tunnel in any second, whatever the interval
/// and however many confirmations a miss asks for (issue 14).
pub const MAX_PER_SECOND: usize = 10;
/// The shortest wait for a probe's answer.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(30);
/// A probe waits this many times the slowest recent answer of its path.
const TIMEOUT_PER_RTT: f64 = 3.0;

/// Where the round's probes go and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// `list probe_target`: all of them, the path is up while any answers.
    Own(Vec<IpAddr>),
    /// One of the gateway's advertised uplink targets.
    Uplink(IpAddr),
    /// The gateway's tunnel address (nothing else known).
    Gateway(IpAddr),
    /// Nothing to probe (a grant without a usable tunnel address and no targets).
    None,
}

impl Targets {
    /// The addresses to probe, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Targets::Own(l) => l.clone(),
            Targets::Uplink(a) | Targets::Gateway(a) => vec![*a],
            Targets::None => vec![],
        }
    }
}

/// The advertised uplink targets usable through this grant: the grant's, else those of the
/// gateway's last `nodeInfo`; sane ones only ([`sane_uplink_targets`]) and only of an address
/// family the tunnel carries (IPv6 only when the grant has an IPv6 address).
pub fn advertised(grant: &Grant, node_info_targets: &[IpAddr]) -> Vec<IpAddr> {
    let list = if grant.uplink_targets.is_empty() {
        node_info_targets
    } else {
        &grant.uplink_targets
    };
    let v6 = grant.ipv6.is_some();
    sane_uplink_targets(list)
        .into_iter()
        .filter(|a| a.is_ipv4() || v6)
        .collect()
}

/// The targets of probe round number `round` through a tunnel.
pub fn plan(own: &[IpAddr], advertised: &[IpAddr], tunnel_gateway: &str, round: u64) -> Targets {
    if !own.is_empty() {
        return Targets::Own(own.to_vec());
    }
    if !advertised.is_empty() {
        let i = (round % advertised.len() as u64) as usize;
        return Targets::Uplink(advertised[i]);
    }
    match tunnel_gateway.parse() {
        Ok(a) => Targets::Gateway(a),
        Err(_) => Targets::None,
    }
}

/// How long a probe waits for its answer: three times the slowest of the path's recent answers
/// (`slowest_ms`), at least [`MIN_TIMEOUT`], at most nine tenths of the interval (never less
/// than the minimum). A path with no answer yet gets the whole nine tenths.
///
/// Why not always the whole interval: a path that stops answering is then known dead after
/// `down_after` timeouts of a few RTTs, not after `down_after` intervals; the misses after the
/// first go out at once ([`Budget`] keeps them within [`MAX_PER_SECOND`]).
pub fn timeout(slowest_ms: Option<f64>, interval: Duration) -> Duration {
    let cap = interval.mul_f64(0.9).max(MIN_TIMEOUT);
    match slowest_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            Duration::from_secs_f64(ms * TIMEOUT_PER_RTT / 1000.0).clamp(MIN_TIMEOUT, cap)
        }
        _ => cap,
    }
}

/// The probe packets sent through one tunnel in the last second.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    sent: VecDeque<Instant>,
}

impl Budget {
    /// When `n` more packets may go without more than [`MAX_PER_SECOND`] in any second: `now`
    /// or later.
    pub fn free_at(&self, n: usize, now: Instant) -> Instant {
        let n = n.clamp(1, MAX_PER_SECOND);
        let mut recent = self
            .sent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < Duration::from_secs(1));
        // The `over`-th oldest packet of the last second has to leave it first.
        let over = (recent.clone().count() + n).saturating_sub(MAX_PER_SECOND);
        match over.checked_sub(1).and_then(|k| recent.nth(k)) {
            Some(t) => (*t + Duration::from_secs(1)).max(now),
            None => now,
        }
    }

    /// Notes `n` packets sent at `now`.
    pub fn spend(&mut self, n: usize, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.sent.pop_front();
        }
        self.sent.extend(std::iter::repeat_n(now, n.max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_timeout_follows_the_slowest_recent_answer_within_bounds() {
        let i = Duration::from_millis(200);
        assert_eq!(timeout(None, i), Duration::from_millis(180));
        assert_eq!(timeout(Some(1.0), i), MIN_TIMEOUT);
        assert_eq!(timeout(Some(20.0), i), Duration::from_millis(60));
        assert_eq!(timeout(Some(500.0), i), Duration::from_millis(180));
        assert_eq!(timeout(Some(f64::NAN), i), Duration::from_millis(180));
        // An interval shorter than the minimum still leaves the minimum.
        assert_eq!(timeout(Some(20.0), Duration::from_millis(20)), MIN_TIMEOUT);
    }

    #[test]
    fn no_second_carries_more_than_ten_probe_packets() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut b = Budget::default();
        // Probes every 50 ms, each sent as soon as the budget allows.
        let mut at = t0;
        let mut sent = Vec::new();
        for k in 0..40 {
            let want = ms(k * 50).max(at);
            at = b.free_at(1, want);
            b.spend(1, at);
            sent.push(at);
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .filter(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= MAX_PER_SECOND,
                "{in_window} in the second from probe {i}"
            );
        }
        // Ten in the first half second, then a pause until the first leaves the window.
        assert_eq!(sent[9], ms(450));
        assert_eq!(sent[10], ms(1000));
        assert_eq!(sent[39], ms(3450));
        // Several packets at once count as several.
        let mut b = Budget::default();
        b.spend(8, t0);
        assert_eq!(b.free_at(2, t0), t0);
        assert_eq!(b.free_at(3, t0), ms(1000));
        assert_eq!(b.free_at(1, ms(1000)), ms(1000));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn grant(extra: serde_json::Value) -> Grant {
        let mut v = json!({"success": true, "sid": "s", "timeout": 60, "method": "wireguard",
                           "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn own_targets_win_then_advertised_then_the_tunnel_address() {
        let own = [ip("192.0.2.9")];
        let adv = [ip("203.0.113.7")];
        assert_eq!(
            plan(&own, &adv, "100.127.0.1", 0),
            Targets::Own(own.to_vec())
        );
        assert_eq!(plan(&[], &adv, "100.127.0.1", 5), Targets::Uplink(adv[0]));
        assert_eq!(
            plan(&[], &[], "100.127.0.1", 0),
            Targets::Gateway(ip("100.127.0.1"))
        );
        assert_eq!(plan(&[], &[], "nonsense", 0), Targets::None);
        assert!(Targets::None.addresses().is_empty());
    }

    #[test]
    fn advertised_targets_take_turns() {
        let adv = [ip("1.1.1.1"), ip("8.8.8.8"), ip("9.9.9.9")];
        let seen: Vec<IpAddr> = (0..6)
            .flat_map(|r| plan(&[], &adv, "100.127.0.1", r).addresses())
            .collect();
        assert_eq!(seen, [adv[0], adv[1], adv[2], adv[0], adv[1], adv[2]]);
    }

    #[test]
    fn the_grant_wins_over_node_info_and_only_sane_reachable_targets_count() {
        let info = [ip("198.51.100.9")];
        let g = grant(json!({"uplinkTargets": ["203.0.113.7", "127.0.0.1", "2001:db8::1"]}));
        assert_eq!(
            advertised(&g, &info),
            [ip("203.0.113.7")],
            "no IPv6 in this tunnel"
        );
        let g6 = grant(json!({"uplinkTargets": ["2001:db8::1"], "ipv6": "fd7e::2", "cidr6": 64}));
        assert_eq!(advertised(&g6, &info), [ip("2001:db8::1")]);
        // An older gateway's grant: nodeInfo fills in.
        assert_eq!(advertised(&grant(json!({})), &info), info);
        // A hostile list is cut to the cap.
        let many: Vec<String> = (1..=50).map(|i| format!("192.0.2.{i}")).collect();
        let g = grant(json!({ "uplinkTargets": many }));
        assert_eq!(
            advertised(&g, &[]).len(),
            crate::protocol::MAX_UPLINK_TARGETS
        );
    }
}
