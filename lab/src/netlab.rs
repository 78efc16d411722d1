//! Free-form namespace labs for benchmarks and end-to-end tests whose shape the fixed
//! [`crate::testbed::Testbed`] (sub — relay — gw — inet) does not fit: any number of namespaces,
//! veth links between them, programs started inside them. Everything is removed on drop, also
//! when a test fails half-way.
//!
//! Namespace names are `m4l<pid><label>-<name>`, so labs of concurrent test processes never meet.
//! Interfaces are created directly inside their namespace, so their names cannot clash with
//! the host's.

use mnigs::sys::cmd::{self, CmdError};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A set of namespaces owned by this process.
pub struct Lab {
    tag: String,
    /// A scratch directory for configs, logs and databases, removed on drop.
    pub dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
    /// Names handed out by [`Lab::unique_ifname`]: only their wireguard-go sockets are ours to
    /// remove (another lab of this process may be using the same prefix at the same time).
    ifnames: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lab {
    /// An empty lab; `label` (a few letters) tells labs of one process apart. Needs root.
    pub fn new(label: &str) -> Result<Lab, String> {
        crate::testbed::require_root()?;
        if !cmd::available("ip") {
            return Err("netlab: `ip` (iproute2) is not installed".into());
        }
        if label.is_empty() || label.len() > 6 || !label.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!("netlab: bad label {label:?}"));
        }
        let tag = format!("m4l{}{label}", std::process::id());
        let dir = std::env::temp_dir().join(format!("mnigs-lab-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("netlab: {}: {e}", dir.display()))?;
        Ok(Lab {
            tag,
            dir,
            namespaces: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            ifnames: Mutex::new(Vec::new()),
        })
    }

    /// Creates namespace `name` (a–z, 0–9, at most 8 characters) with `lo` up; returns its full name.
    pub fn add_ns(&self, name: &str) -> Result<String, String> {
        if name.is_empty()
            || name.len() > 8
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!("netlab: bad namespace name {name:?}"));
        }
        let ns = format!("{}-{name}", self.tag);
        cmd::run(&["ip", "netns", "add", &ns]).map_err(|e| e.to_string())?;
        lock(&self.namespaces).push(ns.clone());
        self.exec(&ns, &["ip", "link", "set", "lo", "up"])
            .map_err(|e| e.to_string())?;
        Ok(ns)
    }

    /// Creates namespace `name` like [`Lab::add_ns`], with IPv6 duplicate address detection off
    /// so link-local addresses are usable at once (babeld needs them).
    pub fn add_mesh_ns(&self, name: &str) -> Result<String, String> {
        let ns = self.add_ns(name)?;
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            self.exec(&ns, &["sysctl", "-qw", key])
                .map_err(|e| e.to_string())?;
        }
        Ok(ns)
    }

    /// Starts babeld in `ns` on `interfaces`, announcing host routes of the addresses on `lo`
    /// inside `v4_net` (an IPv4 /24, e.g. `10.78.0.0/24`); returns its PID.
    pub fn babeld(&self, ns: &str, interfaces: &[&str], v4_net: &str) -> Result<u32, String> {
        let tag = ns.rsplit('-').next().unwrap_or(ns);
        let file = |ext: &str| self.dir.join(format!("babel-{tag}.{ext}"));
        let mut conf = format!(
            "random-id true
local-path {}
default type wired hello-interval 1 v4-via-v6 true
",
            file("ctl").display()
        );
        for i in interfaces {
            conf.push_str(&format!(
                "interface {i}
"
            ));
        }
        conf.push_str(&format!(
            "redistribute local ip {v4_net} ge 32 allow
redistribute local deny
redistribute deny
"
        ));
        let conf_path = file("conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let [c, p, st] = [conf_path, file("pid"), file("state")].map(|p| p.display().to_string());
        self.spawn(ns, &["babeld", "-c", &c, "-I", &p, "-S", &st], &file("log"))
    }

    /// Links `a_if` in namespace `a` to `b_if` in namespace `b` with a veth pair, both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), CmdError> {
        cmd::run(&[
            "ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        cmd::run(&["ip", "-n", a, "link", "set", a_if, "up"])?;
        cmd::run(&["ip", "-n", b, "link", "set", b_if, "up"]).map(drop)
    }

    /// Runs `argv` inside namespace `ns`.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Result<String, CmdError> {
        self.exec_full(ns, argv, None, cmd::DEFAULT_TIMEOUT)
    }

    /// Runs `argv` inside `ns` with `input` on stdin and a timeout of our choice.
    pub fn exec_full(
        &self,
        ns: &str,
        argv: &[&str],
        input: Option<&str>,
        timeout: Duration,
    ) -> Result<String, CmdError> {
        crate::testbed::exec_in_ns(ns, argv, input, timeout)
    }

    /// Starts `argv` in the background inside `ns`, output appended to `log`; returns its PID.
    /// (`ip netns exec` execs the program, so the PID is the program's own.)
    pub fn spawn(&self, ns: &str, argv: &[&str], log: &Path) -> Result<u32, String> {
        let child =
            crate::testbed::spawn_in_ns(ns, argv, log).map_err(|e| format!("netlab: {e}"))?;
        let pid = child.id();
        lock(&self.children).push(child);
        Ok(pid)
    }

    /// Runs `f` on a new thread that has entered namespace `ns` (a network namespace is per
    /// thread), so library code (a scan, a probe) can be exercised inside the lab without a
    /// helper process.
    pub fn run_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace file we hold open; it changes only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "netlab: thread in the namespace panicked".to_string())?
    }

    /// An interface name unique among labs, for programs whose state is not per namespace
    /// (wireguard-go keeps `/var/run/wireguard/<ifname>.sock` in the host's file system).
    /// `role`: 1–4 letters.
    pub fn unique_ifname(&self, role: &str) -> String {
        let mut name = format!("w{}{role}", std::process::id());
        name.truncate(15);
        lock(&self.ifnames).push(name.clone());
        name
    }

    /// Stops a process this lab started: SIGTERM, then SIGKILL after `wait`. False if `pid` is
    /// not ours.
    pub fn stop(&self, pid: u32, wait: Duration) -> bool {
        let child = {
            let mut children = lock(&self.children);
            let Some(i) = children.iter().position(|c| c.id() == pid) else {
                return false;
            };
            children.swap_remove(i)
        };
        end(child, wait);
        true
    }
}

fn end(mut child: Child, wait: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + wait;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in lock(&self.children).drain(..) {
            end(child, Duration::from_secs(2));
        }
        for ns in lock(&self.namespaces).drain(..).rev() {
            if let Err(e) = cmd::run(&["ip", "netns", "del", &ns]) {
                mnigs::log::warn(&format!("netlab: removing {ns}: {e}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // wireguard-go sockets of interfaces named by `unique_ifname` (or that name with a suffix,
        // as configs derive a second interface from it), left if a daemon was killed.
        let ours: Vec<String> = lock(&self.ifnames).drain(..).collect();
        if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".sock") && ours.iter().any(|o| name.starts_with(o.as_str())) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// One Yggdrasil node of a lab.
#[derive(Debug, Clone)]
pub struct YggNode {
    /// Its namespace.
    pub ns: String,
    /// Its admin endpoint (`unix:///…`).
    pub admin: String,
    /// Its key, as `getSelf` reports it.
    pub key: String,
    /// Its 200::/7 address, as `getSelf` reports it.
    pub address: std::net::Ipv6Addr,
    /// PID of its yggdrasil.
    pub pid: u32,
}

impl Lab {
    /// Builds a line of Yggdrasil nodes, one per namespace in `names` (each created here), linked
    /// by veth pairs with IPv4 /30s (no link-local zones needed); node i dials node i+1. Node i
    /// gets `nodeinfo[i]` (if any) as its Yggdrasil NodeInfo. Returns once every node has its
    /// peers up.
    pub fn yggdrasil_line(
        &self,
        names: &[&str],
        nodeinfo: &[Option<serde_json::Value>],
    ) -> Result<Vec<YggNode>, String> {
        if !cmd::available("yggdrasil") {
            return Err("netlab: `yggdrasil` is not installed (Debian package yggdrasil)".into());
        }
        let e = |r: Result<String, CmdError>| r.map(drop).map_err(|e| e.to_string());
        let nss: Vec<String> = names
            .iter()
            .map(|n| self.add_ns(n))
            .collect::<Result<_, _>>()?;
        for i in 0..nss.len().saturating_sub(1) {
            let (right, left) = (format!("y{i}r"), format!("y{}l", i + 1));
            self.veth(&nss[i], &right, &nss[i + 1], &left)
                .map_err(|e| e.to_string())?;
            e(self.exec(
                &nss[i],
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.251.{i}.1/30"),
                    "dev",
                    &right,
                ],
            ))?;
            e(self.exec(
                &nss[i + 1],
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.251.{i}.2/30"),
                    "dev",
                    &left,
                ],
            ))?;
        }
        let mut nodes = Vec::new();
        // The far end first: a refused first dial is retried only after a back-off.
        for i in (0..nss.len()).rev() {
            let mut conf: serde_json::Value = serde_json::from_str(
                &cmd::run(&["yggdrasil", "-genconf", "-json"]).map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("yggdrasil -genconf: {e}"))?;
            let sock = self.dir.join(format!("ygg-{}.sock", names[i]));
            let admin = format!("unix://{}", sock.display());
            conf["AdminListen"] = admin.clone().into();
            conf["MulticastInterfaces"] = serde_json::json!([]);
            conf["IfName"] = "ygg0".into();
            conf["Listen"] = serde_json::json!(["tcp://0.0.0.0:7000"]);
            conf["Peers"] = if i + 1 < nss.len() {
                serde_json::json!([format!("tcp://10.251.{i}.2:7000")])
            } else {
                serde_json::json!([])
            };
            if let Some(info) = nodeinfo.get(i).cloned().flatten() {
                conf["NodeInfo"] = info;
            }
            let path = self.dir.join(format!("ygg-{}.conf", names[i]));
            std::fs::write(&path, conf.to_string()).map_err(|e| e.to_string())?;
            let path_s = path.display().to_string();
            let log = self.dir.join(format!("ygg-{}.log", names[i]));
            let pid = self.spawn(&nss[i], &["yggdrasil", "-useconffile", &path_s], &log)?;
            // Its listener is up once its admin socket answers; only then may the next node
            // dial it (a refused first dial is retried only after a back-off).
            let mut probe = mnigs::discovery::yggdrasil::SocketAdmin::new(
                mnigs::discovery::yggdrasil::Endpoint::parse(&admin)?,
                Duration::from_secs(1),
            );
            let up = Instant::now();
            while mnigs::discovery::yggdrasil::Admin::call(
                &mut probe,
                "getSelf",
                serde_json::json!({}),
            )
            .is_err()
            {
                if up.elapsed() > Duration::from_secs(10) {
                    return Err(format!("yggdrasil in {} has no admin socket", nss[i]));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            nodes.push(YggNode {
                ns: nss[i].clone(),
                admin,
                key: String::new(),
                address: std::net::Ipv6Addr::UNSPECIFIED,
                pid,
            });
        }
        nodes.reverse();
        use mnigs::discovery::yggdrasil::{Admin, Endpoint, SocketAdmin};
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, n) in nodes.iter_mut().enumerate() {
            let want = usize::from(i > 0) + usize::from(i + 1 < names.len());
            let mut admin = SocketAdmin::new(Endpoint::parse(&n.admin)?, Duration::from_secs(2));
            loop {
                let me = admin.call("getSelf", serde_json::json!({}));
                let peers = admin.call("getPeers", serde_json::json!({}));
                if let (Ok(me), Ok(peers)) = (me, peers) {
                    let up = peers["peers"].as_array().map_or(0, Vec::len);
                    if up >= want {
                        n.key = me["key"].as_str().unwrap_or_default().to_string();
                        n.address = me["address"]
                            .as_str()
                            .and_then(|a| a.parse().ok())
                            .ok_or("getSelf: no address")?;
                        break;
                    }
                }
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(self.dir.join(format!("ygg-{}.log", names[i])))
                            .unwrap_or_default();
                    return Err(format!(
                        "yggdrasil in {} did not come up; its log:\n{log}",
                        n.ns
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(nodes)
    }
}
