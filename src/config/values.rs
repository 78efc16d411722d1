//! Value parsers: one option's text → a typed value, or a message saying what is wrong (the
//! reader adds file, line and place). Strings that may reach a program's argv are checked with
//! [`crate::validate`], the same checks the RPC layer uses.

use std::net::IpAddr;
use std::path::PathBuf;

use super::types::{DISCOVERY_METHODS, MAX_SWEEP_ADDRESSES, SUPPORTED_DISCOVERY_METHODS};
use crate::prefix::Prefix;
use crate::validate::{self, quoted};

/// `option on_connect '/path'`: an absolute path; empty means no hook.
pub(super) fn hook_path(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    validate::path(v).map(|()| Some(PathBuf::from(v)))
}

/// This machine's host name made into a valid node name (`mnigs` if nothing is left). On OpenWrt
/// the kernel's host name is `system.@system[0].hostname`, set at boot.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_name_from_host(&raw)
}

/// A host name made into a node name: each run of characters a node name cannot hold becomes one
/// `-`, the result is cut to 63 characters and must start with a letter or digit and not end in
/// `-`; `mnigs` when nothing is left.
pub fn node_name_from_host(raw: &str) -> String {
    let mut clean = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() || "._".contains(c) {
            clean.push(c);
        } else if !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let start = clean
        .find(|c: char| c.is_ascii_alphanumeric())
        .unwrap_or(clean.len());
    let cut: String = clean[start..].chars().take(63).collect();
    let name = cut.trim_end_matches('-');
    if validate::node_name(name).is_ok() {
        name.to_string()
    } else {
        "mnigs".to_string()
    }
}

/// A validated string option.
pub(super) fn text(
    check: fn(&str) -> Result<(), String>,
) -> impl Fn(&str) -> Result<String, String> {
    move |v| check(v).map(|()| v.to_string())
}

/// A decimal number without sign; leading zeros are fine, spaces are not.
fn decimal(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A whole number in `min..=max`.
pub(super) fn number(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |v| match decimal(v).and_then(|n| u32::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number {min}-{max}, got {}",
            quoted(v)
        )),
    }
}

pub(super) fn port(v: &str) -> Result<u16, String> {
    match decimal(v).and_then(|n| u16::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a port number 1-65535, got {}", quoted(v))),
    }
}

/// UCI's booleans, as `config_get_bool` reads them (case does not matter).
pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "enabled" => Ok(true),
        "0" | "false" | "no" | "off" | "disabled" => Ok(false),
        _ => Err(format!(
            "must be a boolean (0/1, true/false, yes/no, on/off, enabled/disabled), got {}",
            quoted(v)
        )),
    }
}

pub(super) fn one_of(choices: &'static [&'static str]) -> impl Fn(&str) -> Result<String, String> {
    move |v| {
        if choices.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(format!(
                "must be one of {}, got {}",
                choices.join(", "),
                quoted(v)
            ))
        }
    }
}

/// A gateway named in `prefer`/`exclude`: a mesh address (kept in its canonical spelling) or a
/// node name.
pub(super) fn gateway_ref(v: &str) -> Result<String, String> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    validate::node_name(v)
        .map(|()| v.to_string())
        .map_err(|e| format!("must be a mesh address or a node name: {e}"))
}

/// A method's state directory: an absolute path.
pub(super) fn absolute_dir(v: &str) -> Result<PathBuf, String> {
    if v.starts_with('/') {
        validate::path(v).map(|()| PathBuf::from(v))
    } else {
        Err(format!("must be an absolute path, got {}", quoted(v)))
    }
}

pub(super) fn ip_address(v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("must be an IPv4 or IPv6 address, got {}", quoted(v)))
}

pub(super) fn ipv4_pool(v: &str) -> Result<Prefix, String> {
    let p = validate::prefix(v)?;
    if !p.is_ipv4() {
        Err(format!("must be an IPv4 prefix, got {}", quoted(v)))
    } else if p.host_count() < 4 {
        Err(format!(
            "must hold at least 4 addresses (a /30 or shorter), got {}",
            quoted(v)
        ))
    } else {
        Ok(p)
    }
}

pub(super) fn ipv6_pool(v: &str) -> Result<Option<Prefix>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let p = validate::prefix(v)?;
    if p.is_ipv4() {
        Err(format!(
            "must be an IPv6 prefix, or '' for none, got {}",
            quoted(v)
        ))
    } else {
        Ok(Some(p))
    }
}

pub(super) fn sweep_prefix(v: &str) -> Result<Option<Prefix>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let p = validate::prefix(v)?;
    if !p.is_ipv4() || p.host_count() > MAX_SWEEP_ADDRESSES {
        Err(format!(
            "must be an IPv4 prefix of at most {MAX_SWEEP_ADDRESSES} addresses (/22 or longer), got {}",
            quoted(v)
        ))
    } else {
        Ok(Some(p))
    }
}

/// `HOST:PORT`, `tcp://HOST:PORT` (HOST an IP address or `localhost`) or `unix:///ABSOLUTE/PATH`;
/// empty means the daemon's default.
pub fn admin_endpoint(v: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "admin endpoint must be HOST:PORT, tcp://HOST:PORT or unix:///PATH, got {}",
            quoted(v)
        )
    };
    if v.is_empty() {
        return Ok(());
    }
    if let Some(path) = v.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(bad());
        }
        return validate::path(path);
    }
    let hostport = v.strip_prefix("tcp://").unwrap_or(v);
    let hostport = hostport.replace("localhost:", "127.0.0.1:");
    hostport
        .parse::<std::net::SocketAddr>()
        .map(drop)
        .map_err(|_| bad())
}

pub(super) fn admin_password(v: &str) -> Result<(), String> {
    if v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("password must be at most 256 printable ASCII characters without spaces".into())
    }
}

pub(super) fn discovery_method(v: &str) -> Result<String, String> {
    if SUPPORTED_DISCOVERY_METHODS.contains(&v) {
        Ok(v.to_string())
    } else if DISCOVERY_METHODS.contains(&v) {
        Err(format!(
            "discovery method '{v}' is not supported by this version"
        ))
    } else {
        Err(format!(
            "unknown discovery method {}; expected one of {}",
            quoted(v),
            DISCOVERY_METHODS.join(", ")
        ))
    }
}
