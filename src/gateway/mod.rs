//! The gateway role.
//!
//! # Layout
//! - `addresses.rs`: the node's own mesh addresses `nodeInfo` lists (pure).
//! - `batch.rs`: cutting the kernel work due at once into batches (pure).
//! - `leases.rs`: the sans-IO lease book (grant / renew / release / expire → actions).
//! - `service.rs`: RPC handlers executing the lease book's actions through tunnels and NAT,
//!   in batches: what is due at once (a burst of requests, releases, an expiry sweep, the
//!   restore after a restart) is configured together.
//! - `uplink.rs`: the periodic check of the gateway's own Internet access.

pub mod addresses;
pub mod batch;
pub mod leases;
pub mod service;
pub mod uplink;
