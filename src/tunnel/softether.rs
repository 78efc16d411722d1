//! SoftEther VPN: the gateway uses a running SoftEther VPN server (its admin port and password
//! from UCI), the subscriber a running SoftEther VPN client; both are driven with `vpncmd`.
//!
//! # Who may connect
//! The gateway makes a Virtual Hub bridged to a local tap device (`tap_DEVICE`) that holds the
//! gateway's pool address, and for each subscriber a hub user (`mn` + its pool address in hex)
//! with a 128-bit random password made for that session, handed out only in the grant. Release
//! and expiry delete the user and disconnect its sessions. The subscriber puts its pool address
//! on the client's virtual NIC (`vpn_NIC`) and routes the Internet via the gateway's address.
//!
//! # Which server
//! The grant carries the server's SSL certificate (`serverCert`, read with `ServerCertGet` when
//! the method is prepared); the subscriber gives it to its client account and turns on the
//! client's server certificate check, so a server presenting any other certificate is refused
//! before the password is sent. The certificate's SHA-256 is pinned per mesh address at first
//! contact, like WireGuard's key and OpenVPN's CA ([`crate::trust::grant_key`]).
//!
//! # Secrets
//! No password ever is in an argv: the admin password goes to vpncmd's stdin (its prompt), the
//! commands (which carry user passwords) go through a file of mode 0600 (`/IN:`), removed at once.

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::json;
use crate::protocol::Grant;
use crate::sys::{cmd, fs, net};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest wait for the session on the subscriber's side: after this the tunnel is taken down
/// and the next method tried, which (with the vpncmd calls around it and the release of this
/// lease) comes within 5 s.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The account name on the subscriber's SoftEther client.
const ACCOUNT: &str = "mnigs";
/// vpncmd's exit code for "object not found" (deleting what is not there).
const NOT_FOUND: i32 = 29;
/// vpncmd's exit code for HubCreate of a hub that exists (SoftEther 5.01: 57, observed).
const HUB_EXISTS: i32 = 57;
/// Longest user name, password or hub name accepted from a grant.
pub use super::MAX_CREDENTIAL as MAX_NAME;
/// Checks a hub name, user name or password: 1–48 ASCII letters and digits (nothing a vpncmd
/// command line would split or quote).
pub use super::check_credential as check_name;

/// The file the server's certificate is saved to, in the method's directory.
const SERVER_CERT: &str = "server.crt";

/// What a grant tells the subscriber's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub port: u16,
    pub hub: String,
    pub user: String,
    pub password: String,
    /// The server's SSL certificate (PEM); the client accepts no other.
    pub server_cert: String,
}

/// The SoftEther fields of a grant, all checked.
pub fn grant_fields(grant: &Grant) -> Result<Login, TunnelError> {
    let (port, [hub, user, password]) = super::grant_login(grant, ["hub", "username", "password"])?;
    let server_cert = grant
        .extra
        .get("serverCert")
        .and_then(Value::as_str)
        .ok_or_else(|| TunnelError::Invalid("gateway's answer: serverCert is missing".into()))?;
    super::openvpn::check_pem(server_cert, "CERTIFICATE")
        .map_err(|e| TunnelError::Invalid(format!("gateway's answer: serverCert {e}")))?;
    Ok(Login {
        port,
        hub,
        user,
        password,
        server_cert: server_cert.to_string(),
    })
}

/// The hub user of the subscriber at `ipv4`.
pub fn user_name(ipv4: Ipv4Addr) -> String {
    format!("mn{:08x}", u32::from(ipv4))
}

/// Session names of `user` in a `SessionList` listing (`Session Name |X` … `User Name |Y`).
pub fn sessions_of(listing: &str, user: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for line in listing.lines() {
        let Some((k, v)) = line.split_once('|') else {
            continue;
        };
        match k.trim() {
            "Session Name" => name = Some(v.trim().to_string()),
            "User Name" if v.trim().eq_ignore_ascii_case(user) => {
                if let Some(n) = name.take() {
                    out.push(n);
                }
            }
            _ => {}
        }
    }
    out
}

/// Which end this instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The gateway: a hub on the SoftEther server.
    Server,
    /// The subscriber: an account on the SoftEther client.
    Client,
}

/// How to reach the SoftEther programs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The vpncmd program.
    pub vpncmd: String,
    /// Gateway: the server's admin address (`HOST:PORT`).
    pub admin: String,
    /// Gateway: the server's administrator password.
    pub admin_password: String,
    /// Gateway: the hub's name.
    pub hub: String,
    /// Gateway: the TCP port subscribers connect to.
    pub port: u16,
    /// Gateway: the local bridge device (the tap is `tap_DEVICE`); subscriber: the NIC (`vpn_NIC`).
    pub device: String,
    /// Command files.
    pub directory: PathBuf,
}

/// The SoftEther method, for one role.
pub struct Softether {
    side: Side,
    setup: Setup,
    net: Option<GatewayNet>,
    /// Gateway: the password of each subscriber's user.
    users: HashMap<Ipv4Addr, String>,
    /// Gateway: the server's SSL certificate (PEM), for the grants.
    cert: Option<String>,
}

impl Softether {
    /// A method instance; nothing is run until it is used.
    pub fn new(side: Side, setup: Setup) -> Result<Softether, TunnelError> {
        let dir = &setup.directory;
        fs::private_dir(dir).map_err(fs_error)?;
        Ok(Softether {
            side,
            setup,
            net: None,
            users: HashMap::new(),
            cert: None,
        })
    }

    /// The interface this side's traffic uses.
    pub fn ifname(&self) -> String {
        match self.side {
            Side::Server => format!("tap_{}", self.setup.device),
            Side::Client => format!("vpn_{}", self.setup.device),
        }
    }

    /// Runs `commands` (one per line) with vpncmd against our server (or client); the commands
    /// go through a 0600 file, the admin password through stdin. Ok, or the exit code and output.
    fn vpncmd(&self, commands: &[String]) -> Result<String, (Option<i32>, String)> {
        // Hub and bridge commands are the server's; the others are the hub's.
        let in_hub = !commands
            .iter()
            .any(|c| c.starts_with("Hub") || c.starts_with("Bridge"));
        let file = self.setup.directory.join(format!(
            "cmd-{}-{}",
            std::process::id(),
            crate::ids::new_sid()
        ));
        let text = commands.join("\n") + "\n";
        fs::write_new_private(&file, &text)
            .map_err(|e| (None, format!("{}: {}", e.path.display(), e.source)))?;
        let input = format!("/IN:{}", file.display());
        let result = match self.side {
            Side::Server => {
                let hub = format!("/ADMINHUB:{}", self.setup.hub);
                let mut argv = vec![self.setup.vpncmd.as_str(), &self.setup.admin, "/SERVER"];
                if in_hub {
                    argv.push(&hub);
                }
                argv.push(&input);
                let pw = format!("{}\n", self.setup.admin_password);
                // In the method's directory: ServerCertGet takes only a relative file name
                // (vpncmd reads one starting with '/' as an option).
                cmd::run_in(
                    &argv,
                    Some(&pw),
                    &self.setup.directory,
                    Duration::from_secs(10),
                )
            }
            Side::Client => {
                let argv = [self.setup.vpncmd.as_str(), "localhost", "/CLIENT", &input];
                cmd::run_full(&argv, None, Duration::from_secs(10))
            }
        };
        let _ = fs::remove_file(&file);
        result.map_err(|e| match e {
            cmd::CmdError::Failed { code, stderr, .. } => (code, stderr),
            other => (None, other.to_string()),
        })
    }

    /// Gateway: the server's SSL certificate, as PEM.
    fn server_cert(&self) -> Result<String, TunnelError> {
        let path = self.setup.directory.join(SERVER_CERT);
        let _ = fs::remove_file(&path);
        self.one(format!("ServerCertGet {SERVER_CERT}"), &[])?;
        let read = std::fs::read_to_string(&path);
        let _ = fs::remove_file(&path);
        let pem = read
            .map_err(|e| {
                TunnelError::Invalid(format!("vpncmd ServerCertGet wrote no certificate: {e}"))
            })?
            .replace('\r', "");
        super::openvpn::check_pem(&pem, "CERTIFICATE").map_err(|e| {
            TunnelError::Invalid(format!("the SoftEther server's certificate: {e}"))
        })?;
        Ok(pem)
    }

    /// Runs one command; an exit code in `fine` counts as success.
    fn one(&self, command: String, fine: &[i32]) -> Result<String, TunnelError> {
        let first = command.split(' ').next().unwrap_or_default().to_string();
        match self.vpncmd(&[command]) {
            Ok(out) => Ok(out),
            Err((Some(code), _)) if fine.contains(&code) => Ok(String::new()),
            Err((code, out)) => Err(TunnelError::Invalid(format!(
                "vpncmd {first} failed ({}): {}",
                code.map_or_else(|| "no exit code".into(), |c| c.to_string()),
                last_lines(&out)
            ))),
        }
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// A failed write, rename or removal of one of our files.
fn fs_error(e: fs::FsError) -> TunnelError {
    TunnelError::Invalid(e.to_string())
}

fn wait_link(ifname: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if net::link_exists(ifname) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Forgets the link-layer address of `addr` on `ifname`: the next subscriber with that pool
/// address has a NIC of its own (a new MAC), and a cached one would swallow its replies.
fn forget_neighbour(ifname: &str, addr: Ipv4Addr) {
    let a = addr.to_string();
    let _ = cmd::run(&["ip", "-4", "neigh", "flush", "to", &a, "dev", ifname]);
}

/// Routes `0.0.0.0/1` and `128.0.0.0/1` via `gateway` on `ifname` (a layer-2 link: the next hop
/// must be named, unlike on a point-to-point tunnel).
fn route_via(ifname: &str, gateway: Ipv4Addr, add: bool) -> Result<(), TunnelError> {
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        let gw = gateway.to_string();
        if add {
            cmd::run(&[
                "ip", "-4", "route", "replace", half, "via", &gw, "dev", ifname,
            ])?;
        } else {
            let _ = cmd::run(&["ip", "-4", "route", "del", half, "dev", ifname]);
        }
    }
    Ok(())
}

impl Method for Softether {
    fn name(&self) -> &'static str {
        "softether"
    }

    fn check_options(&self, _options: &Map<String, Value>) -> Result<(), String> {
        // The subscriber sends nothing this method uses; whatever it sends reaches no program.
        Ok(())
    }

    fn prepare(&mut self, gw: &GatewayNet) -> Result<(), TunnelError> {
        if self.setup.admin_password.is_empty() {
            return Err(TunnelError::Invalid(
                "softether: option admin_password (the server's) is not set".into(),
            ));
        }
        let hub_password = crate::ids::new_sid();
        // A hub left by an earlier run is kept; its users go with the live sessions' re-adding.
        self.vpncmd(&[format!(
            "HubCreate {} /PASSWORD:{hub_password}",
            self.setup.hub
        )])
        .or_else(|(code, out)| {
            if code == Some(HUB_EXISTS) {
                Ok(String::new())
            } else {
                Err(TunnelError::Invalid(format!(
                    "vpncmd HubCreate failed: {}",
                    last_lines(&out)
                )))
            }
        })?;
        // BridgeCreate of an existing bridge succeeds (observed).
        self.one(
            format!(
                "BridgeCreate {} /DEVICE:{} /TAP:yes",
                self.setup.hub, self.setup.device
            ),
            &[],
        )?;
        let tap = self.ifname();
        if !wait_link(&tap, Duration::from_secs(5)) {
            return Err(TunnelError::Invalid(format!(
                "the SoftEther server made no {tap}"
            )));
        }
        net::addr_replace(&tap, IpAddr::V4(gw.ipv4), gw.cidr4)?;
        if let Some((v6, len)) = gw.ipv6 {
            net::addr_replace(&tap, IpAddr::V6(v6), len)?;
        }
        cmd::run(&["ip", "link", "set", "dev", &tap, "up"])?;
        self.cert = Some(self.server_cert()?);
        self.net = Some(gw.clone());
        Ok(())
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        let (Some(_), Some(cert)) = (&self.net, self.cert.clone()) else {
            return Err(TunnelError::Invalid("softether is not prepared".into()));
        };
        let user = user_name(peer.ipv4);
        if !self.users.contains_key(&peer.ipv4) {
            // A user a crashed daemon left goes first: its password is unknown to us.
            self.one(format!("UserDelete {user}"), &[NOT_FOUND])?;
            self.one(
                format!("UserCreate {user} /GROUP:none /REALNAME:none /NOTE:none"),
                &[],
            )?;
            let password = crate::ids::new_sid();
            self.one(format!("UserPasswordSet {user} /PASSWORD:{password}"), &[])?;
            self.users.insert(peer.ipv4, password);
        }
        super::host_routes(&self.ifname(), peer, true)?;
        forget_neighbour(&self.ifname(), peer.ipv4);
        let mut fields = Map::new();
        json::put(&mut fields, "port", &self.setup.port);
        json::put(&mut fields, "hub", &self.setup.hub);
        json::put(&mut fields, "username", &user);
        json::put(&mut fields, "password", &self.users[&peer.ipv4]);
        json::put(&mut fields, "serverCert", &cert);
        Ok(fields)
    }

    fn ingress(&self, _peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        // Every session's frames leave the hub on the bridge's tap device. No MAC address to
        // bind: the subscriber's virtual NIC is made (with a random MAC) only when it connects,
        // after this grant, and the hub can carry several MACs per session.
        Ok(super::Ingress::Forwarded {
            ifname: self.ifname(),
            mac: None,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        let user = user_name(peer.ipv4);
        self.users.remove(&peer.ipv4);
        // First the user (no new login), then its live sessions.
        self.one(format!("UserDelete {user}"), &[NOT_FOUND])?;
        let listing = self.one("SessionList".into(), &[])?;
        for s in sessions_of(&listing, &user) {
            self.one(format!("SessionDisconnect {s}"), &[NOT_FOUND])?;
        }
        if net::link_exists(&self.ifname()) {
            super::host_routes(&self.ifname(), peer, false)?;
            forget_neighbour(&self.ifname(), peer.ipv4);
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        self.users.clear();
        self.one(
            format!(
                "BridgeDelete {} /DEVICE:{}",
                self.setup.hub, self.setup.device
            ),
            &[NOT_FOUND],
        )?;
        self.one(format!("HubDelete {}", self.setup.hub), &[NOT_FOUND])?;
        Ok(())
    }

    fn request_options(&self) -> Map<String, Value> {
        Map::new()
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let started = Instant::now();
        let Login {
            port,
            hub,
            user,
            password,
            server_cert,
        } = grant_fields(grant)?;
        let ((ipv4, cidr4), _) = super::wireguard::grant_addresses(grant)?;
        let gw4: Ipv4Addr = grant.ipv4gateway.parse().map_err(|_| {
            TunnelError::Invalid("gateway's answer: ipv4gateway is not an IPv4 address".into())
        })?;
        self.disconnect()?;
        let server = match gateway {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        let nic = &self.setup.device;
        let cert = self.setup.directory.join(SERVER_CERT);
        fs::write(&cert, &server_cert).map_err(fs_error)?;
        // One vpncmd run for all (each run costs a connection to the client service);
        // disconnect() above removed NIC and account, so none of them exists yet. The server
        // certificate check is on before the account first connects.
        let commands = [
            format!("NicCreate {nic}"),
            format!(
                "AccountCreate {ACCOUNT} /SERVER:{server} /HUB:{hub} /USERNAME:{user} /NICNAME:{nic}"
            ),
            format!("AccountPasswordSet {ACCOUNT} /PASSWORD:{password} /TYPE:standard"),
            format!(
                "AccountServerCertSet {ACCOUNT} /LOADCERT:{}",
                cert.display()
            ),
            format!("AccountServerCertEnable {ACCOUNT}"),
            format!("AccountConnect {ACCOUNT}"),
        ];
        let set_up = self.vpncmd(&commands);
        let _ = fs::remove_file(&cert);
        if let Err((code, out)) = set_up {
            self.disconnect()?;
            return Err(TunnelError::Invalid(format!(
                "vpncmd account setup failed ({}): {}",
                code.map_or_else(|| "no exit code".into(), |c| c.to_string()),
                last_lines(&out)
            )));
        }
        let ifname = self.ifname();
        loop {
            let status = self
                .one(format!("AccountStatusGet {ACCOUNT}"), &[])
                .unwrap_or_default();
            if status.contains("Session Established") && net::link_exists(&ifname) {
                break;
            }
            if started.elapsed() > CONNECT_TIMEOUT {
                self.disconnect()?;
                return Err(TunnelError::Invalid(format!(
                    "SoftEther session to {server} not established within {CONNECT_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let setup = || -> Result<(), TunnelError> {
            net::addr_replace(&ifname, IpAddr::V4(ipv4), cidr4)?;
            cmd::run(&["ip", "link", "set", "dev", &ifname, "up"])?;
            route_via(&ifname, gw4, true)
        };
        if let Err(e) = setup() {
            self.disconnect()?;
            return Err(e);
        }
        Ok(ifname)
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        let ifname = self.ifname();
        if !net::link_exists(&ifname) {
            // Nothing of ours is up (and the client need not even run).
            return Ok(());
        }
        route_via(&ifname, Ipv4Addr::UNSPECIFIED, false)?;
        // One run; an account that is not connected (or gone) only makes its step fail.
        let _ = self.vpncmd(&[
            format!("AccountDisconnect {ACCOUNT}"),
            format!("AccountDelete {ACCOUNT}"),
            format!("NicDelete {}", self.setup.device),
        ]);
        if net::link_exists(&ifname) {
            // Something failed before NicDelete: make sure it happens.
            self.one(format!("AccountDelete {ACCOUNT}"), &[NOT_FOUND])?;
            self.one(format!("NicDelete {}", self.setup.device), &[NOT_FOUND])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_plain() {
        assert!(check_name("hub", "mnigs").is_ok());
        for bad in [
            "",
            "a b",
            "a/b",
            "/PASSWORD:x",
            "a\nb",
            "-x",
            &"a".repeat(49),
        ] {
            assert!(check_name("hub", bad).is_err(), "{bad:?}");
        }
        assert_eq!(user_name(Ipv4Addr::new(100, 127, 0, 2)), "mn647f0002");
    }

    #[test]
    fn sessions_are_found_by_user() {
        let listing = "Item|Value\n----\nSession Name |SID-MN647F0002-3\nVLAN ID |-\n\
                       Location |Local Session\nUser Name |mn647f0002\n\
                       Session Name |SID-LOCALBRIDGE-1\nUser Name |Local Bridge\n";
        assert_eq!(
            sessions_of(listing, "mn647f0002"),
            ["SID-MN647F0002-3".to_string()]
        );
        assert!(sessions_of(listing, "mn647f0003").is_empty());
    }

    #[test]
    fn grant_fields_are_checked() {
        let g = |extra: Value| -> Grant {
            let mut v = json!({"success": true, "sid": "s", "timeout": 60, "method": "softether",
                "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        let cert = "-----BEGIN CERTIFICATE-----\nQUJD+/==\n-----END CERTIFICATE-----\n";
        let ok = json!({"port": 443, "hub": "mnigs", "username": "u", "password": "p",
                        "serverCert": cert});
        assert_eq!(grant_fields(&g(ok.clone())).unwrap().server_cert, cert);
        for (k, bad) in [
            ("port", json!(0)),
            ("hub", json!("a /SERVER:x")),
            ("username", json!("u\nUserDelete x")),
            ("password", json!("p /TYPE:radius")),
            (
                "serverCert",
                json!(cert.replace("QUJD+/==", "QUJD\nAccountDelete x")),
            ),
            (
                "serverCert",
                json!("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----"),
            ),
            ("serverCert", json!(7)),
        ] {
            let mut v = ok.clone();
            v[k] = bad;
            assert!(grant_fields(&g(v)).is_err(), "{k}");
        }
        // Without a certificate the client could not check the server: refused.
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove("serverCert");
        assert!(grant_fields(&g(v)).is_err());
    }
}
