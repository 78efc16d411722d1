//! WireGuard: one interface on the gateway with a peer per subscriber; one interface on the
//! subscriber with the gateway as its only peer.
//!
//! The kernel module is used when `ip link add … type wireguard` works, otherwise `wireguard-go`
//! (which daemonizes and exits by itself when its interface is deleted). The node's private key
//! is made once and kept in the store ([`stored_key`]).

use super::{GatewayNet, Method, Peer, TunnelError};
use crate::json;
use crate::protocol::Grant;
use crate::store::Store;
use crate::sys::{cmd, net};
use crate::validate;
use serde_json::{Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Key in the store under which a node keeps its WireGuard private key.
pub const PRIVATE_KEY: &str = "wireguard.private_key";

/// Makes a new private key with `wg genkey`.
pub fn generate_key() -> Result<String, TunnelError> {
    Ok(cmd::run(&["wg", "genkey"])?.trim().to_string())
}

/// Our WireGuard private key, made on first use and kept in the store.
pub fn stored_key(store: &Mutex<Store>) -> Result<String, String> {
    let store = store.lock().expect("not poisoned");
    if let Some(k) = store.get_kv(PRIVATE_KEY).map_err(|e| e.to_string())? {
        return Ok(k);
    }
    let k = generate_key().map_err(|e| format!("cannot make a WireGuard key: {e}"))?;
    store.set_kv(PRIVATE_KEY, &k).map_err(|e| e.to_string())?;
    Ok(k)
}

/// Derives the public key of `private` with `wg pubkey`.
pub fn public_key(private: &str) -> Result<String, TunnelError> {
    let public = cmd::run_input(&["wg", "pubkey"], &format!("{private}\n"))?
        .trim()
        .to_string();
    validate::wg_key(&public).map_err(TunnelError::Invalid)?;
    Ok(public)
}

/// Creates a WireGuard interface: kernel first, then `wireguard-go`. Existing ones are kept.
fn create_link(ifname: &str) -> Result<(), TunnelError> {
    if net::link_exists(ifname) {
        return Ok(());
    }
    if cmd::run(&["ip", "link", "add", "dev", ifname, "type", "wireguard"]).is_ok() {
        return Ok(());
    }
    crate::log::debug("no kernel WireGuard, using wireguard-go");
    cmd::run(&["wireguard-go", ifname])?;
    if net::link_exists(ifname) {
        Ok(())
    } else {
        Err(TunnelError::Invalid(format!(
            "wireguard-go did not create interface {ifname}"
        )))
    }
}

/// The WireGuard method, for one role.
pub struct Wireguard {
    ifname: String,
    /// Our UDP port: the gateway's listening port, or the subscriber's own.
    listen_port: u16,
    mtu: u16,
    private_key: String,
    public_key: String,
}

impl Wireguard {
    /// A method instance using interface `ifname` (already validated) and our key pair.
    pub fn new(
        ifname: &str,
        listen_port: u16,
        mtu: u16,
        private_key: String,
    ) -> Result<Wireguard, TunnelError> {
        let public_key = public_key(&private_key)?;
        Ok(Wireguard {
            ifname: ifname.to_string(),
            listen_port,
            mtu,
            private_key,
            public_key,
        })
    }

    /// A method instance whose public key is already known (no program runs).
    pub fn with_keys(
        ifname: &str,
        listen_port: u16,
        mtu: u16,
        private_key: String,
        public_key: String,
    ) -> Wireguard {
        Wireguard {
            ifname: ifname.to_string(),
            listen_port,
            mtu,
            private_key,
            public_key,
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    fn set_private_key(&self, extra: &[&str]) -> Result<(), TunnelError> {
        let mut argv = vec!["wg", "set", &self.ifname, "private-key", "/dev/stdin"];
        argv.extend_from_slice(extra);
        cmd::run_input(&argv, &format!("{}\n", self.private_key))?;
        Ok(())
    }
}

fn peer_key(options: &Map<String, Value>) -> Result<&str, TunnelError> {
    options
        .get("publicKey")
        .and_then(Value::as_str)
        .ok_or_else(|| TunnelError::Invalid("options.publicKey is missing".into()))
}

fn peer_port(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

fn allowed_ips(peer: &Peer<'_>) -> String {
    match peer.ipv6 {
        Some(v6) => format!("{}/32,{v6}/128", peer.ipv4),
        None => format!("{}/32", peer.ipv4),
    }
}

impl Wireguard {
    /// The grant fields for `peer`.
    fn fields(&self, peer: &Peer<'_>) -> Map<String, Value> {
        let mut fields = Map::new();
        json::put(&mut fields, "publicKey", &self.public_key);
        json::put(&mut fields, "listenPort", &self.listen_port);
        json::put(&mut fields, "mtu", &self.mtu);
        if let Some(via) = peer.via {
            let host = via
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, self.listen_port).to_string());
            if let Ok(endpoint) = host {
                json::put(&mut fields, "endpoint", &endpoint);
            }
        }
        fields
    }
}

impl Method for Wireguard {
    fn name(&self) -> &'static str {
        "wireguard"
    }

    fn check_options(&self, options: &Map<String, Value>) -> Result<(), String> {
        match options.get("publicKey") {
            Some(Value::String(k)) => {
                validate::wg_key(k).map_err(|e| format!("options.publicKey: {e}"))?
            }
            Some(_) => return Err("options.publicKey must be a string".into()),
            None => return Err("options.publicKey is required for wireguard".into()),
        }
        match options.get("listenPort") {
            Some(v) if peer_port(v).is_none() => {
                Err("options.listenPort must be a port number 1-65535".into())
            }
            _ => Ok(()),
        }
    }

    fn prepare(&mut self, gw: &GatewayNet) -> Result<(), TunnelError> {
        // Peers left by an earlier run are dropped: the lease book re-adds the live ones.
        net::link_delete(&self.ifname)?;
        create_link(&self.ifname)?;
        self.set_private_key(&["listen-port", &self.listen_port.to_string()])?;
        net::addr_replace(&self.ifname, IpAddr::V4(gw.ipv4), gw.cidr4)?;
        if let Some((v6, len)) = gw.ipv6 {
            net::addr_replace(&self.ifname, IpAddr::V6(v6), len)?;
        }
        net::link_up(&self.ifname, self.mtu)?;
        Ok(())
    }

    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        let mut fields = self.accept_many(std::slice::from_ref(peer))?;
        Ok(fields.pop().unwrap_or_default())
    }

    /// All peers in one `wg set` and their host routes in one `ip -batch`; on an error the
    /// peers and routes of the batch are removed again.
    fn accept_many(&mut self, peers: &[Peer<'_>]) -> Result<Vec<Map<String, Value>>, TunnelError> {
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv: Vec<String> = ["wg", "set", &self.ifname]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for peer in peers {
            let key = peer_key(peer.options)?;
            argv.extend(["peer", key, "allowed-ips"].map(String::from));
            argv.push(allowed_ips(peer));
            // Knowing the subscriber's port, the gateway starts the handshake itself; after a
            // gateway restart the subscriber would otherwise wait for its rekey timeout.
            if let Some(p) = peer.options.get("listenPort").and_then(peer_port) {
                argv.push("endpoint".into());
                argv.push(SocketAddr::new(peer.owner, p).to_string());
                argv.extend(["persistent-keepalive", "25"].map(String::from));
            }
        }
        // The peers and their routes are independent: both programs run at once.
        let ifname = &self.ifname;
        let (set, routes) = std::thread::scope(|scope| {
            let work = || super::host_routes_many(ifname, peers, true);
            let routes = crate::threads::spawn_scoped(scope, work);
            let set = cmd::run(&argv);
            (set, routes.join().expect("route thread"))
        });
        let done = set.map_err(TunnelError::from).and(routes);
        if let Err(e) = done {
            // Nothing half-configured: whatever of the batch got in goes again.
            let _ = self.remove_many(peers);
            return Err(e);
        }
        Ok(peers.iter().map(|peer| self.fields(peer)).collect())
    }

    fn ingress(&self, _peer: &Peer<'_>) -> Result<super::Ingress, TunnelError> {
        Ok(super::Ingress::Forwarded {
            ifname: self.ifname.clone(),
            mac: None,
        })
    }

    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        self.remove_many(std::slice::from_ref(peer))
    }

    /// All peers in one `wg set` (removing an absent peer is no error), routes in one `ip -batch`.
    fn remove_many(&mut self, peers: &[Peer<'_>]) -> Result<(), TunnelError> {
        if peers.is_empty() || !net::link_exists(&self.ifname) {
            return Ok(());
        }
        let mut argv = vec!["wg", "set", &self.ifname];
        for peer in peers {
            argv.extend(["peer", peer_key(peer.options)?, "remove"]);
        }
        let ifname = &self.ifname;
        let (set, routes) = std::thread::scope(|scope| {
            let work = || super::host_routes_many(ifname, peers, false);
            let routes = crate::threads::spawn_scoped(scope, work);
            let set = cmd::run(&argv);
            (set, routes.join().expect("route thread"))
        });
        routes?;
        set?;
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), TunnelError> {
        Ok(net::link_delete(&self.ifname)?)
    }

    fn request_options(&self) -> Map<String, Value> {
        let mut m = Map::new();
        json::put(&mut m, "publicKey", &self.public_key);
        json::put(&mut m, "listenPort", &self.listen_port);
        m
    }

    fn connect(&mut self, gateway: IpAddr, grant: &Grant) -> Result<String, TunnelError> {
        let field = |k: &str| grant.extra.get(k);
        let gw_key = field("publicKey")
            .and_then(Value::as_str)
            .ok_or_else(|| TunnelError::Invalid("gateway's answer lacks publicKey".into()))?;
        validate::wg_key(gw_key)
            .map_err(|e| TunnelError::Invalid(format!("gateway publicKey: {e}")))?;
        let port = field("listenPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                TunnelError::Invalid("gateway's answer lacks a valid listenPort".into())
            })?;
        let mtu = super::grant_mtu(grant, self.mtu);
        // The endpoint is the address we reached the gateway at: it is routed over the mesh.
        let endpoint = SocketAddr::new(gateway, port).to_string();
        let (ipv4, ipv6) = grant_addresses(grant)?;
        net::link_delete(&self.ifname)?;
        create_link(&self.ifname)?;
        let mut allowed = "0.0.0.0/0".to_string();
        if ipv6.is_some() {
            allowed.push_str(",::/0");
        }
        let port = self.listen_port.to_string();
        self.set_private_key(&[
            "listen-port",
            &port,
            "peer",
            gw_key,
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
            "persistent-keepalive",
            "25",
        ])?;
        net::addr_replace(&self.ifname, IpAddr::V4(ipv4.0), ipv4.1)?;
        if let Some((v6, len)) = ipv6 {
            net::addr_replace(&self.ifname, IpAddr::V6(v6), len)?;
        }
        net::link_up(&self.ifname, mtu)?;
        net::route_internet_via(&self.ifname, ipv6.is_some())?;
        Ok(self.ifname.clone())
    }

    fn disconnect(&mut self) -> Result<(), TunnelError> {
        Ok(net::link_delete(&self.ifname)?)
    }
}

type V4 = (std::net::Ipv4Addr, u8);
type V6 = (std::net::Ipv6Addr, u8);

/// The tunnel addresses a grant assigns us, checked.
pub fn grant_addresses(grant: &Grant) -> Result<(V4, Option<V6>), TunnelError> {
    let bad = |what: &str| TunnelError::Invalid(format!("gateway's answer has an invalid {what}"));
    let v4 = grant.ipv4.parse().map_err(|_| bad("ipv4"))?;
    if grant.cidr4 > 32 {
        return Err(bad("cidr4"));
    }
    let v6 = match (&grant.ipv6, grant.cidr6) {
        (Some(a), Some(len)) if len <= 128 => Some((a.parse().map_err(|_| bad("ipv6"))?, len)),
        (Some(a), None) => Some((a.parse().map_err(|_| bad("ipv6"))?, 128)),
        (Some(_), Some(_)) => return Err(bad("cidr6")),
        (None, _) => None,
    };
    Ok(((v4, grant.cidr4), v6))
}
