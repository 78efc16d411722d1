//! The typed configuration: [`Config`], one struct per section type with its defaults, and the
//! constants the sections' values are checked against. See README, "Configuration".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::prefix::Prefix;

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

/// Most addresses `option sweep` may cover: a /22.
pub const MAX_SWEEP_ADDRESSES: u128 = 1024;

/// `config mnigs 'main'`.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    /// What this node calls itself (`option name`); empty means the host name ([`super::host_name`]).
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
    /// Tunnel methods offered, from [`crate::validate::METHODS`] (`list method`).
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

/// Default `probe_interval_ms` with `option hot_standby '1'`: eight regular probes a second leave two of
/// the ten allowed per tunnel (`subscriber::probe::MAX_PER_SECOND`) for confirming a miss at once.
pub const HOT_STANDBY_PROBE_INTERVAL_MS: u32 = 125;

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
    /// default 200, 125 with hot standby; at most 10 probes a second per tunnel whatever it says).
    /// When only `option probe_interval` (seconds) is given, it is used instead.
    pub probe_interval_ms: u32,
    /// The path is down after this many probes in a row went unanswered (`option down_after`,
    /// 1-100, default 3). After a miss the next probe goes at once, each waiting three times the
    /// path's slowest recent answer (at least 30 ms): with 200 ms probes a dead path is known
    /// within about 0.3 s.
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
    /// fc00::/7); see `trust`.
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
            grant_allow: crate::trust::default_allow(),
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
    /// Subscriber: the tun2socks program (`option client`), a name on PATH or an absolute path
    /// whose file name is `hev-socks5-tunnel`, `tun2proxy` or `tun2proxy-bin`.
    pub client: String,
}

impl Default for SocksConfig {
    fn default() -> SocksConfig {
        SocksConfig {
            interface: "mnigs-socks".into(),
            port: 10800,
            mtu: 1500,
            directory: PathBuf::from("/var/run/mnigs/socks"),
            listen: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            client: crate::validate::SOCKS_CLIENT.into(),
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

impl Config {
    /// The gateway's mesh interfaces: `list mesh_interface`, else those of the discovery
    /// sections; never the WAN interface.
    pub fn mesh_interfaces(&self) -> Vec<String> {
        let mut v = if self.gateway.mesh_interfaces.is_empty() {
            self.discovery
                .iter()
                .flat_map(|d| d.interfaces.iter().cloned())
                .collect()
        } else {
            self.gateway.mesh_interfaces.clone()
        };
        v.retain(|i| *i != self.gateway.wan_interface);
        v.sort();
        v.dedup();
        v
    }
}

impl<'a> From<&'a Config> for crate::hooks::Hooks<'a> {
    /// The subscriber's hooks, their timeout and this node's name.
    fn from(cfg: &'a Config) -> Self {
        crate::hooks::Hooks {
            paths: &cfg.subscriber.hooks,
            timeout: Duration::from_secs(u64::from(cfg.subscriber.hook_timeout)),
            node: &cfg.main.name,
        }
    }
}
