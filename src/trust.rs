//! What a subscriber believes of a gateway: everything a gateway sends is untrusted input, checked
//! here once, where it enters (`nodeInfo` answers and grants), before anything stores, logs, shows
//! or acts on it.
//!
//! Pure: the node's own addresses and routes are passed in ([`Local`]), read by the caller through
//! `sys::net::local_prefixes`.
//!
//! # Rules
//! - `nodeInfo`: the name is a node name ([`validate::node_name`]: 1-63 characters of
//!   `A-Z a-z 0-9 . _ -`), the version at most 32 printable ASCII characters, at most
//!   [`MAX_METHODS`] methods of the same character set, at most [`MAX_GOSSIP`] gossip entries, each
//!   an IP address, and `uplink.targets` cut to sane unicast addresses, at most
//!   [`crate::protocol::MAX_UPLINK_TARGETS`] ([`crate::protocol::sane_uplink_targets`]; the
//!   grant's `uplinkTargets` get the same where they are used, `subscriber::probe::advertised`).
//!   The node's own `addresses`: unicast, not loopback or link-local, at most
//!   [`crate::protocol::MAX_ADDRESSES`] (they only ever join answers into one node when the
//!   other address's own answer agrees: `discovery::nodes`).
//!   Numbers are typed by serde already.
//! - Grants: the method is the one asked for, the sid 1-64 characters of `A-Z a-z 0-9 - _`, the
//!   addresses are addresses; the granted prefixes (address/`cidr`) and the gateway's tunnel
//!   addresses lie inside the allow rule ([`GRANT_ALLOW`] or `list grant_allow`), are no wider than
//!   a /16 (IPv4) or /48 (IPv6), and overlap none of the node's own addresses, connected
//!   prefixes, or routes of any table (mesh routes, LAN routes) — except those of our own
//!   tunnels.

use crate::prefix::Prefix;
use crate::protocol::{Grant, NodeInfo};
use crate::validate::{self, quoted};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Methods kept from one `nodeInfo` answer at most.
pub const MAX_METHODS: usize = 16;
/// Gossip entries kept from one `nodeInfo` answer at most.
pub const MAX_GOSSIP: usize = 16;
/// Largest `nodeInfo` answer read, in bytes (a real one is well under 2 KB).
pub const MAX_NODE_INFO: usize = 8 * 1024;
/// Largest `requestConnection`/`renewConnection` answer read (an OpenVPN grant carries two PEM
/// certificates, a few KB).
pub const MAX_GRANT: usize = 64 * 1024;
/// Widest IPv4 grant accepted.
pub const MIN_CIDR4: u8 = 16;
/// Widest IPv6 grant accepted.
pub const MIN_CIDR6: u8 = 48;

/// Where tunnel addresses may come from unless `list grant_allow` says otherwise: the shared
/// address space of RFC 6598 (100.64.0.0/10, the gateways' default pool 100.127.0.0/24 lies there)
/// and unique local IPv6 (fc00::/7).
pub const GRANT_ALLOW: &[&str] = &["100.64.0.0/10", "fc00::/7"];

/// The default allow rule, parsed.
pub fn default_allow() -> Vec<Prefix> {
    GRANT_ALLOW
        .iter()
        .map(|p| validate::prefix(p).expect("constant prefix"))
        .collect()
}

/// True if `s` is 1-`max` characters of `A-Z a-z 0-9` and `extra`.
fn token(s: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Checks a `nodeInfo` answer; returns it with its lists cut to their bounds and gossip entries
/// that are not IP addresses dropped, or what was wrong with it.
pub fn check_node_info(mut info: NodeInfo) -> Result<NodeInfo, String> {
    validate::node_name(&info.name).map_err(|e| format!("nodeInfo name: {e}"))?;
    if !token(&info.version, 32, b".-+_~") {
        return Err(format!(
            "nodeInfo version must be 1-32 characters of A-Z a-z 0-9 . - + _ ~, got {}",
            quoted(&info.version)
        ));
    }
    if info.methods.len() > MAX_METHODS {
        return Err(format!(
            "nodeInfo lists {} methods, at most {MAX_METHODS} are accepted",
            info.methods.len()
        ));
    }
    if let Some(m) = info.methods.iter().find(|m| !token(m, 16, b"-_")) {
        return Err(format!(
            "nodeInfo method must be 1-16 characters of a-z 0-9 - _, got {}",
            quoted(m)
        ));
    }
    info.gateways.truncate(MAX_GOSSIP);
    info.gateways
        .retain(|e| e.address.parse::<IpAddr>().is_ok());
    info.uplink.targets = crate::protocol::sane_uplink_targets(&info.uplink.targets);
    info.addresses.retain(|a| !crate::prefix::is_special(*a));
    info.addresses.sort();
    info.addresses.dedup();
    info.addresses.truncate(crate::protocol::MAX_ADDRESSES);
    Ok(info)
}

/// The key a grant proves the gateway holds, if its method has one: WireGuard's public key (the
/// handshake only succeeds with its private key), the SHA-256 of OpenVPN's CA (the server must
/// present a certificate it signed) or of SoftEther's server certificate (the client checks
/// it). Pinned per mesh address at first contact.
pub fn grant_key(g: &Grant) -> Option<String> {
    let field = |k: &str| g.extra.get(k).and_then(serde_json::Value::as_str);
    let digest = |kind: &str, pem: &str| {
        let digest = crate::cjdns::sha2::sha256(pem.trim().as_bytes());
        format!("{kind} sha256:{}", crate::cjdns::sha2::hex(&digest))
    };
    match g.method.as_str() {
        "wireguard" => field("publicKey").map(|k| format!("wireguard {k}")),
        "openvpn" => field("ca").map(|ca| digest("openvpn-ca", ca)),
        "softether" => field("serverCert").map(|c| digest("softether-cert", c)),
        _ => None,
    }
}

/// The store setting holding the key pinned for `method` at `address`.
pub fn pin_setting(address: IpAddr, method: &str) -> String {
    format!("pin.{address}.{method}")
}

/// Whether `presented` may be used at an address where `pinned` was seen before: the same key,
/// nothing pinned yet, or the operator asked for this gateway by address (`mnigs connect`).
pub fn check_pin(
    presented: &str,
    pinned: Option<&str>,
    operator_asked: bool,
) -> Result<(), String> {
    match pinned {
        Some(p) if p != presented && !operator_asked => Err(format!(
            "the gateway presents {presented}, but {p} was pinned at first contact \
             (`mnigs connect` to it accepts the new key)"
        )),
        _ => Ok(()),
    }
}

/// Longest part of a gateway's refusal text we keep, in characters.
pub const MAX_REFUSAL: usize = 200;

/// A gateway's `errorMsg`, fit to log and show: control characters escaped (one line, no terminal
/// escapes), at most [`MAX_REFUSAL`] characters.
pub fn refusal_text(s: &str) -> String {
    let mut out: String = crate::log::escape(s).chars().take(MAX_REFUSAL).collect();
    if s.chars().count() > MAX_REFUSAL {
        out.push_str("...");
    }
    out
}

/// The node's own addresses and the prefixes it routes, which no grant may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// Each prefix with what it is, for the error message (`address of eth0`, `route via wlan0`).
    pub prefixes: Vec<(Prefix, String)>,
}

/// True if two prefixes share an address.
pub fn overlap(a: &Prefix, b: &Prefix) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// The prefix `addr/len` with host bits cleared.
fn net_of(addr: IpAddr, len: u8) -> Prefix {
    let p = Prefix { addr, len };
    Prefix {
        addr: p.network(),
        len,
    }
}

/// The tunnel addresses of a checked grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantAddresses {
    /// Our IPv4 address and prefix length.
    pub v4: (Ipv4Addr, u8),
    /// The gateway's IPv4 tunnel address.
    pub gw4: Ipv4Addr,
    /// Our IPv6 address and prefix length, if granted.
    pub v6: Option<(Ipv6Addr, u8)>,
    /// The gateway's IPv6 tunnel address, if granted.
    pub gw6: Option<Ipv6Addr>,
}

/// Checks a grant's types and values: the method we asked for, a sane sid, addresses that parse,
/// prefix lengths in range. Does not look at the node (see [`check_grant_placement`]).
pub fn check_grant(g: &Grant, asked_method: &str) -> Result<GrantAddresses, String> {
    if g.method != asked_method {
        return Err(format!(
            "grant is for method {}, we asked for {asked_method}",
            quoted(&g.method)
        ));
    }
    if !token(&g.sid, 64, b"-_") {
        return Err(format!(
            "grant sid must be 1-64 characters of A-Z a-z 0-9 - _, got {}",
            quoted(&g.sid)
        ));
    }
    let v4: Ipv4Addr = g
        .ipv4
        .parse()
        .map_err(|_| format!("grant ipv4 is not an IPv4 address: {}", quoted(&g.ipv4)))?;
    if !(MIN_CIDR4..=32).contains(&g.cidr4) {
        return Err(format!(
            "grant cidr4 must be {MIN_CIDR4}-32, got {}",
            g.cidr4
        ));
    }
    let gw4: Ipv4Addr = g.ipv4gateway.parse().map_err(|_| {
        format!(
            "grant ipv4gateway is not an IPv4 address: {}",
            quoted(&g.ipv4gateway)
        )
    })?;
    if gw4 == v4 {
        return Err(format!("grant ipv4gateway {gw4} is our own ipv4"));
    }
    let v6 = match (&g.ipv6, g.cidr6) {
        (None, None) => None,
        (None, Some(_)) => return Err("grant has cidr6 without ipv6".into()),
        (Some(a), len) => {
            let a: Ipv6Addr = a
                .parse()
                .map_err(|_| format!("grant ipv6 is not an IPv6 address: {}", quoted(a)))?;
            let len = len.unwrap_or(128);
            if !(MIN_CIDR6..=128).contains(&len) {
                return Err(format!("grant cidr6 must be {MIN_CIDR6}-128, got {len}"));
            }
            Some((a, len))
        }
    };
    let gw6 = match &g.ipv6gateway {
        None => None,
        Some(a) => Some(
            a.parse::<Ipv6Addr>()
                .map_err(|_| format!("grant ipv6gateway is not an IPv6 address: {}", quoted(a)))?,
        ),
    };
    if v6.is_none() && gw6.is_some() {
        return Err("grant has ipv6gateway without ipv6".into());
    }
    Ok(GrantAddresses {
        v4: (v4, g.cidr4),
        gw4,
        v6,
        gw6,
    })
}

/// Checks where a grant's addresses would put us: inside `allow`, and clear of everything in
/// `local`. The error names the address and what it collides with.
pub fn check_grant_placement(
    g: &GrantAddresses,
    allow: &[Prefix],
    local: &Local,
) -> Result<(), String> {
    let mut wanted = vec![
        ("ipv4/cidr4", net_of(IpAddr::V4(g.v4.0), g.v4.1)),
        ("ipv4gateway", net_of(IpAddr::V4(g.gw4), 32)),
    ];
    if let Some((a, len)) = g.v6 {
        wanted.push(("ipv6/cidr6", net_of(IpAddr::V6(a), len)));
    }
    if let Some(a) = g.gw6 {
        wanted.push(("ipv6gateway", net_of(IpAddr::V6(a), 128)));
    }
    for (what, p) in &wanted {
        let inside = allow
            .iter()
            .any(|a| a.is_ipv4() == p.is_ipv4() && a.len <= p.len && a.contains(p.addr));
        if !inside {
            let rule: Vec<String> = allow.iter().map(Prefix::to_string).collect();
            return Err(format!(
                "grant {what} {p} is outside the tunnel ranges we accept ({})",
                rule.join(", ")
            ));
        }
        if let Some((q, why)) = local.prefixes.iter().find(|(q, _)| overlap(p, q)) {
            return Err(format!(
                "grant {what} {p} overlaps {q} ({why}) of this node"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GossipEntry, Terms, Uplink};
    use serde_json::json;

    fn info(name: &str) -> NodeInfo {
        NodeInfo {
            success: true,
            name: name.into(),
            version: "0.1.0".into(),
            gateway: true,
            methods: vec!["wireguard".into()],
            terms: Terms::default(),
            uplink: Uplink::default(),
            gateways: vec![],
            addresses: vec![],
        }
    }

    fn grant(v: serde_json::Value) -> Grant {
        let mut base = json!({"success": true, "sid": "0123abcd", "timeout": 60, "method": "wireguard",
            "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn p(s: &str) -> Prefix {
        validate::prefix(s).unwrap()
    }

    fn lan_and_mesh() -> Local {
        Local {
            prefixes: vec![
                (p("192.168.50.0/24"), "address of br-lan".into()),
                (p("10.77.0.9/32"), "route via mesh0".into()),
                (p("10.77.0.0/24"), "address of mesh0".into()),
                (p("fd77::/64"), "address of mesh0".into()),
                (p("fd50::/64"), "address of br-lan".into()),
            ],
        }
    }

    #[test]
    fn hostile_names_and_lists_are_refused() {
        assert!(check_node_info(info("gw-1.a_b")).is_ok());
        for bad in [
            "<img src=x onerror=alert(1)>",
            "gw\nmnigs[1] info: forged",
            "gw\u{1b}[31m",
            "",
            "-gw",
            "gw $(reboot)",
            &"a".repeat(64),
            "gw\u{435}",
        ] {
            let e = check_node_info(info(bad)).unwrap_err();
            assert!(e.contains("nodeInfo name"), "{e}");
            assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        }
        let mut i = info("gw");
        i.version = "1\n2".into();
        assert!(check_node_info(i).unwrap_err().contains("version"));
        let mut i = info("gw");
        i.methods = vec!["x".into(); MAX_METHODS + 1];
        assert!(check_node_info(i).unwrap_err().contains("methods"));
        let mut i = info("gw");
        i.methods = vec!["wire guard".into()];
        assert!(check_node_info(i).unwrap_err().contains("method"));
        let mut i = info("gw");
        i.gateways = (0..40)
            .map(|n| GossipEntry {
                address: if n == 0 {
                    "not an address".into()
                } else {
                    format!("10.77.0.{n}")
                },
                port: 65533,
                seen_ago: 0,
            })
            .collect();
        let i = check_node_info(i).unwrap();
        assert_eq!(i.gateways.len(), MAX_GOSSIP - 1);
        assert!(
            i.gateways
                .iter()
                .all(|e| e.address.parse::<IpAddr>().is_ok())
        );
    }

    #[test]
    fn keys_are_pinned_per_method_and_only_the_operator_changes_them() {
        let wg = grant(json!({"publicKey": "K1"}));
        assert_eq!(grant_key(&wg).as_deref(), Some("wireguard K1"));
        let ovpn = grant(json!({"method": "openvpn", "ca": "-----BEGIN CERTIFICATE-----\nx\n"}));
        let k = grant_key(&ovpn).unwrap();
        assert!(
            k.starts_with("openvpn-ca sha256:") && k.len() == 18 + 64,
            "{k}"
        );
        let se = |c: &str| grant(json!({"method": "softether", "serverCert": c}));
        let k = grant_key(&se("-----BEGIN CERTIFICATE-----\nx\n")).unwrap();
        assert!(
            k.starts_with("softether-cert sha256:") && k.len() == 22 + 64,
            "{k}"
        );
        assert_ne!(Some(k), grant_key(&se("-----BEGIN CERTIFICATE-----\ny\n")));
        assert_eq!(grant_key(&grant(json!({"method": "gre"}))), None);
        assert_eq!(
            pin_setting("fd77::3".parse().unwrap(), "wireguard"),
            "pin.fd77::3.wireguard"
        );
        assert!(check_pin("wireguard K1", None, false).is_ok());
        assert!(check_pin("wireguard K1", Some("wireguard K1"), false).is_ok());
        let e = check_pin("wireguard K2", Some("wireguard K1"), false).unwrap_err();
        assert!(e.contains("pinned at first contact"), "{e}");
        assert!(check_pin("wireguard K2", Some("wireguard K1"), true).is_ok());
    }

    #[test]
    fn refusals_are_one_bounded_line() {
        assert_eq!(
            refusal_text("full\nmnigs[1] error: x\u{1b}[2J"),
            "full\\nmnigs[1] error: x\\u{1b}[2J"
        );
        let long = refusal_text(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_REFUSAL + 3);
    }

    #[test]
    fn grant_types_are_checked() {
        let ok = check_grant(&grant(json!({})), "wireguard").unwrap();
        assert_eq!(ok.v4, ("100.127.0.2".parse().unwrap(), 24));
        for (g, asked, needle) in [
            (json!({}), "openvpn", "method"),
            (json!({"sid": "a\nb"}), "wireguard", "sid"),
            (json!({"sid": "$(x)"}), "wireguard", "sid"),
            (json!({"ipv4": "100.127.0.2\nX=1"}), "wireguard", "ipv4"),
            (json!({"cidr4": 33}), "wireguard", "cidr4"),
            (json!({"cidr4": 8}), "wireguard", "cidr4"),
            (json!({"ipv4gateway": "`id`"}), "wireguard", "ipv4gateway"),
            (json!({"ipv4gateway": "100.127.0.2"}), "wireguard", "own"),
            (
                json!({"ipv6": "fd7e::2", "cidr6": 129}),
                "wireguard",
                "cidr6",
            ),
            (
                json!({"ipv6": "fd7e::2", "cidr6": 16}),
                "wireguard",
                "cidr6",
            ),
            (json!({"ipv6": "x"}), "wireguard", "ipv6"),
            (json!({"cidr6": 64}), "wireguard", "cidr6"),
        ] {
            let e = check_grant(&grant(g.clone()), asked).unwrap_err();
            assert!(e.contains(needle), "{g}: {e}");
        }
    }

    #[test]
    fn grants_must_stay_clear_of_the_lan_the_mesh_and_ourselves() {
        let allow = default_allow();
        let local = lan_and_mesh();
        let place = |g: serde_json::Value| {
            let a = check_grant(&grant(g), "wireguard").unwrap();
            check_grant_placement(&a, &allow, &local)
        };
        assert!(place(json!({})).is_ok());
        assert!(place(json!({"ipv6": "fd7e::2", "cidr6": 64, "ipv6gateway": "fd7e::1"})).is_ok());
        // The attacks of issue 20: half the LAN, a rival's mesh address, the mesh's /64.
        let e = place(json!({"ipv4": "192.168.50.2", "cidr4": 25, "ipv4gateway": "192.168.50.1"}))
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = place(json!({"ipv4": "10.77.0.9", "cidr4": 32, "ipv4gateway": "10.77.0.1"}))
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = place(json!({"ipv6": "fd77::5", "cidr6": 96})).unwrap_err();
        assert!(e.contains("overlaps fd77::/64"), "{e}");
        let e = place(json!({"ipv6": "fd50::80", "cidr6": 121})).unwrap_err();
        assert!(e.contains("br-lan"), "{e}");
        // Inside the allow rule but on a route we have.
        let mut local = lan_and_mesh();
        local
            .prefixes
            .push((p("100.64.0.0/16"), "route via mesh0".into()));
        let a = check_grant(
            &grant(json!({"ipv4": "100.64.3.2", "ipv4gateway": "100.64.3.1"})),
            "wireguard",
        )
        .unwrap();
        let e = check_grant_placement(&a, &allow, &local).unwrap_err();
        assert!(e.contains("route via mesh0"), "{e}");
        // The gateway's own tunnel address counts too.
        let e = place(json!({"ipv4gateway": "10.77.0.9"})).unwrap_err();
        assert!(e.contains("ipv4gateway"), "{e}");
        // A wider allow rule (list grant_allow) is honoured, and still checked against the node.
        let wide = vec![p("10.0.0.0/8")];
        let a = check_grant(
            &grant(json!({"ipv4": "10.200.0.2", "ipv4gateway": "10.200.0.1"})),
            "wireguard",
        )
        .unwrap();
        assert!(check_grant_placement(&a, &wide, &local).is_ok());
        let a = check_grant(
            &grant(json!({"ipv4": "10.77.0.2", "ipv4gateway": "10.77.0.1"})),
            "wireguard",
        )
        .unwrap();
        assert!(check_grant_placement(&a, &wide, &local).is_err());
    }

    #[test]
    fn overlap_is_symmetric_and_family_aware() {
        assert!(overlap(&p("10.0.0.0/8"), &p("10.1.0.0/16")));
        assert!(overlap(&p("10.1.0.0/16"), &p("10.0.0.0/8")));
        assert!(!overlap(&p("10.1.0.0/16"), &p("10.2.0.0/16")));
        assert!(!overlap(&p("0.0.0.0/0"), &p("::/0")));
    }

    #[test]
    fn node_info_uplink_targets_are_cut_to_sane_ones() {
        let mut i = info("gw");
        i.uplink.targets = ["127.0.0.1", "224.0.0.1", "203.0.113.7", "::"]
            .iter()
            .map(|a| a.parse().unwrap())
            .chain((1..=20).map(|n| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))))
            .collect();
        let checked = check_node_info(i).unwrap();
        assert_eq!(
            checked.uplink.targets.len(),
            crate::protocol::MAX_UPLINK_TARGETS
        );
        assert_eq!(
            checked.uplink.targets[0],
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert!(checked.uplink.targets.iter().all(|a| !a.is_loopback()));
    }

    #[test]
    fn listed_addresses_are_unicast_sorted_and_bounded() {
        let mut i = info("gw");
        i.addresses = [
            "fd77::3",
            "127.0.0.1",
            "fe80::1",
            "ff02::1",
            "0.0.0.0",
            "169.254.1.1",
            "10.77.0.3",
            "fd77::3",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let got: Vec<String> = check_node_info(i)
            .unwrap()
            .addresses
            .iter()
            .map(IpAddr::to_string)
            .collect();
        assert_eq!(got, ["10.77.0.3", "fd77::3"]);
        let mut i = info("gw");
        i.addresses = (1..=40)
            .map(|n| format!("10.77.1.{n}").parse().unwrap())
            .collect();
        assert_eq!(
            check_node_info(i).unwrap().addresses.len(),
            crate::protocol::MAX_ADDRESSES
        );
    }
}
