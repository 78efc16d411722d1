//! The gateway's packet policy: what a subscriber may reach and the NAT of its addresses, in
//! one nftables table (`inet mnigs`) or, with iptables, chains named `MNIGS-*`.
//!
//! The whole policy is rendered from [`Policy`] and the live sessions by pure functions
//! ([`nft_script`], [`ipt_restore`]) and loaded atomically on every change (one `nft -f`
//! transaction, or one `iptables-restore --noflush`), so there is never a half-applied state and
//! a crashed run's leftovers are simply replaced.
//!
//! What the rules say (forward and input hooks at priority `filter - 10`, before OpenWrt's fw4 at
//! `filter`; our drops are final, our accepts only let fw4 decide):
//! - A packet arriving on a subscriber tunnel interface is forwarded only if its incoming
//!   interface **and** source address belong to one live session, and then only out of the WAN
//!   to a public destination (or one in `allow_destination`). Everything else from a tunnel is
//!   dropped: other subscribers, the LAN, private ranges behind the WAN.
//! - A route-method subscriber has no tunnel: its packets must come in on its interface, from
//!   its address **and** its neighbour's MAC address.
//! - Nothing arriving on a mesh interface is forwarded off the mesh (WAN, LAN) without a live
//!   session; packets with a pool source are dropped unless a session matches.
//! - Into a tunnel interface only replies (conntrack established/related) are forwarded.
//! - To the gateway itself a subscriber reaches only the RPC port and echo requests on the
//!   gateway's tunnel addresses.
//! - Masquerade matches the incoming interface and source address of a live session.
//! - Ports of servers that only mnigs itself talks to (`Policy::local_only_tcp`) are dropped
//!   unless they arrive on `lo`.
//! - A session that is not forwarded (socks: a proxy on the gateway) is a TCP port on the
//!   gateway: only its owner's mesh address may connect to it, from anywhere else (mesh, WAN,
//!   tunnels) it is dropped.
//!
//! # Layout
//! - [`Policy`], [`Session`]: the inputs.
//! - [`nft_script`], [`ipt_restore`]: rendering, unit-tested.
//! - [`Firewall`]: applies it, and flushes conntrack entries of a freed address.

use super::cmd::{self, CmdError};
use super::shaper::Shaper;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which tool to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables: one table `inet mnigs`.
    Nft,
    /// iptables/ip6tables: chains `MNIGS-FWD`, `MNIGS-OUT`, `MNIGS-IN`, `MNIGS-NAT`.
    Iptables,
}

/// Name of our nftables table (family `inet`).
pub const NFT_TABLE: &str = "mnigs";

/// IPv4 destinations a subscriber never reaches unless allowed: private, shared, loopback,
/// link-local, benchmarking, multicast and reserved ranges.
pub const PRIVATE4: [&str; 11] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 counterparts of [`PRIVATE4`]: unspecified/loopback, mapped, ULA, link-local, multicast.
pub const PRIVATE6: [&str; 6] = [
    "::/127",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// What the policy is built from (fixed while the gateway runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The uplink interface.
    pub wan: String,
    /// Interfaces facing the mesh (nothing from them is forwarded off the mesh without a session).
    pub mesh: Vec<String>,
    /// The IPv4 pool, `addr/len`.
    pub pool4: String,
    /// The IPv6 pool, if any.
    pub pool6: Option<String>,
    /// The gateway's own tunnel addresses.
    pub gateway4: Ipv4Addr,
    /// The gateway's own IPv6 tunnel address.
    pub gateway6: Option<Ipv6Addr>,
    /// The RPC port (open to subscribers on the tunnel addresses).
    pub rpc_port: u16,
    /// Destinations subscribers may reach although private (`list allow_destination`).
    pub allow: Vec<String>,
    /// TCP ports on the gateway that only the gateway itself may reach (arriving on `lo`), e.g.
    /// the SoftEther server's admin and spare listeners.
    pub local_only_tcp: Vec<u16>,
    /// Whether downloads are shaped: packets to a session get its class ([`super::shaper`]).
    pub shape_down: bool,
    /// Whether uploads are shaped: packets from a session get its class.
    pub shape_up: bool,
}

/// Where one live session's packets come from.
///
/// Aligned to 8 bytes like a lease (`i64` fields): LLVM merges the code of two `BTreeMap`s of
/// boxed values only when the boxes point to the same alignment, so the maps of leases,
/// sessions and cjdns's admitted keys share one copy (8 KB less on mips).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[repr(align(8))]
pub struct Session {
    /// The interface its packets arrive on.
    pub ifname: String,
    /// Its leased addresses.
    pub addrs: Vec<IpAddr>,
    /// The MAC address its packets must carry (route method); `None` for tunnels.
    pub mac: Option<String>,
    /// A session nothing of which is forwarded (socks): its owner's mesh address and its TCP
    /// port on the gateway, which only that address may reach. `ifname` and `mac` are unused.
    pub local: Option<(IpAddr, u16)>,
    /// Its shaping class minor ([`super::shaper::minor`]).
    pub class: u32,
}

fn quote(ifname: &str) -> String {
    format!("\"{ifname}\"")
}

fn set_of(items: impl IntoIterator<Item = String>) -> Option<String> {
    let v: Vec<String> = items.into_iter().collect();
    (!v.is_empty()).then(|| format!("{{ {} }}", v.join(", ")))
}

fn split(allow: &[String]) -> (Vec<String>, Vec<String>) {
    allow.iter().cloned().partition(|p| !p.contains(':'))
}

/// The sessions that are forwarded, and the local ones (owner, port) with the owner's address
/// in its canonical form (an IPv4-mapped IPv6 address is IPv4).
fn partition(sessions: &[Session]) -> (Vec<Session>, Vec<(IpAddr, u16)>) {
    let (local, fwd): (Vec<&Session>, Vec<&Session>) =
        sessions.iter().partition(|s| s.local.is_some());
    (
        fwd.into_iter().cloned().collect(),
        local
            .iter()
            .filter_map(|s| s.local.map(|(o, p)| (o.to_canonical(), p)))
            .collect(),
    )
}

/// The interfaces subscribers' tunnels arrive on (every session's, except mesh interfaces).
fn tunnel_ifs(policy: &Policy, sessions: &[Session]) -> Vec<String> {
    let mut v: Vec<String> = sessions
        .iter()
        .filter(|s| s.mac.is_none() && !policy.mesh.contains(&s.ifname))
        .map(|s| s.ifname.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The elements of every set and map of our table that depends on the sessions, by name, in
/// the order the sessions are given (map elements as `key : value`), for [`nft_script`], which
/// renders them in full. A change is rendered from [`session_elements`] by [`nft_changes`].
pub fn nft_elements(policy: &Policy, sessions: &[Session]) -> Vec<(&'static str, Vec<String>)> {
    let (fwd, local) = partition(sessions);
    let sessions = &fwd[..];
    // sess*: every session (masquerade); tun*: sessions whose tunnel authenticates them;
    // bind4: sessions without tunnel (route), with the MAC address they must come from.
    let (mut sess4, mut sess6, mut tun4, mut tun6, mut bind4) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for x in sessions {
        for a in &x.addrs {
            let key = format!("{} . {a}", quote(&x.ifname));
            match (a, &x.mac) {
                (IpAddr::V4(_), None) => {
                    sess4.push(key.clone());
                    tun4.push(key);
                }
                (IpAddr::V6(_), None) => {
                    sess6.push(key.clone());
                    tun6.push(key);
                }
                (IpAddr::V4(_), Some(mac)) => {
                    sess4.push(key.clone());
                    bind4.push(format!("{key} . {mac}"));
                }
                // The route method is IPv4 only; an IPv6 address without tunnel is never admitted.
                (IpAddr::V6(_), Some(_)) => {}
            }
        }
    }
    let mut out = vec![
        (
            "tunifs",
            tunnel_ifs(policy, sessions)
                .iter()
                .map(|i| quote(i))
                .collect(),
        ),
        ("sess4", sess4),
        ("sess6", sess6),
        ("tun4", tun4),
        ("tun6", tun6),
        ("bind4", bind4),
    ];
    // Shaping classes by address: downloads by destination, uploads by source.
    for (name, on, v6) in [
        ("down4", policy.shape_down, false),
        ("down6", policy.shape_down, true),
        ("up4", policy.shape_up, false),
        ("up6", policy.shape_up, true),
    ] {
        let elements = sessions.iter().filter(|_| on).flat_map(|x| {
            x.addrs
                .iter()
                .filter(move |a| a.is_ipv6() == v6)
                .map(move |a| format!("{a} : {}:{:x}", super::shaper::HANDLE, x.class))
        });
        out.push((name, elements.collect()));
    }
    // Local sessions: their ports, and each port with the one address that may use it.
    let mut lports: Vec<u16> = local.iter().map(|(_, p)| *p).collect();
    lports.sort();
    lports.dedup();
    out.push(("lports", lports.iter().map(u16::to_string).collect()));
    for (name, v6) in [("owner4", false), ("owner6", true)] {
        let elements = local
            .iter()
            .filter(|(o, _)| o.is_ipv6() == v6)
            .map(|(o, p)| format!("{o} . {p}"));
        out.push((name, elements.collect()));
    }
    out
}

/// The elements one session puts into the sets and maps of [`nft_elements`], as (name,
/// element). Several sessions may put the same element (a tunnel interface in `tunifs`);
/// [`Firewall`] counts them, so that a change costs what changed, not what is there.
pub fn session_elements(policy: &Policy, x: &Session) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some((owner, port)) = x.local {
        let owner = owner.to_canonical();
        out.push(("lports", port.to_string()));
        let set = if owner.is_ipv6() { "owner6" } else { "owner4" };
        out.push((set, format!("{owner} . {port}")));
        return out;
    }
    if x.mac.is_none() && !policy.mesh.contains(&x.ifname) {
        out.push(("tunifs", quote(&x.ifname)));
    }
    for a in &x.addrs {
        let key = format!("{} . {a}", quote(&x.ifname));
        match (a, &x.mac) {
            (IpAddr::V4(_), None) => {
                out.push(("sess4", key.clone()));
                out.push(("tun4", key));
            }
            (IpAddr::V6(_), None) => {
                out.push(("sess6", key.clone()));
                out.push(("tun6", key));
            }
            (IpAddr::V4(_), Some(mac)) => {
                out.push(("sess4", key.clone()));
                out.push(("bind4", format!("{key} . {mac}")));
            }
            (IpAddr::V6(_), Some(_)) => continue,
        }
        let class = format!("{a} : {}:{:x}", super::shaper::HANDLE, x.class);
        let v6 = a.is_ipv6();
        if policy.shape_down {
            out.push((if v6 { "down6" } else { "down4" }, class.clone()));
        }
        if policy.shape_up {
            out.push((if v6 { "up6" } else { "up4" }, class));
        }
    }
    out
}

/// The nft script (one transaction) that deletes `gone` and adds `new` (name, element) pairs:
/// deletions first (a map element by its key alone), so that a map key whose value changes is
/// replaced. Empty when there is nothing to do.
pub fn nft_changes(gone: &[(&'static str, String)], new: &[(&'static str, String)]) -> String {
    let mut script = String::new();
    for (verb, list) in [("delete", gone), ("add", new)] {
        let mut by_set: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, e) in list {
            let e = if verb == "delete" && is_map(name) {
                e.split(" : ").next().unwrap_or(e)
            } else {
                e.as_str()
            };
            by_set.entry(name).or_default().push(e);
        }
        for (name, elements) in by_set {
            script.push_str(&format!(
                "{verb} element inet {NFT_TABLE} {name} {{ {} }}\n",
                elements.join(", ")
            ));
        }
    }
    script
}

/// The element types of the sets and maps of [`nft_elements`] (maps map to `classid`).
fn element_type(name: &str) -> &'static str {
    match name {
        "tunifs" | "meshifs" => "ifname",
        "sess4" | "tun4" => "ifname . ipv4_addr",
        "sess6" | "tun6" => "ifname . ipv6_addr",
        "bind4" => "ifname . ipv4_addr . ether_addr",
        "down4" | "up4" => "ipv4_addr",
        "down6" | "up6" => "ipv6_addr",
        "lports" => "inet_service",
        "owner4" => "ipv4_addr . inet_service",
        _ => "ipv6_addr . inet_service",
    }
}

fn is_map(name: &str) -> bool {
    matches!(name, "down4" | "down6" | "up4" | "up6")
}

/// The nft script that replaces our table with the policy for `sessions` (one transaction).
pub fn nft_script(policy: &Policy, sessions: &[Session]) -> String {
    let wan = quote(&policy.wan);
    let mut s = format!(
        "table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n"
    );
    let mut elements = nft_elements(policy, sessions);
    elements.insert(
        1,
        ("meshifs", policy.mesh.iter().map(|i| quote(i)).collect()),
    );
    for (name, list) in elements {
        let ty = element_type(name);
        if is_map(name) {
            s.push_str(&format!("\tmap {name} {{\n\t\ttype {ty} : classid;\n"));
        } else {
            s.push_str(&format!("\tset {name} {{\n\t\ttype {ty};\n"));
        }
        if let Some(e) = set_of(list) {
            s.push_str(&format!("\t\telements = {e};\n"));
        }
        s.push_str("\t}\n");
    }
    let (allow4, allow6) = split(&policy.allow);
    for (name, ty, list) in [
        ("allow4", "ipv4_addr", allow4),
        ("allow6", "ipv6_addr", allow6),
        (
            "private4",
            "ipv4_addr",
            PRIVATE4.iter().map(|p| p.to_string()).collect(),
        ),
        (
            "private6",
            "ipv6_addr",
            PRIVATE6.iter().map(|p| p.to_string()).collect(),
        ),
    ] {
        s.push_str(&format!(
            "\tset {name} {{\n\t\ttype {ty};\n\t\tflags interval;\n"
        ));
        if let Some(e) = set_of(list) {
            s.push_str(&format!("\t\telements = {e};\n"));
        }
        s.push_str("\t}\n");
    }
    let pool6 = policy.pool6.as_deref();
    // Forwarding.
    s.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tmeta priority set ip daddr map @down4\n\
         \t\tmeta priority set ip6 daddr map @down6\n\
         \t\tmeta priority set ip saddr map @up4\n\
         \t\tmeta priority set ip6 saddr map @up6\n\
         \t\tiifname @tunifs jump from_tunnel\n\
         \t\tiifname @meshifs oifname != @meshifs jump from_mesh\n",
    );
    s.push_str(&format!("\t\tip saddr {} jump from_mesh\n", policy.pool4));
    if let Some(p) = pool6 {
        s.push_str(&format!("\t\tip6 saddr {p} jump from_mesh\n"));
    }
    s.push_str("\t\toifname @tunifs jump to_tunnel\n");
    s.push_str(&format!(
        "\t\tiifname {wan} ip daddr {} ct state != {{ established, related }} drop\n",
        policy.pool4
    ));
    if let Some(p) = pool6 {
        s.push_str(&format!(
            "\t\tiifname {wan} ip6 daddr {p} ct state != {{ established, related }} drop\n"
        ));
    }
    s.push_str("\t}\n");
    s.push_str(
        "\tchain from_tunnel {\n\
         \t\tiifname . ip saddr @tun4 goto to_internet\n\
         \t\tiifname . ip6 saddr @tun6 goto to_internet\n\
         \t\tdrop\n\t}\n\
         \tchain from_mesh {\n\
         \t\tiifname . ip saddr . ether saddr @bind4 goto to_internet\n\
         \t\tiifname . ip saddr @tun4 goto to_internet\n\
         \t\tiifname . ip6 saddr @tun6 goto to_internet\n\
         \t\tdrop\n\t}\n\
         \tchain to_internet {\n\
         \t\tip daddr @allow4 accept\n\
         \t\tip6 daddr @allow6 accept\n",
    );
    s.push_str(&format!(
        "\t\toifname != {wan} drop\n\
         \t\tip daddr @private4 drop\n\
         \t\tip6 daddr @private6 drop\n\
         \t\taccept\n\t}}\n\
         \tchain to_tunnel {{\n\
         \t\tct state {{ established, related }} accept\n\
         \t\tdrop\n\t}}\n"
    ));
    // The gateway itself.
    // The RPC server is for the mesh: whatever it listens on, the WAN side gets nothing.
    s.push_str(&format!(
        "\tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\tiifname {wan} tcp dport {} drop\n",
        policy.rpc_port
    ));
    if let Some(ports) = set_of(policy.local_only_tcp.iter().map(u16::to_string)) {
        s.push_str(&format!("\t\tiifname != \"lo\" tcp dport {ports} drop\n"));
    }
    s.push_str(
        "\t\ttcp dport @lports jump to_local\n\
         \t\tiifname @tunifs jump from_subscriber\n",
    );
    s.push_str(&format!(
        "\t\tip saddr {} jump from_subscriber\n",
        policy.pool4
    ));
    if let Some(p) = pool6 {
        s.push_str(&format!("\t\tip6 saddr {p} jump from_subscriber\n"));
    }
    s.push_str(
        "\t}\n\tchain to_local {\n\
         \t\tip saddr . tcp dport @owner4 accept\n\
         \t\tip6 saddr . tcp dport @owner6 accept\n\
         \t\tdrop\n\t}\n\tchain from_subscriber {\n",
    );
    let port = policy.rpc_port;
    let g4 = policy.gateway4;
    s.push_str(&format!(
        "\t\tip daddr {g4} tcp dport {port} accept\n\
         \t\tip daddr {g4} icmp type echo-request accept\n"
    ));
    if let Some(g6) = policy.gateway6 {
        s.push_str(&format!(
            "\t\tip6 daddr {g6} tcp dport {port} accept\n\
             \t\tip6 daddr {g6} icmpv6 type echo-request accept\n"
        ));
    }
    // cjdns: requests arrive on cjdroute's interface from cjdns addresses.
    s.push_str(&format!(
        "\t\tip6 saddr fc00::/8 ip6 daddr fc00::/8 tcp dport {port} accept\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
         \t\tct state {{ established, related }} accept\n\
         \t\tdrop\n\t}}\n"
    ));
    // Source NAT.
    s.push_str(&format!(
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname {wan} iifname . ip saddr @sess4 masquerade\n\
         \t\toifname {wan} iifname . ip6 saddr @sess6 masquerade\n\t}}\n}}\n"
    ));
    s
}

/// iptables chains: forward filter, its tail towards the Internet, input filter, NAT.
const IPT_FWD: &str = "MNIGS-FWD";
const IPT_OUT: &str = "MNIGS-OUT";
const IPT_IN: &str = "MNIGS-IN";
const IPT_NAT: &str = "MNIGS-NAT";
const IPT_MESH: &str = "MNIGS-MESH";
const IPT_SUBIN: &str = "MNIGS-SUBIN";
const IPT_CLS: &str = "MNIGS-CLS";

/// The `iptables-restore --noflush` input (IPv4, or IPv6 with `v6`) that replaces our chains'
/// contents with the policy for `sessions`. Declaring a chain in `--noflush` mode empties it,
/// and the whole input is one commit per table. iptables cannot match the incoming interface in
/// POSTROUTING: the masquerade matches the source, and the forward filter already dropped every
/// packet whose interface does not match its source.
pub fn ipt_restore(policy: &Policy, sessions: &[Session], v6: bool) -> String {
    let (fwd, local) = partition(sessions);
    let sessions = &fwd[..];
    let host = |a: &IpAddr| match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    };
    let ours = |a: &&IpAddr| a.is_ipv6() == v6;
    let pool = if v6 {
        policy.pool6.clone()
    } else {
        Some(policy.pool4.clone())
    };
    let mut f = format!(
        "*filter\n:{IPT_FWD} - [0:0]\n:{IPT_OUT} - [0:0]\n:{IPT_IN} - [0:0]\n\
         :{IPT_MESH} - [0:0]\n:{IPT_SUBIN} - [0:0]\n"
    );
    for x in sessions {
        for a in x.addrs.iter().filter(ours) {
            let mac = x
                .mac
                .as_ref()
                .map_or(String::new(), |m| format!(" -m mac --mac-source {m}"));
            if x.mac.is_some() && v6 {
                continue;
            }
            f.push_str(&format!(
                "-A {IPT_FWD} -i {} -s {}{mac} -g {IPT_OUT}\n",
                x.ifname,
                host(a)
            ));
        }
    }
    let tunifs = tunnel_ifs(policy, sessions);
    for i in &tunifs {
        f.push_str(&format!("-A {IPT_FWD} -i {i} -j DROP\n"));
    }
    for m in &policy.mesh {
        f.push_str(&format!("-A {IPT_FWD} -i {m} -g {IPT_MESH}\n"));
    }
    if let Some(p) = &pool {
        f.push_str(&format!("-A {IPT_FWD} -s {p} -j DROP\n"));
    }
    for i in &tunifs {
        f.push_str(&format!(
            "-A {IPT_FWD} -o {i} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n\
             -A {IPT_FWD} -o {i} -j DROP\n"
        ));
    }
    if let Some(p) = &pool {
        f.push_str(&format!(
            "-A {IPT_FWD} -i {} -d {p} -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP\n",
            policy.wan
        ));
    }
    let (allow4, allow6) = split(&policy.allow);
    let (allow, private): (Vec<String>, Vec<&str>) = if v6 {
        (allow6, PRIVATE6.to_vec())
    } else {
        (allow4, PRIVATE4.to_vec())
    };
    for a in &allow {
        f.push_str(&format!("-A {IPT_OUT} -d {a} -j RETURN\n"));
    }
    f.push_str(&format!("-A {IPT_OUT} ! -o {} -j DROP\n", policy.wan));
    for p in private {
        f.push_str(&format!("-A {IPT_OUT} -d {p} -j DROP\n"));
    }
    // Mesh: traffic leaving the mesh without a session (sessions were matched above).
    for m in &policy.mesh {
        f.push_str(&format!("-A {IPT_MESH} -o {m} -j RETURN\n"));
    }
    f.push_str(&format!("-A {IPT_MESH} -j DROP\n"));
    // Input: the RPC server is for the mesh, never for the WAN side.
    f.push_str(&format!(
        "-A {IPT_IN} -i {} -p tcp --dport {} -j DROP\n",
        policy.wan, policy.rpc_port
    ));
    for port in &policy.local_only_tcp {
        f.push_str(&format!(
            "-A {IPT_IN} ! -i lo -p tcp --dport {port} -j DROP\n"
        ));
    }
    // Local sessions: the owner's address may use its port, nobody else.
    for (owner, port) in local.iter().filter(|(o, _)| o.is_ipv6() == v6) {
        f.push_str(&format!(
            "-A {IPT_IN} -s {} -p tcp --dport {port} -j RETURN\n",
            host(owner)
        ));
    }
    for (_, port) in &local {
        f.push_str(&format!("-A {IPT_IN} -p tcp --dport {port} -j DROP\n"));
    }
    for i in &tunifs {
        f.push_str(&format!("-A {IPT_IN} -i {i} -g {IPT_SUBIN}\n"));
    }
    if let Some(p) = &pool {
        f.push_str(&format!("-A {IPT_IN} -s {p} -g {IPT_SUBIN}\n"));
    }
    let port = policy.rpc_port;
    let (gw, icmp) = if v6 {
        (
            policy.gateway6.map(|g| format!("{g}/128")),
            "-p ipv6-icmp --icmpv6-type echo-request",
        )
    } else {
        (
            Some(format!("{}/32", policy.gateway4)),
            "-p icmp --icmp-type echo-request",
        )
    };
    if let Some(g) = gw {
        f.push_str(&format!(
            "-A {IPT_SUBIN} -d {g} -p tcp --dport {port} -j RETURN\n\
             -A {IPT_SUBIN} -d {g} {icmp} -j RETURN\n"
        ));
    }
    if v6 {
        f.push_str(&format!(
            "-A {IPT_SUBIN} -s fc00::/8 -d fc00::/8 -p tcp --dport {port} -j RETURN\n"
        ));
        for t in ["neighbour-solicitation", "neighbour-advertisement"] {
            f.push_str(&format!(
                "-A {IPT_SUBIN} -p ipv6-icmp --icmpv6-type {t} -j RETURN\n"
            ));
        }
    }
    f.push_str(&format!(
        "-A {IPT_SUBIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n\
         -A {IPT_SUBIN} -j DROP\nCOMMIT\n"
    ));
    let mut m = format!("*mangle\n:{IPT_CLS} - [0:0]\n");
    for x in sessions {
        let class = format!("{}:{:x}", super::shaper::HANDLE, x.class);
        for a in x.addrs.iter().filter(ours) {
            if policy.shape_down {
                m.push_str(&format!(
                    "-A {IPT_CLS} -d {} -j CLASSIFY --set-class {class}\n",
                    host(a)
                ));
            }
            if policy.shape_up {
                m.push_str(&format!(
                    "-A {IPT_CLS} -s {} -j CLASSIFY --set-class {class}\n",
                    host(a)
                ));
            }
        }
    }
    m.push_str("COMMIT\n");
    let mut n = format!("*nat\n:{IPT_NAT} - [0:0]\n");
    for x in sessions {
        for a in x.addrs.iter().filter(ours) {
            n.push_str(&format!(
                "-A {IPT_NAT} -s {} -o {} -j MASQUERADE\n",
                host(a),
                policy.wan
            ));
        }
    }
    n.push_str("COMMIT\n");
    f + &m + &n
}

/// Our jumps from the built-in chains: (table, built-in chain, our chain).
const IPT_JUMPS: [(&str, &str, &str); 4] = [
    ("filter", "FORWARD", IPT_FWD),
    ("mangle", "FORWARD", IPT_CLS),
    ("filter", "INPUT", IPT_IN),
    ("nat", "POSTROUTING", IPT_NAT),
];
/// Every chain we own, per table.
const IPT_CHAINS: [(&str, &str); 7] = [
    ("mangle", IPT_CLS),
    ("filter", IPT_FWD),
    ("filter", IPT_OUT),
    ("filter", IPT_IN),
    ("filter", IPT_MESH),
    ("filter", IPT_SUBIN),
    ("nat", IPT_NAT),
];

/// [`cmd::ignore_absent`], also for a target module the kernel lacks (nothing was set with it).
fn ignore_absent(r: Result<String, CmdError>) -> Result<(), CmdError> {
    cmd::ignore_absent(r, &["Couldn't load target"])
}

/// The gateway's firewall and NAT, applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    /// Tool in use.
    pub backend: Backend,
    /// What the rules are built from.
    pub policy: Policy,
    /// Live sessions by key (the session id). Boxed: a map of one-pointer values shares its
    /// code with the other maps of boxed values (leases, cjdns's admitted): smaller on a router.
    sessions: BTreeMap<String, Box<Session>>,
    /// How many listed sessions put each (set, element) in (nft).
    elements: BTreeMap<(&'static str, String), usize>,
    /// Per-subscriber shaping.
    shaper: Shaper,
}

impl Firewall {
    /// Picks the backend: `nft`, `iptables`, or `auto` (nft when it works, else iptables).
    /// `shaper` gives each session its fair share; the policy's `shape_*` follow its rates.
    pub fn choose(setting: &str, mut policy: Policy, shaper: Shaper) -> Firewall {
        policy.shape_down = shaper.down_kbit > 0;
        policy.shape_up = shaper.up_kbit > 0;
        let backend = match setting {
            "nft" => Backend::Nft,
            "iptables" => Backend::Iptables,
            _ if cmd::available("nft") && cmd::run(&["nft", "list", "tables"]).is_ok() => {
                Backend::Nft
            }
            _ => Backend::Iptables,
        };
        Firewall {
            backend,
            policy,
            sessions: BTreeMap::new(),
            elements: BTreeMap::new(),
            shaper,
        }
    }

    /// Installs the policy with no session (anything left by an earlier run is replaced).
    pub fn setup(&mut self) -> Result<(), CmdError> {
        self.sessions.clear();
        self.elements.clear();
        if self.backend == Backend::Iptables {
            self.teardown()?;
            for ipt in ["iptables", "ip6tables"] {
                for (table, chain) in IPT_CHAINS {
                    cmd::run(&[ipt, "-w", "-t", table, "-N", chain])?;
                }
                for (table, builtin, chain) in IPT_JUMPS {
                    cmd::run(&[ipt, "-w", "-t", table, "-I", builtin, "1", "-j", chain])?;
                }
            }
        }
        self.apply()
    }

    fn apply(&self) -> Result<(), CmdError> {
        let sessions: Vec<Session> = self.sessions.values().map(|s| Session::clone(s)).collect();
        match self.backend {
            Backend::Nft => {
                cmd::run_input(&["nft", "-f", "-"], &nft_script(&self.policy, &sessions)).map(drop)
            }
            Backend::Iptables => {
                for (tool, v6) in [("iptables-restore", false), ("ip6tables-restore", true)] {
                    let input = ipt_restore(&self.policy, &sessions, v6);
                    cmd::run_input(&[tool, "-w", "--noflush"], &input)?;
                }
                Ok(())
            }
        }
    }

    /// Brings the kernel from our list with `removed` and without `added` to our list: with
    /// nft only the set and map elements that changed (one transaction, nothing when nothing
    /// changed; counted per element, so it costs what changed); with iptables our chains in full
    /// (one `iptables-restore --noflush` per family).
    fn apply_change(&mut self, removed: &[Session], added: &[Session]) -> Result<(), CmdError> {
        if self.backend == Backend::Iptables {
            return self.apply();
        }
        let (gone, new) = self.count(removed, added);
        let script = nft_changes(&gone, &new);
        if script.is_empty() {
            return Ok(());
        }
        let r = cmd::run_input(&["nft", "-f", "-"], &script).map(drop);
        if r.is_err() {
            self.count(added, removed);
        }
        r
    }

    /// Counts `removed` out and `added` in; returns the elements no session holds any more and
    /// those that no session held before (an element in both is left alone).
    #[allow(clippy::type_complexity)]
    fn count(
        &mut self,
        removed: &[Session],
        added: &[Session],
    ) -> (Vec<(&'static str, String)>, Vec<(&'static str, String)>) {
        let mut gone = Vec::new();
        for x in removed {
            for e in session_elements(&self.policy, x) {
                if let Some(n) = self.elements.get_mut(&e) {
                    *n -= 1;
                    if *n == 0 {
                        self.elements.remove(&e);
                        gone.push(e);
                    }
                }
            }
        }
        let mut new = Vec::new();
        for x in added {
            for e in session_elements(&self.policy, x) {
                let n = self.elements.entry(e.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    new.push(e);
                }
            }
        }
        // Gone and back in the same change: nothing to do for it.
        let both: std::collections::BTreeSet<(&'static str, String)> =
            gone.iter().filter(|e| new.contains(e)).cloned().collect();
        gone.retain(|e| !both.contains(e));
        new.retain(|e| !both.contains(e));
        (gone, new)
    }

    /// Admits one session (replacing what `key` had).
    pub fn admit(&mut self, key: &str, session: Session) -> Result<(), CmdError> {
        self.admit_many(vec![(key.to_string(), session)])
    }

    /// Admits sessions (each replacing what its key had), all in one change: the shaping classes
    /// in one `tc` batch, the rules in one transaction. On an error nothing of it stays: the
    /// classes given go again, and the list (and the kernel) hold what they held before.
    pub fn admit_many(&mut self, batch: Vec<(String, Session)>) -> Result<(), CmdError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A local session's traffic leaves from the gateway itself: no class to give it.
        let classes: Vec<(String, u32)> = batch
            .iter()
            .filter(|(_, s)| s.local.is_none())
            .map(|(_, s)| (s.ifname.clone(), s.class))
            .collect();
        if let Err(e) = self.shaper.admit_many(&classes) {
            let unused = self.unused(&classes);
            let _ = self.shaper.dismiss_many(&unused);
            return Err(e);
        }
        let mut olds = Vec::new();
        let mut added = Vec::new();
        for (key, session) in batch {
            added.push(session.clone());
            olds.push((key.clone(), self.sessions.insert(key, Box::new(session))));
        }
        let removed: Vec<Session> = olds
            .iter()
            .filter_map(|(_, o)| o.as_deref().cloned())
            .collect();
        let r = self.apply_change(&removed, &added);
        if r.is_err() {
            // Nothing half-made: the list is what it was, and the classes this call gave go
            // again unless a session still there uses them.
            for (key, old) in olds.into_iter().rev() {
                match old {
                    Some(o) => self.sessions.insert(key, o),
                    // Removed by `&str`, as the lease book does: one copy of `remove`.
                    None => self.sessions.remove(key.as_str()),
                };
            }
            let unused = self.unused(&classes);
            let _ = self.shaper.dismiss_many(&unused);
        }
        r
    }

    /// Of `classes`, those no listed session uses.
    fn unused(&self, classes: &[(String, u32)]) -> Vec<(String, u32)> {
        classes
            .iter()
            .filter(|(ifname, class)| {
                !self
                    .sessions
                    .values()
                    .any(|s| s.local.is_none() && &s.ifname == ifname && s.class == *class)
            })
            .cloned()
            .collect()
    }

    /// Withdraws a session, then forgets its connections (conntrack), so that nothing it
    /// opened survives, neither through NAT nor for whoever gets the address next.
    pub fn dismiss(&mut self, key: &str, addrs: &[IpAddr]) -> Result<(), CmdError> {
        self.dismiss_many(&[(key.to_string(), addrs.to_vec())])
    }

    /// Withdraws sessions (key, addresses) in one change, then forgets their connections. If
    /// the rules cannot be changed, the list keeps them all (the kernel still holds them), for
    /// the next attempt.
    pub fn dismiss_many(&mut self, batch: &[(String, Vec<IpAddr>)]) -> Result<(), CmdError> {
        let gone: Vec<(String, Box<Session>)> = batch
            .iter()
            .filter_map(|(key, _)| self.sessions.remove(key.as_str()).map(|s| (key.clone(), s)))
            .collect();
        if !gone.is_empty() {
            let removed: Vec<Session> = gone.iter().map(|(_, s)| Session::clone(s)).collect();
            if let Err(e) = self.apply_change(&removed, &[]) {
                // The rules still hold them: so does our list.
                self.sessions.extend(gone);
                return Err(e);
            }
            let classes: Vec<(String, u32)> = gone
                .iter()
                .filter(|(_, s)| s.local.is_none())
                .map(|(_, s)| (s.ifname.clone(), s.class))
                .collect();
            let unused = self.unused(&classes);
            self.shaper.dismiss_many(&unused)?;
        }
        let addrs: Vec<IpAddr> = batch.iter().flat_map(|(_, a)| a.iter().copied()).collect();
        flush_conntrack(&addrs)
    }

    /// The keys of the sessions listed (admitted and not dismissed).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.sessions.keys().map(String::as_str)
    }

    /// Removes the table or chains and everything in them, and the shaping.
    pub fn teardown(&mut self) -> Result<(), CmdError> {
        self.shaper.teardown()?;
        match self.backend {
            Backend::Nft => ignore_absent(cmd::run(&["nft", "delete", "table", "inet", NFT_TABLE])),
            Backend::Iptables => {
                for ipt in ["iptables", "ip6tables"] {
                    for (table, builtin, chain) in IPT_JUMPS {
                        // Each delete removes one jump; a crashed run may have left several.
                        for _ in 0..4 {
                            let r = cmd::run(&[ipt, "-w", "-t", table, "-D", builtin, "-j", chain]);
                            if r.is_err() {
                                ignore_absent(r)?;
                                break;
                            }
                        }
                    }
                    for (table, chain) in IPT_CHAINS {
                        ignore_absent(cmd::run(&[ipt, "-w", "-t", table, "-F", chain]))?;
                    }
                    for (table, chain) in IPT_CHAINS {
                        ignore_absent(cmd::run(&[ipt, "-w", "-t", table, "-X", chain]))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The `conntrack -D` calls that forget every connection from or to `addr`.
pub fn conntrack_argv(addr: IpAddr) -> [Vec<String>; 2] {
    let fam = if addr.is_ipv6() { "ipv6" } else { "ipv4" };
    ["-s", "-d"].map(|dir| {
        ["conntrack", "-D", "-f", fam, dir]
            .iter()
            .map(|s| s.to_string())
            .chain([addr.to_string()])
            .collect()
    })
}

/// Above this many addresses, [`flush_conntrack`] lists the table once per family and deletes
/// only the addresses that have connections, instead of two deletions per address.
const CONNTRACK_LIST_ABOVE: usize = 4;

/// `conntrack -L -f FAMILY`: the connection table of one family.
fn conntrack_table(fam: &str) -> Result<String, CmdError> {
    cmd::run(&["conntrack", "-L", "-f", fam])
}

/// The addresses of `wanted` that appear (as `src=` or `dst=`) in a `conntrack -L` listing or
/// in `/proc/net/nf_conntrack` (IPv6 addresses there in full, without `::`).
pub fn conntrack_listed(listing: &str, wanted: &[IpAddr]) -> Vec<IpAddr> {
    let mut seen = std::collections::BTreeSet::new();
    for word in listing.split_whitespace() {
        let addr = word
            .strip_prefix("src=")
            .or_else(|| word.strip_prefix("dst="))
            .and_then(|a| a.parse::<IpAddr>().ok());
        if let Some(a) = addr.filter(|a| wanted.contains(a)) {
            seen.insert(a);
        }
    }
    seen.into_iter().collect()
}

/// Forgets the connections of `addrs`. Without the `conntrack` program this is logged and
/// skipped (the firewall still stops the traffic; only the NAT entries live on until they time
/// out). Many addresses (a batch of releases) cost one listing per family, and deletions only
/// for those with connections.
pub fn flush_conntrack(addrs: &[IpAddr]) -> Result<(), CmdError> {
    if addrs.is_empty() {
        return Ok(());
    }
    if !cmd::available("conntrack") {
        crate::log::warn(
            "`conntrack` is not installed: connections of a freed address are not flushed",
        );
        return Ok(());
    }
    // No connection tracked at all (the kernel says so for free): nothing to forget.
    let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count");
    if count.is_ok_and(|c| c.trim() == "0") {
        return Ok(());
    }
    let mut targets = addrs.to_vec();
    if addrs.len() > CONNTRACK_LIST_ABOVE {
        // The kernel's own listing (both families) when it offers one: no program to run.
        let table = match std::fs::read_to_string("/proc/net/nf_conntrack") {
            Ok(t) => t,
            Err(_) => conntrack_table("ipv4")? + &conntrack_table("ipv6")?,
        };
        targets = conntrack_listed(&table, addrs);
    }
    for a in targets {
        for argv in conntrack_argv(a) {
            match cmd::run(&argv) {
                Ok(_) => {}
                // "0 flow entries have been deleted" exits 1: nothing to forget.
                Err(e) if e.stderr().contains("0 flow entries") => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_aligned_like_leases() {
        // 8, as a lease is (`gateway::leases`' own test pins that): see `Session`.
        assert_eq!(std::mem::align_of::<Session>(), 8);
    }

    fn policy() -> Policy {
        Policy {
            wan: "wan0".into(),
            mesh: vec!["br-mesh".into()],
            pool4: "100.127.0.0/24".into(),
            pool6: Some("fd7e:7e7e::/64".into()),
            gateway4: Ipv4Addr::new(100, 127, 0, 1),
            gateway6: Some("fd7e:7e7e::1".parse().unwrap()),
            rpc_port: 65533,
            allow: vec!["192.168.9.0/24".into(), "fd00:9::/64".into()],
            local_only_tcp: vec![],
            shape_down: true,
            shape_up: false,
        }
    }

    fn sessions() -> Vec<Session> {
        vec![
            Session {
                ifname: "mnigs-wg".into(),
                addrs: vec![
                    "100.127.0.2".parse().unwrap(),
                    "fd7e:7e7e::2".parse().unwrap(),
                ],
                mac: None,
                local: None,
                class: 0x100,
            },
            Session {
                ifname: "br-mesh".into(),
                addrs: vec!["100.127.0.3".parse().unwrap()],
                mac: Some("02:00:00:00:00:03".into()),
                local: None,
                class: 0x101,
            },
        ]
    }

    #[test]
    fn nft_binds_each_address_to_its_interface_and_mac() {
        let s = nft_script(&policy(), &sessions());
        assert!(s.starts_with("table inet mnigs {}\ndelete table inet mnigs\n"));
        assert!(s.contains("elements = { \"mnigs-wg\" . 100.127.0.2, \"br-mesh\" . 100.127.0.3 }"));
        assert!(s.contains("elements = { \"mnigs-wg\" . fd7e:7e7e::2 }"));
        // The route session is masqueraded, but admitted only with its MAC address.
        assert!(s.contains(
            "set tun4 {\n\t\ttype ifname . ipv4_addr;\n\t\telements = { \"mnigs-wg\" . 100.127.0.2 };"
        ));
        assert!(s.contains("elements = { \"br-mesh\" . 100.127.0.3 . 02:00:00:00:00:03 }"));
        // The mesh interface is never treated as a tunnel (that would cut the mesh's own traffic).
        assert!(s.contains("set tunifs {\n\t\ttype ifname;\n\t\telements = { \"mnigs-wg\" };"));
        assert!(s.contains("oifname \"wan0\" iifname . ip saddr @sess4 masquerade"));
        assert!(s.contains("iifname @meshifs oifname != @meshifs jump from_mesh"));
        assert!(s.contains("oifname != \"wan0\" drop"));
        assert!(s.contains("ip daddr 100.127.0.1 tcp dport 65533 accept"));
        assert!(s.contains("iifname \"wan0\" tcp dport 65533 drop"));
        assert!(s.contains("elements = { 192.168.9.0/24 }"));
        assert!(s.contains(
            "map down4 {\n\t\ttype ipv4_addr : classid;\n\t\telements = { 100.127.0.2 : 7e:100, 100.127.0.3 : 7e:101 };"
        ));
        assert!(
            s.contains("map up4 {\n\t\ttype ipv4_addr : classid;\n\t}"),
            "uploads not shaped"
        );
        for p in PRIVATE4 {
            assert!(s.contains(p), "{p}");
        }
    }

    #[test]
    fn nft_without_sessions_has_empty_sets() {
        let s = nft_script(&policy(), &[]);
        assert!(s.contains("set sess4 {\n\t\ttype ifname . ipv4_addr;\n\t}"));
        assert!(!s.contains("elements = { \"mnigs-wg\""));
    }

    #[test]
    fn iptables_rules_match_interface_source_and_mac() {
        let v4 = ipt_restore(&policy(), &sessions(), false);
        assert!(v4.contains("-A MNIGS-FWD -i mnigs-wg -s 100.127.0.2/32 -g MNIGS-OUT\n"));
        assert!(v4.contains(
            "-A MNIGS-FWD -i br-mesh -s 100.127.0.3/32 -m mac --mac-source 02:00:00:00:00:03 -g MNIGS-OUT\n"
        ));
        assert!(v4.contains("-A MNIGS-FWD -i mnigs-wg -j DROP\n"));
        assert!(v4.contains("-A MNIGS-FWD -i br-mesh -g MNIGS-MESH\n"));
        assert!(v4.contains("-A MNIGS-OUT -d 192.168.9.0/24 -j RETURN\n"));
        assert!(v4.contains("-A MNIGS-OUT ! -o wan0 -j DROP\n"));
        assert!(v4.contains("-A MNIGS-IN -i wan0 -p tcp --dport 65533 -j DROP\n"));
        assert!(v4.contains("-A MNIGS-NAT -s 100.127.0.2/32 -o wan0 -j MASQUERADE\n"));
        assert!(v4.contains("-A MNIGS-CLS -d 100.127.0.2/32 -j CLASSIFY --set-class 7e:100\n"));
        assert!(!v4.contains("-A MNIGS-CLS -s"), "uploads not shaped");
        assert!(!v4.contains("fd7e"));
        // The session rules come before the drops.
        let accept = v4.find("-g MNIGS-OUT").unwrap();
        assert!(accept < v4.find("-i mnigs-wg -j DROP").unwrap());
        let v6 = ipt_restore(&policy(), &sessions(), true);
        assert!(v6.contains("-A MNIGS-FWD -i mnigs-wg -s fd7e:7e7e::2/128 -g MNIGS-OUT\n"));
        assert!(v6.contains("-A MNIGS-OUT -d fd00:9::/64 -j RETURN\n"));
        assert!(!v6.contains("100.127.0.3"));
        assert_eq!(v6.matches("COMMIT").count(), 3);
    }

    /// A socks session (nothing forwarded, port 10802 for its owner 10.0.0.5), another one
    /// whose owner asked over IPv6, and a softether session (the hub's tap, no MAC).
    fn with_socks_and_softether() -> Vec<Session> {
        let mut v = sessions();
        v.push(Session {
            ifname: String::new(),
            addrs: vec!["100.127.0.4".parse().unwrap()],
            mac: None,
            local: Some(("::ffff:10.0.0.5".parse().unwrap(), 10802)),
            class: 0x102,
        });
        v.push(Session {
            ifname: String::new(),
            addrs: vec!["100.127.0.5".parse().unwrap()],
            mac: None,
            local: Some(("fd00::6".parse().unwrap(), 10803)),
            class: 0x103,
        });
        v.push(Session {
            ifname: "tap_mnigs".into(),
            addrs: vec!["100.127.0.6".parse().unwrap()],
            mac: None,
            local: None,
            class: 0x104,
        });
        v
    }

    #[test]
    fn nft_gives_a_socks_port_to_its_owner_only_and_forwards_nothing() {
        let s = nft_script(&policy(), &with_socks_and_softether());
        assert!(
            s.contains("set lports {\n\t\ttype inet_service;\n\t\telements = { 10802, 10803 };")
        );
        // The IPv4-mapped owner is matched as the IPv4 address it is.
        assert!(s.contains(
            "set owner4 {\n\t\ttype ipv4_addr . inet_service;\n\t\telements = { 10.0.0.5 . 10802 };"
        ));
        assert!(s.contains(
            "set owner6 {\n\t\ttype ipv6_addr . inet_service;\n\t\telements = { fd00::6 . 10803 };"
        ));
        // Before anything else may accept it: the WAN, tunnels and the mesh all get the drop.
        let jump = s.find("tcp dport @lports jump to_local").unwrap();
        assert!(jump < s.find("iifname @tunifs jump from_subscriber").unwrap());
        assert!(s.contains(
            "chain to_local {\n\t\tip saddr . tcp dport @owner4 accept\n\t\tip6 saddr . tcp dport @owner6 accept\n\t\tdrop\n\t}"
        ));
        // Its pool address is neither forwarded, masqueraded nor shaped.
        for a in ["100.127.0.4", "100.127.0.5"] {
            assert!(!s.contains(a), "{a} appears in\n{s}");
        }
        assert!(!s.contains("\"\""), "an empty interface name");
        // The softether session: its tap is a tunnel interface, bound to its address.
        assert!(s.contains("elements = { \"mnigs-wg\", \"tap_mnigs\" };"));
        assert!(s.contains("\"tap_mnigs\" . 100.127.0.6"));
        let tun4 = &s[s.find("set tun4").unwrap()..];
        assert!(tun4[..tun4.find('}').unwrap()].contains("\"tap_mnigs\" . 100.127.0.6"));
        // Without local sessions the sets are empty and nothing is dropped by them.
        let none = nft_script(&policy(), &sessions());
        assert!(none.contains("set lports {\n\t\ttype inet_service;\n\t}"));
    }

    #[test]
    fn iptables_gives_a_socks_port_to_its_owner_only() {
        let v4 = ipt_restore(&policy(), &with_socks_and_softether(), false);
        let allow = v4
            .find("-A MNIGS-IN -s 10.0.0.5/32 -p tcp --dport 10802 -j RETURN\n")
            .unwrap();
        let drop = v4
            .find("-A MNIGS-IN -p tcp --dport 10802 -j DROP\n")
            .unwrap();
        assert!(allow < drop);
        assert!(drop < v4.find("-A MNIGS-IN -i mnigs-wg -g MNIGS-SUBIN").unwrap());
        // The IPv6 owner's port is closed to every IPv4 source.
        assert!(v4.contains("-A MNIGS-IN -p tcp --dport 10803 -j DROP\n"));
        assert!(!v4.contains("--dport 10803 -j RETURN"));
        for a in ["100.127.0.4", "100.127.0.5"] {
            assert!(!v4.contains(a), "{a} appears in\n{v4}");
        }
        assert!(v4.contains("-A MNIGS-FWD -i tap_mnigs -s 100.127.0.6/32 -g MNIGS-OUT\n"));
        assert!(v4.contains("-A MNIGS-FWD -i tap_mnigs -j DROP\n"));
        assert!(v4.contains("-A MNIGS-NAT -s 100.127.0.6/32 -o wan0 -j MASQUERADE\n"));
        let v6 = ipt_restore(&policy(), &with_socks_and_softether(), true);
        assert!(v6.contains("-A MNIGS-IN -s fd00::6/128 -p tcp --dport 10803 -j RETURN\n"));
        assert!(v6.contains("-A MNIGS-IN -p tcp --dport 10802 -j DROP\n"));
        assert!(!v6.contains("10.0.0.5"));
    }

    #[test]
    fn local_only_ports_are_dropped_unless_on_loopback() {
        let mut p = policy();
        assert!(!nft_script(&p, &[]).contains("iifname != \"lo\""));
        p.local_only_tcp = vec![992, 1194, 5555];
        let s = nft_script(&p, &[]);
        let drop = s
            .find("iifname != \"lo\" tcp dport { 992, 1194, 5555 } drop\n")
            .unwrap();
        assert!(drop < s.find("jump from_subscriber").unwrap());
        for v6 in [false, true] {
            let r = ipt_restore(&p, &[], v6);
            for port in [992, 1194, 5555] {
                assert!(r.contains(&format!(
                    "-A MNIGS-IN ! -i lo -p tcp --dport {port} -j DROP\n"
                )));
            }
        }
    }

    fn nft_firewall() -> Firewall {
        Firewall::choose("nft", policy(), Shaper::new(1000, 0, 10, "wan0"))
    }

    /// The script of a change: `removed` out of, `added` into what `fw` counts.
    fn change(fw: &mut Firewall, removed: &[Session], added: &[Session]) -> String {
        let (gone, new) = fw.count(removed, added);
        nft_changes(&gone, &new)
    }

    #[test]
    fn nft_changes_are_only_what_changed() {
        let mut fw = nft_firewall();
        let all = sessions();
        let first = change(&mut fw, &[], &all[..1]);
        assert!(
            first.contains("add element inet mnigs tunifs { \"mnigs-wg\" }\n"),
            "{first}"
        );
        let add = change(&mut fw, &[], &all[1..]);
        assert!(!add.contains("delete"), "{add}");
        assert!(add.contains("add element inet mnigs sess4 { \"br-mesh\" . 100.127.0.3 }\n"));
        assert!(add.contains(
            "add element inet mnigs bind4 { \"br-mesh\" . 100.127.0.3 . 02:00:00:00:00:03 }\n"
        ));
        assert!(add.contains("add element inet mnigs down4 { 100.127.0.3 : 7e:101 }\n"));
        assert!(
            !add.contains("tunifs"),
            "the mesh interface is no tunnel: {add}"
        );
        assert_eq!(
            change(&mut fw, &[], &[]),
            "",
            "nothing changed: no transaction"
        );
        // Back again: map elements are deleted by their key.
        let del = change(&mut fw, &all[1..], &[]);
        assert!(!del.contains("add"), "{del}");
        assert!(
            del.contains("delete element inet mnigs down4 { 100.127.0.3 }\n"),
            "{del}"
        );
        // A tunnel interface goes from `tunifs` only with the last session on it.
        let other = Session {
            ifname: "mnigs-wg".into(),
            addrs: vec!["100.127.0.3".parse().unwrap()],
            mac: None,
            local: None,
            class: 0x101,
        };
        change(&mut fw, &[], std::slice::from_ref(&other));
        let one_left = change(&mut fw, std::slice::from_ref(&other), &[]);
        assert!(!one_left.contains("tunifs"), "{one_left}");
        // The same address given to a new session in the same change: nothing to do.
        assert_eq!(change(&mut fw, &all[..1], &all[..1]), "");
        // A map key whose value changes: deleted, then added.
        let mut moved = all[0].clone();
        moved.class = 0x1ff;
        let c = change(&mut fw, &all[..1], std::slice::from_ref(&moved));
        let d = c
            .find("delete element inet mnigs down4 { 100.127.0.2 }")
            .unwrap();
        let a = c
            .find("add element inet mnigs down4 { 100.127.0.2 : 7e:1ff }")
            .unwrap();
        assert!(d < a, "{c}");
        let none_left = change(&mut fw, std::slice::from_ref(&moved), &[]);
        assert!(
            none_left.contains("delete element inet mnigs tunifs { \"mnigs-wg\" }\n"),
            "{none_left}"
        );
        assert!(fw.elements.is_empty(), "{:?}", fw.elements);
    }

    #[test]
    fn counted_elements_are_the_full_scripts() {
        let mut fw = nft_firewall();
        let all = with_socks_and_softether();
        fw.count(&[], &all);
        let counted: std::collections::BTreeSet<(&str, String)> =
            fw.elements.keys().cloned().collect();
        let full: std::collections::BTreeSet<(&str, String)> = nft_elements(&fw.policy, &all)
            .into_iter()
            .flat_map(|(name, v)| v.into_iter().map(move |e| (name, e)))
            .collect();
        assert_eq!(counted, full);
        let script = nft_script(&fw.policy, &all);
        for (_, e) in &full {
            assert!(script.contains(e.as_str()), "{e} not in the full script");
        }
    }

    #[test]
    fn conntrack_listing_names_the_addresses_with_connections() {
        let proc = "ipv4     2 tcp      6 431999 ESTABLISHED src=100.127.0.2 dst=203.0.113.7 sport=4 dport=80 src=203.0.113.7 dst=198.51.100.1 sport=80 dport=4 [ASSURED] mark=0 zone=0 use=2\n\
                    ipv6     10 udp      17 29 src=fd7e:7e7e:0000:0000:0000:0000:0000:0003 dst=2001:0db8:0000:0000:0000:0000:0000:0001 sport=5 dport=53 src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=fd7e:7e7e:0000:0000:0000:0000:0000:0003 sport=53 dport=5 mark=0 zone=0 use=2\n";
        let wanted: Vec<IpAddr> = ["100.127.0.2", "100.127.0.3", "fd7e:7e7e::3", "fd7e:7e7e::2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let found = conntrack_listed(proc, &wanted);
        assert_eq!(
            found,
            vec![
                "100.127.0.2".parse::<IpAddr>().unwrap(),
                "fd7e:7e7e::3".parse().unwrap()
            ]
        );
        assert!(conntrack_listed("", &wanted).is_empty());
    }

    #[test]
    fn conntrack_forgets_both_directions() {
        let [s, d] = conntrack_argv("100.127.0.2".parse().unwrap());
        assert_eq!(s.join(" "), "conntrack -D -f ipv4 -s 100.127.0.2");
        assert_eq!(d.join(" "), "conntrack -D -f ipv4 -d 100.127.0.2");
    }
}
