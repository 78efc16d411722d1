//! cjdns as mnigs speaks to it, shared by discovery (the network walk,
//! [`crate::discovery::cjdns`]) and the tunnel method (IpTunnel, [`crate::tunnel::cjdns`]).
//!
//! # Layout
//! - `keys.rs`: keys, fc00::/8 addresses and path labels (pure): [`keys::key_bytes`],
//!   [`keys::encode_key`], [`keys::address_of`], [`keys::check_key`], [`keys::splice`],
//!   [`keys::PeerAddr`].
//! - `admin.rs`: the admin API: [`admin::Admin`] (one call), [`admin::UdpAdmin`] (UDP, cookie +
//!   SHA-256 auth), [`admin::open_admin`] and [`admin::AdminTarget`] (address and password from
//!   UCI or cjdroute.conf), [`admin::node_key`].
//! - `bencode.rs`: the admin API's encoding, parse and emit.
//! - `sha2.rs`: SHA-256 (admin auth) and SHA-512 (key → address).

pub mod admin;
pub mod bencode;
pub mod keys;
pub mod sha2;
