//! The subscriber role.
//!
//! # Layout
//! - `select.rs`: pure scoring, ranking and the decision to move (hysteresis, back-off, ties).
//! - `probe.rs`: what is probed through a tunnel (own targets, the gateway's uplink targets, its
//!   tunnel address), pure.
//! - `quality.rs`: bounded probe windows per gateway and the down rule.
//! - `standby.rs`: when to scan early for a missing hot standby, pure.
//! - [`crate::trust`] (beside this module, discovery uses it too): checks of everything a gateway
//!   sends (nodeInfo, grants) before it is used.
//! - `core.rs`: the state machine scan → register → connect → probe → renew → (fail over) as
//!   decisions without I/O: `Core::on(event, now)` returns the effects to carry out (unit tests
//!   for every rule in `core_tests.rs`); the health of a path (probes, renewals) in `core_health.rs`.
//! - `events.rs`: what goes into the core and comes out (events, effects, state, links), plain data.
//! - `supervisor.rs`: the thread, its channel and the execution of the core's effects (RPC
//!   calls, tunnels, policy routing, hooks, store).

pub mod core;
pub mod events;
pub mod probe;
pub mod quality;
pub mod select;
pub mod standby;
pub mod supervisor;
