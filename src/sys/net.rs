//! Links, addresses, routes and forwarding, each one `ip` argv (the gateway's packet policy
//! and NAT are in [`super::firewall`]).
//!
//! Callers pass typed values (addresses) or names already checked by [`crate::validate`]; nothing
//! here builds a shell string. Removal functions are idempotent: removing what is not there is not
//! an error, so teardown after a crash can run them blindly.

use super::cmd::{self, CmdError};
use crate::prefix::Prefix;
use std::net::IpAddr;

/// [`cmd::ignore_absent`], also for a link that is gone.
fn ignore_absent(r: Result<String, CmdError>) -> Result<(), CmdError> {
    cmd::ignore_absent(r, &["Cannot find device"])
}

/// Whether a network interface exists.
pub fn link_exists(ifname: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(ifname).exists()
}

/// Deletes an interface if it exists.
pub fn link_delete(ifname: &str) -> Result<(), CmdError> {
    if !link_exists(ifname) {
        return Ok(());
    }
    ignore_absent(cmd::run(&["ip", "link", "del", "dev", ifname]))
}

/// Sets an interface's MTU and brings it up.
pub fn link_up(ifname: &str, mtu: u16) -> Result<(), CmdError> {
    cmd::run(&[
        "ip",
        "link",
        "set",
        "dev",
        ifname,
        "mtu",
        &mtu.to_string(),
        "up",
    ])
    .map(drop)
}

/// Adds (or keeps) `addr/len` on an interface.
pub fn addr_replace(ifname: &str, addr: IpAddr, len: u8) -> Result<(), CmdError> {
    let a = format!("{addr}/{len}");
    cmd::run(&["ip", family(addr), "addr", "replace", &a, "dev", ifname]).map(drop)
}

/// Points `dst` (an `addr/len` prefix) at an interface, replacing any route with the same key.
pub fn route_replace(dst: &str, ifname: &str, v6: bool) -> Result<(), CmdError> {
    let fam = if v6 { "-6" } else { "-4" };
    cmd::run(&["ip", fam, "route", "replace", dst, "dev", ifname]).map(drop)
}

/// Sends Internet traffic through `ifname`: the `/1` halves of IPv4, and of IPv6 with `ipv6`.
/// Two halves override any default route without replacing it, so the original default comes
/// back by itself when the interface goes, even after a crash.
pub fn route_internet_via(ifname: &str, ipv6: bool) -> Result<(), CmdError> {
    for (half, v6) in policy::HALVES {
        if ipv6 || !v6 {
            route_replace(half, ifname, v6)?;
        }
    }
    Ok(())
}

/// `ip -j route show` of one family, optionally only routes of one protocol, all tables.
pub fn routes_json(v6: bool, protocol: Option<&str>) -> Result<String, CmdError> {
    let mut argv = vec![
        "ip",
        "-j",
        if v6 { "-6" } else { "-4" },
        "route",
        "show",
        "table",
        "all",
    ];
    if let Some(p) = protocol {
        argv.extend(["proto", p]);
    }
    cmd::run(&argv)
}

/// Policy routing of the subscriber (hot standby and fail_closed), one place for its numbers.
///
/// Rules, in order: [`RULE_MESH`] looks up `main` but ignores its default route (with hot standby
/// also the `/1` halves a tunnel method puts there while it comes up, so a new standby never
/// takes traffic before its routes moved to its table), so mesh routes (and the tunnels' own
/// endpoints) always win; [`RULE_TUNNEL`] looks up the routing table of
/// the active tunnel (hot standby: each tunnel keeps its Internet routes in its own table);
/// [`RULE_CLOSED`] drops whatever is left (fail_closed), instead of `main`'s default route.
pub mod policy {
    use super::{cmd, ignore_absent};
    use crate::sys::cmd::CmdError;

    /// Priority of the rule "main without its default route".
    pub const RULE_MESH: u32 = 31000;
    /// Priority of the rule pointing at the active tunnel's table.
    pub const RULE_TUNNEL: u32 = 31001;
    /// Priority of the fail_closed rule.
    pub const RULE_CLOSED: u32 = 31002;
    /// Routing table of tunnel slot `n` is `TABLE_BASE + n`.
    pub const TABLE_BASE: u32 = 7100;
    /// The halves of each family a tunnel's Internet routes consist of.
    pub const HALVES: [(&str, bool); 4] = [
        ("0.0.0.0/1", false),
        ("128.0.0.0/1", false),
        ("::/1", true),
        ("8000::/1", true),
    ];

    fn fam(v6: bool) -> &'static str {
        if v6 { "-6" } else { "-4" }
    }

    /// What one of our rules does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Action {
        /// Look up `main`, ignoring its routes with a prefix length up to this (0: the default
        /// route; 1: also the `/1` halves a tunnel method puts there).
        MainWithout(u8),
        /// Look up this table.
        Table(u32),
        /// Refuse (fail_closed).
        Prohibit,
        /// No selector: matches any rule of the priority (for deletion).
        Any,
    }

    /// The argv of `ip rule VERB pref PREF …` for one of our rules.
    pub fn rule_argv(v6: bool, verb: &str, pref: u32, action: Action) -> Vec<String> {
        let mut argv: Vec<String> = ["ip", fam(v6), "rule", verb, "pref"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.push(pref.to_string());
        match action {
            Action::MainWithout(len) => {
                argv.extend(["lookup", "main", "suppress_prefixlength"].map(String::from));
                argv.push(len.to_string());
            }
            Action::Table(t) => argv.extend(["lookup".to_string(), t.to_string()]),
            Action::Prohibit => argv.push("prohibit".into()),
            Action::Any => {}
        }
        argv
    }

    fn run(argv: &[String]) -> Result<String, CmdError> {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        cmd::run(&argv)
    }

    /// Adds one of our rules for both families (the caller removes it first if it may exist).
    pub fn rule_add(pref: u32, action: Action) -> Result<(), CmdError> {
        for v6 in [false, true] {
            run(&rule_argv(v6, "add", pref, action))?;
        }
        Ok(())
    }

    /// Removes every rule with priority `pref`, both families; absent rules are fine.
    pub fn rule_del_all(pref: u32) -> Result<(), CmdError> {
        for v6 in [false, true] {
            // One `del` removes one rule; a crashed run may have left several.
            for _ in 0..8 {
                match run(&rule_argv(v6, "del", pref, Action::Any)) {
                    Ok(_) => continue,
                    Err(e) => {
                        ignore_absent(Err(e))?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Points [`RULE_TUNNEL`] at `table`: the new rule is added behind the old one (same
    /// priority), then the old one is deleted — the switch is that one deletion.
    pub fn switch_tunnel(old: Option<u32>, table: u32) -> Result<(), CmdError> {
        rule_add(RULE_TUNNEL, Action::Table(table))?;
        if let Some(old) = old.filter(|o| *o != table) {
            for v6 in [false, true] {
                ignore_absent(run(&rule_argv(v6, "del", RULE_TUNNEL, Action::Table(old))))?;
            }
        }
        Ok(())
    }

    /// Moves a tunnel's Internet routes (the halves the method put into `main`) into `table`.
    pub fn move_halves(ifname: &str, table: u32) -> Result<(), CmdError> {
        let t = table.to_string();
        for (half, v6) in HALVES {
            let shown = cmd::run(&["ip", fam(v6), "route", "show", half, "dev", ifname])?;
            if shown.trim().is_empty() {
                continue;
            }
            cmd::run(&[
                "ip",
                fam(v6),
                "route",
                "replace",
                half,
                "dev",
                ifname,
                "table",
                &t,
            ])?;
            ignore_absent(cmd::run(&[
                "ip",
                fam(v6),
                "route",
                "del",
                half,
                "dev",
                ifname,
            ]))?;
        }
        Ok(())
    }

    /// Empties `table` in both families.
    pub fn flush_table(table: u32) -> Result<(), CmdError> {
        let t = table.to_string();
        for v6 in [false, true] {
            ignore_absent(cmd::run(&["ip", fam(v6), "route", "flush", "table", &t]))?;
        }
        Ok(())
    }
}

/// `ip -j neigh show` (ARP for IPv4, NDP for IPv6) of one interface.
pub fn neighbours_json(v6: bool, ifname: &str) -> Result<String, CmdError> {
    let fam = if v6 { "-6" } else { "-4" };
    cmd::run(&["ip", "-j", fam, "neigh", "show", "dev", ifname])
}

/// `ip -j neigh show` of every interface.
pub fn neighbours_json_all(v6: bool) -> Result<String, CmdError> {
    let fam = if v6 { "-6" } else { "-4" };
    cmd::run(&["ip", "-j", fam, "neigh", "show"])
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv6() { "-6" } else { "-4" }
}

/// Turns on IPv4 and IPv6 forwarding (a gateway forwards its subscribers' traffic).
pub fn enable_forwarding() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")?;
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1\n")
}

/// The node's own addresses (as host prefixes) and every prefix it routes, in any table, each
/// with what it is (`address of eth0`, `route dev mesh0 table main`). Interfaces in `skip` (our
/// own tunnels) and the default route and its `/1` halves are left out. For
/// `trust::check_grant_placement`.
pub fn local_prefixes(skip: &[String]) -> Result<Vec<(Prefix, String)>, CmdError> {
    let addrs = cmd::run(&["ip", "-j", "addr", "show"])?;
    let r4 = routes_json(false, None)?;
    let r6 = routes_json(true, None)?;
    Ok(parse_local_prefixes(&addrs, &[&r4, &r6], skip))
}

/// The pure part of [`local_prefixes`]: reads `ip -j addr show` and `ip -j route show table all`.
/// Entries it cannot read are skipped.
pub fn parse_local_prefixes(
    addrs: &str,
    routes: &[&str],
    skip: &[String],
) -> Vec<(Prefix, String)> {
    use serde_json::Value;
    let list =
        |text: &str| -> Vec<Value> { serde_json::from_slice(text.as_bytes()).unwrap_or_default() };
    let skipped = |dev: Option<&str>| dev.is_some_and(|d| skip.iter().any(|s| s == d));
    let mut out = Vec::new();
    for (dev, ip, prefixlen) in address_entries(addrs) {
        if skipped(Some(&dev)) {
            continue;
        }
        let host = if ip.is_ipv4() { 32 } else { 128 };
        out.push((
            Prefix {
                addr: ip,
                len: host,
            },
            format!("address of {dev}"),
        ));
        if let Some(len) = prefixlen.filter(|l| *l <= host) {
            let p = Prefix { addr: ip, len };
            out.push((
                Prefix {
                    addr: p.network(),
                    len,
                },
                format!("connected prefix of {dev}"),
            ));
        }
    }
    for text in routes {
        for r in list(text) {
            let dev = r["dev"].as_str();
            if skipped(dev) {
                continue;
            }
            let Some(dst) = r["dst"].as_str() else {
                continue;
            };
            let (addr, len) = match dst.split_once('/') {
                Some((a, l)) => (a, l.parse::<u8>().ok()),
                None => (dst, None),
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue; // "default" and the like
            };
            let host = if ip.is_ipv4() { 32 } else { 128 };
            let len = len.unwrap_or(host).min(host);
            if len <= 1 {
                continue;
            }
            let p = Prefix { addr: ip, len };
            let table = r["table"].as_str().unwrap_or("main");
            out.push((
                Prefix {
                    addr: p.network(),
                    len,
                },
                format!("route dev {} table {table}", dev.unwrap_or("-")),
            ));
        }
    }
    out
}

/// Every address of every interface, with its interface (`ip -j addr show`).
pub fn addresses() -> Result<Vec<(String, IpAddr)>, CmdError> {
    Ok(parse_addresses(&cmd::run(&["ip", "-j", "addr", "show"])?))
}

/// The pure part of [`addresses`]; entries it cannot read are skipped.
pub fn parse_addresses(json: &str) -> Vec<(String, IpAddr)> {
    address_entries(json)
        .into_iter()
        .map(|(ifname, ip, _)| (ifname, ip))
        .collect()
}

/// Each address of `ip -j addr show` with its interface and prefix length (if given and a
/// number); entries it cannot read are skipped.
fn address_entries(json: &str) -> Vec<(String, IpAddr, Option<u8>)> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_slice(json.as_bytes()) else {
        return Vec::new();
    };
    links
        .iter()
        .flat_map(|l| {
            let ifname = l["ifname"].as_str().unwrap_or("?").to_string();
            l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |a| {
                    let ip = a["local"].as_str()?.parse().ok()?;
                    let len = a["prefixlen"].as_u64().and_then(|l| u8::try_from(l).ok());
                    Some((ifname.clone(), ip, len))
                })
        })
        .collect()
}

/// Whether a socket of this network namespace listens on TCP `port` (any address), read from
/// `/proc/net/tcp` and `/proc/net/tcp6`: no connection is made, so no firewall rule decides.
pub fn tcp_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| listening_ports(&t).any(|p| p == port)))
}

/// The local ports of the LISTEN sockets in a `/proc/net/tcp{,6}` table.
fn listening_ports(table: &str) -> impl Iterator<Item = u16> + '_ {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        let (_, port) = local.rsplit_once(':')?;
        (state == LISTEN)
            .then(|| u16::from_str_radix(port, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules_are_what_the_design_says() {
        use policy::*;
        assert_eq!(
            rule_argv(false, "add", RULE_MESH, Action::MainWithout(0)).join(" "),
            "ip -4 rule add pref 31000 lookup main suppress_prefixlength 0"
        );
        assert_eq!(
            rule_argv(true, "add", RULE_TUNNEL, Action::Table(7101)).join(" "),
            "ip -6 rule add pref 31001 lookup 7101"
        );
        assert_eq!(
            rule_argv(false, "del", RULE_CLOSED, Action::Prohibit).join(" "),
            "ip -4 rule del pref 31002 prohibit"
        );
        assert_eq!(
            rule_argv(false, "del", RULE_TUNNEL, Action::Any).join(" "),
            "ip -4 rule del pref 31001"
        );
    }
    #[test]
    fn local_prefixes_read_addresses_and_routes_of_every_table() {
        let addrs = r#"[{"ifname":"br-lan","addr_info":[{"family":"inet","local":"192.168.50.1","prefixlen":24}]},
            {"ifname":"mnw0","addr_info":[{"family":"inet","local":"100.127.0.2","prefixlen":24}]}]"#;
        let r4 = r#"[{"dst":"default","gateway":"10.0.0.1","dev":"wan"},{"dst":"0.0.0.0/1","dev":"mnw0"},
            {"dst":"128.0.0.0/1","dev":"other"},{"dst":"10.77.0.9","dev":"mesh0","table":"12"},
            {"type":"unreachable","dst":"172.16.0.0/12"}]"#;
        let r6 = r#"[{"dst":"fd77::/64","dev":"mesh0"},{"dst":"fd7e::/64","dev":"mnw0"}]"#;
        let got: Vec<String> = parse_local_prefixes(addrs, &[r4, r6], &["mnw0".to_string()])
            .into_iter()
            .map(|(p, why)| format!("{p} {why}"))
            .collect();
        assert_eq!(
            got,
            [
                "192.168.50.1/32 address of br-lan",
                "192.168.50.0/24 connected prefix of br-lan",
                "10.77.0.9/32 route dev mesh0 table 12",
                "172.16.0.0/12 route dev - table main",
                "fd77::/64 route dev mesh0 table main",
            ]
        );
        assert!(parse_local_prefixes("garbage", &["[1]"], &[]).is_empty());
    }

    #[test]
    fn listening_ports_are_read_from_the_proc_table() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:2A30 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:FFFD 0100007F:2A31 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 00000000000000000000000000000000:FFFD 00000000000000000000000000000000:0000 0A 0 0 0 0 0 3 1\n";
        let got: Vec<u16> = listening_ports(t).collect();
        assert_eq!(got, [10800, 65533]);
        assert_eq!(listening_ports("header only\n").count(), 0);
        assert_eq!(listening_ports("h\n 0: garbage\n").count(), 0);
    }

    #[test]
    fn addresses_are_read_with_their_interface() {
        let j = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1"},{"family":"inet","local":"10.77.0.3"}]},
            {"ifname":"mesh0","addr_info":[{"family":"inet6","local":"fd77::3"},{"family":"inet6","local":"bogus"}]},
            {"ifname":"down0"}]"#;
        let got: Vec<String> = parse_addresses(j)
            .into_iter()
            .map(|(i, a)| format!("{i} {a}"))
            .collect();
        assert_eq!(got, ["lo 127.0.0.1", "lo 10.77.0.3", "mesh0 fd77::3"]);
        assert!(parse_addresses("not json").is_empty());
    }
}
