//! The subscriber role.
//!
//! # Layout
//! - `select.rs`: pure scoring, ranking and the decision to move (hysteresis, back-off, ties).
//! - `quality.rs`: bounded probe windows per gateway and the down rule.
//! - `trust.rs`: checks of everything a gateway sends (nodeInfo, grants) before it is used.
//! - `supervisor.rs`: the state machine scan → register → connect → renew → (fail over), on its own thread.

pub mod quality;
pub mod select;
pub mod supervisor;
pub mod trust;
