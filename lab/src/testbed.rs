//! Network-namespace meshes for the demo and the end-to-end tests.
//!
//! [`Testbed::build`] creates four network namespaces and wires them into a line:
//!
//! ```text
//!  sub            relay                 gw                      inet
//!  mesh0 ──veth── mesh0   mesh1 ──veth── mesh0   wan0 ──veth──── wan0
//!  lo 10.77.0.1   lo 10.77.0.2           lo 10.77.0.3            198.51.100.2/24
//!     fd77::1        fd77::2                fd77::3              lo 203.0.113.7 (the "Internet")
//!                                        wan0 198.51.100.1/24
//! ```
//!
//! The mesh links are unnumbered (IPv6 link-local only); babeld runs on `sub`, `relay` and `gw`,
//! redistributes nothing but the nodes' loopback mesh addresses and carries IPv4 over IPv6 next
//! hops (`v4-via-v6`). `inet` knows only its connected subnet, so only traffic sourced from (or
//! NATed to) the gateway's uplink address gets answers. `sub` starts with a default route into
//! the mesh that leads nowhere (the relay has no route to the Internet): the negative control.
//!
//! [`Testbed::build_two_gateways`] adds a second gateway `gw2` (mesh addresses 10.77.0.4,
//! fd77::4) behind the relay's `mesh2`, with its own uplink `wan0` 198.51.101.1/24 to `inet`'s
//! `wan1` 198.51.101.2/24: two independent ways out, for the failover tests.
//!
//! # Cleanup
//! Everything a testbed creates is owned by its [`Testbed`] value: dropping it (also while a
//! panic unwinds) stops the processes it spawned and every process still living in its
//! namespaces, deletes the namespaces, removes wireguard-go control sockets named after its
//! tag and its working directory. A process killed before `Drop` ran leaves its namespaces
//! behind; [`cleanup_stale`] removes those once their owner is gone.
//!
//! # Layout
//! - [`Node`]: the roles (four, five with `gw2`) and their fixed addresses.
//! - [`Testbed`]: building, running programs inside, waiting for Babel, tearing down.
//! - [`require_root`], [`e2e_gate`]: prerequisites of the end-to-end tests.
//! - [`cleanup_stale`]: leftovers of crashed runs.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};

use crate::netlab::{Lab, pids_in, remove_wg_sockets, to_pid};
use mnigs::sys::cmd::{self, CmdError};

/// Prefix of every namespace a testbed creates: `mnigs-<tag>-<node>`.
pub const NS_PREFIX: &str = "mnigs-";

/// Programs the end-to-end tests need (checked by [`e2e_gate`]).
pub const E2E_PROGRAMS: [&str; 6] = ["ip", "babeld", "wg", "wireguard-go", "nft", "ping"];

/// Where `ip netns add` mounts named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// How long processes get between SIGTERM and SIGKILL on teardown.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Kernel routing protocol number of Babel routes (`proto babel`).
const PROTO_BABEL: &str = "42";

/// One node of the testbed line `sub — relay — gw — inet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A mesh router that wants Internet access (the subscriber).
    Sub,
    /// A mesh router between the subscriber and the gateway, without Internet access.
    Relay,
    /// The mesh router with an uplink (the gateway).
    Gw,
    /// The fake Internet: the gateway's upstream, hosting [`Testbed::INET_HOST`].
    Inet,
    /// The second gateway, only in [`Testbed::build_two_gateways`].
    Gw2,
}

impl Node {
    /// All nodes, in line order.
    pub const ALL: [Node; 4] = [Node::Sub, Node::Relay, Node::Gw, Node::Inet];
    /// The nodes that run babeld and have mesh addresses.
    pub const MESH: [Node; 3] = [Node::Sub, Node::Relay, Node::Gw];
    /// All nodes of [`Testbed::build_two_gateways`].
    pub const TWO_GATEWAYS: [Node; 5] = [Node::Sub, Node::Relay, Node::Gw, Node::Inet, Node::Gw2];

    /// Lower-case name, used in namespace and file names.
    pub fn name(self) -> &'static str {
        match self {
            Node::Sub => "sub",
            Node::Relay => "relay",
            Node::Gw => "gw",
            Node::Inet => "inet",
            Node::Gw2 => "gw2",
        }
    }

    /// The node's interfaces that face the mesh (babeld runs on these).
    pub fn mesh_ifnames(self) -> &'static [&'static str] {
        match self {
            Node::Sub | Node::Gw | Node::Gw2 => &["mesh0"],
            Node::Relay => &["mesh0", "mesh1"],
            Node::Inet => &[],
        }
    }

    /// Last byte of the mesh addresses; `None` for `inet`, which is not in the mesh.
    fn mesh_index(self) -> Option<u8> {
        match self {
            Node::Sub => Some(1),
            Node::Relay => Some(2),
            Node::Gw => Some(3),
            Node::Gw2 => Some(4),
            Node::Inet => None,
        }
    }

    fn from_name(name: &str) -> Option<Node> {
        Node::TWO_GATEWAYS.into_iter().find(|n| n.name() == name)
    }
}

/// A running namespace mesh, built on a [`Lab`] (its `tag`, `dir`, processes and namespaces,
/// reached through `Deref`); dropping it removes everything it created.
///
/// The lab's tag is a short hex tag unique to this testbed (owner PID + nonce), part of every
/// name it creates; its directory holds configs, logs, pid/state files and sockets.
pub struct Testbed {
    lab: Lab,
    /// babeld's PID per mesh node.
    babeld: Vec<(Node, u32)>,
    /// The nodes of this testbed's topology.
    nodes: Vec<Node>,
    /// Leaf subscriber names (`l00` …), also the relay's interface to each.
    leaves: Vec<String>,
}

impl std::ops::Deref for Testbed {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl Testbed {
    /// Address of the fake Internet host (on `inet`'s loopback).
    pub const INET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    /// The gateway's address on its uplink `wan0`.
    pub const GW_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    /// `inet`'s address on the uplink link; the gateway's default route points here.
    pub const INET_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// Prefix length of the uplink subnet.
    pub const UPLINK_PREFIX_LEN: u8 = 24;
    /// The second gateway's address on its uplink `wan0` (two-gateway testbed).
    pub const GW2_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 1);
    /// `inet`'s address on the second gateway's uplink (its `wan1`).
    pub const INET_UPLINK2: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 2);
    /// The IPv4 prefix the mesh addresses are taken from (a /24).
    pub const MESH_V4_NET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
    /// The IPv6 prefix the mesh addresses are taken from (a /64).
    pub const MESH_V6_NET: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0);

    /// Builds sub — relay — gw — inet and starts babeld on sub, relay and gw.
    ///
    /// Returns as soon as babeld runs; call [`Testbed::wait_converged`] before relying on
    /// mesh routes. Fails with a message naming the missing program if `ip` or `babeld` is not
    /// installed, or if not running as root. Whatever was created before a failure is removed.
    pub fn build() -> Result<Testbed, String> {
        Testbed::build_nodes(Node::ALL.to_vec())
    }

    /// Builds a mesh with two gateways, each with its own uplink to `inet`:
    ///
    /// ```text
    ///  sub ──mesh── relay ──mesh1── gw  ──wan0 198.51.100.0/24── wan0 inet
    ///                     ──mesh2── gw2 ──wan0 198.51.101.0/24── wan1 inet
    /// ```
    ///
    /// `gw2` has mesh addresses 10.77.0.4 and fd77::4. Babel runs on sub, relay, gw and gw2.
    pub fn build_two_gateways() -> Result<Testbed, String> {
        Testbed::build_nodes(Node::TWO_GATEWAYS.to_vec())
    }

    /// Whether this testbed has the second gateway.
    pub fn two_gateways(&self) -> bool {
        self.nodes.contains(&Node::Gw2)
    }

    /// The interfaces of `node` that face the mesh in this testbed's topology.
    pub fn mesh_ifnames(&self, node: Node) -> Vec<String> {
        let mut names: Vec<String> = node.mesh_ifnames().iter().map(|s| s.to_string()).collect();
        if node == Node::Relay && self.two_gateways() {
            names.push("mesh2".into());
            names.extend(self.leaves.iter().cloned());
        }
        names
    }

    /// Builds [`Testbed::build_two_gateways`] plus `count` (at most 100) leaf subscribers
    /// `l00`, `l01` …, each its own namespace ([`Testbed::leaf_ns`]) with one veth `mesh0` to the
    /// relay (whose end is named like the leaf), babeld, mesh addresses 10.77.0.(100+i) and
    /// fd77::(100+i), and a default route into the mesh that leads nowhere, like `sub`.
    pub fn build_two_gateways_with_leaves(count: u8) -> Result<Testbed, String> {
        if count > 100 {
            return Err("testbed: at most 100 leaves".into());
        }
        Testbed::build_nodes_with(Node::TWO_GATEWAYS.to_vec(), count)
    }

    /// The namespace of leaf `i`.
    pub fn leaf_ns(&self, i: u8) -> String {
        format!("{NS_PREFIX}{}-l{i:02}", self.tag)
    }

    /// The IPv4 and IPv6 mesh addresses of leaf `i`.
    pub fn leaf_addresses(i: u8) -> (Ipv4Addr, Ipv6Addr) {
        let [a, b, c, _] = Self::MESH_V4_NET.octets();
        let mut segments = Self::MESH_V6_NET.segments();
        segments[7] = 100 + u16::from(i);
        (Ipv4Addr::new(a, b, c, 100 + i), Ipv6Addr::from(segments))
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> u8 {
        self.leaves.len() as u8
    }

    /// Whether leaf `i` has Babel host routes to both mesh addresses of `to`.
    pub fn leaf_has_routes(&self, i: u8, to: Node) -> bool {
        let ns = self.leaf_ns(i);
        let v4 = IpAddr::V4(Self::mesh_v4(to));
        let v6 = IpAddr::V6(Self::mesh_v6(to));
        host_routes_in(&ns, "-4").contains(&v4) && host_routes_in(&ns, "-6").contains(&v6)
    }

    fn setup_leaves(&mut self) -> Result<(), String> {
        let relay = self.ns(Node::Relay);
        for i in 0..self.leaves.len() as u8 {
            let ns = self.leaf_ns(i);
            self.lab.create_ns(&ns)?;
            self.sysctls_in(&ns, true)?;
            let relay_if = self.leaves[usize::from(i)].clone();
            self.veth_ns(&ns, "mesh0", &relay, &relay_if)?;
            let (v4, v6) = Self::leaf_addresses(i);
            let batch = format!(
                "link set lo up\nlink set mesh0 up\naddress add {v4}/32 dev lo\n\
                 address add {v6}/128 dev lo nodad\nroute add default dev mesh0\n\
                 route add ::/0 dev mesh0\n"
            );
            cmd::run_input(&["ip", "-n", &ns, "-batch", "-"], &batch)
                .map_err(|e| format!("configuring {ns}: {e}"))?;
            cmd::run(&["ip", "-n", &relay, "link", "set", &relay_if, "up"])
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn start_leaf_babelds(&self) -> Result<(), String> {
        for (i, name) in self.leaves.iter().enumerate() {
            let ns = self.leaf_ns(i as u8);
            self.wait_link_local_ns(&ns, "mesh0", Duration::from_secs(5))?;
            self.start_babeld_as(name, &ns, &["mesh0".to_string()])?;
        }
        Ok(())
    }

    fn mesh_nodes(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| n.mesh_index().is_some())
            .collect()
    }

    fn build_nodes(nodes: Vec<Node>) -> Result<Testbed, String> {
        Testbed::build_nodes_with(nodes, 0)
    }

    fn build_nodes_with(nodes: Vec<Node>, leaves: u8) -> Result<Testbed, String> {
        require_root()?;
        for program in ["ip", "babeld"] {
            if !cmd::available(program) {
                return Err(format!(
                    "testbed: `{program}` is not installed (not found on PATH); it is needed to \
                     build the namespace mesh"
                ));
            }
        }
        let tag = loop {
            let tag = next_tag();
            // A crashed run whose PID came back could have left these names behind.
            if Node::TWO_GATEWAYS
                .iter()
                .all(|n| !netns_exists(&ns_name(&tag, *n)))
            {
                break tag;
            }
        };
        let dir = std::env::temp_dir().join(format!("mnigs-testbed-{tag}"));
        let lab = Lab::with_tag(tag, dir).map_err(|e| format!("testbed: {e}"))?;
        lab.own_ifnames(&ifname_prefix(&lab.tag));
        let mut testbed = Testbed {
            lab,
            babeld: Vec::new(),
            nodes,
            leaves: (0..leaves).map(|i| format!("l{i:02}")).collect(),
        };
        // From here on, dropping `testbed` on an error removes what was created.
        testbed
            .setup()
            .map_err(|e| format!("testbed {}: {e}", testbed.tag))?;
        Ok(testbed)
    }

    /// Name of `node`'s namespace, `mnigs-<tag>-<node>`.
    pub fn ns(&self, node: Node) -> String {
        ns_name(&self.tag, node)
    }

    /// `node`'s IPv4 mesh address (a /32 on its loopback).
    ///
    /// # Panics
    /// For [`Node::Inet`], which is not part of the mesh.
    pub fn mesh_v4(node: Node) -> Ipv4Addr {
        let [a, b, c, _] = Self::MESH_V4_NET.octets();
        Ipv4Addr::new(a, b, c, mesh_index(node))
    }

    /// `node`'s IPv6 mesh address (a /128 on its loopback).
    ///
    /// # Panics
    /// For [`Node::Inet`], which is not part of the mesh.
    pub fn mesh_v6(node: Node) -> Ipv6Addr {
        let mut segments = Self::MESH_V6_NET.segments();
        segments[7] = u16::from(mesh_index(node));
        Ipv6Addr::from(segments)
    }

    /// The gateway's uplink interface inside its namespace.
    pub fn wan_ifname(&self) -> &str {
        "wan0"
    }

    /// Runs `argv` inside `node`'s namespace (`ip netns exec NS argv…`) and returns its stdout.
    pub fn exec(&self, node: Node, argv: &[&str]) -> Result<String, CmdError> {
        self.exec_full(node, argv, None, cmd::DEFAULT_TIMEOUT)
    }

    /// Like [`Testbed::exec`], with stdin `input` and a time limit.
    pub fn exec_full(
        &self,
        node: Node,
        argv: &[&str],
        input: Option<&str>,
        timeout: Duration,
    ) -> Result<String, CmdError> {
        self.exec_in(&self.ns(node), argv, input, timeout)
    }

    /// Like [`Testbed::exec_full`], in the namespace named `ns` (e.g. a [`Testbed::leaf_ns`]).
    pub fn exec_in(
        &self,
        ns: &str,
        argv: &[&str],
        input: Option<&str>,
        timeout: Duration,
    ) -> Result<String, CmdError> {
        self.lab.exec_full(ns, argv, input, timeout)
    }

    /// Starts `argv` in the background inside `node`'s namespace, stdout and stderr appended to
    /// `log`, and returns its PID.
    ///
    /// `ip netns exec` replaces itself with the program, so the PID is the program's own. The
    /// process stays a child of this process until [`Testbed::stop`] or drop reaps it.
    pub fn spawn(&self, node: Node, argv: &[&str], log: &Path) -> Result<u32, String> {
        self.spawn_in(&self.ns(node), argv, log)
    }

    /// Like [`Testbed::spawn`], in the namespace named `ns` (e.g. a [`Testbed::leaf_ns`]).
    pub fn spawn_in(&self, ns: &str, argv: &[&str], log: &Path) -> Result<u32, String> {
        self.lab.spawn(ns, argv, log)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to `pid` and waits up to `wait` until it ended;
    /// true if it did.
    ///
    /// `pid` must be a child started by [`Testbed::spawn`] (it is reaped) or a process living in
    /// one of this testbed's namespaces (e.g. a daemon that forked itself); any other PID is
    /// left alone and false returned.
    pub fn stop(&self, pid: u32, signal: i32, wait: Duration) -> bool {
        self.lab.signal(pid, signal, wait)
    }

    /// PID of the babeld running on `node`, if `node` runs one.
    pub fn babeld_pid(&self, node: Node) -> Option<u32> {
        self.babeld
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, pid)| *pid)
    }

    /// The log file babeld writes on `node`.
    pub fn babeld_log(&self, node: Node) -> PathBuf {
        self.dir.join(format!("babel-{}.log", node.name()))
    }

    /// Waits until `sub` has Babel host routes to gw's IPv4 and IPv6 mesh addresses and `gw`
    /// has them back to sub's; returns how long that took from this call.
    ///
    /// Fails early if a babeld exited, and after `timeout` with the routing tables and babeld
    /// log tails in the message.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            self.check_babeld_alive()?;
            let gw2 = !self.two_gateways()
                || (self.has_mesh_routes(Node::Sub, Node::Gw2)
                    && self.has_mesh_routes(Node::Gw2, Node::Sub));
            if self.has_mesh_routes(Node::Sub, Node::Gw)
                && self.has_mesh_routes(Node::Gw, Node::Sub)
                && gw2
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "testbed {}: Babel did not converge within {timeout:?}\n{}",
                    self.tag,
                    self.diagnostics()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Whether `from` has Babel routes to both mesh addresses of `to`.
    pub fn has_mesh_routes(&self, from: Node, to: Node) -> bool {
        let v4 = IpAddr::V4(Self::mesh_v4(to));
        let v6 = IpAddr::V6(Self::mesh_v6(to));
        self.babel_host_routes(from, "-4").contains(&v4)
            && self.babel_host_routes(from, "-6").contains(&v6)
    }

    /// An interface name of at most 15 characters, unique to this testbed and `role`.
    ///
    /// Interface names must be unique beyond the namespace for programs that keep per-interface
    /// state outside it, e.g. wireguard-go's `/var/run/wireguard/<ifname>.sock`. The name is
    /// `mnw<tag><role>`; a role longer than 4 characters or not lower-case alphanumeric is
    /// replaced by a 4-digit hash of itself.
    pub fn unique_ifname(&self, role: &str) -> String {
        unique_ifname(&self.tag, role)
    }

    fn setup(&mut self) -> Result<(), String> {
        let owner = format!(
            "{} {}\n",
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0)
        );
        write_file(&self.dir.join("owner"), &owner)?;
        for node in self.nodes.clone() {
            self.lab.create_ns(&self.ns(node))?;
        }
        for node in self.nodes.clone() {
            self.set_sysctls(node)?;
        }
        // DAD is off before the veths exist, so their link-locals are never tentative.
        self.veth(Node::Sub, "mesh0", Node::Relay, "mesh0")?;
        self.veth(Node::Relay, "mesh1", Node::Gw, "mesh0")?;
        self.veth(Node::Gw, "wan0", Node::Inet, "wan0")?;
        if self.two_gateways() {
            self.veth(Node::Relay, "mesh2", Node::Gw2, "mesh0")?;
            self.veth(Node::Gw2, "wan0", Node::Inet, "wan1")?;
            self.setup_leaves()?;
        }
        for node in self.nodes.clone() {
            self.configure(node)?;
        }
        for node in self.mesh_nodes() {
            for ifname in self.mesh_ifnames(node) {
                self.wait_link_local(node, &ifname, Duration::from_secs(5))?;
            }
        }
        self.start_leaf_babelds()?;
        for node in self.mesh_nodes() {
            let pid = self.start_babeld(node)?;
            self.babeld.push((node, pid));
        }
        // A broken config makes babeld exit at once; say so here rather than at convergence.
        sleep(Duration::from_millis(100));
        self.check_babeld_alive()
    }

    fn set_sysctls(&self, node: Node) -> Result<(), String> {
        self.sysctls_in(&self.ns(node), node != Node::Inet)
    }

    fn sysctls_in(&self, ns: &str, forward: bool) -> Result<(), String> {
        // Written through /proc by a process inside the namespace: needs only coreutils.
        let mut off = vec![
            "/proc/sys/net/ipv6/conf/all/accept_dad",
            "/proc/sys/net/ipv6/conf/default/accept_dad",
            // Tunnels and v4-via-v6 routes make paths asymmetric; the host's setting must not leak in.
            "/proc/sys/net/ipv4/conf/all/rp_filter",
            "/proc/sys/net/ipv4/conf/default/rp_filter",
        ];
        let mut on = vec![];
        if !forward {
            off.push("/proc/sys/net/ipv4/ip_forward");
        } else {
            on.push("/proc/sys/net/ipv4/ip_forward");
            on.push("/proc/sys/net/ipv6/conf/all/forwarding");
        }
        for (value, files) in [("0\n", off), ("1\n", on)] {
            if files.is_empty() {
                continue;
            }
            let mut argv = vec!["tee"];
            argv.extend(files);
            self.exec_in(ns, &argv, Some(value), cmd::DEFAULT_TIMEOUT)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn veth(&self, a: Node, a_if: &str, b: Node, b_if: &str) -> Result<(), String> {
        self.veth_ns(&self.ns(a), a_if, &self.ns(b), b_if)
    }

    fn veth_ns(&self, a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Result<(), String> {
        cmd::run(&[
            "ip", "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if,
            "netns", b_ns,
        ])
        .map(drop)
        .map_err(|e| e.to_string())
    }

    fn configure(&self, node: Node) -> Result<(), String> {
        let mut batch = vec!["link set lo up".to_string()];
        for ifname in self.mesh_ifnames(node) {
            batch.push(format!("link set {ifname} up"));
        }
        if node.mesh_index().is_some() {
            batch.push(format!("address add {}/32 dev lo", Self::mesh_v4(node)));
            batch.push(format!(
                "address add {}/128 dev lo nodad",
                Self::mesh_v6(node)
            ));
        }
        let uplink = format!("/{}", Self::UPLINK_PREFIX_LEN);
        match node {
            Node::Sub => {
                // The negative control: a default route into a mesh without Internet.
                batch.push("route add default dev mesh0".to_string());
                batch.push("route add ::/0 dev mesh0".to_string());
            }
            Node::Relay => {}
            Node::Gw => {
                batch.push("link set wan0 up".to_string());
                batch.push(format!("address add {}{uplink} dev wan0", Self::GW_UPLINK));
                batch.push(format!("route add default via {}", Self::INET_UPLINK));
            }
            Node::Gw2 => {
                batch.push("link set wan0 up".to_string());
                batch.push(format!("address add {}{uplink} dev wan0", Self::GW2_UPLINK));
                batch.push(format!("route add default via {}", Self::INET_UPLINK2));
            }
            Node::Inet => {
                batch.push("link set wan0 up".to_string());
                batch.push(format!(
                    "address add {}{uplink} dev wan0",
                    Self::INET_UPLINK
                ));
                batch.push(format!("address add {}/32 dev lo", Self::INET_HOST));
                if self.two_gateways() {
                    batch.push("link set wan1 up".to_string());
                    batch.push(format!(
                        "address add {}{uplink} dev wan1",
                        Self::INET_UPLINK2
                    ));
                }
            }
        }
        let ns = self.ns(node);
        let input = batch.join("\n") + "\n";
        cmd::run_input(&["ip", "-n", &ns, "-batch", "-"], &input)
            .map(drop)
            .map_err(|e| format!("configuring {ns}: {e}\nbatch:\n{input}"))
    }

    fn wait_link_local(&self, node: Node, ifname: &str, timeout: Duration) -> Result<(), String> {
        self.wait_link_local_ns(&self.ns(node), ifname, timeout)
    }

    fn wait_link_local_ns(&self, ns: &str, ifname: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let out = cmd::run(&["ip", "-n", ns, "-6", "-o", "address", "show", "dev", ifname])
                .map_err(|e| e.to_string())?;
            let ready = out
                .lines()
                .any(|l| l.contains(" fe80::") && !l.contains("tentative"));
            if ready {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "{ns}: {ifname} has no usable IPv6 link-local address after {timeout:?}: {out}"
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn start_babeld(&self, node: Node) -> Result<u32, String> {
        self.start_babeld_as(node.name(), &self.ns(node), &self.mesh_ifnames(node))
    }

    fn start_babeld_as(&self, name: &str, ns: &str, ifnames: &[String]) -> Result<u32, String> {
        let file = |ext: &str| self.dir.join(format!("babel-{name}.{ext}"));
        let mut conf = format!(
            "random-id true\n\
             local-path {}\n\
             default type wired hello-interval 1 v4-via-v6 true\n",
            file("ctl").display()
        );
        for ifname in ifnames {
            conf.push_str(&format!("interface {ifname}\n"));
        }
        conf.push_str(&format!(
            "redistribute local ip {}/24 ge 32 allow\n\
             redistribute local ip {}/64 ge 128 allow\n\
             redistribute local deny\n\
             redistribute deny\n",
            Self::MESH_V4_NET,
            Self::MESH_V6_NET
        ));
        let conf_path = file("conf");
        write_file(&conf_path, &conf)?;
        let [conf_path, pid_path, state_path] =
            [conf_path, file("pid"), file("state")].map(|p| p.display().to_string());
        // Foreground (no -D): the PID is babeld's own and it dies with the testbed.
        self.spawn_in(
            ns,
            &[
                "babeld",
                "-c",
                &conf_path,
                "-I",
                &pid_path,
                "-S",
                &state_path,
            ],
            &self.dir.join(format!("babel-{name}.log")),
        )
    }

    fn check_babeld_alive(&self) -> Result<(), String> {
        for (node, pid) in &self.babeld {
            // None also for a babeld stopped on purpose through `stop`.
            if let Some(status) = self.lab.exit_status(*pid) {
                return Err(format!(
                    "babeld in {} exited ({status}); log {}:\n{}",
                    self.ns(*node),
                    self.babeld_log(*node).display(),
                    tail(&self.babeld_log(*node), 20)
                ));
            }
        }
        Ok(())
    }

    /// Destinations of `from`'s usable (not `unreachable`) Babel host routes of one family.
    fn babel_host_routes(&self, from: Node, family: &str) -> Vec<IpAddr> {
        host_routes_in(&self.ns(from), family)
    }

    fn diagnostics(&self) -> String {
        let mut text = String::new();
        for node in [Node::Sub, Node::Gw] {
            let ns = self.ns(node);
            for family in ["-4", "-6"] {
                let routes = cmd::run(&["ip", "-n", &ns, family, "route", "show"])
                    .unwrap_or_else(|e| e.to_string());
                text.push_str(&format!("--- {ns}: ip {family} route\n{routes}"));
            }
        }
        for node in self.mesh_nodes() {
            text.push_str(&format!(
                "--- {}: babeld log tail\n{}\n",
                self.ns(node),
                tail(&self.babeld_log(node), 10)
            ));
        }
        text
    }
}

/// Fails unless the effective user is root (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn require_root() -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(format!(
            "must run as root (effective uid is {euid}): network namespaces need CAP_SYS_ADMIN"
        ))
    }
}

/// Whether the end-to-end test `test` should run.
///
/// It should if we are root, every program in [`E2E_PROGRAMS`] is on PATH and `/dev/net/tun`
/// exists. Otherwise, with `MNIGS_E2E=1` in the environment this panics naming what is missing
/// (CI must not silently skip); without it, prints `SKIPPED <test>: <reason>` to stderr and
/// returns false.
pub fn e2e_gate(test: &str) -> bool {
    let mut missing = Vec::new();
    if let Err(e) = require_root() {
        missing.push(e);
    }
    for program in E2E_PROGRAMS {
        if !cmd::available(program) {
            missing.push(format!(
                "program `{program}` is not installed (not on PATH)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun is missing (wireguard-go needs it)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join("; ");
    if std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1") {
        panic!("{test}: MNIGS_E2E=1 but the end-to-end prerequisites are missing: {reason}");
    }
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: {reason} (set MNIGS_E2E=1 to turn this into a failure) !!!!!!!!\n"
    );
    false
}

/// Removes testbeds left behind by runs that died before dropping them; returns the namespaces
/// deleted.
///
/// A namespace `<prefix><tag>-<node>` counts as stale only if the testbed's working directory
/// still holds its `owner` file and the process named there (PID and start time) is gone, so
/// namespaces of live runs and of other tools are never touched. Processes still living in a
/// stale namespace are stopped first. Use [`NS_PREFIX`] unless the prefix was changed.
pub fn cleanup_stale(prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut stale: Vec<(String, String)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(tag) = parse_ns_name(prefix, &name) else {
            continue;
        };
        let dir = std::env::temp_dir().join(format!("mnigs-testbed-{tag}"));
        let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
            continue;
        };
        if owner_alive(&owner) {
            continue;
        }
        stale.push((tag.to_string(), name));
    }
    let pids: Vec<u32> = stale.iter().flat_map(|(_, ns)| pids_in(ns)).collect();
    for pid in &pids {
        let _ = kill(to_pid(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + TERM_GRACE;
    while pids.iter().any(|p| !process_ended(*p)) && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    for (_, ns) in &stale {
        for pid in pids_in(ns) {
            let _ = kill(to_pid(pid), Signal::SIGKILL);
        }
    }
    let mut removed = Vec::new();
    for (tag, ns) in &stale {
        if cmd::run(&["ip", "netns", "delete", ns]).is_ok() {
            removed.push(ns.clone());
        }
        remove_wg_sockets(&ifname_prefix(tag));
        let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("mnigs-testbed-{tag}")));
    }
    removed
}

fn ns_name(tag: &str, node: Node) -> String {
    format!("{NS_PREFIX}{tag}-{}", node.name())
}

/// [`Testbed::unique_ifname`] of the testbed tagged `tag`.
fn unique_ifname(tag: &str, role: &str) -> String {
    let plain = !role.is_empty()
        && role.len() <= 4
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let role = if plain {
        role.to_string()
    } else {
        format!("{:04x}", fnv1a(role.as_bytes()) & 0xffff)
    };
    format!("{}{role}", ifname_prefix(tag))
}

fn ifname_prefix(tag: &str) -> String {
    format!("mnw{tag}")
}

fn mesh_index(node: Node) -> u8 {
    node.mesh_index()
        .unwrap_or_else(|| panic!("{node:?} is not part of the mesh and has no mesh address"))
}

/// `PPPPPPNN`: the owner's PID (6 hex digits) and a per-process sequence number offset by a
/// clock-derived base, so tags stay unique within a process and rarely repeat across PID reuse.
fn next_tag() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    static BASE: OnceLock<u32> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() >> 10)
            .unwrap_or(0)
    });
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:06x}{:02x}",
        std::process::id() & 0xff_ffff,
        base.wrapping_add(seq) & 0xff
    )
}

/// The tag of a testbed namespace name `<prefix><8 hex>-<node>`.
fn parse_ns_name<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let (tag, node) = rest.split_once('-')?;
    let valid_tag = tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    let leaf =
        node.len() == 3 && node.starts_with('l') && node[1..].bytes().all(|b| b.is_ascii_digit());
    (valid_tag && (Node::from_name(node).is_some() || leaf)).then_some(tag)
}

/// Whether the process recorded in an `owner` file (`PID STARTTIME`) still runs.
fn owner_alive(owner: &str) -> bool {
    let mut fields = owner.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        // Unreadable: assume alive rather than destroy something we do not understand.
        return true;
    };
    !process_ended(pid) && start_time(pid) == Some(started)
}

fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Whether `pid` is gone or a zombie (reaping orphans can be slow; a zombie no longer runs).
pub fn process_ended(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => matches!(proc_stat_field(&stat, 0), Some("Z" | "X")),
        Err(_) => true,
    }
}

/// Start time (clock ticks since boot) of `pid`, from `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    proc_stat_field(&stat, 19)?.parse().ok()
}

/// Field `index` counted from the state (field 3 in proc(5)); the command name before it may
/// contain spaces and parentheses, so counting starts after its last `)`.
fn proc_stat_field(stat: &str, index: usize) -> Option<&str> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(index)
}

/// The destination of a usable host route line of `ip -o route show`, if it is one.
fn host_route_destination(line: &str) -> Option<IpAddr> {
    let first = line.split_whitespace().next()?;
    let (addr, len) = match first.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (first, None),
    };
    // Type keywords such as `unreachable` fail to parse as addresses, which is what we want.
    let addr: IpAddr = addr.parse().ok()?;
    let full = if addr.is_ipv4() { "32" } else { "128" };
    (len.is_none() || len == Some(full)).then_some(addr)
}

/// Destinations of the usable (not `unreachable`) Babel host routes of one family in `ns`.
fn host_routes_in(ns: &str, family: &str) -> Vec<IpAddr> {
    let out = cmd::run(&[
        "ip",
        "-n",
        ns,
        family,
        "-o",
        "route",
        "show",
        "proto",
        PROTO_BABEL,
    ])
    .unwrap_or_default();
    out.lines().filter_map(host_route_destination).collect()
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_addresses() {
        assert_eq!(Testbed::mesh_v4(Node::Sub), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(Testbed::mesh_v4(Node::Gw), Ipv4Addr::new(10, 77, 0, 3));
        assert_eq!(
            Testbed::mesh_v6(Node::Relay),
            "fd77::2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    #[should_panic(expected = "not part of the mesh")]
    fn inet_has_no_mesh_address() {
        Testbed::mesh_v4(Node::Inet);
    }

    #[test]
    fn tags_are_unique_and_parse_back() {
        let (a, b) = (next_tag(), next_tag());
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
        let name = ns_name(&a, Node::Relay);
        assert_eq!(parse_ns_name(NS_PREFIX, &name), Some(a.as_str()));
        assert_eq!(parse_ns_name(NS_PREFIX, "mnigs-1234-sub"), None);
        assert_eq!(parse_ns_name(NS_PREFIX, "mnigs-0000abcd-moon"), None);
        assert_eq!(parse_ns_name(NS_PREFIX, "other-0000abcd-sub"), None);
    }

    #[test]
    fn ifnames_fit_and_differ() {
        let ifname = |role| unique_ifname("0012ab34", role);
        assert_eq!(ifname("g"), "mnw0012ab34g");
        let long = ifname("gateway-side");
        assert_eq!(long.len(), 15);
        assert_ne!(long, ifname("subscriber-side"));
        assert!(ifname("Ab c").len() <= 15);
    }

    #[test]
    fn host_routes_are_recognised() {
        let v4 = "10.77.0.3 via inet6 fe80::1 dev mesh0 metric 0";
        assert_eq!(
            host_route_destination(v4),
            Some("10.77.0.3".parse().unwrap())
        );
        let v6 = "fd77::3 via fe80::1 dev mesh0 metric 1024 pref medium";
        assert_eq!(host_route_destination(v6), Some("fd77::3".parse().unwrap()));
        assert_eq!(
            host_route_destination("unreachable 10.77.0.3 metric 4294967295"),
            None
        );
        assert_eq!(host_route_destination("10.77.0.0/24 dev mesh0"), None);
        assert_eq!(
            host_route_destination("fd77::3/128 dev x"),
            Some("fd77::3".parse().unwrap())
        );
    }

    #[test]
    fn proc_stat_parsing() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0";
        assert_eq!(proc_stat_field(stat, 0), Some("S"));
        assert_eq!(proc_stat_field(stat, 19), Some("12345"));
        assert!(!process_ended(std::process::id()));
        assert!(owner_alive(&format!(
            "{} {}",
            std::process::id(),
            start_time(std::process::id()).unwrap()
        )));
        assert!(!owner_alive(&format!("{} 1", std::process::id())));
        assert!(owner_alive("garbage"));
    }
}
