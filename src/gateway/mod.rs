//! The gateway role.
//!
//! # Layout
//! - `leases.rs`: the sans-IO lease book (grant / renew / release / expire → actions).
//! - `service.rs`: RPC handlers executing the lease book's actions through tunnels and NAT.

pub mod leases;
pub mod service;
