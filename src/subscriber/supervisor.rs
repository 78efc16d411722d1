//! The subscriber's state machine, on its own thread: scan → rank → register → connect → probe →
//! renew, and fail over when the path goes down. Commands from the control RPC and the results of
//! background scans arrive on one channel; between them the thread sleeps until its next deadline
//! (renewal, probe round, scan).
//!
//! # Failover
//! A tunnel lives in a *slot* (its own set of method instances, interface and routing table).
//! Cold (default): one slot; when the path is down the tunnel goes and the next best gateway of
//! the last scan is registered with at once (no rescan in between). Hot standby: two slots; the
//! second keeps a lease and tunnel to the next best gateway, each tunnel's Internet routes live in
//! its own table ([`policy`]), and failover is one rule switch, after which a new standby is found.
//!
//! The path is **down** when the probes through it (ICMP echo to `probe_target`s, else to the
//! uplink targets the gateway advertises, else to the gateway's tunnel address: [`probe`])
//! failed `down_after` intervals in a row, when the lease cannot be
//! renewed, or when the gateway says its uplink is unhealthy.

use super::probe;
use super::quality::Record;
use super::select::{self, Decision, History, Policy, Wants};
use super::standby;
use super::trust;
use crate::clock::now;
use crate::config::Config;
use crate::discovery::{Answer, Candidate, Scanner};
use crate::hooks::{self, Event, HookEnv, session_env};
use crate::log;
use crate::protocol::{ConnectionRequest, Failure, Grant, NodeInfo, Renewal, outcome};
use crate::rpc::client::{self, ClientError};
use crate::store::{ConnectionRow, GatewayRow, QualityRow, Store};
use crate::sys::icmp;
use crate::sys::net::policy;
use crate::tunnel::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time allowed for one registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before scanning again after no gateway could be used.
const RETRY: Duration = Duration::from_secs(5);
/// Wait before scanning again while no gateway is usable (a lost one may be back soon).
const IDLE_RETRY: Duration = Duration::from_secs(2);
/// Gateways we have held a lease with, asked again at every scan even if discovery misses them.
const REMEMBERED: usize = 16;
/// Gateways kept in the store at most (the most recently seen): with `nodeInfo` answers capped
/// at [`trust::MAX_NODE_INFO`], the table stays under a few MB whatever a mesh announces.
const MAX_STORED_GATEWAYS: usize = 256;
/// Probe failures right after a tunnel came up do not count (handshake time).
const GRACE: Duration = Duration::from_millis(1000);
/// How often a gateway's quality summary is written to the store.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// A request from the control RPC (the answer goes back on the enclosed sender), or a result of
/// the supervisor's own background work.
pub enum Command {
    /// Scan now and connect if not connected.
    Scan(Sender<Value>),
    /// Connect to this gateway (leaving the current one).
    Connect {
        address: IpAddr,
        port: u16,
        method: Option<String>,
        reply: Sender<Value>,
    },
    /// Leave the gateway and stay offline until `Scan` or `Connect`.
    Disconnect(Sender<Value>),
    /// Leave the gateway and end the thread.
    Shutdown(Sender<Value>),
    /// Run with this configuration from now on (SIGHUP; the daemon has already kept the
    /// restart-only options at their running values). Tunnels stay up unless their gateway is no
    /// longer acceptable (price above `max_price`, or excluded).
    Reload(Box<Config>, Sender<Value>),
    /// Internal: the gateways a background scan found (`None`: it did not run).
    Scanned(Option<Vec<Answer>>),
}

/// One lease with its tunnel.
struct Link {
    gateway: SocketAddr,
    name: String,
    grant: Grant,
    interface: String,
    connected_at: i64,
    up_since: Instant,
    expires: Instant,
    renew_at: Instant,
}

impl Link {
    /// The gateway's identity ([`select::id`]): the mesh address we reach it at.
    fn id(&self) -> String {
        self.gateway.ip().to_string()
    }

    /// The hook variables describing this session.
    fn env(&self) -> HookEnv {
        session_env(&self.name, self.gateway, &self.grant, Some(&self.interface))
    }
}

/// Method instances with their own interfaces, and the routing table their routes go to.
struct Slot {
    methods: Vec<Box<dyn Method>>,
    table: u32,
    link: Option<Link>,
}

/// The subscriber role's state.
pub struct Supervisor {
    cfg: Config,
    store: Arc<Mutex<Store>>,
    slots: Vec<Slot>,
    /// The slot carrying traffic.
    active: Option<usize>,
    /// The table the tunnel rule points at (hot standby).
    rule_table: Option<u32>,
    status: Arc<Mutex<Value>>,
    tx: Sender<Command>,
    auto: bool,
    scanning: bool,
    next_scan: Instant,
    next_probe: Instant,
    state: &'static str,
    last_error: Option<String>,
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
    epoch: Instant,
    last_failover: Option<Value>,
    /// One scan at a time, shared with the background scans. Silent candidates are skipped by
    /// the background scans for `negative_cache` seconds; gateways we registered with
    /// (`remembered`) are always asked.
    scanner: Arc<Scanner>,
    /// Gateways we registered with, newest last (at most [`REMEMBERED`]): a gateway reached by
    /// `connect` or lost during a restart is found again even where discovery does not see it.
    remembered: Vec<Candidate>,
    /// The address the operator asked for with `connect`: its key may replace the pinned one.
    operator_asked: Option<IpAddr>,
}

/// A handle to the supervisor thread.
pub struct Handle {
    /// Sends commands to the thread.
    pub tx: Sender<Command>,
    /// The latest status, as `mnigs status --json` shows it under `subscriber`.
    pub status: Arc<Mutex<Value>>,
    thread: std::thread::JoinHandle<()>,
}

impl Handle {
    /// Sends a command built around a reply channel and waits for the answer.
    pub fn ask(&self, make: impl FnOnce(Sender<Value>) -> Command) -> Value {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(make(tx)).is_err() {
            return json!({"success": false, "errorMsg": "subscriber is not running"});
        }
        rx.recv()
            .unwrap_or_else(|_| json!({"success": false, "errorMsg": "subscriber stopped"}))
    }

    /// Leaves the gateway and waits for the thread to end.
    pub fn shutdown(self) {
        let _ = self.ask(Command::Shutdown);
        let _ = self.thread.join();
    }
}

impl Supervisor {
    /// Starts the supervisor thread with one tunnel slot (cold failover).
    pub fn spawn(cfg: Config, store: Arc<Mutex<Store>>, methods: Vec<Box<dyn Method>>) -> Handle {
        Supervisor::spawn_with_standby(cfg, store, methods, None)
    }

    /// Starts the supervisor thread; `standby` are method instances with interfaces of their own
    /// for the hot standby tunnel (used when `option hot_standby` is on).
    pub fn spawn_with_standby(
        cfg: Config,
        store: Arc<Mutex<Store>>,
        methods: Vec<Box<dyn Method>>,
        standby: Option<Vec<Box<dyn Method>>>,
    ) -> Handle {
        let status = Arc::new(Mutex::new(json!({"state": "starting"})));
        let (tx, rx) = mpsc::channel();
        let mut slots = vec![Slot {
            methods,
            table: policy::TABLE_BASE + 1,
            link: None,
        }];
        if cfg.subscriber.hot_standby
            && let Some(m) = standby
        {
            slots.push(Slot {
                methods: m,
                table: policy::TABLE_BASE + 2,
                link: None,
            });
        }
        let sub = &cfg.subscriber;
        let policy = Policy {
            failback_after_ms: u64::from(sub.failback_after) * 1000,
            ..Policy::default()
        };
        let mut sup = Supervisor {
            seed: select::seed_for(&cfg.main.name),
            probe_rounds: 0,
            standby_rescan: None,
            store,
            slots,
            active: None,
            rule_table: None,
            status: status.clone(),
            tx: tx.clone(),
            auto: true,
            scanning: false,
            next_scan: Instant::now(),
            next_probe: Instant::now(),
            state: "starting",
            last_error: None,
            answers: Vec::new(),
            history: HashMap::new(),
            records: HashMap::new(),
            saved: HashMap::new(),
            policy,
            epoch: Instant::now(),
            last_failover: None,
            scanner: Arc::new(Scanner::new(Duration::from_secs(u64::from(
                cfg.subscriber.negative_cache,
            )))),
            remembered: Vec::new(),
            operator_asked: None,
            cfg,
        };
        let thread = std::thread::spawn(move || sup.run(rx));
        Handle { tx, status, thread }
    }

    fn hot(&self) -> bool {
        self.slots.len() > 1
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn probe_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.cfg.subscriber.probe_interval_ms))
    }

    fn run(&mut self, rx: Receiver<Command>) {
        self.routing_setup();
        self.resume();
        loop {
            self.publish();
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let cmd = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match cmd {
                Ok(Command::Shutdown(reply)) => {
                    self.leave_all("daemon stopping");
                    self.routing_teardown();
                    self.state = "stopped";
                    self.publish();
                    let _ = reply.send(json!({"success": true}));
                    return;
                }
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.leave_all("daemon stopping");
                    self.routing_teardown();
                    return;
                }
            }
        }
    }

    fn links(&self) -> impl Iterator<Item = (usize, &Link)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.link.as_ref().map(|l| (i, l)))
    }

    fn active_link(&self) -> Option<&Link> {
        self.active.and_then(|i| self.slots[i].link.as_ref())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Vec<Instant> = self.links().map(|(_, l)| l.renew_at).collect();
        if self.links().next().is_some() {
            next.push(self.next_probe);
        }
        if self.auto && !self.scanning {
            next.push(self.next_scan);
        }
        next.into_iter().min()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Scan(reply) => {
                self.auto = true;
                // Asked for by the operator: everyone is asked again, silent or not.
                self.scanner.forget_silent();
                // While a background scan holds the scanner, answer with the last results.
                let found = self.scan_now().unwrap_or_else(|| self.answers.clone());
                self.absorb(found.clone());
                let list: Vec<Value> = found.iter().map(answer_json).collect();
                let _ = reply.send(json!({"success": true, "gateways": list}));
            }
            Command::Scanned(found) => {
                self.scanning = false;
                if let Some(found) = found.filter(|_| self.auto) {
                    self.absorb(found);
                }
            }
            Command::Connect {
                address,
                port,
                method,
                reply,
            } => {
                self.auto = true;
                let _ = reply.send(self.connect_to(address, port, method));
            }
            Command::Disconnect(reply) => {
                let was = self.active_link().map(|c| c.name.clone());
                self.leave_all("disconnect requested");
                self.auto = false;
                self.state = "disconnected";
                let _ = reply.send(json!({"success": true, "left": was}));
            }
            Command::Reload(cfg, reply) => {
                self.reload(*cfg);
                let _ = reply.send(json!({"success": true}));
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn reload(&mut self, cfg: Config) {
        self.cfg = cfg;
        self.policy.failback_after_ms = u64::from(self.cfg.subscriber.failback_after) * 1000;
        // A shorter interval counts from now, not from the last scan's old schedule.
        let soonest =
            Instant::now() + Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        self.next_scan = self.next_scan.min(soonest);
        let rows = self
            .store
            .lock()
            .expect("not poisoned")
            .gateways()
            .unwrap_or_default();
        let max_price = self.cfg.subscriber.max_price;
        let unwanted: Vec<(usize, String)> = self
            .links()
            .filter_map(|(i, l)| {
                let id = l.id();
                if self
                    .cfg
                    .subscriber
                    .exclude
                    .iter()
                    .any(|e| *e == l.name || *e == id)
                {
                    return Some((i, "it is excluded now".to_string()));
                }
                let price = rows
                    .iter()
                    .find(|r| r.address == l.gateway.ip().to_string() && r.port == l.gateway.port())
                    .and_then(|r| r.info["terms"]["price"].as_u64())?;
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
            self.next_scan = Instant::now();
        }
    }

    fn tick(&mut self) {
        let now_i = Instant::now();
        let due: Vec<usize> = self
            .links()
            .filter(|(_, l)| now_i >= l.renew_at)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            self.renew(i);
        }
        if self.links().next().is_some() && Instant::now() >= self.next_probe {
            self.next_probe = Instant::now() + self.probe_interval();
            self.probe_round();
        }
        if self.auto && !self.scanning && Instant::now() >= self.next_scan {
            if self.active.is_none() {
                // Nothing to lose by waiting: scan in this thread and connect right away.
                if let Some(found) = self.scan_now() {
                    self.absorb(found);
                }
            } else {
                self.scan_in_background();
            }
        }
    }

    // --- policy routing ---

    fn routing_setup(&mut self) {
        // Rules left by a run that died are removed first; each is re-added only if needed.
        self.routing_teardown();
        let hot = self.hot();
        let closed = self.cfg.subscriber.fail_closed;
        let mut result = Ok(());
        if hot || closed {
            let suppress = u8::from(hot);
            result = policy::rule_add(policy::RULE_MESH, policy::Action::MainWithout(suppress));
        }
        if closed && result.is_ok() {
            result = policy::rule_add(policy::RULE_CLOSED, policy::Action::Prohibit);
        }
        if let Err(e) = result {
            self.fail(format!("cannot set up policy routing: {e}"));
        }
    }

    fn routing_teardown(&mut self) {
        for pref in [policy::RULE_MESH, policy::RULE_TUNNEL, policy::RULE_CLOSED] {
            if let Err(e) = policy::rule_del_all(pref) {
                log::warn(&format!("cannot remove rule {pref}: {e}"));
            }
        }
        for slot in 1..=2 {
            let _ = policy::flush_table(policy::TABLE_BASE + slot);
        }
        self.rule_table = None;
    }

    /// Points the tunnel rule at slot `i`'s table (hot standby only).
    fn route_via(&mut self, i: usize) -> Result<(), String> {
        if !self.hot() {
            return Ok(());
        }
        let table = self.slots[i].table;
        policy::switch_tunnel(self.rule_table, table).map_err(|e| e.to_string())?;
        self.rule_table = Some(table);
        Ok(())
    }

    // --- scanning ---

    /// Runs every discovery section and probes the candidates (blocking); `None` if another
    /// scan holds the scanner.
    fn scan_now(&mut self) -> Option<Vec<Answer>> {
        if self.active.is_none() {
            self.state = "scanning";
            self.publish();
        }
        let found = scan(&self.cfg, &self.scanner, &self.remembered);
        self.next_scan =
            Instant::now() + Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        self.state = if self.active.is_some() {
            "connected"
        } else {
            "idle"
        };
        found
    }

    /// Scans on a helper thread; the result arrives as [`Command::Scanned`].
    fn scan_in_background(&mut self) {
        self.scanning = true;
        self.next_scan =
            Instant::now() + Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        let scanner = self.scanner.clone();
        let remembered = self.remembered.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Command::Scanned(scan(&cfg, &scanner, &remembered)));
        });
    }

    /// Takes in a scan's results: stores the gateways, updates their history, acts on what a
    /// connected gateway says about itself, then connects, fills the standby or fails back.
    fn absorb(&mut self, found: Vec<Answer>) {
        let t = self.now_ms();
        {
            let store = self.store.lock().expect("not poisoned");
            // At most as many as are kept: writing more only to delete them would churn the file.
            for a in found.iter().take(MAX_STORED_GATEWAYS) {
                let row = GatewayRow {
                    address: a.candidate.address.to_string(),
                    port: a.candidate.port,
                    name: a.info.name.clone(),
                    info: serde_json::to_value(&a.info).unwrap_or(Value::Null),
                    how: a.candidate.how.clone(),
                    hops: a.candidate.hops,
                    first_seen: now(),
                    last_seen: now(),
                    failures: 0,
                };
                if let Err(e) = store.upsert_gateway(&row) {
                    log::warn(&format!("cannot store gateway: {e}"));
                }
            }
            if let Err(e) = store.trim_gateways(MAX_STORED_GATEWAYS) {
                log::warn(&format!("cannot trim the stored gateways: {e}"));
            }
        }
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
        let sick: Vec<(usize, String)> = self
            .links()
            .filter(|(_, l)| {
                self.answers
                    .iter()
                    .any(|a| select::id(a) == l.id() && !a.info.uplink.healthy)
            })
            .map(|(i, l)| (i, l.name.clone()))
            .collect();
        for (i, name) in sick {
            self.link_failed(i, format!("{name} reports its uplink unhealthy"), true);
        }
        self.reconsider();
    }

    fn wants(&self) -> Wants {
        let s = &self.cfg.subscriber;
        Wants {
            methods: s.methods.clone(),
            max_price: s.max_price,
            prefer: s.prefer.clone(),
            exclude: s.exclude.clone(),
        }
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
            &self.wants(),
            &self.history,
            self.now_ms(),
            &self.policy,
            self.seed,
        )
    }

    /// Connects if not connected, fails back to a clearly better gateway, keeps a standby.
    fn reconsider(&mut self) {
        let ranked = if self.active.is_none() || self.state == "degraded" {
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
                self.next_scan = Instant::now() + IDLE_RETRY;
                self.state = "idle";
                return;
            }
            if !self.connect_first(&ranked, 0) {
                self.next_scan = Instant::now() + IDLE_RETRY;
            }
        } else if self.state == "degraded" && !ranked.is_empty() {
            if let Some(i) = self.active {
                self.link_failed(i, "still down, and another gateway is usable".into(), false);
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
                    self.fail_back(&ranked[i], why);
                }
            }
        }
        self.fill_standby();
    }

    /// Registers with the first choice (from `ranked[from..]`) that works, into the active slot
    /// (slot 0 in cold mode, else any free slot).
    fn connect_first(&mut self, ranked: &[select::Choice], from: usize) -> bool {
        let busy: Vec<String> = self.links().map(|(_, l)| l.id()).collect();
        for choice in ranked.iter().skip(from) {
            if busy.contains(&select::id(&choice.answer)) {
                continue;
            }
            let Some(slot) = self.free_slot() else {
                return false;
            };
            if self
                .register_any(slot, &choice.answer, &choice.methods)
                .is_ok()
            {
                if let Err(e) = self.route_via(slot) {
                    self.fail(format!("cannot switch routes: {e}"));
                }
                self.set_active(Some(slot));
                self.state = "connected";
                return true;
            }
        }
        false
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.link.is_none())
    }

    /// Hot standby: a second tunnel to the best gateway other than the active one.
    fn fill_standby(&mut self) {
        if !self.hot() || self.active.is_none() || self.free_slot().is_none() {
            return;
        }
        let ranked = self.ranked();
        // Not the gateway in use, nor (most likely the same node) another address by its name.
        let busy: Vec<(String, String)> = self
            .links()
            .map(|(_, l)| (l.id(), l.name.clone()))
            .collect();
        for choice in ranked {
            let (id, name) = (select::id(&choice.answer), &choice.answer.info.name);
            if busy.iter().any(|(i, n)| *i == id || n == name) {
                continue;
            }
            let Some(slot) = self.free_slot() else { return };
            if self
                .register_any(slot, &choice.answer, &choice.methods)
                .is_ok()
            {
                log::info(&format!("hot standby up: {}", choice.answer.info.name));
                self.standby_rescan = None;
                return;
            }
        }
        // None usable now (the one just left may be back soon): scan early, backing off.
        let regular = Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        let delay = standby::next_rescan(self.standby_rescan, regular);
        self.standby_rescan = Some(delay);
        self.next_scan = self.next_scan.min(Instant::now() + delay);
        log::debug(&format!(
            "no hot standby: scanning again within {} s",
            delay.as_secs()
        ));
    }

    /// Moves to a clearly better gateway: hot standby switches to it (bringing it up in the
    /// standby slot first if it is not the standby); cold leaves the current one first.
    fn fail_back(&mut self, choice: &select::Choice, why: String) {
        let started = Instant::now();
        let Some(old) = self.active else { return };
        let from = self.slots[old].link.as_ref().map(|l| l.name.clone());
        let target = choice.answer.info.name.clone();
        let target_id = select::id(&choice.answer);
        log::info(&format!("moving to {target} at {target_id}: {why}"));
        if self.hot() {
            let standby = self
                .links()
                .find(|(_, l)| l.id() == target_id)
                .map(|(i, _)| i);
            let slot = match standby {
                Some(i) => i,
                None => {
                    // Replace the standby by the better gateway, then switch to it.
                    let other = 1 - old;
                    self.release_slot(other, "replaced by a better gateway");
                    if self
                        .register_any(other, &choice.answer, &choice.methods)
                        .is_err()
                    {
                        return;
                    }
                    other
                }
            };
            if let Err(e) = self.route_via(slot) {
                self.fail(format!("cannot switch routes: {e}"));
                return;
            }
            self.set_active(Some(slot));
            self.release_slot(old, "failed back to a better gateway");
        } else {
            self.release_slot(old, "moving to a better gateway");
            self.set_active(None);
            if self
                .register_any(0, &choice.answer, &choice.methods)
                .is_ok()
            {
                self.set_active(Some(0));
            } else {
                let ranked = self.ranked();
                self.connect_first(&ranked, 0);
            }
        }
        self.note_failover(from, why, "failback", started);
    }

    fn note_failover(
        &mut self,
        from: Option<String>,
        reason: String,
        kind: &str,
        started: Instant,
    ) {
        let to = self.active_link().map(|l| l.name.clone());
        log::info(&format!(
            "{kind}: {} → {} in {:.0} ms ({reason})",
            from.as_deref().unwrap_or("-"),
            to.as_deref().unwrap_or("-"),
            started.elapsed().as_secs_f64() * 1000.0
        ));
        self.last_failover = Some(json!({
            "kind": kind, "from": from, "to": to, "reason": reason, "at": now(),
            "durationMs": started.elapsed().as_secs_f64() * 1000.0,
            "hot": self.hot(),
        }));
    }

    // --- probing ---

    /// The addresses probed through a link this round ([`probe::plan`]).
    fn probe_targets(&self, link: &Link) -> Vec<IpAddr> {
        let info: &[IpAddr] = self
            .answers
            .iter()
            .find(|a| a.candidate.address == link.gateway.ip() && a.info.name == link.name)
            .map_or(&[], |a| &a.info.uplink.targets);
        probe::plan(
            &self.cfg.subscriber.probe_targets,
            &probe::advertised(&link.grant, info),
            &link.grant.ipv4gateway,
            self.probe_rounds,
        )
        .addresses()
    }

    /// One probe per link; a link whose probes failed `down_after` intervals in a row is down.
    fn probe_round(&mut self) {
        let interval = self.probe_interval();
        let down_after = self.cfg.subscriber.down_after;
        self.probe_rounds = self.probe_rounds.wrapping_add(1);
        let failures_forgiven_after =
            Duration::from_millis(self.policy.failback_after_ms).max(GRACE * 10);
        type Probed = (usize, String, String, String, Vec<IpAddr>, Duration);
        let links: Vec<Probed> = self
            .links()
            .map(|(i, l)| {
                (
                    i,
                    l.id(),
                    l.name.clone(),
                    l.interface.clone(),
                    self.probe_targets(l),
                    l.up_since.elapsed(),
                )
            })
            .collect();
        for (i, id, name, ifname, targets, up_for) in links {
            let in_grace = up_for < GRACE;
            let per_target = (interval.mul_f64(0.9) / targets.len().max(1) as u32)
                .max(Duration::from_millis(20));
            // A method that carries no ICMP (socks) probes in its own way.
            let own = self.slots[i]
                .link
                .as_ref()
                .and_then(|l| {
                    self.slots[i]
                        .methods
                        .iter()
                        .find(|m| m.name() == l.grant.method)
                })
                .and_then(|m| m.probe(interval.mul_f64(0.9)));
            let rtt = match own {
                Some(r) => r.ok(),
                None => targets
                    .iter()
                    .find_map(|t| icmp::echo(*t, Some(&ifname), per_target).ok()),
            };
            let record = self.records.entry(id.clone()).or_default();
            if rtt.is_none() && in_grace {
                continue;
            }
            record.push(rtt.map(|d| d.as_secs_f64() * 1000.0));
            let down = record.is_down(down_after);
            if rtt.is_some() && self.history.get(&id).is_some_and(|h| h.down) {
                // A kept tunnel answers again: the gateway is back (its back-off still counts).
                log::info(&format!("{name} answers again through {ifname}"));
                let t = self.now_ms();
                let h = self.history.entry(id.clone()).or_default();
                h.down = false;
                h.stable_since_ms = Some(t);
                if self.active == Some(i) {
                    self.state = "connected";
                }
            }
            let record = self.records.entry(id.clone()).or_default();
            let summary = record.summary();
            let h = self.history.entry(id.clone()).or_default();
            h.rtt_ms = summary.rtt_ms;
            h.loss = summary.loss;
            if rtt.is_some() && !in_grace && up_for >= failures_forgiven_after {
                // Served us well for a while: earlier failures no longer lengthen its back-off.
                h.failures = 0;
            }
            if down {
                let why = format!(
                    "{name}: no answer to {} probe(s) through {ifname} in a row (last to {})",
                    summary.consecutive_failures,
                    targets
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.link_failed(i, why, true);
            } else if self
                .saved
                .get(&id)
                .is_none_or(|t| t.elapsed() >= SAVE_EVERY)
            {
                self.save_quality(&id, &name, None);
            }
        }
    }

    /// Saves the probe summary of gateway `id`; the store shows it under its `name` (a label).
    fn save_quality(&mut self, id: &str, name: &str, down_reason: Option<&str>) {
        let Some(r) = self.records.get(id) else {
            return;
        };
        let s = r.summary();
        let row = QualityRow {
            name: name.to_string(),
            rtt_ms: s.rtt_ms,
            loss: s.loss,
            probes: r.total,
            lost: r.lost,
            down_events: i64::from(down_reason.is_some()),
            last_down: down_reason.map(|_| now()),
            last_reason: down_reason.map(str::to_string),
            updated: now(),
        };
        if let Err(e) = self.store.lock().expect("not poisoned").save_quality(&row) {
            log::warn(&format!("cannot save quality: {e}"));
        }
        self.saved.insert(id.to_string(), Instant::now());
    }

    /// Slot `i`'s path is down: count it against the gateway, drop the tunnel and, if it carried
    /// the traffic, fail over (hot: switch to the standby; cold: register with the next best).
    ///
    /// With `keep_if_alone` (the path is down but the lease is not lost) and no other gateway to
    /// go to, the tunnel is kept and probed on: the subscriber is `degraded` until the probes
    /// answer again (e.g. the gateway restarted and restored our session) or another gateway
    /// turns up — tearing down the only tunnel would win nothing.
    fn link_failed(&mut self, i: usize, why: String, keep_if_alone: bool) {
        let started = Instant::now();
        let Some((id, name)) = self.slots[i]
            .link
            .as_ref()
            .map(|l| (l.id(), l.name.clone()))
        else {
            return;
        };
        let already_down = self.history.get(&id).is_some_and(|h| h.down);
        if !already_down {
            self.fail(why.clone());
            let t = self.now_ms();
            let h = self.history.entry(id.clone()).or_default();
            h.down = true;
            h.failures = h.failures.saturating_add(1);
            h.last_failure_ms = Some(t);
            h.registration_failed = false;
            h.stable_since_ms = None;
            if let Some(l) = self.slots[i].link.as_ref() {
                let (addr, port) = (l.gateway.ip().to_string(), l.gateway.port());
                let _ = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .record_gateway_failure(&addr, port);
            }
            self.save_quality(&id, &name, Some(&why));
        }
        let was_active = self.active == Some(i);
        let alone = self.links().all(|(j, _)| j == i) && self.ranked_or_rescue().is_empty();
        if was_active && keep_if_alone && alone {
            if self.state != "degraded" {
                log::warn(&format!(
                    "{name} is down and no other gateway is usable: keeping its tunnel, probing on"
                ));
                self.state = "degraded";
                self.next_scan = Instant::now();
            }
            return;
        }
        if let Some(l) = self.slots[i].link.as_ref() {
            // Lost, not left: no release hook (the lease is released in the background).
            let env = l.env().reason(&why);
            hooks::fire(&self.cfg, Event::Disconnect, &env);
            if was_active {
                hooks::fire(&self.cfg, Event::Failover, &env);
            }
        }
        if was_active {
            self.set_active(None);
            let standby = self.links().find(|(j, _)| *j != i).map(|(j, _)| j);
            if let Some(j) = standby {
                match self.route_via(j) {
                    Ok(()) => self.active = Some(j),
                    Err(e) => self.fail(format!("cannot switch to the standby: {e}")),
                }
            }
        }
        // Released in the background: a dead gateway must not hold up the failover.
        self.release_slot_async(i);
        if was_active {
            if self.active.is_none() {
                // Other addresses under the lost gateway's name are most likely the same node:
                // tried last (only the order; their own records are untouched).
                let (mut ranked, same): (Vec<_>, Vec<_>) = self
                    .ranked_or_rescue()
                    .into_iter()
                    .partition(|c| c.answer.info.name != name);
                ranked.extend(same);
                self.connect_first(&ranked, 0);
            }
            self.note_failover(Some(name), why, "failover", started);
            if self.active.is_none() {
                self.state = "idle";
                self.next_scan = Instant::now();
            }
        }
        self.fill_standby();
    }

    // --- registration ---

    /// After a restart: the connection saved in the store is renewed and brought back up if the
    /// gateway still knows it; otherwise its remains are removed.
    fn resume(&mut self) {
        let saved = self.store.lock().expect("not poisoned").connection();
        self.disconnect_all();
        let saved = match saved {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                log::error(&format!("cannot read the saved connection: {e}"));
                return;
            }
        };
        let parsed = (
            saved.gateway_address.parse::<IpAddr>(),
            serde_json::from_value::<Grant>(saved.grant.clone()),
        );
        let (Ok(ip), Ok(grant)) = parsed else {
            self.forget_connection();
            return;
        };
        if let Err(why) = self.check_grant(&grant, &grant.method.clone()) {
            log::warn(&format!("saved session not resumed: {why}"));
            self.forget_connection();
            return;
        }
        let gateway = SocketAddr::new(ip, saved.gateway_port);
        match call_gateway(
            gateway,
            "renewConnection",
            json!({"sid": grant.sid}),
            CALL_TIMEOUT,
        )
        .map(outcome::<Renewal>)
        {
            Ok(Ok(Ok(r))) => match self.tunnel_up(0, ip, &grant) {
                Ok(interface) => {
                    log::info(&format!(
                        "resumed session with {} after restart",
                        saved.gateway_name
                    ));
                    hooks::fire(
                        &self.cfg,
                        Event::Connect,
                        &session_env(&saved.gateway_name, gateway, &grant, Some(&interface)),
                    );
                    self.adopt(
                        0,
                        gateway,
                        saved.gateway_name,
                        grant,
                        interface,
                        saved.connected_at,
                        r.timeout,
                    );
                    if let Err(e) = self.route_via(0) {
                        self.fail(format!("cannot switch routes: {e}"));
                    }
                    self.set_active(Some(0));
                }
                Err(e) => {
                    self.fail(format!("cannot bring the saved tunnel back: {e}"));
                    self.forget_connection();
                }
            },
            other => {
                log::info(&format!(
                    "saved session with {} is gone ({other:?}); scanning",
                    saved.gateway_name
                ));
                self.forget_connection();
            }
        }
    }

    fn forget_connection(&mut self) {
        if let Err(e) = self.store.lock().expect("not poisoned").clear_connection() {
            log::warn(&format!("cannot clear the saved connection: {e}"));
        }
    }

    fn fail(&mut self, why: String) {
        log::warn(&why);
        self.last_error = Some(why);
    }

    /// `connect(address, port?, method?)` from the control RPC.
    fn connect_to(&mut self, address: IpAddr, port: u16, method: Option<String>) -> Value {
        let gateway = SocketAddr::new(address, port);
        let answer = client::call_bounded(
            gateway,
            "nodeInfo",
            json!({}),
            CALL_TIMEOUT,
            trust::MAX_NODE_INFO,
        );
        let info = match answer {
            Ok(v) => match serde_json::from_value::<NodeInfo>(v)
                .map_err(|e| e.to_string())
                .and_then(trust::check_node_info)
            {
                Ok(info) => info,
                Err(e) => {
                    return failure(format!("{gateway} answered nodeInfo with nonsense: {e}"));
                }
            },
            Err(e) => return failure(format!("{gateway} did not answer nodeInfo: {e}")),
        };
        let candidate = Candidate {
            address,
            port,
            how: "manual".into(),
            hops: 0,
        };
        let answer = Answer {
            candidate,
            info,
            rtt: Duration::ZERO,
        };
        let mut wants = self.wants();
        wants.exclude.clear();
        if let Some(m) = method {
            if !wants.methods.contains(&m) {
                return failure(format!(
                    "method '{}' is not enabled on this subscriber",
                    m.escape_debug()
                ));
            }
            wants.methods = vec![m];
        }
        if let Some(why) = select::unusable_terms(&answer, &wants) {
            return failure(format!("{} cannot be used: {why}", answer.info.name));
        }
        let methods = select::common_methods(&answer, &wants);
        self.leave_all("switching gateway");
        self.operator_asked = Some(address);
        let registered = self.register_any(0, &answer, &methods);
        self.operator_asked = None;
        match registered {
            Ok(()) => {
                if let Err(e) = self.route_via(0) {
                    self.fail(format!("cannot switch routes: {e}"));
                }
                self.set_active(Some(0));
                self.fill_standby();
                json!({"success": true, "gateway": answer.info.name})
            }
            Err(e) => failure(e),
        }
    }

    /// Tries each method in turn (our preference among those the gateway offers) until one
    /// connects in slot `slot`; every failure is logged, kept as the last error and counted.
    fn register_any(&mut self, slot: usize, a: &Answer, methods: &[String]) -> Result<(), String> {
        let mut last = format!("{} offers none of our methods", a.info.name);
        for m in methods {
            match self.register(slot, a, m) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = format!("{} via {m}: {}", a.info.name, e.msg);
                    self.fail(last.clone());
                    let t = self.now_ms();
                    let h = self.history.entry(select::id(a)).or_default();
                    h.failures = h.failures.saturating_add(1);
                    h.last_failure_ms = Some(t);
                    h.stable_since_ms = None;
                    h.registration_failed = !e.unreachable;
                    if let Some(wait) = e.busy_for {
                        // Busy for every method: not asked again before its Retry-After.
                        let wait = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                        h.busy_until_ms = Some(t.saturating_add(wait));
                    }
                    let c = &a.candidate;
                    let _ = self
                        .store
                        .lock()
                        .expect("not poisoned")
                        .record_gateway_failure(&c.address.to_string(), c.port);
                    if e.busy_for.is_some() {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn method_mut(&mut self, slot: usize, name: &str) -> Result<&mut Box<dyn Method>, String> {
        self.slots[slot]
            .methods
            .iter_mut()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("method {name} is not available here"))
    }

    /// Brings up the tunnel of the grant's method in slot `slot`; in hot standby mode its
    /// Internet routes are moved into the slot's own table.
    fn tunnel_up(&mut self, slot: usize, gateway: IpAddr, grant: &Grant) -> Result<String, String> {
        let hot = self.hot();
        let table = self.slots[slot].table;
        let method = self.method_mut(slot, &grant.method)?;
        let ifname = method.connect(gateway, grant).map_err(|e| e.to_string())?;
        if hot {
            policy::move_halves(&ifname, table).map_err(|e| e.to_string())?;
        }
        Ok(ifname)
    }

    /// Takes down whatever tunnel any of our methods in any slot may have up.
    fn disconnect_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.disconnect_slot(slot);
        }
    }

    fn disconnect_slot(&mut self, slot: usize) {
        for m in self.slots[slot].methods.iter_mut() {
            if let Err(e) = m.disconnect() {
                log::warn(&format!("{} teardown: {e}", m.name()));
            }
        }
        let _ = policy::flush_table(self.slots[slot].table);
    }

    /// A grant's types, then where its addresses would land: inside `grant_allow`, clear of our
    /// addresses and of every prefix we route except those of our own live tunnels.
    fn check_grant(&self, grant: &Grant, method: &str) -> Result<(), String> {
        let addresses = trust::check_grant(grant, method)?;
        // Interfaces we created for a live tunnel carry a pool of their own (two gateways may
        // use the same default pool). The route and cjdns methods use the mesh's own interface,
        // which stays protected.
        let ours: Vec<String> = self
            .links()
            .filter(|(_, l)| !matches!(l.grant.method.as_str(), "route" | "cjdns"))
            .map(|(_, l)| l.interface.clone())
            .collect();
        let local = crate::sys::net::local_prefixes(&ours)
            .map_err(|e| format!("cannot read this node's addresses and routes: {e}"))?;
        trust::check_grant_placement(
            &addresses,
            &self.cfg.subscriber.grant_allow,
            &trust::Local { prefixes: local },
        )
    }

    /// The key a gateway's grant presents against the one pinned for its address and method.
    fn check_pin(&self, at: IpAddr, method: &str, key: &str) -> Result<(), String> {
        let pinned = self
            .store
            .lock()
            .expect("not poisoned")
            .get_kv(&trust::pin_setting(at, method))
            .map_err(|e| format!("cannot read the pinned key: {e}"))?;
        trust::check_pin(key, pinned.as_deref(), self.operator_asked == Some(at))
    }

    /// `requestConnection` at the gateway, then the tunnel in slot `slot`.
    fn register(&mut self, slot: usize, a: &Answer, method: &str) -> Result<(), RegisterError> {
        let options = self.method_mut(slot, method)?.request_options();
        if self.active.is_none() {
            self.state = "connecting";
            self.publish();
        }
        let gateway = a.candidate.socket();
        let req = ConnectionRequest {
            sid: None,
            name: self.cfg.main.name.clone(),
            port: Some(self.cfg.main.rpc_port),
            method: method.to_string(),
            options,
        };
        let answer = call_gateway(gateway, "requestConnection", req.to_params(), CALL_TIMEOUT)
            .map_err(|e| RegisterError {
                unreachable: matches!(e, client::ClientError::Connect(..)),
                busy_for: match e {
                    client::ClientError::Busy(_, wait) => Some(wait),
                    _ => None,
                },
                msg: e.to_string(),
            })?;
        let grant = match outcome::<Grant>(answer).map_err(|e| e.to_string())? {
            Ok(g) => g,
            Err(Failure { error_msg, .. }) => {
                return Err(format!("refused: {}", trust::refusal_text(&error_msg)).into());
            }
        };
        let pin = trust::grant_key(&grant);
        let checked = self.check_grant(&grant, method).and_then(|()| match &pin {
            Some(key) => self.check_pin(gateway.ip(), method, key),
            None => Ok(()),
        });
        if let Err(why) = checked {
            // Not ours to use: give the lease back, and count it against the gateway.
            let _ = call_gateway(
                gateway,
                "releaseConnection",
                json!({"sid": grant.sid}),
                CALL_TIMEOUT,
            );
            return Err(format!("unacceptable grant: {why}").into());
        }
        log::info(&format!(
            "registered with {} at {gateway}: {} {}/{}",
            a.info.name, grant.method, grant.ipv4, grant.cidr4
        ));
        hooks::fire(
            &self.cfg,
            Event::Register,
            &session_env(&a.info.name, gateway, &grant, None),
        );
        self.remember(&a.candidate);
        let interface = match self.tunnel_up(slot, gateway.ip(), &grant) {
            Ok(i) => i,
            Err(e) => {
                self.disconnect_slot(slot);
                let _ = call_gateway(
                    gateway,
                    "releaseConnection",
                    json!({"sid": grant.sid}),
                    CALL_TIMEOUT,
                );
                hooks::fire(
                    &self.cfg,
                    Event::Release,
                    &session_env(&a.info.name, gateway, &grant, None).reason("tunnel setup failed"),
                );
                return Err(format!("tunnel setup failed: {e}").into());
            }
        };
        log::info(&format!("tunnel {interface} up to {}", a.info.name));
        if let Some(key) = &pin {
            let setting = trust::pin_setting(gateway.ip(), method);
            let store = self.store.lock().expect("not poisoned");
            if store.get_kv(&setting).ok().flatten().as_deref() != Some(key.as_str()) {
                log::info(&format!(
                    "pinned {key} for {} at {}",
                    a.info.name,
                    gateway.ip()
                ));
                if let Err(e) = store.set_kv(&setting, key) {
                    log::warn(&format!("cannot pin the gateway's key: {e}"));
                }
            }
        }
        hooks::fire(
            &self.cfg,
            Event::Connect,
            &session_env(&a.info.name, gateway, &grant, Some(&interface)),
        );
        let lease = grant.timeout;
        self.adopt(
            slot,
            gateway,
            a.info.name.clone(),
            grant,
            interface,
            now(),
            lease,
        );
        Ok(())
    }

    /// Makes slot `slot` the one carrying traffic and saves its connection for a restart (or
    /// forgets the saved one when there is none).
    fn set_active(&mut self, slot: Option<usize>) {
        self.active = slot;
        match slot {
            Some(i) => {
                self.state = "connected";
                self.save_connection(i)
            }
            None => self.forget_connection(),
        }
    }

    fn remember(&mut self, c: &Candidate) {
        self.remembered
            .retain(|r| (r.address, r.port) != (c.address, c.port));
        self.remembered.push(c.clone());
        if self.remembered.len() > REMEMBERED {
            self.remembered.remove(0);
        }
    }

    fn save_connection(&mut self, slot: usize) {
        let Some(c) = &self.slots[slot].link else {
            return;
        };
        let row = ConnectionRow {
            gateway_address: c.gateway.ip().to_string(),
            gateway_port: c.gateway.port(),
            gateway_name: c.name.clone(),
            sid: c.grant.sid.clone(),
            method: c.grant.method.clone(),
            interface: c.interface.clone(),
            grant: serde_json::to_value(&c.grant).unwrap_or(Value::Null),
            connected_at: c.connected_at,
            expires_at: now() + i64::from(c.grant.timeout),
        };
        if let Err(e) = self
            .store
            .lock()
            .expect("not poisoned")
            .save_connection(&row)
        {
            log::warn(&format!("cannot save the connection: {e}"));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn adopt(
        &mut self,
        slot: usize,
        gateway: SocketAddr,
        name: String,
        grant: Grant,
        interface: String,
        connected_at: i64,
        lease: u32,
    ) {
        let now_i = Instant::now();
        let lease = Duration::from_secs(u64::from(lease.max(3)));
        if let Some(r) = self.records.get_mut(&gateway.ip().to_string()) {
            r.restart_streak();
        }
        self.slots[slot].link = Some(Link {
            gateway,
            name,
            grant,
            interface,
            connected_at,
            up_since: now_i,
            expires: now_i + lease,
            renew_at: now_i + lease / 3,
        });
        self.next_probe = self.next_probe.min(now_i + self.probe_interval());
        self.last_error = None;
    }

    fn renew(&mut self, slot: usize) {
        let probe_interval = self.probe_interval().max(Duration::from_millis(500));
        let Some(c) = &mut self.slots[slot].link else {
            return;
        };
        let result = call_gateway(
            c.gateway,
            "renewConnection",
            json!({"sid": c.grant.sid}),
            CALL_TIMEOUT,
        );
        match result.map(outcome::<Renewal>) {
            Ok(Ok(Ok(r))) => {
                let lease = Duration::from_secs(u64::from(r.timeout.max(3)));
                c.expires = Instant::now() + lease;
                c.renew_at = Instant::now() + lease / 3;
                if self.active == Some(slot) {
                    let _ = self
                        .store
                        .lock()
                        .expect("not poisoned")
                        .set_connection_expiry(now() + i64::from(r.timeout));
                }
            }
            Ok(Ok(Err(f))) => {
                let why = format!(
                    "gateway {} refused renewal: {}",
                    c.name,
                    trust::refusal_text(&f.error_msg)
                );
                self.link_failed(slot, why, false);
            }
            other => {
                let why = match other {
                    Err(ClientError::Rpc(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(x) => format!("{x:?}"),
                };
                if Instant::now() + RETRY >= c.expires {
                    let why = format!(
                        "gateway {} unreachable until the lease ran out: {why}",
                        c.name
                    );
                    self.link_failed(slot, why, false);
                } else {
                    log::warn(&format!("renewal failed, retrying: {why}"));
                    c.renew_at = Instant::now() + probe_interval;
                }
            }
        }
    }

    /// Releases slot `i`'s lease (best effort, waiting) and takes its tunnel down.
    fn release_slot(&mut self, i: usize, why: &str) {
        if let Some(c) = self.slots[i].link.take() {
            log::info(&format!("leaving {}: {why}", c.name));
            let _ = call_gateway(
                c.gateway,
                "releaseConnection",
                json!({"sid": c.grant.sid}),
                Duration::from_secs(2),
            );
            self.disconnect_slot(i);
            let env = c.env().reason(why);
            hooks::fire(&self.cfg, Event::Disconnect, &env);
            hooks::fire(&self.cfg, Event::Release, &env);
        }
        self.disconnect_slot(i);
        if self.active == Some(i) {
            self.set_active(None);
        }
    }

    /// Takes slot `i`'s tunnel down now and releases its lease from a helper thread.
    fn release_slot_async(&mut self, i: usize) {
        if let Some(c) = self.slots[i].link.take() {
            std::thread::spawn(move || {
                let _ = call_gateway(
                    c.gateway,
                    "releaseConnection",
                    json!({"sid": c.grant.sid}),
                    Duration::from_secs(2),
                );
            });
        }
        self.disconnect_slot(i);
        if self.active == Some(i) {
            self.set_active(None);
        }
    }

    /// Releases every lease and takes every tunnel down.
    fn leave_all(&mut self, why: &str) {
        for i in 0..self.slots.len() {
            self.release_slot(i, why);
        }
        self.disconnect_all();
        self.forget_connection();
        if self.hot() {
            let _ = policy::rule_del_all(policy::RULE_TUNNEL);
            self.rule_table = None;
        }
        self.set_active(None);
        self.state = "idle";
    }

    fn link_json(&self, l: &Link, ranked: &[select::Choice]) -> Value {
        let score = ranked
            .iter()
            .find(|c| select::id(&c.answer) == l.id())
            .map(|c| c.score);
        json!({"name": l.name, "address": l.gateway.ip().to_string(), "port": l.gateway.port(),
               "method": l.grant.method, "interface": l.interface, "ipv4": l.grant.ipv4,
               "score": score,
               "quality": self.records.get(&l.id()).map(Record::summary),
               "leaseLeft": l.expires.saturating_duration_since(Instant::now()).as_secs()})
    }

    fn publish(&self) {
        let mut v = json!({"enabled": true, "state": self.state, "lastError": self.last_error,
                           "gateway": null, "standby": null, "hotStandby": self.hot(),
                           "failClosed": self.cfg.subscriber.fail_closed,
                           "scanInterval": self.cfg.subscriber.scan_interval,
                           "maxPrice": self.cfg.subscriber.max_price,
                           "lastFailover": self.last_failover});
        let ranked = self.ranked();
        if let Some(c) = self.active_link() {
            v["gateway"] = self.link_json(c, &ranked);
            v["method"] = json!(c.grant.method);
            v["interface"] = json!(c.interface);
            v["ipv4"] = json!(c.grant.ipv4);
            v["ipv6"] = json!(c.grant.ipv6);
            v["connectedAt"] = json!(c.connected_at);
            v["leaseLeft"] = json!(
                c.expires
                    .saturating_duration_since(Instant::now())
                    .as_secs()
            );
        }
        if let Some((_, l)) = self.links().find(|(i, _)| Some(*i) != self.active) {
            v["standby"] = self.link_json(l, &ranked);
        }
        let ranked: Vec<Value> = ranked
            .iter()
            .map(|c| {
                json!({"name": c.answer.info.name, "address": select::id(&c.answer),
                            "score": c.score})
            })
            .collect();
        v["ranking"] = json!(ranked);
        *self.status.lock().expect("not poisoned") = v;
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

/// Why a registration failed.
struct RegisterError {
    msg: String,
    /// Nobody was at the gateway's RPC port (connection refused, no route).
    unreachable: bool,
    /// The gateway answered busy (HTTP 429/503) and asked to be left alone this long.
    busy_for: Option<Duration>,
}

impl From<String> for RegisterError {
    fn from(msg: String) -> RegisterError {
        RegisterError {
            msg,
            unreachable: false,
            busy_for: None,
        }
    }
}

/// Runs every discovery section (gossip included) and returns the gateways that answered, or
/// `None` if another scan is running.
fn scan(cfg: &Config, scanner: &Scanner, remembered: &[Candidate]) -> Option<Vec<Answer>> {
    match scanner.scan(&cfg.discovery) {
        Ok(report) => {
            let mut gateways: Vec<Answer> = report.gateways().into_iter().cloned().collect();
            let missing: Vec<Candidate> = remembered
                .iter()
                .filter(|r| {
                    !report
                        .answers
                        .iter()
                        .any(|a| (a.candidate.address, a.candidate.port) == (r.address, r.port))
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                let timeout = cfg
                    .discovery
                    .iter()
                    .map(|d| Duration::from_millis(u64::from(d.timeout_ms)))
                    .max()
                    .unwrap_or(Duration::from_millis(1500));
                let n = missing.len();
                let found = crate::discovery::probe(missing, n, timeout);
                gateways.extend(found.into_iter().filter(|a| a.info.gateway));
            }
            log::debug(&format!(
                "scan: {} candidate(s), {} gateway(s) in {:?}",
                report.candidates,
                gateways.len(),
                report.elapsed
            ));
            Some(gateways)
        }
        Err(e) => {
            log::debug(&format!("scan skipped: {e}"));
            None
        }
    }
}

/// A call to a gateway: its answer is bounded by [`trust::MAX_GRANT`].
fn call_gateway(
    at: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    client::call_bounded(at, method, params, timeout, trust::MAX_GRANT)
}

fn failure(msg: String) -> Value {
    Failure::permanent(msg).to_value()
}

/// A found gateway as the control RPC lists it.
pub fn answer_json(a: &Answer) -> Value {
    json!({"name": a.info.name, "address": a.candidate.address.to_string(), "port": a.candidate.port,
           "how": a.candidate.how, "rttMs": a.rtt.as_secs_f64() * 1000.0, "methods": a.info.methods,
           "terms": a.info.terms, "uplink": a.info.uplink})
}
