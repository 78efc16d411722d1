//! mnigs — the Mesh Network Internet Gateway System.
//!
//! One daemon that either publishes this router as an Internet gateway on a community mesh, or finds
//! such gateways, registers with the best one and routes Internet traffic through a tunnel to it.
//!
//! # Layout
//! - [`config`]: UCI grammar and the typed, validated configuration.
//! - [`validate`]: type checks for every string that may reach a program's argv.
//! - [`prefix`]: the IPv4/IPv6 prefix type every layer shares (a leaf).
//! - [`protocol`]: JSON-RPC 2.0 (and 1.0) envelopes and every method's parameters and results; pure.
//! - [`client`]: the JSON-RPC client (the CLI, registration, probes); uses only `protocol`.
//! - [`rpc`]: the HTTP JSON-RPC server, and `dispatch`: the one map from a method name to its
//!   handler, and who may call it. The top of the house: it knows the roles, nothing below
//!   imports it.
//! - [`store`]: SQLite state (gateways seen, gateway sessions, our current connection).
//! - [`persist`]: the flash copy of the store (RAM database, periodic and shutdown copies).
//! - [`gateway`]: the sans-IO lease book and the RPC handlers of the gateway role.
//! - [`subscriber`]: gateway selection, the sans-IO core and the supervisor of the subscriber role.
//! - [`trust`]: the checks of everything a gateway sends (used by discovery and the subscriber).
//! - [`cjdns`]: cjdroute's admin API, keys and addresses, bencode, SHA-2: shared by discovery and
//!   the cjdns tunnel method.
//! - [`discovery`]: ways of finding candidate gateways, and the concurrent `nodeInfo` prober.
//! - [`tunnel`]: tunnel methods (WireGuard, OpenVPN, GRE, IPIP, plain routes, cjdns IpTunnel,
//!   SoftEther, SOCKS with tun2socks), each with a gateway and a subscriber side, and
//!   [`tunnel::build`]: the methods a role runs, from the config.
//! - [`sys`]: the only module with side effects on the system (programs, routes, NAT).
//! - [`daemon`]: wires the roles, the server and signals together (wiring only).
//! - [`cli`]: the command-line client of the daemon's local control methods.
//! - [`log`]: a small leveled logger to stderr.
//! - [`clock`]: Unix time in seconds; [`ids`]: session ids and random tokens (leaves).
//! - [`json`]: JSON objects built member by member (`json::object!`, smaller than `json!`).
//! - [`web`]: the built-in page on the RPC port and the mesh graph it draws.
//! - [`hooks`]: the owner's executables run on subscriber events (`option on_connect` …).
//! - [`chan`], [`threads`]: the queue between the daemon's threads, and starting them.
//!
//! The namespace lab of the tests, the benches and the single-host demo (`mnigs-demo`) is the
//! workspace member `lab/` (package `mnigs-lab`), a dev-dependency: none of it ships.

pub mod chan;
pub mod cjdns;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod gateway;
pub mod hooks;
pub mod ids;
pub mod json;
pub mod log;
pub mod persist;
pub mod prefix;
pub mod protocol;
pub mod rpc;
pub mod store;
pub mod subscriber;
pub mod sys;
pub mod threads;
pub mod trust;
pub mod tunnel;
pub mod validate;
pub mod web;
