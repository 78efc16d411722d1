//! The subscriber's state machine, on its own thread: scan → register → connect → renew, and back
//! to scanning when the gateway is lost. Commands from the control RPC arrive on a channel; between
//! them the thread sleeps until its next deadline.

use super::select::{self, Wants};
use crate::config::Config;
use crate::discovery::{self, Answer, Candidate};
use crate::gateway::service::now;
use crate::hooks::{self, Event, session_env};
use crate::log;
use crate::protocol::{ConnectionRequest, Failure, Grant, NodeInfo, Renewal, outcome};
use crate::rpc::client::{self, ClientError};
use crate::store::{ConnectionRow, GatewayRow, Store};
use crate::tunnel::Method;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time allowed for one registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before scanning again after no gateway could be used.
const RETRY: Duration = Duration::from_secs(5);

/// A request from the control RPC; the answer goes back on the enclosed sender.
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
    /// restart-only options at their running values). The tunnel stays up unless the gateway
    /// is no longer acceptable (its price is now above `max_price`).
    Reload(Box<Config>, Sender<Value>),
}

struct Current {
    gateway: SocketAddr,
    name: String,
    grant: Grant,
    interface: String,
    connected_at: i64,
    expires: Instant,
    renew_at: Instant,
}

/// The subscriber role's state.
pub struct Supervisor {
    cfg: Config,
    store: Arc<Mutex<Store>>,
    /// Our tunnel methods, in our order of preference.
    methods: Vec<Box<dyn Method>>,
    status: Arc<Mutex<Value>>,
    current: Option<Current>,
    auto: bool,
    next_scan: Instant,
    state: &'static str,
    last_error: Option<String>,
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
    /// Starts the supervisor thread.
    pub fn spawn(cfg: Config, store: Arc<Mutex<Store>>, methods: Vec<Box<dyn Method>>) -> Handle {
        let status = Arc::new(Mutex::new(json!({"state": "starting"})));
        let (tx, rx) = mpsc::channel();
        let mut sup = Supervisor {
            cfg,
            store,
            methods,
            status: status.clone(),
            current: None,
            auto: true,
            next_scan: Instant::now(),
            state: "starting",
            last_error: None,
        };
        let thread = std::thread::spawn(move || sup.run(rx));
        Handle { tx, status, thread }
    }

    fn run(&mut self, rx: Receiver<Command>) {
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
                    self.leave("daemon stopping");
                    self.state = "stopped";
                    self.publish();
                    let _ = reply.send(json!({"success": true}));
                    return;
                }
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.leave("daemon stopping");
                    return;
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.current {
            Some(c) => Some(c.renew_at),
            None if self.auto => Some(self.next_scan),
            None => None,
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Scan(reply) => {
                self.auto = true;
                let found = self.scan();
                if self.current.is_none() {
                    self.connect_best(&found);
                }
                let list: Vec<Value> = found.iter().map(answer_json).collect();
                let _ = reply.send(json!({"success": true, "gateways": list}));
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
                let was = self.current.as_ref().map(|c| c.name.clone());
                self.leave("disconnect requested");
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
        // A shorter interval counts from now, not from the last scan's old schedule.
        let soonest =
            Instant::now() + Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        self.next_scan = self.next_scan.min(soonest);
        let Some(c) = &self.current else { return };
        let price = self
            .store
            .lock()
            .expect("not poisoned")
            .gateways()
            .ok()
            .and_then(|rows| {
                rows.into_iter()
                    .find(|r| r.address == c.gateway.ip().to_string() && r.port == c.gateway.port())
            })
            .and_then(|r| r.info["terms"]["price"].as_u64());
        if let Some(price) = price.filter(|p| *p > u64::from(self.cfg.subscriber.max_price)) {
            let why = format!(
                "its price {price} is above max_price {} now",
                self.cfg.subscriber.max_price
            );
            self.leave(&why);
            self.next_scan = Instant::now();
        }
    }

    fn tick(&mut self) {
        let now_i = Instant::now();
        if let Some(c) = &self.current {
            if now_i >= c.renew_at {
                self.renew();
            }
        } else if self.auto && now_i >= self.next_scan {
            let found = self.scan();
            self.connect_best(&found);
        }
    }

    /// After a restart: the connection saved in the store is renewed and brought back up if the
    /// gateway still knows it; otherwise its remains are removed.
    fn resume(&mut self) {
        let saved = self.store.lock().expect("not poisoned").connection();
        let saved = match saved {
            Ok(Some(row)) => row,
            Ok(None) => {
                // An interface left by a run that died before saving its connection.
                self.disconnect_all();
                return;
            }
            Err(e) => {
                log::error(&format!("cannot read the saved connection: {e}"));
                return;
            }
        };
        self.disconnect_all();
        let parsed = (
            saved.gateway_address.parse::<IpAddr>(),
            serde_json::from_value::<Grant>(saved.grant.clone()),
        );
        let (Ok(ip), Ok(grant)) = parsed else {
            self.forget_connection();
            return;
        };
        let gateway = SocketAddr::new(ip, saved.gateway_port);
        match client::call(
            gateway,
            "renewConnection",
            json!({"sid": grant.sid}),
            CALL_TIMEOUT,
        )
        .map(outcome::<Renewal>)
        {
            Ok(Ok(Ok(r))) => match self.tunnel_up(ip, &grant) {
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
                        gateway,
                        saved.gateway_name,
                        grant,
                        interface,
                        saved.connected_at,
                        r.timeout,
                    );
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

    /// Runs every discovery section, probes the candidates and stores the gateways found.
    fn scan(&mut self) -> Vec<Answer> {
        self.state = "scanning";
        self.publish();
        let (candidates, limits) = discovery::gather(&self.cfg.discovery);
        let count = candidates.len();
        let started = Instant::now();
        let answers = discovery::probe(candidates, limits.concurrency, limits.timeout);
        let gateways: Vec<Answer> = answers.into_iter().filter(|a| a.info.gateway).collect();
        log::info(&format!(
            "scan: {count} candidate(s), {} gateway(s) in {:?}",
            gateways.len(),
            started.elapsed()
        ));
        let store = self.store.lock().expect("not poisoned");
        for a in &gateways {
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
        drop(store);
        self.next_scan =
            Instant::now() + Duration::from_secs(u64::from(self.cfg.subscriber.scan_interval));
        self.state = if self.current.is_some() {
            "connected"
        } else {
            "idle"
        };
        gateways
    }

    fn wants(&self) -> Wants {
        Wants {
            methods: self.cfg.subscriber.methods.clone(),
            max_price: self.cfg.subscriber.max_price,
        }
    }

    /// Registers with the best usable gateway, trying the next on failure.
    fn connect_best(&mut self, found: &[Answer]) {
        let choices = select::rank(found, &self.wants());
        if choices.is_empty() {
            self.fail(format!("no usable gateway among {} found", found.len()));
        }
        for choice in choices {
            if self.register_any(&choice.answer, &choice.methods).is_ok() {
                return;
            }
        }
        self.next_scan = Instant::now() + RETRY;
    }

    fn fail(&mut self, why: String) {
        log::warn(&why);
        self.last_error = Some(why);
    }

    /// `connect(address, port?, method?)` from the control RPC.
    fn connect_to(&mut self, address: IpAddr, port: u16, method: Option<String>) -> Value {
        let gateway = SocketAddr::new(address, port);
        let info = match client::call(gateway, "nodeInfo", json!({}), CALL_TIMEOUT) {
            Ok(v) => match serde_json::from_value::<NodeInfo>(v) {
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
        if let Some(m) = method {
            if !wants.methods.contains(&m) {
                return failure(format!(
                    "method '{}' is not enabled on this subscriber",
                    m.escape_debug()
                ));
            }
            wants.methods = vec![m];
        }
        if let Some(why) = select::unusable(&answer, &wants) {
            return failure(format!("{} cannot be used: {why}", answer.info.name));
        }
        let methods = select::rank(std::slice::from_ref(&answer), &wants)
            .remove(0)
            .methods;
        self.leave("switching gateway");
        match self.register_any(&answer, &methods) {
            Ok(()) => json!({"success": true, "gateway": answer.info.name}),
            Err(e) => failure(e),
        }
    }

    /// Tries each method in turn (our preference among those the gateway offers) until one
    /// connects; every failure is logged, kept as the last error and counted in the store.
    fn register_any(&mut self, a: &Answer, methods: &[String]) -> Result<(), String> {
        let mut last = format!("{} offers none of our methods", a.info.name);
        for m in methods {
            match self.register(a, m) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = format!("{} via {m}: {e}", a.info.name);
                    self.fail(last.clone());
                    let c = &a.candidate;
                    let _ = self
                        .store
                        .lock()
                        .expect("not poisoned")
                        .record_gateway_failure(&c.address.to_string(), c.port);
                }
            }
        }
        Err(last)
    }

    fn method_mut(&mut self, name: &str) -> Result<&mut Box<dyn Method>, String> {
        self.methods
            .iter_mut()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("method {name} is not available here"))
    }

    /// Brings up the tunnel of the grant's method.
    fn tunnel_up(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, String> {
        let method = self.method_mut(&grant.method)?;
        method.connect(gateway, grant).map_err(|e| e.to_string())
    }

    /// Takes down whatever tunnel any of our methods may have up (each is idempotent).
    fn disconnect_all(&mut self) {
        for m in self.methods.iter_mut() {
            if let Err(e) = m.disconnect() {
                log::warn(&format!("{} teardown: {e}", m.name()));
            }
        }
    }

    /// `requestConnection` at the gateway, then the tunnel.
    fn register(&mut self, a: &Answer, method: &str) -> Result<(), String> {
        let options = self.method_mut(method)?.request_options();
        self.state = "connecting";
        self.publish();
        let gateway = a.candidate.socket();
        let req = ConnectionRequest {
            sid: None,
            name: self.cfg.main.name.clone(),
            port: Some(self.cfg.main.rpc_port),
            method: method.to_string(),
            options,
        };
        let answer = client::call(gateway, "requestConnection", req.to_params(), CALL_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let grant = match outcome::<Grant>(answer).map_err(|e| e.to_string())? {
            Ok(g) => g,
            Err(Failure { error_msg, .. }) => return Err(format!("refused: {error_msg}")),
        };
        log::info(&format!(
            "registered with {} at {gateway}: {} {}/{}",
            a.info.name, grant.method, grant.ipv4, grant.cidr4
        ));
        hooks::fire(
            &self.cfg,
            Event::Register,
            &session_env(&a.info.name, gateway, &grant, None),
        );
        let interface = match self.tunnel_up(gateway.ip(), &grant) {
            Ok(i) => i,
            Err(e) => {
                self.disconnect_all();
                let _ = client::call(
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
                return Err(format!("tunnel setup failed: {e}"));
            }
        };
        log::info(&format!("tunnel {interface} up to {}", a.info.name));
        hooks::fire(
            &self.cfg,
            Event::Connect,
            &session_env(&a.info.name, gateway, &grant, Some(&interface)),
        );
        let lease = grant.timeout;
        self.adopt(gateway, a.info.name.clone(), grant, interface, now(), lease);
        if let Some(c) = &self.current {
            let row = ConnectionRow {
                gateway_address: gateway.ip().to_string(),
                gateway_port: gateway.port(),
                gateway_name: c.name.clone(),
                sid: c.grant.sid.clone(),
                method: c.grant.method.clone(),
                interface: c.interface.clone(),
                grant: serde_json::to_value(&c.grant).unwrap_or(Value::Null),
                connected_at: c.connected_at,
                expires_at: now() + i64::from(lease),
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
        Ok(())
    }

    fn adopt(
        &mut self,
        gateway: SocketAddr,
        name: String,
        grant: Grant,
        interface: String,
        connected_at: i64,
        lease: u32,
    ) {
        let now_i = Instant::now();
        let lease = Duration::from_secs(u64::from(lease.max(3)));
        self.current = Some(Current {
            gateway,
            name,
            grant,
            interface,
            connected_at,
            expires: now_i + lease,
            renew_at: now_i + lease / 3,
        });
        self.state = "connected";
        self.last_error = None;
    }

    fn renew(&mut self) {
        let Some(c) = &mut self.current else { return };
        let result = client::call(
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
                let _ = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .set_connection_expiry(now() + i64::from(r.timeout));
            }
            Ok(Ok(Err(f))) => {
                let why = format!("gateway {} refused renewal: {}", c.name, f.error_msg);
                self.lost(why);
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
                    self.lost(why);
                } else {
                    log::warn(&format!("renewal failed, retrying: {why}"));
                    c.renew_at = Instant::now()
                        + Duration::from_secs(u64::from(self.cfg.subscriber.probe_interval));
                }
            }
        }
    }

    /// The current gateway is gone: take the tunnel down and look for another one at once.
    fn lost(&mut self, why: String) {
        let env = self
            .current
            .as_ref()
            .map(|c| session_env(&c.name, c.gateway, &c.grant, Some(&c.interface)).reason(&why));
        self.fail(why);
        self.disconnect_all();
        if let Some(e) = env {
            hooks::fire(&self.cfg, Event::Disconnect, &e);
            hooks::fire(&self.cfg, Event::Failover, &e);
        }
        self.current = None;
        self.forget_connection();
        self.state = "idle";
        self.next_scan = Instant::now();
    }

    /// Releases the lease (best effort) and takes the tunnel down.
    fn leave(&mut self, why: &str) {
        let left = self.current.take();
        if let Some(c) = &left {
            log::info(&format!("leaving {}: {why}", c.name));
            let _ = client::call(
                c.gateway,
                "releaseConnection",
                json!({"sid": c.grant.sid}),
                Duration::from_secs(2),
            );
        }
        self.disconnect_all();
        let env =
            left.map(|c| session_env(&c.name, c.gateway, &c.grant, Some(&c.interface)).reason(why));
        if let Some(e) = env {
            hooks::fire(&self.cfg, Event::Disconnect, &e);
            hooks::fire(&self.cfg, Event::Release, &e);
        }
        self.forget_connection();
        self.state = "idle";
    }

    fn publish(&self) {
        let mut v = json!({"enabled": true, "state": self.state, "lastError": self.last_error, "gateway": null,
                           "scanInterval": self.cfg.subscriber.scan_interval,
                           "maxPrice": self.cfg.subscriber.max_price});
        if let Some(c) = &self.current {
            v["gateway"] = json!({"name": c.name, "address": c.gateway.ip().to_string(), "port": c.gateway.port()});
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
        *self.status.lock().expect("not poisoned") = v;
    }
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
