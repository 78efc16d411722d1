//! One node, however many addresses it answers at (pure).
//!
//! A gateway reachable over IPv4 and IPv6, or over two mesh protocols, answers `nodeInfo` at
//! each address. Counted per address it would be two gateways: ranked twice, and failover could
//! "move" to the same dead node. So answers are joined into one node when **each lists the
//! address the other answered at** among its own `addresses`, under the same name. An answer only
//! speaks for the address it came from: a mesh node elsewhere that claims a gateway's addresses
//! (or its name) joins nothing, because the gateway's own answers do not list it. A node is known
//! by the smallest of its joined addresses ([`node_ids`]).

use super::Answer;
use std::net::IpAddr;

/// One answer as far as joining goes: the address it came from, the name it gave, the
/// addresses it lists as its own.
pub type Entry<'a> = (IpAddr, &'a str, &'a [IpAddr]);

/// For each entry, the node it belongs to: the smallest address among those joined with it
/// (its own when nothing joins it). Joined: two entries at the same address, or two whose lists
/// each hold the other's address, with the same name; and so on transitively.
pub fn node_ids(entries: &[Entry<'_>]) -> Vec<IpAddr> {
    let n = entries.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            let ((pi, ni, li), (pj, nj, lj)) = (entries[i], entries[j]);
            let joined = pi == pj || (ni == nj && li.contains(&pj) && lj.contains(&pi));
            if joined {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut smallest: Vec<Option<IpAddr>> = vec![None; n];
    for (i, e) in entries.iter().enumerate() {
        let r = root(&mut parent, i);
        smallest[r] = Some(smallest[r].map_or(e.0, |s| s.min(e.0)));
    }
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            smallest[r].unwrap_or(entries[i].0)
        })
        .collect()
}

/// Sets each answer's [`Answer::node`] ([`node_ids`] over the answers).
pub fn assign(answers: &mut [Answer]) {
    let ids = node_ids(
        &answers
            .iter()
            .map(|a| {
                (
                    a.candidate.address,
                    a.info.name.as_str(),
                    a.info.addresses.as_slice(),
                )
            })
            .collect::<Vec<_>>(),
    );
    for (a, id) in answers.iter_mut().zip(ids) {
        a.node = Some(id);
    }
}

/// `items` grouped by node ([`node_ids`] over what `entry` reads of each; an item whose
/// address cannot be read is a node of its own), in the order each node first appears, the items
/// of a node in their order.
pub fn group<T>(
    items: Vec<T>,
    entry: impl Fn(&T) -> Option<(IpAddr, String, Vec<IpAddr>)>,
) -> Vec<Vec<T>> {
    let read: Vec<Option<(IpAddr, String, Vec<IpAddr>)>> = items.iter().map(&entry).collect();
    let known: Vec<usize> = (0..items.len()).filter(|&i| read[i].is_some()).collect();
    let entries: Vec<Entry<'_>> = known
        .iter()
        .filter_map(|&i| read[i].as_ref())
        .map(|(at, name, list)| (*at, name.as_str(), list.as_slice()))
        .collect();
    let ids = node_ids(&entries);
    let mut node_of: Vec<Option<IpAddr>> = vec![None; items.len()];
    for (k, &i) in known.iter().enumerate() {
        node_of[i] = Some(ids[k]);
    }
    let mut groups: Vec<(Option<IpAddr>, Vec<T>)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match node_of[i].and_then(|id| groups.iter().position(|(g, _)| *g == Some(id))) {
            Some(k) => groups[k].1.push(item),
            None => groups.push((node_of[i], vec![item])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ids(entries: &[(&str, &str, &[&str])]) -> Vec<String> {
        let lists: Vec<Vec<IpAddr>> = entries
            .iter()
            .map(|(_, _, l)| l.iter().map(|a| ip(a)).collect())
            .collect();
        let e: Vec<Entry<'_>> = entries
            .iter()
            .zip(&lists)
            .map(|((at, name, _), l)| (ip(at), *name, l.as_slice()))
            .collect();
        node_ids(&e).iter().map(IpAddr::to_string).collect()
    }

    #[test]
    fn a_node_answering_at_two_addresses_is_one_node() {
        let both: &[&str] = &["10.77.0.3", "fd77::3"];
        let got = ids(&[
            ("fd77::3", "gw", both),
            ("10.77.0.9", "other", &["10.77.0.9"]),
            ("10.77.0.3", "gw", both),
        ]);
        assert_eq!(got, ["10.77.0.3", "10.77.0.9", "10.77.0.3"]);
        // Transitively: three addresses, each pair listed.
        let three: &[&str] = &["10.0.0.1", "fd00::1", "fc00::1"];
        let got = ids(&[
            ("fc00::1", "gw", three),
            ("fd00::1", "gw", three),
            ("10.0.0.1", "gw", three),
        ]);
        assert_eq!(got, ["10.0.0.1"; 3]);
    }

    #[test]
    fn nobody_joins_a_node_it_does_not_list_back() {
        let real: &[&str] = &["10.77.0.3", "fd77::3"];
        // A mesh node claims the gateway's name and addresses: the gateway does not list it.
        let got = ids(&[
            ("10.77.0.3", "gw", real),
            ("fd77::3", "gw", real),
            ("10.77.0.66", "gw", &["10.77.0.3", "fd77::3", "10.77.0.66"]),
        ]);
        assert_eq!(got, ["10.77.0.3", "10.77.0.3", "10.77.0.66"]);
        // Listing each other is not enough under two names (a renamed node answers alike at
        // every address), and a list that does not hold the other's address joins nothing.
        let got = ids(&[
            ("10.77.0.3", "gw", real),
            ("fd77::3", "gw-renamed", real),
            ("10.77.0.4", "gw", &[]),
        ]);
        assert_eq!(got, ["10.77.0.3", "fd77::3", "10.77.0.4"]);
        // One direction only (the other address answered without a list): not joined.
        let got = ids(&[("10.77.0.3", "gw", real), ("fd77::3", "gw", &[])]);
        assert_eq!(got, ["10.77.0.3", "fd77::3"]);
    }

    #[test]
    fn answers_at_one_address_are_one_node() {
        let got = ids(&[("10.77.0.5", "a", &[]), ("10.77.0.5", "b", &[])]);
        assert_eq!(got, ["10.77.0.5", "10.77.0.5"]);
        assert!(ids(&[]).is_empty());
    }

    #[test]
    fn items_are_grouped_by_node_in_order_of_appearance() {
        let both = vec![ip("10.77.0.3"), ip("fd77::3")];
        let rows = vec![
            ("fd77::3", "gw", both.clone()),
            ("10.77.0.9", "other", vec![]),
            ("not an address", "x", vec![]),
            ("10.77.0.3", "gw", both),
        ];
        let g = group(rows, |(at, name, list)| {
            Some((at.parse().ok()?, name.to_string(), list.clone()))
        });
        let at: Vec<Vec<&str>> = g.iter().map(|n| n.iter().map(|r| r.0).collect()).collect();
        assert_eq!(
            at,
            [
                vec!["fd77::3", "10.77.0.3"],
                vec!["10.77.0.9"],
                vec!["not an address"]
            ]
        );
    }
}
