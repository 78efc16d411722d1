//! The shell scripts that ship in the packages: the procd init script, uci-defaults when present,
//! the LuCI app's rpcd plugin(s) and uci-defaults when present, and the package and cross
//! builders. Each must parse with `sh -n` (busybox ash on the router is a POSIX shell; the
//! builder is bash and is checked with `bash -n`) and pass `shellcheck` with no findings.
//!
//! shellcheck comes from Debian's `shellcheck` package (.ci/deps). Without it the test skips
//! loudly, and fails under `MNIGS_E2E=1` so that CI cannot skip it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOP: &str = env!("CARGO_MANIFEST_DIR");

/// Every regular file directly inside `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// The router-side scripts, checked as POSIX sh.
fn router_scripts() -> Vec<PathBuf> {
    let top = Path::new(TOP);
    let mut out = vec![top.join("files/etc/init.d/mnigs")];
    out.extend(files_in(&top.join("files/etc/uci-defaults")));
    let luci = top.join("luci-app-mnigs/root");
    out.extend(files_in(&luci.join("usr/libexec/rpcd")));
    out.extend(files_in(&luci.join("etc/uci-defaults")));
    out
}

fn output(argv: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn shipped_scripts_parse_with_sh_n() {
    let scripts = router_scripts();
    assert!(scripts.len() >= 2, "init script and rpcd plugin found");
    for s in &scripts {
        let first = std::fs::read_to_string(s).unwrap();
        assert!(
            first.starts_with("#!/bin/sh"),
            "{} runs under the router's /bin/sh",
            s.display()
        );
        let (ok, text) = output(&["sh", "-n", s.to_str().unwrap()]).unwrap();
        assert!(ok, "sh -n {}: {text}", s.display());
    }
    for tool in ["openwrt/build-package", "openwrt/cross-build"] {
        let path = Path::new(TOP).join(tool);
        let (ok, text) = output(&["bash", "-n", path.to_str().unwrap()]).unwrap();
        assert!(ok, "bash -n {tool}: {text}");
    }
}

#[test]
fn shipped_scripts_pass_shellcheck() {
    if let Err(e) = output(&["shellcheck", "--version"]) {
        if std::env::var("MNIGS_E2E").is_ok_and(|v| v == "1") {
            panic!("MNIGS_E2E=1 but shellcheck is missing: {e}");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED shipped_scripts_pass_shellcheck: {e} (apt-get install shellcheck) !!!!!!!!\n"
        );
        return;
    }
    let mut all = router_scripts();
    all.push(Path::new(TOP).join("openwrt/build-package"));
    all.push(Path::new(TOP).join("openwrt/cross-build"));
    for s in &all {
        // --norc: a developer's ~/.shellcheckrc must not switch checks off. Severity "style"
        // is the strictest level: every finding counts.
        let (ok, text) = output(&[
            "shellcheck",
            "--norc",
            "--severity=style",
            "--external-sources",
            s.to_str().unwrap(),
        ])
        .unwrap();
        assert!(ok && text.is_empty(), "shellcheck {}:\n{text}", s.display());
    }
}

/// shellcheck must be able to fail here: a script with a classic mistake is reported.
#[test]
fn shellcheck_catches_an_unquoted_variable() {
    let Ok((_, _)) = output(&["shellcheck", "--version"]) else {
        return; // the test above reports the missing tool
    };
    let dir = std::env::temp_dir().join(format!("mnigs-shell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad");
    std::fs::write(&bad, "#!/bin/sh\nrm -rf $1/tmp\n").unwrap();
    let (ok, text) = output(&["shellcheck", "--norc", bad.to_str().unwrap()]).unwrap();
    assert!(!ok && text.contains("SC2086"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
