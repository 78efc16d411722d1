//! The tunnel factory: which [`Method`] instances a role runs, built from their config sections
//! (`config wireguard`, `config openvpn`, …). The one place that maps a method name to its type.

use super::{Method, cjdns, iptunnel, openvpn, route, socks, softether, wireguard};
use crate::cjdns::admin::AdminTarget;
use crate::config::Config;
use crate::store::Store;
use std::sync::Mutex;
use std::time::Duration;

/// Which end of the tunnels a method instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The gateway's side.
    Gateway,
    /// The subscriber's active tunnel.
    Subscriber,
    /// The subscriber's hot standby tunnel: its own interface and port.
    Standby,
}

/// The standby tunnel's interface: the subscriber's interface name with `1` appended (or put in
/// place of the 15th character, IFNAMSIZ allowing no more), `2` if that would be the same name.
pub fn standby_ifname(ifname: &str) -> String {
    let base: String = ifname.chars().take(14).collect();
    let one = format!("{base}1");
    if one == ifname {
        format!("{base}2")
    } else {
        one
    }
}

/// The tunnel methods `names` (in that order) for `role`, each built from its config section;
/// keys the methods keep (WireGuard's, OpenVPN's) come from `store` or are made and put there.
pub fn build(
    cfg: &Config,
    names: &[String],
    role: Role,
    store: &Mutex<Store>,
) -> Result<Vec<Box<dyn Method>>, String> {
    let mut out: Vec<Box<dyn Method>> = Vec::new();
    for name in names {
        match name.as_str() {
            "wireguard" => {
                let key = wireguard::stored_key(store)?;
                let wg = &cfg.wireguard;
                let (ifname, port) = match role {
                    Role::Gateway => (wg.interface.clone(), wg.listen_port),
                    Role::Subscriber => (wg.client_interface.clone(), wg.client_listen_port),
                    Role::Standby => (
                        standby_ifname(&wg.client_interface),
                        wg.client_listen_port.wrapping_add(1).max(1),
                    ),
                };
                let m = wireguard::Wireguard::new(&ifname, port, wg.mtu, key)
                    .map_err(|e| e.to_string())?;
                out.push(Box::new(m));
            }
            "openvpn" => {
                let o = &cfg.openvpn;
                let (side, ifname) = match role {
                    Role::Gateway => (openvpn::Side::Server, o.interface.clone()),
                    Role::Subscriber => (openvpn::Side::Client, o.client_interface.clone()),
                    Role::Standby => (openvpn::Side::Client, standby_ifname(&o.client_interface)),
                };
                let sub = if side == openvpn::Side::Server {
                    "server"
                } else {
                    "client"
                };
                let dir = o.directory.join(sub);
                openvpn::stored_keys(store, side, &dir, false)?;
                let m = openvpn::Openvpn::new(side, &o.directory, &ifname, o.port, o.mtu)
                    .map_err(|e| format!("openvpn: {e}"))?;
                openvpn::stored_keys(store, side, &dir, true)?;
                out.push(Box::new(m));
            }
            "gre" | "ipip" => {
                let kind = if name == "gre" {
                    iptunnel::Kind::Gre
                } else {
                    iptunnel::Kind::Ipip
                };
                let t = &cfg.iptunnel;
                let client = match role {
                    Role::Standby => standby_ifname(&t.client_interface),
                    _ => t.client_interface.clone(),
                };
                out.push(Box::new(iptunnel::IpTunnel::new(
                    kind,
                    &t.interface_prefix,
                    &client,
                    t.mtu,
                )));
            }
            // Plain routing has no interface of its own to keep a second path on.
            "route" if role == Role::Standby => {}
            "route" => out.push(Box::new(route::Route::new())),
            // cjdns routes through cjdroute's one interface: no second path to keep on standby.
            "cjdns" if role == Role::Standby => {}
            "cjdns" => {
                let c = &cfg.cjdns;
                let target = AdminTarget {
                    admin: c.admin.clone(),
                    password: c.password.clone(),
                    cjdroute_conf: c.cjdroute_conf.clone(),
                    timeout: Duration::from_millis(u64::from(c.timeout_ms)),
                };
                // What the subscriber dials is remembered next to the database, for cleaning
                // up after a crash.
                let ledger =
                    std::path::PathBuf::from(format!("{}-cjdns", cfg.main.database.display()));
                out.push(Box::new(
                    cjdns::Cjdns::new(target, &c.interface).with_ledger(&ledger),
                ));
            }
            "socks" => {
                let c = &cfg.socks;
                let (side, ifname) = match role {
                    Role::Gateway => (socks::Side::Server, c.interface.clone()),
                    Role::Subscriber => (socks::Side::Client, c.interface.clone()),
                    Role::Standby => (socks::Side::Client, standby_ifname(&c.interface)),
                };
                // Each side (and the standby) keeps its pid files in a directory of its own.
                let sub = match role {
                    Role::Gateway => "server",
                    Role::Subscriber => "client",
                    Role::Standby => "standby",
                };
                let m = socks::Socks::new(
                    side,
                    &c.directory.join(sub),
                    &ifname,
                    c.port,
                    c.mtu,
                    c.listen,
                )
                .and_then(|m| m.with_client(&c.client))
                .map_err(|e| format!("socks: {e}"))?;
                out.push(Box::new(m));
            }
            // One SoftEther client account and NIC: no second path to keep on standby.
            "softether" if role == Role::Standby => {}
            "softether" => {
                let c = &cfg.softether;
                let (side, device, sub) = match role {
                    Role::Gateway => (softether::Side::Server, c.device.clone(), "server"),
                    _ => (softether::Side::Client, c.client_nic.clone(), "client"),
                };
                let setup = softether::Setup {
                    vpncmd: c.vpncmd.clone(),
                    admin: c.admin.clone(),
                    admin_password: c.admin_password.clone(),
                    hub: c.hub.clone(),
                    port: c.port,
                    device,
                    directory: c.directory.join(sub),
                };
                let m = softether::Softether::new(side, setup)
                    .map_err(|e| format!("softether: {e}"))?;
                out.push(Box::new(m));
            }
            other => return Err(format!("method {other} is not supported by this version")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_interface_names_differ_and_fit() {
        assert_eq!(standby_ifname("mnigs-wgc"), "mnigs-wgc1");
        assert_eq!(standby_ifname("abcdefghijklmno"), "abcdefghijklmn1");
        assert_eq!(standby_ifname("abcdefghijklmn1"), "abcdefghijklmn2");
        for name in ["a", "abcdefghijklmno", "abcdefghijklmn1"] {
            let s = standby_ifname(name);
            assert!(s.len() <= 15 && s != name);
            assert!(crate::validate::ifname(&s).is_ok());
        }
    }

    #[test]
    fn the_cjdns_method_is_built_from_its_section() {
        let store = Mutex::new(Store::open_in_memory().unwrap());
        let mut cfg = Config::default();
        cfg.cjdns.interface = "tuncjdns".into();
        for role in [Role::Gateway, Role::Subscriber] {
            let m = build(&cfg, &["cjdns".into()], role, &store).unwrap();
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].name(), "cjdns");
        }
    }
}
