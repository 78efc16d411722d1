//! The subscriber's decisions as a state machine without I/O: [`Core::on`] takes an [`Event`]
//! and the time, and returns the [`Effect`]s the caller must carry out, in order. The supervisor
//! (`supervisor.rs`) owns the thread, the channel, the tunnels, the store and the RPC client and
//! only executes effects.
//!
//! Some effects are questions — [`Effect::Register`], [`Effect::RouteVia`], [`Effect::Renew`],
//! [`Effect::Probe`] and a waited-for [`Effect::Scan`] — and always come last in their batch: the
//! caller answers with the matching event ([`Event::Registered`], [`Event::Routed`],
//! [`Event::Renewed`], [`Event::Probed`], [`Event::Scanned`]) and goes on with the effects that
//! returns. Between a question and its answer the core waits; what it still has to do is kept
//! as a queue of steps, so a decision taken after a registration sees its outcome exactly as the
//! code that used to call the RPC inline did.
//!
//! The rules (README, "Staying online"): a path is down after `down_after` probes in a row
//! without an answer, the ones after a miss sent at once (failures in the first [`GRACE`] of a
//! tunnel do not count), when its
//! lease cannot be renewed, or when the gateway says its uplink is unhealthy. Cold failover
//! releases the dead lease in the background and registers with the next best gateway of the
//! last scan; with nobody else usable the tunnel is kept (`degraded`). Hot standby switches the
//! tunnel rule to the standby's table, then seeks a new standby, scanning early while none is
//! usable ([`standby`]). A working gateway is left only for a clearly better one that has been
//! stable for `failback_after` ([`select::decide`]). Rankings come from [`select`], with the
//! rescue ranking while this node has no working gateway.

pub use super::events::{Effect, Event, Level, Link, NewLink, RegFailure, RenewOutcome, State};
use super::quality::Record;
use super::select::{self, Decision, History, Policy, Wants};
use super::{probe, standby};
use crate::config::SubscriberConfig;
use crate::discovery::Answer;
use crate::hooks;
use crate::json::{self, object};
use crate::protocol::Failure;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wait before scanning again after no gateway could be used; also how often a `degraded`
/// subscriber scans for somewhere to go.
pub const RETRY: Duration = Duration::from_secs(5);
/// How long a tunnel that answered before and fell silent is kept, as the only way out, while
/// its gateway answers scans as healthy: long enough for a restarted gateway to restore our
/// session and for WireGuard to shake hands again (it retries every 5 s); then the gateway is
/// asked anew, since a session it holds may still have a broken path.
pub const KEEP_SILENT: Duration = Duration::from_secs(15);
/// New tunnels in a row to one gateway that went down without ever carrying a probe's answer
/// (its method cannot come up from here, e.g. its port is blocked) before that gateway keeps
/// its back-off even as the only one ([`select::History::registration_failed`]): the first
/// ones are asked anew at once (a new layer-2 session sometimes does not come up, and the next
/// one does), later ones only as the back-off allows (doubling per failure from
/// `backoff_base_ms` up to `backoff_max_ms`: 16 s after the fourth, then 32 s … 5 min with the
/// shipped policy).
pub const FRUITLESS: u32 = 4;
/// Wait before scanning again while no gateway is usable (a lost one may be back soon).
pub const IDLE_RETRY: Duration = Duration::from_secs(2);
/// Probe failures right after a tunnel came up do not count (handshake time).
pub const GRACE: Duration = Duration::from_millis(1000);
/// How often a gateway's quality summary is written to the store.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// What an answer continues with.
#[derive(Debug)]
enum Wait {
    /// A blocking scan; then absorb it, or also answer the operator.
    Scan { reply: bool },
    /// `connect_first`'s registration in `slot`.
    Connect { slot: usize },
    /// Its route switch.
    ConnectRouted { slot: usize },
    /// The standby's registration in `slot`.
    Standby { slot: usize },
    /// Failback, hot: the better gateway's registration into the standby slot.
    FailBackRegistered(Box<Move>),
    /// Failback, hot: the switch to its slot.
    FailBackRouted(Box<Move>),
    /// Failback, cold: the better gateway's registration.
    FailBackCold(Box<Move>),
    /// Failover, hot: the switch to the standby.
    Promote(Box<Lost>),
    /// The operator's gateway's registration.
    Operator { name: String },
    /// Its route switch.
    OperatorRouted { name: String },
    /// The resumed session's route switch.
    Resumed,
    /// A renewal of `slot`.
    Renew(usize),
    /// A probe.
    Probe(Box<Probing>),
}

impl Wait {
    /// The variant's name, for a log line.
    fn name(&self) -> &'static str {
        match self {
            Wait::Scan { .. } => "Scan",
            Wait::Connect { .. } => "Connect",
            Wait::ConnectRouted { .. } => "ConnectRouted",
            Wait::Standby { .. } => "Standby",
            Wait::FailBackRegistered(_) => "FailBackRegistered",
            Wait::FailBackRouted(_) => "FailBackRouted",
            Wait::FailBackCold(_) => "FailBackCold",
            Wait::Promote(_) => "Promote",
            Wait::Operator { .. } => "Operator",
            Wait::OperatorRouted { .. } => "OperatorRouted",
            Wait::Resumed => "Resumed",
            Wait::Renew(_) => "Renew",
            Wait::Probe(_) => "Probe",
        }
    }
}

/// A failback under way.
#[derive(Debug)]
struct Move {
    slot: usize,
    old: usize,
    from: Option<String>,
    why: String,
    started: Instant,
}

/// A lost link being handled.
#[derive(Debug, Clone)]
struct Lost {
    slot: usize,
    name: String,
    why: String,
    started: Instant,
}

/// One link's probe in a round, as it was when the round began.
#[derive(Debug, Clone)]
struct Probing {
    slot: usize,
    id: String,
    name: String,
    interface: String,
    targets: Vec<IpAddr>,
    up_for: Duration,
}

/// Work still to do, in order.
#[derive(Debug)]
enum Step {
    Renew(usize),
    ProbeRoundIfDue,
    Probe(Box<Probing>),
    ScanIfDue,
    Absorb(Vec<Answer>),
    Reconsider,
    Connect(Vec<select::Choice>),
    RetryIfIdle,
    FillStandby,
    FailBack(Box<select::Choice>, String),
    LinkFailed(usize, String, bool),
    AfterLoss(Box<Lost>, bool),
    NoteFailover {
        from: Option<String>,
        why: String,
        kind: &'static str,
        started: Instant,
    },
    IdleIfNone,
    Reply(Value),
}

/// The subscriber's decision state.
#[derive(Debug)]
pub struct Core {
    cfg: SubscriberConfig,
    /// A lease and tunnel per slot (two with hot standby).
    slots: Vec<Option<Link>>,
    /// The slot carrying traffic.
    active: Option<usize>,
    state: State,
    last_error: Option<String>,
    auto: bool,
    scanning: bool,
    next_scan: Instant,
    next_probe: Instant,
    answers: Vec<Answer>,
    /// Per gateway identity ([`select::id`]), never per name.
    history: HashMap<String, History>,
    /// Probe windows per gateway identity.
    records: HashMap<String, Record>,
    saved: HashMap<String, Instant>,
    policy: Policy,
    seed: u64,
    /// The last early-scan delay while the hot standby slot stayed empty ([`standby`]).
    standby_rescan: Option<Duration>,
    /// Probe rounds so far (advertised uplink targets take turns, [`probe::plan`]).
    probe_rounds: u64,
    /// Probe packets sent per gateway identity in the last second.
    budgets: HashMap<String, probe::Budget>,
    epoch: Instant,
    now: Instant,
    steps: VecDeque<Step>,
    pending: Option<Wait>,
    out: Vec<Effect>,
}

impl Core {
    /// A subscriber named `name` (the seed of its draws), with two slots if `hot`.
    pub fn new(cfg: SubscriberConfig, name: &str, hot: bool, now: Instant) -> Core {
        let policy = Policy {
            failback_after_ms: u64::from(cfg.failback_after) * 1000,
            ..Policy::default()
        };
        Core {
            cfg,
            slots: vec![None; if hot { 2 } else { 1 }],
            active: None,
            state: State::Starting,
            last_error: None,
            auto: true,
            scanning: false,
            next_scan: now,
            next_probe: now,
            answers: Vec::new(),
            history: HashMap::new(),
            records: HashMap::new(),
            saved: HashMap::new(),
            policy,
            seed: select::seed_for(name),
            standby_rescan: None,
            probe_rounds: 0,
            budgets: HashMap::new(),
            epoch: now,
            now,
            steps: VecDeque::new(),
            pending: None,
            out: Vec::new(),
        }
    }

    // --- what the caller may read ---

    /// Whether there is a hot standby slot.
    pub fn hot(&self) -> bool {
        self.slots.len() > 1
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The slot carrying traffic.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// The link in slot `i`.
    pub fn link(&self, i: usize) -> Option<&Link> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    /// Every link with its slot.
    pub fn links(&self) -> impl Iterator<Item = (usize, &Link)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|l| (i, l)))
    }

    /// The link carrying traffic.
    pub fn active_link(&self) -> Option<&Link> {
        self.active.and_then(|i| self.link(i))
    }

    /// What we look for in a gateway.
    pub fn wants(&self) -> Wants {
        let s = &self.cfg;
        Wants {
            methods: s.methods.clone(),
            max_price: s.max_price,
            prefer: s.prefer.clone(),
            exclude: s.exclude.clone(),
        }
    }

    /// The history of gateway `id`.
    pub fn history(&self, id: &str) -> Option<&History> {
        self.history.get(id)
    }

    /// The last error.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the next scan is due.
    pub fn next_scan(&self) -> Instant {
        self.next_scan
    }

    /// The earliest deadline (renewal, probe round, scan), `None` if there is none.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Vec<Instant> = self.links().map(|(_, l)| l.renew_at).collect();
        if self.links().next().is_some() {
            next.push(self.next_probe);
        }
        next.extend(self.confirmations_due());
        if self.auto && !self.scanning {
            next.push(self.next_scan);
        }
        next.into_iter().min()
    }

    /// The status as `mnigs status --json` shows it under `subscriber` (without
    /// `lastFailover`, which the caller keeps).
    pub fn status(&self, now: Instant) -> Value {
        let mut v = object!({"enabled": true, "state": self.state.as_str(),
                             "lastError": self.last_error,
                             "gateway": Value::Null, "standby": Value::Null, "hotStandby": self.hot(),
                             "failClosed": self.cfg.fail_closed,
                             "scanInterval": self.cfg.scan_interval,
                             "maxPrice": self.cfg.max_price});
        let ranked = self.ranked();
        if let Some(c) = self.active_link() {
            v["gateway"] = self.link_json(c, &ranked, now);
            json::set(&mut v, "method", &c.grant.method);
            json::set(&mut v, "interface", &c.interface);
            json::set(&mut v, "ipv4", &c.grant.ipv4);
            json::set(&mut v, "ipv6", &c.grant.ipv6);
            json::set(&mut v, "connectedAt", &c.connected_at);
            json::set(
                &mut v,
                "leaseLeft",
                &c.expires.saturating_duration_since(now).as_secs(),
            );
        }
        if let Some((_, l)) = self.links().find(|(i, _)| Some(*i) != self.active) {
            v["standby"] = self.link_json(l, &ranked, now);
        }
        let ranked: Vec<Value> = ranked
            .iter()
            .map(|c| {
                object!({"name": c.answer.info.name, "address": select::id(&c.answer),
                              "score": c.score})
            })
            .collect();
        json::set(&mut v, "ranking", &ranked);
        v
    }

    fn link_json(&self, l: &Link, ranked: &[select::Choice], now: Instant) -> Value {
        let score = ranked
            .iter()
            .find(|c| select::id(&c.answer) == l.id())
            .map(|c| c.score);
        object!({"name": l.name, "address": l.gateway.ip().to_string(), "port": l.gateway.port(),
                 "method": l.grant.method, "interface": l.interface, "ipv4": l.grant.ipv4,
                 "score": score,
                 "quality": self.records.get(&l.id()).map(Record::summary),
                 "leaseLeft": l.expires.saturating_duration_since(now).as_secs()})
    }

    // --- the machine ---

    /// Takes in `event` at `now`; returns what to do, in order. A question effect comes last:
    /// answer it with its event before anything else.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        self.now = now;
        match self.pending.take() {
            Some(wait) => self.answer(wait, event),
            None => self.event(event),
        }
        while self.pending.is_none() {
            let Some(step) = self.steps.pop_front() else {
                break;
            };
            self.step(step);
        }
        std::mem::take(&mut self.out)
    }

    /// Whether the core waits for the answer to a question.
    pub fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Start => {
                let hot = self.hot();
                let closed = self.cfg.fail_closed;
                self.out.push(Effect::SetUpRouting {
                    mesh: (hot || closed).then_some(u8::from(hot)),
                    prohibit: closed,
                });
            }
            Event::Tick => {
                let now = self.now;
                let due: Vec<usize> = self
                    .links()
                    .filter(|(_, l)| now >= l.renew_at)
                    .map(|(i, _)| i)
                    .collect();
                let mut steps: Vec<Step> = due.into_iter().map(Step::Renew).collect();
                steps.extend([Step::ProbeRoundIfDue, Step::ScanIfDue]);
                self.call(steps);
            }
            Event::ScanAsked => {
                self.auto = true;
                // Asked for by the operator: everyone is asked again, silent or not.
                self.out.push(Effect::ForgetSilent);
                self.scan_now(true);
            }
            Event::Scanned {
                found,
                background: true,
            } => {
                self.scanning = false;
                if let Some(found) = found.filter(|_| self.auto) {
                    self.call(vec![Step::Absorb(found)]);
                }
            }
            Event::ConnectAsked { answer, methods } => {
                self.auto = true;
                self.leave_all("switching gateway");
                let name = answer.info.name.clone();
                self.register(
                    0,
                    vec![select::Choice {
                        answer,
                        methods,
                        score: 0.0,
                    }],
                    true,
                    Wait::Operator { name },
                );
            }
            Event::ConnectRefused(why) => {
                // Asking for a gateway turns automatic mode back on, even when it is refused.
                self.auto = true;
                self.out
                    .push(Effect::Reply(Failure::permanent(why).to_value()));
            }
            Event::DisconnectAsked => {
                let was = self.active_link().map(|c| c.name.clone());
                self.leave_all("disconnect requested");
                self.auto = false;
                self.state = State::Disconnected;
                self.out
                    .push(Effect::Reply(object!({"success": true, "left": was})));
            }
            Event::Stop => {
                self.leave_all("daemon stopping");
                self.out.push(Effect::TearDownRouting);
                self.state = State::Stopped;
                self.out.push(Effect::Publish);
            }
            Event::Reload { cfg, prices } => self.reload(*cfg, &prices),
            Event::Resumed(link) => {
                self.adopt(0, link);
                self.route_via(0, Wait::Resumed);
            }
            Event::Failed(why) => self.fail(why),
            // Answers without a question: nothing to continue.
            Event::Scanned { .. }
            | Event::Registered { .. }
            | Event::Routed(_)
            | Event::Renewed(_)
            | Event::Probed(_) => {}
        }
    }

    fn answer(&mut self, wait: Wait, event: Event) {
        match (wait, event) {
            (Wait::Scan { reply }, Event::Scanned { found, .. }) => {
                self.next_scan = self.now + self.scan_interval();
                // A degraded tunnel stays degraded until it answers or is left.
                self.state = match self.active {
                    None => State::Idle,
                    Some(_) if self.state == State::Degraded => State::Degraded,
                    Some(_) => State::Connected,
                };
                if reply {
                    // While a background scan holds the scanner, answer with the last results.
                    let found = found.unwrap_or_else(|| self.answers.clone());
                    let list: Vec<Value> = found.iter().map(answer_json).collect();
                    self.call(vec![
                        Step::Absorb(found),
                        Step::Reply(object!({"success": true, "gateways": list})),
                    ]);
                } else if let Some(found) = found {
                    self.call(vec![Step::Absorb(found)]);
                }
            }
            (Wait::Connect { slot }, Event::Registered { failures, link }) => {
                self.count_failures(&failures);
                if let Some(link) = link {
                    self.adopt(slot, link);
                    self.route_via(slot, Wait::ConnectRouted { slot });
                }
            }
            (Wait::ConnectRouted { slot }, Event::Routed(r)) => {
                if let Err(e) = r {
                    self.fail(format!("cannot switch routes: {e}"));
                }
                self.set_active(Some(slot));
            }
            (Wait::Standby { slot }, Event::Registered { failures, link }) => {
                self.count_failures(&failures);
                match link {
                    Some(link) => {
                        self.log(Level::Info, format!("hot standby up: {}", link.name));
                        self.adopt(slot, link);
                        self.standby_rescan = None;
                    }
                    None => self.rescan_for_standby(),
                }
            }
            (Wait::FailBackRegistered(m), Event::Registered { failures, link }) => {
                self.count_failures(&failures);
                if let Some(link) = link {
                    self.adopt(m.slot, link);
                    let slot = m.slot;
                    self.route_via(slot, Wait::FailBackRouted(m));
                }
            }
            (Wait::FailBackRouted(m), Event::Routed(r)) => match r {
                Err(e) => self.fail(format!("cannot switch routes: {e}")),
                Ok(()) => {
                    self.set_active(Some(m.slot));
                    self.release_slot(m.old, "failed back to a better gateway");
                    self.call(vec![Step::NoteFailover {
                        from: m.from,
                        why: m.why,
                        kind: "failback",
                        started: m.started,
                    }]);
                }
            },
            (Wait::FailBackCold(m), Event::Registered { failures, link }) => {
                self.count_failures(&failures);
                let note = Step::NoteFailover {
                    from: m.from,
                    why: m.why,
                    kind: "failback",
                    started: m.started,
                };
                match link {
                    Some(link) => {
                        self.adopt(0, link);
                        self.set_active(Some(0));
                        self.call(vec![note]);
                    }
                    None => {
                        let ranked = self.ranked();
                        self.call(vec![Step::Connect(ranked), note]);
                    }
                }
            }
            (Wait::Promote(lost), Event::Routed(r)) => {
                let j = self
                    .links()
                    .find(|(j, _)| *j != lost.slot)
                    .map_or(0, |(j, _)| j);
                match r {
                    Ok(()) => self.active = Some(j),
                    Err(e) => self.fail(format!("cannot switch to the standby: {e}")),
                }
                self.call(vec![Step::AfterLoss(lost, true)]);
            }
            (Wait::Operator { name }, Event::Registered { failures, link }) => {
                let last = failures.last().map(|f| f.msg.clone());
                self.count_failures(&failures);
                match link {
                    Some(link) => {
                        self.adopt(0, link);
                        self.route_via(0, Wait::OperatorRouted { name });
                    }
                    None => {
                        let e =
                            last.unwrap_or_else(|| format!("{name} offers none of our methods"));
                        self.out
                            .push(Effect::Reply(Failure::permanent(e).to_value()));
                    }
                }
            }
            (Wait::OperatorRouted { name }, Event::Routed(r)) => {
                if let Err(e) = r {
                    self.fail(format!("cannot switch routes: {e}"));
                }
                self.set_active(Some(0));
                self.call(vec![
                    Step::FillStandby,
                    Step::Reply(object!({"success": true, "gateway": name})),
                ]);
            }
            (Wait::Resumed, Event::Routed(r)) => {
                if let Err(e) = r {
                    self.fail(format!("cannot switch routes: {e}"));
                }
                self.set_active(Some(0));
            }
            (Wait::Renew(slot), Event::Renewed(outcome)) => self.renewed(slot, outcome),
            (Wait::Probe(p), Event::Probed(rtt)) => self.probed(*p, rtt),
            (wait, Event::Failed(why)) => {
                self.fail(why);
                self.pending = Some(wait);
            }
            (wait, event) => {
                // A bug in the caller: keep waiting rather than lose the continuation.
                self.log(
                    Level::Warn,
                    format!(
                        "subscriber core: {} while waiting for {}",
                        event.name(),
                        wait.name()
                    ),
                );
                self.pending = Some(wait);
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Renew(slot) => {
                if let Some(l) = self.link(slot) {
                    let (gateway, sid) = (l.gateway, l.grant.sid.clone());
                    self.out.push(Effect::Renew { slot, gateway, sid });
                    self.pending = Some(Wait::Renew(slot));
                }
            }
            Step::ProbeRoundIfDue => {
                let regular = self.links().next().is_some() && self.now >= self.next_probe;
                if regular {
                    self.next_probe = self.now + self.probe_interval();
                }
                self.probe_round(regular);
            }
            Step::Probe(p) => {
                let answered = self.link(p.slot).is_some_and(|l| l.last_answer.is_some());
                let slowest = self.records.get(&p.id).and_then(Record::slowest_recent);
                let timeout = probe::timeout(slowest.filter(|_| answered), self.probe_interval());
                let per_target =
                    (timeout / p.targets.len().max(1) as u32).max(Duration::from_millis(20));
                self.out.push(Effect::Probe {
                    slot: p.slot,
                    method: self.link(p.slot).map(|l| l.grant.method.clone()),
                    interface: p.interface.clone(),
                    targets: p.targets.clone(),
                    timeout,
                    per_target,
                });
                self.pending = Some(Wait::Probe(p));
            }
            Step::ScanIfDue => {
                if self.auto && !self.scanning && self.now >= self.next_scan {
                    if self.active.is_none() {
                        // Nothing to lose by waiting: scan in this thread and connect right away.
                        self.scan_now(false);
                    } else {
                        self.scanning = true;
                        self.next_scan = self.now + self.scan_interval();
                        self.out.push(Effect::Scan { background: true });
                    }
                }
            }
            Step::Absorb(found) => self.absorb(found),
            Step::Reconsider => self.reconsider(),
            Step::Connect(ranked) => self.connect_first(&ranked),
            Step::RetryIfIdle => {
                if self.active.is_none() {
                    self.next_scan = self.now + IDLE_RETRY;
                }
            }
            Step::FillStandby => self.fill_standby(),
            Step::FailBack(choice, why) => self.fail_back(*choice, why),
            Step::LinkFailed(slot, why, keep) => self.link_failed(slot, why, keep),
            Step::AfterLoss(lost, was_active) => self.after_loss(*lost, was_active),
            Step::NoteFailover {
                from,
                why,
                kind,
                started,
            } => {
                let to = self.active_link().map(|l| l.name.clone());
                self.out.push(Effect::NoteFailover {
                    kind,
                    from,
                    to,
                    reason: why,
                    duration: self.now.saturating_duration_since(started),
                });
            }
            Step::IdleIfNone => {
                if self.active.is_none() {
                    self.state = State::Idle;
                    self.next_scan = self.now;
                }
            }
            Step::Reply(v) => self.out.push(Effect::Reply(v)),
        }
    }

    /// Runs `steps` before everything already queued.
    fn call(&mut self, steps: Vec<Step>) {
        for s in steps.into_iter().rev() {
            self.steps.push_front(s);
        }
    }

    fn log(&mut self, level: Level, msg: String) {
        self.out.push(Effect::Log(level, msg));
    }

    fn fail(&mut self, why: String) {
        self.log(Level::Warn, why.clone());
        self.last_error = Some(why);
    }

    fn now_ms(&self) -> u64 {
        self.now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn probe_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.cfg.probe_interval_ms))
    }

    fn scan_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.scan_interval))
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    fn reload(&mut self, cfg: SubscriberConfig, prices: &HashMap<usize, u64>) {
        self.cfg = cfg;
        self.policy.failback_after_ms = u64::from(self.cfg.failback_after) * 1000;
        // A shorter interval counts from now, not from the last scan's old schedule.
        self.next_scan = self.next_scan.min(self.now + self.scan_interval());
        let max_price = self.cfg.max_price;
        let unwanted: Vec<(usize, String)> = self
            .links()
            .filter_map(|(i, l)| {
                let id = l.id();
                if self.cfg.exclude.iter().any(|e| *e == l.name || *e == id) {
                    return Some((i, "it is excluded now".to_string()));
                }
                let price = *prices.get(&i)?;
                (price > u64::from(max_price)).then(|| {
                    (
                        i,
                        format!("its price {price} is above max_price {max_price} now"),
                    )
                })
            })
            .collect();
        for (i, why) in unwanted {
            self.release_slot(i, &why);
        }
        if self.active.is_none() && self.auto {
            self.next_scan = self.now;
        }
    }

    /// Scans and waits for the answer; `reply`: the operator asked.
    fn scan_now(&mut self, reply: bool) {
        if self.active.is_none() {
            self.state = State::Scanning;
            self.out.push(Effect::Publish);
        }
        self.out.push(Effect::Scan { background: false });
        self.pending = Some(Wait::Scan { reply });
    }

    /// Takes in a scan's results: stores the gateways, updates their history, acts on what a
    /// connected gateway says about itself, then connects, fills the standby or fails back.
    fn absorb(&mut self, mut found: Vec<Answer>) {
        crate::discovery::nodes::assign(&mut found);
        for l in self.slots.iter_mut().flatten() {
            if let Some(a) = found.iter().find(|a| a.candidate.address == l.gateway.ip()) {
                l.node = a.node;
            }
        }
        let t = self.now_ms();
        self.out.push(Effect::StoreGateways(found.clone()));
        let answered: Vec<String> = found.iter().map(select::id).collect();
        for (id, h) in self.history.iter_mut() {
            if !answered.contains(id) {
                h.stable_since_ms = None;
            }
        }
        for a in &found {
            let h = self.history.entry(select::id(a)).or_default();
            if a.info.uplink.healthy {
                // Answering again: no longer down (its back-off still applies).
                h.down = false;
                h.stable_since_ms.get_or_insert(t);
            } else {
                h.stable_since_ms = None;
            }
        }
        self.answers = found;
        let mut steps: Vec<Step> = self
            .links()
            .filter(|(_, l)| {
                self.answers
                    .iter()
                    .any(|a| select::id(a) == l.id() && !a.info.uplink.healthy)
            })
            .map(|(i, l)| {
                let why = format!("{} reports its uplink unhealthy", l.name);
                Step::LinkFailed(i, why, true)
            })
            .collect();
        steps.push(Step::Reconsider);
        self.call(steps);
    }

    fn ranked(&self) -> Vec<select::Choice> {
        self.rank_by(select::rank)
    }

    /// [`Self::ranked`], or when that is empty [`select::rank_for_rescue`]: for when we have
    /// no working gateway and any usable one is better than none.
    fn ranked_or_rescue(&self) -> Vec<select::Choice> {
        let ranked = self.ranked();
        if ranked.is_empty() {
            self.rank_by(select::rank_for_rescue)
        } else {
            ranked
        }
    }

    fn rank_by(&self, rank: RankFn) -> Vec<select::Choice> {
        // A gateway we hold a lease with counts us among its subscribers; without taking us out
        // it would look busier (or full) than the others just because we use it, and we would
        // keep moving between equal gateways.
        let ours: Vec<String> = self.links().map(|(_, l)| l.id()).collect();
        let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
        let answers = select::without_us(&self.answers, &ours);
        rank(
            &answers,
            &select::for_nodes(&self.wants(), &answers),
            &self.history,
            self.now_ms(),
            &self.policy,
            self.seed,
        )
    }

    /// Connects if not connected, fails back to a clearly better gateway, keeps a standby.
    fn reconsider(&mut self) {
        let ranked = if self.active.is_none() || self.state == State::Degraded {
            self.ranked_or_rescue()
        } else {
            self.ranked()
        };
        if self.active.is_none() {
            if ranked.is_empty() {
                self.fail(format!(
                    "no usable gateway among {} found",
                    self.answers.len()
                ));
                self.next_scan = self.now + IDLE_RETRY;
                self.state = State::Idle;
                return;
            }
            self.call(vec![
                Step::Connect(ranked),
                Step::RetryIfIdle,
                Step::FillStandby,
            ]);
            return;
        }
        if self.state == State::Degraded {
            if let Some(i) = self.active {
                match self.why_leave_degraded(i, &ranked) {
                    Some(why) => self.call(vec![Step::LinkFailed(i, why, false)]),
                    None => self.next_scan = self.next_scan.min(self.now + RETRY),
                }
            }
        } else if let Some(current) = self.active_link().map(Link::id) {
            let score = ranked
                .iter()
                .find(|c| select::id(&c.answer) == current)
                .map(|c| c.score);
            if let Some(score) = score {
                let d = select::decide(
                    Some((&current, score)),
                    &ranked,
                    &self.history,
                    self.now_ms(),
                    &self.policy,
                );
                if let Decision::Move(i, why) = d {
                    let choice = Box::new(ranked[i].clone());
                    self.call(vec![Step::FailBack(choice, why), Step::FillStandby]);
                    return;
                }
            }
        }
        self.call(vec![Step::FillStandby]);
    }

    /// Asks to register in `slot` with the first of `choices` that works, continuing with `then`.
    fn register(&mut self, slot: usize, choices: Vec<select::Choice>, operator: bool, then: Wait) {
        if self.active.is_none() {
            self.state = State::Connecting;
            self.out.push(Effect::Publish);
        }
        self.out.push(Effect::Register {
            slot,
            choices,
            operator,
        });
        self.pending = Some(then);
    }

    /// Whether slot `i` has somewhere else to go: another tunnel, or a usable gateway other
    /// than its own (the rescue ranking may list its own again, healthy by its own word: moving
    /// "to" it would only register anew).
    fn elsewhere(&self, i: usize, ranked: &[select::Choice]) -> bool {
        let Some(id) = self.link(i).map(Link::id) else {
            return false;
        };
        self.links().any(|(j, _)| j != i) || ranked.iter().any(|c| select::id(&c.answer) != id)
    }

    /// Why the degraded tunnel in slot `i` goes now, or `None` to keep it: another gateway is
    /// usable, or its own gateway answered a scan as healthy while the tunnel never answered
    /// (a new session that did not come up: asking anew is its best chance), or has been
    /// silent for [`KEEP_SILENT`] (the gateway holds our session, but its path is broken).
    fn why_leave_degraded(&self, i: usize, ranked: &[select::Choice]) -> Option<String> {
        if self.elsewhere(i, ranked) {
            return Some("still down, and another gateway is usable".into());
        }
        let l = self.link(i)?;
        if !ranked.iter().any(|c| select::id(&c.answer) == l.id()) {
            return None;
        }
        let Some(last) = l.last_answer else {
            return Some(format!(
                "{} answers as healthy, but its new tunnel never did: asking it anew",
                l.name
            ));
        };
        let silent = self.now.saturating_duration_since(last);
        (silent >= KEEP_SILENT).then(|| {
            format!(
                "{} answers as healthy, but its tunnel has been silent for {} s: asking it anew",
                l.name,
                silent.as_secs()
            )
        })
    }

    /// Registers with the first choice that works, into the active slot (slot 0 in cold mode,
    /// else any free slot).
    fn connect_first(&mut self, ranked: &[select::Choice]) {
        let busy: Vec<String> = self.links().map(|(_, l)| l.id()).collect();
        let choices: Vec<select::Choice> = ranked
            .iter()
            .filter(|c| !busy.contains(&select::id(&c.answer)))
            .cloned()
            .collect();
        let Some(slot) = self.free_slot() else { return };
        if !choices.is_empty() {
            self.register(slot, choices, false, Wait::Connect { slot });
        }
    }

    /// Hot standby: a second tunnel to the best gateway other than the active one.
    fn fill_standby(&mut self) {
        if !self.hot() || self.active.is_none() {
            return;
        }
        let Some(slot) = self.free_slot() else { return };
        // Not the gateway in use, nor (most likely the same node) another address by its name.
        let busy: Vec<(String, String)> = self
            .links()
            .map(|(_, l)| (l.id(), l.name.clone()))
            .collect();
        let choices: Vec<select::Choice> = self
            .ranked()
            .into_iter()
            .filter(|c| {
                let (id, name) = (select::id(&c.answer), &c.answer.info.name);
                !busy.iter().any(|(i, n)| *i == id || n == name)
            })
            .collect();
        if choices.is_empty() {
            self.rescan_for_standby();
        } else {
            self.register(slot, choices, false, Wait::Standby { slot });
        }
    }

    /// No standby usable now (the one just left may be back soon): scan early, backing off.
    fn rescan_for_standby(&mut self) {
        let delay = standby::next_rescan(self.standby_rescan, self.scan_interval());
        self.standby_rescan = Some(delay);
        self.next_scan = self.next_scan.min(self.now + delay);
        self.log(
            Level::Debug,
            format!(
                "no hot standby: scanning again within {} s",
                delay.as_secs()
            ),
        );
    }

    /// Moves to a clearly better gateway: hot standby switches to it (bringing it up in the
    /// standby slot first if it is not the standby); cold leaves the current one first.
    fn fail_back(&mut self, choice: select::Choice, why: String) {
        let started = self.now;
        let Some(old) = self.active else { return };
        let from = self.link(old).map(|l| l.name.clone());
        let target_id = select::id(&choice.answer);
        self.log(
            Level::Info,
            format!(
                "moving to {} at {target_id}: {why}",
                choice.answer.info.name
            ),
        );
        if self.hot() {
            let standby = self
                .links()
                .find(|(_, l)| l.id() == target_id)
                .map(|(i, _)| i);
            match standby {
                Some(slot) => {
                    let m = Move {
                        slot,
                        old,
                        from,
                        why,
                        started,
                    };
                    self.route_via(slot, Wait::FailBackRouted(Box::new(m)));
                }
                None => {
                    // Replace the standby by the better gateway, then switch to it.
                    let other = 1 - old;
                    self.release_slot(other, "replaced by a better gateway");
                    let m = Move {
                        slot: other,
                        old,
                        from,
                        why,
                        started,
                    };
                    self.register(
                        other,
                        vec![choice],
                        false,
                        Wait::FailBackRegistered(Box::new(m)),
                    );
                }
            }
        } else {
            self.release_slot(old, "moving to a better gateway");
            self.set_active(None);
            let m = Move {
                slot: 0,
                old,
                from,
                why,
                started,
            };
            self.register(0, vec![choice], false, Wait::FailBackCold(Box::new(m)));
        }
    }

    /// Points the tunnel rule at `slot`'s table (hot standby only), continuing with `then`.
    fn route_via(&mut self, slot: usize, then: Wait) {
        self.pending = Some(then);
        if self.hot() {
            self.out.push(Effect::RouteVia(slot));
        } else {
            let wait = self.pending.take().expect("just set");
            self.answer(wait, Event::Routed(Ok(())));
        }
    }

    /// Slot `i`'s path is down: count it against the gateway, drop the tunnel and, if it carried
    /// the traffic, fail over (hot: switch to the standby; cold: register with the next best).
    ///
    /// With `keep_if_alone` (the path is down but the lease is not lost) and no other gateway to
    /// go to, the tunnel is kept and probed on: the subscriber is `degraded` until the probes
    /// answer again (e.g. the gateway restarted and restored our session), another gateway
    /// turns up, or its own gateway answers a scan while the tunnel stays silent
    /// ([`Self::why_leave_degraded`]) — tearing down the only tunnel would win nothing.
    fn link_failed(&mut self, i: usize, why: String, keep_if_alone: bool) {
        let started = self.now;
        let Some((id, name, gateway)) = self.link(i).map(|l| (l.id(), l.name.clone(), l.gateway))
        else {
            return;
        };
        let already_down = self.history.get(&id).is_some_and(|h| h.down);
        // A tunnel kept while degraded counted its failure when it first went down: found down
        // again after a scan, or given up, it counts no more.
        let kept = self.state == State::Degraded && self.active == Some(i);
        if !already_down {
            if kept && keep_if_alone {
                // Still down, seen again after a scan: said when it went down.
                self.log(Level::Debug, why.clone());
                self.last_error = Some(why.clone());
            } else {
                self.fail(why.clone());
            }
            let t = self.now_ms();
            let h = self.history.entry(id.clone()).or_default();
            h.down = true;
            if !kept {
                h.failures = h.failures.saturating_add(1);
            }
            h.last_failure_ms = Some(t);
            h.registration_failed = false;
            h.stable_since_ms = None;
            self.out.push(Effect::CountFailure(gateway));
            self.save_quality(&id, &name, Some(&why));
        }
        let was_active = self.active == Some(i);
        if was_active && keep_if_alone && !self.elsewhere(i, &self.ranked_or_rescue()) {
            if self.state != State::Degraded {
                self.log(
                    Level::Warn,
                    format!(
                        "{name} is down and no other gateway is usable: keeping its tunnel, probing on"
                    ),
                );
                self.state = State::Degraded;
                self.next_scan = self.now;
            }
            return;
        }
        // Given up. Gone down while we used it, the gateway's back-off is eased when we have no
        // other, unless its new tunnels keep carrying nothing.
        let never = self.link(i).is_some_and(|l| l.last_answer.is_none());
        let h = self.history.entry(id.clone()).or_default();
        if never {
            // (A tunnel's first answer set it back to 0.)
            h.fruitless = h.fruitless.saturating_add(1);
        }
        if h.fruitless >= FRUITLESS {
            h.registration_failed = true;
        }
        if let Some(l) = self.link(i).cloned() {
            // Lost, not left: no release hook (the lease is released in the background).
            self.out.push(Effect::Hook(
                hooks::Event::Disconnect,
                Box::new(l.clone()),
                why.clone(),
            ));
            if was_active {
                self.out.push(Effect::Hook(
                    hooks::Event::Failover,
                    Box::new(l),
                    why.clone(),
                ));
            }
        }
        let lost = Lost {
            slot: i,
            name,
            why,
            started,
        };
        if was_active {
            self.set_active(None);
            let standby = self.links().find(|(j, _)| *j != i).map(|(j, _)| j);
            if let Some(j) = standby {
                self.route_via(j, Wait::Promote(Box::new(lost)));
                return;
            }
        }
        self.after_loss(lost, was_active);
    }

    /// The rest of [`Self::link_failed`] once the standby (if any) carries the traffic.
    fn after_loss(&mut self, lost: Lost, was_active: bool) {
        let Lost {
            slot: i,
            name,
            why,
            started,
        } = lost;
        // Released in the background: a dead gateway must not hold up the failover.
        self.release_slot_async(i);
        let mut steps = vec![];
        if was_active {
            if self.active.is_none() {
                // Other addresses under the lost gateway's name are most likely the same node:
                // tried last (only the order; their own records are untouched).
                let (mut ranked, same): (Vec<_>, Vec<_>) = self
                    .ranked_or_rescue()
                    .into_iter()
                    .partition(|c| c.answer.info.name != name);
                ranked.extend(same);
                steps.push(Step::Connect(ranked));
            }
            steps.push(Step::NoteFailover {
                from: Some(name),
                why,
                kind: "failover",
                started,
            });
            steps.push(Step::IdleIfNone);
        }
        steps.push(Step::FillStandby);
        self.call(steps);
    }

    fn count_failures(&mut self, failures: &[RegFailure]) {
        for f in failures {
            self.fail(f.msg.clone());
            let t = self.now_ms();
            let h = self.history.entry(select::id(&f.answer)).or_default();
            h.failures = h.failures.saturating_add(1);
            h.last_failure_ms = Some(t);
            h.stable_since_ms = None;
            h.registration_failed = !f.unreachable;
            if let Some(wait) = f.busy_for {
                // Busy for every method: not asked again before its Retry-After.
                let wait = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                h.busy_until_ms = Some(t.saturating_add(wait));
            }
            self.out
                .push(Effect::CountFailure(f.answer.candidate.socket()));
        }
    }

    fn adopt(&mut self, slot: usize, new: NewLink) {
        let lease = Duration::from_secs(u64::from(new.lease.max(3)));
        let node = self
            .answers
            .iter()
            .find(|a| a.candidate.address == new.gateway.ip())
            .and_then(|a| a.node);
        if let Some(r) = self
            .records
            .get_mut(&node.unwrap_or(new.gateway.ip()).to_string())
        {
            r.restart_streak();
        }
        self.slots[slot] = Some(Link {
            gateway: new.gateway,
            node,
            name: new.name,
            grant: new.grant,
            interface: new.interface,
            connected_at: new.connected_at,
            up_since: self.now,
            expires: self.now + lease,
            renew_at: self.now + lease / 3,
            last_answer: None,
        });
        self.next_probe = self.next_probe.min(self.now + self.probe_interval());
        self.last_error = None;
    }

    /// Makes slot `slot` the one carrying traffic and saves its connection for a restart (or
    /// forgets the saved one when there is none).
    fn set_active(&mut self, slot: Option<usize>) {
        self.active = slot;
        match slot {
            Some(i) => {
                self.state = State::Connected;
                if let Some(l) = self.link(i).cloned() {
                    self.out.push(Effect::SaveConnection(Box::new(l)));
                }
            }
            None => self.out.push(Effect::ForgetConnection),
        }
    }

    /// Releases slot `i`'s lease (waiting) and takes its tunnel down.
    fn release_slot(&mut self, i: usize, why: &str) {
        let link = self.slots[i].take();
        if let Some(c) = &link {
            self.log(Level::Info, format!("leaving {}: {why}", c.name));
        }
        self.out.push(Effect::Release {
            slot: i,
            link: link.map(Box::new),
            why: why.to_string(),
            wait: true,
        });
        if self.active == Some(i) {
            self.set_active(None);
        }
    }

    /// Takes slot `i`'s tunnel down now and releases its lease from a helper thread.
    fn release_slot_async(&mut self, i: usize) {
        let link = self.slots[i].take();
        self.out.push(Effect::Release {
            slot: i,
            link: link.map(Box::new),
            why: String::new(),
            wait: false,
        });
        if self.active == Some(i) {
            self.set_active(None);
        }
    }

    /// Releases every lease and takes every tunnel down.
    fn leave_all(&mut self, why: &str) {
        for i in 0..self.slots.len() {
            self.release_slot(i, why);
        }
        self.out.push(Effect::TunnelsDown);
        self.out.push(Effect::ForgetConnection);
        if self.hot() {
            self.out.push(Effect::DropTunnelRule);
        }
        self.set_active(None);
        self.state = State::Idle;
    }
}

/// [`select::rank`] or [`select::rank_for_rescue`].
type RankFn = fn(
    &[Answer],
    &select::Wants,
    &HashMap<String, select::History>,
    u64,
    &select::Policy,
    u64,
) -> Vec<select::Choice>;

/// A found gateway as the control RPC lists it.
pub fn answer_json(a: &Answer) -> Value {
    object!({"name": a.info.name, "address": a.candidate.address.to_string(), "port": a.candidate.port,
             "how": a.candidate.how, "rttMs": a.rtt.as_secs_f64() * 1000.0, "methods": a.info.methods,
             "terms": a.info.terms, "uplink": a.info.uplink})
}

#[path = "core_health.rs"]
mod health;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
