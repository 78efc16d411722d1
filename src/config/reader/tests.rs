use super::*;
use crate::prefix::Prefix;

const FILE: &str = "/etc/config/mnigs";

/// The minimal example config the design started from, verbatim (README, "Configuration",
/// shows every option).
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
    let (c, warnings) = check(include_str!("../../../files/etc/config/mnigs")).unwrap();
    assert_eq!(warnings, vec![]);
    assert_eq!(c.openvpn, OpenvpnConfig::default());
    assert_eq!(c.iptunnel, IptunnelConfig::default());
    assert_eq!(c.cjdns, CjdnsConfig::default());
    // socks: the defaults but the client, OpenWrt's tun2socks.
    let socks = crate::config::types::SocksConfig {
        client: "hev-socks5-tunnel".into(),
        ..Default::default()
    };
    assert_eq!(c.socks, socks);
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
socks x | option client 'tun2socks' | x.client | must be hev-socks5-tunnel, tun2proxy or tun2proxy-bin (a name on PATH or an absolute path), got 'tun2socks'
socks x | option client '/usr/bin/hev-socks5-tunnel -x' | x.client | must be hev-socks5-tunnel, tun2proxy or tun2proxy-bin (a name on PATH or an absolute path), got '/usr/bin/hev-socks5-tunnel -x'
socks x | option client 'bin/hev-socks5-tunnel' | x.client | path must be absolute (start with '/'), got 'bin/hev-socks5-tunnel'
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
    assert_eq!(rows, 74);
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
    let (c, warnings) = check("config gateway g\n\toption price 1\n\toption price 2\n").unwrap();
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
    let s = uci::parse("config mnigs main\n\tlist listen 10.0.0.1\n\tlist listen bad\n").unwrap();
    b.sections(&s);
    assert_eq!(b.config.main.listen, MainConfig::default().listen);
    assert_eq!(b.problems.len(), 1);
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
    let (c, _) = check(
        "config subscriber 's'\n\toption probe_interval '2'\n\toption probe_interval_ms '300'\n",
    )
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

#[test]
fn hook_options_parse_and_must_be_absolute() {
    use crate::hooks::{Event, Hooks};
    let text = "config mnigs 'main'\n\toption name 'sub-1'\n\
                config subscriber 'subscriber'\n\toption on_connect '/etc/mnigs/up'\n\
                \toption on_failover ''\n\toption hook_timeout '3'\n";
    let (cfg, _) = from_text(text, Path::new("t")).unwrap();
    assert_eq!(
        cfg.subscriber.hooks.get(Event::Connect),
        Some(Path::new("/etc/mnigs/up"))
    );
    assert_eq!(cfg.subscriber.hooks.get(Event::Failover), None);
    assert_eq!(cfg.subscriber.hook_timeout, 3);
    // What `hooks::fire` is given for this config.
    let hooks = Hooks::from(&cfg);
    assert_eq!(hooks.paths, &cfg.subscriber.hooks);
    assert_eq!(hooks.timeout, std::time::Duration::from_secs(3));
    assert_eq!(hooks.node, "sub-1");
    let bad = "config subscriber 'subscriber'\n\toption on_release 'up.sh'\n";
    let problems = from_text(bad, Path::new("t")).unwrap_err();
    assert!(
        problems[0].to_string().contains("on_release"),
        "{}",
        problems[0]
    );
}

#[test]
fn the_socks_client_is_named_by_its_program() {
    let (c, _) = check("config socks 'socks'\n").unwrap();
    assert_eq!(c.socks.client, "tun2proxy-bin", "today's default");
    for v in [
        "/usr/bin/hev-socks5-tunnel",
        "hev-socks5-tunnel",
        "/opt/x/tun2proxy",
    ] {
        let (c, warnings) =
            check(&format!("config socks 'socks'\n\toption client '{v}'\n")).unwrap();
        assert_eq!(c.socks.client, v);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
