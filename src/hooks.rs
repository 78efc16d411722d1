//! Hooks: executables the owner configures (`option on_connect '/etc/mnigs/hooks/up'` …) that
//! the subscriber runs when something happens to its Internet access.
//!
//! A hook is run by path with no arguments — never through a shell — on a short-lived thread of
//! its own, so a slow or hanging hook never holds up the state machine. It is killed (with its
//! whole process group) after `option hook_timeout` seconds. A hook that fails, hangs or is
//! missing is logged; nothing else happens.
//!
//! # Environment
//! Besides the daemon's own environment a hook gets (unset when not known):
//!
//! | variable | meaning |
//! |---|---|
//! | `MNIGS_EVENT` | `connect`, `disconnect`, `register`, `release` or `failover` |
//! | `MNIGS_NODE` | this node's name |
//! | `MNIGS_REASON` | why (for disconnect, release and failover) |
//! | `MNIGS_GATEWAY_NAME` | the gateway's announced name |
//! | `MNIGS_GATEWAY_ADDRESS` | its mesh address |
//! | `MNIGS_GATEWAY_PORT` | its RPC port |
//! | `MNIGS_SID` | the session id it issued |
//! | `MNIGS_METHOD` | tunnel method (`wireguard` …) |
//! | `MNIGS_INTERFACE` | tunnel interface (connect, disconnect) |
//! | `MNIGS_IPV4`, `MNIGS_CIDR4`, `MNIGS_IPV4_GATEWAY` | our tunnel IPv4 address, its prefix length, the gateway's |
//! | `MNIGS_IPV6`, `MNIGS_CIDR6`, `MNIGS_IPV6_GATEWAY` | the same for IPv6 |
//! | `MNIGS_PREVIOUS_GATEWAY_NAME`, `MNIGS_PREVIOUS_GATEWAY_ADDRESS` | failover: the gateway we lost |
//!
//! Order within one connection: `register` (the gateway granted a lease) → `connect` (the tunnel
//! is up) … `disconnect` (the tunnel is down) → `release` (the lease was given back; not sent
//! when the gateway vanished). `failover` follows `disconnect` when the gateway was lost rather
//! than left, before looking for another one. A session resumed after a daemon restart gets
//! `connect` only (it was registered before). Hooks run concurrently with each other; when the
//! daemon stops it waits for running hooks (at most their timeout) before exiting, so that
//! `disconnect` and `release` hooks of the final teardown finish.

use crate::log;
use crate::protocol::Grant;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many hooks are running, for [`wait_idle`].
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

fn running_add(delta: isize) {
    let (count, changed) = &RUNNING;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    *n = n.saturating_add_signed(delta);
    changed.notify_all();
}

/// Waits until no hook is running or `limit` has passed; returns whether all had ended.
pub fn wait_idle(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let (count, changed) = &RUNNING;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = changed
            .wait_timeout(n, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// Something that happens to the subscriber's Internet access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The tunnel to a gateway is up and routes point into it.
    Connect,
    /// The tunnel is down.
    Disconnect,
    /// A gateway granted us a lease.
    Register,
    /// We gave the lease back.
    Release,
    /// The gateway was lost (refused renewal, unreachable); another one is sought.
    Failover,
}

impl Event {
    /// Every event, in the order of the config options.
    pub const ALL: [Event; 5] = [
        Event::Connect,
        Event::Disconnect,
        Event::Register,
        Event::Release,
        Event::Failover,
    ];

    /// The value of `MNIGS_EVENT`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Connect => "connect",
            Event::Disconnect => "disconnect",
            Event::Register => "register",
            Event::Release => "release",
            Event::Failover => "failover",
        }
    }

    /// The subscriber option naming its hook (`on_connect` …).
    pub fn option(self) -> &'static str {
        match self {
            Event::Connect => "on_connect",
            Event::Disconnect => "on_disconnect",
            Event::Register => "on_register",
            Event::Release => "on_release",
            Event::Failover => "on_failover",
        }
    }
}

/// The configured hook of each event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookPaths {
    /// `option on_connect`.
    pub on_connect: Option<PathBuf>,
    /// `option on_disconnect`.
    pub on_disconnect: Option<PathBuf>,
    /// `option on_register`.
    pub on_register: Option<PathBuf>,
    /// `option on_release`.
    pub on_release: Option<PathBuf>,
    /// `option on_failover`.
    pub on_failover: Option<PathBuf>,
}

impl HookPaths {
    /// The field that holds `event`'s hook.
    pub fn slot(&mut self, event: Event) -> &mut Option<PathBuf> {
        match event {
            Event::Connect => &mut self.on_connect,
            Event::Disconnect => &mut self.on_disconnect,
            Event::Register => &mut self.on_register,
            Event::Release => &mut self.on_release,
            Event::Failover => &mut self.on_failover,
        }
    }

    /// `event`'s hook, if one is configured.
    pub fn get(&self, event: Event) -> Option<&Path> {
        match event {
            Event::Connect => self.on_connect.as_deref(),
            Event::Disconnect => self.on_disconnect.as_deref(),
            Event::Register => self.on_register.as_deref(),
            Event::Release => self.on_release.as_deref(),
            Event::Failover => self.on_failover.as_deref(),
        }
    }
}

/// The `MNIGS_*` variables of one event, built up from what the caller knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    vars: Vec<(String, String)>,
}

impl HookEnv {
    /// Nothing known yet.
    pub fn new() -> HookEnv {
        HookEnv::default()
    }

    /// Sets `MNIGS_<key>` (replacing an earlier value). What a gateway sent reaches here only
    /// after `trust` checked it; as a second line of defence a control character
    /// (newline, escape) in any value is written escaped, so no value spans lines.
    pub fn set(mut self, key: &str, value: impl ToString) -> HookEnv {
        let key = format!("MNIGS_{key}");
        self.vars.retain(|(k, _)| *k != key);
        let value = value.to_string();
        self.vars.push((key, log::escape(&value).into_owned()));
        self
    }

    /// The gateway's name and RPC address.
    pub fn gateway(self, name: &str, at: SocketAddr) -> HookEnv {
        self.set("GATEWAY_NAME", name)
            .set("GATEWAY_ADDRESS", at.ip())
            .set("GATEWAY_PORT", at.port())
    }

    /// What the gateway granted: session, method and tunnel addresses.
    pub fn grant(self, g: &Grant) -> HookEnv {
        let mut e = self
            .set("SID", &g.sid)
            .set("METHOD", &g.method)
            .set("IPV4", &g.ipv4)
            .set("CIDR4", g.cidr4)
            .set("IPV4_GATEWAY", &g.ipv4gateway);
        if let Some(v) = &g.ipv6 {
            e = e.set("IPV6", v);
        }
        if let Some(v) = g.cidr6 {
            e = e.set("CIDR6", v);
        }
        if let Some(v) = &g.ipv6gateway {
            e = e.set("IPV6_GATEWAY", v);
        }
        e
    }

    /// The tunnel interface.
    pub fn interface(self, name: &str) -> HookEnv {
        self.set("INTERFACE", name)
    }

    /// Why the event happened.
    pub fn reason(self, why: &str) -> HookEnv {
        self.set("REASON", why)
    }

    /// The variables, as `(name, value)` pairs.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// The variables of one session: gateway, grant and (once the tunnel is up) interface.
pub fn session_env(name: &str, at: SocketAddr, grant: &Grant, interface: Option<&str>) -> HookEnv {
    let env = HookEnv::new().gateway(name, at).grant(grant);
    match interface {
        Some(i) => env.interface(i),
        None => env,
    }
}

/// What [`fire`] needs besides the event: the configured hooks, how long one may run and this
/// node's name (`MNIGS_NODE`). The config gives one (`From<&Config>`), so hooks need not know
/// the config.
#[derive(Debug, Clone, Copy)]
pub struct Hooks<'a> {
    /// `option on_connect` …
    pub paths: &'a HookPaths,
    /// `option hook_timeout`.
    pub timeout: Duration,
    /// `option name`.
    pub node: &'a str,
}

/// Runs `event`'s hook, if configured, on a thread of its own and returns at once. The handle
/// lets tests wait for it; the daemon drops it.
pub fn fire<'a>(
    hooks: impl Into<Hooks<'a>>,
    event: Event,
    env: &HookEnv,
) -> Option<JoinHandle<()>> {
    let hooks = hooks.into();
    let path = hooks.paths.get(event)?.to_path_buf();
    let timeout = hooks.timeout;
    let vars = env
        .clone()
        .set("EVENT", event.name())
        .set("NODE", hooks.node)
        .vars
        .clone();
    running_add(1);
    let spawned = crate::threads::spawn_named(&format!("hook-{}", event.name()), move || {
        run(&path, &vars, timeout);
        running_add(-1);
    });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            running_add(-1);
            crate::error!("cannot start a thread for the {event:?} hook: {e}");
            None
        }
    }
}

fn run(path: &Path, vars: &[(String, String)], timeout: Duration) {
    let argv = [path.to_string_lossy().into_owned()];
    match crate::sys::cmd::run_env(&argv, vars, timeout) {
        Ok(out) => {
            let out = out.trim();
            if !out.is_empty() {
                crate::debug!("hook {}: {out}", argv[0]);
            }
        }
        Err(e) => crate::warn!("hook failed (ignored): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mnigs-hooks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The hooks of a node called `node` with `paths`, timed out after `secs` seconds (the
    /// config's default timeout is 10).
    fn hooks<'a>(paths: &'a HookPaths, secs: u64, node: &'a str) -> Hooks<'a> {
        Hooks {
            paths,
            timeout: Duration::from_secs(secs),
            node,
        }
    }

    fn read_env(file: &Path) -> HashMap<String, String> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("MNIGS_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_value_spans_lines_even_unchecked() {
        let env = HookEnv::new()
            .reason("gw said: x\nMNIGS_SID=forged\u{1b}[2J")
            .set("GATEWAY_NAME", "a$(reboot)`id`");
        for (k, v) in env.vars() {
            assert!(!v.chars().any(char::is_control), "{k}={v}");
        }
        assert_eq!(env.vars()[0].1, "gw said: x\\nMNIGS_SID=forged\\u{1b}[2J");
    }

    #[test]
    fn hook_gets_the_documented_environment() {
        let dir = tempdir("env");
        let out = dir.join("env.txt");
        let hook = script(&dir, "hook", &format!("env > '{}'", out.display()));
        let paths = HookPaths {
            on_connect: Some(hook),
            ..HookPaths::default()
        };
        let grant: Grant = serde_json::from_value(serde_json::json!({"success": true,
            "sid": "00112233445566778899aabbccddeeff", "timeout": 60, "method": "wireguard",
            "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1",
            "ipv6": "fd7e:7e7e::2", "cidr6": 64, "ipv6gateway": "fd7e:7e7e::1"}))
        .unwrap();
        let env = HookEnv::new()
            .gateway("gw", "10.77.0.3:65533".parse().unwrap())
            .grant(&grant)
            .interface("mnigs-wg0");
        fire(hooks(&paths, 10, "sub-1"), Event::Connect, &env)
            .unwrap()
            .join()
            .unwrap();
        let got = read_env(&out);
        let want = [
            ("MNIGS_EVENT", "connect"),
            ("MNIGS_NODE", "sub-1"),
            ("MNIGS_GATEWAY_NAME", "gw"),
            ("MNIGS_GATEWAY_ADDRESS", "10.77.0.3"),
            ("MNIGS_GATEWAY_PORT", "65533"),
            ("MNIGS_SID", "00112233445566778899aabbccddeeff"),
            ("MNIGS_METHOD", "wireguard"),
            ("MNIGS_INTERFACE", "mnigs-wg0"),
            ("MNIGS_IPV4", "100.127.0.2"),
            ("MNIGS_CIDR4", "24"),
            ("MNIGS_IPV4_GATEWAY", "100.127.0.1"),
            ("MNIGS_IPV6", "fd7e:7e7e::2"),
            ("MNIGS_CIDR6", "64"),
            ("MNIGS_IPV6_GATEWAY", "fd7e:7e7e::1"),
        ];
        for (k, v) in want {
            assert_eq!(got.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!got.contains_key("MNIGS_REASON"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn wait_idle_waits_for_running_hooks() {
        let dir = tempdir("idle");
        let done = dir.join("done");
        let paths = HookPaths {
            on_disconnect: Some(script(
                &dir,
                "slow",
                &format!("sleep 0.3; touch '{}'", done.display()),
            )),
            ..HookPaths::default()
        };
        let handle = fire(hooks(&paths, 10, "n"), Event::Disconnect, &HookEnv::new()).unwrap();
        assert!(wait_idle(Duration::from_secs(5)));
        assert!(done.exists(), "wait_idle returned before the hook ended");
        handle.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unconfigured_event_runs_nothing() {
        let paths = HookPaths::default();
        assert!(fire(hooks(&paths, 10, "n"), Event::Release, &HookEnv::new()).is_none());
    }

    #[test]
    fn hanging_hook_is_killed_at_its_timeout_without_blocking_the_caller() {
        let dir = tempdir("hang");
        let marker = dir.join("child-survived");
        // The hook's own child would outlive a plain kill; the whole group must go.
        let hook = script(
            &dir,
            "hang",
            &format!("(sleep 3; touch '{}') &\nsleep 30", marker.display()),
        );
        let paths = HookPaths {
            on_failover: Some(hook),
            ..HookPaths::default()
        };
        let started = Instant::now();
        let handle = fire(
            hooks(&paths, 1, "n"),
            Event::Failover,
            &HookEnv::new().reason("test"),
        )
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "fire() must return at once, took {:?}",
            started.elapsed()
        );
        handle.join().unwrap();
        let ran = started.elapsed();
        assert!(ran >= Duration::from_secs(1), "killed too early: {ran:?}");
        assert!(
            ran < Duration::from_secs(10),
            "not killed at its timeout: {ran:?}"
        );
        std::thread::sleep(Duration::from_millis(3500));
        assert!(!marker.exists(), "the hook's child outlived the timeout");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn failing_and_missing_hooks_are_not_fatal() {
        let dir = tempdir("fail");
        let paths = HookPaths {
            on_release: Some(script(&dir, "fail", "exit 7")),
            on_register: Some(dir.join("missing")),
            ..HookPaths::default()
        };
        fire(hooks(&paths, 10, "n"), Event::Release, &HookEnv::new())
            .unwrap()
            .join()
            .unwrap();
        fire(hooks(&paths, 10, "n"), Event::Register, &HookEnv::new())
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
