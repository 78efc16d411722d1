//! Choosing a gateway: pure ranking of the gateways that answered, best first.

use crate::discovery::Answer;

/// What the subscriber accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wants {
    /// Our tunnel methods, in our order of preference.
    pub methods: Vec<String>,
    /// Highest price we pay (0: only free gateways).
    pub max_price: u32,
}

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

/// Why a gateway is not a choice, or `None` if it is one.
pub fn unusable(a: &Answer, wants: &Wants) -> Option<String> {
    let info = &a.info;
    if !info.gateway {
        return Some("not a gateway".into());
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

/// Score of a usable gateway: answer time plus path cost plus load, lower is better.
pub fn score(a: &Answer) -> f64 {
    let rtt_ms = a.rtt.as_secs_f64() * 1000.0;
    let load = if a.info.terms.max_subscribers == 0 {
        0.0
    } else {
        f64::from(a.info.terms.subscribers) / f64::from(a.info.terms.max_subscribers)
    };
    rtt_ms + f64::from(a.candidate.hops) / 16.0 + load * 100.0
}

/// Usable gateways, best first; one entry per node name (its best address).
pub fn rank(answers: &[Answer], wants: &Wants) -> Vec<Choice> {
    let mut choices: Vec<Choice> = answers
        .iter()
        .filter(|a| unusable(a, wants).is_none())
        .map(|a| Choice {
            methods: common_methods(a, wants),
            score: score(a),
            answer: a.clone(),
        })
        .collect();
    choices.sort_by(|x, y| x.score.total_cmp(&y.score));
    let mut names = std::collections::HashSet::new();
    choices.retain(|c| names.insert(c.answer.info.name.clone()));
    choices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Candidate;
    use crate::protocol::{NodeInfo, Terms, Uplink};
    use std::time::Duration;

    fn answer(name: &str, addr: &str, rtt_ms: u64, subs: u32) -> Answer {
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
                },
                gateways: vec![],
            },
            rtt: Duration::from_millis(rtt_ms),
        }
    }

    fn wants() -> Wants {
        Wants {
            methods: vec!["wireguard".into()],
            max_price: 0,
        }
    }

    #[test]
    fn ranks_by_rtt_and_load_and_keeps_one_address_per_node() {
        let list = [
            answer("a", "fd77::1", 5, 9),
            answer("b", "fd77::2", 5, 0),
            answer("b", "10.77.0.2", 9, 0),
        ];
        let r = rank(&list, &wants());
        let names: Vec<_> = r
            .iter()
            .map(|c| {
                (
                    c.answer.info.name.as_str(),
                    c.answer.candidate.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("b", "fd77::2".to_string()), ("a", "fd77::1".to_string())]
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
        for a in [&full, &pricey, &sick, &other, &plain] {
            assert!(unusable(a, &wants()).is_some(), "{}", a.info.name);
        }
        assert!(rank(&[full, pricey, sick, other, plain], &wants()).is_empty());
    }
}
