//! What goes into the subscriber's [`Core`](super::core::Core) and what comes out: its
//! [`Event`]s and [`Effect`]s, the [`State`] it is in and the [`Link`]s it holds. Plain data.

use super::quality::Summary;
use super::select;
use crate::config::SubscriberConfig;
use crate::discovery::Answer;
use crate::hooks::{self, HookEnv, session_env};
use crate::protocol::Grant;
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Where the subscriber stands, as `mnigs status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The thread has not decided anything yet.
    Starting,
    /// Offline and scanning.
    Scanning,
    /// Offline, waiting for the next scan.
    Idle,
    /// Offline and registering with a gateway.
    Connecting,
    /// A tunnel carries the traffic.
    Connected,
    /// The only tunnel is down and nobody else is usable: kept and probed on.
    Degraded,
    /// Left by the operator; offline until `scan` or `connect`.
    Disconnected,
    /// The thread ended.
    Stopped,
}

impl State {
    /// The word `mnigs status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Scanning => "scanning",
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Degraded => "degraded",
            State::Disconnected => "disconnected",
            State::Stopped => "stopped",
        }
    }
}

/// One lease with its tunnel.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The gateway's RPC address.
    pub gateway: SocketAddr,
    /// The node it belongs to ([`crate::discovery::nodes`]), as the last scan joined it;
    /// `None`: known by `gateway`'s address only.
    pub node: Option<std::net::IpAddr>,
    /// The name it reported (a label).
    pub name: String,
    /// Its grant.
    pub grant: Grant,
    /// The tunnel interface.
    pub interface: String,
    /// When the session began (Unix seconds).
    pub connected_at: i64,
    /// When the tunnel came up.
    pub up_since: Instant,
    /// When the lease runs out.
    pub expires: Instant,
    /// When to renew it.
    pub renew_at: Instant,
    /// When a probe through this tunnel was last answered; `None`: never. Until its first
    /// answer a probe waits its whole time (a new tunnel may need a while for its first packets,
    /// e.g. address resolution on a layer-2 method), whatever the gateway's earlier tunnels
    /// answered in; and a tunnel kept while silent is kept for at most
    /// [`super::core::KEEP_SILENT`] after its last answer ([`super::Core`]).
    pub last_answer: Option<Instant>,
}

impl Link {
    /// The gateway's identity ([`select::id`]): its node, else the mesh address we reach it at.
    pub fn id(&self) -> String {
        self.node.unwrap_or(self.gateway.ip()).to_string()
    }

    /// The hook variables describing this session.
    pub fn env(&self) -> HookEnv {
        session_env(&self.name, self.gateway, &self.grant, Some(&self.interface))
    }
}

/// A tunnel that came up (after a registration, or a session resumed after a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLink {
    /// The gateway's RPC address.
    pub gateway: SocketAddr,
    /// The name it reported.
    pub name: String,
    /// Its grant.
    pub grant: Grant,
    /// The tunnel interface.
    pub interface: String,
    /// When the session began (Unix seconds).
    pub connected_at: i64,
    /// Lease length in seconds.
    pub lease: u32,
}

/// A registration attempt (one gateway, one method) that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RegFailure {
    /// The gateway's answer.
    pub answer: Answer,
    /// `"<name> via <method>: <why>"`.
    pub msg: String,
    /// Nobody was at its RPC port (refused, no route).
    pub unreachable: bool,
    /// It answered "busy" (HTTP 503/429) with this `Retry-After`.
    pub busy_for: Option<Duration>,
}

/// What `renewConnection` came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewOutcome {
    /// Renewed for this many seconds.
    Renewed(u32),
    /// The gateway refused (the text is safe to show).
    Refused(String),
    /// No usable answer (the error).
    Failed(String),
}

/// Log levels of [`Effect::Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The thread starts (before a saved session is resumed).
    Start,
    /// A deadline passed ([`Core::next_deadline`](super::core::Core::next_deadline)).
    Tick,
    /// The operator asked for a scan (`mnigs scan`).
    ScanAsked,
    /// The operator asked for this gateway, already checked, with these methods.
    ConnectAsked {
        /// Its `nodeInfo` answer.
        answer: Answer,
        /// The methods to try, in order.
        methods: Vec<String>,
    },
    /// The operator asked for a gateway that cannot be used (why).
    ConnectRefused(String),
    /// The operator asked to leave and stay offline.
    DisconnectAsked,
    /// The daemon stops.
    Stop,
    /// New settings (SIGHUP); `prices` of the gateways we hold leases with, by slot, where the
    /// store knows them.
    Reload {
        /// The new subscriber settings.
        cfg: Box<SubscriberConfig>,
        /// Slot → the price its gateway asks.
        prices: HashMap<usize, u64>,
    },
    /// The session saved before a restart is up again in slot 0.
    Resumed(NewLink),
    /// Something the caller could not do (shown as the last error).
    Failed(String),
    /// A scan's result (`None`: another scan was running); `background` if it was started by
    /// `Effect::Scan { background: true }`.
    Scanned {
        /// The gateways that answered.
        found: Option<Vec<Answer>>,
        /// Started in the background.
        background: bool,
    },
    /// The answer to [`Effect::Register`]: the attempts that failed, in order, and the tunnel
    /// of the one that worked.
    Registered {
        /// Failed attempts.
        failures: Vec<RegFailure>,
        /// The new tunnel, if one attempt worked.
        link: Option<NewLink>,
    },
    /// The answer to [`Effect::RouteVia`].
    Routed(Result<(), String>),
    /// The answer to [`Effect::Renew`].
    Renewed(RenewOutcome),
    /// The answer to [`Effect::Probe`]: the round trip, `None` if nothing answered.
    Probed(Option<Duration>),
}

impl Event {
    /// The variant's name, for a log line (its whole `Debug` would pull every type it carries
    /// into the router build).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "Start",
            Event::Tick => "Tick",
            Event::ScanAsked => "ScanAsked",
            Event::ConnectAsked { .. } => "ConnectAsked",
            Event::ConnectRefused(_) => "ConnectRefused",
            Event::DisconnectAsked => "DisconnectAsked",
            Event::Stop => "Stop",
            Event::Reload { .. } => "Reload",
            Event::Resumed(_) => "Resumed",
            Event::Failed(_) => "Failed",
            Event::Scanned { .. } => "Scanned",
            Event::Registered { .. } => "Registered",
            Event::Routed(_) => "Routed",
            Event::Renewed(_) => "Renewed",
            Event::Probed(_) => "Probed",
        }
    }
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a log line.
    Log(Level, String),
    /// Publish the status ([`Core::status`](super::core::Core::status)).
    Publish,
    /// Remove rules and tables left by an earlier run, then add the mesh rule (`Some`: lookup
    /// main without routes up to this prefix length) and, if that worked, the prohibit rule.
    SetUpRouting {
        /// The mesh rule's suppress length, if any.
        mesh: Option<u8>,
        /// `fail_closed`.
        prohibit: bool,
    },
    /// Remove every rule and table of ours.
    TearDownRouting,
    /// Remove the tunnel rule (hot standby).
    DropTunnelRule,
    /// Scanning may ask silent candidates again (the operator asked).
    ForgetSilent,
    /// Scan; waited for (answer [`Event::Scanned`]) unless `background`.
    Scan {
        /// Run it on a helper thread; the answer comes through the channel.
        background: bool,
    },
    /// Store what a scan found.
    StoreGateways(Vec<Answer>),
    /// Question: register in `slot` with the first of `choices` that works (each choice's
    /// methods in turn). `operator`: asked for by `connect` (its key may replace a pinned one).
    Register {
        /// The slot.
        slot: usize,
        /// In order.
        choices: Vec<select::Choice>,
        /// Asked for by the operator.
        operator: bool,
    },
    /// Question: point the tunnel rule at `slot`'s table (hot standby).
    RouteVia(usize),
    /// Question: renew `slot`'s lease.
    Renew {
        /// The slot.
        slot: usize,
        /// The gateway.
        gateway: SocketAddr,
        /// The session.
        sid: String,
    },
    /// Question: probe through `slot`'s tunnel — the method's own probe (within `timeout`) if
    /// it has one, else ICMP echo to each target in turn through `interface` (each within
    /// `per_target`) until one answers.
    Probe {
        /// The slot.
        slot: usize,
        /// The method of its tunnel now, if any.
        method: Option<String>,
        /// The interface.
        interface: String,
        /// What to ping.
        targets: Vec<IpAddr>,
        /// Time for the method's own probe.
        timeout: Duration,
        /// Time per target.
        per_target: Duration,
    },
    /// Give `slot`'s lease back and take its tunnel down. `wait`: release and wait (at most
    /// 2 s), then fire the disconnect and release hooks; else release from a helper thread,
    /// without hooks (lost, not left). Without a link: only take the slot's tunnels down.
    Release {
        /// The slot.
        slot: usize,
        /// Its lease, if it had one.
        link: Option<Box<Link>>,
        /// Why.
        why: String,
        /// Release in this thread and fire hooks.
        wait: bool,
    },
    /// Take down every tunnel of every slot.
    TunnelsDown,
    /// Fire a hook about `link` with `reason`.
    Hook(hooks::Event, Box<Link>, String),
    /// Count a failure against a gateway in the store.
    CountFailure(SocketAddr),
    /// Save a gateway's probe summary (`down`: the reason of a down event).
    SaveQuality {
        /// The gateway's name (a label).
        name: String,
        /// Its summary.
        summary: Summary,
        /// Probes sent.
        probes: u64,
        /// Probes lost.
        lost: u64,
        /// Why it went down, if it did.
        down: Option<String>,
    },
    /// Save this connection for a restart.
    SaveConnection(Box<Link>),
    /// The saved connection's lease was renewed for this many seconds.
    SetConnectionExpiry(u32),
    /// Forget the saved connection.
    ForgetConnection,
    /// A failover or failback finished.
    NoteFailover {
        /// `failover` or `failback`.
        kind: &'static str,
        /// The gateway left.
        from: Option<String>,
        /// The gateway now in use.
        to: Option<String>,
        /// Why.
        reason: String,
        /// How long it took.
        duration: Duration,
    },
    /// Answer the operator's request.
    Reply(Value),
}
