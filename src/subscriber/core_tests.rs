//! The rules of README's "Staying online" section, each proved on the [`Core`] alone: a fake
//! caller answers its questions (registrations, probes, renewals, scans) from a script, and the
//! clock is moved by hand.

use super::*;
use crate::protocol::Grant;
use serde_json::json;
use std::collections::{HashMap, HashSet};

fn answer(name: &str, addr: &str) -> Answer {
    select::tests::answer(name, addr, 10, 0)
}

fn sick(mut a: Answer) -> Answer {
    a.info.uplink.healthy = false;
    a
}

fn grant(lease: u32) -> Grant {
    Grant {
        success: true,
        sid: "0123456789abcdef0123456789abcdef".into(),
        timeout: lease,
        method: "wireguard".into(),
        ipv4: "10.99.0.2".into(),
        cidr4: 24,
        ipv4gateway: "10.99.0.1".into(),
        ipv6: None,
        cidr6: None,
        ipv6gateway: None,
        uplink_targets: vec![],
        extra: Default::default(),
    }
}

/// A subscriber's core with a scripted world around it.
struct World {
    core: Core,
    t0: Instant,
    now: Instant,
    /// What a scan finds.
    found: Vec<Answer>,
    /// Gateways (by address) whose registration is refused.
    refusing: HashSet<String>,
    /// Gateways (by address) nobody answers at (registration: connection refused).
    absent: HashSet<String>,
    /// Gateways (by address) that answer "busy" (503/429) with this `Retry-After`.
    busy: HashMap<String, Duration>,
    /// Gateways (by address) whose tunnel no longer answers probes.
    dead: HashSet<String>,
    /// Every how many probes of a tunnel one is lost (0: none), and the probes so far per
    /// gateway.
    lose_every: u32,
    probes: HashMap<String, u32>,
    /// What renewals come to.
    renewal: RenewOutcome,
    /// Lease length granted.
    lease: u32,
}

impl World {
    fn new(cfg: SubscriberConfig, hot: bool) -> World {
        let t0 = Instant::now();
        World {
            core: Core::new(cfg, "sub", hot, t0),
            t0,
            now: t0,
            found: vec![],
            refusing: HashSet::new(),
            absent: HashSet::new(),
            busy: HashMap::new(),
            dead: HashSet::new(),
            lose_every: 0,
            probes: HashMap::new(),
            renewal: RenewOutcome::Renewed(60),
            lease: 60,
        }
    }

    fn cold() -> World {
        World::new(prefer_gw1(), false)
    }

    fn hot() -> World {
        let mut cfg = prefer_gw1();
        cfg.probe_interval_ms = crate::config::HOT_STANDBY_PROBE_INTERVAL_MS;
        World::new(cfg, true)
    }

    /// Seconds since the start.
    fn t(&self) -> f64 {
        (self.now - self.t0).as_secs_f64()
    }

    /// Gives the core `event` and answers its questions; every effect, in order.
    fn drive(&mut self, event: Event) -> Vec<Effect> {
        let mut all = vec![];
        let mut todo: VecDeque<Effect> = self.core.on(event, self.now).into();
        let mut background = false;
        while let Some(e) = todo.pop_front() {
            background |= e == Effect::Scan { background: true };
            let reply = self.answer(&e);
            if let (Effect::Probe { timeout, .. }, Some(Event::Probed(rtt))) = (&e, &reply) {
                // A probe takes its answer's time, or its whole timeout.
                self.now += rtt.unwrap_or(*timeout);
            }
            all.push(e);
            if let Some(reply) = reply {
                for e in self.core.on(reply, self.now).into_iter().rev() {
                    todo.push_front(e);
                }
            }
        }
        if background {
            let found = Some(self.found.clone());
            all.extend(self.drive(Event::Scanned {
                found,
                background: true,
            }));
        }
        all
    }

    fn answer(&mut self, e: &Effect) -> Option<Event> {
        Some(match e {
            Effect::Register { slot, choices, .. } => {
                let mut failures = vec![];
                for c in choices {
                    let id = select::id(&c.answer);
                    for m in &c.methods {
                        if let Some(wait) = self.busy.get(&id) {
                            failures.push(RegFailure {
                                answer: c.answer.clone(),
                                msg: format!("{} via {m}: busy", c.answer.info.name),
                                unreachable: false,
                                busy_for: Some(*wait),
                            });
                            break;
                        } else if self.refusing.contains(&id) || self.absent.contains(&id) {
                            failures.push(RegFailure {
                                answer: c.answer.clone(),
                                msg: format!("{} via {m}: refused", c.answer.info.name),
                                unreachable: self.absent.contains(&id),
                                busy_for: None,
                            });
                        } else {
                            let link = NewLink {
                                gateway: c.answer.candidate.socket(),
                                name: c.answer.info.name.clone(),
                                grant: grant(self.lease),
                                interface: format!("wg{slot}"),
                                connected_at: 0,
                                lease: self.lease,
                            };
                            return Some(Event::Registered {
                                failures,
                                link: Some(link),
                            });
                        }
                    }
                }
                Event::Registered {
                    failures,
                    link: None,
                }
            }
            Effect::RouteVia(_) => Event::Routed(Ok(())),
            Effect::Renew { .. } => Event::Renewed(self.renewal.clone()),
            Effect::Probe { slot, .. } => {
                let id = self.core.link(*slot).map(Link::id).unwrap_or_default();
                let n = self.probes.entry(id.clone()).or_default();
                *n += 1;
                let lost = self.lose_every > 0 && (*n).is_multiple_of(self.lose_every);
                Event::Probed(
                    (!self.dead.contains(&id) && !lost).then(|| Duration::from_millis(10)),
                )
            }
            Effect::Scan { background: false } => Event::Scanned {
                found: Some(self.found.clone()),
                background: false,
            },
            _ => return None,
        })
    }

    /// Runs every deadline up to `secs` after the start; every effect, in order.
    fn run_until(&mut self, secs: f64) -> Vec<Effect> {
        let end = self.t0 + Duration::from_secs_f64(secs);
        let mut all = vec![];
        let mut ticks = 0;
        while let Some(next) = self.core.next_deadline() {
            if next > end {
                break;
            }
            ticks += 1;
            assert!(ticks < 100_000, "a deadline that never moves");
            self.now = next.max(self.now);
            all.extend(self.drive(Event::Tick));
        }
        self.now = end.max(self.now);
        all
    }

    /// The time of the first effect matching `f` while running up to `secs`.
    fn when(&mut self, secs: f64, f: impl Fn(&Effect) -> bool) -> Option<f64> {
        let end = self.t0 + Duration::from_secs_f64(secs);
        let mut ticks = 0;
        while let Some(next) = self.core.next_deadline() {
            if next > end {
                break;
            }
            ticks += 1;
            assert!(ticks < 100_000, "a deadline that never moves");
            self.now = next.max(self.now);
            if self.drive(Event::Tick).iter().any(&f) {
                return Some(self.t());
            }
        }
        self.now = end.max(self.now);
        None
    }

    fn on_gateway(&self) -> Option<String> {
        self.core.active_link().map(|l| l.name.clone())
    }

    fn standby(&self) -> Option<String> {
        self.core
            .links()
            .find(|(i, _)| Some(*i) != self.core.active())
            .map(|(_, l)| l.name.clone())
    }

    /// Connected to gw1, the only gateway the scans find, and past the probes' grace time.
    fn connected_to_gw1_alone(mut self) -> World {
        self.found = vec![answer("gw1", "fd00::1")];
        self.drive(Event::Start);
        self.run_until(2.0);
        assert_eq!(self.on_gateway().as_deref(), Some("gw1"));
        self
    }

    /// Connected to gw1 (preferred) with gw2 usable too, and past the probes' grace time.
    fn connected_to_gw1(mut self) -> World {
        self.found = vec![answer("gw1", "fd00::1"), answer("gw2", "fd00::2")];
        self.drive(Event::Start);
        self.run_until(2.0);
        assert_eq!(self.on_gateway().as_deref(), Some("gw1"));
        self
    }
}

fn prefer_gw1() -> SubscriberConfig {
    SubscriberConfig {
        prefer: Some("gw1".into()),
        failback_after: 5,
        ..SubscriberConfig::default()
    }
}

fn failover_hook(e: &Effect) -> bool {
    matches!(e, Effect::Hook(hooks::Event::Failover, ..))
}

fn registers_with(effects: &[Effect]) -> Vec<Vec<&str>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Register { choices, .. } => Some(
                choices
                    .iter()
                    .map(|c| c.answer.info.name.as_str())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

// --- down ---

/// Runs up to `secs` after the start; when each probe was sent (s since the start) and through
/// which slot.
fn probes_sent(w: &mut World, secs: f64) -> Vec<(f64, usize)> {
    let mut times = vec![];
    each_tick(w, secs, |at, effects| {
        for e in effects {
            if let Effect::Probe { slot, .. } = e {
                times.push((at, *slot));
            }
        }
    });
    times
}

/// Runs every deadline up to `secs` after the start, giving `f` each tick's time (s since the
/// start) and effects.
fn each_tick(w: &mut World, secs: f64, mut f: impl FnMut(f64, &[Effect])) {
    let end = w.t0 + Duration::from_secs_f64(secs);
    while let Some(next) = w.core.next_deadline() {
        if next > end {
            break;
        }
        w.now = next.max(w.now);
        let at = w.t();
        f(at, &w.drive(Event::Tick));
    }
}

/// The times of the probes through `slot`.
fn through(sent: &[(f64, usize)], slot: usize) -> Vec<f64> {
    sent.iter()
        .filter(|(_, s)| *s == slot)
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn a_gateway_is_down_after_three_probes_in_a_row_without_an_answer_the_last_two_asked_at_once() {
    let mut w = World::cold().connected_to_gw1();
    w.dead.insert("fd00::1".into());
    let cut = w.t();
    let at = w.when(10.0, failover_hook).expect("a failover");
    // A regular probe within 200 ms of the cut; it and the two confirmations sent right after
    // each miss wait 30 ms each (three times the 10 ms answers, at least 30 ms): down 90 ms
    // after the first probe that crossed the cut, not three intervals later.
    let after = at - cut;
    assert!(
        (0.09 - 1e-6..=0.2 + 0.09 + 1e-6).contains(&after),
        "down {after:.3} s after the cut"
    );
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

#[test]
fn down_after_sets_how_many_missed_probes_make_a_path_down() {
    let mut cfg = prefer_gw1();
    cfg.down_after = 5;
    let mut w = World::new(cfg, false).connected_to_gw1();
    w.dead.insert("fd00::1".into());
    let cut = w.t();
    let at = w.when(10.0, failover_hook).expect("a failover");
    let after = at - cut;
    assert!(
        (0.15 - 1e-6..=0.2 + 0.15 + 1e-6).contains(&after),
        "down {after:.3} s after the cut"
    );
}

#[test]
fn probe_failures_in_the_first_second_of_a_tunnel_do_not_count() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1"), answer("gw2", "fd00::2")];
    w.drive(Event::Start);
    w.run_until(0.3);
    assert!(
        w.core
            .active_link()
            .is_some_and(|l| l.last_answer.is_some())
    );
    w.dead.insert("fd00::1".into());
    let at = w.when(10.0, failover_hook).expect("a failover");
    // Up at 0 s and answered; the misses of the probes sent at 0.4–0.8 s are forgiven (and not
    // confirmed). The probe sent at 1.0 s counts and waits three times the 10 ms answers seen:
    // misses at 1.03, 1.06 and 1.09 s.
    assert!((1.05..=1.15).contains(&at), "failed over at {at:.3} s");
}

#[test]
fn a_path_that_loses_every_other_probe_is_not_down_and_no_tunnel_gets_more_than_ten_probes_a_second()
 {
    for hot in [false, true] {
        let mut w = if hot { World::hot() } else { World::cold() }.connected_to_gw1();
        let start = w.t();
        w.lose_every = 2;
        let sent = probes_sent(&mut w, start + 10.0);
        assert!(sent.len() > 40, "{} probes", sent.len());
        assert!(
            !w.core
                .links()
                .any(|(_, l)| w.core.history(&l.id()).is_some_and(|h| h.down)),
            "hot {hot}: a path losing every other probe was called down"
        );
        assert_eq!(w.on_gateway().as_deref(), Some("gw1"), "hot {hot}");
        for slot in 0..if hot { 2 } else { 1 } {
            let times = through(&sent, slot);
            assert!(
                times.len() > 40,
                "hot {hot}, slot {slot}: {} probes",
                times.len()
            );
            for (i, t) in times.iter().enumerate() {
                let in_second = times[i..].iter().filter(|u| **u - t < 1.0 - 1e-9).count();
                assert!(
                    in_second <= probe::MAX_PER_SECOND,
                    "hot {hot}, slot {slot}: {in_second} probes in the second from {t:.3} s"
                );
            }
        }
    }
}

#[test]
fn a_new_tunnel_waits_the_whole_time_until_it_first_answers_whatever_earlier_ones_did() {
    let timeouts = |effects: &[Effect]| -> Vec<u128> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Probe { timeout, .. } => Some(timeout.as_millis()),
                _ => None,
            })
            .collect()
    };
    let mut w = World::cold().connected_to_gw1();
    let t = w.t();
    assert!(
        timeouts(&w.run_until(t + 1.0)).iter().all(|ms| *ms == 30),
        "an answering tunnel: three times its 10 ms answers, at least 30 ms"
    );
    // A new tunnel to the same gateway that does not answer (yet): 180 ms, 0.9 of the interval.
    w.drive(Event::DisconnectAsked);
    w.dead.insert("fd00::1".into());
    w.drive(Event::ConnectAsked {
        answer: answer("gw1", "fd00::1"),
        methods: vec!["wireguard".into()],
    });
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    let t = w.t();
    let fresh = timeouts(&w.run_until(t + 0.9));
    assert!(
        !fresh.is_empty() && fresh.iter().all(|ms| *ms == 180),
        "{fresh:?}"
    );
    w.dead.clear();
    let t = w.t();
    let later = timeouts(&w.run_until(t + 1.0));
    assert_eq!(later.first(), Some(&180), "{later:?}");
    assert!(later[1..].iter().all(|ms| *ms == 30), "{later:?}");
}

#[test]
fn a_miss_is_asked_again_at_once_and_an_answer_ends_the_confirmations() {
    let mut w = World::cold().connected_to_gw1();
    // Lose exactly the next probe.
    w.lose_every = w.probes["fd00::1"] + 1;
    let t = w.t();
    let times = through(&probes_sent(&mut w, t + 0.45), 0);
    // The regular probe, its confirmation 30 ms later (the miss's timeout), then regular
    // probes again every 200 ms.
    let gaps: Vec<f64> = times.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        (gaps[0] - 0.03).abs() < 1e-3,
        "confirmation {:.3} s after the miss's probe: {times:?}",
        gaps[0]
    );
    assert!(gaps[1] > 0.15, "{times:?}");
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
}

#[test]
fn a_gateway_that_reports_its_uplink_unhealthy_is_left() {
    let mut w = World::cold().connected_to_gw1();
    let found = Some(vec![
        sick(answer("gw1", "fd00::1")),
        answer("gw2", "fd00::2"),
    ]);
    let effects = w.drive(Event::Scanned {
        found,
        background: true,
    });
    assert!(effects.iter().any(failover_hook));
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

// --- cold failover ---

#[test]
fn cold_failover_registers_with_the_next_best_gateway_of_the_last_scan_without_rescanning() {
    let mut w = World::cold().connected_to_gw1();
    w.dead.insert("fd00::1".into());
    w.found = vec![]; // a scan now would find nothing
    let effects = w.run_until(w.t() + 1.0);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Scan { .. })));
    assert_eq!(registers_with(&effects), [vec!["gw2"]]);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    assert_eq!(w.core.state(), State::Connected);
}

#[test]
fn a_lost_lease_is_released_in_the_background_and_fires_disconnect_and_failover_but_no_release_hook()
 {
    let mut w = World::cold().connected_to_gw1();
    w.dead.insert("fd00::1".into());
    let effects = w.run_until(w.t() + 1.0);
    let released: Vec<(bool, &str)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Release {
                link: Some(l),
                wait,
                ..
            } => Some((*wait, l.name.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(released, [(false, "gw1")]);
    let hooks: Vec<hooks::Event> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Hook(h, ..) => Some(*h),
            _ => None,
        })
        .collect();
    assert_eq!(hooks, [hooks::Event::Disconnect, hooks::Event::Failover]);
}

#[test]
fn other_addresses_under_the_lost_gateways_name_are_tried_last() {
    let mut w = World::cold();
    w.found = vec![
        answer("gw1", "fd00::1"),
        answer("gw1", "fd00::11"),
        answer("gw2", "fd00::2"),
    ];
    w.drive(Event::Start);
    w.run_until(2.0);
    let gw1_at = w.core.active_link().unwrap().id();
    w.dead.insert(gw1_at.clone());
    // The other address refuses, so both are asked in order.
    w.refusing.insert("fd00::2".into());
    let effects = w.run_until(w.t() + 1.0);
    assert_eq!(registers_with(&effects), [vec!["gw2", "gw1"]]);
}

/// gw1 answering at two addresses whose answers list each other (IPv6 and IPv4), and gw2.
fn gw1_at_two_addresses() -> Vec<Answer> {
    let both: Vec<IpAddr> = vec!["fd00::1".parse().unwrap(), "10.0.0.1".parse().unwrap()];
    let mut v6 = answer("gw1", "fd00::1");
    v6.info.addresses = both.clone();
    let mut v4 = answer("gw1", "10.0.0.1");
    v4.info.addresses = both;
    vec![v6, v4, answer("gw2", "fd00::2")]
}

#[test]
fn two_addresses_of_one_node_are_one_gateway_so_the_standby_is_another_node() {
    let mut w = World::hot();
    w.found = gw1_at_two_addresses();
    w.drive(Event::Start);
    w.run_until(2.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    assert_eq!(
        w.standby().as_deref(),
        Some("gw2"),
        "not gw1's other address"
    );
    assert_eq!(
        w.core.active_link().unwrap().id(),
        "10.0.0.1",
        "the node's id"
    );
}

#[test]
fn cold_failover_never_moves_to_another_address_of_the_dead_node() {
    let mut w = World::cold();
    w.found = gw1_at_two_addresses();
    w.drive(Event::Start);
    w.run_until(2.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    w.dead.insert("fd00::1".into());
    w.dead.insert("10.0.0.1".into());
    let effects = w.run_until(w.t() + 1.0);
    assert_eq!(registers_with(&effects), [vec!["gw2"]]);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

#[test]
fn a_failed_registration_moves_on_to_the_next_gateway_and_counts_against_the_first() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1"), answer("gw2", "fd00::2")];
    w.refusing.insert("fd00::1".into());
    w.drive(Event::Start);
    let effects = w.run_until(0.1);
    assert_eq!(registers_with(&effects), [vec!["gw1", "gw2"]]);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    let h = w.core.history("fd00::1").unwrap();
    assert_eq!(h.failures, 1);
    assert!(h.registration_failed);
    assert!(effects.contains(&Effect::CountFailure("[fd00::1]:65533".parse().unwrap())));
}

// --- keep if alone, degraded ---

#[test]
fn with_no_other_usable_gateway_the_dead_tunnel_is_kept_and_the_state_is_degraded() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    w.found = vec![]; // nor does it answer a scan
    let effects = w.run_until(w.t() + 1.0);
    assert_eq!(w.core.state(), State::Degraded);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Release { .. })));
    assert!(!effects.iter().any(failover_hook));
    // It looks for another gateway at once.
    assert!(effects.contains(&Effect::Scan { background: true }));
}

#[test]
fn a_kept_tunnel_that_answers_again_carries_traffic_again_at_once() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    w.found = vec![];
    w.run_until(w.t() + 1.0);
    assert_eq!(w.core.state(), State::Degraded);
    w.dead.clear();
    let effects = w.run_until(w.t() + 0.2);
    assert_eq!(w.core.state(), State::Connected);
    assert!(!w.core.history("fd00::1").unwrap().down);
    assert!(registers_with(&effects).is_empty());
}

#[test]
fn the_only_gateway_restarting_is_kept_and_not_registered_with_again() {
    // gw1 alone on the mesh, answering scans as healthy (so its rescue ranking lists it) while
    // its tunnel misses probes for 1.5 s, as during a restart that restores our session.
    let mut w = World::cold().connected_to_gw1_alone();
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    w.dead.insert("fd00::1".into());
    let t = w.t();
    let mut effects = w.run_until(t + 1.5);
    assert_eq!(w.core.state(), State::Degraded);
    w.dead.clear();
    let t = w.t();
    effects.extend(w.run_until(t + 3.0));
    assert!(
        registers_with(&effects).is_empty(),
        "registered anew with the gateway it holds a lease with: {:?}",
        registers_with(&effects)
    );
    assert!(!effects.iter().any(|e| matches!(e, Effect::Release { .. })));
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    assert_eq!(w.core.state(), State::Connected);
}

#[test]
fn a_silent_tunnel_whose_gateway_answers_scans_is_asked_anew_after_keep_silent() {
    // gw1 holds our session and answers every scan as healthy, but its tunnel is broken for good.
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    let silent_from = w.t();
    let register = |e: &Effect| matches!(e, Effect::Register { .. });
    // While it is kept, each scan finds gw1 answering and the probes find the tunnel down again:
    // said once (down, kept), not again after every scan.
    let kept = w.run_until(silent_from + KEEP_SILENT.as_secs_f64() - 1.0);
    let warnings: Vec<&String> = kept
        .iter()
        .filter_map(|e| match e {
            Effect::Log(Level::Warn, m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    let at = w.when(60.0, register).expect("asked anew");
    let keep = KEEP_SILENT.as_secs_f64();
    assert!(
        at - silent_from >= keep - 0.2 && at - silent_from <= keep + RETRY.as_secs_f64() + 0.5,
        "asked anew {:.1} s after the tunnel fell silent",
        at - silent_from
    );
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    // Kept while degraded and then given up: one failure (it was one per scan while degraded).
    assert_eq!(w.core.history("fd00::1").unwrap().failures, 1);
}

#[test]
fn a_degraded_subscriber_scans_every_retry_and_keeps_the_tunnel_while_its_gateway_is_silent() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    w.found = vec![];
    let effects = w.run_until(2.0 + 30.0);
    assert_eq!(w.core.state(), State::Degraded);
    assert!(registers_with(&effects).is_empty());
    let scans = effects
        .iter()
        .filter(|e| matches!(e, Effect::Scan { .. }))
        .count();
    // At once, then every RETRY (5 s): about 6 in 30 s, where the regular interval gives 1.
    assert!((5..=8).contains(&scans), "{scans} scans in 30 s");
}

#[test]
fn a_new_tunnel_that_never_answered_is_asked_anew_as_soon_as_its_gateway_answers_a_scan() {
    // The only gateway grants a session whose tunnel never carries a probe (a layer-2 path that
    // did not come up): keeping it for long would keep the subscriber offline.
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.dead.insert("fd00::1".into());
    let mut first = w.drive(Event::Start);
    first.extend(w.run_until(1.4));
    assert_eq!(
        registers_with(&first).len(),
        1,
        "{:?}",
        registers_with(&first)
    );
    let at = w
        .when(10.0, |e| matches!(e, Effect::Register { .. }))
        .expect("asked anew");
    // Down at 1.54 s (three misses after the first second), then one scan.
    assert!((1.5..=1.7).contains(&at), "asked anew at {at:.2} s");
}

#[test]
fn a_scan_asked_by_the_operator_leaves_a_degraded_subscriber_degraded() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    w.run_until(3.0);
    assert_eq!(w.core.state(), State::Degraded);
    let effects = w.drive(Event::ScanAsked);
    assert!(effects.iter().any(|e| matches!(e, Effect::Reply(_))));
    assert_eq!(w.core.state(), State::Degraded);
    assert!(registers_with(&effects).is_empty());
}

#[test]
fn a_degraded_subscriber_moves_as_soon_as_another_gateway_is_usable() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.dead.insert("fd00::1".into());
    w.found = vec![];
    w.run_until(w.t() + 1.0);
    assert_eq!(w.core.state(), State::Degraded);
    // gw2 answers the next scan.
    w.drive(Event::Scanned {
        found: Some(vec![answer("gw2", "fd00::2")]),
        background: true,
    });
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    assert_eq!(w.core.state(), State::Connected);
}

#[test]
fn a_lease_that_cannot_be_renewed_is_given_up_even_when_alone() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.renewal = RenewOutcome::Refused("unknown session".into());
    w.found = vec![];
    let effects = w.run_until(20.1);
    assert!(effects.iter().any(failover_hook));
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Release { link: Some(l), wait: false, .. } if l.name == "gw1")));
    assert_eq!(w.on_gateway(), None);
    assert_eq!(w.core.state(), State::Idle);
}

// --- rescue ranking ---

#[test]
fn offline_a_gateway_held_back_only_because_it_went_down_is_tried_again_when_it_answers_healthy() {
    let mut w = World::cold().connected_to_gw1_alone();
    w.renewal = RenewOutcome::Refused("unknown session".into());
    // It lost our session at 20 s and backs off for 2 s, but answers the scan that follows at
    // once as healthy: offline, any working gateway beats none.
    let effects = w.run_until(20.1);
    let lost = effects.iter().position(failover_hook).expect("lost");
    assert_eq!(registers_with(&effects[lost..]), [vec!["gw1"]]);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
}

#[test]
fn a_gateway_that_answers_busy_is_not_asked_again_before_its_retry_after() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.busy.insert("fd00::1".into(), Duration::from_secs(30));
    w.drive(Event::Start);
    w.run_until(0.1);
    w.busy.clear();
    // It answers scans at once and would take us now, but said "in 30 s".
    let at = w
        .when(60.0, |e| matches!(e, Effect::Register { .. }))
        .expect("asked again");
    assert!(at >= 30.0, "asked again after {at} s");
    w.run_until(w.t() + 1.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
}

#[test]
fn a_gateway_that_refused_our_registration_keeps_its_back_off_even_offline() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.refusing.insert("fd00::1".into());
    w.drive(Event::Start);
    w.run_until(0.1);
    w.refusing.clear();
    // Half a second later it answers a scan: still backing off (2 s after one failure).
    w.now = w.t0 + Duration::from_millis(500);
    let effects = w.drive(Event::ScanAsked);
    assert!(registers_with(&effects).is_empty());
    let at = w
        .when(10.0, |e| matches!(e, Effect::Register { .. }))
        .expect("asked again");
    assert!(at >= 2.0, "asked again after {at} s");
}

#[test]
fn a_gateway_nobody_answered_at_is_tried_again_as_soon_as_it_answers_a_scan() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.absent.insert("fd00::1".into());
    w.drive(Event::Start);
    w.run_until(0.1);
    w.absent.clear();
    w.now = w.t0 + Duration::from_millis(500);
    let effects = w.drive(Event::ScanAsked);
    assert_eq!(registers_with(&effects), [vec!["gw1"]]);
}

// --- hysteresis and failback ---

#[test]
fn a_working_gateway_is_left_only_for_a_clearly_better_one_stable_for_failback_after() {
    let mut w = World::cold();
    w.found = vec![answer("gw2", "fd00::2")];
    w.drive(Event::Start);
    w.run_until(2.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    // gw1 (preferred: clearly better) turns up at 2 s and keeps answering.
    w.found = vec![answer("gw1", "fd00::1"), answer("gw2", "fd00::2")];
    let mut moved_at = None;
    for _ in 0..10 {
        let found = Some(w.found.clone());
        w.drive(Event::Scanned {
            found,
            background: true,
        });
        if w.on_gateway().as_deref() == Some("gw1") {
            moved_at = Some(w.t());
            break;
        }
        let t = w.t() + 1.0;
        w.run_until(t);
    }
    let at = moved_at.expect("moved back");
    // Stable since 2 s, failback_after 5 s.
    assert!((7.0..8.5).contains(&at), "moved at {at}");
}

#[test]
fn a_failback_releases_the_old_gateway_and_is_noted() {
    let mut w = World::cold();
    w.found = vec![answer("gw2", "fd00::2")];
    w.drive(Event::Start);
    w.run_until(2.0);
    w.found = vec![answer("gw1", "fd00::1"), answer("gw2", "fd00::2")];
    w.drive(Event::Scanned {
        found: Some(w.found.clone()),
        background: true,
    });
    w.run_until(8.0);
    let effects = w.drive(Event::Scanned {
        found: Some(w.found.clone()),
        background: true,
    });
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Release { link: Some(l), wait: true, .. } if l.name == "gw2")));
    assert!(effects.iter().any(|e| matches!(e,
        Effect::NoteFailover { kind: "failback", to: Some(to), .. } if to == "gw1")));
}

#[test]
fn a_gateway_within_the_hysteresis_margin_never_takes_over() {
    let cfg = SubscriberConfig {
        failback_after: 5,
        ..SubscriberConfig::default()
    };
    let mut w = World::new(cfg, false);
    let mut slow = answer("gw2", "fd00::2");
    slow.rtt = Duration::from_millis(15);
    w.found = vec![slow.clone()];
    w.drive(Event::Start);
    w.run_until(2.0);
    // gw1 answers faster (5 ms against gw2's tunnel 10 ms): better, but by less than 10 points.
    let mut fast = answer("gw1", "fd00::1");
    fast.rtt = Duration::from_millis(5);
    w.found = vec![fast, slow];
    for _ in 0..30 {
        let found = Some(w.found.clone());
        w.drive(Event::Scanned {
            found,
            background: true,
        });
        let t = w.t() + 1.0;
        w.run_until(t);
    }
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

// --- hot standby ---

#[test]
fn hot_standby_keeps_a_second_lease_with_the_next_best_gateway() {
    let w = World::hot().connected_to_gw1();
    assert_eq!(w.standby().as_deref(), Some("gw2"));
}

#[test]
fn hot_standby_failover_is_one_rule_switch_to_the_standby() {
    let mut w = World::hot().connected_to_gw1();
    let standby_slot = w.core.links().find(|(_, l)| l.name == "gw2").unwrap().0;
    w.dead.insert("fd00::1".into());
    let mut effects = vec![];
    while !effects.iter().any(failover_hook) {
        assert!(w.t() < 10.0, "no failover");
        let t = w.t() + 0.1;
        effects = w.run_until(t);
    }
    let switch = effects
        .iter()
        .position(|e| *e == Effect::RouteVia(standby_slot))
        .expect("the rule switched to the standby");
    let first_register = effects
        .iter()
        .position(|e| matches!(e, Effect::Register { .. }));
    assert!(first_register.is_none_or(|r| r > switch));
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    assert_eq!(w.core.active(), Some(standby_slot));
}

#[test]
fn without_a_usable_standby_the_subscriber_scans_again_after_15_s_then_doubling() {
    let mut w = World::hot().connected_to_gw1();
    w.dead.insert("fd00::1".into());
    w.run_until(w.t() + 1.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    assert_eq!(w.standby(), None);
    let wait = (w.core.next_scan() - w.now).as_secs_f64();
    assert!((14.0..=15.0).contains(&wait), "next scan in {wait} s");
    // gw1 stays away: the next early scan comes after 30 s.
    w.found = vec![answer("gw2", "fd00::2")];
    let t = w.t() + wait + 0.01;
    w.run_until(t);
    let wait = (w.core.next_scan() - w.now).as_secs_f64();
    assert!((29.0..=30.0).contains(&wait), "next scan in {wait} s");
}

#[test]
fn a_hot_failback_to_the_standby_switches_the_rule_then_releases_the_old_gateway() {
    let mut w = World::hot();
    w.found = vec![answer("gw2", "fd00::2"), answer("gw1", "fd00::1")];
    // gw1 refuses at first: gw2 carries the traffic, and no standby is found.
    w.refusing.insert("fd00::1".into());
    w.drive(Event::Start);
    w.run_until(1.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
    w.refusing.clear();
    w.run_until(20.0); // the early rescan brings gw1 up as the standby
    assert_eq!(w.standby().as_deref(), Some("gw1"));
    let gw1_slot = w.core.links().find(|(_, l)| l.name == "gw1").unwrap().0;
    let mut effects = vec![];
    for _ in 0..10 {
        effects = w.drive(Event::Scanned {
            found: Some(w.found.clone()),
            background: true,
        });
        if w.on_gateway().as_deref() == Some("gw1") {
            break;
        }
        let t = w.t() + 1.0;
        w.run_until(t);
    }
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    let switch = effects
        .iter()
        .position(|e| *e == Effect::RouteVia(gw1_slot));
    let release = effects.iter().position(
        |e| matches!(e, Effect::Release { link: Some(l), wait: true, .. } if l.name == "gw2"),
    );
    assert!(switch.is_some() && release.is_some() && switch < release);
}

// --- renewal ---

#[test]
fn a_lease_is_renewed_after_a_third_of_its_time() {
    let mut w = World::cold();
    w.lease = 30;
    w = w.connected_to_gw1();
    let at = w
        .when(60.0, |e| matches!(e, Effect::Renew { .. }))
        .expect("renewed");
    assert!((10.0..10.3).contains(&at), "renewed at {at}");
}

#[test]
fn a_refused_renewal_fails_over_at_once() {
    let mut w = World::cold().connected_to_gw1();
    w.renewal = RenewOutcome::Refused("unknown session".into());
    let at = w.when(60.0, failover_hook).expect("failed over");
    assert!((20.0..20.3).contains(&at), "failed over at {at}");
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

#[test]
fn an_unreachable_gateway_is_asked_again_until_its_lease_is_about_to_run_out() {
    let mut w = World::cold().connected_to_gw1();
    w.renewal = RenewOutcome::Failed("timed out".into());
    let mut renewals = 0;
    let mut at = None;
    while w.t() < 70.0 {
        let t = w.t() + 0.5;
        let effects = w.run_until(t);
        renewals += effects
            .iter()
            .filter(|e| matches!(e, Effect::Renew { .. }))
            .count();
        if effects.iter().any(failover_hook) {
            at = Some(w.t());
            break;
        }
    }
    let at = at.expect("given up");
    // Lease of 60 s from about 0 s; given up once less than 5 s (RETRY) are left.
    assert!((55.0..=56.0).contains(&at), "given up at {at}");
    // Asked every 0.5 s from 20 s on.
    assert!(renewals > 60, "{renewals} renewals");
}

#[test]
fn a_short_lease_is_asked_again_for_a_while_after_its_first_renewal_fails() {
    let mut w = World::cold();
    w.lease = 8;
    let mut w = w.connected_to_gw1();
    let start = w.core.active_link().unwrap().renew_at - w.t0;
    w.renewal = RenewOutcome::Failed("connection refused".into());
    let mut at = None;
    while w.t() < 20.0 {
        let t = w.t() + 0.1;
        if w.run_until(t).iter().any(failover_hook) {
            at = Some(w.t());
            break;
        }
    }
    let (start, at) = (start.as_secs_f64(), at.expect("given up"));
    // Lease of 8 s: first renewal at 1/3, given up once less than 2 s (a quarter) are left,
    // not at the first retry (RETRY, 5 s, is more than what is left then).
    assert!(
        at - start >= 3.0,
        "given up {:.1} s after the first renewal",
        at - start
    );
    assert!(at <= 2.0 + 8.0 - 2.0 + 0.6, "given up at {at:.1} s");
}

#[test]
fn a_renewed_lease_is_saved_for_a_restart() {
    let mut w = World::cold().connected_to_gw1();
    let effects = w.run_until(21.0);
    assert!(effects.contains(&Effect::SetConnectionExpiry(60)));
    let renew_at = w.core.active_link().unwrap().renew_at;
    assert!(renew_at > w.t0 + Duration::from_secs(39));
}

// --- fail_closed and routing ---

#[test]
fn fail_closed_adds_the_prohibit_rule_and_hot_standby_the_mesh_rule() {
    let start = |closed: bool, hot: bool| {
        let cfg = SubscriberConfig {
            fail_closed: closed,
            ..SubscriberConfig::default()
        };
        Core::new(cfg, "sub", hot, Instant::now()).on(Event::Start, Instant::now())
    };
    assert_eq!(
        start(false, false),
        [Effect::SetUpRouting {
            mesh: None,
            prohibit: false
        }]
    );
    assert_eq!(
        start(true, false),
        [Effect::SetUpRouting {
            mesh: Some(0),
            prohibit: true
        }]
    );
    assert_eq!(
        start(false, true),
        [Effect::SetUpRouting {
            mesh: Some(1),
            prohibit: false
        }]
    );
}

#[test]
fn with_fail_closed_only_stopping_the_daemon_removes_the_rules() {
    let cfg = SubscriberConfig {
        fail_closed: true,
        ..prefer_gw1()
    };
    let mut w = World::new(cfg, false).connected_to_gw1();
    w.renewal = RenewOutcome::Refused("gone".into());
    let mut effects = w.run_until(60.0);
    effects.extend(w.drive(Event::DisconnectAsked));
    assert!(!effects.iter().any(|e| matches!(
        e,
        Effect::TearDownRouting | Effect::DropTunnelRule | Effect::SetUpRouting { .. }
    )));
    assert!(w.drive(Event::Stop).contains(&Effect::TearDownRouting));
    assert_eq!(w.core.state(), State::Stopped);
}

// --- operator and scans ---

#[test]
fn after_disconnect_the_subscriber_stays_offline_until_asked_to_scan() {
    let mut w = World::cold().connected_to_gw1();
    let effects = w.drive(Event::DisconnectAsked);
    assert!(effects.contains(&Effect::Reply(json!({"success": true, "left": "gw1"}))));
    assert_eq!(w.core.state(), State::Disconnected);
    assert_eq!(w.core.next_deadline(), None);
    let effects = w.run_until(1000.0);
    assert!(effects.is_empty());
    let effects = w.drive(Event::ScanAsked);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
    assert!(matches!(effects.last(), Some(Effect::Reply(v)) if v["success"] == true));
}

#[test]
fn while_connected_scans_run_in_the_background_and_offline_they_are_waited_for() {
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.drive(Event::Start);
    let first = w.drive(Event::Tick);
    assert!(first.contains(&Effect::Scan { background: false }));
    let later = w.run_until(301.0);
    assert!(later.contains(&Effect::Scan { background: true }));
    assert!(!later.contains(&Effect::Scan { background: false }));
}

#[test]
fn a_gateway_excluded_on_reload_is_left_and_another_one_sought() {
    let mut w = World::cold().connected_to_gw1();
    let mut cfg = prefer_gw1();
    cfg.exclude = vec!["gw1".into()];
    let effects = w.drive(Event::Reload {
        cfg: Box::new(cfg),
        prices: HashMap::new(),
    });
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Release { link: Some(l), wait: true, why, .. } if l.name == "gw1" && why == "it is excluded now")));
    w.run_until(w.t() + 0.1);
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

#[test]
fn a_gateway_whose_price_is_above_max_price_after_a_reload_is_left() {
    let mut w = World::cold().connected_to_gw1();
    let slot = w.core.active().unwrap();
    let reload = |w: &mut World, price: u64| {
        w.drive(Event::Reload {
            cfg: Box::new(prefer_gw1()),
            prices: HashMap::from([(slot, price)]),
        })
    };
    assert!(
        !reload(&mut w, 0)
            .iter()
            .any(|e| matches!(e, Effect::Release { .. }))
    );
    assert!(
        reload(&mut w, 3)
            .iter()
            .any(|e| matches!(e, Effect::Release { link: Some(_), .. }))
    );
}

#[test]
fn the_operators_connect_leaves_the_current_gateway_and_answers_with_the_new_one() {
    let mut w = World::cold().connected_to_gw1();
    let effects = w.drive(Event::ConnectAsked {
        answer: answer("gw2", "fd00::2"),
        methods: vec!["wireguard".into()],
    });
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Release { link: Some(l), wait: true, .. } if l.name == "gw1")));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Register { operator: true, .. }))
    );
    assert_eq!(
        effects.last(),
        Some(&Effect::Reply(json!({"success": true, "gateway": "gw2"})))
    );
    assert_eq!(w.on_gateway().as_deref(), Some("gw2"));
}

#[test]
fn the_status_shows_the_state_the_gateway_and_the_standby() {
    let w = World::hot().connected_to_gw1();
    let v = w.core.status(w.now);
    assert_eq!(v["state"], "connected");
    assert_eq!(v["gateway"]["name"], "gw1");
    assert_eq!(v["standby"]["name"], "gw2");
    assert_eq!(v["hotStandby"], true);
    assert_eq!(v["ranking"].as_array().unwrap().len(), 2);
}

#[test]
fn asking_for_an_unusable_gateway_still_turns_automatic_mode_back_on() {
    let mut w = World::cold().connected_to_gw1();
    w.drive(Event::DisconnectAsked);
    assert_eq!(w.core.next_deadline(), None);
    let effects = w.drive(Event::ConnectRefused(
        "fd00::9 did not answer nodeInfo".into(),
    ));
    assert!(matches!(effects.last(), Some(Effect::Reply(v)) if v["success"] == false));
    // Scanning (and connecting) again at the next regular scan.
    assert!(w.core.next_deadline().is_some());
    w.run_until(301.0);
    assert_eq!(w.on_gateway().as_deref(), Some("gw1"));
}

/// Runs up to `secs` after the start; when each registration was asked (s since the start).
fn registrations_at(w: &mut World, secs: f64) -> Vec<f64> {
    let mut times = vec![];
    each_tick(w, secs, |at, effects| {
        times.extend(std::iter::repeat_n(at, registers_with(effects).len()));
    });
    times
}

#[test]
fn the_only_gateway_whose_new_tunnels_never_answer_is_asked_anew_with_a_back_off() {
    // Its RPC answers, its tunnels never carry a packet (e.g. its WireGuard port blocked).
    let mut w = World::cold();
    w.found = vec![answer("gw1", "fd00::1")];
    w.dead.insert("fd00::1".into());
    let mut at = vec![];
    let start = w.drive(Event::Start);
    at.extend(std::iter::repeat_n(0.0, registers_with(&start).len()));
    at.extend(registrations_at(&mut w, 900.0));
    let gaps: Vec<f64> = at.windows(2).map(|p| p[1] - p[0]).collect();
    // The first FRUITLESS tunnels are asked for at once, one after the other.
    let quick = FRUITLESS as usize;
    assert!(gaps[..quick - 1].iter().all(|g| *g < 2.0), "{at:?}");
    // Then the back-off doubles (16 s after four failures, 32 s …, plus a tunnel's 1.5 s to
    // fail) up to 5 minutes.
    assert!((17.0..20.0).contains(&gaps[quick - 1]), "{at:?}");
    for pair in gaps[quick - 1..].windows(2) {
        let capped = pair[1] >= 300.0 && pair[1] <= 305.0;
        assert!(capped || pair[1] >= 1.7 * pair[0], "{at:?}");
    }
    assert!(
        at.len() <= 10,
        "{} registrations in 15 min: {at:?}",
        at.len()
    );
    // Its tunnels work again: the next one is kept, and the count starts over.
    w.dead.clear();
    let fixed = w.t();
    let next = w
        .when(fixed + 310.0, |e| matches!(e, Effect::Register { .. }))
        .expect("asked again");
    w.run_until(next + 30.0);
    assert_eq!(w.core.state(), State::Connected);
    w.dead.insert("fd00::1".into());
    let again = registrations_at(&mut w, next + 120.0);
    // Kept KEEP_SILENT for its restored session, then asked anew at once, several times.
    assert!(again.len() >= quick, "{again:?}");
    assert!(
        again[..quick].windows(2).all(|p| p[1] - p[0] < 2.0),
        "{again:?}"
    );
    assert!(
        again[0] - (next + 30.0) < KEEP_SILENT.as_secs_f64() + 7.0,
        "{again:?}"
    );
}
