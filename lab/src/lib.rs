//! mnigs-lab: the namespace lab of mnigs's end-to-end tests, its benches and the single-host
//! demo. A dev-only workspace member: the router's library and binary contain none of it.
//!
//! Everything runs as root in network namespaces this process creates and removes again (also
//! when a test fails half-way); nothing is routed from the host's namespace.
//!
//! # Layout
//! - [`netlab`]: [`Lab`], free-form namespace labs (any number of namespaces, veths, programs
//!   started inside them), and Yggdrasil nodes in them.
//! - [`testbed`]: [`Testbed`], the fixed mesh sub — relay — gw — inet (and gw2, leaves) with
//!   babeld; the [`Node`] roles; [`testbed::e2e_gate`], the gate of every end-to-end test.
//! - [`cjdlab`]: real cjdroute nodes in a [`Lab`].
//! - [`scenario`]: [`Scenario`], mnigs daemons on a [`Testbed`] and the checks the tests and the
//!   demo share (status, pings through the tunnel, what the daemons left on the system).
//! - [`demo`], [`cjdemo`]: the single-host demo's story, on Babel and on cjdns (`mnigs-demo`).

pub mod cjdemo;
pub mod cjdlab;
pub mod demo;
pub mod netlab;
pub mod scenario;
pub mod testbed;

pub use netlab::Lab;
pub use scenario::Scenario;
pub use testbed::{Node, Testbed};
