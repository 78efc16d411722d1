//! Which JSON-RPC method does what, and who may call it.
//!
//! [`METHODS`] is the one place that maps a method name to its handler (one line per method,
//! with its [`Kind`], which decides who may call it); [`Services`] is what the handlers answer
//! from. Access control is [`Handler::permitted`] below: an unknown method is reported as such
//! first (a newer node calling us must learn that we lack it, whatever its headers); mesh methods
//! are open; read methods need `option web 'readonly'` or more; actions need
//! `authorized_network` or `option web 'full'`. The cross-site rules come after, in
//! [`super::guard`].
//!
//! To add a method: its parameters and result in [`crate::protocol`], a handler function here,
//! one line in [`METHODS`], and its name in [`guard::MESH_METHODS`] or [`guard::READ_METHODS`]
//! unless it is an action.

use crate::chan;
use crate::clock::now;
use crate::config::Config;
use crate::gateway::service::Gateway;
use crate::json::object;
use crate::protocol::{ConnectionRequest, Failure, NodeInfo, Request, RpcError, code};
use crate::rpc::guard::{self, Kind};
use crate::rpc::server::{Caller, Handler};
use crate::store::Store;
use crate::subscriber::supervisor::{self, Command};
use crate::web::{Access, graph};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

/// JSON-RPC error code for a local control method called from outside `authorized_network`
/// (and for the cross-site refusals of [`crate::rpc::guard`]).
pub const FORBIDDEN: i64 = guard::FORBIDDEN;

/// A method's handler: its answer to `caller`, whose access is `access`.
type Call = fn(&Services, &Caller, &Request, Access) -> Result<Value, RpcError>;

/// Every method this node answers: name, kind (as [`guard::kind`] tells it; a test keeps the two
/// in step) and handler.
pub const METHODS: &[(&str, Kind, Call)] = &[
    // Between nodes.
    ("nodeInfo", Kind::Mesh, node_info),
    ("requestConnection", Kind::Mesh, request_connection),
    ("renewConnection", Kind::Mesh, renew_connection),
    ("releaseConnection", Kind::Mesh, release_connection),
    // Local control: reads.
    ("status", Kind::Read, status),
    ("meshGraph", Kind::Read, mesh_graph),
    ("listGateways", Kind::Read, list_gateways),
    ("listSessions", Kind::Read, list_sessions),
    // Local control: actions.
    ("scan", Kind::Action, scan),
    ("connect", Kind::Action, connect),
    ("disconnect", Kind::Action, disconnect),
];

/// The kind and handler of `method`, if this node has the method.
fn lookup(method: &str) -> Option<(Kind, Call)> {
    METHODS
        .iter()
        .find(|(name, _, _)| *name == method)
        .map(|(_, kind, call)| (*kind, *call))
}

/// What the RPC methods answer from: the running configuration, the store and the roles. The
/// daemon builds one and serves it ([`Handler`]); it also reloads and shuts down through it.
pub struct Services {
    /// The running configuration; replaced on reload.
    pub(crate) cfg: RwLock<Config>,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) subscriber: Option<supervisor::Handle>,
    /// The flash copy's path and counters, as `status` shows them; `None` without `persist_path`.
    pub(crate) persisted: Mutex<Option<Value>>,
    /// The node's own mesh addresses for `nodeInfo`, and when they were read.
    addresses: Mutex<Option<(std::time::Instant, Vec<IpAddr>)>>,
}

/// How long the node's own addresses are listed before they are read again.
const ADDRESSES_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl Services {
    /// The services of a node with the roles given.
    pub fn new(
        cfg: Config,
        store: Arc<Mutex<Store>>,
        gateway: Option<Gateway>,
        subscriber: Option<supervisor::Handle>,
    ) -> Services {
        Services {
            cfg: RwLock::new(cfg),
            store,
            gateway,
            subscriber,
            persisted: Mutex::new(None),
            addresses: Mutex::new(None),
        }
    }

    /// A gateway's own mesh addresses ([`crate::gateway::addresses::mesh_addresses`]), read at
    /// most every [`ADDRESSES_FOR`]; none on a node that is no gateway, or if they cannot be read.
    fn own_addresses(&self) -> Vec<IpAddr> {
        if self.gateway.is_none() {
            return Vec::new();
        }
        let mut cached = self.addresses.lock().expect("not poisoned");
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < ADDRESSES_FOR
        {
            return list.clone();
        }
        let list = match crate::sys::net::addresses() {
            Ok(all) => {
                let cfg = self.cfg();
                let g = &cfg.gateway;
                let pools: Vec<_> = std::iter::once(g.ipv4_pool).chain(g.ipv6_pool).collect();
                crate::gateway::addresses::mesh_addresses(
                    &all,
                    &cfg.mesh_interfaces(),
                    &g.wan_interface,
                    &pools,
                )
            }
            Err(e) => {
                crate::debug!("nodeInfo: own addresses: {e}");
                Vec::new()
            }
        };
        *cached = Some((std::time::Instant::now(), list.clone()));
        list
    }

    /// The running configuration.
    pub(crate) fn cfg(&self) -> std::sync::RwLockReadGuard<'_, Config> {
        self.cfg.read().expect("not poisoned")
    }

    fn authorized(&self, addr: IpAddr) -> bool {
        self.cfg()
            .main
            .authorized_network
            .iter()
            .any(|p| p.contains(addr))
    }

    /// What `caller` may do with the local control methods and the page.
    fn access(&self, caller: &Caller) -> Access {
        if self.authorized(caller.addr) {
            Access::Full
        } else {
            self.cfg().main.web
        }
    }

    /// Sessions as `caller` may see them: session ids only for full access.
    fn sessions_for(&self, access: Access) -> Value {
        let mut sessions = self
            .gateway
            .as_ref()
            .map_or(Value::Array(vec![]), Gateway::sessions);
        if access != Access::Full
            && let Value::Array(list) = &mut sessions
        {
            for s in list.iter_mut().filter_map(Value::as_object_mut) {
                s.remove("sid");
            }
        }
        sessions
    }

    /// The gateways in the store, as the control methods report them.
    fn stored_gateways(&self) -> Result<Vec<crate::store::GatewayRow>, RpcError> {
        let store = self.store.lock().expect("not poisoned");
        store
            .gateways()
            .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))
    }

    /// The stored gateways, one group of rows per node ([`crate::discovery::nodes::group`]),
    /// the most recently seen first.
    fn gateway_nodes(&self) -> Result<Vec<Vec<crate::store::GatewayRow>>, RpcError> {
        Ok(crate::discovery::nodes::group(
            self.stored_gateways()?,
            |r| {
                let listed = r.info["addresses"].as_array().into_iter().flatten();
                let listed = listed.filter_map(|a| a.as_str()?.parse().ok()).collect();
                Some((r.address.parse().ok()?, r.name.clone(), listed))
            },
        ))
    }

    fn mesh_graph(&self) -> Result<Value, RpcError> {
        let current = self.subscriber.as_ref().and_then(|s| {
            let st = s.status.lock().expect("not poisoned");
            st["gateway"]["address"].as_str().map(str::to_string)
        });
        // One vertex per node: at the address in use, if it is this node, else its latest.
        let seen: Vec<graph::SeenGateway> = self
            .gateway_nodes()?
            .into_iter()
            .filter_map(|mut rows| {
                let k = rows
                    .iter()
                    .position(|r| Some(&r.address) == current.as_ref())
                    .unwrap_or(0);
                (k < rows.len()).then(|| rows.swap_remove(k))
            })
            .map(|r| graph::SeenGateway {
                address: r.address,
                name: r.name,
                how: r.how,
                hops: r.hops,
            })
            .collect();
        let subscribers: Vec<graph::SeenSubscriber> = self
            .sessions_for(Access::Readonly)
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| graph::SeenSubscriber {
                address: s["address"].as_str().unwrap_or_default().to_string(),
                name: s["name"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        let g = graph::build(
            &self.cfg().main.name,
            self.gateway.is_some(),
            &seen,
            current.as_deref(),
            &subscribers,
        );
        let mut v = serde_json::to_value(g).expect("serializes");
        v["success"] = Value::Bool(true);
        Ok(v)
    }

    fn node_info(&self) -> Value {
        let (methods, terms, uplink) = match &self.gateway {
            Some(g) => g.offer(),
            None => (vec![], Default::default(), Default::default()),
        };
        let info = NodeInfo {
            success: true,
            name: self.cfg().main.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            gateway: self.gateway.is_some(),
            methods,
            terms,
            uplink,
            gateways: self
                .store
                .lock()
                .expect("not poisoned")
                .gateways()
                .map(|rows| crate::discovery::gossip::advertised(&rows, now()))
                .unwrap_or_default(),
            addresses: self.own_addresses(),
        };
        serde_json::to_value(info).expect("serializes")
    }

    fn status(&self, access: Access) -> Value {
        let gateway = self.gateway.as_ref().map(|g| {
            let (methods, terms, uplink) = g.offer();
            object!({"enabled": true, "methods": methods, "terms": terms, "uplink": uplink,
                     "uplinkCheck": g.uplink_check(),
                     "sessions": self.sessions_for(access)})
        });
        let subscriber = self
            .subscriber
            .as_ref()
            .map(|s| s.status.lock().expect("not poisoned").clone());
        let persist = self.persisted.lock().expect("not poisoned").clone();
        object!({"success": true, "name": self.cfg().main.name, "version": env!("CARGO_PKG_VERSION"),
                 "gateway": gateway, "subscriber": subscriber, "access": access.name(),
                 "persist": persist})
    }

    fn gateways(&self) -> Result<Value, RpcError> {
        let nodes = self.gateway_nodes()?;
        // Connection quality is kept per node name (subscriber side); absent for the others.
        let quality = self
            .store
            .lock()
            .expect("not poisoned")
            .quality()
            .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?;
        let t = now();
        // One entry per node: its latest answer, every address it was found at, the shortest
        // known distance and the failures at all of them.
        let list: Vec<Value> = nodes
            .into_iter()
            .filter_map(|rows| {
                let r = rows.first()?;
                let q = quality.iter().find(|q| q.name == r.name);
                let addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
                let found: Vec<Value> = rows
                    .iter()
                    .map(|r| object!({"address": r.address, "hops": r.hops, "how": r.how}))
                    .collect();
                let hops = rows.iter().map(|r| r.hops).filter(|h| *h > 0).min();
                let failures: u32 = rows.iter().map(|r| r.failures).sum();
                Some(
                    object!({"name": r.name, "address": r.address, "addresses": addresses, "found": found,
                         "port": r.port, "how": r.how, "hops": hops.unwrap_or(0),
                         "seenAgo": (t - r.last_seen).max(0), "failures": failures, "info": r.info,
                         "quality": q}),
                )
            })
            .collect();
        Ok(object!({"success": true, "gateways": list}))
    }

    fn subscriber_call(&self, make: impl FnOnce(chan::Sender<Value>) -> Command) -> Value {
        match &self.subscriber {
            Some(s) => s.ask(make),
            None => Failure::permanent("the subscriber role is disabled on this node").to_value(),
        }
    }
}

fn not_gateway() -> Value {
    Failure::permanent("this node is not a gateway").to_value()
}

fn node_info(s: &Services, _: &Caller, _: &Request, _: Access) -> Result<Value, RpcError> {
    Ok(s.node_info())
}

fn request_connection(
    s: &Services,
    caller: &Caller,
    req: &Request,
    _: Access,
) -> Result<Value, RpcError> {
    let r = ConnectionRequest::from_params(&req.params)?;
    Ok(s.gateway
        .as_ref()
        .map_or_else(not_gateway, |g| g.request_connection(caller, r)))
}

fn renew_connection(
    s: &Services,
    caller: &Caller,
    req: &Request,
    _: Access,
) -> Result<Value, RpcError> {
    let sid = sid_param(req)?;
    Ok(s.gateway
        .as_ref()
        .map_or_else(not_gateway, |g| g.renew(caller, &sid)))
}

fn release_connection(
    s: &Services,
    caller: &Caller,
    req: &Request,
    _: Access,
) -> Result<Value, RpcError> {
    let sid = sid_param(req)?;
    Ok(s.gateway
        .as_ref()
        .map_or_else(not_gateway, |g| g.release(caller, &sid)))
}

fn status(s: &Services, _: &Caller, _: &Request, access: Access) -> Result<Value, RpcError> {
    Ok(s.status(access))
}

fn mesh_graph(s: &Services, _: &Caller, _: &Request, _: Access) -> Result<Value, RpcError> {
    s.mesh_graph()
}

fn list_gateways(s: &Services, _: &Caller, _: &Request, _: Access) -> Result<Value, RpcError> {
    s.gateways()
}

fn list_sessions(s: &Services, _: &Caller, _: &Request, access: Access) -> Result<Value, RpcError> {
    Ok(object!({"success": true, "sessions": s.sessions_for(access)}))
}

fn scan(s: &Services, _: &Caller, _: &Request, _: Access) -> Result<Value, RpcError> {
    Ok(s.subscriber_call(Command::Scan))
}

fn disconnect(s: &Services, _: &Caller, _: &Request, _: Access) -> Result<Value, RpcError> {
    Ok(s.subscriber_call(Command::Disconnect))
}

fn connect(s: &Services, _: &Caller, req: &Request, _: Access) -> Result<Value, RpcError> {
    let address: IpAddr = req
        .params
        .string("address", 0)?
        .parse()
        .map_err(|_| RpcError::invalid_params("address must be an IPv4 or IPv6 address"))?;
    let port = req
        .params
        .opt_port("port", 1)?
        .unwrap_or(s.cfg().main.rpc_port);
    let method = req.params.opt_string("method", 2)?.map(str::to_string);
    if let Some(m) = &method {
        crate::validate::method(m).map_err(RpcError::invalid_params)?;
    }
    Ok(s.subscriber_call(|reply| Command::Connect {
        address,
        port,
        method,
        reply,
    }))
}

fn sid_param(req: &Request) -> Result<String, RpcError> {
    Ok(req.params.string("sid", 0)?.to_string())
}

fn unknown_method(m: &str) -> RpcError {
    RpcError::new(
        code::METHOD_NOT_FOUND,
        format!("unknown method '{}'", m.escape_debug()),
    )
}

impl Handler for Services {
    /// An unknown method is reported as such first (a newer node calling us must learn that we
    /// lack it, whatever its headers). Mesh methods are open; read methods (`guard::READ_METHODS`) need `option web 'readonly'`
    /// or more; everything else (the actions) needs `authorized_network` or `option web 'full'`.
    fn permitted(&self, caller: &Caller, m: &str) -> Result<(), RpcError> {
        let Some((kind, _)) = lookup(m) else {
            return Err(unknown_method(m));
        };
        let allowed = match (self.access(caller), kind) {
            (_, Kind::Mesh) | (Access::Full, _) => true,
            (Access::Readonly, kind) => kind == Kind::Read,
            (Access::Off, _) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(RpcError::new(
            FORBIDDEN,
            format!(
                "permission denied: {} is only answered to authorized_network callers, not {}",
                m.escape_debug(),
                caller.addr
            ),
        ))
    }

    fn page_controls(&self, caller: &Caller) -> bool {
        self.access(caller) == Access::Full
    }

    fn hostnames(&self) -> Vec<String> {
        self.cfg().main.hostname.clone()
    }

    fn call(&self, caller: &Caller, req: &Request) -> Result<Value, RpcError> {
        let m = req.method.as_str();
        let access = self.access(caller);
        self.permitted(caller, m)?;
        let (_, call) = lookup(m).ok_or_else(|| unknown_method(m))?;
        call(self, caller, req, access)
    }

    fn web_page(&self, caller: &Caller) -> bool {
        self.access(caller) != Access::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_one_handler_and_the_kind_the_guard_gives_it() {
        for (i, (name, kind, _)) in METHODS.iter().enumerate() {
            assert_eq!(guard::kind(name), *kind, "{name}");
            assert!(
                METHODS[..i].iter().all(|(other, _, _)| other != name),
                "{name} twice"
            );
        }
        for name in guard::MESH_METHODS.iter().chain(guard::READ_METHODS) {
            assert!(lookup(name).is_some(), "{name} has no handler");
        }
        assert!(lookup("shutdown").is_none());
    }
}
