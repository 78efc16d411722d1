//! The mesh graph the page draws: nodes and links, built from what this node knows. Today that is
//! itself, the gateways discovery found (one link each, labelled with the hop count the discovery
//! source reported) and, on a gateway, its subscribers. A discovery source that learns the real
//! topology (cjdns, Yggdrasil, Babel neighbours) adds [`GraphNode`]s of kind `node` and the links
//! between them; the page lays out whatever it is given.

use serde::Serialize;

/// What a node is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// This node.
    #[serde(rename = "self")]
    Own,
    /// A gateway discovery found.
    Gateway,
    /// A subscriber with a session on this gateway.
    Subscriber,
    /// Any other mesh node (relays) a discovery source reported.
    Node,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    /// Stable key: `self`, or the node's mesh address.
    pub id: String,
    /// The name it announced (or its address).
    pub name: String,
    /// Mesh address, `None` for ourselves.
    pub address: Option<String>,
    /// What it is.
    pub kind: Kind,
    /// Whether it offers Internet access.
    pub gateway: bool,
}

/// One link of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphLink {
    /// Node id at one end.
    pub from: String,
    /// Node id at the other end.
    pub to: String,
    /// Hops between them as the source saw it (1: direct neighbours; 0: unknown).
    pub hops: u32,
    /// Where the link comes from (`routes`, `manual`, `session`, …).
    pub how: String,
    /// The tunnel we route through runs along it.
    pub current: bool,
}

/// Nodes and links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Graph {
    /// Every node once, ourselves first.
    pub nodes: Vec<GraphNode>,
    /// Links between nodes of `nodes`.
    pub links: Vec<GraphLink>,
}

/// A gateway as the store remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenGateway {
    /// Mesh address.
    pub address: String,
    /// Announced name.
    pub name: String,
    /// Discovery source.
    pub how: String,
    /// Hops the source reported.
    pub hops: u32,
}

/// A subscriber session on this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSubscriber {
    /// The subscriber's mesh address.
    pub address: String,
    /// The name it registered with.
    pub name: String,
}

/// Builds the graph: ourselves, the gateways seen (the one we use, at `current`, marked), and our
/// subscribers. Gateways that answered with the same name are one node reached at several
/// addresses (IPv4 and IPv6 of one router): one node, one link with the fewest hops. Subscribers
/// already drawn (a gateway that is also our subscriber) are not drawn twice.
pub fn build(
    own_name: &str,
    own_gateway: bool,
    gateways: &[SeenGateway],
    current: Option<&str>,
    subscribers: &[SeenSubscriber],
) -> Graph {
    let mut g = Graph::default();
    g.nodes.push(GraphNode {
        id: "self".into(),
        name: own_name.into(),
        address: None,
        kind: Kind::Own,
        gateway: own_gateway,
    });
    for gw in gateways {
        let is_current = current == Some(gw.address.as_str());
        let same = g
            .nodes
            .iter()
            .position(|n| n.kind == Kind::Gateway && (n.id == gw.address || n.name == gw.name));
        if let Some(i) = same {
            let id = g.nodes[i].id.clone();
            if let Some(link) = g.links.iter_mut().find(|l| l.to == id) {
                link.current |= is_current;
                if gw.hops < link.hops {
                    link.hops = gw.hops;
                    link.how = gw.how.clone();
                }
            }
            continue;
        }
        g.nodes.push(GraphNode {
            id: gw.address.clone(),
            name: gw.name.clone(),
            address: Some(gw.address.clone()),
            kind: Kind::Gateway,
            gateway: true,
        });
        g.links.push(GraphLink {
            from: "self".into(),
            to: gw.address.clone(),
            hops: gw.hops,
            how: gw.how.clone(),
            current: is_current,
        });
    }
    for s in subscribers {
        if !g.nodes.iter().any(|n| n.id == s.address) {
            g.nodes.push(GraphNode {
                id: s.address.clone(),
                name: s.name.clone(),
                address: Some(s.address.clone()),
                kind: Kind::Subscriber,
                gateway: false,
            });
        }
        g.links.push(GraphLink {
            from: s.address.clone(),
            to: "self".into(),
            hops: 0,
            how: "session".into(),
            current: false,
        });
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(address: &str, name: &str, hops: u32) -> SeenGateway {
        SeenGateway {
            address: address.into(),
            name: name.into(),
            how: "routes".into(),
            hops,
        }
    }

    #[test]
    fn self_and_gateways_with_the_current_one_marked() {
        let g = build(
            "sub",
            false,
            &[gw("10.77.0.3", "gw", 2), gw("10.77.0.9", "other", 4)],
            Some("10.77.0.3"),
            &[],
        );
        assert_eq!(g.nodes.len(), 3);
        assert_eq!(g.nodes[0].kind, Kind::Own);
        assert_eq!(g.nodes[1].name, "gw");
        assert!(g.nodes[1].gateway);
        assert_eq!(g.links.len(), 2);
        assert!(g.links[0].current && !g.links[1].current);
        assert_eq!(g.links[1].hops, 4);
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["nodes"][0]["kind"], "self");
        assert_eq!(v["nodes"][1]["kind"], "gateway");
    }

    #[test]
    fn one_node_at_two_addresses_is_drawn_once() {
        let g = build(
            "sub",
            false,
            &[gw("fd77::3", "gw", 3), gw("10.77.0.3", "gw", 2)],
            Some("10.77.0.3"),
            &[],
        );
        assert_eq!(g.nodes.len(), 2);
        assert_eq!(g.links.len(), 1);
        assert!(g.links[0].current);
        assert_eq!(g.links[0].hops, 2);
    }

    #[test]
    fn subscribers_link_to_us_and_duplicates_merge() {
        let g = build(
            "gw",
            true,
            &[gw("10.77.0.5", "peer-gw", 1), gw("10.77.0.5", "again", 1)],
            None,
            &[SeenSubscriber {
                address: "10.77.0.5".into(),
                name: "peer-gw".into(),
            }],
        );
        assert_eq!(g.nodes.len(), 2);
        assert!(g.nodes[0].gateway);
        assert_eq!(g.links.len(), 2);
        assert_eq!(g.links[1].how, "session");
        assert_eq!(g.links[1].to, "self");
    }
}
