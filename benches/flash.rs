//! Flash-wear benchmark: `cargo bench --bench flash`.
//!
//! Runs one busy hour of a node that is both a full gateway and a subscriber in accelerated
//! time: every database write the daemon makes in that hour happens for real, through the real
//! `Store` calls, but the clock is simulated (the hour takes well under a second). Busy means:
//! - gateway: `max_subscribers` (10) sessions all the time, each renewed every lease/3 (the
//!   subscribers' schedule; 300 s leases → every 100 s), and 30 subscribers leaving and 30
//!   new ones arriving in the hour;
//! - subscriber: a scan every `scan_interval` (300 s) storing 20 gateways, and its own
//!   connection renewed every 100 s;
//! - plus one failover (connection cleared and saved anew).
//!
//! It prints, for the database kept directly on flash, the commits and bytes written to it per
//! hour (bytes handed to write(2), from /proc/self/io `wchar`: WAL frames and checkpoints), and
//! for the flash copy (`option persist_path`) at several `persist_interval`s, the copies and bytes
//! written per hour including the copy at shutdown.
//!
//! `--short` (for CI: `cargo test --bench flash -- --short`) runs the direct case and one copy
//! interval (900 s) instead of four. Both modes check that the figures are sound and fail
//! (exit status non-zero) when not: the busy hour changed rows and wrote bytes, the copies are
//! at most one per interval plus the one at shutdown, and the flash copy left at shutdown holds
//! exactly the sessions, connection and gateways the database in RAM held.

use mnigs::persist::Persister;
use mnigs::store::{ConnectionRow, GatewayRow, SessionRow, Store};
use serde_json::json;
use std::path::{Path, PathBuf};

const HOUR: i64 = 3600;
const LEASE: i64 = 300;
const RENEW_EVERY: i64 = LEASE / 3;
const SUBSCRIBERS: u32 = 10;
const CHURN_PER_HOUR: i64 = 30;
const SCAN_EVERY: i64 = 300;
const GATEWAYS_SEEN: u32 = 20;

/// Bytes this process has handed to write(2) so far.
fn wchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("wchar")
}

fn session(n: u32, slot: u32, t: i64) -> SessionRow {
    SessionRow {
        sid: format!("{n:032x}"),
        owner: format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256),
        name: format!("sub-{n}"),
        method: "wireguard".into(),
        slot,
        ipv4: format!("100.127.0.{}", slot + 2),
        ipv6: Some(format!("fd7e:7e7e::{:x}", slot + 2)),
        options: json!({"publicKey": "x".repeat(44), "port": 51821}),
        granted_at: t,
        expires_at: t + LEASE,
    }
}

fn gateway(n: u32, t: i64) -> GatewayRow {
    GatewayRow {
        address: format!("fd00::{n:x}"),
        port: 65533,
        name: format!("gw-{n}"),
        info: json!({"success": true, "name": format!("gw-{n}"), "version": "0.1.0", "gateway": true,
                     "methods": ["wireguard"], "terms": {"maxSubscribers": 10, "subscribers": n % 10,
                     "leaseSeconds": 300, "price": 0, "bandwidthDown": 0, "bandwidthUp": 0},
                     "uplink": {"healthy": true}, "gateways": []}),
        how: "routes:babel".into(),
        hops: n % 5 + 1,
        first_seen: t,
        last_seen: t,
        failures: 0,
    }
}

fn connection(t: i64, gw: u32) -> ConnectionRow {
    ConnectionRow {
        gateway_address: format!("fd00::{gw:x}"),
        gateway_port: 65533,
        gateway_name: format!("gw-{gw}"),
        sid: format!("{:032x}", 0xabc + gw),
        method: "wireguard".into(),
        interface: "mnigs-wgc".into(),
        grant: json!({"success": true, "sid": format!("{:032x}", 0xabc + gw), "timeout": LEASE,
                      "method": "wireguard", "ipv4": "100.127.0.2", "cidr4": 24,
                      "ipv4gateway": "100.127.0.1", "publicKey": "y".repeat(44),
                      "endpoint": "[fd00::1]:51820", "mtu": 1420}),
        connected_at: t,
        expires_at: t + LEASE,
    }
}

/// One busy hour against `store`; `each_second(t)` runs after the writes of second `t`.
fn busy_hour(store: &Store, mut each_second: impl FnMut(i64)) -> u64 {
    let before = store.total_changes();
    let t0 = 1_800_000_000;
    store
        .set_kv("wireguard_private_key", &"k".repeat(44))
        .unwrap();
    let mut next_sub = 0;
    let mut live: Vec<SessionRow> = (0..SUBSCRIBERS)
        .map(|slot| {
            next_sub += 1;
            session(next_sub, slot, t0)
        })
        .collect();
    for s in &live {
        store.save_session(s).unwrap();
    }
    store.save_connection(&connection(t0, 1)).unwrap();
    for dt in 1..=HOUR {
        let t = t0 + dt;
        // Subscribers renew, each on its own phase.
        for (i, s) in live.iter_mut().enumerate() {
            if (dt + i as i64 * 7) % RENEW_EVERY == 0 {
                s.expires_at = t + LEASE;
                store.set_session_expiry(&s.sid, s.expires_at).unwrap();
            }
        }
        // Churn: one subscriber leaves and a new one takes its slot.
        if dt % (HOUR / CHURN_PER_HOUR) == 0 {
            let i = (dt / (HOUR / CHURN_PER_HOUR)) as usize % live.len();
            store.delete_session(&live[i].sid).unwrap();
            next_sub += 1;
            live[i] = session(next_sub, live[i].slot, t);
            store.save_session(&live[i]).unwrap();
        }
        // Our own subscriber side.
        if dt % SCAN_EVERY == 0 {
            for g in 0..GATEWAYS_SEEN {
                store.upsert_gateway(&gateway(g, t)).unwrap();
            }
            store
                .forget_gateways_older_than(t - 3 * SCAN_EVERY)
                .unwrap();
        }
        if dt % RENEW_EVERY == 0 {
            store.set_connection_expiry(t + LEASE).unwrap();
        }
        if dt == HOUR / 2 {
            store.clear_connection().unwrap();
            store.save_connection(&connection(t, 2)).unwrap();
        }
        each_second(dt);
    }
    store.total_changes() - before
}

fn fresh_dir(name: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("mnigs-bench-flash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fails unless the copy at `flash` holds what `ram` holds.
fn assert_copy_matches(ram: &Store, flash: &Path) {
    let copy = Store::open(flash).expect("the flash copy opens as a database");
    let sids = |s: &Store| -> Vec<String> {
        let mut v: Vec<String> = s.sessions().unwrap().into_iter().map(|r| r.sid).collect();
        v.sort();
        v
    };
    let gateways = |s: &Store| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = s
            .gateways()
            .unwrap()
            .into_iter()
            .map(|g| (g.address, g.last_seen))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        sids(ram).len(),
        SUBSCRIBERS as usize,
        "live sessions in RAM"
    );
    assert_eq!(sids(&copy), sids(ram), "sessions in the flash copy");
    assert_eq!(gateways(&copy), gateways(ram), "gateways in the flash copy");
    assert_eq!(
        copy.connection().unwrap().map(|c| c.sid),
        ram.connection().unwrap().map(|c| c.sid),
        "connection in the flash copy"
    );
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    println!(
        "flash writes in one busy hour, simulated in accelerated time (gateway with {SUBSCRIBERS} subscribers"
    );
    println!(
        "renewing every {RENEW_EVERY} s and {CHURN_PER_HOUR} arriving/leaving, subscriber scanning {GATEWAYS_SEEN} gateways every {SCAN_EVERY} s)\n"
    );

    // The database directly on flash: every commit writes.
    let d = fresh_dir("direct");
    let store = Store::open(&d.join("mnigs.db")).unwrap();
    let w0 = wchar();
    let started = std::time::Instant::now();
    let changes = busy_hour(&store, |_| {});
    let direct_bytes = wchar() - w0;
    let elapsed = started.elapsed();
    assert!(
        changes > 0 && direct_bytes > 0,
        "the busy hour wrote nothing"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&d);
    println!(
        "{:<44} {:>8} writes/hour  {:>10} bytes/hour",
        "database on flash (every row-changing commit)", changes, direct_bytes
    );

    // The database in RAM, copied to flash.
    let intervals: &[i64] = if short {
        &[900]
    } else {
        &[300, 900, 3600, 21600]
    };
    for &interval in intervals {
        let d = fresh_dir(&format!("copy{interval}"));
        let store = Store::open(&d.join("ram/mnigs.db")).unwrap();
        let mut p = Persister::new(&d.join("flash/state.db"), &store);
        let mut copy_wchar = 0;
        busy_hour(&store, |dt| {
            if dt % interval == 0 {
                let w = wchar();
                p.save(&store).unwrap();
                copy_wchar += wchar() - w;
            }
        });
        // Clean shutdown.
        let w = wchar();
        p.save(&store).unwrap();
        copy_wchar += wchar() - w;
        let label = format!("RAM + copy every {interval} s + at shutdown");
        println!(
            "{:<44} {:>8} writes/hour  {:>10} bytes/hour  ({:.0}x fewer writes, copy {} bytes)",
            label,
            p.writes,
            copy_wchar,
            changes as f64 / p.writes as f64,
            p.bytes / p.writes.max(1)
        );
        assert!(copy_wchar >= p.bytes, "wchar covers the copies");
        let most = (HOUR / interval) as u64 + 1;
        assert!(
            (1..=most).contains(&p.writes),
            "{} copies in the hour, expected 1 to {most}",
            p.writes
        );
        assert_copy_matches(&store, &d.join("flash/state.db"));
        drop(store);
        let _ = std::fs::remove_dir_all(&d);
    }
    println!("\n(the simulated hour ran in {elapsed:.2?})");
}
