//! Configuration: the UCI grammar ([`uci`]) and the typed, validated model ([`model`]).
//!
//! # Layout
//! - `uci.rs`: text → sections with options and line numbers; grammar errors carry the line.
//! - `model.rs`: sections → [`Config`], collecting every [`Problem`] (errors and warnings) with file and line.
//! - `reload.rs`: which changes a SIGHUP applies live and which wait for a restart.

pub mod model;
pub mod reload;
pub mod uci;

pub use model::{
    Config, DEFAULT_PATH, DEFAULT_RPC_PORT, DiscoveryConfig, GatewayConfig, MainConfig, Prefix,
    Problem, Severity, SubscriberConfig, WireguardConfig, from_text, load,
};
