//! SOCKS: no routing or NAT on the gateway, only a SOCKS5 proxy; the subscriber turns a TUN
//! interface into SOCKS connections (tun2socks) and routes the Internet through it.
//!
//! # Who may connect
//! The gateway runs one `microsocks` per subscriber, on its own TCP port (`port` + the
//! subscriber's number in the pool), with a user name and a 128-bit random password made for
//! that session and handed out only in the grant. Releasing or expiring the session stops that
//! server, so the credentials die with the lease. microsocks cannot filter by source address;
//! the gateway firewall admits the session's port only from the session's owner (see README).
//!
//! # The subscriber's program
//! Two tun2socks programs, told apart by the file name of `option client` ([`ClientKind`]):
//! `tun2proxy`/`tun2proxy-bin`, started with its options in the argv, and `hev-socks5-tunnel`
//! (OpenWrt's packages feed ships it), which reads a YAML file ([`hev_config`]) that holds the
//! password: written 0600 in `directory`, removed once the program has read it (its TUN exists)
//! and again on disconnect.
//!
//! # What passes
//! TCP, and DNS: tun2proxy answers UDP queries to port 53 by asking the same server over TCP
//! through the proxy; hev-socks5-tunnel answers A queries sent to [`MAPDNS_ADDRESS`] itself with
//! an address from [`MAPDNS_NETWORK`] that it turns back into the name when a connection to it
//! goes through the proxy (the gateway resolves the name). Other UDP and ICMP do not pass
//! (microsocks has no UDP ASSOCIATE), so this method's health probe is a SOCKS5 login at the
//! gateway's proxy instead of an ICMP echo.
//!
//! # Files
//! Below `directory` (UCI): the gateway's `server-PORT.pid`/`.log` and the subscriber's
//! `client.pid`/`.log` (and, while hev-socks5-tunnel starts, `client.yml`), so a daemon
//! restarted after a crash stops what the last one left.

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::json;
use crate::protocol::Grant;
use crate::sys::{cmd, fs, net};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The gateway's SOCKS5 server program.
pub const SERVER: &str = "microsocks";
pub use crate::validate::{ClientKind, SOCKS_CLIENT as CLIENT};
/// The address hev-socks5-tunnel answers DNS queries at (RFC 2544's benchmarking range, never
/// on the Internet; routed into the TUN like the rest of it).
pub const MAPDNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The addresses hev-socks5-tunnel hands out for names, `/16`, in the same range.
pub const MAPDNS_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);

/// A YAML scalar in single quotes (a quote inside is doubled). The values mnigs puts there are
/// checked already (credentials of letters and digits, interface names, addresses).
fn yaml_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// hev-socks5-tunnel's configuration: the TUN `ifname` (hev creates it, puts `ipv4`/32 on it
/// and brings it up), the proxy at `gateway` with the session's login, and its DNS mapping at
/// [`MAPDNS_ADDRESS`]. UDP goes to the proxy as standard SOCKS5 UDP ASSOCIATE (a proxy without
/// it, like microsocks, refuses it); the log goes to stderr, which is our log file.
pub fn hev_config(
    ifname: &str,
    mtu: u16,
    ipv4: Ipv4Addr,
    gateway: SocketAddr,
    user: &str,
    password: &str,
) -> String {
    let q = |v: &str| yaml_quote(v);
    format!(
        "tunnel:\n  name: {}\n  mtu: {mtu}\n  ipv4: {}\n\
         socks5:\n  port: {}\n  address: {}\n  udp: 'udp'\n  username: {}\n  password: {}\n\
         mapdns:\n  address: {}\n  port: 53\n  network: {}\n  netmask: '255.255.0.0'\n  cache-size: 10000\n\
         misc:\n  log-file: 'stderr'\n  log-level: 'warn'\n",
        q(ifname),
        q(&ipv4.to_string()),
        gateway.port(),
        q(&gateway.ip().to_string()),
        q(user),
        q(password),
        q(&MAPDNS_ADDRESS.to_string()),
        q(&MAPDNS_NETWORK.to_string()),
    )
}
/// Longest bring-up of the subscriber's side (login, then tun2proxy): after this the next
/// method is tried, which with the release of this lease comes within 5 s.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Time a server has to start listening.
const SERVER_START: Duration = Duration::from_secs(3);

pub use super::{MAX_CREDENTIAL, check_credential};

/// The SOCKS fields of a grant: TCP port, user name, password, all checked.
pub fn grant_fields(grant: &Grant) -> Result<(u16, String, String), TunnelError> {
    let (port, [user, password]) = super::grant_login(grant, ["username", "password"])?;
    Ok((port, user, password))
}

/// The port of the subscriber at `ipv4` when the gateway's own address is `net.ipv4`: `base` +
/// its distance from it, minus one (the first subscriber gets `base`).
pub fn session_port(base: u16, net: &GatewayNet, ipv4: Ipv4Addr) -> Result<u16, TunnelError> {
    let n = u32::from(ipv4).checked_sub(u32::from(net.ipv4) + 1);
    n.and_then(|n| u32::from(base).checked_add(n))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            TunnelError::Invalid(format!(
                "no SOCKS port for {ipv4}: port {base} + its place in the pool is past 65535"
            ))
        })
}

/// The server's command line (element 8 is the password).
pub fn server_argv(listen: IpAddr, port: u16, user: &str, password: &str) -> Vec<String> {
    [
        SERVER,
        "-i",
        &listen.to_string(),
        "-p",
        &port.to_string(),
        "-u",
        user,
        "-P",
        password,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The client's command line (element 4 holds the password). No `--setup`: mnigs sets the
/// addresses and routes itself, like for every other method.
pub fn client_argv(
    ifname: &str,
    gateway: SocketAddr,
    user: &str,
    password: &str,
    mtu: u16,
) -> Vec<String> {
    let url = format!("socks5://{user}:{password}@{gateway}");
    [
        CLIENT,
        "--tun",
        ifname,
        "--proxy",
        &url,
        "--dns",
        "over-tcp",
        "--mtu",
        &mtu.to_string(),
        "--exit-on-fatal-error",
        "--verbosity",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Logs in at the SOCKS5 server `addr` with user name and password (RFC 1928/1929) and returns
/// how long that took; an error says which step failed.
pub fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(10));
    let io = |e: std::io::Error| format!("SOCKS5 at {addr}: {e}");
    s.set_read_timeout(Some(left)).map_err(io)?;
    s.set_write_timeout(Some(left)).map_err(io)?;
    s.write_all(&[5, 1, 2]).map_err(io)?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).map_err(io)?;
    if choice != [5, 2] {
        return Err(format!(
            "SOCKS5 at {addr} refuses user/password login ({choice:?})"
        ));
    }
    let (u, p) = (user.as_bytes(), password.as_bytes());
    if u.len() > 255 || p.len() > 255 {
        return Err("user name or password longer than 255 bytes".into());
    }
    let mut msg = vec![1, u.len() as u8];
    msg.extend_from_slice(u);
    msg.push(p.len() as u8);
    msg.extend_from_slice(p);
    s.write_all(&msg).map_err(io)?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).map_err(io)?;
    if status[1] != 0 {
        return Err(format!("SOCKS5 at {addr} refused our credentials"));
    }
    Ok(start.elapsed())
}

/// Which end this instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The gateway: a SOCKS5 server per subscriber.
    Server,
    /// The subscriber: one tun2socks process.
    Client,
}

/// One subscriber's server on the gateway.
struct Server {
    pid: u32,
    port: u16,
    user: String,
    password: String,
}

/// The SOCKS method, for one role.
pub struct Socks {
    side: Side,
    ifname: String,
    port: u16,
    mtu: u16,
    listen: IpAddr,
    dir: PathBuf,
    net: Option<GatewayNet>,
    /// Gateway: the servers by subscriber address.
    servers: HashMap<Ipv4Addr, Server>,
    /// Subscriber: the proxy and credentials of the tunnel that is up, for probes.
    proxy: Option<(SocketAddr, String, String)>,
    /// Subscriber: the tun2socks program (name on PATH or absolute path) and its kind.
    client: String,
    kind: ClientKind,
}

/// A failed write, rename or removal of one of our files.
fn fs_error(e: fs::FsError) -> TunnelError {
    TunnelError::Invalid(e.to_string())
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Tail of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Socks {
    /// A method instance keeping its files in `directory`; the gateway's servers listen on
    /// `listen` from TCP port `port` on, the subscriber's TUN interface is `ifname`.
    pub fn new(
        side: Side,
        directory: &Path,
        ifname: &str,
        port: u16,
        mtu: u16,
        listen: IpAddr,
    ) -> Result<Socks, TunnelError> {
        fs::private_dir(directory).map_err(fs_error)?;
        Ok(Socks {
            side,
            ifname: ifname.to_string(),
            port,
            mtu,
            listen,
            dir: directory.to_path_buf(),
            net: None,
            servers: HashMap::new(),
            proxy: None,
            client: CLIENT.to_string(),
            kind: ClientKind::Tun2proxy,
        })
    }

    /// Runs `program` (`option client`) as the subscriber's tun2socks; its file name says how
    /// ([`ClientKind`]).
    pub fn with_client(mut self, program: &str) -> Result<Socks, TunnelError> {
        self.kind =
            ClientKind::of(program).map_err(|e| TunnelError::Invalid(format!("client {e}")))?;
        self.client = program.to_string();
        Ok(self)
    }

    fn client_conf(&self) -> PathBuf {
        self.dir.join("client.yml")
    }

    fn server_pidfile(&self, port: u16) -> PathBuf {
        self.dir.join(format!("server-{port}.pid"))
    }

    /// Stops every server a pid file names (ours or a crashed daemon's).
    fn stop_all_servers(&mut self) {
        self.servers.clear();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("server-") && name.ends_with(".pid") {
                if let Some(pid) = read_pid(&e.path()) {
                    cmd::stop_pid(pid, SERVER, Duration::from_secs(2));
                }
                let _ = fs::remove_file(&e.path());
            }
        }
    }
}

impl Method for Socks {
    fn name(&self) -> &'static str {
        "socks"
    }

    fn check_options(&self, _options: &Map<String, Value>) -> Result<(), String> {
        // The subscriber sends nothing this method uses; whatever it sends reaches no program.
        Ok(())
    }

    fn prepare(&mut self, net: &GatewayNet) -> Result<(), TunnelError> {
        // Servers left by an earlier run go; the lease book re-adds the live sessions.
        self.stop_all_servers();
        if !cmd::available(SERVER) {
            return Err(TunnelError::Invalid(format!("{SERVER} is not installed")));
        }
        self.net = Some(net.clone());
        Ok(())
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        let net = self
            .net
            .clone()
            .ok_or_else(|| TunnelError::Invalid("socks is not prepared".into()))?;
        let port = session_port(self.port, &net, peer.ipv4)?;
        let running = self
            .servers
            .get(&peer.ipv4)
            .is_some_and(|s| s.port == port && cmd::pid_runs(s.pid, SERVER));
        if !running {
            self.remove(peer)?;
            let user = format!("mn{:08x}", u32::from(peer.ipv4));
            let password = crate::ids::new_sid();
            let log = self.dir.join(format!("server-{port}.log"));
            let _ = fs::remove_file(&log);
            let argv = server_argv(self.listen, port, &user, &password);
            let pid = cmd::spawn_daemon(&argv, &[8], &log)?;
            let pidfile = self.server_pidfile(port);
            fs::write(&pidfile, format!("{pid}\n")).map_err(fs_error)?;
            self.servers.insert(
                peer.ipv4,
                Server {
                    pid,
                    port,
                    user,
                    password,
                },
            );
            let started = Instant::now();
            // Read from the socket table, not by connecting: the port is the owner's only
            // (`sys::firewall`), and a connection from here is dropped like any other.
            while !net::tcp_listening(port) {
                // Not `pid_runs`: until its exec is done the child is not yet a microsocks.
                if !cmd::pid_alive(pid) || started.elapsed() > SERVER_START {
                    let why = log_tail(&log);
                    let _ = self.remove(peer);
                    return Err(TunnelError::Invalid(format!(
                        "{SERVER} on port {port} did not start: {why}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let s = &self.servers[&peer.ipv4];
        let mut fields = Map::new();
        json::put(&mut fields, "port", &s.port);
        json::put(&mut fields, "username", &s.user);
        json::put(&mut fields, "password", &s.password);
        json::put(&mut fields, "mtu", &self.mtu);
        Ok(fields)
    }

    fn ingress(&self, peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        // Nothing is forwarded: the connections leave from the gateway (microsocks); the
        // session is its server's port, open only to the owner's mesh address.
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| TunnelError::Invalid("socks is not prepared".into()))?;
        Ok(super::Ingress::Local {
            port: session_port(self.port, net, peer.ipv4)?,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        if let Some(s) = self.servers.remove(&peer.ipv4) {
            cmd::stop_pid(s.pid, SERVER, Duration::from_secs(2));
            let _ = fs::remove_file(&self.server_pidfile(s.port));
            let _ = fs::remove_file(&self.dir.join(format!("server-{}.log", s.port)));
        } else if let Some(net) = &self.net
            && let Ok(port) = session_port(self.port, net, peer.ipv4)
        {
            // A server a crashed daemon started for this slot.
            let pidfile = self.server_pidfile(port);
            if let Some(pid) = read_pid(&pidfile) {
                cmd::stop_pid(pid, SERVER, Duration::from_secs(2));
            }
            let _ = fs::remove_file(&pidfile);
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        self.stop_all_servers();
        Ok(())
    }

    fn request_options(&self) -> Map<String, Value> {
        Map::new()
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let started = Instant::now();
        let (port, user, password) = grant_fields(grant)?;
        let ((ipv4, _), _) = super::wireguard::grant_addresses(grant)?;
        let mtu = super::grant_mtu(grant, self.mtu);
        let proxy = SocketAddr::new(gateway, port);
        // Log in once first: a wrong port or refused credentials fail here, at once.
        login(proxy, &user, &password, CONNECT_TIMEOUT)
            .map_err(|e| TunnelError::Invalid(format!("socks proxy of {gateway}: {e}")))?;
        self.disconnect()?;
        let log = self.dir.join("client.log");
        let _ = fs::remove_file(&log);
        let (argv, secret) = match self.kind {
            ClientKind::Tun2proxy => {
                let mut argv = client_argv(&self.ifname, proxy, &user, &password, mtu);
                argv[0] = self.client.clone();
                (argv, vec![4])
            }
            ClientKind::Hev => {
                // The password goes into a 0600 file, never into an argv.
                let conf = self.client_conf();
                let text = hev_config(&self.ifname, mtu, ipv4, proxy, &user, &password);
                fs::write_new_private(&conf, text).map_err(fs_error)?;
                (
                    vec![self.client.clone(), conf.display().to_string()],
                    vec![],
                )
            }
        };
        let pid = match cmd::spawn_daemon(&argv, &secret, &log) {
            Ok(pid) => pid,
            Err(e) => {
                self.disconnect()?;
                return Err(e.into());
            }
        };
        let pidfile = self.dir.join("client.pid");
        fs::write(&pidfile, format!("{pid}\n")).map_err(fs_error)?;
        // Without `--setup` tun2proxy only creates the interface (down, no address); it may
        // bring its own 10.0.0.33/24 in other versions, so the interface's addresses are
        // replaced by our pool address (a 10.0.0.0/24 route could shadow part of a mesh).
        // hev-socks5-tunnel puts the same /32 on it and brings it up; it has read its file
        // before it creates the interface.
        loop {
            if net::link_exists(&self.ifname) {
                break;
            }
            if !cmd::pid_alive(pid) || started.elapsed() > CONNECT_TIMEOUT {
                let why = log_tail(&log);
                self.disconnect()?;
                return Err(TunnelError::Invalid(format!(
                    "{} did not bring {} up within {CONNECT_TIMEOUT:?}: {why}",
                    self.client, self.ifname
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(&self.client_conf());
        let setup = || -> Result<(), TunnelError> {
            cmd::run(&["ip", "addr", "flush", "dev", &self.ifname])?;
            net::addr_replace(&self.ifname, IpAddr::V4(ipv4), 32)?;
            net::link_up(&self.ifname, mtu)?;
            net::route_internet_via(&self.ifname, false)?;
            Ok(())
        };
        if let Err(e) = setup() {
            self.disconnect()?;
            return Err(e);
        }
        self.proxy = Some((proxy, user, password));
        Ok(self.ifname.clone())
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        self.proxy = None;
        let pidfile = self.dir.join("client.pid");
        if let Some(pid) = read_pid(&pidfile) {
            // Whichever of the programs an earlier configuration named.
            for (name, _) in ClientKind::PROGRAMS {
                cmd::stop_pid(pid, name, Duration::from_secs(2));
            }
        }
        let _ = fs::remove_file(&pidfile);
        let _ = fs::remove_file(&self.client_conf());
        // Both programs' TUN devices go with them; one that outlived its program goes here.
        Ok(net::link_delete(&self.ifname)?)
    }

    fn probe(&self, timeout: Duration) -> Option<Result<Duration, String>> {
        if self.side != Side::Client {
            return None;
        }
        let (addr, user, password) = self.proxy.as_ref()?;
        Some(login(*addr, user, password, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net() -> GatewayNet {
        GatewayNet {
            ipv4: Ipv4Addr::new(100, 127, 0, 1),
            cidr4: 24,
            ipv6: None,
        }
    }

    #[test]
    fn ports_follow_the_pool() {
        let p = |a: [u8; 4]| session_port(10800, &net(), Ipv4Addr::from(a));
        assert_eq!(p([100, 127, 0, 2]).unwrap(), 10800);
        assert_eq!(p([100, 127, 0, 254]).unwrap(), 11052);
        assert!(p([100, 127, 0, 1]).is_err());
        assert!(p([100, 126, 0, 9]).is_err());
        assert!(session_port(65535, &net(), Ipv4Addr::new(100, 127, 0, 3)).is_err());
    }

    #[test]
    fn credentials_are_plain() {
        assert!(check_credential("password", "0a1b2c").is_ok());
        for bad in [
            "",
            "a:b",
            "a@b",
            "-x",
            "a b",
            "p\n",
            "\u{435}",
            &"a".repeat(65),
        ] {
            assert!(check_credential("password", bad).is_err(), "{bad:?}");
        }
    }

    fn grant(extra: Value) -> Grant {
        let mut v = json!({
            "success": true, "sid": "s", "timeout": 60, "method": "socks",
            "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn grant_fields_are_checked() {
        let ok = grant(json!({"port": 10800, "username": "mn1", "password": "abc"}));
        assert_eq!(
            grant_fields(&ok).unwrap(),
            (10800, "mn1".into(), "abc".into())
        );
        for bad in [
            json!({"port": 0, "username": "u", "password": "p"}),
            json!({"port": 70000, "username": "u", "password": "p"}),
            json!({"port": "1080", "username": "u", "password": "p"}),
            json!({"port": 1080, "username": "u@evil", "password": "p"}),
            json!({"port": 1080, "username": "u", "password": "p --setup"}),
            json!({"port": 1080, "username": "u"}),
            json!({"port": 1080, "username": 5, "password": "p"}),
        ] {
            assert!(grant_fields(&grant(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn argvs_hide_nothing_and_carry_the_session() {
        let s = server_argv("10.77.0.3".parse().unwrap(), 10801, "mn1", "pw");
        assert_eq!(s.join(" "), "microsocks -i 10.77.0.3 -p 10801 -u mn1 -P pw");
        assert_eq!(s[8], "pw");
        let c = client_argv("sx", "[fd77::3]:10801".parse().unwrap(), "mn1", "pw", 1500);
        assert_eq!(c[4], "socks5://mn1:pw@[fd77::3]:10801");
        assert!(c.join(" ").contains("--tun sx --proxy"));
        assert!(c.join(" ").contains("--dns over-tcp"));
    }

    #[test]
    fn login_speaks_socks5() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for accept in [true, false] {
                let (mut c, _) = listener.accept().unwrap();
                let mut hello = [0u8; 3];
                c.read_exact(&mut hello).unwrap();
                assert_eq!(hello, [5, 1, 2]);
                c.write_all(&[5, 2]).unwrap();
                let mut auth = [0u8; 9];
                c.read_exact(&mut auth).unwrap();
                assert_eq!(&auth, b"\x01\x03mn1\x03pw1");
                c.write_all(&[1, if accept { 0 } else { 1 }]).unwrap();
            }
        });
        assert!(login(addr, "mn1", "pw1", Duration::from_secs(2)).is_ok());
        let e = login(addr, "mn1", "pw1", Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("refused our credentials"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn the_client_kind_is_its_file_name() {
        assert_eq!(ClientKind::of("tun2proxy-bin"), Ok(ClientKind::Tun2proxy));
        assert_eq!(
            ClientKind::of("/usr/bin/tun2proxy"),
            Ok(ClientKind::Tun2proxy)
        );
        assert_eq!(
            ClientKind::of("/usr/bin/hev-socks5-tunnel"),
            Ok(ClientKind::Hev)
        );
        assert_eq!(ClientKind::of("hev-socks5-tunnel"), Ok(ClientKind::Hev));
        for bad in [
            "",
            "/",
            "tun2socks",
            "/usr/bin/hev-socks5-tunnel/",
            "hev-socks5-tunnel.sh",
            "sh",
        ] {
            let e = ClientKind::of(bad).unwrap_err();
            assert!(e.contains("must be hev-socks5-tunnel"), "{bad:?}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("mnigs-socks-kind-{}", std::process::id()));
        let m = Socks::new(Side::Client, &dir, "t0", 1080, 1500, "::".parse().unwrap()).unwrap();
        let e = m.with_client("/bin/sh").err().expect("refused");
        assert!(e.to_string().contains("client must be"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hev_config_carries_the_session_quoted() {
        let c = hev_config(
            "mnsocks",
            1400,
            Ipv4Addr::new(100, 127, 0, 2),
            "[fd77::3]:10801".parse().unwrap(),
            "mn647f0002",
            "0a1b2c",
        );
        let expect = "tunnel:\n  name: 'mnsocks'\n  mtu: 1400\n  ipv4: '100.127.0.2'\n\
                      socks5:\n  port: 10801\n  address: 'fd77::3'\n  udp: 'udp'\n  \
                      username: 'mn647f0002'\n  password: '0a1b2c'\n\
                      mapdns:\n  address: '198.18.0.2'\n  port: 53\n  network: '198.19.0.0'\n  \
                      netmask: '255.255.0.0'\n  cache-size: 10000\n\
                      misc:\n  log-file: 'stderr'\n  log-level: 'warn'\n";
        assert_eq!(c, expect);
        // A quote cannot end the scalar early, whatever reached it.
        assert_eq!(yaml_quote("a'b"), "'a''b'");
        let c = hev_config(
            "t",
            1500,
            Ipv4Addr::LOCALHOST,
            "10.0.0.1:1".parse().unwrap(),
            "u",
            "p'\nx: y",
        );
        assert!(c.contains("password: 'p''\nx: y'"), "{c}");
    }
}
