//! HTTP transport of the JSON-RPC protocol.
//!
//! # Layout
//! - `server.rs`: small HTTP/1.1 server on std sockets (`/jsonrpc`, the page); hands decoded
//!   requests to a [`server::Handler`].
//! - `dispatch.rs`: [`dispatch::METHODS`], the one map from a method name to its handler, and who
//!   may call it; [`dispatch::Services`], what the handlers answer from.
//! - `guard.rs`: cross-site rules (Host, Origin, Content-Type, page token), pure.
//! - `limits.rs`: connection caps, per-source token bucket, header and time bounds (pure).
//!
//! The client is [`crate::client`], and the method kinds, the page token's header and [`Caller`]
//! live in [`crate::protocol`]: the roles use those, so they never import this module, which
//! imports them (no circle).

pub use crate::protocol::Caller;

pub mod dispatch;
pub mod guard;
pub mod limits;
pub mod server;
