//! Real cjdroute nodes in a [`Lab`]: cjdns meshes for the end-to-end tests and
//! `mnigs-demo --cjdns`.
//!
//! cjdroute is not packaged for Debian; it is found through `MNIGS_CJDROUTE` (CI sets it to a
//! build of cjdns v22.1), else as `cjdroute` on PATH. Each node gets a config from
//! `cjdroute --genconf` (its own keys), changed to what a lab needs: admin on the namespace's
//! loopback with a password, one UDP interface whose `connectTo` reaches the next nodes over
//! veth links (10.66.N.0/30, inside RouteGen's local prefixes, so cjdns' own traffic never enters
//! a tunnel), a tun of our naming, no DNS seeds, and run as root (with privileges dropped cjdroute
//! fails to configure its tun). cjdroute forks a core process; each node runs in a process group
//! of its own, and the whole group is killed when the [`CjdMesh`] is dropped.

use crate::netlab::Lab;
use mnigs::cjdns::admin::{Admin, UdpAdmin};
use mnigs::sys::cmd;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the cjdroute binary.
pub const ENV: &str = "MNIGS_CJDROUTE";

/// cjdroute's admin port inside each node's namespace.
pub const ADMIN_PORT: u16 = 11234;

/// cjdroute's UDP port on the veth links.
const UDP_PORT: u16 = 5000;

/// The cjdroute to use: `$MNIGS_CJDROUTE`, else `cjdroute` on PATH; the error says what is
/// missing and how to get it.
pub fn cjdroute() -> Result<PathBuf, String> {
    let path = match std::env::var_os(ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if cmd::available("cjdroute") => PathBuf::from("cjdroute"),
        _ => {
            return Err(format!(
                "cjdroute is not installed: set {ENV} to a cjdroute binary (cjdns v22, \
                 https://github.com/cjdelisle/cjdns; it needs libsodium, Debian package \
                 libsodium23) or put cjdroute on PATH"
            ));
        }
    };
    // Runs at all (a missing shared library shows here).
    let out = Command::new(&path)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{ENV}={}: cannot run it: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("cjdroute") {
        return Err(format!(
            "{ENV}={}: does not run as cjdroute: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(path)
}

/// The gate of tests that need cjdroute, after [`crate::testbed::e2e_gate`]: the binary, or
/// `None` after a loud SKIPPED line. Under `MNIGS_E2E=1` (CI) a missing cjdroute is a failure.
pub fn gate(test: &str) -> Option<PathBuf> {
    if !crate::testbed::e2e_gate(test) {
        return None;
    }
    match cjdroute() {
        Ok(p) => Some(p),
        Err(e) if std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1") => {
            panic!("{test}: MNIGS_E2E=1 but {e}")
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED {test}: {e} (set MNIGS_E2E=1 to turn this into a failure) !!!!!!!!\n"
            );
            None
        }
    }
}

/// One running cjdroute.
#[derive(Debug, Clone)]
pub struct CjdNode {
    /// Its namespace.
    pub ns: String,
    /// Its key (`….k`).
    pub key: String,
    /// Its fc00::/8 address.
    pub address: Ipv6Addr,
    /// Its admin endpoint, in its namespace.
    pub admin: SocketAddr,
    /// Its admin password.
    pub password: String,
    /// Its tun device.
    pub tun: String,
    /// Its config file (JSON).
    pub conf: PathBuf,
    /// PID of the cjdroute we started (leader of its process group).
    pub pid: u32,
}

/// The cjdroute nodes of a lab; dropping it kills them (core processes included).
pub struct CjdMesh {
    /// The nodes, in the order asked for.
    pub nodes: Vec<CjdNode>,
    children: Vec<Child>,
}

impl CjdMesh {
    /// Stops node `i`'s cjdroute (angel and core): SIGTERM to its group, SIGKILL after `wait`.
    pub fn stop(&mut self, i: usize, wait: Duration) {
        let pid = self.nodes[i].pid;
        if let Some(at) = self.children.iter().position(|c| c.id() == pid) {
            end_group(self.children.swap_remove(at), wait);
        }
    }
}

impl CjdNode {
    /// A client of the node's admin API; call it on a thread inside the node's namespace
    /// ([`Lab::run_in`]): the socket belongs to the namespace it is made in.
    pub fn admin(&self) -> Result<UdpAdmin, String> {
        UdpAdmin::connect(
            self.admin,
            Some(self.password.clone()),
            Duration::from_secs(8),
        )
        .map_err(|e| format!("admin of {}: {e}", self.ns))
    }
}

fn end_group(mut child: Child, wait: Duration) {
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    if matches!(child.try_wait(), Ok(None)) {
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + wait;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The core outlives the angel: the whole group goes.
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for CjdMesh {
    fn drop(&mut self) {
        for c in self.children.drain(..) {
            end_group(c, Duration::from_millis(500));
        }
    }
}

/// A node's config: `--genconf`'s keys and passwords with the lab's settings.
fn node_config(
    base: &Value,
    password: &str,
    tun: &str,
    pipe: &Path,
    connect_to: &[(String, &Value)],
) -> Value {
    let mut c = base.clone();
    c["admin"] = json!({"bind": format!("127.0.0.1:{ADMIN_PORT}"), "password": password});
    let mut peers = serde_json::Map::new();
    for (addr, peer) in connect_to {
        peers.insert(
            addr.clone(),
            json!({
                "password": peer["authorizedPasswords"][0]["password"],
                "publicKey": peer["publicKey"],
            }),
        );
    }
    c["interfaces"] = json!({"UDPInterface": [
        {"bind": format!("0.0.0.0:{UDP_PORT}"), "connectTo": peers}
    ]});
    c["router"]["interface"] = json!({"type": "TUNInterface", "tunDevice": tun});
    c["router"]["dnsSeeds"] = json!([]);
    c["router"]["supernodes"] = json!([]);
    c["security"] = json!([{"setupComplete": 1}, {"noforks": 1}, {"nofiles": 0}, {"setuser": 0}]);
    c["noBackground"] = json!(1);
    c["pipe"] = json!(pipe.display().to_string());
    c["logging"] = json!({"logTo": "stdout"});
    c
}

/// A fresh `cjdroute --genconf`, as plain JSON.
fn genconf(exe: &Path) -> Result<Value, String> {
    let exe = exe.display().to_string();
    let commented = cmd::run(&[exe.as_str(), "--genconf"]).map_err(|e| e.to_string())?;
    let clean =
        cmd::run_input(&[exe.as_str(), "--cleanconf"], &commented).map_err(|e| e.to_string())?;
    serde_json::from_str(&clean).map_err(|e| format!("cjdroute --cleanconf: {e}"))
}

impl Lab {
    /// Starts one cjdroute per name in `names` (a namespace each, created here) and links node
    /// `a` to node `b` for each `(a, b)` in `links` (a veth pair; `a` dials `b`). Returns once
    /// every node answers on its admin API and every link is established.
    pub fn cjdroute_mesh(
        &self,
        exe: &Path,
        names: &[&str],
        links: &[(usize, usize)],
    ) -> Result<CjdMesh, String> {
        self.cjdroute_mesh_dropping(exe, names, links, &[])
    }

    /// [`Lab::cjdroute_mesh`], but the nodes in `unprivileged` run as cjdroute does by default:
    /// privileges dropped to `nobody` (keeping CAP_NET_ADMIN only in some threads).
    pub fn cjdroute_mesh_dropping(
        &self,
        exe: &Path,
        names: &[&str],
        links: &[(usize, usize)],
        unprivileged: &[usize],
    ) -> Result<CjdMesh, String> {
        let e = |r: Result<String, cmd::CmdError>| r.map(drop).map_err(|e| e.to_string());
        let mut nss = Vec::new();
        for n in names {
            nss.push(self.add_mesh_ns(n)?);
        }
        let bases: Vec<Value> = names
            .iter()
            .map(|_| genconf(exe))
            .collect::<Result<_, _>>()?;
        let mut dial: Vec<Vec<(String, &Value)>> = vec![Vec::new(); names.len()];
        for (k, &(a, b)) in links.iter().enumerate() {
            if a >= names.len() || b >= names.len() || a == b {
                return Err(format!("cjdroute_mesh: bad link ({a}, {b})"));
            }
            let (ia, ib) = (format!("c{b}"), format!("c{a}"));
            self.veth(&nss[a], &ia, &nss[b], &ib)
                .map_err(|e| e.to_string())?;
            e(self.exec(
                &nss[a],
                &["ip", "addr", "add", &format!("10.66.{k}.1/30"), "dev", &ia],
            ))?;
            e(self.exec(
                &nss[b],
                &["ip", "addr", "add", &format!("10.66.{k}.2/30"), "dev", &ib],
            ))?;
            dial[a].push((format!("10.66.{k}.2:{UDP_PORT}"), &bases[b]));
        }
        let mut mesh = CjdMesh {
            nodes: Vec::new(),
            children: Vec::new(),
        };
        for (i, name) in names.iter().enumerate() {
            let password = format!(
                "lab-admin-{}",
                &bases[i]["privateKey"].as_str().unwrap_or("x")[..16]
            );
            let tun = format!("cjd{name}");
            let pipe = self.dir.join(format!("cjd-{name}.sock"));
            let mut conf = node_config(&bases[i], &password, &tun, &pipe, &dial[i]);
            if unprivileged.contains(&i) {
                conf["security"] = json!([{"setupComplete": 1}, {"noforks": 1}, {"nofiles": 0},
                    {"setuser": "nobody", "keepNetAdmin": 1}]);
            }
            let conf_path = self.dir.join(format!("cjd-{name}.json"));
            std::fs::write(
                &conf_path,
                serde_json::to_string_pretty(&conf).unwrap_or_default(),
            )
            .map_err(|e| format!("{}: {e}", conf_path.display()))?;
            let log = self.dir.join(format!("cjd-{name}.log"));
            let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let input = std::fs::File::open(&conf_path).map_err(|e| e.to_string())?;
            let child = Command::new("ip")
                .args(["netns", "exec", &nss[i]])
                .arg(exe)
                .arg("--nobg")
                .stdin(input)
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start cjdroute in {}: {e}", nss[i]))?;
            let key = bases[i]["publicKey"]
                .as_str()
                .ok_or("cjdroute --genconf: no publicKey")?
                .to_string();
            let address = mnigs::cjdns::keys::check_key(&key)?;
            mesh.nodes.push(CjdNode {
                ns: nss[i].clone(),
                key,
                address,
                admin: SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)),
                password,
                tun,
                conf: conf_path,
                pid: child.id(),
            });
            mesh.children.push(child);
        }
        for i in 0..names.len() {
            let want = links.iter().filter(|(a, b)| *a == i || *b == i).count();
            self.wait_cjdroute(&mesh, i, want, Duration::from_secs(30))?;
        }
        Ok(mesh)
    }

    /// Waits until node `i` answers on its admin API with `peers` established peers.
    pub fn wait_cjdroute(
        &self,
        mesh: &CjdMesh,
        i: usize,
        peers: usize,
        limit: Duration,
    ) -> Result<(), String> {
        let node = mesh.nodes[i].clone();
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            let n = node.clone();
            let seen = self.run_in(&node.ns, move || {
                let mut a = UdpAdmin::connect(n.admin, Some(n.password), Duration::from_secs(1))
                    .map_err(|e| e.to_string())?;
                let v = a.call(
                    "InterfaceController_peerStats",
                    mnigs::cjdns::bencode::Value::dict([]),
                )?;
                let established = v
                    .get("peers")
                    .and_then(mnigs::cjdns::bencode::Value::as_list)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|p| {
                        p.get("state")
                            .and_then(mnigs::cjdns::bencode::Value::as_str)
                            == Some("ESTABLISHED")
                    })
                    .count();
                Ok::<usize, String>(established)
            })?;
            match seen {
                Ok(n) if n >= peers => return Ok(()),
                Ok(n) => last = format!("{n} of {peers} peers established"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join(format!(
            "cjd-{}.log",
            node.ns.rsplit('-').next().unwrap_or("")
        )))
        .unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(format!(
            "cjdroute in {} not ready within {limit:?}: {last}\n{tail}",
            node.ns
        ))
    }
}

/// The fake Internet host behind the gateways of a cjdns lab.
pub const INET_HOST: &str = "203.0.113.7";

impl Lab {
    /// An `inet` namespace holding [`INET_HOST`], linked to each gateway namespace as its `wan0`
    /// (198.51.N.1/24, default route to .2); returns its name.
    pub fn cjd_uplinks(&self, gateways: &[&str]) -> Result<String, String> {
        let e = |r: Result<String, cmd::CmdError>| r.map(drop).map_err(|e| e.to_string());
        let inet = self.add_ns("inet")?;
        e(self.exec(
            &inet,
            &["ip", "addr", "add", &format!("{INET_HOST}/32"), "dev", "lo"],
        ))?;
        for (i, gw) in gateways.iter().enumerate() {
            let up = format!("up{i}");
            self.veth(gw, "wan0", &inet, &up)
                .map_err(|e| e.to_string())?;
            let (g, h) = (format!("198.51.{i}.1/24"), format!("198.51.{i}.2/24"));
            e(self.exec(gw, &["ip", "addr", "add", &g, "dev", "wan0"]))?;
            e(self.exec(&inet, &["ip", "addr", "add", &h, "dev", &up]))?;
            let via = format!("198.51.{i}.2");
            e(self.exec(gw, &["ip", "route", "add", "default", "via", &via]))?;
        }
        Ok(inet)
    }

    /// A gateway's mnigs config on `node`: offers `methods`, pools 100.`pool`.0.0/24 and
    /// fd7e:`pool`::/64, leases of `lease` seconds, NAT out of `wan0`, cjdns through the
    /// node's cjdroute.conf.
    pub fn cjd_gateway_config(
        &self,
        node: &CjdNode,
        name: &str,
        pool: u8,
        lease: u32,
        methods: &[&str],
    ) -> String {
        let wg = self.unique_ifname(&format!("g{pool}"));
        format!(
            "config mnigs 'main'\n\toption name '{name}'\n\tlist listen '::'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\toption nat 'nft'\n\
             \toption lease_seconds '{lease}'\n\toption ipv4_pool '100.{pool}.0.0/24'\n\toption ipv6_pool 'fd7e:{pool}::/64'\n{methods}\n\
             config wireguard 'wireguard'\n\toption interface '{wg}'\n\toption client_interface '{wg}c'\n\n{cjdns}",
            db = self.dir.join(format!("{name}.db")).display(),
            methods = method_lines(methods),
            cjdns = cjdns_section(node),
        )
    }

    /// A subscriber's mnigs config on `node`: accepts `methods`, finds gateways by walking the
    /// cjdns mesh through the node's cjdroute.
    pub fn cjd_subscriber_config(&self, node: &CjdNode, name: &str, methods: &[&str]) -> String {
        let wg = self.unique_ifname("s");
        format!(
            "config mnigs 'main'\n\toption name '{name}'\n\tlist listen '::1'\n\toption database '{db}'\n\toption log_level 'debug'\n\n\
             config subscriber 'subscriber'\n\toption enabled '1'\n{methods}\toption probe_interval_ms '200'\n\n\
             config discovery 'mesh'\n\toption method 'cjdns'\n\toption cjdroute_conf '{conf}'\n\toption timeout_ms '6000'\n\n\
             config wireguard 'wireguard'\n\toption interface '{wg}g'\n\toption client_interface '{wg}'\n\n{cjdns}",
            db = self.dir.join(format!("{name}.db")).display(),
            methods = method_lines(methods),
            conf = node.conf.display(),
            cjdns = cjdns_section(node),
        )
    }
}

fn method_lines(methods: &[&str]) -> String {
    methods
        .iter()
        .map(|m| format!("\tlist method '{m}'\n"))
        .collect()
}

/// The `cjdns` section of a node's mnigs config: admin and password from its cjdroute.conf.
fn cjdns_section(node: &CjdNode) -> String {
    format!(
        "config cjdns 'cjdns'\n\toption cjdroute_conf '{}'\n\toption interface '{}'\n",
        node.conf.display(),
        node.tun
    )
}
