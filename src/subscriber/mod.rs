//! The subscriber role.
//!
//! # Layout
//! - `select.rs`: pure scoring, ranking and the decision to move (hysteresis, back-off, ties).
//! - `probe.rs`: what is probed through a tunnel (own targets, the gateway's uplink targets, its
//!   tunnel address), pure.
//! - `quality.rs`: bounded probe windows per gateway and the down rule.
//! - `standby.rs`: when to scan early for a missing hot standby, pure.
//! - `trust.rs`: checks of everything a gateway sends (nodeInfo, grants) before it is used.
//! - `supervisor.rs`: the state machine scan → register → connect → renew → (fail over), on its own thread.

pub mod core;
pub mod probe;
pub mod quality;
pub mod select;
pub mod standby;
pub mod supervisor;
pub mod trust;
