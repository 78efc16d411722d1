//! Discovery over cjdns: a breadth-first walk of the cjdns network through the local admin API.
//!
//! Our own peers come from `InterfaceController_peerStats` (labels from us). Each node found is
//! then asked for its peers with `RouterModule_getPeers` on its full `v<ver>.<label>.<key>.k`
//! address, paging with `nearbyPath`; a peer's label (relative to the node) is spliced onto the
//! node's label to get the path from us. Our own label/key is never queried: cjdroute crashed
//! when asked for its own peers. Each node's fc00::/8 address is derived from its key, and
//! depth and node caps bound the walk.
//!
//! # Layout
//! - [`walk`]: the breadth-first search, over any [`Admin`]; [`discover`]: config → candidates.
//! - Keys, labels and the admin client are [`crate::cjdns`]'s, shared with the tunnel method.

use super::Candidate;
use crate::cjdns::admin::{Admin, open_admin};
use crate::cjdns::bencode::Value;
use crate::cjdns::keys::{PeerAddr, address_of, format_label, key_bytes, splice};
use crate::config::DiscoveryConfig;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// `RouterModule_getPeers` answers at most this many peers per page.
const PAGE: usize = 8;

/// Pages asked of one node at most (a node has at most a few dozen peers).
const MAX_PAGES: usize = 16;

/// A node the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CjdnsNode {
    /// Its key (`….k`).
    pub key: String,
    /// Its fc00::/8 address.
    pub address: Ipv6Addr,
    /// The path from us.
    pub label: u64,
    /// Protocol version it reported.
    pub version: u32,
    /// Hops from us (0: ourselves).
    pub depth: u32,
}

/// What a walk saw: nodes (ourselves first) and links between them, for candidates and the UI.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Nodes in the order found; `nodes[0]` is ourselves.
    pub nodes: Vec<CjdnsNode>,
    /// Links as indices into `nodes`.
    pub links: Vec<(usize, usize)>,
    /// `RouterModule_getPeers` calls made.
    pub queries: u32,
    /// Calls that failed (a node that did not answer is a leaf for us).
    pub failures: u32,
}

/// Bounds of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Nodes at this depth are listed but not asked for their peers.
    pub max_depth: u32,
    /// Nodes found at most, not counting ourselves.
    pub max_nodes: u32,
}

/// The breadth-first walk from our node through `admin`.
pub fn walk(admin: &mut dyn Admin, caps: Caps) -> Result<Walk, String> {
    let me = admin.call("Core_nodeInfo", Value::dict([]))?;
    let my_addr = me
        .get("myAddr")
        .and_then(Value::as_str)
        .ok_or("Core_nodeInfo: no myAddr")?;
    let me = PeerAddr::parse(my_addr)?;
    let my_key = me.key.clone();
    let mut w = Walk::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    w.nodes.push(CjdnsNode {
        address: address_of(&key_bytes(&my_key)?)?,
        key: my_key.clone(),
        label: 1,
        version: me.version,
        depth: 0,
    });
    index.insert(my_key.clone(), 0);
    let mut queue = VecDeque::new();

    for page in 0..MAX_PAGES as i64 {
        let v = admin.call(
            "InterfaceController_peerStats",
            Value::dict([("page", Value::Int(page))]),
        )?;
        for p in v.get("peers").and_then(Value::as_list).unwrap_or(&[]) {
            if p.get("state").and_then(Value::as_str) != Some("ESTABLISHED") {
                continue;
            }
            let Some(pa) = p.get("addr").and_then(Value::as_str) else {
                continue;
            };
            let Ok(pa) = PeerAddr::parse(pa) else {
                continue;
            };
            if let Some(i) = add(&mut w, &mut index, &pa, pa.label, 1, caps) {
                queue.push_back(i);
                w.links.push((0, i));
            }
        }
        if v.get("more").and_then(Value::as_int).unwrap_or(0) == 0 {
            break;
        }
    }

    while let Some(i) = queue.pop_front() {
        let node = w.nodes[i].clone();
        // Never ask our own node: cjdroute crashes on it.
        if node.depth >= caps.max_depth || node.key == my_key || node.label == 1 {
            continue;
        }
        let path = PeerAddr {
            version: node.version,
            label: node.label,
            key: node.key.clone(),
        }
        .render();
        let mut nearby: Option<u64> = None;
        for _ in 0..MAX_PAGES {
            let mut args = vec![("path", Value::str(&path))];
            if let Some(n) = nearby {
                args.push(("nearbyPath", Value::str(&format_label(n))));
            }
            w.queries += 1;
            // An unreachable node is answered with `{result: "timeout"}` and no peers after
            // some seconds: a failed query, not a node without peers.
            let answer = admin
                .call("RouterModule_getPeers", Value::dict(args))
                .and_then(|v| match v.get("result").and_then(Value::as_str) {
                    Some("peers") | None if v.get("peers").is_some() => Ok(v),
                    other => Err(format!("no peers in the answer (result {other:?})")),
                });
            let v = match answer {
                Ok(v) => v,
                Err(e) => {
                    crate::debug!("cjdns: {path}: {e}");
                    w.failures += 1;
                    break;
                }
            };
            let peers: Vec<PeerAddr> = v
                .get("peers")
                .and_then(Value::as_list)
                .unwrap_or(&[])
                .iter()
                .filter_map(|p| PeerAddr::parse(p.as_str()?).ok())
                .collect();
            for p in &peers {
                if p.label == 1 {
                    continue; // the node itself
                }
                let Some(from_us) = splice(node.label, p.label) else {
                    continue;
                };
                match index.get(&p.key) {
                    Some(&j) => {
                        if j != i && !w.links.contains(&(j, i)) && !w.links.contains(&(i, j)) {
                            w.links.push((i, j));
                        }
                    }
                    None => {
                        if let Some(j) = add(&mut w, &mut index, p, from_us, node.depth + 1, caps) {
                            w.links.push((i, j));
                            queue.push_back(j);
                        }
                    }
                }
            }
            let last = peers.last().map(|p| p.label);
            if peers.len() < PAGE || last.is_none() || last == nearby {
                break;
            }
            nearby = last;
        }
    }
    Ok(w)
}

/// Adds a newly seen node unless it is known, invalid, or the node cap is reached.
fn add(
    w: &mut Walk,
    index: &mut HashMap<String, usize>,
    pa: &PeerAddr,
    label: u64,
    depth: u32,
    caps: Caps,
) -> Option<usize> {
    if index.contains_key(&pa.key) || w.nodes.len() > caps.max_nodes as usize {
        return None;
    }
    let address = address_of(&key_bytes(&pa.key).ok()?).ok()?;
    w.nodes.push(CjdnsNode {
        key: pa.key.clone(),
        address,
        label,
        version: pa.version,
        depth,
    });
    index.insert(pa.key.clone(), w.nodes.len() - 1);
    Some(w.nodes.len() - 1)
}

/// Candidates of a walk: every node but ourselves, on every configured port.
pub fn candidates(w: &Walk, ports: &[u16]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for n in w.nodes.iter().filter(|n| n.depth > 0) {
        for port in ports {
            out.push(Candidate {
                address: IpAddr::V6(n.address),
                port: *port,
                how: "cjdns".into(),
                hops: n.depth,
            });
        }
    }
    out
}

/// Walks the cjdns network as `cfg` says and returns its nodes as candidates.
pub fn discover(cfg: &DiscoveryConfig) -> Result<super::Found, String> {
    let conf = cfg
        .cjdroute_conf
        .as_ref()
        .map(|p| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display())))
        .transpose()?;
    let timeout = Duration::from_millis(u64::from(cfg.timeout_ms));
    let mut client = open_admin(cfg.admin.clone(), cfg.password.clone(), conf, timeout)?;
    let caps = Caps {
        max_depth: cfg.max_depth,
        max_nodes: cfg.max_nodes,
    };
    let w = walk(&mut client, caps)?;
    crate::info!(
        "cjdns: {} node(s), {} link(s), {} query(ies), {} failure(s)",
        w.nodes.len().saturating_sub(1),
        w.links.len(),
        w.queries,
        w.failures
    );
    Ok(super::Found {
        candidates: candidates(&w, &cfg.ports),
        graph: Some(super::Graph::of_walk(
            w.nodes.iter().map(|n| (n.address, n.depth)),
            &w.links,
        )),
    })
}
