//! Kernel tunnels in a VM: this machine's kernel has no GRE, IPIP or WireGuard modules, Debian's
//! has. The test boots Debian's kernel under `qemu-system-x86_64` (software emulation) with an
//! initramfs holding busybox, iproute2, nft, wg, the mnigs binary and the module files it needs,
//! and inside runs a gateway and a subscriber daemon in namespaces:
//!
//! ```text
//!  sub m0 10.77.0.1/24 fd77::1/64 ── m0 10.77.0.3/24 fd77::3/64 gw wan0 198.51.100.1 ── inet (lo 203.0.113.7)
//! ```
//!
//! For each of gre and ipip over IPv4 and over IPv6 mesh addresses, and kernel WireGuard, the
//! subscriber connects with `mnigs connect -m METHOD`, pings the fake Internet host, disconnects,
//! and the gateway must have nothing of that subscriber left. The guest prints `RESULT <name>
//! ok|FAIL …` lines on the serial console; the test asserts each one.
//!
//! The kernel package is fetched once with `apt-get download` and unpacked (never installed)
//! below Cargo's target tmp dir. Runs like the other end-to-end tests: skips loudly without root
//! or programs, fails under MNIGS_E2E=1.

use mnigs::sys::cmd;
use mnigs_lab::testbed::e2e_gate;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
const TEST: &str = "kernel_tunnels_in_a_vm";

/// Programs needed on the host to build and boot the VM.
const HOST_PROGRAMS: [&str; 8] = [
    "qemu-system-x86_64",
    "cpio",
    "depmod",
    "dpkg",
    "apt-get",
    "gzip",
    "strip",
    "ldd",
];

/// Modules the guest loads (their dependencies are added from `modules.dep`).
const MODULES: [&str; 12] = [
    // libcrc32c (for conntrack) asks the crypto API for crc32c, which only a soft dependency names.
    "crc32c_generic",
    "veth",
    "ip_gre",
    "ipip",
    "ip6_gre",
    "ip6_tunnel",
    "wireguard",
    "nft_chain_nat",
    "nft_masq",
    "nf_nat",
    "nf_conntrack",
    // The gateway's firewall (`ct state` in the inet mnigs table).
    "nft_ct",
];

/// Every result line the guest must print as `ok`.
const EXPECTED: [&str; 23] = [
    "no-modules-no-tunnels",
    "insmod",
    "control",
    "gre4",
    "gre4-clean",
    "gre4-cut",
    "ipip4",
    "ipip4-clean",
    "ipip4-cut",
    "gre6",
    "gre6-clean",
    "ipip6",
    "ipip6-clean",
    "wireguard",
    "wireguard-kernel",
    "wireguard-clean",
    "wireguard-cut",
    "gw-restart",
    "expiry",
    "expiry-listing",
    "teardown",
    "listing-gw",
    "listing-sub",
];

fn gate() -> bool {
    if !e2e_gate(TEST) {
        return false;
    }
    let mut missing: Vec<&str> = HOST_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !cmd::available(p))
        .collect();
    if !Path::new(BUSYBOX).exists() {
        missing.push("busybox-static (/bin/busybox)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{TEST}: missing {}", missing.join(", "));
    assert!(
        std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
        "{why} (MNIGS_E2E=1 forbids skipping)"
    );
    eprintln!("SKIPPED {why}");
    false
}

const BUSYBOX: &str = "/bin/busybox";

fn run_in(dir: &Path, argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The unpacked Debian kernel: (root, kernel version). Downloaded and unpacked on first use.
fn kernel(cache: &Path) -> Result<(PathBuf, String), String> {
    let root = cache.join("root");
    let modules = root.join("lib/modules");
    if !modules.exists() {
        fs::create_dir_all(cache).map_err(|e| e.to_string())?;
        let deps =
            cmd::run(&["apt-cache", "depends", "linux-image-amd64"]).map_err(|e| e.to_string())?;
        let pkg = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .ok_or_else(|| format!("no kernel package in: {deps}"))?
            .to_string();
        run_in(cache, &["apt-get", "download", &pkg])?;
        let deb = fs::read_dir(cache)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or("apt-get download left no .deb")?;
        let tmp = cache.join("root.tmp");
        let _ = fs::remove_dir_all(&tmp);
        run_in(
            cache,
            &["dpkg", "-x", &deb.display().to_string(), "root.tmp"],
        )?;
        let _ = fs::remove_file(&deb);
        fs::rename(&tmp, &root).map_err(|e| e.to_string())?;
    }
    let kv = fs::read_dir(&modules)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
        .ok_or("no kernel version under lib/modules")?;
    if !modules.join(&kv).join("modules.dep").exists() {
        let map = root.join(format!("boot/System.map-{kv}"));
        cmd::run(&[
            "depmod",
            "-b",
            &root.display().to_string(),
            "-F",
            &map.display().to_string(),
            &kv,
        ])
        .map_err(|e| e.to_string())?;
    }
    Ok((root, kv))
}

/// The module files to load, dependencies first, as paths relative to the modules dir.
fn module_order(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let norm = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|f| {
                f.to_string_lossy()
                    .trim_end_matches(".ko")
                    .replace('-', "_")
            })
            .unwrap_or_default()
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let d = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(norm(path), (path.to_string(), d));
    }
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        norm: &dyn Fn(&str) -> String,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, ds) = deps
            .get(name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        for d in ds {
            visit(&norm(d), deps, norm, seen, out)?;
        }
        out.push(path.clone());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(w, &deps, &norm, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// Copies `bin` to `root` at `dest` and every library `ldd` lists at its own path.
fn install_binary(root: &Path, bin: &Path, dest: &str) -> Result<(), String> {
    let target = root.join(dest.trim_start_matches('/'));
    fs::create_dir_all(target.parent().unwrap()).map_err(|e| e.to_string())?;
    fs::copy(bin, &target).map_err(|e| format!("{}: {e}", bin.display()))?;
    let ldd = cmd::run(&["ldd", &bin.display().to_string()]).unwrap_or_default();
    for word in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let lib = root.join(word.trim_start_matches('/'));
        if !lib.exists() {
            fs::create_dir_all(lib.parent().unwrap()).map_err(|e| e.to_string())?;
            fs::copy(word, &lib).map_err(|e| format!("{word}: {e}"))?;
        }
    }
    Ok(())
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

const GW_UCI: &str = "config mnigs 'main'\n\toption name 'gw'\n\toption database '/tmp/gw.db'\n\toption log_level 'debug'\n\n\
config gateway 'gateway'\n\toption enabled '1'\n\toption wan_interface 'wan0'\n\toption lease_seconds '30'\n\
\toption ipv6_pool ''\n\toption nat 'nft'\n\tlist method 'gre'\n\tlist method 'ipip'\n\tlist method 'wireguard'\n";

const SUB_UCI: &str = "config mnigs 'main'\n\toption name 'sub'\n\toption database '/tmp/sub.db'\n\toption log_level 'debug'\n\n\
config subscriber 'subscriber'\n\toption enabled '1'\n\tlist method 'gre'\n\tlist method 'ipip'\n\tlist method 'wireguard'\n\n\
config discovery 'd'\n\toption method 'routes'\n\toption timeout_ms '500'\n";

/// The guest's `/init`: builds the namespaces, runs the daemons and prints `RESULT` lines.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/usr/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run; mkdir -p /run/netns /var/lib; ln -s /run /var/run
# devtmpfs has no /dev/stdin (udev makes it); `wg set … private-key /dev/stdin` needs it.
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin
echo "guest up"
# Negative control: without the modules the kernel has none of these link types.
pre=0
/usr/bin/ip link add nx0 type gre remote 192.0.2.1 2>/dev/null && pre=1
/usr/bin/ip link add nx1 type ipip remote 192.0.2.1 2>/dev/null && pre=1
/usr/bin/ip link add nx2 type wireguard 2>/dev/null && pre=1
[ $pre = 0 ] && echo "RESULT no-modules-no-tunnels ok" || echo "RESULT no-modules-no-tunnels FAIL"
bad=0
for m in $(cat /mods/order); do insmod /mods/$m || { bad=1; echo "insmod $m failed"; }; done
[ $bad = 0 ] && echo "RESULT insmod ok" || echo "RESULT insmod FAIL"
IP=/usr/bin/ip
for n in sub gw inet; do $IP netns add $n; done
for n in sub gw inet; do
  $IP netns exec $n sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter'
  $IP -n $n link set lo up
done
$IP link add m0 netns sub type veth peer name m0 netns gw
$IP link add wan0 netns gw type veth peer name wan0 netns inet
$IP -n sub link set m0 up; $IP -n gw link set m0 up; $IP -n gw link set wan0 up; $IP -n inet link set wan0 up
$IP -n sub addr add 10.77.0.1/24 dev m0; $IP -n sub addr add fd77::1/64 dev m0 nodad
$IP -n gw addr add 10.77.0.3/24 dev m0; $IP -n gw addr add fd77::3/64 dev m0 nodad
$IP -n gw addr add 198.51.100.1/24 dev wan0; $IP -n gw route add default via 198.51.100.2
$IP -n inet addr add 198.51.100.2/24 dev wan0; $IP -n inet addr add 203.0.113.7/32 dev lo
# The gateway turns forwarding on and leaves it on; start with it on.
$IP netns exec gw sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'
# Everything mnigs may touch, listed before and after.
# Interface indexes are dropped: a restarted daemon recreates its interfaces under new ones.
listing() { for c in "-o link show" "-o addr show" "route show table all" "-6 route show table all" "rule show"; do $IP -n $1 $c; done | sed 's/^[0-9]*: //; s/ link\/.*//; s/\\ *valid_lft.*//'; $IP netns exec $1 nft list ruleset; }
# Links settle first (carrier, link-local addresses), so the listings compare.
for i in $(seq 1 50); do
  n=0; for ns in gw sub; do $IP -n $ns -6 -o addr show dev m0 | grep -q fe80 && n=$((n+1)); done
  [ $n = 2 ] && ! $IP -n gw -o link show | grep -q NO-CARRIER && break; sleep 0.1
done
listing gw > /tmp/before-gw; listing sub > /tmp/before-sub
$IP netns exec gw mnigs daemon -c /etc/gw.uci > /tmp/gw.log 2>&1 &
GWPID=$!
$IP netns exec sub mnigs daemon -c /etc/sub.uci > /tmp/sub.log 2>&1 &
SUBPID=$!
for i in $(seq 1 100); do
  $IP netns exec gw mnigs status -c /etc/gw.uci >/dev/null 2>&1 && $IP netns exec sub mnigs status -c /etc/sub.uci >/dev/null 2>&1 && break
  sleep 0.2
done
ping_inet() { $IP netns exec sub ping -c 1 -W 1 203.0.113.7 >/dev/null 2>&1; }
ping_inet && echo "RESULT control FAIL: sub reaches inet without a gateway" || echo "RESULT control ok"
gw_leftovers() { $IP -n gw -o link show | grep -c ': mnt'; $IP netns exec gw wg show all peers | wc -l; }
t() {
  name=$1; addr=$2; method=$3
  if $IP netns exec sub mnigs connect $addr -m $method -c /etc/sub.uci > /tmp/c.out 2>&1; then
    ok=0; for i in 1 2 3 4 5; do ping_inet && { ok=1; break; }; done
    [ $ok = 1 ] && echo "RESULT $name ok" || echo "RESULT $name FAIL: no ping"
  else
    echo "RESULT $name FAIL: connect: $(cat /tmp/c.out)"; tail -5 /tmp/sub.log; tail -5 /tmp/gw.log
  fi
  if [ $method = wireguard ]; then
    $IP -n sub -d link show | grep -q ' wireguard ' && echo "RESULT wireguard-kernel ok" || echo "RESULT wireguard-kernel FAIL"
  fi
  $IP netns exec sub mnigs disconnect -c /etc/sub.uci >/dev/null 2>&1
  left=$(echo $(gw_leftovers))
  [ "$left" = "0 0" ] && echo "RESULT $name-clean ok" || echo "RESULT $name-clean FAIL: $left"
  ping_inet && echo "RESULT $name-cut FAIL" || echo "RESULT $name-cut ok"
}
t gre4 10.77.0.3 gre
t ipip4 10.77.0.3 ipip
t gre6 fd77::3 gre
t ipip6 fd77::3 ipip
t wireguard 10.77.0.3 wireguard
# The running gateway without sessions, to compare with after the expiry below.
listing gw | sort > /tmp/idle-gw
# Gateway restart: the session comes back from the store and the tunnel carries traffic again.
$IP netns exec sub mnigs connect 10.77.0.3 -m gre -c /etc/sub.uci >/dev/null 2>&1
kill $GWPID; for i in $(seq 1 50); do kill -0 $GWPID 2>/dev/null || break; sleep 0.2; done
ping_inet && echo "RESULT gw-restart FAIL: ping with the gateway down"
$IP netns exec gw mnigs daemon -c /etc/gw.uci >> /tmp/gw.log 2>&1 &
GWPID=$!
# Generous: under software emulation on a loaded host the daemon takes a while to come back.
back=0; for i in $(seq 1 90); do ping_inet && { back=1; break; }; done
[ $back = 1 ] && echo "RESULT gw-restart ok" || echo "RESULT gw-restart FAIL"
$IP netns exec sub mnigs disconnect -c /etc/sub.uci >/dev/null 2>&1
# Expiry: the subscriber's daemon dies while connected; the gateway removes the tunnel itself.
$IP netns exec sub mnigs connect 10.77.0.3 -m ipip -c /etc/sub.uci >/dev/null 2>&1
[ "$($IP -n gw -o link show | grep -c ': mnt')" = 1 ] || echo "RESULT expiry FAIL: no tunnel to expire"
kill -9 $SUBPID
gone=0
for i in $(seq 1 250); do [ "$($IP -n gw -o link show | grep -c ': mnt')" = 0 ] && { gone=1; break; }; sleep 0.2; done
[ $gone = 1 ] && echo "RESULT expiry ok" || echo "RESULT expiry FAIL"
listing gw | sort > /tmp/expired-gw
diff /tmp/idle-gw /tmp/expired-gw > /tmp/diff-expiry && echo "RESULT expiry-listing ok" || { echo "RESULT expiry-listing FAIL"; cat /tmp/diff-expiry; }
$IP -n sub link del mnigs-tun
kill $GWPID; for i in $(seq 1 50); do kill -0 $GWPID 2>/dev/null || break; sleep 0.2; done
for n in gw sub; do
  listing $n > /tmp/after-$n
  diff /tmp/before-$n /tmp/after-$n > /tmp/diff-$n && echo "RESULT listing-$n ok" || { echo "RESULT listing-$n FAIL"; cat /tmp/diff-$n; }
done
left=$($IP -n gw -o link show | grep -c -e ': mnt' -e ': mnigs'; $IP -n sub -o link show | grep -c ': mnigs'; $IP netns exec gw nft list ruleset | grep -c mnigs)
left=$(echo $left)
[ "$left" = "0 0 0" ] && echo "RESULT teardown ok" || echo "RESULT teardown FAIL: $left"
echo "--- gw log"; tail -30 /tmp/gw.log; echo "--- sub log"; tail -30 /tmp/sub.log
echo "RESULT done"
poweroff -f
echo o > /proc/sysrq-trigger
"#;

/// Builds the initramfs in `work`; returns its path.
fn initramfs(work: &Path, kroot: &Path, kv: &str) -> Result<PathBuf, String> {
    let root = work.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "etc", "mods", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(|e| e.to_string())?;
    install_binary(&root, &which("ip"), "/usr/bin/ip")?;
    install_binary(&root, &which("nft"), "/usr/sbin/nft")?;
    install_binary(&root, &which("wg"), "/usr/bin/wg")?;
    install_binary(&root, Path::new(EXE), "/usr/bin/mnigs")?;
    cmd::run(&["strip", &root.join("usr/bin/mnigs").display().to_string()])
        .map_err(|e| e.to_string())?;
    let mods = kroot.join("lib/modules").join(kv);
    let dep = fs::read_to_string(mods.join("modules.dep")).map_err(|e| e.to_string())?;
    let order = module_order(&dep, &MODULES)?;
    let mut names = Vec::new();
    for rel in &order {
        let name = Path::new(rel)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        fs::copy(mods.join(rel), root.join("mods").join(&name))
            .map_err(|e| format!("{rel}: {e}"))?;
        names.push(name);
    }
    fs::write(root.join("mods/order"), names.join("\n") + "\n").map_err(|e| e.to_string())?;
    fs::write(root.join("etc/gw.uci"), GW_UCI).map_err(|e| e.to_string())?;
    fs::write(root.join("etc/sub.uci"), SUB_UCI).map_err(|e| e.to_string())?;
    let init = root.join("init");
    fs::write(&init, INIT).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    // cpio wants the file list on stdin; the archive goes to a file, then gzip.
    let list: String = walk(&root, &root).join("\n") + "\n";
    let cpio = work.join("initramfs.cpio");
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .map_err(|e| e.to_string())?;
    if !child.wait().map_err(|e| e.to_string())?.success() {
        return Err("cpio failed".into());
    }
    let _ = fs::remove_file(work.join("initramfs.cpio.gz"));
    cmd::run(&["gzip", "-1", &cpio.display().to_string()]).map_err(|e| e.to_string())?;
    Ok(work.join("initramfs.cpio.gz"))
}

/// Relative paths of everything below `dir`, parents first.
fn walk(base: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        out.push(p.strip_prefix(base).unwrap().display().to_string());
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(base, &p));
        }
    }
    out
}

#[test]
fn module_order_puts_dependencies_first() {
    let dep = "kernel/net/ipv4/ip_gre.ko: kernel/net/ipv4/gre.ko kernel/net/ipv4/ip_tunnel.ko\n\
               kernel/net/ipv4/gre.ko:\n\
               kernel/net/ipv4/ip_tunnel.ko:\n\
               kernel/lib/crypto/libcurve25519-generic.ko:\n\
               kernel/wg/wireguard.ko: kernel/lib/crypto/libcurve25519-generic.ko kernel/net/ipv4/ip_tunnel.ko\n";
    let order = module_order(dep, &["ip_gre", "wireguard"]).unwrap();
    assert_eq!(
        order,
        [
            "kernel/net/ipv4/gre.ko",
            "kernel/net/ipv4/ip_tunnel.ko",
            "kernel/net/ipv4/ip_gre.ko",
            "kernel/lib/crypto/libcurve25519-generic.ko",
            "kernel/wg/wireguard.ko"
        ]
    );
    assert!(module_order(dep, &["sit"]).is_err());
}

#[test]
fn kernel_tunnels_in_a_vm() {
    if !gate() {
        return;
    }
    let started = Instant::now();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-kernel");
    let (kroot, kv) = kernel(&cache).expect("Debian kernel");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let initrd = initramfs(&work, &kroot, &kv).expect("initramfs");
    let built = started.elapsed();
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{kv}"));
    // KVM here is not usable (see the notes); software emulation is slow but enough.
    let out = cmd::run_full(
        &[
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "512M",
            "-smp",
            "1",
            "-nographic",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-kernel",
            &vmlinuz.display().to_string(),
            "-initrd",
            &initrd.display().to_string(),
            "-append",
            "console=ttyS0 panic=-1 quiet",
        ],
        None,
        Duration::from_secs(240),
    );
    let _ = fs::remove_dir_all(&work);
    if let Ok(text) = &out {
        let _ = fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-console.txt"),
            text,
        );
    }
    let console = match out {
        Ok(s) => s,
        Err(e) => panic!("the VM did not run to its end: {e}"),
    };
    println!(
        "vm: initramfs built in {built:?}, whole run {:?}",
        started.elapsed()
    );
    // A name reported more than once keeps its first failure.
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in console
        .lines()
        .filter_map(|l| l.split("RESULT ").nth(1))
        .filter_map(|r| r.split_once(' '))
    {
        let kept = results
            .entry(k.to_string())
            .or_insert_with(|| v.trim().to_string());
        if kept == "ok" {
            *kept = v.trim().to_string();
        }
    }
    for (k, v) in &results {
        println!("vm: {k} {v}");
    }
    assert!(
        console.contains("RESULT done"),
        "the guest did not finish:\n{console}"
    );
    let failed: Vec<String> = EXPECTED
        .iter()
        .filter(|k| results.get(**k).map(String::as_str) != Some("ok"))
        .map(|k| format!("{k}: {}", results.get(*k).map_or("missing", |v| v)))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\nconsole:\n{console}");
}
