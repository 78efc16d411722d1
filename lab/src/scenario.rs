//! The demo and the end-to-end tests share this: a [`Scenario`] puts a gateway daemon and a
//! subscriber daemon on the [`Testbed`] mesh (sub — relay — gw — inet), from UCI files, and offers
//! the checks both need (status, ping through the tunnel, what the daemons left on the system).

use crate::testbed::{Node, Testbed};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A gateway and a subscriber on a namespace mesh.
pub struct Scenario {
    /// The mesh; dropping the scenario removes it with everything running in it.
    pub bed: Testbed,
    exe: PathBuf,
    /// How the daemons are started when not as `exe` itself (see [`Scenario::run_daemons_as`]).
    daemon: Vec<String>,
    /// Gateway daemon's PID, while running.
    pub gw_pid: Option<u32>,
    /// Subscriber daemon's PID, while running.
    pub sub_pid: Option<u32>,
    /// The gateway's WireGuard interface.
    pub gw_wg: String,
    /// The subscriber's WireGuard interface.
    pub sub_wg: String,
    /// Second gateway daemon's PID, while running (two-gateway scenario).
    pub gw2_pid: Option<u32>,
    /// The second gateway's WireGuard interface (used in the two-gateway scenario).
    pub gw2_wg: String,
}

impl Scenario {
    /// [`Scenario::new`] with Babel converged, both daemons started, the subscriber connected and
    /// traffic flowing; also returns what sub and gw looked like before the daemons started
    /// ([`Scenario::system_state`]), to compare with after they stop.
    pub fn connected(exe: &Path, lease_seconds: u32) -> Result<(Scenario, [String; 2]), String> {
        let mut s = Scenario::new(exe, lease_seconds)?;
        s.bed.wait_converged(Duration::from_secs(20))?;
        let before = [s.system_state(Node::Sub), s.system_state(Node::Gw)];
        s.start(Node::Gw)?;
        s.start(Node::Sub)?;
        s.wait_connected(Duration::from_secs(30), &AtomicBool::new(false))?;
        if !s.ping_within(Duration::from_secs(5)) {
            return Err(format!(
                "connected, but no ping through the tunnel; sub log:\n{}",
                s.tail(Node::Sub)
            ));
        }
        Ok((s, before))
    }

    /// No daemon yet on `bed`, with unique WireGuard interface names for every node.
    fn on(bed: Testbed, exe: &Path) -> Scenario {
        Scenario {
            exe: exe.to_path_buf(),
            daemon: Vec::new(),
            gw_pid: None,
            sub_pid: None,
            gw_wg: bed.unique_ifname("g"),
            sub_wg: bed.unique_ifname("s"),
            gw2_wg: bed.unique_ifname("h"),
            bed,
            gw2_pid: None,
        }
    }

    /// Builds the mesh and writes both UCI files; `exe` is the mnigs binary, `lease_seconds` the
    /// gateway's lease length.
    pub fn new(exe: &Path, lease_seconds: u32) -> Result<Scenario, String> {
        Scenario::with_nat(exe, lease_seconds, "auto")
    }

    /// Like [`Scenario::new`], with the gateway's `option nat` (auto, nft or iptables).
    pub fn with_nat(exe: &Path, lease_seconds: u32, nat: &str) -> Result<Scenario, String> {
        Scenario::with_methods(exe, lease_seconds, nat, &["wireguard"], "")
    }

    /// Like [`Scenario::with_nat`], with the tunnel methods both daemons list (in order) and
    /// `extra` UCI text appended to both files (e.g. an `openvpn` section). In `extra`, `@DIR@`
    /// stands for the testbed's working directory and `@NODE@` for the node's name.
    pub fn with_methods(
        exe: &Path,
        lease_seconds: u32,
        nat: &str,
        methods: &[&str],
        extra: &str,
    ) -> Result<Scenario, String> {
        let s = Scenario::on(Testbed::build()?, exe);
        let list: String = methods
            .iter()
            .map(|m| format!("\tlist method '{m}'\n"))
            .collect();
        let extra_for = |node: Node| {
            let text = extra
                .replace("@DIR@", &s.bed.dir.display().to_string())
                .replace("@NODE@", node.name());
            if text.is_empty() {
                text
            } else {
                format!("\n{text}")
            }
        };
        let gw = format!(
            "config mnigs 'main'\n\toption name 'gw'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface '{wan}'\n\
             \toption lease_seconds '{lease_seconds}'\n\toption max_subscribers '10'\n\toption nat '{nat}'\n{list}\n\
             config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wg}c'\n",
            db = s.bed.dir.join("gw.db").display(),
            wan = s.bed.wan_ifname(),
            wg = s.gw_wg,
        ) + &extra_for(Node::Gw);
        let sub = format!(
            "config mnigs 'main'\n\toption name 'sub'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n{list}\n\
             config discovery 'babel'\n\toption method 'routes'\n\toption protocol 'babel'\n\toption timeout_ms '1000'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n",
            db = s.bed.dir.join("sub.db").display(),
            wg = s.sub_wg,
        ) + &extra_for(Node::Sub);
        std::fs::write(s.config(Node::Gw), gw)
            .map_err(|e| format!("writing gateway config: {e}"))?;
        std::fs::write(s.config(Node::Sub), sub)
            .map_err(|e| format!("writing subscriber config: {e}"))?;
        Ok(s)
    }

    /// Two gateways (`gw1` on [`Node::Gw`], `gw2` on [`Node::Gw2`], each checking its uplink
    /// every second) and a subscriber on [`Testbed::build_two_gateways`]; `sub_options` are
    /// extra lines for the subscriber section (tab-indented `option …` lines).
    pub fn two_gateways(exe: &Path, sub_options: &str) -> Result<Scenario, String> {
        Scenario::two_gateways_with_leaves(exe, sub_options, 0)
    }

    /// Like [`Scenario::two_gateways`], on [`Testbed::build_two_gateways_with_leaves`]; the leaves'
    /// subscriber daemons are started with [`Scenario::start_leaf`].
    pub fn two_gateways_with_leaves(
        exe: &Path,
        sub_options: &str,
        leaves: u8,
    ) -> Result<Scenario, String> {
        let s = Scenario::on(Testbed::build_two_gateways_with_leaves(leaves)?, exe);
        for (node, name, wg, pool) in [
            (Node::Gw, "gw1", s.gw_wg.clone(), "100.127.0.0/24"),
            (Node::Gw2, "gw2", s.gw2_wg.clone(), "100.126.0.0/24"),
        ] {
            // The leaves share fd77::/64: one source to the per-source session cap.
            let text = format!(
                "config mnigs 'main'\n\toption name '{name}'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
                 config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\
                 \toption lease_seconds '60'\n\toption max_subscribers '30'\n\toption max_sessions_per_source '30'\n\toption ipv4_pool '{pool}'\n\
                 \toption ipv6_pool ''\n\tlist method 'wireguard'\n\
                 \tlist uplink_target '{inet}'\n\toption uplink_interval '1'\n\n\
                 config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wg}c'\n",
                db = s.bed.dir.join(format!("{}.db", node.name())).display(),
                inet = Testbed::INET_HOST,
            );
            std::fs::write(s.config(node), text)
                .map_err(|e| format!("writing {name} config: {e}"))?;
        }
        let sub = format!(
            "config mnigs 'main'\n\toption name 'sub'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'wireguard'\n{sub_options}\n\n\
             config discovery 'babel'\n\toption method 'routes'\n\toption protocol 'babel'\n\toption timeout_ms '500'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n",
            db = s.bed.dir.join("sub.db").display(),
            wg = s.sub_wg,
        );
        std::fs::write(s.config(Node::Sub), sub)
            .map_err(|e| format!("writing subscriber config: {e}"))?;
        Ok(s)
    }

    /// Pings the fake Internet host from sub `count` times every `interval` (at most 1 s wait
    /// for the last replies); returns the sequence numbers (1-based) that got no reply.
    pub fn ping_series(&self, count: u32, interval: Duration) -> Result<Vec<u32>, String> {
        let target = Testbed::INET_HOST.to_string();
        let (c, i) = (count.to_string(), format!("{:.3}", interval.as_secs_f64()));
        let argv = ["ping", "-n", "-c", &c, "-i", &i, "-W", "1", &target];
        let limit = interval * count + Duration::from_secs(10);
        // ping exits non-zero only when no reply came at all (no deadline given).
        let out = match self.bed.exec_full(Node::Sub, &argv, None, limit) {
            Ok(out) => out,
            Err(mnigs::sys::cmd::CmdError::Failed { .. }) => return Ok((1..=count).collect()),
            Err(e) => return Err(e.to_string()),
        };
        let answered: std::collections::HashSet<u32> = out
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                l.split("icmp_seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        if !out.contains("packets transmitted") {
            return Err(format!("ping did not finish: {out}"));
        }
        Ok((1..=count).filter(|n| !answered.contains(n)).collect())
    }

    /// The UCI file of leaf `i`'s subscriber.
    pub fn leaf_config(&self, i: u8) -> PathBuf {
        self.bed.dir.join(format!("l{i:02}.uci"))
    }

    /// Writes leaf `i`'s subscriber config (node name `l<i>`) and starts its daemon; returns the
    /// PID without waiting for it.
    pub fn start_leaf(&self, i: u8) -> Result<u32, String> {
        let name = format!("l{i:02}");
        let wg = self.bed.unique_ifname(&name);
        let text = format!(
            "config mnigs 'main'\n\toption name '{name}'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'wireguard'\n\n\
             config discovery 'babel'\n\toption method 'routes'\n\toption protocol 'babel'\n\toption timeout_ms '2000'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n",
            db = self.bed.dir.join(format!("{name}.db")).display(),
        );
        let conf = self.leaf_config(i);
        std::fs::write(&conf, text).map_err(|e| format!("writing {name} config: {e}"))?;
        let exe = self.exe.to_string_lossy().to_string();
        let log = self.bed.dir.join(format!("{name}.log"));
        self.bed.spawn_in(
            &self.bed.leaf_ns(i),
            &[&exe, "daemon", "-c", &conf.to_string_lossy()],
            &log,
        )
    }

    /// `mnigs status --json` of leaf `i`'s subscriber.
    pub fn leaf_status(&self, i: u8) -> Result<Value, String> {
        let exe = self.exe.to_string_lossy().to_string();
        let conf = self.leaf_config(i).to_string_lossy().to_string();
        let out = self
            .bed
            .exec_in(
                &self.bed.leaf_ns(i),
                &[&exe, "status", "--json", "-c", &conf],
                None,
                Duration::from_secs(10),
            )
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&out).map_err(|e| format!("status is not JSON: {e}: {out}"))
    }

    /// The subscriber's current gateway name, if connected.
    pub fn sub_gateway(&self) -> Option<String> {
        let s = self.status(Node::Sub).ok()?;
        s["subscriber"]["gateway"]["name"]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until the subscriber's current gateway is `name`; returns how long that took.
    pub fn wait_gateway(&self, name: &str, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if self.sub_gateway().as_deref() == Some(name) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "subscriber not on {name} after {timeout:?} (on {:?}); its log:\n{}",
                    self.sub_gateway(),
                    self.tail(Node::Sub)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon PID of `node`, while it runs.
    pub fn pid(&self, node: Node) -> Option<u32> {
        match node {
            Node::Gw => self.gw_pid,
            Node::Gw2 => self.gw2_pid,
            _ => self.sub_pid,
        }
    }

    /// The WireGuard interface mnigs manages on `node`.
    pub fn wg_ifname(&self, node: Node) -> &str {
        match node {
            Node::Gw => &self.gw_wg,
            Node::Gw2 => &self.gw2_wg,
            _ => &self.sub_wg,
        }
    }

    /// Cuts the uplink of gateway `node` (its link goes down, which takes its default route),
    /// or brings both back.
    pub fn set_uplink(&self, node: Node, up: bool) -> Result<(), String> {
        let wan = self.bed.wan_ifname();
        let state = if up { "up" } else { "down" };
        self.bed
            .exec(node, &["ip", "link", "set", wan, state])
            .map_err(|e| e.to_string())?;
        if up {
            let via = if node == Node::Gw2 {
                Testbed::INET_UPLINK2
            } else {
                Testbed::INET_UPLINK
            };
            let via = via.to_string();
            self.bed
                .exec(node, &["ip", "route", "replace", "default", "via", &via])
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes the relay node's UCI file ([`Scenario::config`] of [`Node::Relay`]): a second
    /// subscriber configured like sub, logging at `log_level`; returns its path.
    pub fn write_relay_config(&self, log_level: &str) -> Result<PathBuf, String> {
        let wg = self.bed.unique_ifname("r");
        let conf = self.config(Node::Relay);
        let text = format!(
            "config mnigs 'main'\n\toption name 'relay'\n\toption database '{db}'\n\toption log_level '{log_level}'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'wireguard'\n\n\
             config discovery 'babel'\n\toption method 'routes'\n\toption protocol 'babel'\n\toption timeout_ms '1000'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n",
            db = self.bed.dir.join("relay.db").display(),
        );
        std::fs::write(&conf, text).map_err(|e| format!("writing the relay's config: {e}"))?;
        Ok(conf)
    }

    /// The UCI file of `node` (gw or sub).
    pub fn config(&self, node: Node) -> PathBuf {
        self.bed.dir.join(format!("{}.uci", node.name()))
    }

    /// The daemon log of `node`.
    pub fn log(&self, node: Node) -> PathBuf {
        self.bed.dir.join(format!("{}.log", node.name()))
    }

    /// Starts the daemons with `argv` instead of the scenario's binary, e.g. `["qemu-mips-static",
    /// "/path/to/mips/mnigs"]` to run a router build under emulation; the CLI stays the
    /// scenario's binary.
    pub fn run_daemons_as(&mut self, argv: &[&str]) {
        self.daemon = argv.iter().map(|a| a.to_string()).collect();
    }

    /// Starts the daemon of `node` and waits until its RPC answers.
    pub fn start(&mut self, node: Node) -> Result<u32, String> {
        let conf = self.config(node).to_string_lossy().to_string();
        let exe = self.exe.to_string_lossy().to_string();
        let mut argv: Vec<&str> = self.daemon.iter().map(String::as_str).collect();
        if argv.is_empty() {
            argv.push(&exe);
        }
        argv.extend(["daemon", "-c", &conf]);
        let pid = self.bed.spawn(node, &argv, &self.log(node))?;
        match node {
            Node::Gw => self.gw_pid = Some(pid),
            Node::Gw2 => self.gw2_pid = Some(pid),
            _ => self.sub_pid = Some(pid),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(node, &["status", "--json"]).is_ok() {
                return Ok(pid);
            }
            if crate::testbed::process_ended(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} daemon did not come up; its log:\n{}",
            node.name(),
            self.tail(node)
        ))
    }

    /// Sends `signal` to the daemon of `node` and waits for it to end.
    pub fn stop(&mut self, node: Node, signal: i32) -> bool {
        let pid = match node {
            Node::Gw => self.gw_pid.take(),
            Node::Gw2 => self.gw2_pid.take(),
            _ => self.sub_pid.take(),
        };
        pid.is_some_and(|p| self.bed.stop(p, signal, Duration::from_secs(15)))
    }

    /// Runs `mnigs ARGS -c CONFIG` in `node`'s namespace.
    pub fn cli(&self, node: Node, args: &[&str]) -> Result<String, String> {
        let exe = self.exe.to_string_lossy().to_string();
        let conf = self.config(node).to_string_lossy().to_string();
        let mut argv = vec![exe.as_str()];
        argv.extend_from_slice(args);
        argv.extend(["-c", conf.as_str()]);
        self.bed
            .exec_full(node, &argv, None, Duration::from_secs(90))
            .map_err(|e| e.to_string())
    }

    /// `mnigs status --json` of `node`.
    pub fn status(&self, node: Node) -> Result<Value, String> {
        let out = self.cli(node, &["status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("status is not JSON: {e}: {out}"))
    }

    /// Waits until the subscriber reports `connected`.
    pub fn wait_connected(&self, timeout: Duration, stop: &AtomicBool) -> Result<Value, String> {
        self.wait_node_connected(Node::Sub, timeout, stop)
    }

    /// Waits until the subscriber daemon of `node` (whose config is `NODE.uci`) reports
    /// `connected`.
    pub fn wait_node_connected(
        &self,
        node: Node,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Result<Value, String> {
        let start = Instant::now();
        loop {
            match self.status(node) {
                Ok(s) if s["subscriber"]["state"] == "connected" => return Ok(s),
                _ => {}
            }
            if start.elapsed() > timeout || stop.load(Ordering::Relaxed) {
                return Err(format!(
                    "{} not connected after {:?}; its log:\n{}",
                    node.name(),
                    start.elapsed(),
                    self.tail(node)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pings the fake Internet host from sub until one answers (true) or `limit` has passed.
    pub fn ping_within(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.ping_inet("1") {
                return true;
            }
        }
        false
    }

    /// One ping from sub to the fake Internet host.
    pub fn ping_inet(&self, wait_s: &str) -> bool {
        let target = Testbed::INET_HOST.to_string();
        self.bed
            .exec(Node::Sub, &["ping", "-n", "-c", "1", "-W", wait_s, &target])
            .is_ok()
    }

    /// Counts, on the inet host, echo requests by source: installs the counters once.
    pub fn watch_inet(&self) -> Result<(), String> {
        let script = format!(
            "table inet mnwatch {{\n chain input {{ type filter hook input priority 0; policy accept;\n\
             ip saddr {} icmp type echo-request counter\n icmp type echo-request counter\n }}\n}}\n",
            Testbed::GW_UPLINK
        );
        self.load_nft(Node::Inet, &script)
    }

    /// `nft list WHAT…` on `node`.
    fn nft_list(&self, node: Node, what: &[&str]) -> Result<String, String> {
        let argv: Vec<&str> = ["nft", "list"].iter().chain(what).copied().collect();
        self.bed.exec(node, &argv).map_err(|e| e.to_string())
    }

    /// Loads the nftables `script` on `node` (`nft -f -`).
    pub fn load_nft(&self, node: Node, script: &str) -> Result<(), String> {
        self.bed
            .exec_full(
                node,
                &["nft", "-f", "-"],
                Some(script),
                Duration::from_secs(5),
            )
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// (echo requests from the gateway's uplink address, echo requests from anyone) seen on inet.
    pub fn inet_counts(&self) -> Result<(u64, u64), String> {
        let out = self.nft_list(Node::Inet, &["chain", "inet", "mnwatch", "input"])?;
        match nft_packet_counts(&out)[..] {
            [from_gw, all] => Ok((from_gw, all)),
            _ => Err(format!("unexpected counter listing: {out}")),
        }
    }

    /// Counts, on sub, the probe packets mnigs sends, per outgoing interface: ICMP echo requests
    /// of its size (19 bytes of ICMP: `ping`'s are 64). Installs the counters once.
    pub fn watch_probes(&self) -> Result<(), String> {
        let script = "table inet mnprobes {\n set sent { type ifname; flags dynamic; counter; }\n\
                      chain out { type filter hook output priority 0; policy accept;\n\
                      ip length 39 icmp type echo-request add @sent { oifname }\n\
                      ip6 length 19 icmpv6 type echo-request add @sent { oifname }\n }\n}\n";
        self.load_nft(Node::Sub, script)
    }

    /// Probe packets sent by sub so far, per interface ([`Scenario::watch_probes`]).
    pub fn probe_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, String> {
        let out = self.nft_list(Node::Sub, &["set", "inet", "mnprobes", "sent"])?;
        Ok(nft_element_counts(&out))
    }

    /// What mnigs may leave on `node`: links, addresses, routes of all tables, rules, WireGuard
    /// peers and nftables rules, as text to compare before and after.
    pub fn system_state(&self, node: Node) -> String {
        let mut out = network_state(|argv| {
            self.bed
                .exec(node, argv)
                .unwrap_or_else(|e| format!("({e})"))
        });
        // wireguard-go's sockets are shared by all namespaces: show only interfaces living here.
        let wg = self
            .bed
            .exec(node, &["wg", "show", "interfaces"])
            .unwrap_or_default();
        for ifname in wg.split_whitespace() {
            if self
                .bed
                .exec(node, &["ip", "link", "show", "dev", ifname])
                .is_ok()
            {
                out.push_str(
                    &self
                        .bed
                        .exec(node, &["wg", "show", ifname])
                        .unwrap_or_default(),
                );
            }
        }
        out
    }

    /// What mnigs configured on `node`, without what changes by itself (counters, handshakes,
    /// interface indexes, Babel's routes): equal snapshots mean nothing was added or left behind.
    pub fn configured(&self, node: Node) -> String {
        let mut out = String::new();
        let run = |argv: &[&str]| {
            self.bed
                .exec(node, argv)
                .unwrap_or_else(|e| format!("({e})"))
        };
        for line in run(&["ip", "-o", "link", "show"]).lines() {
            // "7: name@x: <FLAGS> ..." → "name"
            let name = line.split(": ").nth(1).unwrap_or(line);
            out.push_str(&format!(
                "link {}\n",
                name.split('@').next().unwrap_or(name)
            ));
        }
        for argv in [
            &["ip", "-o", "addr", "show"][..],
            &["ip", "route", "show", "table", "all"],
            &["ip", "-6", "route", "show", "table", "all"],
            &["ip", "rule", "show"],
        ] {
            // Link-local addresses of a recreated interface are new random ones (stable-privacy);
            // the kernel adds an interface's IPv6 multicast route a moment after the link comes up.
            let ours = |l: &&str| {
                !l.contains("proto babel")
                    && !l.contains("fe80:")
                    && !l.contains("multicast ff00::/8")
            };
            for line in run(argv).lines().filter(ours) {
                let line = line.split("\\    valid_lft").next().unwrap_or(line);
                // Drop the "N:" index of `ip -o addr`.
                let line = line.split_once(": ").map_or(line, |(_, rest)| rest);
                out.push_str(line.trim());
                out.push('\n');
            }
        }
        for line in run(&["nft", "list", "ruleset"]).lines() {
            // Rules without their counts: "counter packets 3 bytes 220 jump X" → "counter jump X".
            let mut words = line.split_whitespace();
            let mut kept = Vec::new();
            while let Some(w) = words.next() {
                if w == "packets" || w == "bytes" {
                    words.next();
                } else {
                    kept.push(w);
                }
            }
            out.push_str(&kept.join(" "));
            out.push('\n');
        }
        let wg = self.wg_ifname(node);
        if let Ok(peers) = self.bed.exec(node, &["wg", "show", wg, "allowed-ips"]) {
            out.push_str(&format!("wg peers {}\n", peers.lines().count()));
            for line in peers.lines() {
                out.push_str(&format!(
                    "wg allowed {}\n",
                    line.split_once('\t').map_or("", |x| x.1)
                ));
            }
        }
        out
    }

    /// Stops the daemon of each node in `before` with SIGTERM, then fails unless every one of
    /// those nodes looks as it did before its daemon started (`before` holds each node's
    /// [`Scenario::system_state`] from then).
    pub fn assert_sigterm_leaves_nothing(&mut self, before: &[(Node, &str)]) {
        for (node, _) in before {
            assert!(
                self.stop(*node, libc::SIGTERM),
                "{} stops on SIGTERM",
                node.name()
            );
        }
        // In any order: the kernel lists equal routes (e.g. two fe80::/64) in either order.
        for (node, was) in before {
            assert_same_config(
                &self.system_state(*node),
                was,
                &format!("SIGTERM leaves nothing on {}", node.name()),
            );
        }
    }

    /// The last lines of `node`'s daemon log.
    pub fn tail(&self, node: Node) -> String {
        let text = std::fs::read_to_string(self.log(node)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Fails with the lines only one of two [`Scenario::configured`] listings has (in any order).
pub fn assert_same_config(now: &str, reference: &str, what: &str) {
    // Order is not configuration (a recreated interface is listed last).
    let sorted = |t: &str| {
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let (a, b) = (sorted(now), sorted(reference));
    if a == b {
        return;
    }
    let extra: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let missing: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    panic!(
        "{what}: differs from the reference\nextra: {extra:#?}\nmissing: {missing:#?}\n\
         now:\n{now}\nthen:\n{reference}"
    );
}

/// Links, addresses, routes of all tables, rules and nftables of a namespace, as text to
/// compare before and after; `run` lists one view (an `ip` or `nft` argv). Babel's routes and
/// link counters move on their own and are left out.
pub fn network_state(run: impl Fn(&[&str]) -> String) -> String {
    let views: [&[&str]; 6] = [
        &["ip", "-o", "link", "show"],
        &["ip", "-o", "addr", "show"],
        &["ip", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["ip", "rule", "show"],
        &["nft", "list", "ruleset"],
    ];
    let mut out = String::new();
    for argv in views {
        for line in run(argv).lines().filter(|l| !l.contains("proto babel")) {
            let line = line.split(" link/").next().unwrap_or(line);
            out.push_str(line.split("\\    valid_lft").next().unwrap_or(line));
            out.push('\n');
        }
    }
    out
}

/// The packet count of each element of an `nft list set` listing of a set with counters:
/// `"wg0" counter packets 12 bytes 468, ...`.
pub fn nft_element_counts(listing: &str) -> std::collections::BTreeMap<String, u64> {
    listing
        .split('"')
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| {
            let [name, rest] = pair else { return None };
            let n = rest.trim_start().strip_prefix("counter packets ")?;
            Some((name.to_string(), n.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The packet counts of an `nft list chain` listing's `counter` rules, in order.
pub fn nft_packet_counts(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_element_counters_are_read() {
        let listing = "table inet mnprobes {\n\tset sent {\n\t\ttype ifname\n\t\tflags dynamic\n\
                       \t\tcounter\n\t\telements = { \"mnigs0\" counter packets 12 bytes 468,\n\
                       \t\t\t     \"mnigs1\" counter packets 3 bytes 117 }\n\t}\n}\n";
        let counts = super::nft_element_counts(listing);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("mnigs0".to_string(), 12), ("mnigs1".to_string(), 3)]
        );
        assert!(super::nft_element_counts("set sent { }").is_empty());
    }
}
