//! The health of a path, decided without I/O: probe rounds and their results (the down rule,
//! the grace time, quality saved every few seconds) and lease renewals (a third of the lease,
//! retried until the lease is about to run out). Part of [`Core`].

use super::{Core, GRACE, Level, Link, Probing, RETRY, RenewOutcome, SAVE_EVERY, State, Step};
use crate::subscriber::events::Effect;
use crate::subscriber::probe;
use std::net::IpAddr;
use std::time::Duration;

impl Core {
    /// The addresses probed through a link this round ([`probe::plan`]).
    pub(super) fn probe_targets(&self, link: &Link) -> Vec<IpAddr> {
        let info: &[IpAddr] = self
            .answers
            .iter()
            .find(|a| a.candidate.address == link.gateway.ip() && a.info.name == link.name)
            .map_or(&[], |a| &a.info.uplink.targets);
        probe::plan(
            &self.cfg.probe_targets,
            &probe::advertised(&link.grant, info),
            &link.grant.ipv4gateway,
            self.probe_rounds,
        )
        .addresses()
    }

    /// One probe per link: every link in a `regular` round, else only the links whose last
    /// probe went unanswered; each only while its [`probe::Budget`] allows. A link whose probes
    /// failed `down_after` times in a row is down.
    pub(super) fn probe_round(&mut self, regular: bool) {
        let ids: Vec<String> = self.links().map(|(_, l)| l.id()).collect();
        self.budgets.retain(|id, _| ids.contains(id));
        let now = self.now;
        let probes: Vec<Probing> = self
            .links()
            .filter(|(_, l)| regular || self.confirming(l))
            .map(|(i, l)| Probing {
                slot: i,
                id: l.id(),
                name: l.name.clone(),
                interface: l.interface.clone(),
                targets: self.probe_targets(l),
                up_for: now.saturating_duration_since(l.up_since),
            })
            .filter(|p| {
                let b = self.budgets.get(&p.id);
                b.is_none_or(|b| b.free_at(p.targets.len(), now) <= now)
            })
            .collect();
        if probes.is_empty() {
            return;
        }
        self.probe_rounds = self.probe_rounds.wrapping_add(1);
        for p in &probes {
            let packets = p.targets.len();
            self.budgets
                .entry(p.id.clone())
                .or_default()
                .spend(packets, now);
        }
        self.call(
            probes
                .into_iter()
                .map(|p| Step::Probe(Box::new(p)))
                .collect(),
        );
    }

    /// Whether `l`'s last probe went unanswered without making it down yet: it is probed again
    /// as soon as its budget allows, not at the next round (misses in the grace time are not
    /// recorded, so they ask for nothing).
    fn confirming(&self, l: &Link) -> bool {
        self.records
            .get(&l.id())
            .is_some_and(|r| (1..self.cfg.down_after.max(1)).contains(&r.missed_in_a_row()))
    }

    /// When the links waiting to confirm a miss may be probed ([`probe::Budget`]).
    pub(super) fn confirmations_due(&self) -> Vec<std::time::Instant> {
        self.links()
            .filter(|(_, l)| self.confirming(l))
            .map(|(_, l)| {
                let n = self.probe_targets(l).len();
                self.budgets
                    .get(&l.id())
                    .map_or(self.now, |b| b.free_at(n, self.now))
            })
            .collect()
    }

    pub(super) fn probed(&mut self, p: Probing, rtt: Option<Duration>) {
        let Probing {
            slot: i,
            id,
            name,
            interface,
            targets,
            up_for,
        } = p;
        let in_grace = up_for < GRACE;
        if rtt.is_some()
            && let Some(l) = self.slots.get_mut(i).and_then(Option::as_mut)
            && l.id() == id
            && l.last_answer.replace(self.now).is_none()
        {
            let ms = self.now.saturating_duration_since(l.up_since).as_millis();
            self.log(
                Level::Debug,
                format!("{name}: first answer through {interface}, {ms} ms after it came up"),
            );
            self.history.entry(id.clone()).or_default().fruitless = 0;
        }
        let failures_forgiven_after =
            Duration::from_millis(self.policy.failback_after_ms).max(GRACE * 10);
        let record = self.records.entry(id.clone()).or_default();
        if rtt.is_none() && in_grace {
            return;
        }
        record.push(rtt.map(|d| d.as_secs_f64() * 1000.0));
        let down = record.is_down(self.cfg.down_after);
        if rtt.is_some() && self.history.get(&id).is_some_and(|h| h.down) {
            // A kept tunnel answers again: the gateway is back (its back-off still counts).
            self.log(
                Level::Info,
                format!("{name} answers again through {interface}"),
            );
            let t = self.now_ms();
            let h = self.history.entry(id.clone()).or_default();
            h.down = false;
            h.stable_since_ms = Some(t);
            if self.active == Some(i) {
                self.state = State::Connected;
            }
        }
        let summary = self.records.entry(id.clone()).or_default().summary();
        let h = self.history.entry(id.clone()).or_default();
        h.rtt_ms = summary.rtt_ms;
        h.loss = summary.loss;
        if rtt.is_some() && !in_grace && up_for >= failures_forgiven_after {
            // Served us well for a while: earlier failures no longer lengthen its back-off.
            h.failures = 0;
        }
        if down {
            let why = format!(
                "{name}: no answer to {} probe(s) through {interface} in a row (last to {})",
                summary.consecutive_failures,
                targets
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.call(vec![Step::LinkFailed(i, why, true)]);
        } else if self
            .saved
            .get(&id)
            .is_none_or(|t| self.now.saturating_duration_since(*t) >= SAVE_EVERY)
        {
            self.save_quality(&id, &name, None);
        }
    }

    /// Saves the probe summary of gateway `id`; the store shows it under its `name` (a label).
    pub(super) fn save_quality(&mut self, id: &str, name: &str, down: Option<&str>) {
        let Some(r) = self.records.get(id) else {
            return;
        };
        self.out.push(Effect::SaveQuality {
            name: name.to_string(),
            summary: r.summary(),
            probes: r.total,
            lost: r.lost,
            down: down.map(str::to_string),
        });
        self.saved.insert(id.to_string(), self.now);
    }

    pub(super) fn renewed(&mut self, slot: usize, outcome: RenewOutcome) {
        let now = self.now;
        let probe_interval = self.probe_interval().max(Duration::from_millis(500));
        let active = self.active == Some(slot);
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let name = c.name.clone();
        match outcome {
            RenewOutcome::Renewed(timeout) => {
                let lease = Duration::from_secs(u64::from(timeout.max(3)));
                c.expires = now + lease;
                c.renew_at = now + lease / 3;
                if active {
                    self.out.push(Effect::SetConnectionExpiry(timeout));
                }
            }
            RenewOutcome::Refused(text) => {
                let why = format!("gateway {name} refused renewal: {text}");
                self.call(vec![Step::LinkFailed(slot, why, false)]);
            }
            RenewOutcome::Failed(why) if now + give_up_margin(&c.grant) >= c.expires => {
                let why = format!("gateway {name} unreachable until the lease ran out: {why}");
                self.call(vec![Step::LinkFailed(slot, why, false)]);
            }
            RenewOutcome::Failed(why) => {
                c.renew_at = now + probe_interval;
                self.log(Level::Warn, format!("renewal failed, retrying: {why}"));
            }
        }
    }
}

/// How long before its end an unrenewable lease is given up (so that the move to another gateway
/// comes before the tunnel stops): [`RETRY`], or a quarter of a lease shorter than 20 s, so that
/// a short lease is still asked again for a while after its first renewal fails (a gateway
/// restarting takes a second or two).
fn give_up_margin(grant: &crate::protocol::Grant) -> Duration {
    RETRY.min(Duration::from_secs(u64::from(grant.timeout.max(3))) / 4)
}
