//! The subscriber role.
//!
//! # Layout
//! - `select.rs`: pure scoring, ranking and the decision to move (hysteresis, back-off, ties).
//! - `quality.rs`: bounded probe windows per gateway and the down rule.
//! - `supervisor.rs`: the state machine scan → register → connect → renew → (fail over), on its own thread.

pub mod quality;
pub mod select;
pub mod supervisor;
