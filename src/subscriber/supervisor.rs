//! The subscriber's thread: scan → rank → register → connect → probe → renew, and fail over
//! when the path goes down. Commands from the control RPC and the results of background scans
//! arrive on one channel; between them the thread sleeps until its next deadline (renewal, probe
//! round, scan). Every decision is taken by [`Core`] (`core.rs`, no I/O); this file gives it the
//! events and carries out the effects it returns — RPC calls, tunnels, policy routing, hooks,
//! store — answering its questions (registration, route switch, renewal, probe, scan).
//!
//! # Failover
//! A tunnel lives in a *slot* (its own set of method instances, interface and routing table).
//! Cold (default): one slot; when the path is down the tunnel goes and the next best gateway of
//! the last scan is registered with at once (no rescan in between). Hot standby: two slots; the
//! second keeps a lease and tunnel to the next best gateway, each tunnel's Internet routes live in
//! its own table ([`policy`]), and failover is one rule switch, after which a new standby is found.
//!
//! The path is **down** when the probes through it (ICMP echo to `probe_target`s, else to the
//! uplink targets the gateway advertises, else to the gateway's tunnel address: [`probe`](super::probe))
//! failed `down_after` intervals in a row, when the lease cannot be
//! renewed, or when the gateway says its uplink is unhealthy.

use super::core::{Core, Effect, Event, Level, Link, NewLink, RegFailure, RenewOutcome};
use super::select;
use crate::chan::{self, Receiver, RecvTimeoutError, Sender};
use crate::client::{self, ClientError};
use crate::clock::now;
use crate::config::Config;
use crate::discovery::{Answer, Candidate, Scanner};
use crate::hooks::{self, Event as Hook, session_env};
use crate::json::{self, object};
use crate::log;
use crate::protocol::{ConnectionRequest, Failure, Grant, NodeInfo, Renewal, outcome};
use crate::store::{ConnectionRow, GatewayRow, QualityRow, Store};
use crate::sys::icmp;
use crate::sys::net::policy;
use crate::trust;
use crate::tunnel::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time allowed for one registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Gateways we have held a lease with, asked again at every scan even if discovery misses them.
const REMEMBERED: usize = 16;
/// Gateways kept in the store at most (the most recently seen): with `nodeInfo` answers capped
/// at [`trust::MAX_NODE_INFO`], the table stays under a few MB whatever a mesh announces.
const MAX_STORED_GATEWAYS: usize = 256;

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

/// Method instances with their own interfaces, and the routing table their routes go to.
struct Slot {
    methods: Vec<Box<dyn Method>>,
    table: u32,
}

/// The subscriber role's thread: executes what its [`Core`] decides.
pub struct Supervisor {
    cfg: Config,
    core: Core,
    store: Arc<Mutex<Store>>,
    slots: Vec<Slot>,
    /// The table the tunnel rule points at (hot standby).
    rule_table: Option<u32>,
    status: Arc<Mutex<Value>>,
    tx: Sender<Command>,
    /// The operator's request waiting for its answer ([`Effect::Reply`]).
    reply: Option<Sender<Value>>,
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
        let (tx, rx) = chan::channel();
        if self.tx.send(make(tx)).is_err() {
            return object!({"success": false, "errorMsg": "subscriber is not running"});
        }
        rx.recv()
            .unwrap_or_else(|_| object!({"success": false, "errorMsg": "subscriber stopped"}))
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
        let status = Arc::new(Mutex::new(object!({"state": "starting"})));
        let (tx, rx) = chan::channel();
        let mut slots = vec![Slot {
            methods,
            table: policy::TABLE_BASE + 1,
        }];
        if cfg.subscriber.hot_standby
            && let Some(m) = standby
        {
            slots.push(Slot {
                methods: m,
                table: policy::TABLE_BASE + 2,
            });
        }
        let core = Core::new(
            cfg.subscriber.clone(),
            &cfg.main.name,
            slots.len() > 1,
            Instant::now(),
        );
        let mut sup = Supervisor {
            core,
            store,
            slots,
            rule_table: None,
            status: status.clone(),
            tx: tx.clone(),
            reply: None,
            last_failover: None,
            scanner: Arc::new(Scanner::new(Duration::from_secs(u64::from(
                cfg.subscriber.negative_cache,
            )))),
            remembered: Vec::new(),
            operator_asked: None,
            cfg,
        };
        let thread = crate::threads::spawn(move || sup.run(rx));
        Handle { tx, status, thread }
    }

    fn run(&mut self, rx: Receiver<Command>) {
        self.drive(Event::Start);
        self.resume();
        loop {
            self.publish();
            let wait = self
                .core
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let cmd = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match cmd {
                Ok(Command::Shutdown(reply)) => {
                    self.drive(Event::Stop);
                    let _ = reply.send(object!({"success": true}));
                    return;
                }
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => self.drive(Event::Tick),
                Err(RecvTimeoutError::Disconnected) => {
                    self.drive(Event::Stop);
                    return;
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Scan(reply) => self.ask(reply, Event::ScanAsked),
            Command::Scanned(found) => self.drive(Event::Scanned {
                found,
                background: true,
            }),
            Command::Connect {
                address,
                port,
                method,
                reply,
            } => match self.check_operator_choice(address, port, method) {
                Ok((answer, methods)) => {
                    self.ask(reply, Event::ConnectAsked { answer, methods });
                }
                Err(e) => self.ask(reply, Event::ConnectRefused(e)),
            },
            Command::Disconnect(reply) => self.ask(reply, Event::DisconnectAsked),
            Command::Reload(cfg, reply) => {
                self.cfg = *cfg;
                let prices = self.prices();
                self.drive(Event::Reload {
                    cfg: Box::new(self.cfg.subscriber.clone()),
                    prices,
                });
                let _ = reply.send(object!({"success": true}));
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    /// Drives an operator's request; its answer comes as [`Effect::Reply`].
    fn ask(&mut self, reply: Sender<Value>, event: Event) {
        self.reply = Some(reply);
        self.drive(event);
        if let Some(r) = self.reply.take() {
            let _ = r.send(object!({"success": false, "errorMsg": "no answer"}));
        }
    }

    /// Gives `event` to the core and carries out what it decides, answering its questions.
    fn drive(&mut self, event: Event) {
        let mut todo: VecDeque<Effect> = self.core.on(event, Instant::now()).into();
        while let Some(effect) = todo.pop_front() {
            if let Some(answer) = self.execute(effect) {
                let more = self.core.on(answer, Instant::now());
                for e in more.into_iter().rev() {
                    todo.push_front(e);
                }
            }
        }
    }

    /// Carries out one effect; the answer to a question.
    fn execute(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Log(level, msg) => match level {
                Level::Debug => log::debug(&msg),
                Level::Info => log::info(&msg),
                Level::Warn => log::warn(&msg),
            },
            Effect::Publish => self.publish(),
            Effect::SetUpRouting { mesh, prohibit } => {
                if let Err(e) = self.routing_setup(mesh, prohibit) {
                    return Some(Event::Failed(format!("cannot set up policy routing: {e}")));
                }
            }
            Effect::TearDownRouting => self.routing_teardown(),
            Effect::DropTunnelRule => {
                let _ = policy::rule_del_all(policy::RULE_TUNNEL);
                self.rule_table = None;
            }
            Effect::ForgetSilent => self.scanner.forget_silent(),
            Effect::Scan { background: false } => {
                let found = scan(&self.cfg, &self.scanner, &self.remembered);
                return Some(Event::Scanned {
                    found,
                    background: false,
                });
            }
            Effect::Scan { background: true } => self.scan_in_background(),
            Effect::StoreGateways(found) => self.store_gateways(&found),
            Effect::Register {
                slot,
                choices,
                operator,
            } => return Some(self.register_first(slot, &choices, operator)),
            Effect::RouteVia(slot) => return Some(Event::Routed(self.route_via(slot))),
            Effect::Renew { gateway, sid, .. } => {
                return Some(Event::Renewed(renew(gateway, &sid)));
            }
            Effect::Probe {
                slot,
                method,
                interface,
                targets,
                timeout,
                per_target,
            } => {
                // A method that carries no ICMP (socks) probes in its own way.
                let own = method
                    .and_then(|name| self.slots[slot].methods.iter().find(|m| m.name() == name))
                    .and_then(|m| m.probe(timeout));
                let rtt = match own {
                    Some(r) => r.ok(),
                    None => targets
                        .iter()
                        .find_map(|t| icmp::echo(*t, Some(&interface), per_target).ok()),
                };
                return Some(Event::Probed(rtt));
            }
            Effect::Release {
                slot,
                link,
                why,
                wait,
            } => self.release(slot, link.map(|l| *l), &why, wait),
            Effect::TunnelsDown => self.disconnect_all(),
            Effect::Hook(event, link, why) => {
                hooks::fire(&self.cfg, event, &link.env().reason(&why));
            }
            Effect::CountFailure(at) => {
                let _ = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .record_gateway_failure(&at.ip().to_string(), at.port());
            }
            Effect::SaveQuality {
                name,
                summary,
                probes,
                lost,
                down,
            } => {
                let row = QualityRow {
                    name,
                    rtt_ms: summary.rtt_ms,
                    loss: summary.loss,
                    probes,
                    lost,
                    down_events: i64::from(down.is_some()),
                    last_down: down.as_ref().map(|_| now()),
                    last_reason: down,
                    updated: now(),
                };
                if let Err(e) = self.store.lock().expect("not poisoned").save_quality(&row) {
                    crate::warn!("cannot save quality: {e}");
                }
            }
            Effect::SaveConnection(link) => self.save_connection(&link),
            Effect::SetConnectionExpiry(timeout) => {
                let _ = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .set_connection_expiry(now() + i64::from(timeout));
            }
            Effect::ForgetConnection => self.forget_connection(),
            Effect::NoteFailover {
                kind,
                from,
                to,
                reason,
                duration,
            } => {
                let ms = duration.as_secs_f64() * 1000.0;
                crate::info!(
                    "{kind}: {} → {} in {ms:.0} ms ({reason})",
                    from.as_deref().unwrap_or("-"),
                    to.as_deref().unwrap_or("-"),
                );
                self.last_failover = Some(object!({
                    "kind": kind, "from": from, "to": to, "reason": reason, "at": now(),
                    "durationMs": ms, "hot": self.core.hot(),
                }));
            }
            Effect::Reply(v) => {
                if let Some(r) = self.reply.take() {
                    let _ = r.send(v);
                }
            }
        }
        None
    }

    // --- policy routing ---

    fn routing_setup(&mut self, mesh: Option<u8>, prohibit: bool) -> Result<(), String> {
        // Rules left by a run that died are removed first; each is re-added only if needed.
        self.routing_teardown();
        if let Some(suppress) = mesh {
            policy::rule_add(policy::RULE_MESH, policy::Action::MainWithout(suppress))
                .map_err(|e| e.to_string())?;
        }
        if prohibit {
            policy::rule_add(policy::RULE_CLOSED, policy::Action::Prohibit)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn routing_teardown(&mut self) {
        for pref in [policy::RULE_MESH, policy::RULE_TUNNEL, policy::RULE_CLOSED] {
            if let Err(e) = policy::rule_del_all(pref) {
                crate::warn!("cannot remove rule {pref}: {e}");
            }
        }
        for slot in 1..=2 {
            let _ = policy::flush_table(policy::TABLE_BASE + slot);
        }
        self.rule_table = None;
    }

    /// Points the tunnel rule at slot `i`'s table (hot standby only).
    fn route_via(&mut self, i: usize) -> Result<(), String> {
        if !self.core.hot() {
            return Ok(());
        }
        let table = self.slots[i].table;
        policy::switch_tunnel(self.rule_table, table).map_err(|e| e.to_string())?;
        self.rule_table = Some(table);
        Ok(())
    }

    // --- scanning ---

    /// Scans on a helper thread; the result arrives as [`Command::Scanned`].
    fn scan_in_background(&mut self) {
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        let scanner = self.scanner.clone();
        let remembered = self.remembered.clone();
        crate::threads::spawn(move || {
            let _ = tx.send(Command::Scanned(scan(&cfg, &scanner, &remembered)));
        });
    }

    fn store_gateways(&mut self, found: &[Answer]) {
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
                crate::warn!("cannot store gateway: {e}");
            }
        }
        if let Err(e) = store.trim_gateways(MAX_STORED_GATEWAYS) {
            crate::warn!("cannot trim the stored gateways: {e}");
        }
    }

    /// The prices the stored gateways of our links ask, by slot (for a reload).
    fn prices(&self) -> HashMap<usize, u64> {
        let rows = self
            .store
            .lock()
            .expect("not poisoned")
            .gateways()
            .unwrap_or_default();
        self.core
            .links()
            .filter_map(|(i, l)| {
                let price = rows
                    .iter()
                    .find(|r| r.address == l.gateway.ip().to_string() && r.port == l.gateway.port())
                    .and_then(|r| r.info["terms"]["price"].as_u64())?;
                Some((i, price))
            })
            .collect()
    }

    fn publish(&self) {
        let mut v = self.core.status(Instant::now());
        json::set(&mut v, "lastFailover", &self.last_failover);
        *self.status.lock().expect("not poisoned") = v;
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
                crate::error!("cannot read the saved connection: {e}");
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
            crate::warn!("saved session not resumed: {why}");
            self.forget_connection();
            return;
        }
        let gateway = SocketAddr::new(ip, saved.gateway_port);
        match call_gateway(
            gateway,
            "renewConnection",
            object!({"sid": grant.sid}),
            CALL_TIMEOUT,
        )
        .map(outcome::<Renewal>)
        {
            Ok(Ok(Ok(r))) => match self.tunnel_up(0, ip, &grant) {
                Ok(interface) => {
                    crate::info!("resumed session with {} after restart", saved.gateway_name);
                    hooks::fire(
                        &self.cfg,
                        Hook::Connect,
                        &session_env(&saved.gateway_name, gateway, &grant, Some(&interface)),
                    );
                    self.drive(Event::Resumed(NewLink {
                        gateway,
                        name: saved.gateway_name,
                        grant,
                        interface,
                        connected_at: saved.connected_at,
                        lease: r.timeout,
                    }));
                }
                Err(e) => {
                    self.drive(Event::Failed(format!(
                        "cannot bring the saved tunnel back: {e}"
                    )));
                    self.forget_connection();
                }
            },
            other => {
                crate::info!(
                    "saved session with {} is gone ({other:?}); scanning",
                    saved.gateway_name
                );
                self.forget_connection();
            }
        }
    }

    fn forget_connection(&mut self) {
        if let Err(e) = self.store.lock().expect("not poisoned").clear_connection() {
            crate::warn!("cannot clear the saved connection: {e}");
        }
    }

    /// `connect(address, port?, method?)` from the control RPC: the gateway's answer and the
    /// methods to try, or why it cannot be used.
    fn check_operator_choice(
        &mut self,
        address: IpAddr,
        port: u16,
        method: Option<String>,
    ) -> Result<(Answer, Vec<String>), String> {
        let gateway = SocketAddr::new(address, port);
        let answer = client::call_bounded(
            gateway,
            "nodeInfo",
            json!({}),
            CALL_TIMEOUT,
            trust::MAX_NODE_INFO,
        );
        let info = match answer {
            Ok(v) => serde_json::from_value::<NodeInfo>(v)
                .map_err(|e| e.to_string())
                .and_then(trust::check_node_info)
                .map_err(|e| format!("{gateway} answered nodeInfo with nonsense: {e}"))?,
            Err(e) => return Err(format!("{gateway} did not answer nodeInfo: {e}")),
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
            node: None,
        };
        let mut wants = self.core.wants();
        wants.exclude.clear();
        if let Some(m) = method {
            if !wants.methods.contains(&m) {
                return Err(format!(
                    "method '{}' is not enabled on this subscriber",
                    m.escape_debug()
                ));
            }
            wants.methods = vec![m];
        }
        if let Some(why) = select::unusable_terms(&answer, &wants) {
            return Err(format!("{} cannot be used: {why}", answer.info.name));
        }
        let methods = select::common_methods(&answer, &wants);
        Ok((answer, methods))
    }

    /// Registers in slot `slot` with the first of `choices` that works, each choice's methods
    /// in turn; reports every failed attempt.
    fn register_first(&mut self, slot: usize, choices: &[select::Choice], operator: bool) -> Event {
        let mut failures = vec![];
        for choice in choices {
            let a = &choice.answer;
            self.operator_asked = operator.then_some(a.candidate.address);
            for m in &choice.methods {
                match self.register(slot, a, m) {
                    Ok(link) => {
                        self.operator_asked = None;
                        return Event::Registered {
                            failures,
                            link: Some(link),
                        };
                    }
                    Err(e) => {
                        let busy = e.busy_for.is_some();
                        failures.push(RegFailure {
                            answer: a.clone(),
                            msg: format!("{} via {m}: {}", a.info.name, e.msg),
                            unreachable: e.unreachable,
                            busy_for: e.busy_for,
                        });
                        if busy {
                            // Busy is the node's answer for every method: try the next gateway.
                            break;
                        }
                    }
                }
            }
        }
        self.operator_asked = None;
        Event::Registered {
            failures,
            link: None,
        }
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
        let hot = self.core.hot();
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
                crate::warn!("{} teardown: {e}", m.name());
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
            .core
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
    fn register(
        &mut self,
        slot: usize,
        a: &Answer,
        method: &str,
    ) -> Result<NewLink, RegisterError> {
        let options = self.method_mut(slot, method)?.request_options();
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
                object!({"sid": grant.sid}),
                CALL_TIMEOUT,
            );
            return Err(format!("unacceptable grant: {why}").into());
        }
        crate::info!(
            "registered with {} at {gateway}: {} {}/{}",
            a.info.name,
            grant.method,
            grant.ipv4,
            grant.cidr4
        );
        hooks::fire(
            &self.cfg,
            Hook::Register,
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
                    object!({"sid": grant.sid}),
                    CALL_TIMEOUT,
                );
                hooks::fire(
                    &self.cfg,
                    Hook::Release,
                    &session_env(&a.info.name, gateway, &grant, None).reason("tunnel setup failed"),
                );
                return Err(format!("tunnel setup failed: {e}").into());
            }
        };
        crate::info!("tunnel {interface} up to {}", a.info.name);
        if let Some(key) = &pin {
            let setting = trust::pin_setting(gateway.ip(), method);
            let store = self.store.lock().expect("not poisoned");
            if store.get_kv(&setting).ok().flatten().as_deref() != Some(key.as_str()) {
                crate::info!("pinned {key} for {} at {}", a.info.name, gateway.ip());
                if let Err(e) = store.set_kv(&setting, key) {
                    crate::warn!("cannot pin the gateway's key: {e}");
                }
            }
        }
        hooks::fire(
            &self.cfg,
            Hook::Connect,
            &session_env(&a.info.name, gateway, &grant, Some(&interface)),
        );
        Ok(NewLink {
            gateway,
            name: a.info.name.clone(),
            lease: grant.timeout,
            grant,
            interface,
            connected_at: now(),
        })
    }

    fn remember(&mut self, c: &Candidate) {
        self.remembered
            .retain(|r| (r.address, r.port) != (c.address, c.port));
        self.remembered.push(c.clone());
        if self.remembered.len() > REMEMBERED {
            self.remembered.remove(0);
        }
    }

    fn save_connection(&mut self, c: &Link) {
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
            crate::warn!("cannot save the connection: {e}");
        }
    }

    /// Takes slot `i`'s tunnel down, then gives its lease back: waiting (at most 2 s), then the
    /// disconnect and release hooks; or from a helper thread, without hooks (a lost lease).
    ///
    /// Our end goes first. Released first, the gateway ends the session under a tunnel program
    /// that is still running; SoftEther's client then retries, and after being stopped in that
    /// state the next one or two sessions it makes carry nothing (`tests/e2e_softether.rs`: 1–2
    /// such sessions after an operator's disconnect and new connection, 0 in this order).
    fn release(&mut self, i: usize, link: Option<Link>, why: &str, wait: bool) {
        self.disconnect_slot(i);
        match link {
            Some(c) if wait => {
                let _ = call_gateway(
                    c.gateway,
                    "releaseConnection",
                    object!({"sid": c.grant.sid}),
                    Duration::from_secs(2),
                );
                let env = c.env().reason(why);
                hooks::fire(&self.cfg, Hook::Disconnect, &env);
                hooks::fire(&self.cfg, Hook::Release, &env);
            }
            Some(c) => {
                crate::threads::spawn(move || {
                    let _ = call_gateway(
                        c.gateway,
                        "releaseConnection",
                        object!({"sid": c.grant.sid}),
                        Duration::from_secs(2),
                    );
                });
            }
            None => {}
        }
    }
}

/// `renewConnection` at a gateway.
fn renew(gateway: SocketAddr, sid: &str) -> RenewOutcome {
    let result = call_gateway(
        gateway,
        "renewConnection",
        object!({ "sid": sid }),
        CALL_TIMEOUT,
    );
    match result.map(outcome::<Renewal>) {
        Ok(Ok(Ok(r))) => RenewOutcome::Renewed(r.timeout),
        Ok(Ok(Err(f))) => RenewOutcome::Refused(trust::refusal_text(&f.error_msg).to_string()),
        Err(ClientError::Rpc(e)) => RenewOutcome::Failed(e.to_string()),
        Err(e) => RenewOutcome::Failed(e.to_string()),
        Ok(x) => RenewOutcome::Failed(format!("{x:?}")),
    }
}

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
            crate::debug!(
                "scan: {} candidate(s), {} gateway(s) in {:?}",
                report.candidates,
                gateways.len(),
                report.elapsed
            );
            Some(gateways)
        }
        Err(e) => {
            crate::debug!("scan skipped: {e}");
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

pub use super::core::answer_json;
