//! Typed configuration (DESIGN.md §3) built from UCI sections, with validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// An IPv4 or IPv6 prefix such as `100.127.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Network address (host bits are zero after validation).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

/// `config mnigs 'main'`.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    pub name: String,
    pub rpc_port: u16,
    pub listen: Vec<IpAddr>,
    pub database: PathBuf,
    pub authorized_network: Vec<Prefix>,
    pub log_level: String,
}

/// `config gateway 'gateway'`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub enabled: bool,
    pub max_subscribers: u32,
    pub lease_seconds: u32,
    pub wan_interface: String,
    pub ipv4_pool: Prefix,
    pub ipv6_pool: Option<Prefix>,
    pub price: u32,
    pub bandwidth_down: u32,
    pub bandwidth_up: u32,
    pub methods: Vec<String>,
    /// `nft`, `iptables` or `auto` (nft, falling back to iptables).
    pub nat: String,
}

/// `config subscriber 'subscriber'`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    pub enabled: bool,
    pub methods: Vec<String>,
    pub scan_interval: u32,
    pub probe_interval: u32,
    pub max_price: u32,
}

/// One `config discovery` section (named or anonymous).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub section: String,
    pub method: String,
    /// Route protocol name or number, for `method routes`.
    pub protocol: Option<String>,
    pub interfaces: Vec<String>,
    pub ports: Vec<u16>,
    pub prefixes: Vec<Prefix>,
    pub concurrency: u32,
    pub timeout_ms: u32,
}

/// `config wireguard 'wireguard'`.
#[derive(Debug, Clone, PartialEq)]
pub struct WireguardConfig {
    pub interface: String,
    pub listen_port: u16,
    pub mtu: u16,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub main: MainConfig,
    pub gateway: GatewayConfig,
    pub subscriber: SubscriberConfig,
    pub discovery: Vec<DiscoveryConfig>,
    pub wireguard: WireguardConfig,
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a config file, printed as `FILE:LINE: section.option: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    /// `section.option`, or just `section`, or empty for grammar errors.
    pub place: String,
    pub message: String,
}
