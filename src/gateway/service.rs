//! The gateway role: RPC handlers on top of the lease book, executing its actions through the
//! tunnel method and NAT, and keeping sessions in the store so they survive a restart.

use super::leases::{Action, Ask, Lease, LeaseBook};
use super::uplink::{CheckState, Report};
use crate::chan;
use crate::clock::now;
use crate::config::GatewayConfig;
use crate::ids::new_sid;
use crate::json::object;
use crate::prefix::Prefix;
use crate::protocol::Caller;
use crate::protocol::{ConnectionRequest, Failure, Grant, Renewal, Terms, Uplink};
use crate::store::{SessionRow, Store};
use crate::sys::firewall::{Firewall, Session};
use crate::tunnel::{GatewayNet, Ingress, Method, Peer};
use crate::{log, validate};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the thread applying batches waits before taking the queue, each time: the requests
/// (and releases) that arrive meanwhile, or that waited for the lock during the last batch, are
/// configured together, in one batch.
const COALESCE: Duration = Duration::from_millis(2);

/// How much longer it waits, at most, for callers that are deciding (see `Gateway::deciding`).
const MAX_GATHER: Duration = Duration::from_millis(20);

/// Counts a caller as deciding while it lives.
struct Deciding<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Deciding<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Deciding<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Deciding(n)
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether `s` looks like a sid we issue.
fn is_sid(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Addresses handed out from the pools: slot `s` gets host `s + 2`, the gateway host 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pools {
    v4: Prefix,
    v6: Option<Prefix>,
}

impl Pools {
    /// Pools from the configuration.
    pub fn new(v4: Prefix, v6: Option<Prefix>) -> Pools {
        Pools { v4, v6 }
    }

    /// How many subscribers the pools can address (network, gateway and broadcast excluded).
    pub fn slots(&self) -> u32 {
        let v4 = self.v4.host_count().saturating_sub(3);
        let v6 = self
            .v6
            .map_or(u128::MAX, |p| p.host_count().saturating_sub(3));
        v4.min(v6).min(u128::from(u32::MAX)) as u32
    }

    /// The gateway's own tunnel addresses.
    pub fn gateway(&self) -> GatewayNet {
        GatewayNet {
            ipv4: v4(self.v4.nth_host(1)),
            cidr4: self.v4.len,
            ipv6: self.v6.map(|p| (v6(p.nth_host(1)), p.len)),
        }
    }

    /// The addresses of slot `slot`.
    pub fn subscriber(&self, slot: u32) -> (Ipv4Addr, Option<Ipv6Addr>) {
        let n = u128::from(slot) + 2;
        (v4(self.v4.nth_host(n)), self.v6.map(|p| v6(p.nth_host(n))))
    }
}

fn v4(a: Option<IpAddr>) -> Ipv4Addr {
    match a {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn v6(a: Option<IpAddr>) -> Ipv6Addr {
    match a {
        Some(IpAddr::V6(a)) => a,
        _ => Ipv6Addr::UNSPECIFIED,
    }
}

/// What configures the kernel: the methods and the firewall. Held while a batch is applied, so
/// never by the lease book's users (renewals, nodeInfo, listSessions), which must not wait for
/// other sessions' kernel work.
struct Kernel {
    methods: Vec<Box<dyn Method>>,
    /// Forward/input policy and NAT; `None` only in tests that must not touch the system.
    nat: Option<Firewall>,
}

/// Kernel work decided by the lease book and waiting for the next batch, in the order decided.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Whether a thread is applying batches (it takes the jobs queued meanwhile too).
    applying: bool,
}

/// Kernel work queued by one caller.
enum Work {
    /// An action the lease book decided.
    Decided(Action),
    /// A live lease configured again (an idempotent repeat of its request): nothing is taken
    /// back on an error, the lease stays as it was.
    Again(Lease),
}

impl Work {
    /// The session this work is about.
    fn sid(&self) -> &str {
        match self {
            Work::Decided(Action::Accept(l) | Action::Remove(l)) | Work::Again(l) => &l.sid,
        }
    }
}

/// The work of one decision and who waits for it.
struct Job {
    work: Vec<Work>,
    /// The gateway address the caller contacted (for endpoints in the grant).
    via: Option<String>,
    reply: chan::Sender<Vec<Applied>>,
}

/// The outcome of one `Accept` or repeat: its sid, and the method's grant fields or why it
/// failed (a failed accept's lease is then gone from the book, the store and the kernel; a
/// failed repeat's lease stays as it was).
type Applied = (String, Result<serde_json::Map<String, Value>, ExecError>);

/// The gateway role.
pub struct Gateway {
    /// The running configuration; terms may change on reload ([`Gateway::reconfigure`]).
    cfg: Mutex<GatewayConfig>,
    pools: Pools,
    store: Arc<Mutex<Store>>,
    /// Every decision about leases. Locks are taken in the order book, queue, kernel (a caller
    /// may hold the book while it takes the kernel, never the other way round).
    book: Mutex<LeaseBook>,
    /// The methods' names, as offered in nodeInfo.
    offered: Vec<String>,
    kernel: Mutex<Kernel>,
    /// Kernel work waiting to be applied; locked after `book`, never before it.
    queue: Mutex<Queue>,
    /// Callers between asking for `book` and queueing their actions: the thread applying
    /// batches waits for them (a little) so that they join the next batch.
    deciding: std::sync::atomic::AtomicUsize,
    /// The last uplink check, and when (`None`: never checked, assumed healthy).
    uplink: Mutex<(Report, Option<std::time::Instant>)>,
}

impl Gateway {
    /// A gateway that has not touched the system yet; [`Gateway::start`] sets it up. With `nat`
    /// `None` no firewall or NAT is configured (for tests of the RPC surface).
    pub fn new(
        cfg: GatewayConfig,
        methods: Vec<Box<dyn Method>>,
        store: Arc<Mutex<Store>>,
        nat: Option<Firewall>,
    ) -> Gateway {
        let pools = Pools::new(cfg.ipv4_pool, cfg.ipv6_pool);
        let capacity = cfg.max_subscribers.min(pools.slots());
        let mut book = LeaseBook::new(capacity, cfg.lease_seconds);
        book.set_per_source(cfg.max_sessions_per_source);
        Gateway {
            book: Mutex::new(book),
            offered: methods.iter().map(|m| m.name().to_string()).collect(),
            kernel: Mutex::new(Kernel { methods, nat }),
            queue: Mutex::new(Queue::default()),
            deciding: Default::default(),
            cfg: Mutex::new(cfg),
            pools,
            store,
            uplink: Mutex::new((
                Report {
                    healthy: true,
                    targets: Vec::new(),
                    state: CheckState::Pending,
                },
                None,
            )),
        }
    }

    /// Records the result of an uplink check (see [`super::uplink`]) that only knows healthy or
    /// not (configured targets are not advertised this way).
    pub fn set_uplink(&self, healthy: bool) {
        let targets = self.uplink.lock().expect("not poisoned").0.targets.clone();
        self.set_uplink_report(Report {
            healthy,
            targets,
            state: CheckState::Working,
        });
    }

    /// Records one round of the uplink check (see [`super::uplink`]).
    pub fn set_uplink_report(&self, report: Report) {
        let mut u = self.uplink.lock().expect("not poisoned");
        if u.0.healthy != report.healthy {
            crate::warn!(
                "uplink {}",
                if report.healthy {
                    "healthy again"
                } else {
                    "unhealthy: no new leases"
                }
            );
        }
        if u.0.state.name() != report.state.name()
            && let Some(p) = report.state.problem()
        {
            log::warn(&p);
        }
        *u = (report, Some(std::time::Instant::now()));
    }

    fn uplink(&self) -> Uplink {
        let u = self.uplink.lock().expect("not poisoned");
        Uplink {
            healthy: u.0.healthy,
            checked_ago: u.1.map(|t| t.elapsed().as_secs()),
            targets: u.0.targets.clone(),
        }
    }

    /// Whether the uplink check works, for `status`: `{state, problem?}` (`state`: pending, off,
    /// working, unverified, broken; `problem` a sentence when it does not work).
    pub fn uplink_check(&self) -> Value {
        let u = self.uplink.lock().expect("not poisoned");
        let mut v = object!({"state": u.0.state.name()});
        if let Some(p) = u.0.state.problem() {
            v["problem"] = p.into();
        }
        v
    }

    /// Sets up forwarding, NAT and every method, then restores the leases saved in the store.
    pub fn start(&self) -> Result<(), String> {
        crate::sys::net::enable_forwarding()
            .map_err(|e| format!("cannot enable forwarding: {e}"))?;
        let backend = {
            let mut kernel = self.kernel.lock().expect("not poisoned");
            if let Some(nat) = &mut kernel.nat {
                nat.setup()
                    .map_err(|e| format!("cannot set up the firewall and NAT: {e}"))?;
            }
            let net = self.pools.gateway();
            for m in kernel.methods.iter_mut() {
                m.prepare(&net)
                    .map_err(|e| format!("cannot prepare {}: {e}", m.name()))?;
            }
            kernel.nat.as_ref().map(|n| format!("{:?}", n.backend))
        };
        let saved = self.saved_leases();
        let mut book = self.book.lock().expect("not poisoned");
        let actions = book.restore(now(), saved);
        let restored = self.enqueue(&book, actions, None);
        drop(book);
        for (sid, r) in self.wait(restored) {
            if let Err(e) = r {
                crate::warn!("restoring saved session {}: {e}", &sid[..8.min(sid.len())]);
            }
        }
        crate::info!(
            "gateway up: {} live session(s) restored, NAT via {}",
            self.book.lock().expect("not poisoned").len(),
            backend.unwrap_or("nothing".into())
        );
        Ok(())
    }

    fn saved_leases(&self) -> Vec<Lease> {
        let rows = match self.store.lock().expect("not poisoned").sessions() {
            Ok(rows) => rows,
            Err(e) => {
                crate::error!("cannot read saved sessions: {e}");
                return vec![];
            }
        };
        rows.into_iter()
            .filter_map(|r| {
                Some(Lease {
                    owner: r.owner.parse().ok()?,
                    options: r.options.as_object().cloned().unwrap_or_default(),
                    sid: r.sid,
                    name: r.name,
                    method: r.method,
                    slot: r.slot,
                    granted_at: r.granted_at,
                    expires_at: r.expires_at,
                })
            })
            .collect()
    }

    /// Configures an existing lease again (an idempotent repeat of its request); returns the
    /// method's grant fields. Nothing is taken back on an error: the lease stays as it was.
    fn repeat(
        &self,
        kernel: &mut Kernel,
        lease: &Lease,
        via: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, ExecError> {
        let (ipv4, ipv6) = self.pools.subscriber(lease.slot);
        let peer = Peer {
            owner: lease.owner,
            ipv4,
            ipv6,
            options: &lease.options,
            via,
        };
        let Kernel { methods, nat } = kernel;
        let method = methods
            .iter_mut()
            .find(|m| m.name() == lease.method)
            .ok_or_else(|| format!("method {} is not offered", lease.method))?;
        let fields = method.accept(&peer).map_err(ExecError::from_tunnel)?;
        if let Some(nat) = nat {
            let session = session_of(method.as_ref(), lease, &peer)?;
            nat.admit(&lease.sid, session).map_err(|e| e.to_string())?;
        }
        Ok(fields)
    }

    /// Queues the actions the book just decided (the caller holds `book`, so the queue keeps
    /// the order of decisions); [`Gateway::wait`] applies them and returns their outcome.
    fn enqueue(
        &self,
        decided_under: &LeaseBook,
        actions: Vec<Action>,
        via: Option<String>,
    ) -> (chan::Receiver<Vec<Applied>>, bool) {
        let work = actions.into_iter().map(Work::Decided).collect();
        self.enqueue_work(decided_under, work, via)
    }

    /// Queues work in the order decided (the caller holds `book`).
    fn enqueue_work(
        &self,
        _decided_under: &LeaseBook,
        work: Vec<Work>,
        via: Option<String>,
    ) -> (chan::Receiver<Vec<Applied>>, bool) {
        let (reply, outcome) = chan::channel();
        let mut q = self.queue.lock().expect("not poisoned");
        q.jobs.push(Job { work, via, reply });
        let lead = !q.applying;
        q.applying = true;
        (outcome, lead)
    }

    /// Waits for queued actions to be applied (without holding `book`). The first caller of a
    /// burst applies them, with everything queued meanwhile, batch after batch until the queue
    /// is empty; the others wait for their answer.
    fn wait(&self, (outcome, lead): (chan::Receiver<Vec<Applied>>, bool)) -> Vec<Applied> {
        if lead {
            loop {
                // Callers that waited for the lock during the last batch decide and queue now.
                std::thread::sleep(COALESCE);
                let until = std::time::Instant::now() + MAX_GATHER;
                while self.deciding.load(std::sync::atomic::Ordering::SeqCst) > 0
                    && std::time::Instant::now() < until
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let jobs = {
                    let mut q = self.queue.lock().expect("not poisoned");
                    if q.jobs.is_empty() {
                        q.applying = false;
                        break;
                    }
                    std::mem::take(&mut q.jobs)
                };
                let started = std::time::Instant::now();
                let n = jobs.len();
                self.apply_jobs(jobs);
                crate::debug!("batch of {n} job(s) applied in {:?}", started.elapsed());
            }
        }
        outcome.recv().unwrap_or_default()
    }

    /// Applies queued jobs: their work, in order, cut into batches in which no session
    /// appears twice; in each batch the removals first, then the accepts, then the repeats. A
    /// failed accept's lease is revoked (the kernel and the store hold nothing of it) once the
    /// kernel work is done, before anyone is answered; a failed repeat's lease stays.
    fn apply_jobs(&self, jobs: Vec<Job>) {
        let mut kernel = self.kernel.lock().expect("not poisoned");
        let mut flat = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            for w in &job.work {
                flat.push((j, w, job.via.as_deref()));
            }
        }
        let mut outcomes: Vec<Vec<Applied>> = jobs.iter().map(|_| Vec::new()).collect();
        let mut failed = Vec::new();
        for range in super::batch::split(flat.iter().map(|(_, w, _)| w.sid())) {
            let part = &flat[range];
            let removes: Vec<&Lease> = part
                .iter()
                .filter_map(|(_, w, _)| match w {
                    Work::Decided(Action::Remove(l)) => Some(l),
                    _ => None,
                })
                .collect();
            self.remove_all(&mut kernel, &removes);
            let accepts: Vec<(usize, &Lease, Option<&str>)> = part
                .iter()
                .filter_map(|(j, w, via)| match w {
                    Work::Decided(Action::Accept(l)) => Some((*j, l, *via)),
                    _ => None,
                })
                .collect();
            let items: Vec<(&Lease, Option<&str>)> =
                accepts.iter().map(|(_, l, via)| (*l, *via)).collect();
            let results = self.accept_all(&mut kernel, &items);
            for ((j, lease, _), r) in accepts.into_iter().zip(results) {
                if r.is_err() {
                    failed.push(lease.sid.clone());
                }
                outcomes[j].push((lease.sid.clone(), r));
            }
            for (j, w, via) in part {
                if let Work::Again(lease) = w {
                    let r = self.repeat(&mut kernel, lease, *via);
                    outcomes[*j].push((lease.sid.clone(), r));
                }
            }
        }
        drop(kernel);
        if !failed.is_empty() {
            let mut book = self.book.lock().expect("not poisoned");
            for sid in &failed {
                book.revoke(sid);
            }
            // A restored lease's row from the last run goes too (one transaction).
            let sids: Vec<&str> = failed.iter().map(String::as_str).collect();
            let _ = self
                .store
                .lock()
                .expect("not poisoned")
                .delete_sessions(&sids);
        }
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }

    /// Removes leases from the kernel and the store, as many as possible in one step per
    /// method and one firewall change; problems are logged (what the firewall could not
    /// withdraw stays listed there).
    fn remove_all(&self, kernel: &mut Kernel, leases: &[&Lease]) {
        if leases.is_empty() {
            return;
        }
        let addrs: Vec<_> = leases
            .iter()
            .map(|l| self.pools.subscriber(l.slot))
            .collect();
        let peers: Vec<Peer<'_>> = leases
            .iter()
            .zip(&addrs)
            .map(|(l, (ipv4, ipv6))| Peer {
                owner: l.owner,
                ipv4: *ipv4,
                ipv6: *ipv6,
                options: &l.options,
                via: None,
            })
            .collect();
        let started = std::time::Instant::now();
        let Kernel { methods, nat } = kernel;
        let batch: Vec<(String, Vec<IpAddr>)> = leases
            .iter()
            .zip(&addrs)
            .map(|(l, (v4, v6))| (l.sid.clone(), addrs_of(*v4, *v6)))
            .collect();
        // The firewall's part runs while the methods remove the tunnel ends.
        std::thread::scope(|scope| {
            let firewall = nat.as_mut().map(|nat| {
                let batch = &batch;
                let work = move || {
                    if let Err(e) = nat.dismiss_many(batch) {
                        crate::warn!("firewall: {e}");
                        if batch.len() > 1 {
                            // One at a time, so that one that cannot go keeps no other.
                            for (sid, a) in batch {
                                if let Err(e) = nat.dismiss(sid, a) {
                                    crate::warn!("firewall: {e}");
                                }
                            }
                        }
                    }
                };
                match crate::threads::spawn_scoped_named(scope, "firewall", work) {
                    Ok(h) => h,
                    Err(e) => panic!("cannot start a thread: {e}"),
                }
            });
            for m in methods.iter_mut() {
                let group: Vec<Peer<'_>> = leases
                    .iter()
                    .zip(&peers)
                    .filter(|(l, _)| l.method == m.name())
                    .map(|(_, p)| p.clone())
                    .collect();
                if !group.is_empty()
                    && let Err(e) = m.remove_many(&group)
                {
                    crate::warn!("removing {} tunnel end(s): {e}", m.name());
                }
            }
            if let Some(h) = firewall {
                h.join().expect("firewall thread");
            }
        });
        let sids: Vec<&str> = leases.iter().map(|l| l.sid.as_str()).collect();
        if let Err(e) = self
            .store
            .lock()
            .expect("not poisoned")
            .delete_sessions(&sids)
        {
            crate::warn!("cannot delete released sessions: {e}");
        }
        crate::debug!(
            "{} session(s) removed in {:?}",
            leases.len(),
            started.elapsed()
        );
        for l in leases {
            crate::info!("session of {} ({}) removed", l.name, l.owner);
        }
    }

    /// Configures leases: in one batch, or, if that fails, one by one (so that one that cannot
    /// be configured fails alone). Each result is all or nothing.
    fn accept_all(
        &self,
        kernel: &mut Kernel,
        items: &[(&Lease, Option<&str>)],
    ) -> Vec<Result<serde_json::Map<String, Value>, ExecError>> {
        match self.accept_batch(kernel, items) {
            Ok(fields) => fields.into_iter().map(Ok).collect(),
            Err(e) if items.len() > 1 => {
                crate::warn!(
                    "a batch of {} session(s) failed, configuring them one by one: {e}",
                    items.len()
                );
                items
                    .iter()
                    .map(|item| {
                        self.accept_batch(kernel, std::slice::from_ref(item))
                            .map(|mut f| f.pop().unwrap_or_default())
                    })
                    .collect()
            }
            Err(e) => vec![Err(e)],
        }
    }

    /// Configures leases all at once (per method one step, one firewall change, one store
    /// transaction), all or nothing: on an error each step done is undone.
    fn accept_batch(
        &self,
        kernel: &mut Kernel,
        items: &[(&Lease, Option<&str>)],
    ) -> Result<Vec<serde_json::Map<String, Value>>, ExecError> {
        let addrs: Vec<_> = items
            .iter()
            .map(|(l, _)| self.pools.subscriber(l.slot))
            .collect();
        let peers: Vec<Peer<'_>> = items
            .iter()
            .zip(&addrs)
            .map(|((l, via), (ipv4, ipv6))| Peer {
                owner: l.owner,
                ipv4: *ipv4,
                ipv6: *ipv6,
                options: &l.options,
                via: *via,
            })
            .collect();
        let Kernel { methods, nat } = kernel;
        if let Some((l, _)) = items
            .iter()
            .find(|(l, _)| !methods.iter().any(|m| m.name() == l.method))
        {
            return Err(format!("method {} is not offered", l.method).into());
        }
        // The firewall's part is computed first (pure), then applied while the methods
        // configure the tunnel ends: both are waits for programs, and neither needs the other.
        let sessions: Result<Vec<(String, Session)>, String> = items
            .iter()
            .zip(&peers)
            .filter(|_| nat.is_some())
            .map(|((l, _), p)| {
                let m = methods
                    .iter()
                    .find(|m| m.name() == l.method)
                    .expect("checked");
                Ok((l.sid.clone(), session_of(m.as_ref(), l, p)?))
            })
            .collect();
        let sessions = sessions?;
        let mut fields: Vec<serde_json::Map<String, Value>> = vec![Default::default(); items.len()];
        // The methods whose part is done, with the indices of their peers.
        let mut done: Vec<(usize, Vec<usize>)> = Vec::new();
        let undo = |methods: &mut Vec<Box<dyn Method>>, done: &[(usize, Vec<usize>)]| {
            for (m, idx) in done {
                let group: Vec<Peer<'_>> = idx.iter().map(|i| peers[*i].clone()).collect();
                let _ = methods[*m].remove_many(&group);
            }
        };
        let (tunnels, firewall) = std::thread::scope(|scope| {
            let firewall = nat.as_mut().map(|nat| {
                let work = move || nat.admit_many(sessions);
                match crate::threads::spawn_scoped_named(scope, "firewall", work) {
                    Ok(h) => h,
                    Err(e) => panic!("cannot start a thread: {e}"),
                }
            });
            let mut tunnels = Ok(());
            for (mi, m) in methods.iter_mut().enumerate() {
                let idx: Vec<usize> = (0..items.len())
                    .filter(|i| items[*i].0.method == m.name())
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let group: Vec<Peer<'_>> = idx.iter().map(|i| peers[*i].clone()).collect();
                match m.accept_many(&group) {
                    Ok(f) => {
                        for (i, f) in idx.iter().zip(f) {
                            fields[*i] = f;
                        }
                        done.push((mi, idx));
                    }
                    Err(e) => {
                        tunnels = Err(e);
                        break;
                    }
                }
            }
            let firewall = firewall.map(|h| h.join().expect("firewall thread"));
            (tunnels, firewall)
        });
        let dismiss = |nat: &mut Option<Firewall>| {
            if let Some(nat) = nat.as_mut() {
                let batch: Vec<(String, Vec<IpAddr>)> = items
                    .iter()
                    .zip(&addrs)
                    .map(|((l, _), (v4, v6))| (l.sid.clone(), addrs_of(*v4, *v6)))
                    .collect();
                let _ = nat.dismiss_many(&batch);
            }
        };
        // Whatever failed undid itself; what succeeded is undone here.
        match (tunnels, firewall) {
            (Ok(()), None | Some(Ok(()))) => {}
            (Err(e), firewall) => {
                undo(methods, &done);
                if let Some(Ok(())) = firewall {
                    dismiss(nat);
                }
                return Err(ExecError::from_tunnel(e));
            }
            (Ok(()), Some(Err(e))) => {
                undo(methods, &done);
                return Err(e.to_string().into());
            }
        }
        let rows: Vec<SessionRow> = items
            .iter()
            .zip(&addrs)
            .map(|((l, _), (v4, v6))| session_row(l, *v4, *v6))
            .collect();
        if let Err(e) = self
            .store
            .lock()
            .expect("not poisoned")
            .save_sessions(&rows)
        {
            dismiss(nat);
            undo(methods, &done);
            return Err(e.to_string().into());
        }
        Ok(fields)
    }

    /// Applies a reloaded configuration's terms: price and bandwidth as announced, the number of
    /// slots and the lease length. Live sessions stay as they are unless their slot is gone
    /// (`max_subscribers` lowered below it), which ends them. The options that shape what is set
    /// up (pools, uplink, methods, NAT) are left alone; [`crate::config::reload`] keeps them.
    pub fn reconfigure(&self, new: &GatewayConfig) {
        let mut book = self.book.lock().expect("not poisoned");
        *self.cfg.lock().expect("not poisoned") = new.clone();
        let capacity = new.max_subscribers.min(self.pools.slots());
        let actions = book.retune(capacity, new.lease_seconds);
        book.set_per_source(new.max_sessions_per_source);
        let queued = self.enqueue(&book, actions, None);
        drop(book);
        self.wait(queued);
    }

    /// The methods offered and the current terms.
    pub fn offer(&self) -> (Vec<String>, Terms, Uplink) {
        let book = self.book.lock().expect("not poisoned");
        let cfg = self.cfg.lock().expect("not poisoned");
        let terms = Terms {
            max_subscribers: book.capacity(),
            subscribers: book.len() as u32,
            lease_seconds: book.lease_seconds(),
            price: cfg.price,
            bandwidth_down: cfg.bandwidth_down,
            bandwidth_up: cfg.bandwidth_up,
        };
        drop((cfg, book));
        (self.offered.clone(), terms, self.uplink())
    }

    /// `requestConnection`: checks every value, then grants (or repeats) a lease and configures it.
    pub fn request_connection(&self, caller: &Caller, req: ConnectionRequest) -> Value {
        match self.try_request(caller, req) {
            Ok(grant) => serde_json::to_value(grant).expect("grant serializes"),
            Err(f) => f.to_value(),
        }
    }

    fn try_request(&self, caller: &Caller, req: ConnectionRequest) -> Result<Grant, Failure> {
        validate::node_name(&req.name).map_err(|e| Failure::permanent(format!("name: {e}")))?;
        if req.sid.as_deref().is_some_and(|sid| !is_sid(sid)) {
            return Err(Failure::permanent("sid must be 32 hexadecimal digits"));
        }
        if !self.uplink().healthy {
            return Err(Failure::temporary(
                "this gateway's uplink is unhealthy; try another gateway",
            ));
        }
        // The method's slow part (OpenVPN: openssl signing) runs without the lock, so nodeInfo,
        // renewals and other requests do not wait behind it. It needs no lease: the book is
        // only asked afterwards, under the lock, in one step, so there is no half-granted
        // state; if the book then refuses, the slow part is undone.
        let slow = {
            // Counted as deciding already: a batch being applied holds the lock we wait for.
            let _deciding = Deciding::new(&self.deciding);
            let kernel = self.kernel.lock().expect("not poisoned");
            Self::checked_method(&kernel, caller, &req)?.slow_part(&req.options)
        };
        let undo = match slow {
            None => None,
            Some(work) => Some(work().map_err(|e| {
                let e = ExecError {
                    public: e.public().map(str::to_string),
                    detail: e.to_string(),
                };
                crate::error!("cannot configure session of {}: {e}", req.name);
                Failure::temporary(e.answer(&req.method))
            })?),
        };
        let granted = self.grant(caller, req);
        if granted.is_err()
            && let Some(undo) = undo
        {
            undo();
        }
        granted
    }

    /// The offered method `req` asks for, once its options passed its checks.
    fn checked_method<'a>(
        kernel: &'a Kernel,
        caller: &Caller,
        req: &ConnectionRequest,
    ) -> Result<&'a dyn Method, Failure> {
        let offered: Vec<&str> = kernel.methods.iter().map(|m| m.name()).collect();
        let Some(method) = kernel.methods.iter().find(|m| m.name() == req.method) else {
            return Err(Failure::permanent(format!(
                "method '{}' is not offered by this gateway (offers: {})",
                req.method.escape_debug(),
                offered.join(", ")
            )));
        };
        method
            .check_options(&req.options)
            .map_err(Failure::permanent)?;
        method
            .check_caller(caller.addr, &req.options)
            .map_err(Failure::permanent)?;
        Ok(method.as_ref())
    }

    /// The locked part of `requestConnection` (its method and options checked): the book's
    /// decision and its actions.
    fn grant(&self, caller: &Caller, req: ConnectionRequest) -> Result<Grant, Failure> {
        let deciding = Deciding::new(&self.deciding);
        let mut book = self.book.lock().expect("not poisoned");
        let ask = Ask {
            owner: caller.addr,
            sid: req.sid,
            name: req.name,
            method: req.method,
            options: req.options,
        };
        let (lease, actions) = book.grant(now(), ask, new_sid).map_err(|r| {
            if r.temporary() {
                Failure::temporary(r.message())
            } else {
                Failure::permanent(r.message())
            }
        })?;
        let lease_seconds = book.lease_seconds();
        // Configured in a batch with whatever else is due now (the book is not held meanwhile;
        // the queue keeps the order of decisions, so a release decided later is applied
        // later). A failed accept has revoked the lease; a failed repeat leaves it as it was.
        // An idempotent repeat (no actions) configures the tunnel in place again and answers
        // with the same fields.
        let repeat = actions.is_empty();
        let work = if repeat {
            vec![Work::Again(lease.clone())]
        } else {
            actions.into_iter().map(Work::Decided).collect()
        };
        let queued = self.enqueue_work(&book, work, caller.host.clone());
        drop(book);
        drop(deciding);
        let outcome = self.wait(queued);
        let fields = match outcome.into_iter().find(|(sid, _)| *sid == lease.sid) {
            Some((_, Ok(f))) => f,
            Some((_, Err(e))) => {
                let what = if repeat { "repeat" } else { "configure" };
                crate::error!("cannot {what} session of {}: {e}", lease.name);
                // The details (command lines, paths, program output) go to the log only.
                return Err(Failure::temporary(e.answer(&lease.method)));
            }
            None => {
                return Err(Failure::temporary(format!(
                    "gateway could not configure the {} tunnel",
                    lease.method
                )));
            }
        };
        if !repeat {
            crate::info!(
                "session granted to {} ({}) via {}",
                lease.name,
                lease.owner,
                lease.method
            );
        }
        let (ipv4, ipv6) = self.pools.subscriber(lease.slot);
        let net = self.pools.gateway();
        Ok(Grant {
            success: true,
            sid: lease.sid,
            timeout: lease_seconds,
            method: lease.method,
            ipv4: ipv4.to_string(),
            cidr4: net.cidr4,
            ipv4gateway: net.ipv4.to_string(),
            ipv6: ipv6.map(|a| a.to_string()),
            cidr6: net.ipv6.map(|(_, len)| len),
            ipv6gateway: net.ipv6.map(|(a, _)| a.to_string()),
            uplink_targets: self.uplink().targets,
            extra: fields,
        })
    }

    /// `renewConnection`.
    pub fn renew(&self, caller: &Caller, sid: &str) -> Value {
        let mut book = self.book.lock().expect("not poisoned");
        match book.renew(now(), caller.addr, sid) {
            Ok(expires_at) => {
                if let Err(e) = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .set_session_expiry(sid, expires_at)
                {
                    crate::warn!("cannot save renewal: {e}");
                }
                let r = Renewal {
                    success: true,
                    timeout: book.lease_seconds(),
                };
                serde_json::to_value(r).expect("serializes")
            }
            Err(r) => Failure::permanent(r.message()).to_value(),
        }
    }

    /// `releaseConnection`.
    pub fn release(&self, caller: &Caller, sid: &str) -> Value {
        let deciding = Deciding::new(&self.deciding);
        let mut book = self.book.lock().expect("not poisoned");
        match book.release(now(), caller.addr, sid) {
            Ok(actions) => {
                let queued = self.enqueue(&book, actions, None);
                drop(book);
                drop(deciding);
                self.wait(queued);
                object!({"success": true})
            }
            Err(r) => Failure::permanent(r.message()).to_value(),
        }
    }

    /// Removes expired leases; returns when the next one ends.
    pub fn expire(&self) -> Option<i64> {
        let mut book = self.book.lock().expect("not poisoned");
        let actions = book.expire(now());
        for action in &actions {
            if let Action::Remove(l) = action {
                crate::info!("lease of {} ({}) expired", l.name, l.owner);
            }
        }
        if !actions.is_empty() {
            let queued = self.enqueue(&book, actions, None);
            drop(book);
            self.wait(queued);
            book = self.book.lock().expect("not poisoned");
        }
        book.next_expiry()
    }

    /// Live sessions, for `listSessions`.
    pub fn sessions(&self) -> Value {
        let book = self.book.lock().expect("not poisoned");
        let t = now();
        let list: Vec<Value> = book
            .leases()
            .map(|l| {
                let (ipv4, ipv6) = self.pools.subscriber(l.slot);
                object!({"sid": l.sid, "name": l.name, "address": l.owner.to_string(), "method": l.method,
                         "ipv4": ipv4.to_string(), "ipv6": ipv6.map(|a| a.to_string()),
                         "expiresIn": (l.expires_at - t).max(0), "grantedAt": l.granted_at})
            })
            .collect();
        Value::Array(list)
    }

    /// Removes every tunnel end, the methods' shared parts and NAT. With `keep_sessions` (the
    /// default) the sessions stay in the store so that a restart restores them; without it they
    /// are released first, rows and all.
    pub fn shutdown(&self) {
        let keep = self.cfg.lock().expect("not poisoned").keep_sessions;
        if !keep {
            let mut book = self.book.lock().expect("not poisoned");
            let sids: Vec<String> = book.leases().map(|l| l.sid.clone()).collect();
            let actions: Vec<Action> = sids
                .iter()
                .filter_map(|sid| book.revoke_at(now(), sid))
                .collect();
            let queued = self.enqueue(&book, actions, None);
            drop(book);
            self.wait(queued);
            crate::info!(
                "released {} session(s) at shutdown (keep_sessions 0)",
                sids.len()
            );
        }
        let mut kernel = self.kernel.lock().expect("not poisoned");
        let Kernel { methods, nat } = &mut *kernel;
        for m in methods.iter_mut() {
            if let Err(e) = m.shutdown() {
                crate::warn!("{} shutdown: {e}", m.name());
            }
        }
        if let Some(Err(e)) = nat.as_mut().map(Firewall::teardown) {
            crate::warn!("firewall and NAT teardown: {e}");
        }
        log::info("gateway stopped");
    }
}

/// Why an action failed: the whole story for the log, and what the caller may be told.
#[derive(Debug)]
struct ExecError {
    detail: String,
    public: Option<String>,
}

impl From<String> for ExecError {
    fn from(detail: String) -> ExecError {
        ExecError {
            detail,
            public: None,
        }
    }
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl ExecError {
    fn from_tunnel(e: crate::tunnel::TunnelError) -> ExecError {
        ExecError {
            public: e.public().map(str::to_string),
            detail: e.to_string(),
        }
    }

    /// The answer to the caller: no paths, command lines or program output.
    fn answer(&self, method: &str) -> String {
        match &self.public {
            Some(p) => format!("gateway could not configure the {method} tunnel: {p}"),
            None => format!(
                "gateway could not configure the {method} tunnel (the gateway's log says why)"
            ),
        }
    }
}

/// The firewall's view of a lease the method just accepted.
fn session_of(method: &dyn Method, lease: &Lease, peer: &Peer<'_>) -> Result<Session, String> {
    let (ifname, mac, local) = match method.ingress(peer).map_err(|e| e.to_string())? {
        Ingress::Forwarded { ifname, mac } => (ifname, mac, None),
        Ingress::Local { port } => (String::new(), None, Some((lease.owner, port))),
    };
    Ok(Session {
        ifname,
        addrs: addrs_of(peer.ipv4, peer.ipv6),
        mac,
        local,
        class: crate::sys::shaper::minor(lease.slot),
    })
}

fn addrs_of(ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr>) -> Vec<IpAddr> {
    std::iter::once(IpAddr::V4(ipv4))
        .chain(ipv6.map(IpAddr::V6))
        .collect()
}

fn session_row(l: &Lease, ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr>) -> SessionRow {
    SessionRow {
        sid: l.sid.clone(),
        owner: l.owner.to_string(),
        name: l.name.clone(),
        method: l.method.clone(),
        slot: l.slot,
        ipv4: ipv4.to_string(),
        ipv6: ipv6.map(|a| a.to_string()),
        options: Value::Object(l.options.clone()),
        granted_at: l.granted_at,
        expires_at: l.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller at 10.77.0.`last`.
    fn caller(last: u8) -> Caller {
        Caller {
            addr: IpAddr::V4(Ipv4Addr::new(10, 77, 0, last)),
            host: None,
        }
    }

    /// A first `requestConnection` of node `name` for `method`, without options.
    fn request(name: &str, method: &str) -> ConnectionRequest {
        ConnectionRequest {
            sid: None,
            name: name.into(),
            port: None,
            method: method.into(),
            options: Default::default(),
        }
    }

    #[test]
    fn sids_are_128_bit_hex_and_distinct() {
        let a = new_sid();
        assert!(is_sid(&a));
        assert_ne!(a, new_sid());
    }

    #[test]
    fn pools_hand_out_hosts_after_the_gateway() {
        let p = Pools::new(
            "100.127.0.0/24".parse().unwrap(),
            Some("fd7e:7e7e::/64".parse().unwrap()),
        );
        assert_eq!(p.slots(), 253);
        let g = p.gateway();
        assert_eq!(g.ipv4, Ipv4Addr::new(100, 127, 0, 1));
        assert_eq!(g.ipv6, Some(("fd7e:7e7e::1".parse().unwrap(), 64)));
        assert_eq!(
            p.subscriber(0),
            (
                Ipv4Addr::new(100, 127, 0, 2),
                Some("fd7e:7e7e::2".parse().unwrap())
            )
        );
        let small = Pools::new("10.0.0.0/29".parse().unwrap(), None);
        assert_eq!(small.slots(), 5);
        assert_eq!(small.subscriber(4).0, Ipv4Addr::new(10, 0, 0, 6));
    }

    /// A method that touches nothing.
    struct Inert;

    impl Method for Inert {
        fn name(&self) -> &'static str {
            "wireguard"
        }
        fn accept(
            &mut self,
            _: &Peer<'_>,
        ) -> Result<serde_json::Map<String, Value>, crate::tunnel::TunnelError> {
            Ok(Default::default())
        }
        fn remove(&mut self, _: &Peer<'_>) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
        fn connect(&mut self, _: IpAddr, _: &Grant) -> Result<String, crate::tunnel::TunnelError> {
            Ok(String::new())
        }
        fn disconnect(&mut self) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
    }

    /// A method whose accept fails, the way the failure says.
    struct Failing(fn() -> crate::tunnel::TunnelError);

    impl Method for Failing {
        fn name(&self) -> &'static str {
            "openvpn"
        }
        fn accept(
            &mut self,
            _: &Peer<'_>,
        ) -> Result<serde_json::Map<String, Value>, crate::tunnel::TunnelError> {
            Err((self.0)())
        }
        fn remove(&mut self, _: &Peer<'_>) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
        fn connect(&mut self, _: IpAddr, _: &Grant) -> Result<String, crate::tunnel::TunnelError> {
            Ok(String::new())
        }
        fn disconnect(&mut self) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
    }

    #[test]
    fn failures_answer_without_paths_or_command_lines() {
        let ask = |m: Failing| {
            let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
            let cfg = GatewayConfig {
                methods: vec!["openvpn".into()],
                ..GatewayConfig::default()
            };
            let gw = Gateway::new(cfg, vec![Box::new(m)], store, None);
            let answer = gw.request_connection(&caller(1), request("sub", "openvpn"));
            assert_eq!(answer["success"], false);
            assert_eq!(gw.sessions().as_array().unwrap().len(), 0, "nothing kept");
            answer["errorMsg"].as_str().unwrap().to_string()
        };
        let secret = ask(Failing(|| {
            crate::tunnel::TunnelError::Invalid(
                "openssl x509 -req -in /etc/mnigs/openvpn/server/issued/x.csr: bad".into(),
            )
        }));
        assert!(
            !secret.contains('/') && !secret.contains("openssl"),
            "{secret}"
        );
        let told = ask(Failing(|| {
            crate::tunnel::TunnelError::Refused("the openvpn server is not running".into())
        }));
        assert!(told.contains("the openvpn server is not running"), "{told}");
    }

    #[test]
    fn no_new_leases_while_the_uplink_is_unhealthy() {
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let gw = Gateway::new(GatewayConfig::default(), vec![Box::new(Inert)], store, None);
        let request = || request("sub", "wireguard");
        assert_eq!(gw.offer().2.checked_ago, None, "never checked");
        assert!(gw.offer().2.healthy, "assumed healthy until checked");
        assert_eq!(
            gw.request_connection(&caller(1), request())["success"],
            true
        );

        gw.set_uplink(false);
        let (_, _, uplink) = gw.offer();
        assert!(!uplink.healthy);
        assert_eq!(uplink.checked_ago, Some(0));
        let refused = gw.request_connection(&caller(2), request());
        assert_eq!(refused["success"], false);
        assert_eq!(refused["temporaryError"], true);
        assert!(refused["errorMsg"].as_str().unwrap().contains("uplink"));

        gw.set_uplink(true);
        assert_eq!(
            gw.request_connection(&caller(2), request())["success"],
            true
        );
    }

    /// What a [`Gated`] method holds until the test's go.
    enum Hold {
        /// Its slow part (an `openvpn` method); its undos are counted.
        SlowPart(Arc<std::sync::atomic::AtomicUsize>),
        /// Its removals (a `wireguard` method).
        Removal,
        /// A peer's second accept, the repeat of a request (a `wireguard` method); the peers
        /// it accepted.
        Repeat(std::collections::HashSet<Ipv4Addr>),
    }

    /// A method that says when it reaches what it holds, then waits for the test's go.
    struct Gated {
        hold: Hold,
        started: std::sync::mpsc::Sender<()>,
        go: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    }

    impl Gated {
        /// The method, the receiver of its "started" and the sender of the go.
        fn new(
            hold: Hold,
        ) -> (
            Gated,
            std::sync::mpsc::Receiver<()>,
            std::sync::mpsc::Sender<()>,
        ) {
            let (started, started_rx) = std::sync::mpsc::channel();
            let (go, go_rx) = std::sync::mpsc::channel();
            let go_rx = Arc::new(Mutex::new(go_rx));
            let m = Gated {
                hold,
                started,
                go: go_rx,
            };
            (m, started_rx, go)
        }

        fn wait(started: &std::sync::mpsc::Sender<()>, go: &Mutex<std::sync::mpsc::Receiver<()>>) {
            let _ = started.send(());
            let _ = go.lock().unwrap().recv();
        }
    }

    impl Method for Gated {
        fn name(&self) -> &'static str {
            match self.hold {
                Hold::SlowPart(_) => "openvpn",
                Hold::Removal | Hold::Repeat(_) => "wireguard",
            }
        }
        fn slow_part(&self, _: &serde_json::Map<String, Value>) -> Option<crate::tunnel::SlowPart> {
            let Hold::SlowPart(undone) = &self.hold else {
                return None;
            };
            let (started, go, undone) = (self.started.clone(), self.go.clone(), undone.clone());
            Some(Box::new(move || {
                Gated::wait(&started, &go);
                Ok(Box::new(move || {
                    undone.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }) as Box<dyn FnOnce() + Send>)
            }))
        }
        fn accept(
            &mut self,
            p: &Peer<'_>,
        ) -> Result<serde_json::Map<String, Value>, crate::tunnel::TunnelError> {
            if let Hold::Repeat(accepted) = &mut self.hold
                && !accepted.insert(p.ipv4)
            {
                Gated::wait(&self.started, &self.go);
            }
            Ok(Default::default())
        }
        fn remove(&mut self, _: &Peer<'_>) -> Result<(), crate::tunnel::TunnelError> {
            if let Hold::Removal = self.hold {
                Gated::wait(&self.started, &self.go);
            }
            Ok(())
        }
        fn connect(&mut self, _: IpAddr, _: &Grant) -> Result<String, crate::tunnel::TunnelError> {
            Ok(String::new())
        }
        fn disconnect(&mut self) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
    }

    #[test]
    fn the_slow_part_runs_without_the_lock_and_is_undone_when_refused() {
        use std::sync::mpsc::channel;
        let undone = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, started, go) = Gated::new(Hold::SlowPart(undone.clone()));
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let cfg = GatewayConfig {
            methods: vec!["openvpn".into()],
            max_subscribers: 1,
            ..GatewayConfig::default()
        };
        let gw = Arc::new(Gateway::new(cfg, vec![Box::new(m)], store, None));
        let ask = |last: u8| {
            let gw = gw.clone();
            std::thread::spawn(move || {
                gw.request_connection(&caller(last), request("sub", "openvpn"))
            })
        };
        let first = ask(1);
        started.recv().unwrap();
        // While it signs, the gateway answers (offer is nodeInfo's part) and keeps no lease.
        let (done, offered) = channel();
        let g = gw.clone();
        std::thread::spawn(move || done.send(g.offer().1.subscribers).unwrap());
        let subscribers = offered
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("offer waited for the slow part: it holds the gateway's lock");
        assert_eq!(subscribers, 0, "a lease half granted while signing");
        go.send(()).unwrap();
        assert_eq!(first.join().unwrap()["success"], true);
        assert_eq!(undone.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The book is full now: the second caller's slow part is undone.
        go.send(()).unwrap();
        let second = ask(2);
        started.recv().unwrap();
        let refused = second.join().unwrap();
        assert_eq!(refused["success"], false, "{refused}");
        assert_eq!(undone.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(gw.sessions().as_array().unwrap().len(), 1);
    }
    /// A gateway (default terms, no firewall) whose only method is a [`Gated`] one holding
    /// `hold`; the receiver of its "started" and the sender of its go.
    fn gated(
        hold: Hold,
    ) -> (
        Arc<Gateway>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (m, started, go) = Gated::new(hold);
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let gw = Gateway::new(GatewayConfig::default(), vec![Box::new(m)], store, None);
        (Arc::new(gw), started, go)
    }

    /// The sid granted to the `wireguard` request of the caller at 10.77.0.`last`.
    fn granted(gw: &Gateway, last: u8) -> String {
        let g = gw.request_connection(&caller(last), request(&format!("sub{last}"), "wireguard"));
        assert_eq!(g["success"], true, "{g}");
        g["sid"].as_str().unwrap().to_string()
    }

    /// The caller at 10.77.0.`last` renews `sid`, then a scan asks for nodeInfo (its number of
    /// subscribers), from another thread: their answers, if they came within 10 s.
    fn renew_and_offer(gw: &Arc<Gateway>, last: u8, sid: String) -> Option<(Value, u32)> {
        let (done, answered) = std::sync::mpsc::channel();
        let g = gw.clone();
        std::thread::spawn(move || {
            let renewed = g.renew(&caller(last), &sid);
            let offered = g.offer().1.subscribers;
            let _ = done.send((renewed, offered));
        });
        answered
            .recv_timeout(std::time::Duration::from_secs(10))
            .ok()
    }

    #[test]
    fn renewals_and_node_info_do_not_wait_for_kernel_work() {
        let (gw, started, go) = gated(Hold::Removal);
        let (a, b) = (granted(&gw, 1), granted(&gw, 2));
        // A's release is applied; its kernel work (the method's removal) hangs.
        let g = gw.clone();
        let releasing = std::thread::spawn(move || g.release(&caller(1), &a));
        started.recv().unwrap();
        // Meanwhile B renews and a scan asks for nodeInfo: the lease book answers at once.
        let got = renew_and_offer(&gw, 2, b);
        go.send(()).unwrap();
        let (renewed, offered) =
            got.expect("a renewal waited for another session's kernel work to finish");
        assert_eq!(renewed["success"], true, "{renewed}");
        assert_eq!(offered, 1, "A is out of the book, B in it");
        assert_eq!(releasing.join().unwrap()["success"], true);
    }

    #[test]
    fn a_repeated_request_does_not_hold_the_book_while_its_tunnel_is_configured_again() {
        let (gw, started, go) = gated(Hold::Repeat(Default::default()));
        let (a, b) = (granted(&gw, 1), granted(&gw, 2));
        // B asks for its session again; configuring its tunnel again hangs.
        let g = gw.clone();
        let again = b.clone();
        let repeating = std::thread::spawn(move || {
            let mut r = request("sub2", "wireguard");
            r.sid = Some(again);
            g.request_connection(&caller(2), r)
        });
        started.recv().unwrap();
        // Meanwhile A renews and a scan asks for nodeInfo: the lease book answers at once.
        let got = renew_and_offer(&gw, 1, a);
        go.send(()).unwrap();
        let (renewed, offered) = got.expect("a renewal waited for another session's repeat");
        assert_eq!(renewed["success"], true, "{renewed}");
        assert_eq!(offered, 2);
        let repeated = repeating.join().unwrap();
        assert_eq!(repeated["success"], true, "{repeated}");
        assert_eq!(repeated["sid"], b.as_str(), "the same session");
    }

    /// A `wireguard` method that takes a while per call (as a program would), records the size
    /// of every batch it gets, keeps its peers, and refuses every batch holding `poison`.
    struct Batching {
        sizes: Arc<Mutex<Vec<usize>>>,
        peers: Arc<Mutex<std::collections::BTreeSet<Ipv4Addr>>>,
        poison: Option<Ipv4Addr>,
    }

    impl Method for Batching {
        fn name(&self) -> &'static str {
            "wireguard"
        }
        fn check_options(&self, _: &serde_json::Map<String, Value>) -> Result<(), String> {
            Ok(())
        }
        fn prepare(&mut self, _: &GatewayNet) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
        fn accept(
            &mut self,
            p: &Peer<'_>,
        ) -> Result<serde_json::Map<String, Value>, crate::tunnel::TunnelError> {
            Ok(self.accept_many(std::slice::from_ref(p))?.remove(0))
        }
        fn accept_many(
            &mut self,
            peers: &[Peer<'_>],
        ) -> Result<Vec<serde_json::Map<String, Value>>, crate::tunnel::TunnelError> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.sizes.lock().unwrap().push(peers.len());
            if peers.iter().any(|p| Some(p.ipv4) == self.poison) {
                return Err(crate::tunnel::TunnelError::Invalid("injected".into()));
            }
            self.peers
                .lock()
                .unwrap()
                .extend(peers.iter().map(|p| p.ipv4));
            Ok(peers.iter().map(|_| Default::default()).collect())
        }
        fn remove(&mut self, p: &Peer<'_>) -> Result<(), crate::tunnel::TunnelError> {
            self.peers.lock().unwrap().remove(&p.ipv4);
            Ok(())
        }
        fn shutdown(&mut self) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
        fn request_options(&self) -> serde_json::Map<String, Value> {
            Default::default()
        }
        fn connect(&mut self, _: IpAddr, _: &Grant) -> Result<String, crate::tunnel::TunnelError> {
            Ok(String::new())
        }
        fn disconnect(&mut self) -> Result<(), crate::tunnel::TunnelError> {
            Ok(())
        }
    }

    /// `n` callers at once (from 10.77.0.1…); their answers.
    fn burst(gw: &Arc<Gateway>, n: u8) -> Vec<Value> {
        let start = Arc::new(std::sync::Barrier::new(usize::from(n)));
        let threads: Vec<_> = (1..=n)
            .map(|last| {
                let (gw, start) = (gw.clone(), start.clone());
                std::thread::spawn(move || {
                    let req = request(&format!("sub{last}"), "wireguard");
                    start.wait();
                    gw.request_connection(&caller(last), req)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    fn batching_gateway(poison: Option<Ipv4Addr>) -> (Arc<Gateway>, Batching, Arc<Mutex<Store>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Default::default()));
        let m = Batching {
            sizes: sizes.clone(),
            peers: peers.clone(),
            poison,
        };
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let cfg = GatewayConfig {
            max_subscribers: 64,
            ..GatewayConfig::default()
        };
        let gw = Gateway::new(cfg, vec![Box::new(m)], store.clone(), None);
        let view = Batching {
            sizes,
            peers,
            poison: None,
        };
        (Arc::new(gw), view, store)
    }

    #[test]
    fn a_burst_of_requests_is_configured_in_batches() {
        let (gw, seen, store) = batching_gateway(None);
        let answers = burst(&gw, 32);
        assert!(answers.iter().all(|a| a["success"] == true), "{answers:?}");
        let sizes = seen.sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 32, "{sizes:?}");
        assert!(
            sizes.len() < 32 && sizes.iter().any(|n| *n > 1),
            "one call per request: {sizes:?}"
        );
        assert_eq!(seen.peers.lock().unwrap().len(), 32);
        assert_eq!(store.lock().unwrap().sessions().unwrap().len(), 32);
    }

    #[test]
    fn a_failed_batch_is_undone_and_each_request_tried_alone() {
        // Slot 3's address: whoever gets it fails, alone and in every batch it is part of.
        let poison = Ipv4Addr::new(100, 127, 0, 5);
        let (gw, seen, store) = batching_gateway(Some(poison));
        let answers = burst(&gw, 24);
        let granted: Vec<&Value> = answers.iter().filter(|a| a["success"] == true).collect();
        let refused: Vec<&Value> = answers.iter().filter(|a| a["success"] == false).collect();
        assert!(!refused.is_empty(), "the failure was not hit");
        assert!(refused.iter().all(|a| a["temporaryError"] == true));
        assert!(
            seen.sizes.lock().unwrap().iter().any(|n| *n > 1),
            "no batch of several failed"
        );
        // The tunnel, the book and the store agree: the granted sessions, nothing else.
        let mut want: Vec<Ipv4Addr> = granted
            .iter()
            .map(|g| g["ipv4"].as_str().unwrap().parse().unwrap())
            .collect();
        want.sort();
        let peers: Vec<Ipv4Addr> = seen.peers.lock().unwrap().iter().copied().collect();
        assert_eq!(peers, want);
        assert!(!peers.contains(&poison));
        assert_eq!(gw.sessions().as_array().unwrap().len(), granted.len());
        let mut rows: Vec<Ipv4Addr> = store
            .lock()
            .unwrap()
            .sessions()
            .unwrap()
            .iter()
            .map(|r| r.ipv4.parse().unwrap())
            .collect();
        rows.sort();
        assert_eq!(rows, want);
    }
}
