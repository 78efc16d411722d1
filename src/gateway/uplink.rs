//! The gateway's check of its own Internet access: ICMP echo out of `wan_interface` every
//! `uplink_interval` seconds (default 5) to `list uplink_target`, or — when none is configured —
//! to [`DEFAULT_TARGETS`]. Healthy while any target answers; the result goes into
//! `nodeInfo.uplink`, and no new leases are granted while it is unhealthy.
//!
//! The gateway also *advertises* the targets that work (`nodeInfo.uplink.targets` and
//! `uplinkTargets` in the lease answer), so that its subscribers probe them through their
//! tunnels: a gateway that lost its ISP still answers on the mesh, but the Internet behind it
//! does not (see `subscriber::probe`).
//!
//! # Cost
//! One round probes the targets in turn, starting at a different one each round, and stops at the
//! first answer: with a working uplink one 39-byte echo request (and its reply) per round, 12 a
//! minute at the default interval (under 0.5 KB/min each way); with a dead uplink at most one per
//! target per round.
//!
//! # Default targets
//! A network that blocks ICMP to the public anycast addresses must not lose its gateway to this
//! check: a default target that has **never** answered since start counts for nothing, the
//! uplink is assumed healthy and the check is reported as *unverified* (status, web page,
//! LuCI), and such targets are not advertised. Configured targets are trusted as given.
//!
//! # Layout
//! - [`Tracker`]: the pure state (results in, health / advertised targets / check state out).
//! - [`spawn`]: the thread that sends the echoes and feeds the tracker.

use crate::chan::{Receiver, RecvTimeoutError};
use crate::sys::icmp;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checked when no `uplink_target` is configured: well-known anycast resolvers of three
/// operators (Cloudflare, Google, Quad9), so that one operator's outage or rate limit is not an
/// uplink failure.
pub const DEFAULT_TARGETS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
];

/// What one echo to one target gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The target answered.
    Answered,
    /// No answer (timeout, or the network or host was unreachable: the uplink's fault).
    NoReply,
    /// The echo could not be sent at all (no such interface, no raw socket): the check's fault.
    CannotSend(String),
}

impl Probe {
    /// Classifies the result of [`icmp::echo`].
    pub fn from_echo(r: &io::Result<Duration>) -> Probe {
        match r {
            Ok(_) => Probe::Answered,
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN)
                    ) =>
            {
                Probe::NoReply
            }
            Err(e) => Probe::CannotSend(e.to_string()),
        }
    }
}

/// Whether the check works, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckState {
    /// No round finished yet.
    Pending,
    /// Disabled (`option uplink_check '0'`): the uplink is assumed healthy.
    Off,
    /// At least one target answered at some time: results count.
    Working,
    /// Only default targets, none of which ever answered: the uplink is assumed healthy.
    Unverified,
    /// The echoes cannot be sent (the reason); the uplink is reported as the targets' kind asks.
    Broken(String),
}

impl CheckState {
    /// The short name (`pending`, `off`, `working`, `unverified`, `broken`).
    pub fn name(&self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Off => "off",
            CheckState::Working => "working",
            CheckState::Unverified => "unverified",
            CheckState::Broken(_) => "broken",
        }
    }

    /// A sentence for people, or `None` when all is well.
    pub fn problem(&self) -> Option<String> {
        match self {
            CheckState::Pending | CheckState::Working => None,
            CheckState::Off => Some(
                "uplink check disabled (option uplink_check '0'): the uplink is assumed healthy"
                    .into(),
            ),
            CheckState::Unverified => Some(
                "no uplink check works: none of the default targets (1.1.1.1, 8.8.8.8, 9.9.9.9) \
                 has answered out of wan_interface; the uplink is assumed healthy — set \
                 list uplink_target to a host that answers ping"
                    .into(),
            ),
            CheckState::Broken(e) => Some(format!("the uplink check cannot send: {e}")),
        }
    }
}

/// The uplink check's state: fed with each round's results, it answers whether the uplink is
/// healthy, which targets to advertise and whether the check itself works.
#[derive(Debug, Clone)]
pub struct Tracker {
    targets: Vec<IpAddr>,
    defaults: bool,
    answered_ever: Vec<bool>,
    healthy: bool,
    state: CheckState,
    round: usize,
}

impl Tracker {
    /// A tracker for the configured targets, or [`DEFAULT_TARGETS`] when `configured` is empty.
    pub fn new(configured: &[IpAddr]) -> Tracker {
        let defaults = configured.is_empty();
        let targets = if defaults {
            DEFAULT_TARGETS.to_vec()
        } else {
            configured.to_vec()
        };
        Tracker {
            answered_ever: vec![false; targets.len()],
            targets,
            defaults,
            healthy: true,
            state: CheckState::Pending,
            round: 0,
        }
    }

    /// The targets of the next round, in the order to try them (each round starts one further
    /// on, so every target is tried now and then and no single one carries all the probes).
    pub fn next_round(&mut self) -> Vec<IpAddr> {
        let n = self.targets.len();
        let start = self.round % n.max(1);
        self.round = self.round.wrapping_add(1);
        (0..n).map(|i| self.targets[(start + i) % n]).collect()
    }

    /// Takes one round's results (targets not tried are left out); returns the new health when
    /// it changed.
    pub fn record(&mut self, results: &[(IpAddr, Probe)]) -> Option<bool> {
        for (t, p) in results {
            if *p == Probe::Answered
                && let Some(i) = self.targets.iter().position(|x| x == t)
            {
                self.answered_ever[i] = true;
            }
        }
        let answered = results.iter().any(|(_, p)| *p == Probe::Answered);
        let broken = results.iter().find_map(|(_, p)| match p {
            Probe::CannotSend(e) => Some(e.clone()),
            _ => None,
        });
        let all_broken = !results.is_empty()
            && results
                .iter()
                .all(|(_, p)| matches!(p, Probe::CannotSend(_)));
        let ever = self.answered_ever.iter().any(|a| *a);
        let (healthy, state) = if answered {
            (true, CheckState::Working)
        } else if all_broken {
            // Configured targets: fail safe (no leases we cannot vouch for); defaults: assume.
            (
                self.defaults && !ever,
                CheckState::Broken(broken.unwrap_or_default()),
            )
        } else if self.defaults && !ever {
            (true, CheckState::Unverified)
        } else {
            (false, CheckState::Working)
        };
        self.state = state;
        let changed = healthy != self.healthy;
        self.healthy = healthy;
        changed.then_some(healthy)
    }

    /// Whether the uplink counts as healthy.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether the check works.
    pub fn state(&self) -> &CheckState {
        &self.state
    }

    /// The targets subscribers should probe through their tunnels: the configured ones, or the
    /// default ones that have answered at least once (never one that does not work here),
    /// passed through [`crate::protocol::sane_uplink_targets`].
    pub fn advertised(&self) -> Vec<IpAddr> {
        let list: Vec<IpAddr> = if self.defaults {
            self.targets
                .iter()
                .zip(&self.answered_ever)
                .filter(|(_, a)| **a)
                .map(|(t, _)| *t)
                .collect()
        } else {
            self.targets.clone()
        };
        crate::protocol::sane_uplink_targets(&list)
    }
}

/// One round's outcome, as the gateway records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the uplink counts as healthy.
    pub healthy: bool,
    /// The targets to advertise.
    pub targets: Vec<IpAddr>,
    /// Whether the check works.
    pub state: CheckState,
}

impl Report {
    /// The tracker's current view.
    pub fn of(t: &Tracker) -> Report {
        Report {
            healthy: t.healthy(),
            targets: t.advertised(),
            state: t.state().clone(),
        }
    }
}

/// One round: tries the targets in the tracker's order out of `wan`, each within `timeout`,
/// until one answers.
pub fn round(tracker: &mut Tracker, wan: &str, timeout: Duration) -> Report {
    let mut results = Vec::new();
    for t in tracker.next_round() {
        let p = Probe::from_echo(&icmp::echo(t, Some(wan), timeout));
        let done = p == Probe::Answered;
        results.push((t, p));
        if done {
            break;
        }
    }
    tracker.record(&results);
    Report::of(tracker)
}

/// Checks every `interval` and passes each round's [`Report`] to `report`, until `stop` is
/// dropped or sent to.
pub fn spawn(
    mut tracker: Tracker,
    wan: String,
    interval: Duration,
    report: impl Fn(Report) + Send + 'static,
    stop: Receiver<()>,
) -> JoinHandle<()> {
    crate::threads::spawn(move || {
        let timeout = interval.min(Duration::from_secs(1));
        loop {
            let started = Instant::now();
            report(round(&mut tracker, &wan, timeout));
            let wait = interval.saturating_sub(started.elapsed());
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rounds_rotate_over_the_targets() {
        let mut t = Tracker::new(&[ip("192.0.2.1"), ip("192.0.2.2")]);
        assert_eq!(t.next_round(), [ip("192.0.2.1"), ip("192.0.2.2")]);
        assert_eq!(t.next_round(), [ip("192.0.2.2"), ip("192.0.2.1")]);
        assert_eq!(t.next_round()[0], ip("192.0.2.1"));
    }

    #[test]
    fn configured_targets_count_at_once_and_are_advertised() {
        let a = ip("192.0.2.1");
        let mut t = Tracker::new(&[a]);
        assert_eq!(t.state(), &CheckState::Pending);
        assert_eq!(t.advertised(), [a]);
        assert_eq!(t.record(&[(a, Probe::NoReply)]), Some(false));
        assert!(!t.healthy());
        assert_eq!(t.state(), &CheckState::Working);
        assert_eq!(t.record(&[(a, Probe::NoReply)]), None);
        assert_eq!(t.record(&[(a, Probe::Answered)]), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn defaults_that_never_answered_are_unverified_not_unhealthy() {
        let mut t = Tracker::new(&[]);
        let round: Vec<_> = t
            .next_round()
            .into_iter()
            .map(|a| (a, Probe::NoReply))
            .collect();
        assert_eq!(t.record(&round), None);
        assert!(
            t.healthy(),
            "a network without ICMP to 1.1.1.1 keeps its gateway"
        );
        assert_eq!(t.state(), &CheckState::Unverified);
        assert!(t.state().problem().unwrap().contains("uplink_target"));
        assert!(t.advertised().is_empty(), "nothing unproven is advertised");
        // Once one answered, the defaults count like configured targets.
        let q = ip("9.9.9.9");
        assert_eq!(
            t.record(&[(ip("1.1.1.1"), Probe::NoReply), (q, Probe::Answered)]),
            None
        );
        assert_eq!(t.state(), &CheckState::Working);
        assert_eq!(t.advertised(), [q]);
        let dead: Vec<_> = DEFAULT_TARGETS
            .iter()
            .map(|a| (*a, Probe::NoReply))
            .collect();
        assert_eq!(t.record(&dead), Some(false));
        assert_eq!(
            t.advertised(),
            [q],
            "still advertised: it is the uplink that failed"
        );
    }

    #[test]
    fn a_check_that_cannot_send_says_so() {
        let a = ip("192.0.2.1");
        let mut t = Tracker::new(&[a]);
        t.record(&[(a, Probe::CannotSend("No such device".into()))]);
        assert_eq!(t.state().name(), "broken");
        assert!(t.state().problem().unwrap().contains("No such device"));
        assert!(!t.healthy(), "configured targets fail safe");
        let mut d = Tracker::new(&[]);
        d.record(&[(
            ip("1.1.1.1"),
            Probe::CannotSend("Operation not permitted".into()),
        )]);
        assert_eq!(d.state().name(), "broken");
        assert!(d.healthy(), "unproven defaults assume");
    }

    #[test]
    fn unreachable_is_the_uplinks_fault_other_errors_the_checks() {
        let e = |code| Err(io::Error::from_raw_os_error(code));
        assert_eq!(Probe::from_echo(&e(libc::ENETUNREACH)), Probe::NoReply);
        assert_eq!(
            Probe::from_echo(&Err(io::Error::new(io::ErrorKind::TimedOut, "x"))),
            Probe::NoReply
        );
        assert!(matches!(
            Probe::from_echo(&e(libc::ENODEV)),
            Probe::CannotSend(_)
        ));
        assert_eq!(
            Probe::from_echo(&Ok(Duration::from_millis(3))),
            Probe::Answered
        );
    }

    #[test]
    fn advertised_targets_are_capped_and_sane() {
        let many: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        let mut with_bad = many.clone();
        with_bad.insert(0, ip("127.0.0.1"));
        let t = Tracker::new(&with_bad);
        assert_eq!(t.advertised(), many[..4]);
    }
}
