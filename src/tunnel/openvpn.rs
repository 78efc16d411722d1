//! OpenVPN 2.6: one server process on the gateway (tun, UDP), one client process on the subscriber.
//!
//! # Who may connect
//! The gateway keeps its own small certificate authority. A subscriber keeps its own key and
//! sends a certificate request (`options.csr`) in `requestConnection`; the gateway signs it with a
//! common name it chooses (`mn` + the subscriber's tunnel address + a hash of the request) and
//! writes a client-config file of that name holding the subscriber's pool address. The server
//! runs with `--ccd-exclusive`, so a certificate whose file is gone is refused at its next
//! handshake, and on release mnigs tells the server (management socket, `kill CN`) to drop that
//! one client at once. No secret is shared between subscribers: each has its own key, and the
//! only thing the gateway hands out is a certificate for the subscriber's own public key.
//!
//! # Files
//! Everything lives below `directory` (UCI): `server/` (CA, server key, issued certificates,
//! `ccd/`, pid, log, management socket) and `client/` (our key, the last grant's certificates,
//! pid, log). The keys and certificates ([`key_files`]) are also kept in the store and put back
//! from it at start ([`stored_keys`]), so the directory may be volatile.

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::json;
use crate::protocol::Grant;
use crate::store::Store;
use crate::sys::{cmd, fs, net};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest certificate or request accepted in a message, in bytes.
pub const MAX_PEM: usize = 4096;

/// How long the subscriber waits for its tunnel to come up before giving up on the method.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the subscriber waits for the server's first packet. Its answer to the client's
/// first packet needs no crypto and comes at once; a port that swallows packets (a firewall
/// between, a frozen server) is given up after this, so that the next shared method is up a
/// few seconds after start instead of after [`CONNECT_TIMEOUT`]. Once the server was heard,
/// the handshake gets the whole [`CONNECT_TIMEOUT`] (a slow mesh, a busy gateway).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(3);

/// What openvpn logs (at `--verb` 2 and above) when the first packet from the server arrives.
const SERVER_HEARD: &str = "Initial packet from";

/// Refused attempts (ICMP port unreachable) after which the subscriber gives up at once.
const REFUSALS: usize = 2;

/// Common name the gateway gives its server certificate (checked by clients).
const SERVER_CN: &str = "mnigs-gateway";

/// Checks that `pem` is one PEM block of `kind` (e.g. `CERTIFICATE`) in plain base64 lines.
pub fn check_pem(pem: &str, kind: &str) -> Result<(), String> {
    if pem.len() > MAX_PEM {
        return Err(format!("longer than {MAX_PEM} bytes"));
    }
    let begin = format!("-----BEGIN {kind}-----");
    let end = format!("-----END {kind}-----");
    let lines: Vec<&str> = pem.trim_end().lines().collect();
    if lines.len() < 3 || lines[0] != begin || lines[lines.len() - 1] != end {
        return Err(format!("must be one PEM block '{begin}' … '{end}'"));
    }
    let body_ok = lines[1..lines.len() - 1].iter().all(|l| {
        !l.is_empty()
            && l.len() <= 76
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    });
    if body_ok {
        Ok(())
    } else {
        Err("PEM body must be base64 lines".into())
    }
}

/// The common name the gateway gives a subscriber's certificate: one per request (key), the
/// same every time (so `accept` is idempotent). It does not depend on the tunnel address, so
/// the certificate can be signed before the lease is granted, outside the gateway's lock; the
/// address is bound to it by the client-config file written at `accept`. Two live sessions
/// never share a request (the lease book refuses another owner's, see
/// [`crate::gateway::leases::identity_of`]), and the book gives one owner one lease.
pub fn client_cn(csr: &str) -> String {
    // FNV-1a over the request: not a security boundary (the CA signature is), only a tag that
    // keeps a new key from inheriting an old client-config file.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in csr.trim_end().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mn{h:016x}")
}

/// Dotted netmask of a prefix length (OpenVPN wants `ifconfig-push ADDR MASK`).
pub fn netmask(len: u8) -> Ipv4Addr {
    let len = u32::from(len.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0))
}

/// Checks `ip -o addr show dev TUN` against the granted `ADDRESS/LEN`s: every granted one is
/// there, and nothing else but link-local addresses.
pub fn check_tun_addresses(listing: &str, granted: &[String]) -> Result<(), String> {
    let found: Vec<&str> = listing
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "inet" || *x == "inet6")?;
            w.get(i + 1).copied()
        })
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    if let Some(extra) = found.iter().find(|a| !granted.iter().any(|g| g == *a)) {
        return Err(format!(
            "the tun carries {extra}, which was not granted ({})",
            granted.join(", ")
        ));
    }
    if let Some(missing) = granted.iter().find(|g| !found.contains(&g.as_str())) {
        return Err(format!("the tun lacks the granted {missing}"));
    }
    Ok(())
}

/// The server's command line.
pub fn server_argv(dir: &Path, ifname: &str, port: u16, mtu: u16, net: &GatewayNet) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    let mut argv: Vec<String> = vec!["openvpn".into()];
    let mut opt = |items: &[&str]| argv.extend(items.iter().map(|s| s.to_string()));
    opt(&[
        "--mode",
        "server",
        "--tls-server",
        "--dev",
        ifname,
        "--dev-type",
        "tun",
    ]);
    opt(&[
        "--topology",
        "subnet",
        "--proto",
        "udp",
        "--port",
        &port.to_string(),
    ]);
    opt(&["--tun-mtu", &mtu.to_string()]);
    let mask = netmask(net.cidr4).to_string();
    opt(&["--ifconfig", &net.ipv4.to_string(), &mask]);
    if let Some((v6, len)) = net.ipv6 {
        // The second address only matters for point-to-point; in subnet mode it is the gateway's.
        opt(&["--ifconfig-ipv6", &format!("{v6}/{len}"), &v6.to_string()]);
    }
    opt(&[
        "--ca",
        &p("ca.crt"),
        "--cert",
        &p("server.crt"),
        "--key",
        &p("server.key"),
    ]);
    opt(&["--push", "topology subnet"]);
    opt(&[
        "--dh",
        "none",
        "--client-config-dir",
        &p("ccd"),
        "--ccd-exclusive",
    ]);
    opt(&[
        "--management",
        &p("mgmt.sock"),
        "unix",
        "--keepalive",
        "2",
        "10",
    ]);
    opt(&["--writepid", &p("openvpn.pid"), "--log", &p("openvpn.log")]);
    opt(&["--daemon", "mnigs-openvpn", "--verb", "3"]);
    argv
}

/// The client-config file of one subscriber: its pool addresses.
pub fn client_config(net: &GatewayNet, peer: &Peer<'_>) -> String {
    let mut text = format!("ifconfig-push {} {}\n", peer.ipv4, netmask(net.cidr4));
    if let (Some(v6), Some((gw6, len))) = (peer.ipv6, net.ipv6) {
        text.push_str(&format!("ifconfig-ipv6-push {v6}/{len} {gw6}\n"));
    }
    text
}

/// The client's command line for a grant already written to `dir`.
/// `--pull-filter` options so that the client takes nothing from the server beyond the grant:
/// the pushed `ifconfig`/`ifconfig-ipv6` only when it is exactly the granted address (OpenVPN
/// matches by prefix, first match wins), `topology subnet`, and no routes, redirects, DNS or
/// timers at all (our own `--keepalive` stays). Peer id, cipher and the like still come through.
pub fn pull_filters(
    v4: (Ipv4Addr, u8),
    v6: Option<(std::net::Ipv6Addr, u8)>,
    gw6: Option<std::net::Ipv6Addr>,
) -> Vec<String> {
    let f = |action: &str, text: String| vec!["--pull-filter".to_string(), action.into(), text];
    let mut out = f("accept", format!("ifconfig {} {}", v4.0, netmask(v4.1)));
    if let Some((a, len)) = v6 {
        let mut text = format!("ifconfig-ipv6 {a}/{len}");
        if let Some(g) = gw6 {
            text.push_str(&format!(" {g}"));
        }
        out.extend(f("accept", text));
    }
    out.extend(f("accept", "topology subnet".into()));
    for ignored in [
        "ifconfig",
        "topology",
        "route",
        "redirect-",
        "dhcp-option",
        "dns",
        "block-",
        "register-dns",
        "ping",
        "inactive",
        "session-timeout",
        "explicit-exit",
        "tun-mtu",
        "echo",
        "setenv",
    ] {
        out.extend(f("ignore", ignored.into()));
    }
    out
}

/// The client's command line; `filters` are its [`pull_filters`].
pub fn client_argv(
    dir: &Path,
    ifname: &str,
    gateway: IpAddr,
    port: u16,
    mtu: u16,
    filters: &[String],
) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    let proto = if gateway.is_ipv6() { "udp6" } else { "udp4" };
    let mut argv: Vec<String> = vec!["openvpn".into()];
    let mut opt = |items: &[&str]| argv.extend(items.iter().map(|s| s.to_string()));
    opt(&["--client", "--dev", ifname, "--dev-type", "tun", "--nobind"]);
    opt(&["--remote", &gateway.to_string(), &port.to_string(), proto]);
    // The tun device (and so our routes through it) survives reconnects, e.g. a gateway restart.
    opt(&[
        "--tun-mtu",
        &mtu.to_string(),
        "--route-noexec",
        "--persist-tun",
    ]);
    opt(&[
        "--ca",
        &p("ca.crt"),
        "--cert",
        &p("client.crt"),
        "--key",
        &p("client.key"),
    ]);
    opt(&[
        "--remote-cert-tls",
        "server",
        "--verify-x509-name",
        SERVER_CN,
        "name",
    ]);
    opt(&["--connect-retry", "1", "--keepalive", "2", "10"]);
    opt(&["--writepid", &p("openvpn.pid"), "--log", &p("openvpn.log")]);
    opt(&["--daemon", "mnigs-openvpn-client", "--verb", "3"]);
    argv.extend(filters.iter().cloned());
    argv
}

fn io(what: &str, path: &Path, e: std::io::Error) -> TunnelError {
    TunnelError::Invalid(format!("{what} {}: {e}", path.display()))
}

/// A failed write, rename or removal of one of our files.
fn fs_error(e: fs::FsError) -> TunnelError {
    TunnelError::Invalid(e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), TunnelError> {
    fs::write(path, text).map_err(fs_error)
}

fn read(path: &Path) -> Result<String, TunnelError> {
    std::fs::read_to_string(path).map_err(|e| io("cannot read", path, e))
}

fn mkdir(path: &Path) -> Result<(), TunnelError> {
    fs::private_dir(path).map_err(fs_error)
}

/// Makes a new P-256 key at `key` and a certificate request for `subject` at `req`.
fn new_key_and_request(key: &Path, req: &Path, subject: &str) -> Result<(), TunnelError> {
    let (key, req) = (s(key), s(req));
    cmd::run(&[
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        subject,
        "-out",
        &req,
    ])?;
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Makes an EC key and a self-signed certificate (the gateway's CA) unless both exist.
fn self_signed(key: &Path, cert: &Path, cn: &str) -> Result<(), TunnelError> {
    if key.exists() && cert.exists() {
        return Ok(());
    }
    let subj = format!("/CN={cn}");
    cmd::run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(key),
        "-out",
        &s(cert),
        "-days",
        "3650",
        "-subj",
        &subj,
    ])?;
    Ok(())
}

/// Signs `csr` with the CA in `dir`, giving the certificate common name `cn`.
fn sign(dir: &Path, csr: &Path, cn: &str, out: &Path, server: bool) -> Result<(), TunnelError> {
    let subj = format!("/CN={cn}");
    let ext = dir.join(if server { "server.ext" } else { "client.ext" });
    let usage = if server { "serverAuth" } else { "clientAuth" };
    let text = format!("keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n");
    // Written once (the directory may be on flash), whole: signings run in parallel.
    if std::fs::read_to_string(&ext).ok().as_deref() != Some(text.as_str()) {
        let tmp = dir.join(format!(
            ".{}.{}",
            if server { "server" } else { "client" },
            unique()
        ));
        fs::replace(&ext, &tmp, &text).map_err(fs_error)?;
    }
    // A random serial rather than a serial file: no write per signing, none shared by
    // signings running at once.
    let serial = format!("0x{}", &unique()[..16]);
    cmd::run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &s(csr),
        "-CA",
        &s(&dir.join("ca.crt")),
        "-CAkey",
        &s(&dir.join("ca.key")),
        "-set_serial",
        &serial,
        "-subj",
        &subj,
        "-days",
        "3650",
        "-extfile",
        &s(&ext),
        "-out",
        &s(out),
    ])?;
    Ok(())
}

/// Makes the gateway's CA and server certificate unless they exist.
fn server_keys(dir: &Path) -> Result<(), TunnelError> {
    self_signed(&dir.join("ca.key"), &dir.join("ca.crt"), "mnigs-ca")?;
    let (key, crt) = (dir.join("server.key"), dir.join("server.crt"));
    if !key.exists() || !crt.exists() {
        let req = dir.join("server.csr");
        new_key_and_request(&key, &req, "/CN=server")?;
        sign(dir, &req, SERVER_CN, &crt, true)?;
        let _ = fs::remove_file(&req);
    }
    Ok(())
}

/// The files that make an OpenVPN side's identity (kept in the store, so that they live in the
/// volatile directory and reach flash only with the store's persistence).
pub fn key_files(side: Side) -> &'static [&'static str] {
    match side {
        Side::Server => &["ca.key", "ca.crt", "server.key", "server.crt"],
        Side::Client => &["client.key", "client.csr"],
    }
}

/// OpenVPN's keys and certificates live in the store (whose persistence spares the flash) and
/// are written to the method's directory (volatile by default) at start: `save` false puts the
/// stored ones back where files are missing, `save` true stores what the method made.
pub fn stored_keys(store: &Mutex<Store>, side: Side, dir: &Path, save: bool) -> Result<(), String> {
    let store = store.lock().expect("not poisoned");
    for name in key_files(side) {
        let key = format!("openvpn/{name}");
        let path = dir.join(name);
        if save {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("openvpn: cannot read {name}: {e}"))?;
            if store.get_kv(&key).map_err(|e| e.to_string())?.as_deref() != Some(text.as_str()) {
                store.set_kv(&key, &text).map_err(|e| e.to_string())?;
            }
        } else if !path.exists()
            && let Some(text) = store.get_kv(&key).map_err(|e| e.to_string())?
        {
            fs::private_dir(dir).map_err(|e| format!("openvpn: {e}"))?;
            fs::write_new_private(&path, text).map_err(|e| format!("openvpn: {e}"))?;
        }
    }
    Ok(())
}

/// Signs a subscriber's `csr` as `issued/<cn>.crt` unless that certificate exists. The request
/// is never kept, and a failed signing leaves no file behind.
/// Returns the certificate's path and whether this call made it. Requests for one `cn` may
/// be signed at once: each signs under names of its own and the certificate appears whole.
fn issue(dir: &Path, cn: &str, csr: &str) -> Result<(PathBuf, bool), TunnelError> {
    let issued = dir.join("issued");
    mkdir(&issued)?;
    let crt = issued.join(format!("{cn}.crt"));
    if crt.exists() {
        return Ok((crt, false));
    }
    let tag = unique();
    let req = issued.join(format!(".{cn}.{tag}.csr"));
    let out = issued.join(format!(".{cn}.{tag}.crt"));
    let signed = write(&req, csr)
        .and_then(|()| sign(dir, &req, cn, &out, false))
        .and_then(|()| fs::put_in_place(&out, &crt).map_err(fs_error));
    let _ = fs::remove_file(&req);
    let _ = fs::remove_file(&out);
    signed.map(|()| (crt, true))
}

/// 32 random hex digits, for names and serials of our own.
fn unique() -> String {
    crate::ids::new_sid()
}

/// The PID in `pidfile` if that process is alive and is an openvpn.
fn running_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let exe = cmdline.split(|b| *b == 0).next()?;
    exe.ends_with(b"openvpn").then_some(pid)
}

/// Stops the openvpn of `pidfile` (SIGTERM, then SIGKILL after 3 s) and removes the file.
fn stop(pidfile: &Path) {
    stop_within(pidfile, Duration::from_secs(3));
}

/// [`stop`] with `grace` between SIGTERM and SIGKILL.
fn stop_within(pidfile: &Path, grace: Duration) {
    if let Some(pid) = running_pid(pidfile) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = fs::remove_file(pidfile);
}

/// Tail of an openvpn log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(" Note: ") && !l.contains("WARNING"))
        .collect();
    lines[lines.len().saturating_sub(12)..].join(" | ")
}

/// Sends one command to the management socket and returns the server's answer line.
fn manage(socket: &Path, command: &str) -> Result<String, TunnelError> {
    let err = |e: std::io::Error| io("management socket", socket, e);
    let stream = UnixStream::connect(socket).map_err(err)?;
    // The server is local and answers in milliseconds; one that hangs must not hold a release
    // (and the subscriber waiting for it, falling back to its next method) for long.
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(err)?;
    let mut writer = stream.try_clone().map_err(err)?;
    let mut reader = BufReader::new(stream);
    // One command at a time: openvpn drops output still queued when it reads `quit`.
    writer
        .write_all(format!("{command}\n").as_bytes())
        .map_err(err)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(err)? == 0 {
            return Err(TunnelError::Invalid("management socket closed".into()));
        }
        // Skip the banner and real-time notifications (`>INFO:…`, `>LOG:…`).
        if line.starts_with("SUCCESS:") || line.starts_with("ERROR:") {
            let _ = writer.write_all(b"quit\n");
            return Ok(line.trim_end().to_string());
        }
    }
}

/// Which end this instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The gateway: one server process.
    Server,
    /// The subscriber: one client process.
    Client,
}

/// The OpenVPN method, for one role.
pub struct Openvpn {
    ifname: String,
    port: u16,
    mtu: u16,
    /// `server/` or `client/` below the configured directory.
    dir: PathBuf,
    /// The subscriber's certificate request (client side), made once from its key.
    csr: String,
    /// Gateway: its tunnel addresses, from `prepare`.
    net: Option<GatewayNet>,
}

impl Openvpn {
    /// A method instance; for the client side its key and request are made now if missing.
    pub fn new(
        side: Side,
        directory: &Path,
        ifname: &str,
        port: u16,
        mtu: u16,
    ) -> Result<Openvpn, TunnelError> {
        let dir = directory.join(match side {
            Side::Server => "server",
            Side::Client => "client",
        });
        mkdir(&dir)?;
        let mut csr = String::new();
        if side == Side::Server {
            server_keys(&dir)?;
        }
        if side == Side::Client {
            let key = dir.join("client.key");
            let req = dir.join("client.csr");
            if !key.exists() || !req.exists() {
                new_key_and_request(&key, &req, "/CN=mnigs-subscriber")?;
            }
            csr = read(&req)?;
        }
        Ok(Openvpn {
            ifname: ifname.to_string(),
            port,
            mtu,
            dir,
            csr,
            net: None,
        })
    }

    fn ccd(&self, cn: &str) -> PathBuf {
        self.dir.join("ccd").join(cn)
    }

    fn csr_of(options: &Map<String, Value>) -> Result<&str, TunnelError> {
        options
            .get("csr")
            .and_then(Value::as_str)
            .ok_or_else(|| TunnelError::Invalid("options.csr is missing".into()))
    }

    /// The directory of this side's files (`server/` or `client/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PID of the running openvpn of this side, if any.
    pub fn pid(&self) -> Option<i32> {
        running_pid(&self.dir.join("openvpn.pid"))
    }
}

impl Method for Openvpn {
    fn name(&self) -> &'static str {
        "openvpn"
    }

    fn check_options(&self, options: &Map<String, Value>) -> Result<(), String> {
        match options.get("csr") {
            Some(Value::String(c)) => {
                check_pem(c, "CERTIFICATE REQUEST").map_err(|e| format!("options.csr: {e}"))
            }
            Some(_) => Err("options.csr must be a string".into()),
            None => Err("options.csr (a PEM certificate request) is required for openvpn".into()),
        }
    }

    fn prepare(&mut self, gw: &GatewayNet) -> Result<(), TunnelError> {
        let pidfile = self.dir.join("openvpn.pid");
        // A server left by an earlier run is replaced; the lease book re-adds the live clients.
        stop(&pidfile);
        net::link_delete(&self.ifname)?;
        let ccd = self.dir.join("ccd");
        let _ = fs::remove_dir_all(&ccd);
        mkdir(&ccd)?;
        server_keys(&self.dir)?;
        let log = self.dir.join("openvpn.log");
        let _ = fs::remove_file(&log);
        // A socket left by a crashed server must not pass for the new one's.
        let _ = fs::remove_file(&self.dir.join("mgmt.sock"));
        self.net = Some(gw.clone());
        let argv = server_argv(&self.dir, &self.ifname, self.port, self.mtu, gw);
        cmd::run(&argv)?;
        // The daemon forks before it opens its tun device and management socket.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if net::link_exists(&self.ifname) && self.dir.join("mgmt.sock").exists() {
                return Ok(());
            }
            if self.pid().is_none() && started.elapsed() > Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TunnelError::Invalid(format!(
            "openvpn server did not come up: {}",
            log_tail(&log)
        )))
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        if self.pid().is_none() {
            return Err(TunnelError::Refused(
                "the openvpn server is not running".into(),
            ));
        }
        let csr = Self::csr_of(peer.options)?;
        let cn = client_cn(csr);
        // Usually signed already, outside the gateway's lock (see `slow_part`).
        let (crt, _) = issue(&self.dir, &cn, csr)?;
        let net = self
            .net
            .clone()
            .ok_or_else(|| TunnelError::Invalid("openvpn is not prepared".into()))?;
        let ccd = self.ccd(&cn);
        let configured = write(&ccd, &client_config(&net, peer))
            .and_then(|()| super::host_routes(&self.ifname, peer, true));
        if let Err(e) = configured {
            let _ = fs::remove_file(&ccd);
            let _ = fs::remove_file(&crt);
            return Err(e);
        }
        let mut fields = Map::new();
        json::put(&mut fields, "certificate", &read(&crt)?);
        json::put(&mut fields, "ca", &read(&self.dir.join("ca.crt"))?);
        json::put(&mut fields, "port", &self.port);
        json::put(&mut fields, "mtu", &self.mtu);
        Ok(fields)
    }

    fn slow_part(&self, options: &Map<String, Value>) -> Option<super::SlowPart> {
        let csr = Self::csr_of(options).ok()?.to_string();
        let dir = self.dir.clone();
        Some(Box::new(move || {
            let cn = client_cn(&csr);
            let (crt, made) = issue(&dir, &cn, &csr)?;
            Ok(Box::new(move || {
                if made {
                    let _ = fs::remove_file(&crt);
                }
            }) as Box<dyn FnOnce() + Send>)
        }))
    }

    fn ingress(&self, _peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        Ok(super::Ingress::Forwarded {
            ifname: self.ifname.clone(),
            mac: None,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        let csr = Self::csr_of(peer.options)?;
        let cn = client_cn(csr);
        // First the file (no new handshake is admitted), then the running session.
        let ccd = self.ccd(&cn);
        if ccd.exists() {
            fs::remove_file(&ccd).map_err(fs_error)?;
        }
        let _ = fs::remove_file(&self.dir.join("issued").join(format!("{cn}.crt")));
        if net::link_exists(&self.ifname) {
            super::host_routes(&self.ifname, peer, false)?;
        }
        let socket = self.dir.join("mgmt.sock");
        if self.pid().is_some() && socket.exists() {
            let answer = manage(&socket, &format!("kill {cn}"))?;
            // "common name 'X' not found" means the client was not connected: nothing to cut.
            if answer.starts_with("ERROR") && !answer.contains("not found") {
                return Err(TunnelError::Invalid(format!("openvpn kill {cn}: {answer}")));
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        stop(&self.dir.join("openvpn.pid"));
        let _ = fs::remove_dir_all(&self.dir.join("ccd"));
        let _ = fs::remove_dir_all(&self.dir.join("issued"));
        let _ = fs::remove_file(&self.dir.join("mgmt.sock"));
        Ok(net::link_delete(&self.ifname)?)
    }

    fn request_options(&self) -> Map<String, Value> {
        let mut m = Map::new();
        json::put(&mut m, "csr", &self.csr);
        m
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let field = |k: &str| grant.extra.get(k).and_then(Value::as_str);
        let cert = field("certificate")
            .ok_or_else(|| TunnelError::Invalid("gateway's answer lacks certificate".into()))?;
        let ca =
            field("ca").ok_or_else(|| TunnelError::Invalid("gateway's answer lacks ca".into()))?;
        for (what, pem) in [("certificate", cert), ("ca", ca)] {
            check_pem(pem, "CERTIFICATE")
                .map_err(|e| TunnelError::Invalid(format!("gateway {what}: {e}")))?;
        }
        let port = grant
            .extra
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| TunnelError::Invalid("gateway's answer lacks a valid port".into()))?;
        let mtu = super::grant_mtu(grant, self.mtu);
        let ((ipv4, cidr4), ipv6) = super::wireguard::grant_addresses(grant)?;
        let gw6 = grant
            .ipv6gateway
            .as_deref()
            .and_then(|g| g.parse::<std::net::Ipv6Addr>().ok());
        let filters = pull_filters((ipv4, cidr4), ipv6, gw6);
        self.disconnect()?;
        write(&self.dir.join("client.crt"), cert)?;
        write(&self.dir.join("ca.crt"), ca)?;
        let log = self.dir.join("openvpn.log");
        let _ = fs::remove_file(&log);
        cmd::run(&client_argv(
            &self.dir,
            &self.ifname,
            gateway,
            port,
            mtu,
            &filters,
        ))?;
        // Up means: the handshake passed and the server pushed our address onto the interface.
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let want = format!(" {ipv4}/");
        loop {
            let up = net::link_exists(&self.ifname)
                && cmd::run(&["ip", "-4", "-o", "addr", "show", "dev", &self.ifname])
                    .is_ok_and(|out| out.contains(&want));
            if up {
                break;
            }
            // The daemon writes its pid file a moment after the parent returns.
            let started = deadline - CONNECT_TIMEOUT;
            let died = self.pid().is_none() && started.elapsed() > Duration::from_secs(2);
            // Port unreachable, twice: nothing listens there, no point in waiting any longer.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let refused = text.matches("ECONNREFUSED").count() >= REFUSALS;
            let silent = !text.contains(SERVER_HEARD) && started.elapsed() >= SILENCE_TIMEOUT;
            if died || refused || silent || Instant::now() >= deadline {
                let why = log_tail(&log);
                // A client that never got through has nobody to say goodbye to: no grace
                // period (openvpn may take seconds to exit on SIGTERM before a handshake).
                stop_within(&self.dir.join("openvpn.pid"), Duration::ZERO);
                self.disconnect()?;
                let what = if died {
                    "exited".to_string()
                } else if refused {
                    "refused: no server listens on that port".to_string()
                } else if silent {
                    format!("silent: no answer from the server within {SILENCE_TIMEOUT:?}")
                } else {
                    format!("not up within {CONNECT_TIMEOUT:?}")
                };
                return Err(TunnelError::Invalid(format!(
                    "openvpn tunnel to {gateway} {what}: {why}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever the server pushed, the tun must carry exactly the granted addresses.
        let mut granted = vec![format!("{ipv4}/{cidr4}")];
        if let Some((a, len)) = ipv6 {
            granted.push(format!("{a}/{len}"));
        }
        let listing = cmd::run(&["ip", "-o", "addr", "show", "dev", &self.ifname])?;
        if let Err(why) = check_tun_addresses(&listing, &granted) {
            self.disconnect()?;
            return Err(TunnelError::Invalid(format!(
                "openvpn tunnel to {gateway}: {why}"
            )));
        }
        net::route_internet_via(&self.ifname, ipv6.is_some())?;
        Ok(self.ifname.clone())
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        stop(&self.dir.join("openvpn.pid"));
        // openvpn deletes its tun device on exit; one killed hard may leave it.
        Ok(net::link_delete(&self.ifname)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAzCBqgIBADAbMRkwFwYDVQQD\nQUJD+/==\n-----END CERTIFICATE REQUEST-----\n";

    #[test]
    fn a_request_that_fails_signing_leaves_no_file() {
        if !cmd::available("openssl") {
            eprintln!("SKIPPED a_request_that_fails_signing_leaves_no_file: no openssl");
            return;
        }
        let dir = std::env::temp_dir().join(format!("mnigs-ovpn-issue-{}", std::process::id()));
        mkdir(&dir).unwrap();
        self_signed(&dir.join("ca.key"), &dir.join("ca.crt"), "mnigs-ca").unwrap();
        // Passes the PEM check, but is no certificate request.
        assert!(check_pem(PEM, "CERTIFICATE REQUEST").is_ok());
        for i in 0..3 {
            assert!(issue(&dir, &format!("sub{i}"), PEM).is_err());
        }
        let left: Vec<_> = std::fs::read_dir(dir.join("issued")).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // A real request is signed, and only the certificate stays.
        let (key, req) = (dir.join("k.key"), dir.join("k.csr"));
        new_key_and_request(&key, &req, "/CN=x").unwrap();
        let (crt, made) = issue(&dir, "ok", &read(&req).unwrap()).unwrap();
        assert!(made);
        assert!(read(&crt).unwrap().contains("BEGIN CERTIFICATE"));
        let names: Vec<String> = std::fs::read_dir(dir.join("issued"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ok.crt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Signing runs outside the gateway's lock, so requests are signed at once: each gets a
    /// whole certificate, the same request signed twice at once leaves one, nothing else stays,
    /// and the undo of a request refused after all removes only what it made.
    #[test]
    fn requests_signed_at_once_leave_only_their_certificates() {
        if !cmd::available("openssl") {
            eprintln!("SKIPPED requests_signed_at_once_leave_only_their_certificates: no openssl");
            return;
        }
        let dir = std::env::temp_dir().join(format!("mnigs-ovpn-par-{}", std::process::id()));
        mkdir(&dir).unwrap();
        self_signed(&dir.join("ca.key"), &dir.join("ca.crt"), "mnigs-ca").unwrap();
        let csrs: Vec<String> = (0..3)
            .map(|i| {
                let (key, req) = (dir.join(format!("k{i}.key")), dir.join(format!("k{i}.csr")));
                new_key_and_request(&key, &req, "/CN=x").unwrap();
                read(&req).unwrap()
            })
            .collect();
        // 0, 1, 2 and 0 again, all at once.
        let jobs: Vec<_> = [0, 1, 2, 0]
            .iter()
            .map(|&i| {
                let (dir, csr) = (dir.clone(), csrs[i].clone());
                std::thread::spawn(move || issue(&dir, &client_cn(&csr), &csr).map(|(_, m)| m))
            })
            .collect();
        let made: Vec<bool> = jobs
            .into_iter()
            .map(|j| j.join().unwrap().unwrap())
            .collect();
        assert!(made.iter().filter(|m| **m).count() >= 3, "{made:?}");
        let mut names: Vec<String> = std::fs::read_dir(dir.join("issued"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = csrs
            .iter()
            .map(|c| format!("{}.crt", client_cn(c)))
            .collect();
        want.sort();
        assert_eq!(names, want);
        for n in &names {
            assert!(
                read(&dir.join("issued").join(n))
                    .unwrap()
                    .contains("END CERTIFICATE")
            );
        }
        assert!(
            !dir.join("ca.srl").exists(),
            "a serial file is written per signing"
        );
        // A request refused after signing: its undo removes its certificate; an undo of a
        // signing that found the certificate there removes nothing.
        let m = Openvpn {
            ifname: "x".into(),
            port: 1,
            mtu: 1400,
            dir: dir.clone(),
            csr: String::new(),
            net: None,
        };
        let mut opts = Map::new();
        opts.insert("csr".into(), json!(csrs[1]));
        let one = dir
            .join("issued")
            .join(format!("{}.crt", client_cn(&csrs[1])));
        std::fs::remove_file(&one).unwrap();
        let undo = (m.slow_part(&opts).unwrap())().unwrap();
        undo();
        assert!(
            dir.join("issued")
                .join(format!("{}.crt", client_cn(&csrs[0])))
                .exists()
        );
        assert!(
            !dir.join("issued")
                .join(format!("{}.crt", client_cn(&csrs[1])))
                .exists()
        );
        let undo = (m.slow_part(&opts).unwrap())().unwrap();
        let again = (m.slow_part(&opts).unwrap())().unwrap();
        again();
        assert!(
            dir.join("issued")
                .join(format!("{}.crt", client_cn(&csrs[1])))
                .exists()
        );
        undo();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_is_checked() {
        assert!(check_pem(PEM, "CERTIFICATE REQUEST").is_ok());
        assert!(check_pem(PEM, "CERTIFICATE").is_err());
        let injected = PEM.replace("QUJD+/==", "QUJD\n--dev x");
        assert!(check_pem(&injected, "CERTIFICATE REQUEST").is_err());
        assert!(check_pem(&"A".repeat(5000), "CERTIFICATE REQUEST").is_err());
        assert!(check_pem("", "CERTIFICATE").is_err());
    }

    #[test]
    fn common_name_depends_on_the_key_only() {
        let a = client_cn(PEM);
        assert_eq!(a, client_cn(PEM.trim_end()));
        assert_ne!(a, client_cn(&PEM.replace("QUJD", "QUJE")));
        assert!(a.starts_with("mn"));
        assert!(a.len() <= 64 && a.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn client_config_holds_the_pool_addresses() {
        let options = Map::new();
        let mut peer = Peer {
            owner: "fd77::1".parse().unwrap(),
            ipv4: Ipv4Addr::new(100, 127, 0, 2),
            ipv6: None,
            options: &options,
            via: None,
        };
        let mut net = GatewayNet {
            ipv4: Ipv4Addr::new(100, 127, 0, 1),
            cidr4: 24,
            ipv6: None,
        };
        assert_eq!(
            client_config(&net, &peer),
            "ifconfig-push 100.127.0.2 255.255.255.0\n"
        );
        net.ipv6 = Some(("fd7e::1".parse().unwrap(), 64));
        peer.ipv6 = Some("fd7e::2".parse().unwrap());
        assert_eq!(
            client_config(&net, &peer),
            "ifconfig-push 100.127.0.2 255.255.255.0\nifconfig-ipv6-push fd7e::2/64 fd7e::1\n"
        );
        let argv = server_argv(Path::new("/d"), "ovs", 1194, 1400, &net).join(" ");
        assert!(
            argv.contains("--ifconfig-ipv6 fd7e::1/64 fd7e::1"),
            "{argv}"
        );
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn server_admits_only_listed_clients_and_is_managed() {
        let net = GatewayNet {
            ipv4: Ipv4Addr::new(100, 127, 0, 1),
            cidr4: 24,
            ipv6: None,
        };
        let argv = server_argv(Path::new("/d"), "ovpn0", 1194, 1400, &net);
        let line = argv.join(" ");
        assert!(line.contains("--ccd-exclusive"));
        assert!(line.contains("--client-config-dir /d/ccd"));
        assert!(line.contains("--ifconfig 100.127.0.1 255.255.255.0"));
        assert!(line.contains("--management /d/mgmt.sock unix"));
        assert!(line.contains("--port 1194"));
        let client = client_argv(
            Path::new("/c"),
            "ovc",
            "fd77::3".parse().unwrap(),
            1194,
            1400,
            &pull_filters((Ipv4Addr::new(100, 127, 0, 2), 24), None, None),
        );
        let line = client.join(" ");
        assert!(line.contains("--remote fd77::3 1194 udp6"));
        assert!(line.contains("--verify-x509-name mnigs-gateway name"));
        assert!(line.contains("--route-noexec"));
        assert!(line.contains("--persist-tun"));
    }

    #[test]
    fn the_client_pulls_only_the_granted_addresses() {
        let f = pull_filters(
            (Ipv4Addr::new(100, 127, 0, 2), 24),
            Some(("fd7e::2".parse().unwrap(), 64)),
            Some("fd7e::1".parse().unwrap()),
        );
        let rules: Vec<String> = f.chunks(3).map(|c| c[1..].join(" ")).collect();
        assert!(f.chunks(3).all(|c| c[0] == "--pull-filter"));
        // The exact grant first, then everything else of its kind ignored.
        assert_eq!(rules[0], "accept ifconfig 100.127.0.2 255.255.255.0");
        assert_eq!(rules[1], "accept ifconfig-ipv6 fd7e::2/64 fd7e::1");
        let first = |prefix: &str| rules.iter().position(|r| r.ends_with(prefix)).unwrap();
        for pushed in [
            "ifconfig-ipv6 fd50::80/121 fd50::1",
            "ifconfig 192.168.50.2 255.255.255.128",
            "route 192.168.50.0 255.255.255.0",
            "route-ipv6 fd77::/64",
            "redirect-gateway def1",
            "dhcp-option DNS 1.2.3.4",
            "ping-restart 99999",
            "inactive 1",
        ] {
            // OpenVPN: the first filter whose text starts the option decides.
            let rule = rules
                .iter()
                .find(|r| pushed.starts_with(r.split_once(' ').unwrap().1))
                .unwrap();
            assert!(rule.starts_with("ignore"), "{pushed} → {rule}");
        }
        assert!(first("ifconfig") > 1);
    }

    #[test]
    fn tun_addresses_must_be_exactly_the_grant() {
        let granted = ["100.127.0.2/24".to_string(), "fd7e::2/64".to_string()];
        let ok = "5: ovc    inet 100.127.0.2/24 scope global ovc\\n       valid_lft forever
                  5: ovc    inet6 fd7e::2/64 scope global \\n valid_lft forever
                  5: ovc    inet6 fe80::1/64 scope link \\n valid_lft forever
";
        assert!(check_tun_addresses(ok, &granted).is_ok());
        let pushed = format!("{ok}5: ovc    inet6 fd50::80/121 scope global\n");
        let e = check_tun_addresses(&pushed, &granted).unwrap_err();
        assert!(e.contains("fd50::80/121"), "{e}");
        let e = check_tun_addresses("5: ovc    inet 100.127.0.2/24 scope global\n", &granted)
            .unwrap_err();
        assert!(e.contains("lacks the granted fd7e::2/64"), "{e}");
    }

    #[test]
    fn openvpn_keys_come_back_from_the_store() {
        let store = Mutex::new(Store::open_in_memory().unwrap());
        let dir = std::env::temp_dir().join(format!("mnigs-ovkeys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in key_files(Side::Server) {
            std::fs::write(dir.join(name), format!("{name} material\n")).unwrap();
        }
        stored_keys(&store, Side::Server, &dir, true).unwrap();
        // A reboot empties the volatile directory; the store (restored from flash) still has them.
        std::fs::remove_dir_all(&dir).unwrap();
        stored_keys(&store, Side::Server, &dir, false).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for name in key_files(Side::Server) {
            let path = dir.join(name);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{name} material\n")
            );
            assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Files present win over the store (an existing directory is kept as it is).
        std::fs::write(dir.join("ca.crt"), "newer\n").unwrap();
        stored_keys(&store, Side::Server, &dir, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            "newer\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
