//! The only place with side effects on the system: spawning programs and touching `/proc`.
//!
//! # Layout
//! - `cmd.rs`: run an argv (never a shell) with a timeout, capture stdout/stderr, log every command.
//! - `net.rs`: addresses, routes, links, forwarding and NAT, built on `cmd`.
//! - `icmp.rs`: ICMP echo probes over a raw socket, optionally bound to an interface.

pub mod cmd;
pub mod icmp;
pub mod net;
