//! The gateway role.
//!
//! # Layout
//! - `leases.rs`: the sans-IO lease book (grant / renew / release / expire → actions).
//! - `service.rs`: RPC handlers executing the lease book's actions through tunnels and NAT.
//! - `uplink.rs`: the periodic check of the gateway's own Internet access.

pub mod leases;
pub mod service;
pub mod uplink;
