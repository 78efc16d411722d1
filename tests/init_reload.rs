//! `/etc/init.d/mnigs reload` through OpenWrt's own `rc.common`, `functions.sh` and `procd.sh`
//! (from `../shared/tools/openwrt-base`, run by busybox's ash as on a router), with `ubus`,
//! `jsonfilter`, `jshn`, `uci` and `logger` replaced by recorders: a bad config is refused, logged,
//! and the running daemon is neither stopped nor restarted, on the stock `rc.common` and on one
//! whose reload is `reload_service || restart`; a good one reaches the daemon as SIGHUP.
//! The real `mnigs check-config` judges the file.
//!
//! Skips loudly without `../shared/tools/openwrt-base` or busybox (`busybox-static`, .ci/deps);
//! fails then under `MNIGS_E2E=1`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOP: &str = env!("CARGO_MANIFEST_DIR");
const EXE: &str = env!("CARGO_BIN_EXE_mnigs");

fn base() -> Option<PathBuf> {
    let dir = Path::new(TOP).join("../shared/tools/openwrt-base");
    let busybox = Command::new("busybox").arg("true").output().is_ok();
    if dir.join("etc/rc.common").is_file() && busybox {
        return Some(dir);
    }
    let msg = format!(
        "init script reload test needs {} and busybox (busybox-static)",
        dir.display()
    );
    assert!(
        !std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1"),
        "MNIGS_E2E=1: {msg}"
    );
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    None
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// An offline root holding OpenWrt's base scripts and our init script, whose `PROG` and `CONF`
/// point into the root; recorders for the router's programs in `ROOT/stubs`.
struct Router {
    root: PathBuf,
}

impl Router {
    fn new(base: &Path, tag: &str, rc_common: impl Fn(String) -> String) -> Router {
        let root = std::env::temp_dir().join(format!("mnigs-init-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in [
            "etc/init.d",
            "etc/config",
            "lib/functions",
            "usr/share/libubox",
            "usr/sbin",
            "var/lock",
            "stubs",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "lib/functions.sh",
            "lib/functions/procd.sh",
            "lib/functions/service.sh",
            "usr/share/libubox/jshn.sh",
        ] {
            fs::copy(base.join(f), root.join(f)).unwrap();
        }
        let rc = fs::read_to_string(base.join("etc/rc.common")).unwrap();
        fs::write(root.join("etc/rc.common"), rc_common(rc)).unwrap();

        let script = fs::read_to_string(Path::new(TOP).join("files/etc/init.d/mnigs")).unwrap();
        let prog = "PROG=/usr/sbin/mnigs\n";
        let conf = "CONF=/etc/config/mnigs\n";
        assert_eq!(script.matches(prog).count(), 1, "{prog}");
        assert_eq!(script.matches(conf).count(), 1, "{conf}");
        let script = script
            .replace(prog, &format!("PROG={}/usr/sbin/mnigs\n", root.display()))
            .replace(conf, &format!("CONF={}/etc/config/mnigs\n", root.display()));
        write_exec(&root.join("etc/init.d/mnigs"), &script);
        std::os::unix::fs::symlink(EXE, root.join("usr/sbin/mnigs")).unwrap();

        let log = root.join("calls.log");
        let running = root.join("running");
        let rec = |name: &str, tail: &str| {
            let text = format!(
                "#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >>'{}'\n{tail}",
                log.display()
            );
            write_exec(&root.join("stubs").join(name), &text);
        };
        rec("ubus", "");
        rec(
            "jsonfilter",
            &format!("[ -f '{}' ] && echo true\nexit 0\n", running.display()),
        );
        rec("jshn", "case \"$*\" in *-w*) echo '{}' ;; esac\n");
        rec("uci", "exit 1\n");
        // busybox's ash runs its own logger applet before any in PATH: the recorder is a shell
        // function, added to the copy of functions.sh that rc.common sources.
        let mut functions = fs::OpenOptions::new()
            .append(true)
            .open(root.join("lib/functions.sh"))
            .unwrap();
        write!(
            functions,
            "\nlogger() {{ printf '%s\\n' \"logger $*\" >>'{log}'; [ $# -gt 4 ] || cat >>'{log}'; }}\n",
            log = log.display()
        )
        .unwrap();
        Router { root }
    }

    fn set_config(&self, text: &str) {
        fs::write(self.root.join("etc/config/mnigs"), text).unwrap();
    }

    fn set_running(&self, running: bool) {
        let path = self.root.join("running");
        if running {
            fs::write(path, "").unwrap();
        } else {
            let _ = fs::remove_file(path);
        }
    }

    /// `/etc/init.d/mnigs ACTION` as the router runs it; exit code, stderr and what was called.
    fn run(&self, action: &str) -> (i32, String, String) {
        let _ = fs::remove_file(self.root.join("calls.log"));
        let path = format!(
            "{}:{}",
            self.root.join("stubs").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("busybox")
            .arg("sh")
            .arg(self.root.join("etc/rc.common"))
            .arg(self.root.join("etc/init.d/mnigs"))
            .arg(action)
            .env("IPKG_INSTROOT", &self.root)
            .env("PATH", path)
            .output()
            .unwrap();
        let calls = fs::read_to_string(self.root.join("calls.log")).unwrap_or_default();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls,
        )
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const GOOD: &str = "config mnigs 'main'\n\toption name 'r1'\n";
const BAD: &str = "config mnigs 'main'\n\toption name 'r1'\n\toption rpc_port '99999'\n";

/// The procd calls that stop (`delete`) or (re)register (`set`) the service.
fn stops_or_starts(calls: &str) -> bool {
    calls.contains("ubus call service delete") || calls.contains("ubus call service set")
}

/// rc.common whose procd `reload` falls back to `restart` when `reload_service` fails, as some
/// OpenWrt releases had it.
fn reload_or_restart(rc: String) -> String {
    let stock = "\t\t\treload_service \"$@\"\n";
    assert_eq!(rc.matches(stock).count(), 1, "rc.common's procd reload");
    rc.replace(stock, "\t\t\treload_service \"$@\" || restart \"$@\"\n")
}

#[test]
fn a_bad_config_on_reload_is_refused_and_never_stops_the_daemon() {
    let Some(base) = base() else { return };
    for (tag, variant) in [
        ("stock", (|rc| rc) as fn(String) -> String),
        ("fallback", reload_or_restart),
    ] {
        let r = Router::new(&base, tag, variant);
        r.set_running(true);

        r.set_config(GOOD);
        let (code, stderr, calls) = r.run("reload");
        assert_eq!(code, 0, "{tag}: {stderr}");
        assert!(
            calls.contains("ubus call service signal"),
            "{tag}: a good config is sent as a signal (HUP, by the init script): {calls}"
        );
        assert!(!stops_or_starts(&calls), "{tag}: {calls}");

        r.set_config(BAD);
        let (code, stderr, calls) = r.run("reload");
        assert!(
            !stops_or_starts(&calls),
            "{tag}: the daemon keeps running: {calls}"
        );
        assert!(!calls.contains("service signal"), "{tag}: {calls}");
        assert_eq!(code, 0, "{tag}: the refusal is not a failure: {stderr}");
        assert!(
            stderr.contains("is invalid, will not reload"),
            "{tag}: {stderr}"
        );
        assert!(
            calls.contains("rpc_port") && calls.contains("keeps its last good config"),
            "{tag}: check-config's findings go to the log: {calls}"
        );

        // Not running and the config now good: reload starts it.
        r.set_running(false);
        r.set_config(GOOD);
        let (code, stderr, calls) = r.run("reload");
        assert_eq!(code, 0, "{tag}: {stderr}");
        assert!(calls.contains("ubus call service set"), "{tag}: {calls}");
    }
}

/// The same harness catches the defect: an init script whose refusal returns 1 is stopped by the
/// `reload || restart` rc.common.
#[test]
fn the_harness_sees_a_refusal_that_fails() {
    let Some(base) = base() else { return };
    let r = Router::new(&base, "old", reload_or_restart);
    let path = r.root.join("etc/init.d/mnigs");
    let script = fs::read_to_string(&path).unwrap();
    let fixed = "keeps its last good config\" ||\n\t\treturn 0\n";
    assert_eq!(script.matches(fixed).count(), 1);
    write_exec(
        &path,
        &script.replace(fixed, "keeps its last good config\" ||\n\t\treturn 1\n"),
    );
    r.set_running(true);
    r.set_config(BAD);
    let (_, _, calls) = r.run("reload");
    assert!(
        calls.contains("ubus call service delete"),
        "returning 1 lets rc.common stop the daemon: {calls}"
    );
}
