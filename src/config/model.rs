//! Typed configuration (DESIGN.md §3) built from UCI sections, with validation.
//!
//! [`from_text`] runs the UCI grammar ([`super::uci`]), then reads each known section into a
//! [`Config`] that starts as [`Config::default`]. It never stops at the first mistake: every
//! invalid value is an error and every unknown section or option a warning, each a [`Problem`]
//! with file, line, `section.option` and message, so `mnigs check-config` can show them all.
//!
//! Values are checked with [`crate::validate`], the same checks the RPC layer uses, so nothing
//! from the file reaches a program's argv unchecked.
//!
//! # Layout
//! - the model: [`Config`] and one struct per section type, with their defaults; [`Prefix`].
//! - [`load`] / [`from_text`]: file → `Config` + warnings, or every problem.
//! - [`Problem`], [`Severity`]: findings, shown as `FILE:LINE: section.option: message`.
//! - private: `Builder` (section dispatch and cross-checks), `Reader` (typed access to one
//!   section's options, recording problems and unknown options), value parsers.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::uci::{self, Section, UciOption, UciValue};
use crate::validate::{self, quoted};

/// Where the config lives on OpenWrt.
pub const DEFAULT_PATH: &str = "/etc/config/mnigs";

/// The JSON-RPC port, unless `option rpc_port` says otherwise.
pub const DEFAULT_RPC_PORT: u16 = 65533;

/// `option nat` values.
pub const NAT_BACKENDS: &[&str] = &["auto", "nft", "iptables"];

/// `option log_level` values.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];

/// Every discovery method the design names (`option method` of a `discovery` section).
pub const DISCOVERY_METHODS: &[&str] = &["routes", "neighbours", "cjdns", "yggdrasil", "gossip"];

/// The discovery methods this version implements.
pub const SUPPORTED_DISCOVERY_METHODS: &[&str] = DISCOVERY_METHODS;

/// An IPv4 or IPv6 prefix such as `100.127.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address (host bits are zero after validation).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Address width in bits: 32 or 128.
    fn width(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Number of host bits; 0 if `len` is longer than the address (a hand-built, invalid prefix).
    fn host_bits(&self) -> u32 {
        self.width().saturating_sub(u32::from(self.len))
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address: `addr` with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        let hb = self.host_bits();
        let net = bits(self.addr)
            .checked_shr(hb)
            .unwrap_or(0)
            .checked_shl(hb)
            .unwrap_or(0);
        from_bits(self.is_ipv4(), net)
    }

    /// True if `ip` is of the same family and inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let hb = self.host_bits();
        ip.is_ipv4() == self.is_ipv4()
            && bits(ip).checked_shr(hb).unwrap_or(0) == bits(self.addr).checked_shr(hb).unwrap_or(0)
    }

    /// How many addresses the prefix holds (`2^(width - len)`), including the network and
    /// broadcast addresses. `::/0` holds 2^128, which saturates to `u128::MAX`.
    pub fn host_count(&self) -> u128 {
        1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX)
    }

    /// The network address plus `n`, or `None` if that is outside the prefix.
    /// `nth_host(0)` is the network address itself.
    pub fn nth_host(&self, n: u128) -> Option<IpAddr> {
        let hb = self.host_bits();
        if hb < 128 && n >= 1u128 << hb {
            return None;
        }
        let net = bits(self.network());
        Some(from_bits(self.is_ipv4(), net + n))
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`bits`]; for IPv4 only the low 32 bits are used.
fn from_bits(v4: bool, x: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// Parses `ADDRESS/LENGTH` with [`validate::prefix`] (host bits must be zero).
    fn from_str(s: &str) -> Result<Prefix, String> {
        validate::prefix(s)
    }
}

/// `config mnigs 'main'`.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    /// What this node calls itself (`option name`); empty means the host name ([`host_name`]).
    pub name: String,
    /// TCP port of the JSON-RPC server (`option rpc_port`).
    pub rpc_port: u16,
    /// Addresses the server listens on (`list listen`).
    pub listen: Vec<IpAddr>,
    /// Interfaces the server answers on (`list listen_interface`; `*` for every interface).
    /// Empty: the mesh interfaces (see `daemon::rpc_interfaces`), never the WAN. Loopback is
    /// always added, for the local CLI and LuCI.
    pub listen_interfaces: Vec<String>,
    /// SQLite database file (`option database`).
    pub database: PathBuf,
    /// Networks allowed to call the local control methods (`list authorized_network`).
    pub authorized_network: Vec<Prefix>,
    /// Names the owner reaches the page by besides the node's addresses and `localhost`
    /// (`list hostname`, lower case); a request naming any other host is refused for everything
    /// but the mesh methods (DNS rebinding, see [`crate::rpc::guard`]).
    pub hostname: Vec<String>,
    /// One of [`LOG_LEVELS`] (`option log_level`).
    pub log_level: String,
    /// What callers outside `authorized_network` get from the built-in page (`option web`:
    /// `full`, `readonly` or `off`). Absent means `off`, as before the page existed; the shipped
    /// config sets `readonly`.
    pub web: crate::web::Access,
    /// Copy of the database on flash (`option persist_path`), or `None` (`''`, the default): the
    /// live database stays in RAM and what must survive a reboot is copied here (see
    /// [`crate::persist`]).
    pub persist_path: Option<PathBuf>,
    /// Seconds between copies to `persist_path`, made only when something changed; one more copy
    /// is made at clean shutdown (`option persist_interval`).
    pub persist_interval: u32,
    /// Requests per second one source address (IPv6: one /64) may sustain at the RPC server,
    /// 0 for no limit (`option rate_limit`).
    pub rate_limit: u32,
    /// Requests one source may send in a burst after a quiet time (`option rate_burst`).
    pub rate_burst: u32,
    /// Connections the RPC server serves at once, from all sources (`option max_connections`).
    pub max_connections: u32,
    /// Seconds a client has to send its whole request (`option read_timeout`).
    pub read_timeout: u32,
}

impl Default for MainConfig {
    fn default() -> MainConfig {
        MainConfig {
            name: "mnigs".into(),
            rpc_port: DEFAULT_RPC_PORT,
            listen: vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            listen_interfaces: Vec::new(),
            database: PathBuf::from("/var/lib/mnigs/mnigs.db"),
            authorized_network: vec![
                Prefix {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    len: 8,
                },
                Prefix {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    len: 128,
                },
            ],
            hostname: Vec::new(),
            log_level: "info".into(),
            web: crate::web::Access::Off,
            persist_path: None,
            persist_interval: 3600,
            rate_limit: 20,
            rate_burst: 40,
            max_connections: 64,
            read_timeout: 10,
        }
    }
}

/// `config gateway 'gateway'`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Whether this node offers Internet access (`option enabled`).
    pub enabled: bool,
    /// Most subscribers served at once (`option max_subscribers`).
    pub max_subscribers: u32,
    /// Most sessions one source may hold: one IPv4 address, or one IPv6 /64, since a host
    /// usually owns a whole /64 (`option max_sessions_per_source`).
    pub max_sessions_per_source: u32,
    /// Lease length offered to subscribers (`option lease_seconds`).
    pub lease_seconds: u32,
    /// Interface (or UCI network) towards the Internet (`option wan_interface`).
    pub wan_interface: String,
    /// Subscriber IPv4 addresses are taken from here (`option ipv4_pool`); at least a /30.
    pub ipv4_pool: Prefix,
    /// Subscriber IPv6 addresses, or `None` for IPv4 only (`option ipv6_pool ''`).
    pub ipv6_pool: Option<Prefix>,
    /// Advertised price, 0 for free (`option price`).
    pub price: u32,
    /// Advertised downstream bandwidth, 0 for unknown (`option bandwidth_down`).
    pub bandwidth_down: u32,
    /// Advertised upstream bandwidth, 0 for unknown (`option bandwidth_up`).
    pub bandwidth_up: u32,
    /// Tunnel methods offered, from [`validate::METHODS`] (`list method`).
    pub methods: Vec<String>,
    /// `nft`, `iptables` or `auto` (nft, falling back to iptables).
    pub nat: String,
    /// Addresses pinged out of `wan_interface` to check the uplink (`list uplink_target`);
    /// empty: the well-known public addresses of [`crate::gateway::uplink::DEFAULT_TARGETS`].
    pub uplink_targets: Vec<IpAddr>,
    /// Whether the uplink is checked at all (`option uplink_check`, default 1); off, it is
    /// assumed healthy and `status` says so.
    pub uplink_check: bool,
    /// Seconds between uplink checks (`option uplink_interval`, 1-3600, default 5).
    pub uplink_interval: u32,
    /// What a clean stop (SIGTERM) does with live sessions (`option keep_sessions`): `true`
    /// keeps them in the store, so that the next start restores them and subscribers carry on
    /// without registering again; `false` releases them all (their tunnel ends, NAT entries and
    /// rows go), and subscribers must register anew. A SIGKILL or power loss always keeps them.
    pub keep_sessions: bool,
    /// Interfaces facing the mesh (`list mesh_interface`): nothing arriving there is forwarded
    /// to the WAN or the LAN without a live session. Empty: the interfaces of the `discovery`
    /// sections.
    pub mesh_interfaces: Vec<String>,
    /// Private destinations subscribers may reach all the same (`list allow_destination`,
    /// prefixes); by default they reach only public addresses, out of the WAN.
    pub allow_destinations: Vec<Prefix>,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            enabled: false,
            max_subscribers: 10,
            max_sessions_per_source: 4,
            lease_seconds: 300,
            wan_interface: "wan".into(),
            ipv4_pool: Prefix {
                addr: IpAddr::V4(Ipv4Addr::new(100, 127, 0, 0)),
                len: 24,
            },
            ipv6_pool: Some(Prefix {
                addr: IpAddr::V6(Ipv6Addr::new(0xfd7e, 0x7e7e, 0, 0, 0, 0, 0, 0)),
                len: 64,
            }),
            price: 0,
            bandwidth_down: 0,
            bandwidth_up: 0,
            methods: vec!["wireguard".into()],
            nat: "auto".into(),
            uplink_targets: Vec::new(),
            uplink_interval: 5,
            uplink_check: true,
            keep_sessions: true,
            mesh_interfaces: Vec::new(),
            allow_destinations: Vec::new(),
        }
    }
}

/// Default `probe_interval_ms` with `option hot_standby '1'` (detection within 0.3 s).
pub const HOT_STANDBY_PROBE_INTERVAL_MS: u32 = 100;

/// `config subscriber 'subscriber'`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    /// Whether this node looks for gateways and routes through one (`option enabled`).
    pub enabled: bool,
    /// Tunnel methods accepted, in order of preference (`list method`).
    pub methods: Vec<String>,
    /// Seconds between discovery scans (`option scan_interval`).
    pub scan_interval: u32,
    /// Seconds between probes of the current gateway (`option probe_interval`).
    pub probe_interval: u32,
    /// Highest price accepted (`option max_price`).
    pub max_price: u32,
    /// Executables run on subscriber events (`option on_connect` …, absolute paths).
    pub hooks: crate::hooks::HookPaths,
    /// Seconds a hook may run before it is killed (`option hook_timeout`).
    pub hook_timeout: u32,
    /// Milliseconds between probes through the tunnel (`option probe_interval_ms`, 50-60000,
    /// default 200, 100 with hot standby). When only `option probe_interval` (seconds) is given,
    /// it is used instead.
    pub probe_interval_ms: u32,
    /// The path is down after this many consecutive failed probe intervals (`option down_after`,
    /// 1-100, default 3: with 200 ms probes, downtime is detected within about 0.6 s).
    pub down_after: u32,
    /// Probe these addresses through the tunnel (`list probe_target`) instead of the gateway's
    /// tunnel address; the path is up while any of them answers, so a gateway whose uplink
    /// broke is noticed even if it does not notice itself.
    pub probe_targets: Vec<IpAddr>,
    /// Gateway preferred over all others while usable (`option prefer`): a mesh address (exact:
    /// only that node) or a node name (any gateway that calls itself so).
    pub prefer: Option<String>,
    /// Gateways never used (`list exclude`): mesh addresses or node names.
    pub exclude: Vec<String>,
    /// Where a grant's tunnel addresses may lie (`list grant_allow`, default 100.64.0.0/10 and
    /// fc00::/7); see `subscriber::trust`.
    pub grant_allow: Vec<Prefix>,
    /// Seconds a better gateway must have been free of failures before we move (back) to it
    /// (`option failback_after`, 0-86400, default 60).
    pub failback_after: u32,
    /// Keep a second lease and tunnel up to the next best gateway and fail over by switching one
    /// routing rule (`option hot_standby`).
    pub hot_standby: bool,
    /// While no gateway is up, drop Internet-bound traffic instead of letting it leak out another
    /// way; mesh routes keep working (`option fail_closed`).
    pub fail_closed: bool,
    /// Seconds a candidate that did not answer is left out of later background scans (`option
    /// negative_cache`, 0-86400, default 600, two default scan intervals; 0 asks everyone every
    /// time). Gateways we registered with are always asked, and `mnigs scan` asks everyone.
    pub negative_cache: u32,
}

impl Default for SubscriberConfig {
    fn default() -> SubscriberConfig {
        SubscriberConfig {
            enabled: false,
            methods: vec!["wireguard".into()],
            scan_interval: 300,
            probe_interval: 1,
            max_price: 0,
            hooks: crate::hooks::HookPaths::default(),
            hook_timeout: 10,
            probe_interval_ms: 200,
            down_after: 3,
            probe_targets: Vec::new(),
            prefer: None,
            exclude: Vec::new(),
            grant_allow: crate::subscriber::trust::default_allow(),
            failback_after: 60,
            hot_standby: false,
            fail_closed: false,
            negative_cache: 600,
        }
    }
}

/// One `config discovery` section (named or anonymous).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// The section name, or `@discovery[N]` for an anonymous one (N counts all discovery
    /// sections, as UCI does).
    pub section: String,
    /// One of [`SUPPORTED_DISCOVERY_METHODS`] (`option method`).
    pub method: String,
    /// Route protocol name or number, for `method routes`; `None` (`option protocol ''`)
    /// takes routes of any protocol.
    pub protocol: Option<String>,
    /// Only routes via these interfaces; empty for any (`list interface`).
    pub interfaces: Vec<String>,
    /// Ports probed on each candidate (`list port`).
    pub ports: Vec<u16>,
    /// Only candidates inside these prefixes; empty for any (`list prefix`).
    pub prefixes: Vec<Prefix>,
    /// Probes in flight at once (`option concurrency`).
    pub concurrency: u32,
    /// Timeout of one probe (`option timeout_ms`).
    pub timeout_ms: u32,
    /// `routes`: also take the next hops of non-host routes as candidates (`option route_gateways`).
    pub route_gateways: bool,
    /// `neighbours`: an IPv4 prefix of at most 1024 addresses whose every host is probed
    /// (`option sweep`), for L2 meshes where the neighbour tables are cold.
    pub sweep: Option<Prefix>,
    /// `cjdns` / `yggdrasil`: the admin endpoint (`option admin`): `HOST:PORT` or `tcp://HOST:PORT`,
    /// or `unix:///PATH` (Yggdrasil); `None` for the daemon's default.
    pub admin: Option<String>,
    /// Breadth-first search: hops beyond which nodes are not expanded (`option max_depth`).
    pub max_depth: u32,
    /// Breadth-first search: most nodes visited (`option max_nodes`).
    pub max_nodes: u32,
    /// `cjdns`: admin password (`option password`); wins over `cjdroute_conf`.
    pub password: Option<String>,
    /// `cjdns`: cjdroute.conf to read the admin password from (`option cjdroute_conf`).
    pub cjdroute_conf: Option<PathBuf>,
    /// `yggdrasil`: only nodes advertising `mnigs` in their Yggdrasil NodeInfo become
    /// candidates (`option nodeinfo_only`).
    pub nodeinfo_only: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            section: String::new(),
            method: "routes".into(),
            protocol: Some("babel".into()),
            interfaces: Vec::new(),
            ports: vec![DEFAULT_RPC_PORT],
            prefixes: Vec::new(),
            concurrency: 64,
            timeout_ms: 1500,
            route_gateways: false,
            sweep: None,
            admin: None,
            max_depth: 8,
            max_nodes: 2000,
            password: None,
            cjdroute_conf: None,
            nodeinfo_only: false,
        }
    }
}

/// `config wireguard 'wireguard'`.
#[derive(Debug, Clone, PartialEq)]
pub struct WireguardConfig {
    /// Name of the WireGuard interface mnigs creates (`option interface`).
    pub interface: String,
    /// UDP port of the gateway side (`option listen_port`).
    pub listen_port: u16,
    /// Tunnel MTU (`option mtu`).
    pub mtu: u16,
    /// Name of the subscriber side's WireGuard interface (`option client_interface`).
    pub client_interface: String,
    /// UDP port of the subscriber side (`option client_listen_port`); the gateway learns it so
    /// that it can start the handshake itself, e.g. right after a gateway restart.
    pub client_listen_port: u16,
}

impl Default for WireguardConfig {
    fn default() -> WireguardConfig {
        WireguardConfig {
            interface: "mnigs-wg".into(),
            client_interface: "mnigs-wgc".into(),
            client_listen_port: 51821,
            listen_port: 51820,
            mtu: 1420,
        }
    }
}

/// `config openvpn 'openvpn'`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenvpnConfig {
    /// The gateway's tun interface (`option interface`).
    pub interface: String,
    /// The subscriber's tun interface (`option client_interface`).
    pub client_interface: String,
    /// UDP port of the gateway's server (`option port`).
    pub port: u16,
    /// Tunnel MTU (`option mtu`).
    pub mtu: u16,
    /// Keys, certificates and runtime files (`option directory`).
    pub directory: PathBuf,
}

impl Default for OpenvpnConfig {
    fn default() -> OpenvpnConfig {
        OpenvpnConfig {
            interface: "mnigs-ovpn".into(),
            client_interface: "mnigs-ovpnc".into(),
            port: 1194,
            mtu: 1400,
            directory: PathBuf::from("/var/lib/mnigs/openvpn"),
        }
    }
}

/// `config socks 'socks'`: the SOCKS method (a SOCKS5 server per subscriber on the gateway,
/// tun2socks on the subscriber).
#[derive(Debug, Clone, PartialEq)]
pub struct SocksConfig {
    /// The subscriber's TUN interface (`option interface`).
    pub interface: String,
    /// Gateway: TCP port of the first subscriber's SOCKS server (`option port`); the subscriber
    /// with pool address number N (counted from the pool's start) gets `port + N`.
    pub port: u16,
    /// MTU of the subscriber's TUN interface (`option mtu`).
    pub mtu: u16,
    /// PID files and logs of the SOCKS server and the tun2socks client (`option directory`).
    pub directory: PathBuf,
    /// Gateway: the address its SOCKS servers listen on (`option listen`), `::` for all.
    pub listen: IpAddr,
}

impl Default for SocksConfig {
    fn default() -> SocksConfig {
        SocksConfig {
            interface: "mnigs-socks".into(),
            port: 10800,
            mtu: 1500,
            directory: PathBuf::from("/var/run/mnigs/socks"),
            listen: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// `config softether 'softether'`: the SoftEther VPN method.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftetherConfig {
    /// The vpncmd program (`option vpncmd`).
    pub vpncmd: String,
    /// Gateway: the SoftEther server's admin address `HOST:PORT` (`option admin`).
    pub admin: String,
    /// Gateway: the server's administrator password (`option admin_password`).
    pub admin_password: String,
    /// Gateway: the Virtual Hub mnigs manages (`option hub`).
    pub hub: String,
    /// Gateway: the server's TCP port subscribers connect to (`option port`).
    pub port: u16,
    /// Gateway: the local bridge device, the tap is `tap_DEVICE` (`option device`).
    pub device: String,
    /// Subscriber: the client's virtual NIC, the interface is `vpn_NIC` (`option client_nic`).
    pub client_nic: String,
    /// Command files (`option directory`).
    pub directory: PathBuf,
}

impl Default for SoftetherConfig {
    fn default() -> SoftetherConfig {
        SoftetherConfig {
            vpncmd: "vpncmd".into(),
            admin: "127.0.0.1:5555".into(),
            admin_password: String::new(),
            hub: "mnigs".into(),
            port: 443,
            device: "mnigs".into(),
            client_nic: "mnigs".into(),
            directory: PathBuf::from("/var/run/mnigs/softether"),
        }
    }
}

/// `config iptunnel 'iptunnel'`: the GRE and IPIP methods.
#[derive(Debug, Clone, PartialEq)]
pub struct IptunnelConfig {
    /// Prefix of the gateway's per-subscriber interfaces, at most 7 characters
    /// (`option interface_prefix`); 8 hex digits of the subscriber's address follow.
    pub interface_prefix: String,
    /// The subscriber's tunnel interface (`option client_interface`).
    pub client_interface: String,
    /// Tunnel MTU (`option mtu`).
    pub mtu: u16,
}

impl Default for IptunnelConfig {
    fn default() -> IptunnelConfig {
        IptunnelConfig {
            interface_prefix: "mnt".into(),
            client_interface: "mnigs-tun".into(),
            mtu: 1400,
        }
    }
}

/// `config cjdns 'cjdns'`: the cjdns IpTunnel method, driven through cjdroute's admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct CjdnsConfig {
    /// cjdroute's admin API, `HOST:PORT` (`option admin`); `None`: the `bind` of
    /// `cjdroute_conf`, else `127.0.0.1:11234`.
    pub admin: Option<String>,
    /// Admin password (`option password`); wins over `cjdroute_conf`.
    pub password: Option<String>,
    /// cjdroute.conf to read the admin password, bind and our key from (`option cjdroute_conf`).
    pub cjdroute_conf: Option<PathBuf>,
    /// cjdroute's tun interface (`option interface`), where the gateway puts its own addresses.
    pub interface: String,
    /// Time one admin call may take (`option timeout_ms`).
    pub timeout_ms: u32,
}

impl Default for CjdnsConfig {
    fn default() -> CjdnsConfig {
        CjdnsConfig {
            admin: None,
            password: None,
            cjdroute_conf: None,
            interface: "tun0".into(),
            timeout_ms: 2000,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `config mnigs 'main'`.
    pub main: MainConfig,
    /// `config gateway`.
    pub gateway: GatewayConfig,
    /// `config subscriber`.
    pub subscriber: SubscriberConfig,
    /// Every `config discovery`, in file order.
    pub discovery: Vec<DiscoveryConfig>,
    /// `config wireguard`.
    pub wireguard: WireguardConfig,
    /// `config openvpn`.
    pub openvpn: OpenvpnConfig,
    /// `config iptunnel` (GRE and IPIP).
    pub iptunnel: IptunnelConfig,
    /// `config cjdns` (cjdns IpTunnel).
    pub cjdns: CjdnsConfig,
    /// `config socks` (SOCKS5 server and tun2socks).
    pub socks: SocksConfig,
    /// `config softether` (SoftEther VPN).
    pub softether: SoftetherConfig,
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ignored input (unknown section or option); the config is still usable.
    Warning,
    /// An invalid value or structure; the config must not be used.
    Error,
}

/// One finding about a config file, printed as `FILE:LINE: section.option: message`.
///
/// `LINE` is left out when it is 0 (the file as a whole, e.g. it cannot be read), the place
/// when it is empty, and warnings have `warning: ` before the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, or 0 for the whole file.
    pub line: usize,
    /// `section.option`, or just `section`, or empty for grammar errors.
    pub place: String,
    /// What is wrong, in English.
    pub message: String,
}

impl Problem {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.place.is_empty() {
            write!(f, "{}: ", self.place)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Reads and checks the config file at `path`.
///
/// `Ok` carries the config and its warnings; `Err` carries every problem found, errors and
/// warnings, sorted by line. A file that cannot be read is one problem at line 0.
pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
    let file_problem = |line, message| {
        vec![Problem {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line,
            place: String::new(),
            message,
        }]
    };
    let bytes = std::fs::read(path).map_err(|e| file_problem(0, format!("cannot read: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => from_text(&text, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(file_problem(line, "the file is not valid UTF-8".into()))
        }
    }
}

/// Checks config `text` as if read from `file` (used only in messages). Same results as [`load`].
pub fn from_text(text: &str, file: &Path) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
    let sections = uci::parse(text).map_err(|e| {
        vec![Problem {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: e.line,
            place: String::new(),
            message: e.message,
        }]
    })?;
    let mut builder = Builder {
        file,
        config: Config::default(),
        problems: Vec::new(),
        subscriber_enabled_at: None,
    };
    builder.sections(&sections);
    builder.cross_checks();
    let Builder {
        config,
        mut problems,
        ..
    } = builder;
    problems.sort_by_key(|p| p.line);
    if problems.iter().any(Problem::is_error) {
        Err(problems)
    } else {
        Ok((config, problems))
    }
}

/// Section types of which a file may hold at most one.
const SINGLETONS: &[&str] = &[
    "mnigs",
    "gateway",
    "subscriber",
    "wireguard",
    "openvpn",
    "iptunnel",
    "cjdns",
    "socks",
    "softether",
];

/// Builds a [`Config`] from sections, collecting problems.
struct Builder<'f> {
    file: &'f Path,
    config: Config,
    problems: Vec<Problem>,
    /// Line and place of `option enabled` of an enabled subscriber, for the cross-check.
    subscriber_enabled_at: Option<(usize, String)>,
}

impl<'f> Builder<'f> {
    fn push(&mut self, severity: Severity, line: usize, place: String, message: String) {
        self.problems.push(Problem {
            severity,
            file: self.file.to_path_buf(),
            line,
            place,
            message,
        });
    }

    fn sections(&mut self, sections: &[Section]) {
        let mut per_type: HashMap<&str, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut singletons: HashMap<&str, usize> = HashMap::new();
        for s in sections {
            let index = per_type.entry(s.ty.as_str()).or_default();
            let label = match &s.name {
                Some(n) => n.clone(),
                None => format!("@{}[{}]", s.ty, index),
            };
            *index += 1;
            if let Some(name) = &s.name {
                if let Some(first) = names.get(name.as_str()) {
                    let msg = format!(
                        "section name '{name}' is already used on line {first}; this section is ignored"
                    );
                    self.push(Severity::Error, s.line, label, msg);
                    continue;
                }
                names.insert(name.as_str(), s.line);
            }
            if SINGLETONS.contains(&s.ty.as_str()) {
                if let Some(first) = singletons.get(s.ty.as_str()) {
                    let msg = format!(
                        "only one '{}' section is allowed (the first is on line {first}); this one is ignored",
                        s.ty
                    );
                    self.push(Severity::Error, s.line, label, msg);
                    continue;
                }
                singletons.insert(s.ty.as_str(), s.line);
            }
            match s.ty.as_str() {
                "mnigs" => self.main(s, label),
                "gateway" => self.gateway(s, label),
                "subscriber" => self.subscriber(s, label),
                "wireguard" => self.wireguard(s, label),
                "openvpn" => self.openvpn(s, label),
                "iptunnel" => self.iptunnel(s, label),
                "cjdns" => self.cjdns(s, label),
                "socks" => self.socks(s, label),
                "softether" => self.softether(s, label),
                "discovery" => self.discovery(s, label),
                other => {
                    let msg = format!("unknown section type {}, ignored", quoted(other));
                    self.push(Severity::Warning, s.line, label, msg);
                }
            }
        }
    }

    fn reader<'s>(&mut self, section: &'s Section, label: String) -> Reader<'s, '_, 'f> {
        Reader {
            section,
            label,
            builder: self,
            used: vec![false; section.options.len()],
        }
    }

    fn main(&mut self, s: &Section, label: String) {
        if s.name.as_deref() != Some("main") {
            let msg = "the mnigs section should be named 'main' (config mnigs 'main'), \
                       or `uci get mnigs.main.*` will not find it"
                .to_string();
            self.push(Severity::Warning, s.line, label.clone(), msg);
        }
        let mut m = self.config.main.clone();
        let mut r = self.reader(s, label);
        r.single("name", &mut m.name, |v| {
            // Empty (as shipped): the host name, read at every start, so a renamed router is
            // renamed in the mesh too, and the shipped conffile is never rewritten.
            if v.is_empty() {
                Ok(host_name())
            } else {
                text(validate::node_name)(v)
            }
        });
        r.single("rpc_port", &mut m.rpc_port, port);
        r.list("listen", &mut m.listen, ip_address);
        r.list("listen_interface", &mut m.listen_interfaces, |v| {
            if v == "*" {
                Ok(v.to_string())
            } else {
                text(validate::ifname)(v)
            }
        });
        r.single("database", &mut m.database, |v| {
            validate::path(v).map(|()| PathBuf::from(v))
        });
        r.list(
            "authorized_network",
            &mut m.authorized_network,
            validate::prefix,
        );
        r.list("hostname", &mut m.hostname, validate::host_name);
        r.single("log_level", &mut m.log_level, one_of(LOG_LEVELS));
        r.single("web", &mut m.web, crate::web::Access::parse);
        r.single("persist_path", &mut m.persist_path, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        r.single(
            "persist_interval",
            &mut m.persist_interval,
            number(1, 604_800),
        );
        r.single("rate_limit", &mut m.rate_limit, number(0, 100_000));
        r.single("rate_burst", &mut m.rate_burst, number(1, 100_000));
        r.single("max_connections", &mut m.max_connections, number(1, 10_000));
        r.single("read_timeout", &mut m.read_timeout, number(1, 3600));
        if m.persist_path.as_deref() == Some(m.database.as_path()) {
            r.error_at(
                "persist_path",
                "must differ from database: the live database is copied there".into(),
            );
        }
        if m.listen.is_empty() {
            r.error_at("listen", "at least one address is required".into());
        }
        r.finish();
        self.config.main = m;
    }

    fn gateway(&mut self, s: &Section, label: String) {
        let mut g = self.config.gateway.clone();
        let mut r = self.reader(s, label);
        r.single("enabled", &mut g.enabled, boolean);
        r.single("max_subscribers", &mut g.max_subscribers, number(1, 65535));
        r.single(
            "max_sessions_per_source",
            &mut g.max_sessions_per_source,
            number(1, 65535),
        );
        r.single("lease_seconds", &mut g.lease_seconds, number(5, 86400));
        r.single(
            "wan_interface",
            &mut g.wan_interface,
            text(validate::ifname),
        );
        r.single("ipv4_pool", &mut g.ipv4_pool, ipv4_pool);
        r.single("ipv6_pool", &mut g.ipv6_pool, ipv6_pool);
        r.single("price", &mut g.price, number(0, u32::MAX));
        r.single("bandwidth_down", &mut g.bandwidth_down, number(0, u32::MAX));
        r.single("bandwidth_up", &mut g.bandwidth_up, number(0, u32::MAX));
        r.list("method", &mut g.methods, text(validate::method));
        r.single("nat", &mut g.nat, one_of(NAT_BACKENDS));
        r.list("uplink_target", &mut g.uplink_targets, ip_address);
        r.single("uplink_interval", &mut g.uplink_interval, number(1, 3600));
        r.single("uplink_check", &mut g.uplink_check, boolean);
        r.single("keep_sessions", &mut g.keep_sessions, boolean);
        r.list(
            "mesh_interface",
            &mut g.mesh_interfaces,
            text(validate::ifname),
        );
        r.list("allow_destination", &mut g.allow_destinations, |v| {
            validate::prefix(v)
        });
        if g.enabled && g.methods.is_empty() {
            r.error_at(
                "method",
                "the gateway is enabled but has no tunnel method".into(),
            );
        }
        r.finish();
        self.config.gateway = g;
    }

    fn subscriber(&mut self, s: &Section, label: String) {
        let mut sub = self.config.subscriber.clone();
        let mut r = self.reader(s, label.clone());
        r.single("enabled", &mut sub.enabled, boolean);
        r.list("method", &mut sub.methods, text(validate::method));
        r.single("scan_interval", &mut sub.scan_interval, number(1, 86400));
        r.single("probe_interval", &mut sub.probe_interval, number(1, 3600));
        r.single("max_price", &mut sub.max_price, number(0, u32::MAX));
        for event in crate::hooks::Event::ALL {
            r.single(event.option(), sub.hooks.slot(event), hook_path);
        }
        r.single("hook_timeout", &mut sub.hook_timeout, number(1, 3600));
        if s.get("probe_interval").is_some() && s.get("probe_interval_ms").is_none() {
            sub.probe_interval_ms = sub.probe_interval.saturating_mul(1000);
        }
        r.single(
            "probe_interval_ms",
            &mut sub.probe_interval_ms,
            number(50, 60_000),
        );
        r.single("down_after", &mut sub.down_after, number(1, 100));
        r.list("probe_target", &mut sub.probe_targets, ip_address);
        r.single("prefer", &mut sub.prefer, |v| gateway_ref(v).map(Some));
        r.list("exclude", &mut sub.exclude, gateway_ref);
        r.list("grant_allow", &mut sub.grant_allow, validate::prefix);
        r.single("failback_after", &mut sub.failback_after, number(0, 86400));
        r.single("negative_cache", &mut sub.negative_cache, number(0, 86400));
        r.single("hot_standby", &mut sub.hot_standby, boolean);
        r.single("fail_closed", &mut sub.fail_closed, boolean);
        let interval_given =
            s.get("probe_interval").is_some() || s.get("probe_interval_ms").is_some();
        if sub.hot_standby && !interval_given {
            // A false alarm costs only a rule switch with a standby ready: probe twice as often.
            sub.probe_interval_ms = HOT_STANDBY_PROBE_INTERVAL_MS;
        }
        if sub.enabled && sub.methods.is_empty() {
            r.error_at(
                "method",
                "the subscriber is enabled but has no tunnel method".into(),
            );
        }
        r.finish();
        if sub.enabled {
            let line = s.get("enabled").map_or(s.line, |o| o.line);
            self.subscriber_enabled_at = Some((line, format!("{label}.enabled")));
        }
        self.config.subscriber = sub;
    }

    fn wireguard(&mut self, s: &Section, label: String) {
        let mut w = self.config.wireguard.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut w.interface, text(validate::ifname));
        r.single(
            "client_interface",
            &mut w.client_interface,
            text(validate::ifname),
        );
        r.single("listen_port", &mut w.listen_port, port);
        r.single("client_listen_port", &mut w.client_listen_port, port);
        r.single("mtu", &mut w.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.finish();
        self.config.wireguard = w;
    }

    fn openvpn(&mut self, s: &Section, label: String) {
        let mut o = self.config.openvpn.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut o.interface, text(validate::ifname));
        r.single(
            "client_interface",
            &mut o.client_interface,
            text(validate::ifname),
        );
        r.single("port", &mut o.port, port);
        r.single("mtu", &mut o.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.single("directory", &mut o.directory, absolute_dir);
        r.finish();
        self.config.openvpn = o;
    }

    fn softether(&mut self, s: &Section, label: String) {
        let mut o = self.config.softether.clone();
        let mut r = self.reader(s, label);
        let short_name = |v: &str| {
            if (1..=11).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "must be 1-11 letters and digits, got {}",
                    quoted(v)
                ))
            }
        };
        r.single("vpncmd", &mut o.vpncmd, |v| {
            if v.starts_with('/') {
                validate::path(v).map(|()| v.to_string())
            } else if v == "vpncmd" {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "must be an absolute path or 'vpncmd', got {}",
                    quoted(v)
                ))
            }
        });
        r.single("admin", &mut o.admin, |v| {
            match v.parse::<std::net::SocketAddrV4>() {
                Ok(a) if a.port() > 0 => Ok(v.to_string()),
                _ => Err(format!(
                    "must be IPV4:PORT such as 127.0.0.1:5555, got {}",
                    quoted(v)
                )),
            }
        });
        r.single("admin_password", &mut o.admin_password, |v| {
            if (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(v.to_string())
            } else {
                Err("must be 1-128 printable ASCII characters without spaces".into())
            }
        });
        r.single("hub", &mut o.hub, |v| {
            crate::tunnel::softether::check_name("hub", v).map(|()| v.to_string())
        });
        r.single("port", &mut o.port, port);
        r.single("device", &mut o.device, short_name);
        r.single("client_nic", &mut o.client_nic, short_name);
        r.single("directory", &mut o.directory, absolute_dir);
        r.finish();
        self.config.softether = o;
    }

    fn socks(&mut self, s: &Section, label: String) {
        let mut o = self.config.socks.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut o.interface, text(validate::ifname));
        r.single("port", &mut o.port, port);
        r.single("mtu", &mut o.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.single("directory", &mut o.directory, absolute_dir);
        r.single("listen", &mut o.listen, |v| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("must be an IP address, got {}", quoted(v)))
        });
        r.finish();
        self.config.socks = o;
    }

    fn iptunnel(&mut self, s: &Section, label: String) {
        let mut t = self.config.iptunnel.clone();
        let mut r = self.reader(s, label);
        r.single("interface_prefix", &mut t.interface_prefix, |v| {
            if v.len() > 7 {
                return Err(format!("must be at most 7 characters, got {}", quoted(v)));
            }
            text(validate::ifname)(v)
        });
        r.single(
            "client_interface",
            &mut t.client_interface,
            text(validate::ifname),
        );
        r.single("mtu", &mut t.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.finish();
        self.config.iptunnel = t;
    }

    fn cjdns(&mut self, s: &Section, label: String) {
        let mut c = self.config.cjdns.clone();
        let mut r = self.reader(s, label);
        r.single("admin", &mut c.admin, |v| {
            if v.starts_with("unix://") {
                return Err(format!(
                    "cjdroute's admin API is UDP: HOST:PORT, got {}",
                    quoted(v)
                ));
            }
            admin_endpoint(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("password", &mut c.password, |v| {
            admin_password(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("cjdroute_conf", &mut c.cjdroute_conf, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        r.single("interface", &mut c.interface, text(validate::ifname));
        r.single("timeout_ms", &mut c.timeout_ms, number(50, 60000));
        r.finish();
        self.config.cjdns = c;
    }

    fn discovery(&mut self, s: &Section, label: String) {
        let mut d = DiscoveryConfig {
            section: label.clone(),
            ..DiscoveryConfig::default()
        };
        let mut r = self.reader(s, label);
        r.single("method", &mut d.method, discovery_method);
        r.single("protocol", &mut d.protocol, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::route_protocol(v).map(|()| Some(v.to_string()))
            }
        });
        r.list("interface", &mut d.interfaces, text(validate::ifname));
        r.list("port", &mut d.ports, port);
        r.list("prefix", &mut d.prefixes, validate::prefix);
        r.single("concurrency", &mut d.concurrency, number(1, 1024));
        r.single("timeout_ms", &mut d.timeout_ms, number(50, 60000));
        r.single("route_gateways", &mut d.route_gateways, boolean);
        r.single("sweep", &mut d.sweep, sweep_prefix);
        r.single("admin", &mut d.admin, |v| {
            admin_endpoint(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("max_depth", &mut d.max_depth, number(1, 64));
        r.single("max_nodes", &mut d.max_nodes, number(1, 1_000_000));
        r.single("password", &mut d.password, |v| {
            admin_password(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("nodeinfo_only", &mut d.nodeinfo_only, boolean);
        r.single("cjdroute_conf", &mut d.cjdroute_conf, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        if d.ports.is_empty() {
            r.error_at("port", "at least one port is required".into());
        }
        r.finish();
        self.config.discovery.push(d);
    }

    fn cross_checks(&mut self) {
        if let Some((line, place)) = self.subscriber_enabled_at.take()
            && self.config.discovery.is_empty()
        {
            let msg = "subscriber is enabled but no discovery section is configured".into();
            self.push(Severity::Error, line, place, msg);
        }
    }
}

/// Typed access to one section's options. Records a problem for every invalid value (leaving
/// the default in place) and, in [`Reader::finish`], a warning for every option not asked for.
struct Reader<'s, 'b, 'f> {
    section: &'s Section,
    label: String,
    builder: &'b mut Builder<'f>,
    used: Vec<bool>,
}

impl<'s> Reader<'s, '_, '_> {
    fn problem(&mut self, severity: Severity, line: usize, option: &str, message: String) {
        let place = format!("{}.{option}", self.label);
        self.builder.push(severity, line, place, message);
    }

    /// An error about `option`, at its line if it is set, else at the section's line.
    fn error_at(&mut self, option: &str, message: String) {
        let line = self
            .section
            .get(option)
            .map_or(self.section.line, |o| o.line);
        self.problem(Severity::Error, line, option, message);
    }

    /// The option called `name`, now counted as known.
    fn take(&mut self, name: &str) -> Option<&'s UciOption> {
        let i = self.section.options.iter().position(|o| o.name == name)?;
        self.used[i] = true;
        Some(&self.section.options[i])
    }

    /// Sets `target` from a single-valued option, if present and valid.
    fn single<T>(&mut self, name: &str, target: &mut T, parse: impl Fn(&str) -> Result<T, String>) {
        let Some(opt) = self.take(name) else { return };
        match &opt.value {
            UciValue::Single(v) => match parse(v) {
                Ok(x) => *target = x,
                Err(msg) => self.problem(Severity::Error, opt.line, name, msg),
            },
            UciValue::List(_) => {
                let msg = "takes a single value: use 'option', not 'list'".to_string();
                self.problem(Severity::Error, opt.line, name, msg);
            }
        }
    }

    /// Replaces `target` with the values of a list option (`list`, or a single `option`), if
    /// present and all valid. Empty values are skipped, so `option NAME ''` means an empty list.
    fn list<T>(
        &mut self,
        name: &str,
        target: &mut Vec<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) {
        let Some(opt) = self.take(name) else { return };
        let mut values = Vec::new();
        let mut ok = true;
        for (v, line) in opt.value.values(opt.line) {
            if v.is_empty() {
                continue;
            }
            match parse(v) {
                Ok(x) => values.push(x),
                Err(msg) => {
                    ok = false;
                    self.problem(Severity::Error, line, name, msg);
                }
            }
        }
        if ok {
            *target = values;
        }
    }

    /// Warns about options nobody asked for and about values a later `option` replaced.
    fn finish(mut self) {
        let section = self.section;
        for (o, used) in section.options.iter().zip(std::mem::take(&mut self.used)) {
            if !used {
                self.problem(
                    Severity::Warning,
                    o.line,
                    &o.name,
                    "unknown option, ignored".into(),
                );
            }
        }
        for old in &section.overridden {
            let last = section.get(&old.name).map_or(0, |o| o.line);
            let msg = format!("set again on line {last}; this value is ignored");
            self.problem(Severity::Warning, old.line, &old.name, msg);
        }
    }
}

/// `option on_connect '/path'`: an absolute path; empty means no hook.
fn hook_path(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    validate::path(v).map(|()| Some(PathBuf::from(v)))
}

/// A validated string option.
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

fn text(check: fn(&str) -> Result<(), String>) -> impl Fn(&str) -> Result<String, String> {
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
fn number(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |v| match decimal(v).and_then(|n| u32::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number {min}-{max}, got {}",
            quoted(v)
        )),
    }
}

fn port(v: &str) -> Result<u16, String> {
    match decimal(v).and_then(|n| u16::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a port number 1-65535, got {}", quoted(v))),
    }
}

/// UCI's booleans, as `config_get_bool` reads them (case does not matter).
fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "enabled" => Ok(true),
        "0" | "false" | "no" | "off" | "disabled" => Ok(false),
        _ => Err(format!(
            "must be a boolean (0/1, true/false, yes/no, on/off, enabled/disabled), got {}",
            quoted(v)
        )),
    }
}

fn one_of(choices: &'static [&'static str]) -> impl Fn(&str) -> Result<String, String> {
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
fn gateway_ref(v: &str) -> Result<String, String> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    validate::node_name(v)
        .map(|()| v.to_string())
        .map_err(|e| format!("must be a mesh address or a node name: {e}"))
}

/// A method's state directory: an absolute path.
fn absolute_dir(v: &str) -> Result<PathBuf, String> {
    if v.starts_with('/') {
        validate::path(v).map(|()| PathBuf::from(v))
    } else {
        Err(format!("must be an absolute path, got {}", quoted(v)))
    }
}

fn ip_address(v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("must be an IPv4 or IPv6 address, got {}", quoted(v)))
}

fn ipv4_pool(v: &str) -> Result<Prefix, String> {
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

fn ipv6_pool(v: &str) -> Result<Option<Prefix>, String> {
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

/// Most addresses `option sweep` may cover: a /22.
pub const MAX_SWEEP_ADDRESSES: u128 = 1024;

fn sweep_prefix(v: &str) -> Result<Option<Prefix>, String> {
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

fn admin_password(v: &str) -> Result<(), String> {
    if v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("password must be at most 256 printable ASCII characters without spaces".into())
    }
}

fn discovery_method(v: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/config/mnigs";

    /// DESIGN.md §3, verbatim.
    const DESIGN_EXAMPLE: &str = "\
config mnigs 'main'
\toption name 'node-1'
\toption rpc_port '65533'
\tlist listen '::'
\toption database '/var/lib/mnigs/mnigs.db'
\tlist authorized_network '127.0.0.0/8'
\tlist authorized_network '::1/128'
\toption log_level 'info'

config gateway 'gateway'
\toption enabled '0'
\toption max_subscribers '10'
\toption lease_seconds '300'
\toption wan_interface 'wan0'
\toption ipv4_pool '100.127.0.0/24'
\toption ipv6_pool 'fd7e:7e7e::/64'
\toption price '0'
\toption bandwidth_down '0'
\toption bandwidth_up '0'
\tlist method 'wireguard'

config subscriber 'subscriber'
\toption enabled '0'
\tlist method 'wireguard'
\toption scan_interval '300'
\toption probe_interval '1'
\toption max_price '0'

config discovery 'babel'
\toption method 'routes'
\toption protocol 'babel'
\tlist interface 'mesh0'
\tlist port '65533'

config wireguard 'wireguard'
\toption interface 'mnigs-wg'
\toption listen_port '51820'
\toption mtu '1420'
";

    fn check(text: &str) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
        from_text(text, Path::new(FILE))
    }

    /// The problems of an invalid config, as `(line, place, message)`.
    fn problems(text: &str) -> Vec<(usize, String, String)> {
        check(text)
            .expect_err("config should be invalid")
            .into_iter()
            .map(|p| (p.line, p.place, p.message))
            .collect()
    }

    /// The single error of an invalid config.
    fn one(text: &str) -> (usize, String, String) {
        let mut all = problems(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.remove(0)
    }

    fn p(line: usize, place: &str, message: &str) -> (usize, String, String) {
        (line, place.to_string(), message.to_string())
    }

    fn pfx(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn design_example_parses_to_the_expected_config() {
        let (config, warnings) = check(DESIGN_EXAMPLE).unwrap();
        assert_eq!(warnings, vec![]);
        let mut expected = Config::default();
        expected.main.name = "node-1".into();
        expected.gateway.wan_interface = "wan0".into();
        // `option probe_interval '1'` (seconds) without probe_interval_ms is honoured.
        expected.subscriber.probe_interval_ms = 1000;
        expected.discovery.push(DiscoveryConfig {
            section: "babel".into(),
            method: "routes".into(),
            protocol: Some("babel".into()),
            interfaces: vec!["mesh0".into()],
            ports: vec![65533],
            prefixes: vec![],
            concurrency: 64,
            timeout_ms: 1500,
            ..DiscoveryConfig::default()
        });
        assert_eq!(config, expected);
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::default();
        assert_eq!(c.main.name, "mnigs");
        assert_eq!(c.main.rpc_port, 65533);
        assert_eq!(c.main.listen, vec!["::".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.main.database, Path::new("/var/lib/mnigs/mnigs.db"));
        assert_eq!(
            c.main.authorized_network,
            vec![pfx("127.0.0.0/8"), pfx("::1/128")]
        );
        assert_eq!(c.main.log_level, "info");
        assert!(!c.gateway.enabled);
        assert_eq!(
            (c.gateway.max_subscribers, c.gateway.lease_seconds),
            (10, 300)
        );
        assert_eq!(c.gateway.wan_interface, "wan");
        assert_eq!(c.gateway.ipv4_pool, pfx("100.127.0.0/24"));
        assert_eq!(c.gateway.ipv6_pool, Some(pfx("fd7e:7e7e::/64")));
        assert_eq!(
            (
                c.gateway.price,
                c.gateway.bandwidth_down,
                c.gateway.bandwidth_up
            ),
            (0, 0, 0)
        );
        assert_eq!(c.gateway.methods, vec!["wireguard"]);
        assert_eq!(c.gateway.nat, "auto");
        assert!(!c.subscriber.enabled);
        assert_eq!(c.subscriber.methods, vec!["wireguard"]);
        assert_eq!(
            (c.subscriber.scan_interval, c.subscriber.probe_interval),
            (300, 1)
        );
        assert_eq!(c.subscriber.max_price, 0);
        assert!(c.discovery.is_empty());
        assert_eq!(
            c.wireguard,
            WireguardConfig {
                interface: "mnigs-wg".into(),
                listen_port: 51820,
                mtu: 1420,
                client_interface: "mnigs-wgc".into(),
                client_listen_port: 51821,
            }
        );
        let d = DiscoveryConfig::default();
        assert_eq!(
            (d.method.as_str(), d.protocol.as_deref()),
            ("routes", Some("babel"))
        );
        assert_eq!(
            (d.ports, d.concurrency, d.timeout_ms),
            (vec![65533], 64, 1500)
        );
        // The defaults themselves pass validation.
        for v in &c.main.authorized_network {
            assert_eq!(validate::prefix(&v.to_string()), Ok(*v));
        }
    }

    #[test]
    fn shipped_file_states_the_tunnel_method_defaults() {
        let (c, warnings) = check(include_str!("../../files/etc/config/mnigs")).unwrap();
        assert_eq!(warnings, vec![]);
        assert_eq!(c.openvpn, OpenvpnConfig::default());
        assert_eq!(c.iptunnel, IptunnelConfig::default());
        assert_eq!(c.cjdns, CjdnsConfig::default());
    }

    #[test]
    fn cjdns_section_is_read_and_checked() {
        let text = "\
config cjdns
\toption admin '127.0.0.1:11235'
\toption password 'pw'
\toption cjdroute_conf '/etc/cjdroute.conf'
\toption interface 'tuncjdns'
\toption timeout_ms 500
";
        let (c, warnings) = check(text).unwrap();
        assert_eq!(warnings, vec![]);
        assert_eq!(
            c.cjdns,
            CjdnsConfig {
                admin: Some("127.0.0.1:11235".into()),
                password: Some("pw".into()),
                cjdroute_conf: Some(PathBuf::from("/etc/cjdroute.conf")),
                interface: "tuncjdns".into(),
                timeout_ms: 500,
            }
        );
        for (statement, place, message) in [
            (
                "option admin 'unix:///run/x.sock'",
                "c.admin",
                "cjdroute's admin API is UDP: HOST:PORT, got 'unix:///run/x.sock'",
            ),
            (
                "option password 'a b'",
                "c.password",
                "password must be at most 256 printable ASCII characters without spaces",
            ),
            (
                "option timeout_ms 10",
                "c.timeout_ms",
                "must be a whole number 50-60000, got '10'",
            ),
        ] {
            let text = format!("config cjdns c\n\t{statement}\n");
            assert_eq!(one(&text), p(2, place, message), "{text}");
        }
        assert!(check("config cjdns a\nconfig cjdns b\n").is_err());
    }

    #[test]
    fn tunnel_method_sections_are_read() {
        let (c, _) = check("").unwrap();
        assert_eq!(c.openvpn.port, 1194);
        assert_eq!(c.openvpn.directory, Path::new("/var/lib/mnigs/openvpn"));
        assert_eq!(c.iptunnel.interface_prefix, "mnt");
        let text = "\
config gateway g
\tlist method openvpn
\tlist method gre
\tlist method ipip
\tlist method route
config openvpn
\toption interface ov0
\toption client_interface ov1
\toption port 1195
\toption mtu 1300
\toption directory /var/lib/x
config iptunnel
\toption interface_prefix gr
\toption client_interface gr1
\toption mtu 1476
";
        let (c, warnings) = check(text).unwrap();
        assert_eq!(warnings, vec![]);
        assert_eq!(c.gateway.methods, ["openvpn", "gre", "ipip", "route"]);
        assert_eq!(
            c.openvpn,
            OpenvpnConfig {
                interface: "ov0".into(),
                client_interface: "ov1".into(),
                port: 1195,
                mtu: 1300,
                directory: PathBuf::from("/var/lib/x"),
            }
        );
        assert_eq!(
            c.iptunnel,
            IptunnelConfig {
                interface_prefix: "gr".into(),
                client_interface: "gr1".into(),
                mtu: 1476,
            }
        );
        assert!(check("config openvpn a\nconfig openvpn b\n").is_err());
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(check("").unwrap(), (Config::default(), vec![]));
        assert_eq!(check("# nothing\n\n").unwrap(), (Config::default(), vec![]));
    }

    #[test]
    fn every_option_is_read() {
        let text = "\
config mnigs 'main'
\toption name 'gw.example_1'
\toption rpc_port 8080
\tlist listen 0.0.0.0
\tlist listen fd00::1
\toption database /tmp/x.db
\toption authorized_network 10.0.0.0/8
\toption log_level debug
config gateway gw
\toption enabled yes
\toption max_subscribers 65535
\toption lease_seconds 5
\toption wan_interface eth1
\toption ipv4_pool 10.99.0.0/30
\toption ipv6_pool ''
\toption price 4294967295
\toption bandwidth_down 100000
\toption bandwidth_up 20000
\toption method wireguard
\toption nat nft
config subscriber
\toption enabled on
\toption scan_interval 86400
\toption probe_interval 3600
\toption max_price 7
config discovery
\toption protocol 42
\tlist interface mesh0
\tlist interface br-mesh
\tlist port 1
\tlist port 65535
\tlist prefix 10.0.0.0/8
\tlist prefix fd00::/8
\toption concurrency 1024
\toption timeout_ms 50
config discovery d2
\toption protocol ''
\toption interface wlan0
config wireguard
\toption interface wg9
\toption listen_port 1
\toption client_listen_port 2
\toption mtu 9000
";
        let (c, warnings) = check(text).unwrap();
        assert_eq!(warnings, vec![]);
        assert_eq!(c.main.name, "gw.example_1");
        assert_eq!(c.main.rpc_port, 8080);
        assert_eq!(
            c.main.listen,
            vec![IpAddr::from([0, 0, 0, 0]), "fd00::1".parse().unwrap()]
        );
        assert_eq!(c.main.database, Path::new("/tmp/x.db"));
        assert_eq!(c.main.authorized_network, vec![pfx("10.0.0.0/8")]);
        assert_eq!(c.main.log_level, "debug");
        let g = &c.gateway;
        assert!(g.enabled);
        assert_eq!((g.max_subscribers, g.lease_seconds), (65535, 5));
        assert_eq!(g.wan_interface, "eth1");
        assert_eq!((g.ipv4_pool, g.ipv6_pool), (pfx("10.99.0.0/30"), None));
        assert_eq!(
            (g.price, g.bandwidth_down, g.bandwidth_up),
            (u32::MAX, 100000, 20000)
        );
        assert_eq!(
            (g.methods.clone(), g.nat.as_str()),
            (vec!["wireguard".to_string()], "nft")
        );
        let s = &c.subscriber;
        assert!(s.enabled);
        assert_eq!(
            (s.scan_interval, s.probe_interval, s.max_price),
            (86400, 3600, 7)
        );
        assert_eq!(c.discovery.len(), 2);
        let d = &c.discovery[0];
        assert_eq!(d.section, "@discovery[0]");
        assert_eq!(
            (d.method.as_str(), d.protocol.as_deref()),
            ("routes", Some("42"))
        );
        assert_eq!(d.interfaces, vec!["mesh0", "br-mesh"]);
        assert_eq!(d.ports, vec![1, 65535]);
        assert_eq!(d.prefixes, vec![pfx("10.0.0.0/8"), pfx("fd00::/8")]);
        assert_eq!((d.concurrency, d.timeout_ms), (1024, 50));
        let d = &c.discovery[1];
        assert_eq!((d.section.as_str(), d.protocol.clone()), ("d2", None));
        assert_eq!(d.interfaces, vec!["wlan0"]);
        assert_eq!(
            c.wireguard,
            WireguardConfig {
                interface: "wg9".into(),
                listen_port: 1,
                mtu: 9000,
                client_interface: "mnigs-wgc".into(),
                client_listen_port: 2,
            }
        );
    }

    #[test]
    fn booleans_accept_uci_spellings() {
        for (v, want) in [
            ("1", true),
            ("true", true),
            ("yes", true),
            ("on", true),
            ("enabled", true),
            ("TRUE", true),
            ("0", false),
            ("false", false),
            ("no", false),
            ("off", false),
            ("disabled", false),
        ] {
            let (c, _) = check(&format!("config gateway\n\toption enabled '{v}'\n")).unwrap();
            assert_eq!(c.gateway.enabled, want, "{v}");
        }
        assert_eq!(
            one("config gateway g\n\toption enabled maybe\n"),
            p(
                2,
                "g.enabled",
                "must be a boolean (0/1, true/false, yes/no, on/off, enabled/disabled), got 'maybe'"
            )
        );
    }

    /// One invalid value per row: `SECTION HEADER | STATEMENTS (line 2) | PLACE | MESSAGE`.
    const INVALID: &str = "\
mnigs main | option rpc_port abc | main.rpc_port | must be a port number 1-65535, got 'abc'
mnigs main | option rpc_port 0 | main.rpc_port | must be a port number 1-65535, got '0'
mnigs main | option rpc_port 65536 | main.rpc_port | must be a port number 1-65535, got '65536'
mnigs main | option rpc_port ' 80' | main.rpc_port | must be a port number 1-65535, got ' 80'
mnigs main | option rpc_port -1 | main.rpc_port | must be a port number 1-65535, got '-1'
mnigs main | option name '-rf' | main.name | node name must be 1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, got '-rf'
mnigs main | list listen '::'; list listen localhost | main.listen | must be an IPv4 or IPv6 address, got 'localhost'
mnigs main | option listen '' | main.listen | at least one address is required
mnigs main | list listen_interface 'a;b' | main.listen_interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got 'a;b'
mnigs main | option database 'var/db' | main.database | path must be absolute (start with '/'), got 'var/db'
mnigs main | list authorized_network 10.0.0.1/8 | main.authorized_network | prefix '10.0.0.1/8' has host bits set; the network address is 10.0.0.0/8
mnigs main | option log_level verbose | main.log_level | must be one of debug, info, warn, error, got 'verbose'
mnigs main | option persist_path 'etc/x.db' | main.persist_path | path must be absolute (start with '/'), got 'etc/x.db'
mnigs main | option persist_interval 0 | main.persist_interval | must be a whole number 1-604800, got '0'
mnigs main | option rate_limit x | main.rate_limit | must be a whole number 0-100000, got 'x'
mnigs main | option rate_burst 0 | main.rate_burst | must be a whole number 1-100000, got '0'
mnigs main | option max_connections 0 | main.max_connections | must be a whole number 1-10000, got '0'
mnigs main | option read_timeout 0 | main.read_timeout | must be a whole number 1-3600, got '0'
mnigs main | option persist_path '/var/lib/mnigs/mnigs.db' | main.persist_path | must differ from database: the live database is copied there
gateway g | option max_subscribers 0 | g.max_subscribers | must be a whole number 1-65535, got '0'
gateway g | option lease_seconds 4 | g.lease_seconds | must be a whole number 5-86400, got '4'
gateway g | option lease_seconds 86401 | g.lease_seconds | must be a whole number 5-86400, got '86401'
gateway g | option wan_interface 'eth0;reboot' | g.wan_interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got 'eth0;reboot'
gateway g | option ipv4_pool fd00::/64 | g.ipv4_pool | must be an IPv4 prefix, got 'fd00::/64'
gateway g | option ipv4_pool 10.0.0.0/31 | g.ipv4_pool | must hold at least 4 addresses (a /30 or shorter), got '10.0.0.0/31'
gateway g | option ipv6_pool 10.0.0.0/24 | g.ipv6_pool | must be an IPv6 prefix, or '' for none, got '10.0.0.0/24'
gateway g | option price -5 | g.price | must be a whole number 0-4294967295, got '-5'
gateway g | option bandwidth_up 4294967296 | g.bandwidth_up | must be a whole number 0-4294967295, got '4294967296'
gateway g | list method l2tp | g.method | unknown tunnel method 'l2tp'; supported: wireguard, openvpn, gre, ipip, route, cjdns, socks, softether
gateway g | option nat pf | g.nat | must be one of auto, nft, iptables, got 'pf'
subscriber s | option scan_interval 0 | s.scan_interval | must be a whole number 1-86400, got '0'
subscriber s | option probe_interval 3601 | s.probe_interval | must be a whole number 1-3600, got '3601'
subscriber s | list method wireguard; list method sit | s.method | unknown tunnel method 'sit'; supported: wireguard, openvpn, gre, ipip, route, cjdns, socks, softether
discovery | option method dns | @discovery[0].method | unknown discovery method 'dns'; expected one of routes, neighbours, cjdns, yggdrasil, gossip
discovery d | option protocol Babel | d.protocol | route protocol must be a number 0-255 or a name of 1-31 characters a-z 0-9 _ - starting with a letter, got 'Babel'
discovery d | list port 65533; list port 70000 | d.port | must be a port number 1-65535, got '70000'
discovery d | option port '' | d.port | at least one port is required
discovery d | list prefix 10.0.0.0 | d.prefix | prefix must be ADDRESS/LENGTH such as 10.0.0.0/24, got '10.0.0.0'
discovery d | list interface '../x' | d.interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got '../x'
discovery d | option concurrency 1025 | d.concurrency | must be a whole number 1-1024, got '1025'
discovery d | option timeout_ms 49 | d.timeout_ms | must be a whole number 50-60000, got '49'
discovery d | option route_gateways maybe | d.route_gateways | must be a boolean (0/1, true/false, yes/no, on/off, enabled/disabled), got 'maybe'
discovery d | option sweep 10.0.0.0/21 | d.sweep | must be an IPv4 prefix of at most 1024 addresses (/22 or longer), got '10.0.0.0/21'
discovery d | option sweep fd00::/120 | d.sweep | must be an IPv4 prefix of at most 1024 addresses (/22 or longer), got 'fd00::/120'
discovery d | option admin 'unix://rel/sock' | d.admin | admin endpoint must be HOST:PORT, tcp://HOST:PORT or unix:///PATH, got 'unix://rel/sock'
discovery d | option admin 'example.org:9001' | d.admin | admin endpoint must be HOST:PORT, tcp://HOST:PORT or unix:///PATH, got 'example.org:9001'
discovery d | option max_depth 0 | d.max_depth | must be a whole number 1-64, got '0'
discovery d | option nodeinfo_only 2 | d.nodeinfo_only | must be a boolean (0/1, true/false, yes/no, on/off, enabled/disabled), got '2'
discovery d | option max_nodes 1000001 | d.max_nodes | must be a whole number 1-1000000, got '1000001'
discovery d | option password 'a b' | d.password | password must be at most 256 printable ASCII characters without spaces
wireguard w | option mtu 1279 | w.mtu | must be a whole number 1280-9000, got '1279'
wireguard w | option listen_port 0x10 | w.listen_port | must be a port number 1-65535, got '0x10'
openvpn o | option port 0 | o.port | must be a port number 1-65535, got '0'
openvpn o | option mtu 9001 | o.mtu | must be a whole number 1280-9000, got '9001'
openvpn o | option directory 'etc/x' | o.directory | must be an absolute path, got 'etc/x'
softether e | option admin '[::1]:5555' | e.admin | must be IPV4:PORT such as 127.0.0.1:5555, got '[::1]:5555'
softether e | option hub 'a/b' | e.hub | hub must be 1-48 letters and digits, got 'a/b'
softether e | option device 'abcdefghijkl' | e.device | must be 1-11 letters and digits, got 'abcdefghijkl'
softether e | option client_nic 'a-b' | e.client_nic | must be 1-11 letters and digits, got 'a-b'
softether e | option vpncmd 'bin/vpncmd' | e.vpncmd | must be an absolute path or 'vpncmd', got 'bin/vpncmd'
socks x | option port 0 | x.port | must be a port number 1-65535, got '0'
socks x | option port 65536 | x.port | must be a port number 1-65535, got '65536'
socks x | option mtu 100 | x.mtu | must be a whole number 1280-9000, got '100'
socks x | option directory 'run/x' | x.directory | must be an absolute path, got 'run/x'
socks x | option listen '10.0.0.1 -b 1.2.3.4' | x.listen | must be an IP address, got '10.0.0.1 -b 1.2.3.4'
socks x | option interface '-x' | x.interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got '-x'
openvpn o | option client_interface 'a b' | o.client_interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got 'a b'
iptunnel t | option interface_prefix 'mnigsgre' | t.interface_prefix | must be at most 7 characters, got 'mnigsgre'
iptunnel t | option interface_prefix 'a;b' | t.interface_prefix | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got 'a;b'
iptunnel t | option mtu 100 | t.mtu | must be a whole number 1280-9000, got '100'
wireguard w | option interface '' | w.interface | interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' and not '.' or '..', got ''
";

    #[test]
    fn invalid_values_name_line_place_and_problem() {
        let mut rows = 0;
        for row in INVALID.lines() {
            let cols: Vec<&str> = row.split(" | ").collect();
            let [header, statements, place, message] = cols[..] else {
                panic!("bad row {row}");
            };
            let text = format!("config {header}\n\t{statements}\n");
            assert_eq!(one(&text), p(2, place, message), "{text}");
            rows += 1;
        }
        assert_eq!(rows, 71);
    }

    #[test]
    fn list_where_a_single_value_is_expected() {
        assert_eq!(
            one("config mnigs main\n\tlist rpc_port 1\n\tlist rpc_port 2\n"),
            p(
                2,
                "main.rpc_port",
                "takes a single value: use 'option', not 'list'"
            )
        );
    }

    #[test]
    fn a_single_option_for_a_list_field_is_fine() {
        let (c, _) = check("config gateway g\n\toption method wireguard\n").unwrap();
        assert_eq!(c.gateway.methods, vec!["wireguard"]);
        let (c, _) = check("config discovery d\n\toption port 80\n").unwrap();
        assert_eq!(c.discovery[0].ports, vec![80]);
    }

    #[test]
    fn empty_list_values_are_skipped() {
        let (c, _) =
            check("config discovery d\n\tlist interface ''\n\tlist interface 'mesh0'\n").unwrap();
        assert_eq!(c.discovery[0].interfaces, vec!["mesh0"]);
        let (c, _) = check("config mnigs main\n\toption authorized_network ''\n").unwrap();
        assert_eq!(c.main.authorized_network, vec![]);
    }

    #[test]
    fn hostile_values_never_reach_the_config() {
        for (option, value) in [
            ("wan_interface", "eth0 reboot"),
            ("wan_interface", "$(reboot)"),
            ("wan_interface", "-o"),
            ("wan_interface", "\u{435}th0"),
            ("method", "wireguard;reboot"),
            ("nat", "auto\t"),
            ("ipv4_pool", "10.0.0.0/24;"),
        ] {
            let text = format!("config gateway g\n\toption {option} \"{value}\"\n");
            let all = problems(&text);
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!(all[0].1, format!("g.{option}"));
            assert!(!all[0].2.contains('\n'), "{all:?}");
        }
    }

    #[test]
    fn unknown_sections_and_options_are_warnings() {
        let text = "\
config mnigs 'main'
\toption name 'n1'
\toption colour 'blue'

config frobnicator 'x'
\toption a 'b'
config discovery
\toption hops 3
";
        let (c, warnings) = check(text).unwrap();
        assert_eq!(c.main.name, "n1");
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "/etc/config/mnigs:3: main.colour: warning: unknown option, ignored",
                "/etc/config/mnigs:5: x: warning: unknown section type 'frobnicator', ignored",
                "/etc/config/mnigs:8: @discovery[0].hops: warning: unknown option, ignored",
            ]
        );
        assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
    }

    #[test]
    fn repeated_option_warns_and_the_last_wins() {
        let (c, warnings) =
            check("config gateway g\n\toption price 1\n\toption price 2\n").unwrap();
        assert_eq!(c.gateway.price, 2);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "/etc/config/mnigs:2: g.price: warning: set again on line 3; this value is ignored"
        );
    }

    #[test]
    fn main_section_should_be_named_main() {
        let (c, warnings) = check("config mnigs\n\toption name x\n").unwrap();
        assert_eq!(c.main.name, "x");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].place, "@mnigs[0]");
        assert_eq!(warnings[0].line, 1);
        assert!(warnings[0].message.contains("should be named 'main'"));
    }

    #[test]
    fn singleton_sections_may_have_any_name() {
        let (c, warnings) =
            check("config gateway\n\toption price 3\nconfig subscriber sub\nconfig wireguard wg\n\toption mtu 1280\n")
                .unwrap();
        assert_eq!(warnings, vec![]);
        assert_eq!((c.gateway.price, c.wireguard.mtu), (3, 1280));
    }

    #[test]
    fn a_second_singleton_section_is_an_error() {
        assert_eq!(
            one("config gateway a\n\noption price 1\nconfig gateway\n\toption price 2\n"),
            p(
                4,
                "@gateway[1]",
                "only one 'gateway' section is allowed (the first is on line 1); this one is ignored"
            )
        );
        assert_eq!(
            one("config mnigs main\nconfig mnigs other\n"),
            p(
                2,
                "other",
                "only one 'mnigs' section is allowed (the first is on line 1); this one is ignored"
            )
        );
    }

    #[test]
    fn duplicate_section_names_are_errors() {
        assert_eq!(
            one("config discovery d\nconfig discovery d\n"),
            p(
                2,
                "d",
                "section name 'd' is already used on line 1; this section is ignored"
            )
        );
    }

    #[test]
    fn discovery_search_options_parse() {
        let text = "config discovery c\n\toption admin 127.0.0.1:11234\n\toption password s3cret\n\toption cjdroute_conf /etc/cjdroute.conf\n\toption max_depth 3\n\toption max_nodes 300\nconfig discovery n\n\toption method neighbours\n\toption sweep 10.9.0.0/22\n\toption route_gateways 1\nconfig discovery y\n\toption admin unix:///var/run/yggdrasil/yggdrasil.sock\n";
        let (c, w) = check(text).unwrap();
        assert_eq!(w, vec![]);
        let d = &c.discovery[0];
        assert_eq!(d.admin.as_deref(), Some("127.0.0.1:11234"));
        assert_eq!(d.password.as_deref(), Some("s3cret"));
        assert_eq!(d.cjdroute_conf, Some(PathBuf::from("/etc/cjdroute.conf")));
        assert_eq!((d.max_depth, d.max_nodes), (3, 300));
        let d = &c.discovery[1];
        assert_eq!(
            (d.sweep, d.route_gateways),
            (Some(pfx("10.9.0.0/22")), true)
        );
        assert_eq!(
            c.discovery[2].admin.as_deref(),
            Some("unix:///var/run/yggdrasil/yggdrasil.sock")
        );
        let d = DiscoveryConfig::default();
        assert_eq!((d.max_depth, d.max_nodes, d.sweep), (8, 2000, None));
        assert!(admin_endpoint("tcp://localhost:9001").is_ok());
        assert!(admin_endpoint("[::1]:11234").is_ok());
    }

    #[test]
    fn anonymous_discovery_sections_are_numbered_like_uci() {
        let (c, _) = check("config discovery\nconfig discovery named\nconfig discovery\n").unwrap();
        let names: Vec<_> = c.discovery.iter().map(|d| d.section.as_str()).collect();
        assert_eq!(names, vec!["@discovery[0]", "named", "@discovery[2]"]);
    }

    #[test]
    fn enabled_gateway_needs_a_method() {
        assert_eq!(
            one("config gateway g\n\toption enabled 1\n\toption method ''\n"),
            p(
                3,
                "g.method",
                "the gateway is enabled but has no tunnel method"
            )
        );
        // Disabled, an empty method list is fine.
        assert!(check("config gateway g\n\toption method ''\n").is_ok());
    }

    #[test]
    fn enabled_subscriber_needs_discovery() {
        assert_eq!(
            one("config subscriber s\n\n\toption enabled 1\n"),
            p(
                3,
                "s.enabled",
                "subscriber is enabled but no discovery section is configured"
            )
        );
        assert!(check("config discovery\nconfig subscriber s\n\toption enabled 1\n").is_ok());
        // A discovery section later in the file counts too.
        assert!(check("config subscriber s\n\toption enabled 1\nconfig discovery\n").is_ok());
        assert_eq!(
            one("config discovery\nconfig subscriber s\n\toption enabled 1\n\toption method ''\n"),
            p(
                4,
                "s.method",
                "the subscriber is enabled but has no tunnel method"
            )
        );
    }

    #[test]
    fn grammar_errors_are_one_problem_without_place() {
        let all = check("config mnigs main\n\toption name 'x\n").unwrap_err();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].line, all[0].place.as_str()), (2, ""));
        assert_eq!(
            all[0].to_string(),
            "/etc/config/mnigs:2: unterminated ' quote"
        );
    }

    #[test]
    fn all_problems_are_reported_sorted_by_line() {
        let text = "\
config wireguard w
\toption mtu 10
config mnigs main
\toption rpc_port x
\toption colour red
\toption log_level loud
config gateway g
\toption max_subscribers 0
";
        let all = check(text).unwrap_err();
        let got: Vec<_> = all
            .iter()
            .map(|p| (p.line, p.place.as_str(), p.is_error()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "w.mtu", true),
                (4, "main.rpc_port", true),
                (5, "main.colour", false),
                (6, "main.log_level", true),
                (8, "g.max_subscribers", true),
            ]
        );
        assert_eq!(
            all[0].to_string(),
            "/etc/config/mnigs:2: w.mtu: must be a whole number 1280-9000, got '10'"
        );
    }

    #[test]
    fn invalid_values_keep_the_default() {
        // Not observable through Err, but the builder must not half-apply a bad list.
        let mut b = Builder {
            file: Path::new(FILE),
            config: Config::default(),
            problems: vec![],
            subscriber_enabled_at: None,
        };
        let s =
            uci::parse("config mnigs main\n\tlist listen 10.0.0.1\n\tlist listen bad\n").unwrap();
        b.sections(&s);
        assert_eq!(b.config.main.listen, MainConfig::default().listen);
        assert_eq!(b.problems.len(), 1);
    }

    #[test]
    fn problem_display() {
        let mut pr = Problem {
            severity: Severity::Error,
            file: PathBuf::from(FILE),
            line: 12,
            place: "main.rpc_port".into(),
            message: "must be a port number 1-65535, got 'abc'".into(),
        };
        assert_eq!(
            pr.to_string(),
            "/etc/config/mnigs:12: main.rpc_port: must be a port number 1-65535, got 'abc'"
        );
        pr.severity = Severity::Warning;
        pr.place = "main.colour".into();
        pr.message = "unknown option, ignored".into();
        assert_eq!(
            pr.to_string(),
            "/etc/config/mnigs:12: main.colour: warning: unknown option, ignored"
        );
        pr.place.clear();
        pr.line = 0;
        pr.severity = Severity::Error;
        pr.message = "cannot read: gone".into();
        assert_eq!(pr.to_string(), "/etc/config/mnigs: cannot read: gone");
    }

    /// A fresh path under the temp dir, unique per test and process.
    fn temp_file(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("mnigs-config-test-{}-{tag}", std::process::id()))
    }

    #[test]
    fn load_reads_a_file() {
        let path = temp_file("ok");
        std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
        let result = load(&path);
        std::fs::remove_file(&path).unwrap();
        let (c, warnings) = result.unwrap();
        assert_eq!((c.main.name.as_str(), warnings.len()), ("node-1", 0));
    }

    #[test]
    fn load_reports_an_unreadable_file_at_line_0() {
        let path = temp_file("missing");
        let all = load(&path).unwrap_err();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].line, all[0].place.as_str(), all[0].is_error()),
            (0, "", true)
        );
        assert!(
            all[0].message.starts_with("cannot read: "),
            "{}",
            all[0].message
        );
        assert!(
            all[0]
                .to_string()
                .starts_with(&format!("{}: cannot read: ", path.display()))
        );
    }

    #[test]
    fn load_reports_invalid_utf8_with_its_line() {
        let path = temp_file("utf8");
        std::fs::write(&path, b"config mnigs main\n\toption name 'a\xffb'\n").unwrap();
        let result = load(&path);
        std::fs::remove_file(&path).unwrap();
        let all = result.unwrap_err();
        assert_eq!((all.len(), all[0].line), (1, 2));
        assert_eq!(all[0].message, "the file is not valid UTF-8");
    }

    #[test]
    fn prefix_helpers() {
        let p = pfx("100.127.0.0/24");
        assert_eq!(p.to_string(), "100.127.0.0/24");
        assert_eq!(p.host_count(), 256);
        assert_eq!(p.nth_host(0), Some(IpAddr::from([100, 127, 0, 0])));
        assert_eq!(p.nth_host(1), Some(IpAddr::from([100, 127, 0, 1])));
        assert_eq!(p.nth_host(255), Some(IpAddr::from([100, 127, 0, 255])));
        assert_eq!(p.nth_host(256), None);
        assert!(p.contains(IpAddr::from([100, 127, 0, 77])));
        assert!(!p.contains(IpAddr::from([100, 127, 1, 0])));
        assert!(!p.contains("::ffff:100.127.0.1".parse().unwrap()));
        assert_eq!(p.network(), p.addr);

        let v6 = pfx("fd7e:7e7e::/64");
        assert_eq!(v6.to_string(), "fd7e:7e7e::/64");
        assert_eq!(v6.host_count(), 1 << 64);
        assert_eq!(
            v6.nth_host(0x1234),
            Some("fd7e:7e7e::1234".parse().unwrap())
        );
        assert_eq!(v6.nth_host(1 << 64), None);
        assert!(v6.contains("fd7e:7e7e::ffff:1".parse().unwrap()));
        assert!(!v6.contains("fd7e:7e7f::1".parse().unwrap()));
        assert!(!v6.contains(IpAddr::from([10, 0, 0, 1])));

        let all4 = pfx("0.0.0.0/0");
        assert_eq!(all4.host_count(), 1 << 32);
        assert_eq!(
            all4.nth_host(u128::from(u32::MAX)),
            Some(IpAddr::from([255, 255, 255, 255]))
        );
        assert_eq!(all4.nth_host(1 << 32), None);
        assert!(all4.contains(IpAddr::from([8, 8, 8, 8])));

        let all6 = pfx("::/0");
        assert_eq!(all6.host_count(), u128::MAX);
        assert_eq!(
            all6.nth_host(u128::MAX),
            Some(IpAddr::V6(Ipv6Addr::from(u128::MAX)))
        );
        assert!(all6.contains("2001:db8::1".parse().unwrap()));

        let host = pfx("10.1.2.3/32");
        assert_eq!(
            (host.host_count(), host.nth_host(0), host.nth_host(1)),
            (1, Some(host.addr), None)
        );
        assert!(host.contains(host.addr));
        assert!(!host.contains(IpAddr::from([10, 1, 2, 4])));

        // A hand-built prefix with host bits set still answers by its network.
        let sloppy = Prefix {
            addr: IpAddr::from([10, 1, 2, 3]),
            len: 24,
        };
        assert_eq!(sloppy.network(), IpAddr::from([10, 1, 2, 0]));
        assert_eq!(sloppy.nth_host(5), Some(IpAddr::from([10, 1, 2, 5])));
        assert!(sloppy.contains(IpAddr::from([10, 1, 2, 200])));
        // An impossible length is treated as a host route rather than panicking.
        let bogus = Prefix {
            addr: IpAddr::from([10, 1, 2, 3]),
            len: 40,
        };
        assert_eq!((bogus.host_count(), bogus.nth_host(1)), (1, None));
    }

    #[test]
    fn prefix_from_str_uses_the_validator() {
        assert_eq!("10.0.0.0/8".parse::<Prefix>(), Ok(pfx("10.0.0.0/8")));
        assert_eq!(
            "10.0.0.1/8".parse::<Prefix>(),
            Err(validate::prefix("10.0.0.1/8").unwrap_err())
        );
        for p in ["0.0.0.0/0", "::/0", "2001:db8::/32", "192.168.1.128/25"] {
            assert_eq!(pfx(p).to_string(), p);
        }
    }

    #[test]
    fn failover_options_parse_and_validate() {
        let (c, warnings) = check(
            "config subscriber 's'\n\toption probe_interval_ms '100'\n\toption down_after '2'\n\
             \tlist probe_target '203.0.113.7'\n\toption prefer 'gw1'\n\tlist exclude 'gw3'\n\
             \toption failback_after '5'\n\toption hot_standby '1'\n\toption fail_closed '1'\n\
             config gateway 'g'\n\tlist uplink_target '198.51.100.2'\n\toption uplink_interval '1'\n",
        )
        .unwrap();
        assert_eq!(warnings, vec![]);
        let s = &c.subscriber;
        assert_eq!(
            (s.probe_interval_ms, s.down_after, s.failback_after),
            (100, 2, 5)
        );
        assert_eq!(s.probe_targets, ["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.prefer.as_deref(), Some("gw1"));
        assert_eq!(s.exclude, ["gw3"]);
        assert!(s.hot_standby && s.fail_closed);
        assert_eq!(c.gateway.uplink_targets.len(), 1);
        assert_eq!(c.gateway.uplink_interval, 1);
        // Both given: the milliseconds win.
        let (c, _) =
            check("config subscriber 's'\n\toption probe_interval '2'\n\toption probe_interval_ms '300'\n")
                .unwrap();
        assert_eq!(c.subscriber.probe_interval_ms, 300);
        let (c, _) = check("config subscriber 's'\n\toption probe_interval '2'\n").unwrap();
        assert_eq!(c.subscriber.probe_interval_ms, 2000);
        assert_eq!(Config::default().subscriber.probe_interval_ms, 200);
        let (c, _) = check("config subscriber 's'\n\toption hot_standby '1'\n").unwrap();
        assert_eq!(
            c.subscriber.probe_interval_ms,
            HOT_STANDBY_PROBE_INTERVAL_MS
        );
        for bad in [
            "\toption probe_interval_ms '10'",
            "\toption down_after '0'",
            "\tlist probe_target 'nowhere'",
            "\toption prefer 'a b'",
            "\toption hot_standby 'maybe'",
        ] {
            let text = format!("config subscriber 's'\n{bad}\n");
            assert_eq!(problems(&text).len(), 1, "{bad}");
        }
    }

    #[test]
    fn negative_cache_is_read_and_bounded() {
        let ok = "config subscriber 'subscriber'\n\toption negative_cache '900'\n";
        let (c, _) = from_text(ok, Path::new("t")).unwrap();
        assert_eq!(c.subscriber.negative_cache, 900);
        assert_eq!(Config::default().subscriber.negative_cache, 600);
        let bad = "config subscriber 'subscriber'\n\toption negative_cache '-1'\n";
        let problems = from_text(bad, Path::new("t")).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.place == "subscriber.negative_cache" && p.line == 2),
            "{problems:?}"
        );
    }

    #[test]
    fn empty_name_is_the_host_name_made_valid() {
        assert_eq!(node_name_from_host("OpenWrt\n"), "OpenWrt");
        assert_eq!(node_name_from_host("my router (attic)"), "my-router-attic");
        assert_eq!(node_name_from_host("--a!!b--"), "a-b");
        assert_eq!(node_name_from_host("._x.y_z"), "x.y_z");
        assert_eq!(node_name_from_host(""), "mnigs");
        assert_eq!(node_name_from_host("!!!"), "mnigs");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(
            node_name_from_host(&long),
            "a".repeat(62),
            "cut, no '-' left at the end"
        );
        let cfg = "config mnigs 'main'\n\toption name ''\n";
        let (config, problems) = from_text(cfg, Path::new("t")).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.main.name, host_name());
    }
}
