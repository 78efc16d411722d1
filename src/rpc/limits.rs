//! What one caller may take from the RPC server: connections at once (in total and per source),
//! requests per second per source (a token bucket), and how long a request may take to arrive.
//! Pure bookkeeping on explicit instants, so every rule is tested without sockets or clocks; the
//! server ([`super::server`]) asks [`Admission::admit`] once per accepted connection (one request
//! per connection: the server always answers `Connection: close`).
//!
//! A connection gives its place back *before* its answer is written ([`Admission::leave`] once
//! the answer is ready): a client reconnects as soon as it has read the answer, and must find
//! its place free again (otherwise a client keeping to its share would be refused now and then).
//! An answer that does not fit the socket's buffer at once (a client reading slowly) is written
//! by a thread that holds one of a separate, bounded set of places ([`Admission::stall`]).

use crate::config::model::{MainConfig, Prefix};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The bounds the server enforces; [`Limits::default`] are the shipped values.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Connections served at once from all sources; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections served at once from one source ([`source_key`]); more are answered 503.
    pub max_per_source: usize,
    /// Request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
    /// Header lines; more is answered 431.
    pub max_headers: usize,
    /// Time for the whole request (headers and body) to arrive, however slowly it trickles in;
    /// a slower client is answered 408 and closed.
    pub read_timeout: Duration,
    /// Requests per second one source may sustain; 0 turns the rate limit off.
    pub rate: f64,
    /// Requests one source may send at once after being quiet (bucket size).
    pub burst: f64,
    /// The owner's sources: the rate limit does not apply to them (the per-source cap still
    /// does), and [`Limits::reserved`] connections are kept for them. The daemon passes
    /// `authorized_network`, whose callers control the node anyway (the CLI, LuCI through it).
    pub rate_exempt: Vec<Prefix>,
    /// Connections of `max_connections` that only the owner's sources may take, so that mesh
    /// sources holding every connection they may cannot lock the owner out.
    pub reserved: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            max_per_source: 8,
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            read_timeout: Duration::from_secs(10),
            rate: 20.0,
            burst: 40.0,
            rate_exempt: MainConfig::default().authorized_network,
            reserved: 8,
        }
    }
}

impl Limits {
    /// The limits `config mnigs 'main'` asks for (`rate_limit`, `rate_burst`, `max_connections`,
    /// `read_timeout`); one source may hold an eighth of the connections, at least two, and an
    /// eighth (at least two, while one is left for the mesh) is reserved for the owner.
    pub fn from_config(main: &MainConfig) -> Limits {
        let max_connections = main.max_connections.max(1) as usize;
        Limits {
            max_connections,
            max_per_source: (max_connections / 8).max(2),
            reserved: (max_connections / 8)
                .max(2)
                .min(max_connections.saturating_sub(1)),
            read_timeout: Duration::from_secs(u64::from(main.read_timeout.max(1))),
            rate: f64::from(main.rate_limit),
            burst: f64::from(main.rate_burst.max(1)),
            rate_exempt: main.authorized_network.clone(),
            ..Limits::default()
        }
    }
}

pub use crate::prefix::source_key;

/// A token bucket: holds up to `burst` tokens, gains `rate` per second, each request takes one.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = self.last.max(now);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the bucket holds a whole token again (zero if it does at `now`).
    pub fn wait_for_token(&self, rate: f64, burst: f64, now: Instant) -> Duration {
        let mut b = self.clone();
        b.refill(rate, burst, now);
        if b.tokens >= 1.0 || rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - b.tokens) / rate)
    }

    /// Whether the bucket is full again at `now` (then it can be forgotten: a new one is equal).
    pub fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let mut b = self.clone();
        b.refill(rate, burst, now);
        b.tokens >= burst
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`Limits::max_connections`] reached.
    Busy,
    /// [`Limits::max_per_source`] reached for this source.
    SourceBusy,
    /// The source's token bucket is empty.
    RateLimited,
}

impl Refusal {
    /// The HTTP status it is answered with: 503 when the node as a whole is full, 429 when
    /// this source is over its own share (connections or rate).
    pub fn status(self) -> u16 {
        match self {
            Refusal::Busy => 503,
            Refusal::SourceBusy | Refusal::RateLimited => 429,
        }
    }

    /// What the refused caller is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Busy => "server busy: too many connections, retry later",
            Refusal::SourceBusy => "too many connections from your address, retry later",
            Refusal::RateLimited => "too many requests from your address, retry later",
        }
    }
}

/// Most sources remembered at once; beyond it full buckets are forgotten first, then the least
/// recently seen, so memory stays bounded whatever the number of addresses an attacker has.
pub const MAX_TRACKED_SOURCES: usize = 4096;

/// Connection counts and token buckets of all sources.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    open: usize,
    open_by_source: HashMap<IpAddr, usize>,
    buckets: HashMap<IpAddr, TokenBucket>,
    stalled: usize,
}

impl Admission {
    /// Nothing open, every bucket full.
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            open: 0,
            open_by_source: HashMap::new(),
            buckets: HashMap::new(),
            stalled: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decides on a new connection from `ip` at `now`; when admitted the caller must call
    /// [`Admission::leave`] with the same `ip` once the connection is closed.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let key = source_key(ip);
        let owner = self.limits.rate_exempt.iter().any(|p| p.contains(ip));
        let cap = if owner {
            self.limits.max_connections
        } else {
            self.limits
                .max_connections
                .saturating_sub(self.limits.reserved)
        };
        if self.open >= cap {
            return Err(Refusal::Busy);
        }
        let mine = self.open_by_source.get(&key).copied().unwrap_or(0);
        if mine >= self.limits.max_per_source {
            return Err(Refusal::SourceBusy);
        }
        if self.limits.rate > 0.0 && !owner {
            let (rate, burst) = (self.limits.rate, self.limits.burst.max(1.0));
            if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_TRACKED_SOURCES {
                self.forget(now);
            }
            let bucket = self
                .buckets
                .entry(key)
                .or_insert_with(|| TokenBucket::full(burst, now));
            if !bucket.take(rate, burst, now) {
                return Err(Refusal::RateLimited);
            }
        }
        self.open += 1;
        *self.open_by_source.entry(key).or_insert(0) += 1;
        Ok(())
    }

    /// A connection admitted for `ip` is closed.
    pub fn leave(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.open_by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.open_by_source.remove(&key);
            }
        }
    }

    /// A connection whose place was given back with [`Admission::leave`] (its answer ready)
    /// must wait for its client to take the rest of the answer: takes one of the places for
    /// such writers, at most `max_connections` at once; `false` when none is free (then the
    /// connection is closed rather than holding a thread). On `true`, call
    /// [`Admission::unstall`] once written.
    pub fn stall(&mut self) -> bool {
        if self.stalled >= self.limits.max_connections {
            return false;
        }
        self.stalled += 1;
        true
    }

    /// A writer that [`Admission::stall`]ed is done.
    pub fn unstall(&mut self) {
        self.stalled = self.stalled.saturating_sub(1);
    }

    /// Writers waiting for their clients ([`Admission::stall`]).
    pub fn stalled(&self) -> usize {
        self.stalled
    }

    /// How long a caller refused for `refusal` should wait before asking again (the
    /// `Retry-After` it is sent), in whole seconds, at least one: until the source's bucket
    /// holds a token again when it is rate limited, otherwise one second (connections are short).
    pub fn retry_after(&self, ip: IpAddr, refusal: Refusal, now: Instant) -> u64 {
        let wait = match refusal {
            Refusal::RateLimited => self
                .buckets
                .get(&source_key(ip))
                .map_or(Duration::ZERO, |b| {
                    b.wait_for_token(self.limits.rate, self.limits.burst.max(1.0), now)
                }),
            Refusal::Busy | Refusal::SourceBusy => Duration::ZERO,
        };
        (wait.as_secs_f64().ceil() as u64).max(1)
    }

    /// Connections open now (all sources).
    pub fn open(&self) -> usize {
        self.open
    }

    /// Sources with a bucket remembered.
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }

    fn forget(&mut self, now: Instant) {
        let (rate, burst) = (self.limits.rate, self.limits.burst.max(1.0));
        self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
        if self.buckets.len() >= MAX_TRACKED_SOURCES {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn limits(rate: f64, burst: f64) -> Limits {
        Limits {
            rate_exempt: Vec::new(),
            max_connections: 100,
            max_per_source: 100,
            rate,
            burst,
            ..Limits::default()
        }
    }

    #[test]
    fn shipped_config_gives_default_limits() {
        let main = MainConfig::default();
        assert_eq!(Limits::from_config(&main), Limits::default());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(3.0, t0);
        assert!(b.take(2.0, 3.0, t0));
        assert!(b.take(2.0, 3.0, t0));
        assert!(b.take(2.0, 3.0, t0));
        assert!(!b.take(2.0, 3.0, t0), "burst of 3 spent");
        // 2 tokens per second: after 0.5 s exactly one more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(2.0, 3.0, t1));
        assert!(!b.take(2.0, 3.0, t1));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(100);
        assert!(b.is_full(2.0, 3.0, t2));
        for _ in 0..3 {
            assert!(b.take(2.0, 3.0, t2));
        }
        assert!(!b.take(2.0, 3.0, t2));
    }

    #[test]
    fn clock_going_backwards_gives_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(1.0, t0);
        assert!(b.take(1.0, 1.0, t0));
        assert!(!b.take(1.0, 1.0, t0 - Duration::from_secs(5)));
        assert!(!b.take(1.0, 1.0, t0));
    }

    #[test]
    fn one_source_out_of_tokens_does_not_limit_another() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1.0, 2.0));
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        a.leave(ip(2));
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        a.leave(ip(2));
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::RateLimited));
        assert_eq!(a.admit(ip(3), t0), Ok(()));
        assert_eq!(a.open(), 1);
        assert_eq!(
            a.admit(ip(2), t0 + Duration::from_secs(1)),
            Ok(()),
            "one token back after a second"
        );
    }

    #[test]
    fn exempt_sources_are_not_rate_limited() {
        let t0 = Instant::now();
        let mut l = limits(1.0, 1.0);
        l.rate_exempt = vec!["127.0.0.0/8".parse().unwrap()];
        let mut a = Admission::new(l);
        let outside = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        for _ in 0..100 {
            assert_eq!(a.admit(ip(1), t0), Ok(()));
            a.leave(ip(1));
        }
        assert_eq!(a.admit(outside, t0), Ok(()));
        a.leave(outside);
        assert_eq!(a.admit(outside, t0), Err(Refusal::RateLimited));
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(0.0, 0.0));
        for _ in 0..1000 {
            assert_eq!(a.admit(ip(2), t0), Ok(()));
            a.leave(ip(2));
        }
        assert_eq!(a.tracked_sources(), 0);
    }

    #[test]
    fn connection_caps_total_and_per_source() {
        let t0 = Instant::now();
        let mut a = Admission::new(Limits {
            max_connections: 3,
            max_per_source: 2,
            rate: 0.0,
            ..Limits::default()
        });
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::SourceBusy));
        assert_eq!(a.admit(ip(3), t0), Ok(()));
        assert_eq!(a.admit(ip(4), t0), Err(Refusal::Busy));
        a.leave(ip(2));
        assert_eq!(a.admit(ip(4), t0), Ok(()));
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::Busy));
        for x in [2, 3, 4] {
            a.leave(ip(x));
        }
        assert_eq!(a.open(), 0);
        assert!(a.open_by_source.is_empty(), "no counter left behind");
    }

    #[test]
    fn the_owners_share_stays_free_when_the_mesh_holds_all_it_may() {
        let t0 = Instant::now();
        let mut l = Limits::from_config(&MainConfig::default());
        l.rate = 0.0;
        assert_eq!(
            (l.max_connections, l.max_per_source, l.reserved),
            (64, 8, 8)
        );
        let mut a = Admission::new(l);
        let mesh = |n: u32, m: u32| IpAddr::V4(Ipv4Addr::new(10, 0, n as u8, m as u8));
        let mut held = 0;
        for n in 0..8 {
            for m in 0..8 {
                if a.admit(mesh(n, m), t0).is_ok() {
                    held += 1;
                }
            }
        }
        assert_eq!(held, 56, "the mesh gets all but the reserved share");
        assert_eq!(a.admit(mesh(9, 9), t0), Err(Refusal::Busy));
        for _ in 0..8 {
            assert_eq!(a.admit(ip(1), t0), Ok(()), "the owner still gets in");
        }
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::Busy), "64 in all");
        let tiny = MainConfig {
            max_connections: 1,
            ..MainConfig::default()
        };
        assert_eq!(Limits::from_config(&tiny).reserved, 0, "the mesh keeps one");
    }

    #[test]
    fn refused_connections_do_not_spend_tokens() {
        let t0 = Instant::now();
        let mut a = Admission::new(Limits {
            max_connections: 10,
            max_per_source: 1,
            rate: 1.0,
            burst: 1.0,
            rate_exempt: Vec::new(),
            ..Limits::default()
        });
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::SourceBusy));
        a.leave(ip(2));
        assert_eq!(
            a.admit(ip(2), t0 + Duration::from_secs(1)),
            Ok(()),
            "the refusal did not cost the token regained in the meantime"
        );
    }

    #[test]
    fn writers_waiting_for_their_clients_are_bounded() {
        let mut a = Admission::new(Limits {
            max_connections: 2,
            max_per_source: 1,
            rate: 0.0,
            ..Limits::default()
        });
        assert!(a.stall());
        assert!(a.stall());
        assert!(!a.stall(), "at most max_connections");
        a.unstall();
        assert!(a.stall());
        a.unstall();
        a.unstall();
        assert_eq!(a.stalled(), 0);
        // They hold no connection place: the caps are for connections being served.
        assert_eq!(a.admit(ip(2), Instant::now()), Ok(()));
    }

    #[test]
    fn refusals_name_their_status_and_wait() {
        let t0 = Instant::now();
        let mut a = Admission::new(Limits {
            max_connections: 10,
            max_per_source: 10,
            rate: 0.25,
            burst: 1.0,
            rate_exempt: Vec::new(),
            ..Limits::default()
        });
        assert_eq!(a.admit(ip(2), t0), Ok(()));
        assert_eq!(a.admit(ip(2), t0), Err(Refusal::RateLimited));
        assert_eq!(
            a.retry_after(ip(2), Refusal::RateLimited, t0),
            4,
            "one token per 4 s"
        );
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(a.retry_after(ip(2), Refusal::RateLimited, later), 2);
        assert_eq!(a.retry_after(ip(3), Refusal::Busy, t0), 1);
        assert_eq!(a.retry_after(ip(3), Refusal::SourceBusy, t0), 1);
        assert_eq!(Refusal::Busy.status(), 503);
        assert_eq!(Refusal::SourceBusy.status(), 429);
        assert_eq!(Refusal::RateLimited.status(), 429);
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let a: IpAddr = "fd00:1:2:3:4:5:6:7".parse().unwrap();
        let b: IpAddr = "fd00:1:2:3:ffff::1".parse().unwrap();
        let c: IpAddr = "fd00:1:2:4::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key(ip(9)), ip(9));
    }

    #[test]
    fn remembered_sources_stay_bounded() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1.0, 5.0));
        for n in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert_eq!(a.admit(src, t0), Ok(()));
            a.leave(src);
        }
        assert!(a.tracked_sources() <= MAX_TRACKED_SOURCES);
        // Buckets refill after 1 s: all can be forgotten, room for new sources.
        let later = t0 + Duration::from_secs(1);
        let fresh = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(a.admit(fresh, later), Ok(()));
        assert!(a.tracked_sources() < 10);
    }
}
