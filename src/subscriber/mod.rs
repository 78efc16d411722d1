//! The subscriber role.
//!
//! # Layout
//! - `select.rs`: pure ranking of known gateways.
//! - `supervisor.rs`: the state machine scan → register → connect → renew → (fail over), on its own thread.

pub mod select;
pub mod supervisor;
