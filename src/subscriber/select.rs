//! Choosing a gateway: pure scoring, ranking and the decision whether to move.
//!
//! Nothing here does I/O or reads a clock: the caller passes the gateways' answers, what it
//! remembers of each gateway ([`History`]), the time now (milliseconds on any monotonic clock)
//! and a seed. That makes every rule below a unit test away from being checked.
//!
//! # Rules
//! - A gateway is never chosen when it is not a gateway, is excluded (`list exclude`), reports an
//!   unhealthy uplink, is full, costs more than `max_price`, offers none of our methods, is
//!   currently **down** (our probes through it failed) or is **backing off** after failures
//!   (back-off doubles per consecutive failure, from [`Policy::backoff_base_ms`] up to
//!   [`Policy::backoff_max_ms`]).
//! - [`score`], lower is better: path RTT (the tunnel's measured RTT once known, else the
//!   `nodeInfo` answer time), path cost (hops), loss, load, price relative to `max_price`, a small
//!   bonus for advertised bandwidth, a penalty per recent failure, and a large bonus for the
//!   operator's `option prefer`.
//! - Among gateways within [`Policy::tie_band`] of the best, one is picked by a seeded random
//!   draw (the seed is derived from our node name), so that a mesh's subscribers spread over
//!   near-equal gateways instead of all piling onto the first.
//! - [`decide`]: stay on a working gateway unless another one is better by more than the
//!   hysteresis margin **and** has been stable (no failure) for [`Policy::failback_after_ms`].
//!
//! # Identity
//! A gateway is identified by the mesh address it answered at ([`id`]), never by the name it
//! reports: any node can call itself anything. History (failures, back-off, down, probe
//! quality), dedupe and the "us" adjustment are keyed by that address, so a node using another
//! gateway's name neither hides it (both are ranked, each on its own record) nor makes it pay for
//! its own refusals. `prefer`/`exclude` match an address exactly, or a name as a label (every node
//! using that name; the back-off of each is still its own). On cjdns and Yggdrasil the address is
//! derived from the node's key; on an IP mesh it can only be taken by subverting the mesh's
//! routing.

use crate::discovery::Answer;
use std::collections::HashMap;

/// What the subscriber accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wants {
    /// Our tunnel methods, in our order of preference.
    pub methods: Vec<String>,
    /// Highest price we pay (0: only free gateways).
    pub max_price: u32,
    /// Node name the operator prefers (`option prefer`), if any.
    pub prefer: Option<String>,
    /// Node names never used (`list exclude`).
    pub exclude: Vec<String>,
}

/// What we remember about one gateway (by [`id`]), from probes, registrations and renewals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Mean RTT of recent probes through the tunnel, if we have been connected.
    pub rtt_ms: Option<f64>,
    /// Share of recent probes lost, 0..=1.
    pub loss: f64,
    /// Our probes through it failed `down_after` times in a row and it has not answered since.
    pub down: bool,
    /// Failures since the last success (registration, renewal, down detection).
    pub failures: u32,
    /// When the last failure happened (ms, caller's clock).
    pub last_failure_ms: Option<u64>,
    /// Since when it has been answering without failure (ms, caller's clock).
    pub stable_since_ms: Option<u64>,
    /// The last failure was a registration the gateway refused or could not carry out (not one
    /// where nobody was at its port, and not the gateway going down while we used it, unless
    /// its new tunnels did so [`super::core::FRUITLESS`] times in a row without ever
    /// answering): such a gateway keeps its back-off even when we have no other
    /// ([`rank_for_rescue`]).
    pub registration_failed: bool,
    /// New tunnels to it in a row that went down without ever carrying a probe's answer
    /// ([`super::core::FRUITLESS`]).
    pub fruitless: u32,
    /// The gateway answered "busy, ask again later" (HTTP 429/503) and named a `Retry-After`:
    /// not asked again before this (ms, caller's clock), whatever the back-off says.
    pub busy_until_ms: Option<u64>,
}

/// Tuning of the selection rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Scores this close to the best count as equal (random pick among them).
    pub tie_band: f64,
    /// A challenger must beat the current gateway's score by this much…
    pub hysteresis_abs: f64,
    /// …and by this fraction of the current score.
    pub hysteresis_rel: f64,
    /// A gateway must have been free of failures this long before we move (back) to it.
    pub failback_after_ms: u64,
    /// Back-off after the first failure.
    pub backoff_base_ms: u64,
    /// Longest back-off.
    pub backoff_max_ms: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            tie_band: 5.0,
            hysteresis_abs: 10.0,
            hysteresis_rel: 0.2,
            failback_after_ms: 60_000,
            backoff_base_ms: 2_000,
            backoff_max_ms: 300_000,
        }
    }
}

/// Score bonus of the operator's preferred gateway: it wins over anything but a broken one.
pub const PREFER_BONUS: f64 = 1000.0;

/// A gateway we could register with, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The gateway's answer.
    pub answer: Answer,
    /// The methods to try, in our order of preference (all offered by the gateway).
    pub methods: Vec<String>,
    /// Lower is better.
    pub score: f64,
}

/// The back-off after `failures` consecutive failures: 0, base, 2·base, 4·base … up to max.
pub fn backoff_ms(failures: u32, policy: &Policy) -> u64 {
    if failures == 0 {
        return 0;
    }
    let doublings = (failures - 1).min(30);
    policy
        .backoff_base_ms
        .saturating_mul(1u64 << doublings)
        .min(policy.backoff_max_ms)
}

/// A gateway's identity: the node it belongs to, by its smallest address
/// ([`crate::discovery::nodes`]), or the mesh address it answered at until a scan's answers
/// are joined. Two addresses of one node are one gateway: ranked once, down together.
pub fn id(a: &Answer) -> String {
    a.node.unwrap_or(a.candidate.address).to_string()
}

/// Whether a `prefer`/`exclude` entry names this gateway: the address it answered at, its
/// node's, or its name.
pub fn names(entry: &str, a: &Answer) -> bool {
    entry == a.info.name || entry == id(a) || entry == a.candidate.address.to_string()
}

/// `wants` with a `prefer`/`exclude` entry that is the address of a joined node's answer
/// ([`crate::discovery::nodes`]) turned into that node's identity, so that it names the node at
/// every address: excluding a gateway by its IPv6 address does not leave it usable by IPv4. Only
/// joins count (both answers list each other), so a node cannot draw a preference to itself by
/// listing someone else's address.
pub fn for_nodes(wants: &Wants, answers: &[Answer]) -> Wants {
    let node_of = |entry: &str| {
        answers
            .iter()
            .find(|a| a.candidate.address.to_string() == entry)
            .map_or_else(|| entry.to_string(), id)
    };
    let mut out = wants.clone();
    out.prefer = wants.prefer.as_deref().map(node_of);
    for e in &wants.exclude {
        let node = node_of(e);
        if !out.exclude.contains(&node) {
            out.exclude.push(node);
        }
    }
    out
}

/// Why a gateway is not a choice right now, or `None` if it is one.
pub fn unusable(
    a: &Answer,
    wants: &Wants,
    h: &History,
    now_ms: u64,
    policy: &Policy,
) -> Option<String> {
    if let Some(why) = unusable_terms(a, wants) {
        return Some(why);
    }
    if h.down {
        return Some("down".into());
    }
    if let Some(until) = h.busy_until_ms.filter(|&u| now_ms < u) {
        return Some(format!("busy: asked us to wait {} ms more", until - now_ms));
    }
    if let Some(at) = h.last_failure_ms {
        let until = at.saturating_add(backoff_ms(h.failures, policy));
        if now_ms < until {
            return Some(format!(
                "backing off for {} ms after {} failure(s)",
                until - now_ms,
                h.failures
            ));
        }
    }
    None
}

/// Why a gateway's own answer rules it out (ignoring our history with it), or `None`.
pub fn unusable_terms(a: &Answer, wants: &Wants) -> Option<String> {
    let info = &a.info;
    if !info.gateway {
        return Some("not a gateway".into());
    }
    if wants.exclude.iter().any(|e| names(e, a)) {
        return Some("excluded by configuration".into());
    }
    if !info.uplink.healthy {
        return Some("uplink unhealthy".into());
    }
    if info.terms.price > wants.max_price {
        return Some(format!(
            "price {} above max_price {}",
            info.terms.price, wants.max_price
        ));
    }
    if info.terms.max_subscribers > 0 && info.terms.subscribers >= info.terms.max_subscribers {
        return Some("full".into());
    }
    if common_methods(a, wants).is_empty() {
        return Some(format!(
            "offers none of our methods ({})",
            info.methods.join(", ")
        ));
    }
    None
}

/// Our methods that the gateway offers, in our order of preference.
pub fn common_methods(a: &Answer, wants: &Wants) -> Vec<String> {
    let offered = |m: &&String| a.info.methods.contains(m);
    wants.methods.iter().filter(offered).cloned().collect()
}

/// Score of a usable gateway, lower is better (see the module docs for the terms).
pub fn score(a: &Answer, wants: &Wants, h: &History) -> f64 {
    let terms = &a.info.terms;
    let rtt_ms = h.rtt_ms.unwrap_or(a.rtt.as_secs_f64() * 1000.0);
    let path = f64::from(a.candidate.hops) / 16.0;
    let load = if terms.max_subscribers == 0 {
        0.0
    } else {
        f64::from(terms.subscribers) / f64::from(terms.max_subscribers)
    };
    let price = if wants.max_price == 0 {
        0.0
    } else {
        f64::from(terms.price) / f64::from(wants.max_price)
    };
    // kbit/s; a log scale so that 100 Mbit/s does not drown everything else.
    let bandwidth = log2(terms.bandwidth_down).min(30.0);
    let failures = f64::from(h.failures.min(10));
    let prefer = if wants.prefer.as_deref().is_some_and(|p| names(p, a)) {
        PREFER_BONUS
    } else {
        0.0
    };
    rtt_ms + path + h.loss * 200.0 + load * 50.0 + price * 30.0 - bandwidth * 0.5 + failures * 20.0
        - prefer
}

/// log2 of `x` (0 for 0 and 1), linear between powers of two: within 0.09 of the true value,
/// monotonic, and without pulling in libm (0.3 MB of resident memory for this one function).
fn log2(x: u32) -> f64 {
    let x = x.max(1);
    let k = x.ilog2();
    let base = 1u64 << k;
    f64::from(k) + (u64::from(x) - base) as f64 / base as f64
}

/// The answers with us taken out of the subscriber count of the gateways we hold a lease with
/// (`ours`, by [`id`]), so that using a gateway does not by itself make it look worse.
pub fn without_us(answers: &[Answer], ours: &[&str]) -> Vec<Answer> {
    let mut out = answers.to_vec();
    for a in &mut out {
        if ours.contains(&id(a).as_str()) {
            a.info.terms.subscribers = a.info.terms.subscribers.saturating_sub(1);
        }
    }
    out
}

/// A small deterministic generator (SplitMix64), so the pick is reproducible from the seed.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`rank`] for when it finds nothing and we are offline, or on a gateway that stopped
/// answering: a gateway held back only by the back-off after it went down while we used it, or
/// after nobody was at its port when we tried to register (a restarting gateway), counts again —
/// its own answer says it is fine now, and any working gateway beats none. One that refused or
/// failed our registration keeps its back-off (asking again at once would fail again), and
/// gateways that are down or whose terms rule them out stay out.
pub fn rank_for_rescue(
    answers: &[Answer],
    wants: &Wants,
    history: &HashMap<String, History>,
    now_ms: u64,
    policy: &Policy,
    seed: u64,
) -> Vec<Choice> {
    let eased: HashMap<String, History> = history
        .iter()
        .map(|(name, h)| {
            let mut h = h.clone();
            if !h.registration_failed {
                h.last_failure_ms = None;
            }
            (name.clone(), h)
        })
        .collect();
    rank(answers, wants, &eased, now_ms, policy, seed)
}

/// A seed derived from a node name (FNV-1a), so each subscriber draws differently but stably.
pub fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Usable gateways, best first; one entry per [`id`] (whatever names they report). Among those
/// within the tie band of the best, the first place goes to a seeded random pick.
pub fn rank(
    answers: &[Answer],
    wants: &Wants,
    history: &HashMap<String, History>,
    now_ms: u64,
    policy: &Policy,
    seed: u64,
) -> Vec<Choice> {
    let none = History::default();
    let hist = |a: &Answer| history.get(&id(a)).unwrap_or(&none);
    let mut choices: Vec<Choice> = answers
        .iter()
        .filter(|a| unusable(a, wants, hist(a), now_ms, policy).is_none())
        .map(|a| Choice {
            methods: common_methods(a, wants),
            score: score(a, wants, hist(a)),
            answer: a.clone(),
        })
        .collect();
    choices.sort_by(|x, y| {
        x.score
            .total_cmp(&y.score)
            .then_with(|| x.answer.info.name.cmp(&y.answer.info.name))
            .then_with(|| x.answer.candidate.cmp(&y.answer.candidate))
    });
    // One entry per node, at its best address; addresses within the tie band of that count as
    // equally good, and the smallest of them is taken (a stable pick between IPv4 and IPv6).
    let mut nodes: Vec<Choice> = Vec::with_capacity(choices.len());
    for c in choices {
        match nodes.iter_mut().find(|n| id(&n.answer) == id(&c.answer)) {
            Some(n) => {
                if c.score <= n.score + policy.tie_band
                    && c.answer.candidate.address < n.answer.candidate.address
                {
                    *n = c;
                }
            }
            None => nodes.push(c),
        }
    }
    let mut choices = nodes;
    if let Some(best) = choices.first().map(|c| c.score) {
        let tied = choices
            .iter()
            .take_while(|c| c.score <= best + policy.tie_band)
            .count();
        if tied > 1 {
            let pick = (splitmix(seed) % tied as u64) as usize;
            let chosen = choices.remove(pick);
            choices.insert(0, chosen);
        }
    }
    choices
}

/// What to do about the current gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep the current gateway.
    Stay,
    /// Move to this choice (index into the ranking), with the reason.
    Move(usize, String),
    /// Nothing usable.
    Nothing,
}

/// Whether to stay on `current` (its [`id`] and score, `None` if not connected or it is down)
/// or move to one of `ranked`.
pub fn decide(
    current: Option<(&str, f64)>,
    ranked: &[Choice],
    history: &HashMap<String, History>,
    now_ms: u64,
    policy: &Policy,
) -> Decision {
    let Some((name, current_score)) = current else {
        return if ranked.is_empty() {
            Decision::Nothing
        } else {
            Decision::Move(0, "not connected".into())
        };
    };
    let margin = policy
        .hysteresis_abs
        .max(current_score.abs() * policy.hysteresis_rel);
    for (i, c) in ranked.iter().enumerate() {
        if id(&c.answer) == name {
            continue;
        }
        if c.score >= current_score - margin {
            // Ranked best first: nobody after this one is clearly better either.
            break;
        }
        let stable_since = history.get(&id(&c.answer)).and_then(|h| h.stable_since_ms);
        let stable_for = stable_since.map_or(0, |s| now_ms.saturating_sub(s));
        if stable_for >= policy.failback_after_ms {
            return Decision::Move(
                i,
                format!(
                    "{} scores {:.1}, clearly better than {name} at {current_score:.1}, stable for {} s",
                    c.answer.info.name,
                    c.score,
                    stable_for / 1000
                ),
            );
        }
    }
    Decision::Stay
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::discovery::Candidate;
    use crate::protocol::{NodeInfo, Terms, Uplink};
    use std::time::Duration;

    /// A healthy WireGuard gateway answering at `addr` (also the subscriber core's tests' fixture).
    pub(in crate::subscriber) fn answer(name: &str, addr: &str, rtt_ms: u64, subs: u32) -> Answer {
        Answer {
            candidate: Candidate {
                address: addr.parse().unwrap(),
                port: 65533,
                how: "t".into(),
                hops: 0,
            },
            info: NodeInfo {
                success: true,
                name: name.into(),
                version: "0".into(),
                gateway: true,
                methods: vec!["wireguard".into()],
                terms: Terms {
                    max_subscribers: 10,
                    subscribers: subs,
                    lease_seconds: 60,
                    ..Terms::default()
                },
                uplink: Uplink {
                    healthy: true,
                    checked_ago: None,
                    targets: vec![],
                },
                gateways: vec![],
                addresses: vec![],
            },
            rtt: Duration::from_millis(rtt_ms),
            node: None,
        }
    }

    fn wants() -> Wants {
        Wants {
            methods: vec!["wireguard".into()],
            ..Wants::default()
        }
    }

    fn no_tie() -> Policy {
        Policy {
            tie_band: 0.0,
            ..Policy::default()
        }
    }

    fn names(r: &[Choice]) -> Vec<&str> {
        r.iter().map(|c| c.answer.info.name.as_str()).collect()
    }

    fn rank_simple(list: &[Answer], w: &Wants) -> Vec<Choice> {
        rank(list, w, &HashMap::new(), 0, &no_tie(), 1)
    }

    #[test]
    fn ranks_by_rtt_and_load_and_keeps_one_entry_per_address() {
        let list = [
            answer("a", "fd77::1", 5, 9),
            answer("b", "fd77::2", 5, 0),
            answer("b", "fd77::2", 7, 0),
        ];
        let r = rank_simple(&list, &wants());
        let got: Vec<_> = r
            .iter()
            .map(|c| {
                (
                    c.answer.info.name.as_str(),
                    c.answer.candidate.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("b", "fd77::2".to_string()), ("a", "fd77::1".to_string())],
            "one entry per address, the better answer"
        );
        assert_eq!(r[0].methods, ["wireguard"]);
    }

    #[test]
    fn excludes_full_expensive_unhealthy_and_foreign_gateways() {
        let full = answer("full", "fd77::1", 1, 10);
        let mut pricey = answer("pricey", "fd77::2", 1, 0);
        pricey.info.terms.price = 5;
        let mut sick = answer("sick", "fd77::3", 1, 0);
        sick.info.uplink.healthy = false;
        let mut other = answer("other", "fd77::4", 1, 0);
        other.info.methods = vec!["openvpn".into()];
        let mut plain = answer("plain", "fd77::5", 1, 0);
        plain.info.gateway = false;
        let h = History::default();
        for a in [&full, &pricey, &sick, &other, &plain] {
            assert!(
                unusable(a, &wants(), &h, 0, &Policy::default()).is_some(),
                "{}",
                a.info.name
            );
        }
        assert!(rank_simple(&[full, pricey, sick, other, plain], &wants()).is_empty());
    }

    #[test]
    fn price_cap_admits_up_to_max_price_and_cheaper_scores_better() {
        let mut cheap = answer("cheap", "fd77::1", 5, 0);
        cheap.info.terms.price = 2;
        let mut dear = answer("dear", "fd77::2", 5, 0);
        dear.info.terms.price = 10;
        let mut too_dear = answer("too-dear", "fd77::3", 1, 0);
        too_dear.info.terms.price = 11;
        let w = Wants {
            max_price: 10,
            ..wants()
        };
        let r = rank_simple(&[dear, too_dear, cheap], &w);
        assert_eq!(names(&r), ["cheap", "dear"]);
    }

    #[test]
    fn log2_is_close_and_monotonic() {
        assert_eq!(log2(0), 0.0);
        assert_eq!(log2(1), 0.0);
        assert_eq!(log2(1024), 10.0);
        let mut last = 0.0;
        for x in (1..200_000u32).step_by(7).chain([u32::MAX]) {
            let y = log2(x);
            assert!(y >= last, "monotonic at {x}");
            assert!((y - f64::from(x).log2()).abs() < 0.09, "close at {x}: {y}");
            last = y;
        }
    }

    #[test]
    fn prefer_pins_and_exclude_removes() {
        let fast = answer("fast", "fd77::1", 1, 0);
        let slow = answer("slow", "fd77::2", 80, 5);
        let w = Wants {
            prefer: Some("slow".into()),
            ..wants()
        };
        assert_eq!(
            names(&rank_simple(&[fast.clone(), slow.clone()], &w)),
            ["slow", "fast"]
        );
        let w = Wants {
            prefer: Some("slow".into()),
            exclude: vec!["slow".into()],
            ..wants()
        };
        assert_eq!(names(&rank_simple(&[fast, slow], &w)), ["fast"]);
    }

    #[test]
    fn a_down_gateway_is_never_chosen_even_when_preferred_and_fastest() {
        let a = answer("a", "fd77::1", 1, 0);
        let b = answer("b", "fd77::2", 90, 9);
        let mut hist = HashMap::new();
        hist.insert(
            "fd77::1".to_string(),
            History {
                down: true,
                ..History::default()
            },
        );
        let w = Wants {
            prefer: Some("a".into()),
            ..wants()
        };
        for seed in 0..50 {
            let r = rank(
                &[a.clone(), b.clone()],
                &w,
                &hist,
                1_000_000,
                &Policy::default(),
                seed,
            );
            assert_eq!(names(&r), ["b"]);
        }
        // Only a down gateway: nothing to choose.
        let r = rank(&[a], &w, &hist, 0, &Policy::default(), 0);
        assert!(r.is_empty());
        assert_eq!(
            decide(None, &r, &hist, 0, &Policy::default()),
            Decision::Nothing
        );
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        let p = Policy {
            backoff_base_ms: 1000,
            backoff_max_ms: 10_000,
            ..Policy::default()
        };
        let got: Vec<u64> = (0..7).map(|f| backoff_ms(f, &p)).collect();
        assert_eq!(got, [0, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(backoff_ms(u32::MAX, &p), 10_000);

        let a = answer("a", "fd77::1", 1, 0);
        let h = History {
            failures: 3,
            last_failure_ms: Some(50_000),
            ..History::default()
        };
        assert!(unusable(&a, &wants(), &h, 53_999, &p).is_some());
        assert!(unusable(&a, &wants(), &h, 54_000, &p).is_none());
    }

    #[test]
    fn a_busy_gateway_is_not_asked_before_its_retry_after_even_in_a_rescue() {
        let p = no_tie();
        let a = answer("busy", "fd77::1", 1, 0);
        // One failure: a 1 s back-off, but the gateway asked for 30 s.
        let h = History {
            failures: 1,
            last_failure_ms: Some(10_000),
            registration_failed: true,
            busy_until_ms: Some(40_000),
            ..History::default()
        };
        assert!(unusable(&a, &wants(), &h, 12_000, &p).is_some());
        assert!(unusable(&a, &wants(), &h, 39_999, &p).is_some());
        assert!(unusable(&a, &wants(), &h, 40_000, &p).is_none());
        let hist = hist_of(&[("fd77::1", h)]);
        let list = [a];
        assert!(rank_for_rescue(&list, &wants(), &hist, 20_000, &p, 0).is_empty());
        assert_eq!(
            names(&rank_for_rescue(&list, &wants(), &hist, 40_000, &p, 0)),
            ["busy"]
        );
    }

    #[test]
    fn rescue_lifts_only_the_back_off_of_gateways_that_went_down_in_use() {
        let p = no_tie();
        let backing_off = |registration_failed: bool| History {
            failures: 4,
            last_failure_ms: Some(10_000),
            registration_failed,
            ..History::default()
        };
        let list = [
            answer("flapped", "fd77::1", 5, 0),
            answer("refused", "fd77::2", 1, 0),
            answer("dead", "fd77::3", 1, 0),
        ];
        let hist = hist_of(&[
            ("fd77::1", backing_off(false)),
            ("fd77::2", backing_off(true)),
            (
                "fd77::3",
                History {
                    down: true,
                    ..backing_off(false)
                },
            ),
        ]);
        // 2 s after the failures, all three are still backing off (16 s after 4 failures).
        assert!(rank(&list, &wants(), &hist, 12_000, &p, 0).is_empty());
        let r = rank_for_rescue(&list, &wants(), &hist, 12_000, &p, 0);
        assert_eq!(names(&r), ["flapped"]);
        // Once every back-off is over, the rescue ranks as `rank` does.
        assert_eq!(
            rank_for_rescue(&list, &wants(), &hist, 30_000, &p, 0),
            rank(&list, &wants(), &hist, 30_000, &p, 0)
        );
    }

    fn hist_of(entries: &[(&str, History)]) -> HashMap<String, History> {
        entries
            .iter()
            .map(|(n, h)| (n.to_string(), h.clone()))
            .collect()
    }

    #[test]
    fn hysteresis_keeps_a_working_gateway_against_a_slightly_better_one() {
        let p = Policy {
            failback_after_ms: 0,
            ..no_tie()
        };
        let cur = answer("cur", "fd77::1", 30, 0);
        let near = answer("near", "fd77::2", 25, 0);
        let r = rank(&[cur.clone(), near], &wants(), &HashMap::new(), 0, &p, 0);
        assert_eq!(names(&r), ["near", "cur"]);
        let cur_score = r[1].score;
        assert_eq!(
            decide(Some(("fd77::1", cur_score)), &r, &HashMap::new(), 0, &p),
            Decision::Stay
        );
        let far_better = answer("better", "fd77::3", 2, 0);
        let r = rank(&[cur, far_better], &wants(), &HashMap::new(), 0, &p, 0);
        assert!(matches!(
            decide(Some(("fd77::1", cur_score)), &r, &HashMap::new(), 0, &p),
            Decision::Move(0, _)
        ));
    }

    #[test]
    fn moves_back_only_after_the_stability_period() {
        let p = Policy {
            failback_after_ms: 5_000,
            ..no_tie()
        };
        let w = Wants {
            prefer: Some("home".into()),
            ..wants()
        };
        let home = answer("home", "fd77::1", 5, 0);
        let away = answer("away", "fd77::2", 5, 0);
        // home failed at t=10 s (once, back-off 2 s) and answers again since t=12 s.
        let hist = hist_of(&[(
            "fd77::1",
            History {
                failures: 1,
                last_failure_ms: Some(10_000),
                stable_since_ms: Some(12_000),
                ..History::default()
            },
        )]);
        let away_score = score(&away, &w, &History::default());
        for (now, expect_move) in [(12_500, false), (16_999, false), (17_000, true)] {
            let r = rank(&[home.clone(), away.clone()], &w, &hist, now, &p, 0);
            let d = decide(Some(("fd77::2", away_score)), &r, &hist, now, &p);
            assert_eq!(
                matches!(d, Decision::Move(0, _)),
                expect_move,
                "at {now}: {d:?}"
            );
        }
    }

    #[test]
    fn not_connected_moves_to_the_best() {
        let r = rank_simple(&[answer("a", "fd77::1", 5, 0)], &wants());
        assert!(matches!(
            decide(None, &r, &HashMap::new(), 0, &Policy::default()),
            Decision::Move(0, _)
        ));
    }

    #[test]
    fn randomness_within_the_tie_band_is_seeded_and_bounded() {
        let list = [
            answer("a", "fd77::1", 10, 0),
            answer("b", "fd77::2", 12, 0),
            answer("c", "fd77::3", 60, 0),
        ];
        let p = Policy::default(); // tie band 5
        let first = |seed| {
            rank(&list, &wants(), &HashMap::new(), 0, &p, seed)[0]
                .answer
                .info
                .name
                .clone()
        };
        // Same seed, same pick.
        assert_eq!(first(7), first(7));
        let picks: Vec<String> = (0..64).map(first).collect();
        assert!(picks.iter().any(|n| n == "a") && picks.iter().any(|n| n == "b"));
        assert!(
            picks.iter().all(|n| n != "c"),
            "c is outside the tie band and never first"
        );
        // Without a tie band, always the best.
        let strict = |seed| {
            rank(&list, &wants(), &HashMap::new(), 0, &no_tie(), seed)[0]
                .answer
                .info
                .name
                .clone()
        };
        assert!((0..64).map(strict).all(|n| n == "a"));
    }

    /// 20 subscribers, all scanning at the same moment and seeing the same two equal gateways
    /// (no load difference yet), each with its own seed from its node name: they spread over
    /// both gateways instead of piling onto one.
    #[test]
    fn twenty_subscribers_spread_over_two_equal_gateways() {
        let list = [
            answer("gw1", "fd77::3", 3, 0),
            answer("gw2", "fd77::4", 3, 0),
        ];
        let mut on_gw1 = 0;
        for i in 0..20 {
            let seed = seed_for(&format!("sub{i}"));
            let r = rank(
                &list,
                &wants(),
                &HashMap::new(),
                0,
                &Policy::default(),
                seed,
            );
            if r[0].answer.info.name == "gw1" {
                on_gw1 += 1;
            }
        }
        assert!(
            (4..=16).contains(&on_gw1),
            "{on_gw1} of 20 on gw1: not spread"
        );
    }

    /// The same 20 arriving one after another: each sees the load the earlier ones put on the
    /// gateways (subscribers/maxSubscribers in nodeInfo) and the answer times jitter by a few ms.
    #[test]
    fn twenty_subscribers_arriving_one_by_one_spread_too() {
        let mut load = [0u32, 0u32];
        for i in 0..20u64 {
            let jitter = |g: u64| 2 + (splitmix(i * 2 + g) % 4);
            let list = [
                answer("gw1", "fd77::3", jitter(0), load[0]),
                answer("gw2", "fd77::4", jitter(1), load[1]),
            ];
            let mut list = list.to_vec();
            for a in &mut list {
                a.info.terms.max_subscribers = 30;
            }
            let seed = seed_for(&format!("sub{i}"));
            let r = rank(
                &list,
                &wants(),
                &HashMap::new(),
                0,
                &Policy::default(),
                seed,
            );
            let on = usize::from(r[0].answer.info.name == "gw2");
            load[on] += 1;
        }
        assert!(load[0] >= 5 && load[1] >= 5, "{load:?}");
    }

    /// Two gateways with room for two: we use `a`, which therefore reports one subscriber more.
    /// Counted as is, `a` would look clearly worse (and full) and we would move; without us it
    /// is what it is, equal, and we stay.
    #[test]
    fn our_own_lease_does_not_make_our_gateway_look_worse() {
        let mut a = answer("a", "fd77::1", 5, 1);
        let mut b = answer("b", "fd77::2", 5, 0);
        a.info.terms.max_subscribers = 2;
        b.info.terms.max_subscribers = 2;
        let p = Policy {
            failback_after_ms: 0,
            ..no_tie()
        };
        let list = [a, b];
        let raw = rank(&list, &wants(), &HashMap::new(), 0, &p, 0);
        let fair = rank(
            &without_us(&list, &["fd77::1"]),
            &wants(),
            &HashMap::new(),
            0,
            &p,
            0,
        );
        let cur = fair
            .iter()
            .find(|c| c.answer.info.name == "a")
            .unwrap()
            .score;
        assert_eq!(
            decide(Some(("fd77::1", cur)), &fair, &HashMap::new(), 0, &p),
            Decision::Stay
        );
        let raw_a = raw
            .iter()
            .find(|c| c.answer.info.name == "a")
            .map(|c| c.score);
        assert!(
            raw_a.is_none_or(|s| s > cur),
            "counted as is, a looks worse"
        );
        assert_eq!(without_us(&list, &["fd77::1"])[0].info.terms.subscribers, 0);
        assert_eq!(without_us(&list, &["fd77::1"])[1].info.terms.subscribers, 0);
        // A name is no key: leaving a's name out does nothing.
        assert_eq!(without_us(&list, &["a"])[0].info.terms.subscribers, 1);
    }

    /// Issue 20, item 6: a node calling itself like the preferred gateway, advertising more
    /// bandwidth and refusing every registration, neither hides the real one nor makes it pay.
    #[test]
    fn an_impostor_by_name_cannot_hide_or_penalise_the_real_gateway() {
        let real = answer("gwa", "fd77::1", 5, 0);
        let mut impostor = answer("gwa", "fd77::66", 5, 0);
        impostor.info.terms.bandwidth_down = 1_000_000;
        let other = answer("gwb", "fd77::2", 1, 0);
        let w = Wants {
            prefer: Some("gwa".into()),
            ..wants()
        };
        let list = [real.clone(), impostor.clone(), other.clone()];
        let p = no_tie();
        // Both called gwa are ranked, each under its own address: the impostor cannot hide the
        // real one behind its better score.
        let r = rank(&list, &w, &HashMap::new(), 0, &p, 0);
        let ids: Vec<String> = r.iter().map(|c| id(&c.answer)).collect();
        assert_eq!(ids, ["fd77::66", "fd77::1", "fd77::2"]);
        // Its 25 refusals count against its own address only.
        let mut hist = HashMap::new();
        hist.insert(
            "fd77::66".to_string(),
            History {
                failures: 25,
                last_failure_ms: Some(1_000),
                registration_failed: true,
                ..History::default()
            },
        );
        let r = rank(&list, &w, &hist, 2_000, &p, 0);
        assert_eq!(id(&r[0].answer), "fd77::1", "the real gwa first");
        assert_eq!(r[0].score, score(&real, &w, &History::default()));
        // Preferring by address pins the real one: the impostor gets no bonus at all.
        let exact = Wants {
            prefer: Some("fd77::1".into()),
            ..wants()
        };
        let r = rank(&list, &exact, &HashMap::new(), 0, &p, 0);
        assert_eq!(id(&r[0].answer), "fd77::1");
        assert!(r[1].score > -PREFER_BONUS / 2.0);
        // Excluding by address leaves the other gwa alone; by name, both go.
        let ex = |e: &str| Wants {
            exclude: vec![e.into()],
            ..wants()
        };
        let left = |w: &Wants| -> Vec<String> {
            rank(&list, w, &HashMap::new(), 0, &p, 0)
                .iter()
                .map(|c| id(&c.answer))
                .collect()
        };
        assert_eq!(left(&ex("fd77::66")), ["fd77::2", "fd77::1"]);
        assert_eq!(left(&ex("gwa")), ["fd77::2"]);
        // An unhealthy report under the name of the gateway in use concerns only the reporter.
        let mut sick = impostor;
        sick.info.uplink.healthy = false;
        let r = rank(&[real, sick, other], &w, &HashMap::new(), 0, &p, 0);
        assert!(r.iter().any(|c| id(&c.answer) == "fd77::1"));
    }

    #[test]
    fn a_node_is_ranked_once_at_its_smallest_address_among_equally_good_ones() {
        let node: std::net::IpAddr = "10.77.0.3".parse().unwrap();
        let joined = |mut a: Answer| {
            a.node = Some(node);
            a
        };
        // Its IPv6 address answered a little faster: within the tie band, the IPv4 one is taken.
        let list = [
            joined(answer("gw", "fd77::3", 5, 0)),
            joined(answer("gw", "10.77.0.3", 6, 0)),
            answer("other", "10.77.0.9", 50, 5),
        ];
        let r = rank(&list, &wants(), &HashMap::new(), 0, &Policy::default(), 1);
        let at: Vec<String> = r
            .iter()
            .map(|c| c.answer.candidate.address.to_string())
            .collect();
        assert_eq!(at, ["10.77.0.3", "10.77.0.9"]);
        // Clearly faster at one address: that one.
        let list = [
            joined(answer("gw", "fd77::3", 5, 0)),
            joined(answer("gw", "10.77.0.3", 900, 0)),
        ];
        let r = rank(&list, &wants(), &HashMap::new(), 0, &Policy::default(), 1);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].answer.candidate.address.to_string(), "fd77::3");
    }

    #[test]
    fn prefer_and_exclude_by_one_address_name_the_whole_node() {
        let node: std::net::IpAddr = "10.77.0.3".parse().unwrap();
        let joined = |mut a: Answer| {
            a.node = Some(node);
            a
        };
        let list = [
            joined(answer("gw", "fd77::3", 5, 0)),
            joined(answer("gw", "10.77.0.3", 5, 0)),
            answer("other", "10.77.0.9", 5, 0),
        ];
        let mut w = wants();
        w.exclude = vec!["fd77::3".into()];
        let w = for_nodes(&w, &list);
        let r = rank(&list, &w, &HashMap::new(), 0, &Policy::default(), 1);
        assert_eq!(
            names(&r),
            ["other"],
            "excluded at its IPv6 address, not usable by IPv4"
        );
        let mut w = wants();
        w.prefer = Some("fd77::3".into());
        let w = for_nodes(&w, &list);
        let r = rank(&list, &w, &HashMap::new(), 0, &Policy::default(), 1);
        assert_eq!(names(&r)[0], "gw");
        // An address nobody answered at, or a name, stays as it was.
        let mut w = wants();
        w.exclude = vec!["10.77.0.50".into(), "gwname".into()];
        assert_eq!(for_nodes(&w, &list).exclude, ["10.77.0.50", "gwname"]);
    }
}
