//! Test helpers for the gateway's RPC surface without root: a tunnel method that configures
//! nothing (it only remembers its peers) and TCP connections from chosen loopback addresses, so
//! one process can play many callers (127.0.0.0/8 is all ours).
//!
//! Included with `#[path = "common/gateway.rs"] mod gateway_common;` by the tests that need it.

#![allow(dead_code)]

use mnigs::config::Config;
use mnigs::gateway::service::Gateway;
use mnigs::protocol::Grant;
use mnigs::rpc::dispatch::Services;
use mnigs::rpc::limits::Limits;
use mnigs::rpc::server::Server;
use mnigs::store::Store;
use mnigs::tunnel::{Method, Peer, TunnelError};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A gateway-side method named `wireguard` that accepts every peer, configures nothing and keeps
/// the `options.publicKey` of the peers it holds.
#[derive(Default)]
pub struct CountingMethod(pub Arc<Mutex<HashSet<String>>>);

fn key(peer: &Peer<'_>) -> String {
    peer.options
        .get("publicKey")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Method for CountingMethod {
    fn name(&self) -> &'static str {
        "wireguard"
    }
    fn accept(&mut self, peer: &Peer<'_>) -> Result<Map<String, Value>, TunnelError> {
        self.0.lock().unwrap().insert(key(peer));
        Ok(Map::new())
    }
    fn remove(&mut self, peer: &Peer<'_>) -> Result<(), TunnelError> {
        self.0.lock().unwrap().remove(&key(peer));
        Ok(())
    }
    fn connect(&mut self, _: IpAddr, _: &Grant) -> Result<String, TunnelError> {
        Err(TunnelError::Invalid("gateway-only test method".into()))
    }
    fn disconnect(&mut self) -> Result<(), TunnelError> {
        Ok(())
    }
}

/// A TCP connection to `to` from the local address `from` (bind before connect), with a 20 s
/// read timeout so a test never hangs on a silent server.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own; handed to TcpStream on success.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "bind {from}"
        );
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = to.port().to_be();
        remote.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect from {from}"
        );
        TcpStream::from_raw_fd(fd)
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A gateway node configured by `cfg` (its gateway role switched on here) with one
/// [`CountingMethod`] and an in-memory store, ready for an RPC server.
pub fn counting_node(cfg: Config) -> Arc<Services> {
    counting_node_with(cfg, CountingMethod::default())
}

/// [`counting_node`] with `method`, whose peers the caller may watch.
pub fn counting_node_with(mut cfg: Config, method: CountingMethod) -> Arc<Services> {
    cfg.gateway.enabled = true;
    let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
    let gw = Gateway::new(
        cfg.gateway.clone(),
        vec![Box::new(method)],
        store.clone(),
        None,
    );
    Arc::new(Services::new(cfg, store, Some(gw), None))
}

/// An RPC server of `node` on `listen` (one port for all, the kernel's pick) with `limits`, and
/// its address on 127.0.0.1.
pub fn serve(node: Arc<Services>, listen: &[IpAddr], limits: Limits) -> (Server, SocketAddr) {
    let server = Server::start_with(listen, 0, node, limits).unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
    (server, addr)
}

/// A JSON-RPC 2.0 call of `method` to `to` from the local address `from` (127.0.0.0/8 gives
/// us many callers); the whole answer.
pub fn call_from(from: Ipv4Addr, to: SocketAddr, method: &str, params: Value) -> Value {
    let mut s = connect_from(from, to);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let head = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {to}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}
