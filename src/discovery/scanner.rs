//! [`Scanner`]: the whole scan — every discovery section, the probes, one gossip round — with
//! the guarantees a daemon needs: two scans never run at once (a second caller gets
//! [`ScanError::Busy`] instead of waiting), a running scan can be cancelled, and candidates that
//! keep not answering are skipped for a while (negative cache), so a mesh full of dead or
//! mnigs-less nodes costs one timeout per node per `negative_for`, not per scan. The time a
//! candidate is skipped grows with its misses in a row ([`skip_after`]): a node whose daemon
//! merely started after ours (a mesh booting after a power cut) is asked again at once.
//!
//! A candidate that answers "busy, ask again later" (HTTP 429/503: its rate limit or connection
//! caps) is alive, not silent: it never enters the negative cache. It is asked again once within
//! the scan when its `Retry-After` is short ([`RETRY_WITHIN_SCAN`]), otherwise not before that
//! time has passed; meanwhile a gateway among them is listed with its last known answer (at most
//! [`KNOWN_FOR`] old), so a gateway busy for a moment does not drop out of a subscriber's list.

use super::{Answer, Candidate, Graph, Limits, dedup, gossip, probe_each, run_method};
use crate::config::DiscoveryConfig;
use crate::json::object;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why no scan ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Another scan is running.
    Busy,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a scan is already running")
    }
}

impl std::error::Error for ScanError {}

/// What one discovery section found.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodReport {
    /// The section's name.
    pub section: String,
    /// Its method.
    pub method: String,
    /// Candidates it yielded (gossip: entries taken from answers).
    pub found: usize,
    /// Gateways among them that answered.
    pub gateways: usize,
    /// Time it took (gossip: including its verification probes).
    pub elapsed: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The outcome of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Per discovery section.
    pub methods: Vec<MethodReport>,
    /// Distinct candidates after merging.
    pub candidates: usize,
    /// Candidates skipped because they did not answer recently.
    pub skipped: usize,
    /// Candidates that said busy (or were still inside the `Retry-After` they gave): not counted
    /// as silent; a gateway among them is in `answers` with its last known answer, if any.
    pub busy: usize,
    /// Every answer (gateways and not), gossip-learned non-gateways left out.
    pub answers: Vec<Answer>,
    /// Whole scan time.
    pub elapsed: Duration,
    /// Whether it was cancelled before the end.
    pub cancelled: bool,
    /// The nodes and links the walking methods saw, per section (for the web UI's map).
    pub graphs: Vec<(String, Graph)>,
}

impl ScanReport {
    /// The answers from gateways.
    pub fn gateways(&self) -> Vec<&Answer> {
        self.answers.iter().filter(|a| a.info.gateway).collect()
    }

    /// The report as `mnigs scan --json` shows it.
    pub fn to_json(&self) -> Value {
        let methods: Vec<Value> = self
            .methods
            .iter()
            .map(|m| {
                object!({"section": m.section, "method": m.method, "found": m.found,
                         "gateways": m.gateways, "ms": m.elapsed.as_millis() as u64, "error": m.error})
            })
            .collect();
        let gateways: Vec<Value> = self
            .gateways()
            .iter()
            .map(|a| {
                object!({"address": a.candidate.address.to_string(), "port": a.candidate.port,
                         "name": a.info.name, "how": a.candidate.how, "hops": a.candidate.hops,
                         "rttMs": a.rtt.as_millis() as u64})
            })
            .collect();
        let graphs: serde_json::Map<String, Value> = self
            .graphs
            .iter()
            .map(|(section, g)| (section.clone(), g.to_json()))
            .collect();
        object!({"methods": methods, "candidates": self.candidates, "skipped": self.skipped,
                 "busy": self.busy,
                 "graphs": graphs,
                 "answers": self.answers.len(), "gateways": gateways,
                 "ms": self.elapsed.as_millis() as u64, "cancelled": self.cancelled})
    }
}

/// Runs scans one at a time; share it (`Arc<Scanner>`) between the supervisor and the control RPC.
pub struct Scanner {
    running: Mutex<()>,
    cancel: AtomicBool,
    negative: Mutex<HashMap<(IpAddr, u16), Silence>>,
    negative_for: Duration,
    /// Per-source budget of gossip targets, across scans.
    gossip_budget: Mutex<gossip::Budget>,
    /// Whether gossip entries must be plausible mesh addresses ([`gossip::gate`]); off only for
    /// tests on loopback.
    gossip_checked: AtomicBool,
    /// Candidates that said busy: not asked again before this instant.
    busy_until: Mutex<HashMap<(IpAddr, u16), Instant>>,
    /// Gateways' last real answers: they stand in while the gateway says busy.
    known: Mutex<HashMap<(IpAddr, u16), Known>>,
    /// Distances measured by ICMP echo, kept a while ([`super::hops::Cache`]).
    hops: Mutex<super::hops::Cache>,
}

/// A gateway's last real answer and when it came.
#[derive(Debug, Clone)]
struct Known {
    answer: Answer,
    at: Instant,
}

/// A busy candidate whose `Retry-After` is at most this is asked again within the same scan
/// (the shipped server asks for 1 s); a longer wait is left to a later scan.
pub const RETRY_WITHIN_SCAN: Duration = Duration::from_secs(2);

/// How long a gateway's last real answer stands in for it while it keeps saying busy.
pub const KNOWN_FOR: Duration = Duration::from_secs(900);

type Key = (IpAddr, u16);

fn key(c: &Candidate) -> Key {
    (c.address, c.port)
}

/// A candidate's run of unanswered probes: how many, and when the last one was.
#[derive(Debug, Clone, Copy)]
struct Silence {
    misses: u32,
    last: Instant,
}

/// The skip after the first two misses in a row; each further miss doubles it.
const FIRST_SKIP: Duration = Duration::from_secs(15);

/// How long a candidate that missed `misses` probes in a row is left out, at most `cap`: not at
/// all after one miss, then [`FIRST_SKIP`], doubling with each miss.
pub fn skip_after(misses: u32, cap: Duration) -> Duration {
    if misses < 2 {
        return Duration::ZERO;
    }
    let doublings = (misses - 2).min(20);
    FIRST_SKIP.saturating_mul(1 << doublings).min(cap)
}

impl Scanner {
    /// A scanner that skips silent candidates for `negative_for` (zero: never skips).
    pub fn new(negative_for: Duration) -> Scanner {
        Scanner {
            running: Mutex::new(()),
            cancel: AtomicBool::new(false),
            negative: Mutex::new(HashMap::new()),
            negative_for,
            gossip_budget: Mutex::new(gossip::Budget::default()),
            gossip_checked: AtomicBool::new(true),
            busy_until: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            hops: Mutex::new(super::hops::Cache::default()),
        }
    }

    /// Follows gossip entries without [`gossip::gate`] (for tests whose nodes all live on
    /// loopback).
    pub fn follow_any_gossip(&self) {
        self.gossip_checked.store(false, Ordering::SeqCst);
    }

    /// Empties the negative cache: the next scan asks every candidate again.
    pub fn forget_silent(&self) {
        self.negative
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Asks the running scan, if any, to stop: no new probes start; it returns what it has.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// True while a scan runs.
    pub fn is_running(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Runs every section, probes the merged candidates, then (if a `gossip` section is
    /// configured) verifies the gateways the answers advertise.
    pub fn scan(&self, sections: &[DiscoveryConfig]) -> Result<ScanReport, ScanError> {
        let _one = self.running.try_lock().map_err(|_| ScanError::Busy)?;
        self.cancel.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let mut limits = Limits {
            concurrency: 1,
            timeout: Duration::from_millis(50),
        };
        let mut methods = Vec::new();
        let mut all = Vec::new();
        let mut gossip_on = false;
        let mut graphs = Vec::new();
        for d in sections {
            limits.concurrency = limits.concurrency.max(d.concurrency as usize);
            limits.timeout = limits
                .timeout
                .max(Duration::from_millis(u64::from(d.timeout_ms)));
            if d.method == "gossip" {
                gossip_on = true;
                continue;
            }
            let t = Instant::now();
            let (found, error) = match run_method(d) {
                Ok(f) => {
                    if let Some(g) = f.graph {
                        graphs.push((d.section.clone(), g));
                    }
                    (f.candidates, None)
                }
                Err(e) => {
                    crate::warn!("discovery {}: {e}", d.section);
                    (Vec::new(), Some(e))
                }
            };
            methods.push(MethodReport {
                section: d.section.clone(),
                method: d.method.clone(),
                found: found.len(),
                gateways: 0,
                elapsed: t.elapsed(),
                error,
            });
            all.extend(found);
        }
        let mut report = self.scan_candidates(all, limits, gossip_on);
        for m in &mut methods {
            m.gateways = report
                .gateways()
                .iter()
                .filter(|a| how_section(&a.candidate.how) == m.method)
                .count();
        }
        methods.append(&mut report.methods);
        report.methods = methods;
        report.graphs = graphs;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The probing part of [`Scanner::scan`], for candidates found elsewhere. Callers must not
    /// run it beside [`Scanner::scan`]; `scan` holds the one-at-a-time guard for it.
    pub fn scan_candidates(
        &self,
        candidates: Vec<Candidate>,
        limits: Limits,
        gossip_on: bool,
    ) -> ScanReport {
        let started = Instant::now();
        let candidates = dedup(candidates);
        let total = candidates.len();
        let fresh = self.without_negative(candidates);
        let skipped = total - fresh.len();
        // Only the gossip round needs to know who was asked (memory: 100,000 candidates).
        let probed: HashSet<(IpAddr, u16)> = if gossip_on {
            fresh.iter().map(key).collect()
        } else {
            HashSet::new()
        };
        let (mut answers, mut busy) = self.ask(fresh, limits);
        let cancelled = self.cancel.load(Ordering::SeqCst);
        let mut methods = Vec::new();
        if gossip_on && !cancelled {
            let t = Instant::now();
            let mut learned = self.without_negative(gossip::candidates(&answers, &probed));
            if self.gossip_checked.load(Ordering::SeqCst) {
                let mut budget = self.gossip_budget.lock().unwrap_or_else(|e| e.into_inner());
                let view = gossip::View::load();
                learned = gossip::gate(learned, &answers, &view, &mut budget, Instant::now());
            }
            let count = learned.len();
            let (verified, also_busy) = self.ask(learned, limits);
            busy += also_busy;
            // Only what our own probe confirmed as a gateway is kept; a forged entry ends here.
            let verified: Vec<Answer> = verified.into_iter().filter(|a| a.info.gateway).collect();
            methods.push(MethodReport {
                section: "gossip".into(),
                method: "gossip".into(),
                found: count,
                gateways: verified.len(),
                elapsed: t.elapsed(),
                error: None,
            });
            answers.extend(verified);
        }
        if !self.cancel.load(Ordering::SeqCst) {
            let mut hops = self.hops.lock().unwrap_or_else(|e| e.into_inner());
            hops.fill(&mut answers, Instant::now(), |at| {
                super::hops::echo_hops(at, limits.timeout)
            });
        }
        ScanReport {
            methods,
            candidates: total,
            skipped,
            busy,
            answers,
            elapsed: started.elapsed(),
            cancelled: self.cancel.load(Ordering::SeqCst),
            graphs: Vec::new(),
        }
    }

    /// Probes `candidates` except those still inside a `Retry-After`; waits out a short
    /// `Retry-After` once; updates the negative cache (unless cancelled), the busy times and the
    /// last known answers. Returns the answers, busy gateways' last known answers among them, and
    /// how many candidates were busy.
    fn ask(&self, candidates: Vec<Candidate>, limits: Limits) -> (Vec<Answer>, usize) {
        let (waiting, asking): (Vec<Candidate>, Vec<Candidate>) = {
            let now = Instant::now();
            let mut until = self.busy_until.lock().unwrap_or_else(|e| e.into_inner());
            until.retain(|_, t| *t > now);
            candidates
                .into_iter()
                .partition(|c| until.contains_key(&key(c)))
        };
        let asked: Vec<Key> = asking.iter().map(key).collect();
        let mut probed = probe_each(asking, limits.concurrency, limits.timeout, &self.cancel);
        let (soon, later): (Vec<_>, Vec<_>) = std::mem::take(&mut probed.busy)
            .into_iter()
            .partition(|(_, wait)| *wait <= RETRY_WITHIN_SCAN);
        probed.busy = later;
        if let Some(wait) = soon.iter().map(|(_, w)| *w).max() {
            if self.sleep_unless_cancelled(wait) {
                let again: Vec<Candidate> = soon.into_iter().map(|(c, _)| c).collect();
                let second = probe_each(again, limits.concurrency, limits.timeout, &self.cancel);
                probed.answers.extend(second.answers);
                probed.busy.extend(second.busy);
            } else {
                probed.busy.extend(soon);
            }
        }
        let now = Instant::now();
        {
            let mut until = self.busy_until.lock().unwrap_or_else(|e| e.into_inner());
            for (c, wait) in &probed.busy {
                until.insert(key(c), now + *wait);
            }
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, k| now.duration_since(k.at) < KNOWN_FOR);
        for a in &probed.answers {
            if a.info.gateway {
                let answer = a.clone();
                known.insert(key(&a.candidate), Known { answer, at: now });
            } else {
                known.remove(&key(&a.candidate));
            }
        }
        let mut alive: HashSet<Key> = probed.answers.iter().map(|a| key(&a.candidate)).collect();
        let busy: Vec<&Candidate> = probed
            .busy
            .iter()
            .map(|(c, _)| c)
            .chain(waiting.iter())
            .collect();
        let mut answers = probed.answers;
        for c in &busy {
            alive.insert(key(c));
            if let Some(k) = known.get(&key(c)) {
                answers.push(Answer {
                    candidate: (*c).clone(),
                    info: k.answer.info.clone(),
                    rtt: k.answer.rtt,
                    node: None,
                });
            }
        }
        if !self.cancel.load(Ordering::SeqCst) {
            self.remember(&asked, &alive);
        }
        (answers, busy.len())
    }

    /// Sleeps for `wait` unless the scan is cancelled first; true if it slept the whole time.
    fn sleep_unless_cancelled(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while !self.cancel.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }

    fn without_negative(&self, candidates: Vec<Candidate>) -> Vec<Candidate> {
        let now = Instant::now();
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        // A run of misses is forgotten once the candidate has not been asked for a long while.
        let forget = self.negative_for.saturating_mul(2).max(FIRST_SKIP * 4);
        neg.retain(|_, s| now.duration_since(s.last) < forget);
        candidates
            .into_iter()
            .filter(|c| {
                neg.get(&(c.address, c.port)).is_none_or(|s| {
                    now.duration_since(s.last) >= skip_after(s.misses, self.negative_for)
                })
            })
            .collect()
    }

    /// Silent candidates count a miss in the negative cache; those that answered (busy or not)
    /// leave it.
    fn remember(&self, asked: &[Key], answered: &HashSet<Key>) {
        if self.negative_for.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        for k in asked {
            if answered.contains(k) {
                neg.remove(k);
            } else {
                let s = neg.entry(*k).or_insert(Silence {
                    misses: 0,
                    last: now,
                });
                s.misses = s.misses.saturating_add(1);
                s.last = now;
            }
        }
    }
}

/// The method part of a candidate's `how` (`routes:babel` → `routes`).
fn how_section(how: &str) -> &str {
    how.split(':').next().unwrap_or(how)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::Arc;

    /// A loopback `nodeInfo` server answering every connection with `info`.
    fn server(info: Value) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = json!({"jsonrpc": "2.0", "id": 1, "result": info}).to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    /// How [`switchable`] answers: `busy_for` > 0 means "429, Retry-After: `busy_for`" (a
    /// negative value: that many busy answers with `Retry-After: 1`, then `info`); `asked`
    /// counts the connections.
    struct Switch {
        info: Mutex<Value>,
        busy_for: std::sync::atomic::AtomicI32,
        asked: std::sync::atomic::AtomicUsize,
    }

    /// A loopback `nodeInfo` server whose answers the test changes on the fly.
    fn switchable(info: Value) -> (SocketAddr, Arc<Switch>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sw = Arc::new(Switch {
            info: Mutex::new(info),
            busy_for: 0.into(),
            asked: 0.into(),
        });
        let state = sw.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                state.asked.fetch_add(1, Ordering::SeqCst);
                let busy_for = state.busy_for.load(Ordering::SeqCst);
                if busy_for < 0 {
                    state.busy_for.fetch_add(1, Ordering::SeqCst);
                }
                let reply = if busy_for != 0 {
                    let body =
                        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"busy"}}"#;
                    format!(
                        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        busy_for.max(1),
                        body.len()
                    )
                } else {
                    let info = state.info.lock().unwrap().clone();
                    let body = json!({"jsonrpc": "2.0", "id": 1, "result": info}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        (addr, sw)
    }

    /// A server that accepts and never answers: a probe to it times out.
    fn silent() -> (SocketAddr, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (l.local_addr().unwrap(), l)
    }

    fn info(gateway: bool, gossip: &[SocketAddr]) -> Value {
        json!({"success": true, "name": if gateway {"gw"} else {"node"}, "version": "0",
               "gateway": gateway, "methods": [], "terms": {"maxSubscribers": 1, "subscribers": 0,
               "leaseSeconds": 60, "price": 0, "bandwidthDown": 0, "bandwidthUp": 0},
               "uplink": {"healthy": true},
               "gateways": gossip.iter().map(|a| json!({"address": a.ip().to_string(), "port": a.port(), "seenAgo": 1})).collect::<Vec<_>>()})
    }

    fn cand(a: SocketAddr) -> Candidate {
        Candidate {
            address: a.ip(),
            port: a.port(),
            how: "routes:babel".into(),
            hops: 1,
        }
    }

    fn limits(ms: u64) -> Limits {
        Limits {
            concurrency: 4,
            timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn gossip_is_verified_and_forgeries_dropped() {
        let far_gw = server(info(true, &[]));
        let not_gw = server(info(false, &[]));
        let (nobody, _keep) = silent();
        let near = server(info(false, &[far_gw, not_gw, nobody]));
        let s = Scanner::new(Duration::from_secs(60));
        s.follow_any_gossip();
        let r = s.scan_candidates(vec![cand(near)], limits(300), true);
        let gws: Vec<SocketAddr> = r.gateways().iter().map(|a| a.candidate.socket()).collect();
        assert_eq!(gws, vec![far_gw]);
        assert!(
            r.gateways()[0]
                .candidate
                .how
                .starts_with("gossip:127.0.0.1")
        );
        assert_eq!(r.methods[0].found, 3);
        assert_eq!(r.methods[0].gateways, 1);
        // The non-gateway the gossip pointed at is not among the answers either.
        assert!(r.answers.iter().all(|a| a.candidate.socket() != not_gw));
        // Without a gossip section, the entries are not followed.
        let r = Scanner::new(Duration::ZERO).scan_candidates(vec![cand(near)], limits(300), false);
        assert!(r.gateways().is_empty());
    }

    #[test]
    fn silent_candidates_are_skipped_until_the_cache_expires() {
        let gw = server(info(true, &[]));
        let refused = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let s = Scanner::new(Duration::from_millis(400));
        let both = || vec![cand(gw), cand(refused)];
        let r = s.scan_candidates(both(), limits(300), false);
        assert_eq!((r.candidates, r.skipped, r.gateways().len()), (2, 0, 1));
        // One miss is not enough: the node may just have started later than us.
        let r = s.scan_candidates(both(), limits(300), false);
        assert_eq!((r.skipped, r.gateways().len()), (0, 1));
        let r = s.scan_candidates(both(), limits(300), false);
        assert_eq!((r.skipped, r.gateways().len()), (1, 1));
        std::thread::sleep(Duration::from_millis(450));
        let r = s.scan_candidates(both(), limits(300), false);
        assert_eq!(r.skipped, 0);
        // The operator's scan asks everyone.
        s.forget_silent();
        let r = s.scan_candidates(both(), limits(300), false);
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn a_busy_gateway_keeps_its_last_known_answer_and_is_asked_after_retry_after() {
        let (gw, sw) = switchable(info(true, &[]));
        let s = Scanner::new(Duration::from_secs(600));
        let asked = || sw.asked.load(Ordering::SeqCst);
        let names = |r: &ScanReport| -> Vec<String> {
            r.gateways().iter().map(|a| a.info.name.clone()).collect()
        };
        let r = s.scan_candidates(vec![cand(gw)], limits(300), false);
        assert_eq!((names(&r), r.busy, asked()), (vec!["gw".to_string()], 0, 1));

        // Busy for 3 s (longer than RETRY_WITHIN_SCAN): listed with what it said last time.
        sw.busy_for.store(3, Ordering::SeqCst);
        *sw.info.lock().unwrap() = json!({"changed": "while busy"});
        let busy_at = Instant::now();
        for _ in 0..3 {
            let r = s.scan_candidates(vec![cand(gw)], limits(300), false);
            assert_eq!(names(&r), ["gw"], "kept with its last known info");
            assert_eq!((r.busy, r.skipped), (1, 0), "busy, never silent");
            assert_eq!(r.gateways()[0].candidate.socket(), gw);
        }
        assert_eq!(asked(), 2, "not asked again inside its Retry-After");
        assert!(
            busy_at.elapsed() < Duration::from_secs(2),
            "no in-scan wait for 3 s"
        );

        // After Retry-After it is asked again and what it says now counts.
        sw.busy_for.store(0, Ordering::SeqCst);
        let mut renamed = info(true, &[]);
        renamed["name"] = json!("gw-now");
        *sw.info.lock().unwrap() = renamed;
        // The 3 s count from the busy answer, which came within a probe timeout after busy_at.
        let after = Duration::from_millis(3000 + 300 + 200);
        std::thread::sleep(after.saturating_sub(busy_at.elapsed()));
        let r = s.scan_candidates(vec![cand(gw)], limits(300), false);
        assert_eq!(
            (names(&r), r.busy, asked()),
            (vec!["gw-now".to_string()], 0, 3)
        );
    }

    #[test]
    fn a_short_retry_after_is_waited_out_within_the_scan() {
        // Never seen before, busy once with Retry-After: 1: the same scan finds it.
        let (gw, sw) = switchable(info(true, &[]));
        sw.busy_for.store(-1, Ordering::SeqCst);
        let s = Scanner::new(Duration::from_secs(600));
        let t = Instant::now();
        let r = s.scan_candidates(vec![cand(gw)], limits(300), false);
        assert_eq!((r.gateways().len(), r.busy), (1, 0));
        assert_eq!(sw.asked.load(Ordering::SeqCst), 2);
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

        // Busy on both tries and never seen: not listed, but not silent either; asked again
        // once its Retry-After has passed.
        let (other, sw) = switchable(info(true, &[]));
        sw.busy_for.store(-2, Ordering::SeqCst);
        let r = s.scan_candidates(vec![cand(other)], limits(300), false);
        assert_eq!((r.gateways().len(), r.busy, r.skipped), (0, 1, 0));
        std::thread::sleep(Duration::from_millis(1100));
        let r = s.scan_candidates(vec![cand(other)], limits(300), false);
        assert_eq!((r.gateways().len(), r.busy, r.skipped), (1, 0, 0));
    }

    #[test]
    fn the_skip_grows_with_the_misses_up_to_the_cap() {
        let cap = Duration::from_secs(600);
        let skips: Vec<u64> = (0..10).map(|m| skip_after(m, cap).as_secs()).collect();
        assert_eq!(skips, [0, 0, 15, 30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(skip_after(u32::MAX, cap), cap);
        assert_eq!(skip_after(5, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn one_scan_at_a_time_and_cancellable() {
        let (addr, _keep) = silent();
        let s = Arc::new(Scanner::new(Duration::ZERO));
        // Twenty silent candidates one at a time, 500 ms each: 10 s unless cancelled.
        let many: Vec<Candidate> = (0..20)
            .map(|i| Candidate {
                port: addr.port(),
                hops: i,
                how: format!("t{i}"),
                address: addr.ip(),
            })
            .map(|mut c| {
                c.address = format!("127.0.0.{}", 1 + c.hops).parse().unwrap();
                c
            })
            .collect();
        let _listeners: Vec<TcpListener> = (2..=20)
            .filter_map(|i| TcpListener::bind((format!("127.0.0.{i}").as_str(), addr.port())).ok())
            .collect();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let _guard = s2.running.lock().unwrap();
            let l = Limits {
                concurrency: 1,
                timeout: Duration::from_millis(500),
            };
            let started = Instant::now();
            let r = s2.scan_candidates(many, l, false);
            (r, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(s.is_running());
        assert_eq!(s.scan(&[]).unwrap_err(), ScanError::Busy);
        s.cancel();
        let (r, took) = t.join().unwrap();
        assert!(r.cancelled);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(!s.is_running());
        assert!(s.scan(&[]).is_ok());
    }
}
