//! Helpers for end-to-end tests: a gate for tests that need programs beyond the common ones,
//! an edit of a node's config, a watch on a daemon's log, and a port made silent.
//!
//! Included with `#[path = "common/e2e.rs"] mod e2e_common;` by the tests that need it.

#![allow(dead_code)]

use mnigs::sys::cmd;
use mnigs_lab::testbed::e2e_gate;
use std::path::Path;
use std::time::{Duration, Instant};

/// Makes TCP `ports` (`443`, `10800-11052`) on gw silently drop what comes from anywhere but
/// `lo`: a method whose port is blocked on the way (for the fallback tests).
pub fn drop_tcp_to_gw(s: &mnigs_lab::scenario::Scenario, ports: &str) {
    let script = format!(
        "add table inet mnigs_t15\n\
         add chain inet mnigs_t15 in {{ type filter hook input priority 0 ; }}\n\
         add rule inet mnigs_t15 in iifname != \"lo\" tcp dport {ports} drop\n"
    );
    s.load_nft(mnigs_lab::testbed::Node::Gw, &script)
        .expect("firewall");
}

/// Whether `test` should run: [`e2e_gate`], then every one of `programs` (a name looked up on
/// PATH, or an absolute path that must exist). A missing program skips the test loudly, or fails
/// it under MNIGS_E2E=1.
pub fn gate_with(test: &str, programs: &[&str]) -> bool {
    if !e2e_gate(test) {
        return false;
    }
    for p in programs {
        let present = if p.starts_with('/') {
            Path::new(p).exists()
        } else {
            cmd::available(p)
        };
        if !present {
            assert!(
                std::env::var("MNIGS_E2E").as_deref() != Ok("1"),
                "{test}: `{p}` is not installed (MNIGS_E2E=1 forbids skipping)"
            );
            eprintln!("SKIPPED {test}: `{p}` is not installed");
            return false;
        }
    }
    true
}

/// Adds `lines` (each `\toption …\n`) at the top of the section that starts with `header` (its
/// whole line, e.g. `"config mnigs 'main'\n"`) in the config file `conf`.
pub fn add_to_section(conf: &Path, header: &str, lines: &str) {
    let text = std::fs::read_to_string(conf).expect("config");
    std::fs::write(conf, text.replace(header, &format!("{header}{lines}"))).expect("config");
}

/// Reads the log at `log` every 25 ms, for at most `limit`, until it holds the last of `marks`;
/// returns when each of `marks` was first seen in it (`None`: not seen), in their order.
pub fn watch_log<const N: usize>(
    log: &Path,
    marks: [&str; N],
    limit: Duration,
) -> [Option<Instant>; N] {
    let mut seen = [None; N];
    let start = Instant::now();
    while seen.last().is_some_and(Option::is_none) && start.elapsed() < limit {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for (at, mark) in seen.iter_mut().zip(marks) {
            if at.is_none() && text.contains(mark) {
                *at = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    seen
}
