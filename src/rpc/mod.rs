//! HTTP transport of the JSON-RPC protocol.
//!
//! # Layout
//! - `server.rs`: small HTTP/1.1 server on std sockets (`/jsonrpc`, the page); hands decoded
//!   requests to a [`server::Handler`].
//! - `guard.rs`: cross-site rules (Host, Origin, Content-Type, page token), pure.
//! - `limits.rs`: connection caps, per-source token bucket, header and time bounds (pure).
//! - `client.rs`: blocking calls (CLI, registration) and async calls (smol probes), sharing one HTTP framing.

pub mod client;
pub mod guard;
pub mod limits;
pub mod server;
