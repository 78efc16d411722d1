//! cjdns discovery against a simulated cjdroute admin API (`tests/common/cjdns_admin.rs`: UDP on
//! loopback, bencode, cookie + SHA-256 auth, padded answers) serving a generated 300-node topology.
//!
//! The simulator routes every `RouterModule_getPeers` path hop by hop from our node, so a wrongly
//! spliced label reaches the wrong node (or none) and is counted; asking for our own node's
//! peers makes it stop answering, as cjdroute crashed when asked that. Answers are shaped as
//! cjdroute v22.1's: the queried node itself (label 1) and the link back in every peer list, six
//! peers per `peerStats` page, and `{result: "timeout"}` without peers for an unreachable path.

#[path = "common/cjdns_admin.rs"]
mod cjdns_admin;

use mnigs::cjdns::admin::UdpAdmin;
use mnigs::cjdns::bencode::Value;
use mnigs::cjdns::keys::{self, PeerAddr};
use mnigs::discovery::cjdns::{self, Caps};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "sim-secret";

/// xorshift64*: a reproducible topology per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A generated network: node 0 is "our" node.
struct Topology {
    keys: Vec<String>,
    addresses: Vec<Ipv6Addr>,
    /// Per node: (director, peer index); the one-hop label is `0x10 | director`.
    links: Vec<Vec<(u64, usize)>>,
    gateways: HashSet<usize>,
}

impl Topology {
    fn generate(n: usize, extra_links: usize, seed: u64) -> Topology {
        let mut rng = Rng(seed);
        let mut keys = Vec::new();
        let mut addresses = Vec::new();
        while keys.len() < n {
            let mut k = [0u8; 32];
            for chunk in k.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            // Real keys are searched for until their address starts with 0xfc; so are these.
            if let Ok(a) = keys::address_of(&k) {
                keys.push(keys::encode_key(&k));
                addresses.push(a);
            }
        }
        let mut links: Vec<Vec<(u64, usize)>> = vec![Vec::new(); n];
        let connect = |links: &mut Vec<Vec<(u64, usize)>>, a: usize, b: usize| {
            if a == b || links[a].len() >= 16 || links[b].len() >= 16 {
                return false;
            }
            if links[a].iter().any(|(_, p)| *p == b) {
                return false;
            }
            let da = links[a].len() as u64;
            let db = links[b].len() as u64;
            links[a].push((da, b));
            links[b].push((db, a));
            true
        };
        for i in 1..n {
            // A random tree keeps everything reachable…
            while !connect(&mut links, i, rng.below(i)) {}
        }
        let mut added = 0;
        while added < extra_links {
            // …and extra links make cycles, so nodes are seen more than once.
            if connect(&mut links, rng.below(n), rng.below(n)) {
                added += 1;
            }
        }
        let gateways = (1..n).filter(|i| i % 23 == 7).collect();
        Topology {
            keys,
            addresses,
            links,
            gateways,
        }
    }

    /// Hops from node 0 to every node.
    fn distances(&self) -> Vec<u32> {
        let mut d = vec![u32::MAX; self.keys.len()];
        d[0] = 0;
        let mut q = VecDeque::from([0]);
        while let Some(i) = q.pop_front() {
            for (_, p) in &self.links[i] {
                if d[*p] == u32::MAX {
                    d[*p] = d[i] + 1;
                    q.push_back(*p);
                }
            }
        }
        d
    }

    /// The node a path from node 0 leads to, following one 4-bit director per hop.
    fn resolve(&self, mut label: u64) -> Option<usize> {
        let mut at = 0;
        while label > 1 {
            if label < 0x10 {
                return None;
            }
            let director = label & 0xf;
            at = self.links[at].iter().find(|(d, _)| *d == director)?.1;
            label >>= 4;
        }
        (label == 1).then_some(at)
    }
}

#[derive(Default)]
struct Counters {
    bad_paths: AtomicU32,
    self_queried: AtomicBool,
    /// Nodes that do not answer (cjdroute then answers `{result: "timeout"}`, no peers).
    unreachable: Mutex<HashSet<usize>>,
}

/// cjdroute's answer to `getPeers` for a path nobody answers on (after ~4.6 s there): no
/// `peers` key, no error.
fn timeout_answer() -> Vec<(&'static str, Value)> {
    vec![("result", Value::str("timeout")), ("ms", Value::Int(4600))]
}

/// The topology's functions, served by the shared simulated admin API.
struct TopoFunctions {
    topo: Arc<Topology>,
    counters: Arc<Counters>,
    queried: Arc<Mutex<Vec<usize>>>,
}

impl cjdns_admin::Functions for TopoFunctions {
    fn needs_auth(&self, function: &str) -> bool {
        function == "RouterModule_getPeers"
    }

    fn call(&mut self, function: &str, args: &Value) -> Vec<(String, Value)> {
        handle(&self.topo, &self.counters, &self.queried, function, args)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// cjdroute crashed when asked for its own peers.
    fn crashed(&self) -> bool {
        self.counters.self_queried.load(Ordering::SeqCst)
    }
}

fn peer_addr(topo: &Topology, node: usize, label: u64) -> Value {
    Value::str(
        &PeerAddr {
            version: 22,
            label,
            key: topo.keys[node].clone(),
        }
        .render(),
    )
}

fn handle(
    topo: &Topology,
    counters: &Counters,
    queried: &Mutex<Vec<usize>>,
    f: &str,
    args: &Value,
) -> Vec<(&'static str, Value)> {
    match f {
        "Core_nodeInfo" => vec![
            ("myAddr", peer_addr(topo, 0, 1)),
            ("error", Value::str("none")),
        ],
        "InterfaceController_peerStats" => {
            let page = args.get("page").and_then(Value::as_int).unwrap_or(0) as usize;
            let all = &topo.links[0];
            let peers: Vec<Value> = all
                .iter()
                .skip(page * 6)
                .take(6)
                .map(|(d, p)| {
                    Value::dict([
                        ("addr", peer_addr(topo, *p, 0x10 | d)),
                        ("state", Value::str("ESTABLISHED")),
                    ])
                })
                .collect();
            let mut out = vec![
                ("peers", Value::List(peers)),
                ("total", Value::Int(all.len() as i64)),
            ];
            if all.len() > (page + 1) * 6 {
                out.push(("more", Value::Int(1)));
            }
            out
        }
        "RouterModule_getPeers" => {
            let Some(path) = args
                .get("path")
                .and_then(Value::as_str)
                .and_then(|p| PeerAddr::parse(p).ok())
            else {
                return vec![("error", Value::str("bad path"))];
            };
            let node = match topo.resolve(path.label) {
                Some(n) if topo.keys[n] == path.key => n,
                _ => {
                    counters.bad_paths.fetch_add(1, Ordering::SeqCst);
                    return timeout_answer();
                }
            };
            if counters.unreachable.lock().unwrap().contains(&node) {
                return timeout_answer();
            }
            if node == 0 {
                counters.self_queried.store(true, Ordering::SeqCst);
                return vec![];
            }
            queried.lock().unwrap().push(node);
            let nearby = args
                .get("nearbyPath")
                .and_then(Value::as_str)
                .and_then(|l| u64::from_str_radix(&l.replace('.', ""), 16).ok())
                .unwrap_or(0);
            let mut all: Vec<(u64, usize)> = vec![(1, node)];
            all.extend(topo.links[node].iter().map(|(d, p)| (0x10 | d, *p)));
            all.sort();
            let peers: Vec<Value> = all
                .iter()
                .filter(|(l, _)| *l > nearby)
                .take(8)
                .map(|(l, p)| peer_addr(topo, *p, *l))
                .collect();
            vec![
                ("result", Value::str("peers")),
                ("peers", Value::List(peers)),
                ("ms", Value::Int(1)),
                ("error", Value::str("none")),
            ]
        }
        _ => vec![("error", Value::str("no such function"))],
    }
}

struct Sim {
    topo: Arc<Topology>,
    counters: Arc<Counters>,
    queried: Arc<Mutex<Vec<usize>>>,
    addr: SocketAddr,
    stats: Arc<cjdns_admin::Stats>,
}

fn sim(seed: u64) -> Sim {
    let topo = Arc::new(Topology::generate(300, 120, seed));
    let counters = Arc::new(Counters::default());
    let queried = Arc::new(Mutex::new(Vec::new()));
    let functions = TopoFunctions {
        topo: topo.clone(),
        counters: counters.clone(),
        queried: queried.clone(),
    };
    let server = cjdns_admin::serve(
        Some(PASSWORD),
        Duration::from_secs(20),
        Arc::new(Mutex::new(functions)),
    );
    Sim {
        topo,
        counters,
        queried,
        addr: server.addr,
        stats: server.stats,
    }
}

fn client(s: &Sim, password: Option<&str>) -> UdpAdmin {
    UdpAdmin::connect(
        s.addr,
        password.map(str::to_string),
        Duration::from_millis(500),
    )
    .unwrap()
}

#[test]
fn walk_finds_every_node_and_gateway_and_never_asks_itself() {
    for seed in [7, 1234, 99_991] {
        let s = sim(seed);
        let dist = s.topo.distances();
        let ecc = *dist.iter().max().unwrap();
        assert!(
            ecc <= 15,
            "labels of 4-bit hops fit 15 hops; topology has {ecc}"
        );
        let caps = Caps {
            max_depth: 64,
            max_nodes: 10_000,
        };
        let w = cjdns::walk(&mut client(&s, Some(PASSWORD)), caps).unwrap();
        assert!(!s.counters.self_queried.load(Ordering::SeqCst));
        assert_eq!(s.counters.bad_paths.load(Ordering::SeqCst), 0);
        assert_eq!(w.failures, 0);
        assert_eq!(w.nodes.len(), 300, "seed {seed}");
        let by_key: HashMap<&str, &cjdns::CjdnsNode> =
            w.nodes.iter().map(|n| (n.key.as_str(), n)).collect();
        for (i, key) in s.topo.keys.iter().enumerate() {
            let n = by_key[key.as_str()];
            assert_eq!(n.address, s.topo.addresses[i]);
            assert_eq!(n.depth, dist[i], "BFS depth is the hop count");
            // The label really leads there from us.
            assert_eq!(s.topo.resolve(n.label), Some(i));
        }
        let found: HashSet<_> = cjdns::candidates(&w, &[65533])
            .iter()
            .map(|c| c.address)
            .collect();
        for g in &s.topo.gateways {
            assert!(found.contains(&s.topo.addresses[*g].into()), "gateway {g}");
        }
        assert!(!found.contains(&s.topo.addresses[0].into()), "ourselves");
        let links: usize = s.topo.links.iter().map(Vec::len).sum::<usize>() / 2;
        assert_eq!(w.links.len(), links, "every link seen once");
    }
}

#[test]
fn depth_and_node_caps_are_respected() {
    let s = sim(42);
    let dist = s.topo.distances();
    let caps = Caps {
        max_depth: 2,
        max_nodes: 10_000,
    };
    let w = cjdns::walk(&mut client(&s, Some(PASSWORD)), caps).unwrap();
    let within: HashSet<&str> = (0..300)
        .filter(|i| dist[*i] <= 2)
        .map(|i| s.topo.keys[i].as_str())
        .collect();
    let got: HashSet<&str> = w.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(got, within);
    // Only nodes at depth 1 were asked (depth-2 nodes are listed, not expanded).
    for q in s.queried.lock().unwrap().iter() {
        assert_eq!(dist[*q], 1);
    }

    let before = s.queried.lock().unwrap().len();
    let caps = Caps {
        max_depth: 64,
        max_nodes: 50,
    };
    let w = cjdns::walk(&mut client(&s, Some(PASSWORD)), caps).unwrap();
    assert_eq!(w.nodes.len(), 51, "50 nodes and ourselves");
    let asked: HashSet<usize> = s.queried.lock().unwrap()[before..]
        .iter()
        .copied()
        .collect();
    assert!(asked.len() <= 50, "asked {} nodes", asked.len());
    assert!(!s.counters.self_queried.load(Ordering::SeqCst));
}

#[test]
fn auth_is_required_and_checked() {
    let s = sim(5);
    let caps = Caps {
        max_depth: 3,
        max_nodes: 100,
    };
    // No password: the peer query is refused, only our own peers are known.
    let w = cjdns::walk(&mut client(&s, None), caps).unwrap();
    assert!(s.stats.unauthenticated.load(Ordering::SeqCst) > 0);
    assert_eq!(w.nodes.len(), 1 + s.topo.links[0].len());
    assert!(w.failures > 0);
    // A wrong password fails every call.
    let err = cjdns::walk(&mut client(&s, Some("wrong")), caps).unwrap_err();
    assert!(err.contains("Auth failed"), "{err}");
}

#[test]
fn discover_takes_the_password_from_cjdroute_conf_and_reports_the_map() {
    let s = sim(77);
    let dir = std::env::temp_dir().join(format!("mnigs-cjdns-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("cjdroute.conf");
    std::fs::write(
        &conf,
        format!(
            "{{\n  // generated\n  \"admin\": {{ \"bind\": \"{}\", \"password\": \"{PASSWORD}\" }}\n}}\n",
            s.addr
        ),
    )
    .unwrap();
    let cfg = mnigs::config::DiscoveryConfig {
        section: "cjdns".into(),
        method: "cjdns".into(),
        cjdroute_conf: Some(conf),
        max_depth: 3,
        timeout_ms: 500,
        ..Default::default()
    };
    let found = mnigs::discovery::run_method(&cfg).unwrap();
    let dist = s.topo.distances();
    let within = dist.iter().filter(|d| **d >= 1 && **d <= 3).count();
    assert_eq!(found.candidates.len(), within);
    assert!(
        found
            .candidates
            .iter()
            .all(|c| c.how == "cjdns" && c.hops <= 3)
    );
    let g = found.graph.unwrap();
    assert_eq!(g.nodes.len(), within + 1);
    assert!(!g.links.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_node_is_a_failed_query_not_a_node_without_peers() {
    let s = sim(2024);
    let dist = s.topo.distances();
    // Every node at depth 1 stops answering: the walk knows them (our own peers) but nothing
    // behind them, and counts each as a failure.
    let first: HashSet<usize> = (0..300).filter(|i| dist[*i] == 1).collect();
    *s.counters.unreachable.lock().unwrap() = first.clone();
    let caps = Caps {
        max_depth: 8,
        max_nodes: 10_000,
    };
    let w = cjdns::walk(&mut client(&s, Some(PASSWORD)), caps).unwrap();
    assert_eq!(w.nodes.len(), 1 + first.len());
    assert_eq!(w.failures as usize, first.len());
    assert_eq!(s.counters.bad_paths.load(Ordering::SeqCst), 0);
}
