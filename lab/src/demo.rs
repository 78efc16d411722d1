//! The single-host demo (`mnigs-demo`): a gateway and a subscriber on the [`Testbed`] mesh
//! (sub — relay — gw — inet); each step is printed as it happens.

use crate::scenario::Scenario;
use crate::testbed::{Node, Testbed};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn step(started: Instant, what: &str) {
    println!("[{:6.2}s] {what}", started.elapsed().as_secs_f64());
}

/// Runs the demo with the mnigs command line at `exe` (daemons and client); returns the exit
/// code. Ctrl-C at any point tears everything down.
pub fn run(exe: &Path, hold: bool) -> i32 {
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::signal(sig, handler) };
    }
    match demo(exe, hold) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}

fn demo(exe: &Path, hold: bool) -> Result<(), String> {
    let t = Instant::now();
    let interrupted = || {
        if INTERRUPTED.load(Ordering::Relaxed) {
            Err("interrupted".to_string())
        } else {
            Ok(())
        }
    };
    println!(
        "mnigs-demo: sub — relay — gw — inet in network namespaces; Babel on the mesh, WireGuard to the gateway"
    );
    let mut s = Scenario::new(exe, 60)?;
    step(
        t,
        &format!(
            "namespaces {}-* built, babeld started on sub, relay and gw",
            s.bed.ns(Node::Sub).trim_end_matches("-sub")
        ),
    );
    let converged = s.bed.wait_converged(Duration::from_secs(20))?;
    step(
        t,
        &format!("Babel routes converged in {:.2}s", converged.as_secs_f64()),
    );
    interrupted()?;
    s.watch_inet()?;
    let before = s.ping_inet("1");
    step(
        t,
        &format!(
            "before mnigs: ping sub → Internet host {} {}",
            Testbed::INET_HOST,
            if before {
                "WORKS (unexpected)"
            } else {
                "fails, as it should"
            }
        ),
    );
    s.start(Node::Gw)?;
    step(
        t,
        &format!(
            "gateway daemon up on gw ({}), WireGuard {} listening, NAT out of {}",
            Testbed::mesh_v6(Node::Gw),
            s.gw_wg,
            s.bed.wan_ifname()
        ),
    );
    interrupted()?;
    let sub_started = Instant::now();
    s.start(Node::Sub)?;
    step(t, "subscriber daemon up on sub: scanning Babel routes");
    let status = s.wait_connected(Duration::from_secs(30), &INTERRUPTED)?;
    let sub = &status["subscriber"];
    step(
        t,
        &format!(
            "gateway found and registered: {} at {} via {}, tunnel {} with {}",
            text(&sub["gateway"]["name"]),
            text(&sub["gateway"]["address"]),
            text(&sub["method"]),
            text(&sub["interface"]),
            text(&sub["ipv4"])
        ),
    );
    let mut reached = false;
    while sub_started.elapsed() < Duration::from_secs(10) && !reached {
        interrupted()?;
        reached = s.ping_inet("1");
    }
    if !reached {
        return Err(format!(
            "Internet host not reachable through the tunnel; subscriber log:\n{}",
            s.tail(Node::Sub)
        ));
    }
    let (from_gw, all) = s.inet_counts()?;
    step(
        t,
        &format!(
            "Internet reachable: ping sub → {} works, {:.2}s after the subscriber started; inet saw {from_gw} of {all} echo request(s) from the gateway's uplink address {}",
            Testbed::INET_HOST,
            sub_started.elapsed().as_secs_f64(),
            Testbed::GW_UPLINK
        ),
    );
    if hold {
        println!(
            "holding; press Ctrl-C to tear down (status: ip netns exec {} {} status -c {})",
            s.bed.ns(Node::Sub),
            exe.display(),
            s.config(Node::Sub).display()
        );
        println!(
            "built-in page: http://127.0.0.1:65533/ inside namespace {} (a browser started with `ip netns exec` shows it)",
            s.bed.ns(Node::Sub)
        );
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    s.cli(Node::Sub, &["disconnect"])?;
    step(
        t,
        &format!(
            "disconnected: ping now {}",
            if s.ping_inet("1") {
                "still works (unexpected)"
            } else {
                "fails again"
            }
        ),
    );
    s.stop(Node::Sub, libc::SIGTERM);
    s.stop(Node::Gw, libc::SIGTERM);
    step(t, "daemons stopped; removing namespaces");
    drop(s);
    step(t, "done");
    Ok(())
}
