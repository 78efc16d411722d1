//! HTTP transport of the JSON-RPC protocol.
//!
//! # Layout
//! - `server.rs`: tiny_http server on `/jsonrpc` with body limits; hands decoded requests to a [`server::Handler`].
//! - `client.rs`: blocking calls (CLI, registration) and async calls (smol probes), sharing one HTTP framing.

pub mod client;
pub mod server;
