//! Finding gateways: each method yields [`Candidate`]s; [`probe`] asks them all for `nodeInfo`
//! concurrently (bounded) and keeps those that answer as gateways.
//!
//! # Layout
//! - `routes.rs`: host routes of a routing protocol in the kernel table (Babel, OLSR, BMX, BIRD…).
//! - `neighbours.rs`: ARP/NDP tables of the mesh interfaces, and an optional IPv4 sweep.
//! - `cjdns.rs`: breadth-first walk through cjdroute's admin API (client: [`crate::cjdns`]).
//! - `yggdrasil.rs`: breadth-first walk through Yggdrasil's admin socket, NodeInfo adverts.
//! - `gossip.rs`: gateways other nodes advertise in `nodeInfo`, verified by our own probe.
//! - `nodes.rs`: answers at several addresses of one node joined into one (pure).
//! - `hops.rs`: hop counts by ICMP echo where the method knows none, kept a while.
//! - `scanner.rs`: [`Scanner`]: one scan at a time, cancellable, negative cache, gossip round.

pub mod cjdns;
pub mod gossip;
pub mod hops;
pub mod neighbours;
pub mod nodes;
pub mod routes;
pub mod scanner;
pub mod yggdrasil;

use crate::client;
use crate::config::DiscoveryConfig;
use crate::json::object;
use crate::protocol::NodeInfo;
pub use scanner::{ScanError, ScanReport, Scanner};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A node that may be a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    /// Its mesh address.
    pub address: IpAddr,
    /// RPC port to ask.
    pub port: u16,
    /// How it was found (`routes:babel`, …).
    pub how: String,
    /// Distance in hops as far as the method knows, else as measured ([`hops`]); 0: unknown.
    pub hops: u32,
}

impl Candidate {
    /// Where to send the probe.
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// A candidate that answered `nodeInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Who answered.
    pub candidate: Candidate,
    /// What it said.
    pub info: NodeInfo,
    /// How long the answer took.
    pub rtt: Duration,
    /// The node it belongs to, by its smallest address ([`nodes`]); `None` until the answers of
    /// a scan are joined (then the answer's own address, when nothing joins it).
    pub node: Option<IpAddr>,
}

/// Asks every candidate for `nodeInfo`, at most `concurrency` at once, each within `timeout`.
/// Candidates that do not answer or answer nonsense are left out; answers come in candidate order.
///
/// `concurrency` workers pull candidates from a shared cursor, so memory grows with the
/// concurrency, not with the number of candidates (10,000 spawned tasks cost megabytes). The
/// concurrency is capped by the open-file limit, less a reserve for the rest of the daemon.
pub fn probe(candidates: Vec<Candidate>, concurrency: usize, timeout: Duration) -> Vec<Answer> {
    probe_until(candidates, concurrency, timeout, &AtomicBool::new(false))
}

/// [`probe`], stopping early (no new probes; those in flight finish or time out) once `cancel`
/// is set.
pub fn probe_until(
    candidates: Vec<Candidate>,
    concurrency: usize,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Vec<Answer> {
    probe_each(candidates, concurrency, timeout, cancel).answers
}

/// What [`probe_each`] heard back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probed {
    /// Candidates that answered `nodeInfo`, in candidate order.
    pub answers: Vec<Answer>,
    /// Candidates that answered "busy, ask again later" (HTTP 429/503), with the wait they asked
    /// for: alive, but what they are is unknown.
    pub busy: Vec<(Candidate, Duration)>,
}

/// [`probe_until`], also telling busy candidates apart from silent ones.
pub fn probe_each(
    candidates: Vec<Candidate>,
    concurrency: usize,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Probed {
    let workers = concurrency
        .max(1)
        .min(candidates.len())
        .min(crate::sys::fd_budget());
    let next = Cell::new(0usize);
    let found: RefCell<Vec<(usize, Answer)>> = RefCell::new(Vec::new());
    let busy: RefCell<Vec<(usize, Duration)>> = RefCell::new(Vec::new());
    let ex = smol::LocalExecutor::new();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (candidates, next, found, busy) = (&candidates, &next, &found, &busy);
        tasks.push(ex.spawn(async move {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.get();
                let Some(c) = candidates.get(i) else { break };
                next.set(i + 1);
                match probe_one(c, timeout).await {
                    Heard::Answer(a) => found.borrow_mut().push((i, *a)),
                    Heard::Busy(wait) => busy.borrow_mut().push((i, wait)),
                    Heard::Nothing => {}
                }
            }
        }));
    }
    smol::block_on(ex.run(async {
        for t in tasks {
            t.await;
        }
    }));
    drop(ex);
    let mut found = found.into_inner();
    found.sort_by_key(|(i, _)| *i);
    let mut busy = busy.into_inner();
    busy.sort_by_key(|(i, _)| *i);
    Probed {
        answers: found.into_iter().map(|(_, a)| a).collect(),
        busy: busy
            .into_iter()
            .map(|(i, wait)| (candidates[i].clone(), wait))
            .collect(),
    }
}

/// What one probe heard.
enum Heard {
    Answer(Box<Answer>),
    Busy(Duration),
    Nothing,
}

/// One `nodeInfo` probe.
async fn probe_one(c: &Candidate, timeout: Duration) -> Heard {
    let started = std::time::Instant::now();
    let v = match client::call_async(
        c.socket(),
        "nodeInfo",
        serde_json::json!({}),
        timeout,
        crate::trust::MAX_NODE_INFO,
    )
    .await
    {
        Ok(v) => v,
        Err(client::ClientError::Busy(_, wait)) => return Heard::Busy(wait),
        Err(_) => return Heard::Nothing,
    };
    let Ok(info) = serde_json::from_value::<NodeInfo>(v) else {
        return Heard::Nothing;
    };
    // Checked where it enters: a name that is no node name, or lists over their bounds, and the
    // answer is dropped as nonsense.
    match crate::trust::check_node_info(info) {
        Ok(info) => Heard::Answer(Box::new(Answer {
            candidate: c.clone(),
            info,
            rtt: started.elapsed(),
            node: None,
        })),
        Err(e) => {
            crate::debug!("{}: {e}", c.socket());
            Heard::Nothing
        }
    }
}

/// How hard a scan may probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Time allowed for one probe.
    pub timeout: Duration,
}

/// Runs every configured discovery section and merges their candidates (first finding wins);
/// the limits are the most generous of the sections'. A section that fails is logged and skipped.
pub fn gather(sections: &[DiscoveryConfig]) -> (Vec<Candidate>, Limits) {
    let mut candidates = Vec::new();
    let mut limits = Limits {
        concurrency: 1,
        timeout: Duration::from_millis(50),
    };
    for d in sections {
        limits.concurrency = limits.concurrency.max(d.concurrency as usize);
        limits.timeout = limits
            .timeout
            .max(Duration::from_millis(u64::from(d.timeout_ms)));
        match run_method(d) {
            Ok(f) => candidates.extend(f.candidates),
            Err(e) => crate::warn!("discovery {}: {e}", d.section),
        }
    }
    (dedup(candidates), limits)
}

/// Runs one discovery section's method. `gossip` yields nothing here: its candidates come from
/// the answers of the others (see [`Scanner`]).
pub fn run_method(d: &DiscoveryConfig) -> Result<Found, String> {
    let plain = |c: Vec<Candidate>| Found {
        candidates: c,
        graph: None,
    };
    match d.method.as_str() {
        "routes" => routes::discover(d).map(plain),
        "neighbours" => neighbours::discover(d).map(plain),
        "cjdns" => cjdns::discover(d),
        "yggdrasil" => yggdrasil::discover(d),
        "gossip" => Ok(plain(Vec::new())),
        other => Err(format!("method {other} is not supported")),
    }
}

/// What one method found: candidates, and for the walking methods the nodes and links seen
/// (kept for the web UI's map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Candidates to probe.
    pub candidates: Vec<Candidate>,
    /// The part of the mesh the method saw, if it walks one.
    pub graph: Option<Graph>,
}

/// Nodes and links a walk saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Nodes, ourselves first: (address, hops from us).
    pub nodes: Vec<(IpAddr, u32)>,
    /// Links as indices into `nodes`.
    pub links: Vec<(usize, usize)>,
}

impl Graph {
    /// The graph of an overlay walk (cjdns, Yggdrasil): IPv6 nodes with their depth, and links.
    pub fn of_walk(
        nodes: impl Iterator<Item = (std::net::Ipv6Addr, u32)>,
        links: &[(usize, usize)],
    ) -> Graph {
        Graph {
            nodes: nodes.map(|(a, d)| (IpAddr::V6(a), d)).collect(),
            links: links.to_vec(),
        }
    }

    /// `{"nodes": [{"address", "hops"}], "links": [[a, b]]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|(a, h)| object!({"address": a.to_string(), "hops": h}))
            .collect();
        object!({"nodes": nodes, "links": self.links})
    }
}

/// Removes repeated (address, port) pairs, keeping the first.
pub fn dedup(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert((c.address, c.port)));
    candidates
}
