//! Free-form namespace labs for benchmarks and end-to-end tests whose shape the fixed
//! [`crate::testbed::Testbed`] (sub — relay — gw — inet) does not fit: any number of namespaces,
//! veth links between them, programs started inside them. Everything is removed on drop, also
//! when a test fails half-way.
//!
//! Namespace names are `m4l<pid><label>-<name>`, so labs of concurrent test processes never meet.
//! Interfaces are created directly inside their namespace, so their names cannot clash with
//! the host's.

use crate::sys::cmd::{self, CmdError};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A set of namespaces owned by this process.
pub struct Lab {
    tag: String,
    /// A scratch directory for configs, logs and databases, removed on drop.
    pub dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
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
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        cmd::run_full(&full, input, timeout)
    }

    /// Starts `argv` in the background inside `ns`, output appended to `log`; returns its PID.
    /// (`ip netns exec` execs the program, so the PID is the program's own.)
    pub fn spawn(&self, ns: &str, argv: &[&str], log: &Path) -> Result<u32, String> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("netlab: log {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        crate::log::debug(&format!("spawn in {ns}: {}", argv.join(" ")));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("netlab: cannot start {argv:?} in {ns}: {e}"))?;
        let pid = child.id();
        lock(&self.children).push(child);
        Ok(pid)
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
                crate::log::warn(&format!("netlab: removing {ns}: {e}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
