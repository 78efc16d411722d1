//! A subscriber's scan against a real gateway RPC server with the shipped limits (20 requests/s,
//! burst 40, 8 connections per source; loopback is not exempt here, as a mesh peer is not),
//! on loopback without root. A gateway that answers "busy" (429/503) is neither dropped from
//! the list nor treated as a silent node: it keeps its last known answer and is asked again after
//! its `Retry-After`.

use mnigs::client::{self, ClientError};
use mnigs::config::Config;
use mnigs::discovery::{Candidate, Limits as ScanLimits, Scanner};
use mnigs::rpc::limits::Limits;
use mnigs::rpc::server::Server;
#[path = "common/gateway.rs"]
mod gateway_common;
use gateway_common::counting_node;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// One gateway daemon's RPC server answering on `addresses` (one port for all).
fn gateway(addresses: &[Ipv4Addr]) -> (Server, u16) {
    let node = counting_node(Config::default());
    let limits = Limits {
        rate_exempt: Vec::new(),
        ..Limits::default()
    };
    let listen: Vec<IpAddr> = addresses.iter().map(|a| IpAddr::V4(*a)).collect();
    let server = Server::start_with(&listen, 0, node, limits).unwrap();
    let port = server.port();
    (server, port)
}

fn candidate(address: Ipv4Addr, port: u16) -> Candidate {
    Candidate {
        address: IpAddr::V4(address),
        port,
        how: "routes:babel".into(),
        hops: 1,
    }
}

const SCAN: ScanLimits = ScanLimits {
    concurrency: 64,
    timeout: Duration::from_millis(1500),
};

#[test]
fn a_gateway_kept_busy_by_others_stays_listed_and_is_asked_again_after_retry_after() {
    let address = Ipv4Addr::new(127, 0, 3, 1);
    let (_server, port) = gateway(&[address]);
    let at = SocketAddr::from((address, port));
    let scanner = Scanner::new(Duration::from_secs(600));
    let scan = || scanner.scan_candidates(vec![candidate(address, port)], SCAN, false);
    let listed = |r: &mnigs::discovery::ScanReport| {
        r.gateways()
            .iter()
            .any(|a| a.candidate.socket() == at && a.info.gateway)
    };
    let r = scan();
    assert!(listed(&r), "found while not busy: {:?}", r.to_json());

    // Another program on this node holds every connection the gateway serves at once from our
    // address (8), sending nothing: until they are closed (or its 10 s read timeout), each new
    // connection is answered 503 with `Retry-After: 1`. (Flooding its request rate instead left
    // a race: the scan's retry could find a freshly refilled token, and did once on CI. The rate
    // limit's "busy" is the second test's.)
    let held: Vec<std::net::TcpStream> = (0..Limits::default().max_per_source)
        .map(|_| std::net::TcpStream::connect(at).unwrap())
        .collect();
    let t = Instant::now();
    loop {
        match client::call(
            at,
            "nodeInfo",
            serde_json::json!({}),
            Duration::from_secs(2),
        ) {
            Err(ClientError::Busy(..)) => break,
            // The gateway has not yet taken all of them in: this call used a free place.
            other => assert!(
                t.elapsed() < Duration::from_secs(5),
                "the gateway never said busy: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Busy on the first ask and again after its Retry-After (1 s) within the scan, then inside
    // its Retry-After: listed all along with its last known answer, never skipped as silent.
    for round in 0..4 {
        let r = scan();
        assert!(
            listed(&r),
            "round {round}: dropped while busy: {:?}",
            r.to_json()
        );
        assert_eq!(
            (r.skipped, r.busy),
            (0, 1),
            "round {round}: {:?}",
            r.to_json()
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the held connections may have timed out during the busy rounds"
    );
    drop(held);

    // Quiet again: once its Retry-After has passed it is asked, and answers for itself.
    std::thread::sleep(Duration::from_millis(1100));
    let r = scan();
    assert!(listed(&r), "{:?}", r.to_json());
    assert_eq!((r.skipped, r.busy), (0, 0), "{:?}", r.to_json());
}

#[test]
fn many_gateway_addresses_behind_one_rate_limited_daemon_are_never_taken_for_silent_nodes() {
    // 100 addresses answered by one daemon (as in the old discovery bench): one scan asks far
    // more of it than its limits allow.
    let addresses: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(127, 0, 4, i)).collect();
    let (_server, port) = gateway(&addresses);
    let all: Vec<Candidate> = addresses.iter().map(|a| candidate(*a, port)).collect();
    let scanner = Scanner::new(Duration::from_secs(600));
    let mut ever: HashSet<SocketAddr> = HashSet::new();
    let mut busy_seen = false;
    for round in 0..4 {
        let r = scanner.scan_candidates(all.clone(), SCAN, false);
        let now: HashSet<SocketAddr> = r.gateways().iter().map(|a| a.candidate.socket()).collect();
        // Every address is a listed gateway or busy; none silent, none skipped.
        let unlisted_busy = 100 - now.len();
        assert_eq!(r.skipped, 0, "round {round}: {:?}", r.to_json()["skipped"]);
        assert!(
            r.busy >= unlisted_busy,
            "round {round}: {} listed, {} busy: the rest were taken for silent",
            now.len(),
            r.busy
        );
        // A gateway listed once stays listed.
        let lost: Vec<&SocketAddr> = ever.difference(&now).collect();
        assert!(lost.is_empty(), "round {round}: dropped {lost:?}");
        busy_seen |= r.busy > 0;
        ever = now;
    }
    assert!(
        busy_seen,
        "the daemon's limits never bit: the test proves nothing"
    );
    assert!(!ever.is_empty());
}
