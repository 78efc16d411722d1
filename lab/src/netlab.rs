//! The lab: network namespaces owned by this process, programs started inside them, and their
//! removal. [`Lab`] is every lab's core: the free-form labs of benchmarks and end-to-end tests
//! (any number of namespaces, veth links, programs; [`Lab::new`]) and the fixed mesh
//! [`crate::testbed::Testbed`] (sub — relay — gw — inet), which is built on one. Everything a
//! lab created is removed on drop, also when a test fails half-way: the processes it started
//! and every process still living in its namespaces (SIGTERM, then SIGKILL), the namespaces,
//! wireguard-go sockets named after it and its directory.
//!
//! Free-form namespace names are `m4l<pid><label>-<name>`, so labs of concurrent test processes
//! never meet. Interfaces are created directly inside their namespace, so their names cannot
//! clash with the host's.

use mnigs::sys::cmd::{self, CmdError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where wireguard-go puts its control sockets, shared by all namespaces.
const WG_SOCKET_DIR: &str = "/var/run/wireguard";
/// How long processes get between SIGTERM and SIGKILL on teardown.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A set of namespaces owned by this process.
pub struct Lab {
    /// Unique to this lab; part of the names it creates.
    pub tag: String,
    /// A scratch directory for configs, logs and databases, removed on drop.
    pub dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
    /// Prefixes of interface names that are ours ([`Lab::unique_ifname`], a testbed's prefix):
    /// only their wireguard-go sockets are ours to remove (another lab of this process may be
    /// using a name of its own at the same time).
    ifnames: Mutex<Vec<String>>,
}

/// Locks `mutex` even if a panicking thread poisoned it: teardown must still run.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        Lab::with_tag(tag, dir)
    }

    /// An empty lab named `tag` whose directory `dir` is created here (the caller checked the
    /// prerequisites and chose names no other lab uses).
    pub(crate) fn with_tag(tag: String, dir: PathBuf) -> Result<Lab, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("lab: {}: {e}", dir.display()))?;
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
        self.create_ns(&ns)?;
        self.exec(&ns, &["ip", "link", "set", "lo", "up"])
            .map_err(|e| e.to_string())?;
        Ok(ns)
    }

    /// Creates the namespace named `ns` exactly so; it is this lab's from now on.
    pub(crate) fn create_ns(&self, ns: &str) -> Result<(), String> {
        cmd::run(&["ip", "netns", "add", ns]).map_err(|e| e.to_string())?;
        lock(&self.namespaces).push(ns.to_string());
        Ok(())
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
        exec_in_ns(ns, argv, input, timeout)
    }

    /// Starts `argv` in the background inside `ns`, output appended to `log`; returns its PID.
    /// (`ip netns exec` execs the program, so the PID is the program's own.) The process stays
    /// a child of this process until [`Lab::stop`] or drop reaps it.
    pub fn spawn(&self, ns: &str, argv: &[&str], log: &Path) -> Result<u32, String> {
        let child = spawn_in_ns(ns, argv, log).map_err(|e| format!("lab {}: {e}", self.tag))?;
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
        self.own_ifnames(&name);
        name
    }

    /// Interface names starting with `prefix` are this lab's: drop removes their wireguard-go
    /// sockets.
    pub fn own_ifnames(&self, prefix: &str) {
        lock(&self.ifnames).push(prefix.to_string());
    }

    /// Stops a process this lab started: SIGTERM, then SIGKILL after `wait`. False if `pid` is
    /// not ours.
    pub fn stop(&self, pid: u32, wait: Duration) -> bool {
        if !self.children().contains(&pid) {
            return false;
        }
        if !self.signal(pid, libc::SIGTERM, wait) {
            self.signal(pid, libc::SIGKILL, TERM_GRACE);
        }
        true
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to `pid` and waits up to `wait` until it ended;
    /// true if it did.
    ///
    /// `pid` must be a child started by [`Lab::spawn`] (it is reaped) or a process living in
    /// one of this lab's namespaces (e.g. a daemon that forked itself); any other PID is left
    /// alone and false returned.
    pub fn signal(&self, pid: u32, signal: i32, wait: Duration) -> bool {
        let Ok(signal) = Signal::try_from(signal) else {
            return false;
        };
        let child = {
            let mut children = lock(&self.children);
            children
                .iter()
                .position(|c| c.id() == pid)
                .map(|i| children.swap_remove(i))
        };
        let deadline = Instant::now() + wait;
        if let Some(mut child) = child {
            // Not holding the lock while waiting keeps `spawn` usable from other threads.
            if !child_ended(&mut child) {
                let _ = kill(to_pid(pid), signal);
            }
            loop {
                if child_ended(&mut child) {
                    return true;
                }
                if Instant::now() >= deadline {
                    lock(&self.children).push(child);
                    return false;
                }
                sleep(Duration::from_millis(10));
            }
        }
        if !self.netns_pids().contains(&pid) {
            return false;
        }
        let _ = kill(to_pid(pid), signal);
        loop {
            if crate::testbed::process_ended(pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// How the child `pid` (started by [`Lab::spawn`]) ended, if it did; `None` also when it is
    /// not (or no longer) ours.
    pub fn exit_status(&self, pid: u32) -> Option<ExitStatus> {
        let mut children = lock(&self.children);
        let child = children.iter_mut().find(|c| c.id() == pid)?;
        child.try_wait().ok().flatten()
    }

    /// PIDs of the processes started by [`Lab::spawn`] that have not been reaped yet.
    pub fn children(&self) -> Vec<u32> {
        lock(&self.children).iter().map(Child::id).collect()
    }

    /// PIDs of all processes currently living in this lab's namespaces.
    pub fn netns_pids(&self) -> Vec<u32> {
        lock(&self.namespaces)
            .iter()
            .flat_map(|ns| pids_in(ns))
            .collect()
    }

    fn teardown(&mut self) {
        let mut children = std::mem::take(&mut *lock(&self.children));
        children.retain_mut(|c| !child_ended(c));
        for child in &children {
            let _ = kill(to_pid(child.id()), Signal::SIGTERM);
        }
        for pid in self.netns_pids() {
            let _ = kill(to_pid(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        loop {
            children.retain_mut(|c| !child_ended(c));
            // Listed afresh every time, so no PID that already ended gets signalled again.
            let others = self.netns_pids();
            if children.is_empty() && others.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for child in &children {
                    let _ = kill(to_pid(child.id()), Signal::SIGKILL);
                }
                for pid in others {
                    let _ = kill(to_pid(pid), Signal::SIGKILL);
                }
                let reap_deadline = Instant::now() + Duration::from_secs(1);
                while !children.is_empty() && Instant::now() < reap_deadline {
                    children.retain_mut(|c| !child_ended(c));
                    sleep(Duration::from_millis(10));
                }
                break;
            }
            sleep(Duration::from_millis(20));
        }
        for ns in lock(&self.namespaces).drain(..).rev() {
            if let Err(e) = cmd::run(&["ip", "netns", "delete", &ns]) {
                mnigs::log::warn(&format!("lab: cannot delete namespace {ns}: {e}"));
            }
        }
        // wireguard-go sockets of our interfaces (or those names with a suffix, as configs
        // derive a second interface from one), left if a daemon was killed.
        for prefix in lock(&self.ifnames).drain(..) {
            remove_wg_sockets(&prefix);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            mnigs::log::warn(&format!("lab: cannot remove {}: {e}", self.dir.display()));
        }
    }
}

impl Drop for Lab {
    /// Stops every process we spawned and every process in our namespaces (SIGTERM, then
    /// SIGKILL after about 2 s), deletes the namespaces, stale wireguard-go sockets of our
    /// interfaces and the directory.
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `argv` inside namespace `ns` (`ip netns exec NS argv…`) with `input` on stdin.
pub fn exec_in_ns(
    ns: &str,
    argv: &[&str],
    input: Option<&str>,
    timeout: Duration,
) -> Result<String, CmdError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(argv);
    cmd::run_full(&full, input, timeout)
}

/// Starts `argv` in the background inside namespace `ns`, stdout and stderr appended to `log`.
/// `ip netns exec` replaces itself with the program, so the child's PID is the program's own;
/// the caller keeps the child to reap it.
pub fn spawn_in_ns(ns: &str, argv: &[&str], log: &Path) -> Result<Child, String> {
    if argv.is_empty() {
        return Err("spawn needs a program".to_string());
    }
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open log {}: {e}", log.display()))
    };
    let (out, err) = (open_log()?, open_log()?);
    mnigs::log::debug(&format!("spawn in {ns}: {}", argv.join(" ")));
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start `{}` in {ns}: {e}", argv.join(" ")))
}

/// PIDs of the processes living in namespace `ns` (but this one).
pub(crate) fn pids_in(ns: &str) -> Vec<u32> {
    cmd::run(&["ip", "netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| *p != std::process::id())
        .collect()
}

pub(crate) fn to_pid(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

/// Whether our child ended (and is now reaped).
fn child_ended(child: &mut Child) -> bool {
    // An error means it cannot be waited for any more, i.e. it is gone.
    !matches!(child.try_wait(), Ok(None))
}

/// Removes wireguard-go control sockets whose interface name starts with `prefix`.
pub(crate) fn remove_wg_sockets(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(WG_SOCKET_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".sock") {
            let _ = std::fs::remove_file(entry.path());
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
