//! What a reload (SIGHUP) can change in a running daemon, decided without side effects.
//!
//! Some options only mean something when a thing is set up: the RPC server's port and addresses,
//! the database file, which roles run, the tunnel methods and their interfaces, the gateway's
//! address pools, uplink and NAT backend. Changing them under live tunnels would cut those tunnels,
//! so a reload keeps their running values and names them as waiting for a restart. Everything
//! else — the node's name, log level, authorized networks, the flash copy's interval, the gateway's terms (price, bandwidth,
//! max_subscribers, lease_seconds), the subscriber's intervals and max_price, the discovery
//! sections — is taken from the new file and applied live.

use super::Config;

/// The outcome of [`plan`]: the configuration to run with from now on, and what differs from the
/// file but waits for a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reload {
    /// The new file's values, except the restart-only ones, which keep their running values.
    pub effective: Config,
    /// Live options that changed, as `section.option`.
    pub applied: Vec<&'static str>,
    /// Restart-only options whose value in the file differs from the running one.
    pub need_restart: Vec<&'static str>,
}

/// Works out how to move from the running configuration `old` to the file's `new`.
pub fn plan(old: &Config, new: Config) -> Reload {
    let mut effective = new;
    let mut need_restart = Vec::new();
    // Restart-only: keep the running value, note a difference.
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if effective.$($field).+ != old.$($field).+ {
                need_restart.push($name);
                effective.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(main.rpc_port, "main.rpc_port");
    keep!(main.listen, "main.listen");
    keep!(main.listen_interfaces, "main.listen_interfaces");
    keep!(main.database, "main.database");
    keep!(main.persist_path, "main.persist_path");
    keep!(main.rate_limit, "main.rate_limit");
    keep!(main.rate_burst, "main.rate_burst");
    keep!(main.max_connections, "main.max_connections");
    keep!(main.read_timeout, "main.read_timeout");
    keep!(gateway.enabled, "gateway.enabled");
    keep!(gateway.wan_interface, "gateway.wan_interface");
    keep!(gateway.ipv4_pool, "gateway.ipv4_pool");
    keep!(gateway.ipv6_pool, "gateway.ipv6_pool");
    keep!(gateway.methods, "gateway.method");
    keep!(gateway.nat, "gateway.nat");
    keep!(gateway.uplink_targets, "gateway.uplink_target");
    keep!(gateway.uplink_interval, "gateway.uplink_interval");
    keep!(gateway.uplink_check, "gateway.uplink_check");
    keep!(subscriber.enabled, "subscriber.enabled");
    keep!(subscriber.methods, "subscriber.method");
    keep!(subscriber.hot_standby, "subscriber.hot_standby");
    keep!(subscriber.fail_closed, "subscriber.fail_closed");
    keep!(wireguard, "wireguard");
    keep!(cjdns, "cjdns");
    keep!(socks, "socks");
    keep!(softether, "softether");

    let mut applied = Vec::new();
    macro_rules! live {
        ($($field:ident).+, $name:literal) => {
            if effective.$($field).+ != old.$($field).+ {
                applied.push($name);
            }
        };
    }
    live!(main.name, "main.name");
    live!(main.log_level, "main.log_level");
    live!(main.authorized_network, "main.authorized_network");
    live!(main.hostname, "main.hostname");
    live!(main.persist_interval, "main.persist_interval");
    live!(main.web, "main.web");
    live!(gateway.max_subscribers, "gateway.max_subscribers");
    live!(
        gateway.max_sessions_per_source,
        "gateway.max_sessions_per_source"
    );
    live!(gateway.lease_seconds, "gateway.lease_seconds");
    live!(gateway.keep_sessions, "gateway.keep_sessions");
    live!(gateway.price, "gateway.price");
    live!(gateway.bandwidth_down, "gateway.bandwidth_down");
    live!(gateway.bandwidth_up, "gateway.bandwidth_up");
    live!(subscriber.scan_interval, "subscriber.scan_interval");
    live!(subscriber.probe_interval, "subscriber.probe_interval");
    live!(subscriber.max_price, "subscriber.max_price");
    live!(subscriber.probe_interval_ms, "subscriber.probe_interval_ms");
    live!(subscriber.down_after, "subscriber.down_after");
    live!(subscriber.probe_targets, "subscriber.probe_target");
    live!(subscriber.prefer, "subscriber.prefer");
    live!(subscriber.exclude, "subscriber.exclude");
    live!(subscriber.failback_after, "subscriber.failback_after");
    live!(subscriber.hooks, "subscriber hooks");
    live!(subscriber.hook_timeout, "subscriber.hook_timeout");
    live!(discovery, "discovery");
    Reload {
        effective,
        applied,
        need_restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cjdns_section_waits_for_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.cjdns.interface = "tuncjdns".into();
        let r = plan(&old, new);
        assert_eq!(r.effective.cjdns, old.cjdns);
        assert_eq!(r.need_restart, ["cjdns"]);
    }

    #[test]
    fn the_socks_and_softether_sections_wait_for_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.socks.port = 20800;
        new.softether.hub = "other".into();
        let r = plan(&old, new);
        assert_eq!(r.effective.socks, old.socks);
        assert_eq!(r.effective.softether, old.softether);
        assert_eq!(r.need_restart, ["socks", "softether"]);
    }

    #[test]
    fn unchanged_file_changes_nothing() {
        let old = Config::default();
        let r = plan(&old, old.clone());
        assert_eq!(r.effective, old);
        assert!(r.applied.is_empty() && r.need_restart.is_empty());
    }

    #[test]
    fn terms_and_intervals_apply_live() {
        let old = Config::default();
        let mut new = old.clone();
        new.main.log_level = "debug".into();
        new.gateway.price = 7;
        new.gateway.max_subscribers = 3;
        new.gateway.lease_seconds = 60;
        new.subscriber.scan_interval = 30;
        new.subscriber.max_price = 9;
        let r = plan(&old, new.clone());
        assert_eq!(r.effective, new);
        assert_eq!(
            r.applied,
            [
                "main.log_level",
                "gateway.max_subscribers",
                "gateway.lease_seconds",
                "gateway.price",
                "subscriber.scan_interval",
                "subscriber.max_price"
            ]
        );
        assert!(r.need_restart.is_empty());
    }

    #[test]
    fn set_up_things_keep_their_running_values() {
        let old = Config::default();
        let mut new = old.clone();
        new.main.rpc_port = 1234;
        new.gateway.enabled = true;
        new.gateway.wan_interface = "eth9".into();
        new.wireguard.listen_port = 4000;
        new.subscriber.methods = vec![];
        new.gateway.price = 5;
        let r = plan(&old, new);
        assert_eq!(r.effective.main.rpc_port, old.main.rpc_port);
        assert!(!r.effective.gateway.enabled);
        assert_eq!(r.effective.gateway.wan_interface, old.gateway.wan_interface);
        assert_eq!(r.effective.wireguard, old.wireguard);
        assert_eq!(r.effective.subscriber.methods, old.subscriber.methods);
        assert_eq!(r.effective.gateway.price, 5, "live options still apply");
        assert_eq!(
            r.need_restart,
            [
                "main.rpc_port",
                "gateway.enabled",
                "gateway.wan_interface",
                "subscriber.method",
                "wireguard"
            ]
        );
        assert_eq!(r.applied, ["gateway.price"]);
    }
}
