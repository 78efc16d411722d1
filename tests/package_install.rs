//! The mips_24kc packages and the LuCI app, installed, upgraded and removed by the real package
//! managers of OpenWrt — opkg (up to 24.10) and apk v3 (25.12 on) — into an offline root that
//! holds OpenWrt's own `rc.common`, `functions.sh` and `procd.sh` (`../shared/tools/openwrt-base`),
//! with `IPKG_INSTROOT` set, so the maintainer scripts run as when OpenWrt builds an image.
//! Dependencies are satisfied by empty stub packages (never `--nodeps`/`--force-depends`).
//!
//! Checked: files, modes and bytes; the conffile recorded with its sha256; the `rc.d` links the
//! post-install script makes; an upgrade of an untouched install leaves no `-opkg`/`.apk-new`
//! file; an upgrade after the owner edited the config keeps the owner's file byte for byte (the
//! new default lands beside it); removal leaves nothing but that modified conffile.
//!
//! Needs `MNIGS_OPKG` / `MNIGS_APK` (paths to the clients; `.ci/run` sets them from
//! `../shared/tools/bin`) and skips loudly without them. The mips binary comes from
//! `MNIGS_MIPS_BINARY` when set (`.ci/run` builds it once), else `openwrt/build-package` builds it
//! with `openwrt/cross-build`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOP: &str = env!("CARGO_MANIFEST_DIR");
const ARCH: &str = "mips_24kc";
/// Run-time dependencies of mnigs and of the app that the stubs stand in for.
const STUBS: [&str; 7] = [
    "libc",
    "kmod-wireguard",
    "wireguard-tools",
    "ip-full",
    "kmod-nft-nat",
    "nftables-json",
    "luci-base",
];

fn client(var: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED: {var} is not set (path to the real client; .ci/run sets it \
                 from ../shared/tools/bin) !!!!!!!!\n"
            );
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn version(release: u32) -> String {
    format!("{}-r{release}", env!("CARGO_PKG_VERSION"))
}

/// `openwrt/build-package mips_24kc --release N` into `out`.
fn build(out: &Path, release: u32, apk: Option<&Path>) {
    let mut cmd = Command::new(Path::new(TOP).join("openwrt/build-package"));
    cmd.args([ARCH, "--release", &release.to_string(), "--out"])
        .arg(out);
    if let Ok(bin) = std::env::var("MNIGS_MIPS_BINARY")
        && !bin.is_empty()
    {
        cmd.args(["--binary", &bin]);
    }
    match apk {
        Some(a) => cmd.env("MNIGS_APK", a),
        None => cmd.env_remove("MNIGS_APK"),
    };
    run(&mut cmd);
}

/// A root with OpenWrt's base scripts and the directories base-files would have made.
fn new_root(path: &Path) {
    let base = Path::new(TOP).join("../shared/tools/openwrt-base");
    assert!(
        base.join("etc/rc.common").is_file(),
        "{} is missing",
        base.display()
    );
    let _ = fs::remove_dir_all(path);
    for d in ["etc/rc.d", "etc/config", "var/lock"] {
        fs::create_dir_all(path.join(d)).unwrap();
    }
    run(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", base.display()))
        .arg(path));
    run(Command::new("chmod").args(["-R", "u+w"]).arg(path));
}

/// What is in a root: relative path → mode and content (file bytes, link target, or a
/// directory mark).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, (0, target.to_string_lossy().as_bytes().to_vec()));
            } else if meta.is_dir() {
                out.insert(rel.clone() + "/", (mode, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Entries that differ between two snapshots, leaving out the package managers' own records.
fn changed(
    before: &BTreeMap<String, (u32, Vec<u8>)>,
    after: &BTreeMap<String, (u32, Vec<u8>)>,
    dirs: bool,
) -> Vec<String> {
    let ours = |k: &String| {
        !["usr/lib/opkg/", "lib/apk/db/", "etc/apk/", "var/"]
            .iter()
            .any(|p| k.starts_with(p))
            && (dirs || !k.ends_with('/'))
    };
    let mut keys: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| ours(k))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

/// What an installed mnigs + app must look like in `root` (files, modes, bytes, rc.d links).
fn assert_installed(root: &Path, what: &str) {
    let snap = snapshot(root);
    let files = Path::new(TOP).join("files");
    let expect_file = |rel: &str, mode: u32, source: Option<&Path>| {
        let (m, bytes) = snap
            .get(rel)
            .unwrap_or_else(|| panic!("{what}: {rel} installed"));
        assert_eq!(*m, mode, "{what}: mode of {rel}");
        if let Some(src) = source {
            assert!(
                *bytes == fs::read(src).unwrap(),
                "{what}: {rel} is {}",
                src.display()
            );
        }
    };
    expect_file("usr/sbin/mnigs", 0o755, None);
    expect_file(
        "etc/init.d/mnigs",
        0o755,
        Some(&files.join("etc/init.d/mnigs")),
    );
    expect_file(
        "lib/upgrade/keep.d/mnigs",
        0o644,
        Some(&files.join("lib/upgrade/keep.d/mnigs")),
    );
    let config = &snap["etc/config/mnigs"];
    assert_eq!(
        config.0, 0o600,
        "{what}: the config holds secrets' paths, owner only"
    );
    if let Ok(bin) = std::env::var("MNIGS_MIPS_BINARY")
        && !bin.is_empty()
    {
        expect_file("usr/sbin/mnigs", 0o755, Some(Path::new(&bin)));
    }
    let bin = &snap["usr/sbin/mnigs"].1;
    assert_eq!(
        &bin[..6],
        b"\x7fELF\x01\x02",
        "{what}: a 32-bit big-endian ELF (mips)"
    );
    assert_eq!(u16::from_be_bytes([bin[18], bin[19]]), 8, "{what}: EM_MIPS");
    let app = Path::new(TOP).join("luci-app-mnigs");
    expect_file(
        "usr/libexec/rpcd/luci.mnigs",
        0o755,
        Some(&app.join("root/usr/libexec/rpcd/luci.mnigs")),
    );
    for view in fs::read_dir(app.join("htdocs/luci-static/resources/view/mnigs")).unwrap() {
        let view = view.unwrap();
        let rel = format!(
            "www/luci-static/resources/view/mnigs/{}",
            view.file_name().to_string_lossy()
        );
        expect_file(&rel, 0o644, Some(&view.path()));
    }
    for (link, target) in [
        ("etc/rc.d/S95mnigs", "../init.d/mnigs"),
        ("etc/rc.d/K10mnigs", "../init.d/mnigs"),
    ] {
        assert_eq!(
            snap.get(link).map(|(_, t)| t.as_slice()),
            Some(target.as_bytes()),
            "{what}: post-install enabled the service ({link})"
        );
    }
    assert!(
        !snap.keys().any(|k| k.starts_with("etc/uci-defaults/")),
        "{what}: no first-boot script that could rewrite the conffile"
    );
}

/// The config files next to /etc/config/mnigs (`mnigs-opkg`, `mnigs.apk-new`, ...).
fn config_siblings(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("etc/config"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "mnigs")
        .collect();
    names.sort();
    names
}

/// The owner edits `root`'s config (a line added to `shipped`); `upgrade` (which returns the
/// package manager's output) must keep the owner's file byte for byte and put the new default
/// beside it as `sibling`, which the owner then merges (removes). Returns the owner's config.
fn owner_edit_survives_upgrade(
    root: &Path,
    shipped: &[u8],
    sibling: &str,
    upgrade: impl FnOnce() -> String,
) -> Vec<u8> {
    let mut mine = shipped.to_vec();
    mine.extend_from_slice(b"\n# the owner's line\n");
    fs::write(root.join("etc/config/mnigs"), &mine).unwrap();
    let out = upgrade();
    assert!(
        fs::read(root.join("etc/config/mnigs")).unwrap() == mine,
        "the owner's config survives the upgrade: {out}"
    );
    assert_eq!(config_siblings(root), [sibling], "{out}");
    assert!(fs::read(root.join("etc/config").join(sibling)).unwrap() == shipped);
    fs::remove_file(root.join("etc/config").join(sibling)).unwrap(); // the owner merged it
    mine
}

/// An empty .ipk named `name` (version 1, Architecture all): a gzip'd tar of debian-binary,
/// control.tar.gz and data.tar.gz, as opkg reads them.
fn stub_ipk(dir: &Path, name: &str) -> PathBuf {
    let work = dir.join(format!("stub-{name}"));
    fs::create_dir_all(work.join("control")).unwrap();
    fs::create_dir_all(work.join("data")).unwrap();
    fs::write(
        work.join("control/control"),
        format!("Package: {name}\nVersion: 1\nArchitecture: all\nDescription: stub for {name}\n"),
    )
    .unwrap();
    fs::write(work.join("debian-binary"), "2.0\n").unwrap();
    for part in ["control", "data"] {
        run(Command::new("tar")
            .arg("-C")
            .arg(work.join(part))
            .arg("-czf")
            .arg(work.join(format!("{part}.tar.gz")))
            .arg("."));
    }
    let ipk = dir.join(format!("{name}_1_all.ipk"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-czf")
        .arg(&ipk)
        .args(["./debian-binary", "./data.tar.gz", "./control.tar.gz"]));
    ipk
}

#[test]
fn opkg_installs_upgrades_and_removes_the_mips_packages() {
    let Some(opkg) = client("MNIGS_OPKG") else {
        return;
    };
    let apk = std::env::var("MNIGS_APK").ok().filter(|a| !a.is_empty());
    let work = std::env::temp_dir().join(format!("mnigs-opkg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("stubs")).unwrap();
    for r in 1..=3 {
        build(
            &work.join(format!("r{r}")),
            r,
            apk.as_deref().map(Path::new),
        );
    }
    let ipk = |r: u32, name: &str, arch: &str| {
        work.join(format!("r{r}/{name}_{}_{arch}.ipk", version(r)))
    };
    let root = work.join("root");
    new_root(&root);
    let conf = work.join("opkg.conf");
    fs::write(
        &conf,
        format!("dest root /\nlists_dir ext /var/opkg-lists\narch all 1\narch noarch 1\narch {ARCH} 10\n"),
    )
    .unwrap();
    // opkg runs maintainer scripts in an offline root only when told to; OpenWrt's image build
    // runs them the same way, with IPKG_INSTROOT naming the root.
    let opkg_cmd = |args: &[&str], pkgs: &[PathBuf]| {
        let mut c = Command::new(&opkg);
        c.arg("--offline-root")
            .arg(&root)
            .arg("-f")
            .arg(&conf)
            .arg("--force-postinstall")
            .args(args)
            .args(pkgs)
            .env("IPKG_INSTROOT", &root);
        run(&mut c)
    };

    let stubs: Vec<PathBuf> = STUBS
        .iter()
        .map(|s| stub_ipk(&work.join("stubs"), s))
        .collect();
    opkg_cmd(&["install"], &stubs);
    let bare = snapshot(&root);

    opkg_cmd(
        &["install"],
        &[ipk(1, "mnigs", ARCH), ipk(1, "luci-app-mnigs", "all")],
    );
    assert_installed(&root, "opkg install");
    let shipped = fs::read(Path::new(TOP).join("files/etc/config/mnigs")).unwrap();
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == shipped);
    let status = fs::read_to_string(root.join("usr/lib/opkg/status")).unwrap();
    let record = format!(
        "Conffiles:\n /etc/config/mnigs {}\n",
        sha256(&Path::new(TOP).join("files/etc/config/mnigs"))
    );
    assert!(
        status.contains(&record),
        "conffile recorded with its sha256:\n{status}"
    );
    assert_eq!(
        fs::read_to_string(root.join("usr/lib/opkg/info/mnigs.conffiles")).unwrap(),
        "/etc/config/mnigs\n"
    );

    // Upgrade, config untouched: no -opkg file.
    let out = opkg_cmd(
        &["install"],
        &[ipk(2, "mnigs", ARCH), ipk(2, "luci-app-mnigs", "all")],
    );
    assert!(out.contains(&format!("to {}", version(2))), "{out}");
    assert_eq!(config_siblings(&root), Vec::<String>::new(), "{out}");
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == shipped);
    assert_installed(&root, "opkg upgrade");

    // The owner edits the config; the next upgrade keeps it byte for byte.
    let mine = owner_edit_survives_upgrade(&root, &shipped, "mnigs-opkg", || {
        opkg_cmd(&["install"], &[ipk(3, "mnigs", ARCH)])
    });

    // Removal: the prerm disables the service; only the owner's config is left.
    let out = opkg_cmd(
        &["remove"],
        &[PathBuf::from("luci-app-mnigs"), PathBuf::from("mnigs")],
    );
    let after = snapshot(&root);
    // opkg-lede leaves directories behind (it never removes one); files and links only here.
    assert_eq!(changed(&bare, &after, false), ["etc/config/mnigs"], "{out}");
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == mine);
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn apk_installs_upgrades_and_removes_the_mips_packages() {
    let Some(apk) = client("MNIGS_APK") else {
        return;
    };
    let work = std::env::temp_dir().join(format!("mnigs-apk-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("stubs")).unwrap();
    for r in 1..=3 {
        build(&work.join(format!("r{r}")), r, Some(&apk));
    }
    let pkg = |r: u32, name: &str| work.join(format!("r{r}/{name}-{}.apk", version(r)));
    let root = work.join("root");
    new_root(&root);
    // --force-no-chroot and --preserve-env: the scripts run on this host with IPKG_INSTROOT
    // naming the root, as in OpenWrt's image build.
    let apk_cmd = |args: &[&str], pkgs: &[PathBuf]| {
        let mut c = Command::new(&apk);
        c.arg("--root")
            .arg(&root)
            .args(["--allow-untrusted", "--no-network", "--force-no-chroot"])
            .args(["--preserve-env", "--no-cache", "--arch", ARCH])
            .args(args)
            .args(pkgs)
            .env("IPKG_INSTROOT", &root);
        run(&mut c)
    };

    let stubs: Vec<PathBuf> = STUBS
        .iter()
        .map(|s| {
            let out = work.join(format!("stubs/{s}-1.apk"));
            run(Command::new(&apk)
                .arg("mkpkg")
                .args(["--info", &format!("name:{s}"), "--info", "version:1"])
                .args(["--info", "arch:noarch", "--info", "description:stub"])
                .arg("--output")
                .arg(&out));
            out
        })
        .collect();
    apk_cmd(&["add", "--initdb"], &stubs);
    let bare = snapshot(&root);

    let out = apk_cmd(&["add"], &[pkg(1, "mnigs"), pkg(1, "luci-app-mnigs")]);
    assert!(out.contains("mnigs-0.1.0-r1.post-install"), "{out}");
    assert_installed(&root, "apk add");
    let shipped = fs::read(Path::new(TOP).join("files/etc/config/mnigs")).unwrap();
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == shipped);
    let meta = root.join("lib/apk/packages");
    assert_eq!(
        fs::read_to_string(meta.join("mnigs.conffiles")).unwrap(),
        "/etc/config/mnigs\n"
    );
    assert_eq!(
        fs::read_to_string(meta.join("mnigs.conffiles_static")).unwrap(),
        format!(
            "/etc/config/mnigs {}\n",
            sha256(&Path::new(TOP).join("files/etc/config/mnigs"))
        ),
        "sysupgrade's record of the shipped conffile"
    );
    let list = fs::read_to_string(meta.join("mnigs.list")).unwrap();
    for f in ["/usr/sbin/mnigs", "/etc/init.d/mnigs", "/etc/config/mnigs"] {
        assert!(list.lines().any(|l| l == f), "{f} in mnigs.list:\n{list}");
    }
    let db = fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
    for field in [
        "P:mnigs\n",
        &format!("V:{}\n", version(1)),
        &format!("A:{ARCH}\n"),
        "L:GPL-3.0-or-later\n",
        "p:mnigs-any\n",
        "P:luci-app-mnigs\n",
        "A:noarch\n",
    ] {
        assert!(db.contains(field), "{field:?} in the apk database:\n{db}");
    }
    let depends = db
        .lines()
        .find(|l| l.starts_with("D:") && l.contains("kmod-wireguard"))
        .expect("mnigs depends");
    for d in [
        "libc",
        "kmod-wireguard",
        "wireguard-tools",
        "ip-full",
        "kmod-nft-nat",
        "nftables-json",
    ] {
        assert!(
            depends
                .split_whitespace()
                .any(|w| w.trim_start_matches("D:") == d),
            "{depends}"
        );
    }

    // Upgrade, config untouched: no .apk-new file.
    let out = apk_cmd(&["add"], &[pkg(2, "mnigs"), pkg(2, "luci-app-mnigs")]);
    assert!(out.contains("post-upgrade"), "{out}");
    assert_eq!(config_siblings(&root), Vec::<String>::new(), "{out}");
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == shipped);
    assert_installed(&root, "apk upgrade");

    // The owner edits the config; the next upgrade keeps it byte for byte.
    let mine = owner_edit_survives_upgrade(&root, &shipped, "mnigs.apk-new", || {
        apk_cmd(&["add"], &[pkg(3, "mnigs")])
    });

    // Removal: pre-deinstall disables the service; only the owner's config is left, and no
    // directory of ours.
    let out = apk_cmd(
        &["del"],
        &[PathBuf::from("luci-app-mnigs"), PathBuf::from("mnigs")],
    );
    assert!(out.contains("mnigs-0.1.0-r3.pre-deinstall"), "{out}");
    let after = snapshot(&root);
    assert_eq!(changed(&bare, &after, true), ["etc/config/mnigs"], "{out}");
    assert!(fs::read(root.join("etc/config/mnigs")).unwrap() == mine);
    let _ = fs::remove_dir_all(&work);
}
