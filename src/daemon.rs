//! The daemon: loads the config, opens the store, starts the roles and the RPC server, and waits
//! for signals (SIGTERM/SIGINT: tear down what we set up; SIGHUP: reload the config, applying
//! what can change live and keeping live tunnels — see [`crate::config::reload`]).
//!
//! Wiring only: the tunnel methods come from [`crate::tunnel::build`], the RPC methods and who
//! may call them are [`crate::rpc::dispatch`]'s; here are the threads, the interfaces the
//! server and the firewall use, and the order of start and teardown.

use crate::chan;
use crate::clock::now;
use crate::config::{self, Config};
use crate::gateway::service::Gateway;
use crate::json::object;
use crate::log;
use crate::persist::{self, Persister};
use crate::rpc::dispatch::Services;
use crate::rpc::server::Server;
use crate::subscriber::supervisor::{Command, Supervisor};
use crate::tunnel::{self, Role};
use nix::sys::signal::{SigSet, Signal};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Re-reads the config file and applies it (SIGHUP). A file with errors changes nothing.
fn reload(node: &Services, path: &Path) {
    let new = match load_config(path) {
        Ok(new) => new,
        Err(e) => {
            crate::error!("reload refused, keeping the running configuration: {e}");
            return;
        }
    };
    let plan = config::reload::plan(&node.cfg(), new);
    let cfg = plan.effective;
    if let Some(level) = log::Level::parse(&cfg.main.log_level) {
        log::set_level(level);
    }
    if let Some(g) = &node.gateway {
        g.reconfigure(&cfg.gateway);
    }
    if let Some(s) = &node.subscriber {
        let copy = Box::new(cfg.clone());
        s.ask(|reply| Command::Reload(copy, reply));
    }
    *node.cfg.write().expect("not poisoned") = cfg;
    let applied = if plan.applied.is_empty() {
        "no live option changed".to_string()
    } else {
        format!("applied {}", plan.applied.join(", "))
    };
    crate::info!("configuration reloaded: {applied}");
    if !plan.need_restart.is_empty() {
        crate::warn!(
            "changed in the file but kept until the daemon restarts: {}",
            plan.need_restart.join(", ")
        );
    }
}

/// The SoftEther server's ports nobody but mnigs uses, when the gateway offers softether: its
/// admin port and the listeners a new server opens besides 443 (992, 1194, 5555), except the
/// port subscribers connect to. (Every listener also takes admin logins, password protected.)
fn softether_local_ports(cfg: &Config) -> Vec<u16> {
    if !cfg.gateway.methods.iter().any(|m| m == "softether") {
        return vec![];
    }
    let admin = cfg
        .softether
        .admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let mut v: Vec<u16> = [992, 1194, 5555]
        .into_iter()
        .chain(admin)
        .filter(|p| *p != cfg.softether.port)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The interfaces the RPC server answers on, loopback included; empty for every interface.
/// `list listen_interface` if set (`*`: every interface); else the mesh: `list mesh_interface`,
/// else the discovery sections' interfaces (plus cjdroute's tun when cjdns is used). The WAN
/// is never among the derived ones. With no interface known (a discovery section without
/// `list interface` takes routes via any interface), every interface, with a warning.
pub fn rpc_interfaces(cfg: &Config) -> Vec<String> {
    let m = &cfg.main;
    let mut v = if m.listen_interfaces.iter().any(|i| i == "*") {
        return Vec::new();
    } else if !m.listen_interfaces.is_empty() {
        m.listen_interfaces.clone()
    } else if cfg.gateway.mesh_interfaces.is_empty()
        && (cfg.discovery.is_empty() || cfg.discovery.iter().any(|d| d.interfaces.is_empty()))
    {
        log::warn(
            "rpc: the mesh interfaces are not known (no list mesh_interface, and a discovery \
             section without list interface): the RPC server answers on every interface; set \
             list listen_interface",
        );
        return Vec::new();
    } else {
        let mut v = cfg.mesh_interfaces();
        let cjdns = cfg.gateway.methods.iter().any(|m| m == "cjdns")
            || cfg.subscriber.methods.iter().any(|m| m == "cjdns")
            || cfg.discovery.iter().any(|d| d.method == "cjdns");
        if cjdns {
            v.push(cfg.cjdns.interface.clone());
        }
        // A subscriber may call the gateway on its tunnel address too (per-subscriber iptunnel
        // interfaces come and go, and are not served).
        if cfg.gateway.enabled {
            for m in &cfg.gateway.methods {
                match m.as_str() {
                    "wireguard" => v.push(cfg.wireguard.interface.clone()),
                    "openvpn" => v.push(cfg.openvpn.interface.clone()),
                    _ => {}
                }
            }
        }
        v
    };
    v.push("lo".into());
    v.sort();
    v.dedup();
    v
}

/// What the gateway's firewall is built from.
fn firewall_policy(cfg: &Config) -> crate::sys::firewall::Policy {
    let g = &cfg.gateway;
    let pools = crate::gateway::service::Pools::new(g.ipv4_pool, g.ipv6_pool);
    let net = pools.gateway();
    let mut mesh = cfg.mesh_interfaces();
    // cjdroute's interface carries the cjdns mesh as well as subscribers: a mesh interface, on
    // which a subscriber's packets are still told apart by its session's address.
    if g.methods.iter().any(|m| m == "cjdns") && !mesh.contains(&cfg.cjdns.interface) {
        mesh.push(cfg.cjdns.interface.clone());
    }
    if mesh.is_empty() {
        log::warn(
            "gateway: no mesh interface known (list mesh_interface, or a discovery section's \
             list interface): mesh nodes without a lease are not kept off the WAN and LAN",
        );
    }
    crate::sys::firewall::Policy {
        wan: g.wan_interface.clone(),
        mesh,
        pool4: g.ipv4_pool.to_string(),
        pool6: g.ipv6_pool.map(|p| p.to_string()),
        gateway4: net.ipv4,
        gateway6: net.ipv6.map(|(a, _)| a),
        rpc_port: cfg.main.rpc_port,
        allow: g.allow_destinations.iter().map(|p| p.to_string()).collect(),
        local_only_tcp: softether_local_ports(cfg),
        shape_down: false,
        shape_up: false,
    }
}

/// Loads and checks a config file, printing every problem to stderr.
pub fn load_config(path: &Path) -> Result<Config, String> {
    match config::model::load(path) {
        Ok((cfg, warnings)) => {
            for w in warnings {
                log::warn(&w.to_string());
            }
            Ok(cfg)
        }
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Err(format!("invalid configuration:\n{}", lines.join("\n")))
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena, each keeping ~130 KB resident;
/// a router daemon with a handful of mostly idle threads is better off with the one main heap
/// (musl has no arenas and no such knob).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes a panic in any thread end the whole process, as `panic = "abort"` does.
///
/// Our release profile aborts on panic, but the OpenWrt feed builds with `panic = "unwind"`;
/// there a panicking thread would die alone and leave a daemon without, say, its supervisor
/// while its tunnel and routes stay up. Aborting lets procd respawn a whole, fresh daemon.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<(), String> {
    let cfg = load_config(path)?;
    abort_on_panic();
    limit_malloc_arenas();
    if let Some(level) = log::Level::parse(&cfg.main.log_level) {
        log::set_level(level);
    }
    // Block the signals before any thread starts so that only `wait` below receives them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {}", std::io::Error::from(e)))?;

    let persist_path = cfg.main.persist_path.clone();
    let (store, restored) =
        persist::open(&cfg.main.database, persist_path.as_deref()).map_err(|e| e.to_string())?;
    match (&restored, &persist_path) {
        (Ok(true), Some(p)) => crate::info!("state restored from {}", p.display()),
        (Err(e), _) => log::warn(e),
        _ => {}
    }
    let persister = persist_path.map(|p| Persister::new(&p, &store));
    let store = Arc::new(Mutex::new(store));
    let persist_store = store.clone();
    let gateway = if cfg.gateway.enabled {
        let m = tunnel::build(&cfg, &cfg.gateway.methods, Role::Gateway, &store)?;
        let g = &cfg.gateway;
        let capacity = g
            .max_subscribers
            .min(crate::gateway::service::Pools::new(g.ipv4_pool, g.ipv6_pool).slots());
        let shaper = crate::sys::shaper::Shaper::new(
            g.bandwidth_down,
            g.bandwidth_up,
            capacity,
            &g.wan_interface,
        );
        let nat = crate::sys::firewall::Firewall::choose(&g.nat, firewall_policy(&cfg), shaper);
        let g = Gateway::new(cfg.gateway.clone(), m, store.clone(), Some(nat));
        if let Err(e) = g.start() {
            g.shutdown();
            return Err(e);
        }
        Some(g)
    } else {
        None
    };
    let subscriber = if cfg.subscriber.enabled {
        let m = tunnel::build(&cfg, &cfg.subscriber.methods, Role::Subscriber, &store)?;
        let standby = if cfg.subscriber.hot_standby {
            Some(tunnel::build(
                &cfg,
                &cfg.subscriber.methods,
                Role::Standby,
                &store,
            )?)
        } else {
            None
        };
        Some(Supervisor::spawn_with_standby(
            cfg.clone(),
            store.clone(),
            m,
            standby,
        ))
    } else {
        None
    };
    let node = Arc::new(Services::new(cfg.clone(), store, gateway, subscriber));
    let devices = rpc_interfaces(&cfg);
    let server = match Server::start_on(
        &cfg.main.listen,
        &devices,
        cfg.main.rpc_port,
        node.clone(),
        crate::rpc::limits::Limits::from_config(&cfg.main),
    ) {
        Ok(s) => s,
        Err(e) => {
            shutdown(node);
            return Err(e);
        }
    };
    crate::info!(
        "{} listening on port {} ({})",
        cfg.main.name,
        server.port(),
        if devices.is_empty() {
            "every interface".to_string()
        } else {
            format!("interfaces {}", devices.join(", "))
        }
    );

    let (uplink_stop, uplink_rx) = chan::channel::<()>();
    let checks_uplink = node.gateway.is_some() && cfg.gateway.uplink_check;
    if let (Some(g), false) = (&node.gateway, cfg.gateway.uplink_check) {
        g.set_uplink_report(crate::gateway::uplink::Report {
            healthy: true,
            targets: Vec::new(),
            state: crate::gateway::uplink::CheckState::Off,
        });
    }
    let uplink = checks_uplink.then(|| {
        let n = node.clone();
        crate::gateway::uplink::spawn(
            crate::gateway::uplink::Tracker::new(&cfg.gateway.uplink_targets),
            cfg.gateway.wan_interface.clone(),
            Duration::from_secs(u64::from(cfg.gateway.uplink_interval)),
            move |report| {
                if let Some(g) = &n.gateway {
                    g.set_uplink_report(report);
                }
            },
            uplink_rx,
        )
    });
    let (stop_tx, stop_rx) = chan::channel::<()>();
    let expiry = node.gateway.is_some().then(|| {
        let node = node.clone();
        crate::threads::spawn(move || {
            loop {
                let next = node.gateway.as_ref().and_then(Gateway::expire);
                let wait = next.map_or(1, |t| (t - now()).clamp(0, 1)) as u64;
                match stop_rx
                    .recv_timeout(Duration::from_secs(wait).max(Duration::from_millis(200)))
                {
                    Err(chan::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })
    });

    let (persist_stop, persist_rx) = chan::channel::<()>();
    let persist_thread = persister.map(|p| {
        let node = node.clone();
        std::thread::spawn(move || persist_loop(p, &node, &persist_rx))
    });

    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => reload(&node, path),
            Ok(s) => {
                crate::info!("{s}: stopping");
                break;
            }
            Err(e) => return Err(format!("waiting for signals: {}", std::io::Error::from(e))),
        }
    }
    server.stop();
    drop(uplink_stop);
    if let Some(t) = uplink {
        let _ = t.join();
    }
    drop(stop_tx);
    if let Some(t) = expiry {
        let _ = t.join();
    }
    drop(persist_stop);
    let persister = persist_thread.and_then(|t| t.join().ok());
    shutdown(node);
    if let Some(mut p) = persister {
        // After the roles' teardown, so the copy holds what must survive: keys and gateways.
        if let Err(e) = p.save(&persist_store.lock().expect("not poisoned")) {
            crate::error!("cannot copy the state to {}: {e}", p.path().display());
        }
        crate::info!(
            "state copied to {} {} time(s) this run, {} bytes",
            p.path().display(),
            p.writes,
            p.bytes
        );
    }
    Ok(())
}

/// Copies the store to flash every `persist_interval` seconds (read anew each time, so a reload
/// applies) if it changed; returns the persister when `stop` is dropped.
fn persist_loop(mut p: Persister, node: &Services, stop: &chan::Receiver<()>) -> Persister {
    let mut last = std::time::Instant::now();
    let publish = |p: &Persister| {
        *node.persisted.lock().expect("not poisoned") = Some(object!({
              "path": p.path().display().to_string(), "writes": p.writes, "bytes": p.bytes}));
    };
    publish(&p);
    loop {
        let interval = Duration::from_secs(u64::from(node.cfg().main.persist_interval));
        let left = interval.saturating_sub(last.elapsed());
        if left.is_zero() {
            last = std::time::Instant::now();
            let store = node.store.lock().expect("not poisoned");
            match p.save(&store) {
                Ok(true) => {
                    publish(&p);
                    crate::debug!(
                        "state copied to {} ({} copies, {} bytes this run)",
                        p.path().display(),
                        p.writes,
                        p.bytes
                    );
                }
                Ok(false) => {}
                Err(e) => crate::error!("cannot copy the state: {e}"),
            }
            continue;
        }
        // Wake at least every minute so that a shorter interval from a reload takes effect.
        match stop.recv_timeout(left.min(Duration::from_secs(60))) {
            Err(chan::RecvTimeoutError::Timeout) => {}
            _ => return p,
        }
    }
}

fn shutdown(node: Arc<Services>) {
    let Ok(node) = Arc::try_unwrap(node) else {
        log::error("internal: node still shared at shutdown");
        return;
    };
    let hook_timeout = node.cfg().subscriber.hook_timeout;
    if let Some(s) = node.subscriber {
        s.shutdown();
    }
    crate::hooks::wait_idle(Duration::from_secs(u64::from(hook_timeout) + 1));
    if let Some(g) = node.gateway {
        g.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rpc_server_answers_on_the_mesh_and_loopback_never_the_wan() {
        let cfg = |text: &str| config::model::from_text(text, Path::new("t")).unwrap().0;
        let d = "config discovery d\n\toption method routes\n\tlist interface mesh0\n\
                 \tlist interface wan\n";
        // Subscriber only: the discovery interfaces, never the gateway's WAN.
        let gw = "config gateway gateway\n\toption wan_interface wan\n";
        assert_eq!(rpc_interfaces(&cfg(&format!("{d}{gw}"))), ["lo", "mesh0"]);
        // A gateway adds its tunnel interfaces; mesh_interface wins over discovery.
        let gw_on = "config gateway gateway\n\toption enabled 1\n\toption wan_interface wan\n\
                     \tlist method wireguard\n\tlist mesh_interface br0\n\
                     config wireguard wireguard\n\toption interface wgs\n";
        assert_eq!(
            rpc_interfaces(&cfg(&format!("{d}{gw_on}"))),
            ["br0", "lo", "wgs"]
        );
        // cjdns: cjdroute's tun.
        let cj = "config discovery c\n\toption method cjdns\n\tlist interface mesh0\n\
                  config cjdns cjdns\n\toption interface tun9\n";
        assert_eq!(rpc_interfaces(&cfg(cj)), ["lo", "mesh0", "tun9"]);
        // Set by hand; '*' is every interface.
        let own = "config mnigs main\n\tlist listen_interface br-lan\n";
        assert_eq!(rpc_interfaces(&cfg(&format!("{own}{d}"))), ["br-lan", "lo"]);
        let all = "config mnigs main\n\tlist listen_interface '*'\n";
        assert!(rpc_interfaces(&cfg(&format!("{all}{d}"))).is_empty());
        // Mesh unknown (discovery via any interface): every interface, with a warning.
        let any = "config discovery d\n\toption method routes\n";
        assert!(rpc_interfaces(&cfg(any)).is_empty());
    }
}
