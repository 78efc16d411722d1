//! `mnigs-demo --cjdns`: the single-host demo on cjdns, as the original mnigs showed it.
//!
//! sub — relay — gw — inet in network namespaces, the three mesh nodes running a real cjdroute
//! (peered over veths, see [`crate::cjdlab`]); the gateway offers cjdns IpTunnel, the subscriber
//! finds it by walking the cjdns mesh and reaches the fake Internet host through the tunnel.
//! The same step-by-step story as [`crate::demo`]; without cjdroute it says what is missing and how
//! to get it.

use crate::cjdlab::{self, INET_HOST};
use crate::netlab::Lab;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn step(started: Instant, what: &str) {
    println!("[{:6.2}s] {what}", started.elapsed().as_secs_f64());
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// Runs the cjdns demo with the mnigs command line at `mnigs` (daemons and client); returns the
/// exit code. Ctrl-C at any point tears everything down.
pub fn run(mnigs: &Path, hold: bool) -> i32 {
    let cjdroute = match cjdlab::cjdroute() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mnigs-demo --cjdns: {e}");
            return 1;
        }
    };
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::signal(sig, handler) };
    }
    match demo(&cjdroute, mnigs, hold) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}

fn status(lab: &Lab, mnigs: &Path, ns: &str, conf: &Path) -> Option<Value> {
    let (m, c) = (mnigs.display().to_string(), conf.display().to_string());
    let out = lab
        .exec_full(
            ns,
            &[&m, "status", "--json", "-c", &c],
            None,
            Duration::from_secs(10),
        )
        .ok()?;
    serde_json::from_str(&out).ok()
}

fn ping(lab: &Lab, ns: &str) -> bool {
    lab.exec(ns, &["ping", "-n", "-c", "1", "-W", "1", INET_HOST])
        .is_ok()
}

fn write(lab: &Lab, name: &str, text: &str) -> Result<std::path::PathBuf, String> {
    let p = lab.dir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn demo(cjdroute: &Path, mnigs: &Path, hold: bool) -> Result<(), String> {
    let m = mnigs.display().to_string();
    let t = Instant::now();
    println!(
        "mnigs-demo --cjdns: sub — relay — gw — inet in network namespaces; cjdns ({}) on the mesh, cjdns IpTunnel to the gateway",
        cjdroute.display()
    );
    let lab = Lab::new("demo")?;
    let mesh = lab.cjdroute_mesh(cjdroute, &["sub", "relay", "gw"], &[(0, 1), (1, 2)])?;
    let (sub, gw) = (&mesh.nodes[0], &mesh.nodes[2]);
    step(
        t,
        &format!(
            "namespaces {}-* built, cjdroute started and peered on sub, relay and gw",
            sub.ns.trim_end_matches("-sub")
        ),
    );
    interrupted()?;
    lab.cjd_uplinks(&[&gw.ns])?;
    let before_state =
        crate::scenario::network_state(|argv| lab.exec(&sub.ns, argv).unwrap_or_default());
    let before = ping(&lab, &sub.ns);
    step(
        t,
        &format!(
            "before mnigs: ping sub → Internet host {INET_HOST} {}",
            if before {
                "WORKS (unexpected)"
            } else {
                "fails, as it should"
            }
        ),
    );
    let gw_conf = write(
        &lab,
        "gw.uci",
        &lab.cjd_gateway_config(gw, "gw", 127, 60, &["cjdns"]),
    )?;
    let gw_log = lab.dir.join("gw.log");
    let gw_pid = lab.spawn(
        &gw.ns,
        &[&m, "daemon", "-c", &gw_conf.display().to_string()],
        &gw_log,
    )?;
    let start = Instant::now();
    while status(&lab, mnigs, &gw.ns, &gw_conf).is_none() {
        interrupted()?;
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("gateway did not start:\n{}", tail(&gw_log)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    step(
        t,
        &format!(
            "gateway daemon up on gw ({}), cjdns IpTunnel offered on {}, NAT out of wan0",
            gw.address, gw.tun
        ),
    );
    let sub_conf = write(
        &lab,
        "sub.uci",
        &lab.cjd_subscriber_config(sub, "sub", &["cjdns"]),
    )?;
    let sub_log = lab.dir.join("sub.log");
    let sub_started = Instant::now();
    let sub_pid = lab.spawn(
        &sub.ns,
        &[&m, "daemon", "-c", &sub_conf.display().to_string()],
        &sub_log,
    )?;
    step(t, "subscriber daemon up on sub: walking the cjdns mesh");
    let status = loop {
        interrupted()?;
        if let Some(s) = status(&lab, mnigs, &sub.ns, &sub_conf)
            && s["subscriber"]["state"] == "connected"
        {
            break s;
        }
        if sub_started.elapsed() > Duration::from_secs(40) {
            return Err(format!(
                "the subscriber did not connect; its log:\n{}",
                tail(&sub_log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let s = &status["subscriber"];
    step(
        t,
        &format!(
            "gateway found and registered: {} at {} via {}, tunnel {} with {}",
            text(&s["gateway"]["name"]),
            text(&s["gateway"]["address"]),
            text(&s["method"]),
            text(&s["interface"]),
            text(&s["ipv4"])
        ),
    );
    let mut reached = false;
    while sub_started.elapsed() < Duration::from_secs(50) && !reached {
        interrupted()?;
        reached = ping(&lab, &sub.ns);
    }
    if !reached {
        return Err(format!(
            "Internet host not reachable through the tunnel; subscriber log:\n{}",
            tail(&sub_log)
        ));
    }
    step(
        t,
        &format!(
            "Internet reachable: ping sub → {INET_HOST} works, {:.2}s after the subscriber started",
            sub_started.elapsed().as_secs_f64()
        ),
    );
    if hold {
        println!(
            "holding; press Ctrl-C to tear down (status: ip netns exec {} {m} status -c {})",
            sub.ns,
            sub_conf.display()
        );
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    lab.exec_full(
        &sub.ns,
        &[&m, "disconnect", "-c", &sub_conf.display().to_string()],
        None,
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    let after = crate::scenario::network_state(|argv| lab.exec(&sub.ns, argv).unwrap_or_default());
    step(
        t,
        &format!(
            "disconnected: ping now {}; sub's addresses and routes {}",
            if ping(&lab, &sub.ns) {
                "still works (unexpected)"
            } else {
                "fails again"
            },
            if after == before_state {
                "are as before mnigs"
            } else {
                "DIFFER from before mnigs (unexpected)"
            }
        ),
    );
    lab.stop(sub_pid, Duration::from_secs(10));
    lab.stop(gw_pid, Duration::from_secs(10));
    drop(mesh);
    step(t, "daemons and cjdroutes stopped; removing namespaces");
    drop(lab);
    step(t, "done");
    Ok(())
}
