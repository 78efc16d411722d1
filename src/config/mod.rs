//! Configuration: the UCI grammar, the typed model and how a file becomes one.
//!
//! # Layout
//! - `uci.rs`: text → sections with options and line numbers; grammar errors carry the line.
//! - `types.rs`: [`Config`] and one struct per section type, with their defaults.
//! - `reader.rs`: sections → [`Config`] ([`load`], [`from_text`]), collecting every [`Problem`].
//! - `values.rs`: the value parsers the reader uses (numbers, booleans, pools, endpoints …).
//! - `problems.rs`: [`Problem`] and [`Severity`], shown as `FILE:LINE: section.option: message`.
//! - `reload.rs`: which changes a SIGHUP applies live and which wait for a restart.
//! - [`model`]: the former single-file model's path; re-exports only.

mod problems;
mod reader;
pub mod reload;
mod types;
pub mod uci;
mod values;

pub use crate::prefix::Prefix;
pub use problems::{Problem, Severity};
pub use reader::{from_text, load};
pub use types::*;
pub use values::{admin_endpoint, host_name, node_name_from_host};

/// `config::model::X`, the path of everything above before the model was split; kept so
/// importers need not change.
pub mod model {
    pub use super::types::*;
    pub use super::{
        Prefix, Problem, Severity, admin_endpoint, from_text, host_name, load, node_name_from_host,
    };
}
