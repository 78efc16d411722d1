//! End to end, as root: the subscriber's hooks on the demo topology. One test hook records its
//! environment per call; register, connect, disconnect, release and failover must each call it
//! once per occurrence with the session's real values, and the connect hook, which hangs, must
//! be killed at `hook_timeout` while the daemon keeps answering.

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, e2e_gate, process_ended};
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

/// One hook call: its event, PID and `MNIGS_*` variables.
struct Call {
    event: String,
    pid: u32,
    env: HashMap<String, String>,
}

fn calls(dir: &Path) -> Vec<Call> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).expect("hook dir").flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        // EVENT.PID; EVENT.PID.tmp is one still being written.
        let Some((event, Ok(pid))) = name.split_once('.').map(|(e, p)| (e, p.parse::<u32>()))
        else {
            continue;
        };
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        assert!(text.ends_with("END\n"), "{name} is complete once renamed");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.push(Call {
            event: event.to_string(),
            pid,
            env,
        });
    }
    out
}

fn count(dir: &Path, event: &str) -> usize {
    calls(dir).iter().filter(|c| c.event == event).count()
}

/// Waits until `event` was recorded `n` times (hooks run on their own threads).
fn wait_count(dir: &Path, event: &str, n: usize) {
    let start = Instant::now();
    while count(dir, event) < n && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(dir, event), n, "{event} hook calls");
}

fn last(dir: &Path, event: &str) -> HashMap<String, String> {
    let mut c: Vec<Call> = calls(dir)
        .into_iter()
        .filter(|c| c.event == event)
        .collect();
    c.sort_by_key(|c| c.env.get("MNIGS_SEQ").cloned().unwrap_or_default());
    c.pop().expect("a call").env
}

fn var<'a>(env: &'a HashMap<String, String>, k: &str) -> &'a str {
    env.get(k).map_or("", String::as_str)
}

#[test]
fn hooks_fire_once_per_event_with_the_session_values() {
    if !e2e_gate("e2e_hooks") {
        return;
    }
    let mut s = Scenario::new(EXE.as_ref(), 6).expect("testbed");
    let dir = s.bed.dir.join("hooks");
    std::fs::create_dir_all(&dir).expect("hook dir");
    let hook = s.bed.dir.join("record-hook");
    // Records its environment (MNIGS_SEQ orders calls of one event), then the connect hook hangs.
    let script = format!(
        "#!/bin/sh\nf='{dir}'/\"$MNIGS_EVENT.$$\"\n{{ env | grep '^MNIGS_' | sort; echo MNIGS_SEQ=$(date +%s%N); echo END; }} > \"$f.tmp\"\nmv \"$f.tmp\" \"$f\"\n\
         [ \"$MNIGS_EVENT\" = connect ] && exec sleep 60\nexit 0\n",
        dir = dir.display()
    );
    std::fs::write(&hook, script).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let conf = s.config(Node::Sub);
    let text = std::fs::read_to_string(&conf).expect("config");
    let mut options = String::from("config subscriber 'subscriber'\n\toption hook_timeout '2'\n");
    for o in [
        "on_connect",
        "on_disconnect",
        "on_register",
        "on_release",
        "on_failover",
    ] {
        options.push_str(&format!("\toption {o} '{}'\n", hook.display()));
    }
    std::fs::write(
        &conf,
        text.replace("config subscriber 'subscriber'\n", &options),
    )
    .expect("config");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    s.start(Node::Gw).expect("gateway");
    s.start(Node::Sub).expect("subscriber");
    let st = s
        .wait_connected(Duration::from_secs(30), &NEVER)
        .expect("connects");

    // register → connect, with what the gateway granted.
    wait_count(&dir, "register", 1);
    wait_count(&dir, "connect", 1);
    let gw: Value = s.status(Node::Gw).expect("gw status");
    let sid = gw["gateway"]["sessions"][0]["sid"]
        .as_str()
        .expect("gateway lists the session")
        .to_string();
    let sub = &st["subscriber"];
    for event in ["register", "connect"] {
        let e = last(&dir, event);
        assert_eq!(var(&e, "MNIGS_EVENT"), event);
        assert_eq!(var(&e, "MNIGS_NODE"), "sub");
        assert_eq!(var(&e, "MNIGS_SID"), sid, "{event}");
        assert_eq!(var(&e, "MNIGS_GATEWAY_NAME"), "gw");
        assert_eq!(
            var(&e, "MNIGS_GATEWAY_ADDRESS"),
            sub["gateway"]["address"].as_str().unwrap()
        );
        assert_eq!(var(&e, "MNIGS_GATEWAY_PORT"), "65533");
        assert_eq!(var(&e, "MNIGS_METHOD"), "wireguard");
        assert_eq!(var(&e, "MNIGS_IPV4"), sub["ipv4"].as_str().unwrap());
        assert_eq!(var(&e, "MNIGS_IPV6"), sub["ipv6"].as_str().unwrap());
        assert_eq!(var(&e, "MNIGS_CIDR4"), "24");
        assert_eq!(var(&e, "MNIGS_IPV4_GATEWAY"), "100.127.0.1");
    }
    assert_eq!(var(&last(&dir, "register"), "MNIGS_INTERFACE"), "");
    assert_eq!(
        var(&last(&dir, "connect"), "MNIGS_INTERFACE"),
        s.sub_wg.as_str()
    );

    // The connect hook hangs: the daemon still answers, and the hook is killed at 2 s.
    let hanging = calls(&dir)
        .into_iter()
        .find(|c| c.event == "connect")
        .unwrap()
        .pid;
    let asked = Instant::now();
    let out = s
        .cli(Node::Sub, &["disconnect", "--json"])
        .expect("disconnect");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "disconnect took {:?}",
        asked.elapsed()
    );
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["success"], true, "{out}");
    let start = Instant::now();
    while !process_ended(hanging) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        process_ended(hanging),
        "hanging hook not killed at its timeout"
    );

    // disconnect → release, once each, same session.
    wait_count(&dir, "disconnect", 1);
    wait_count(&dir, "release", 1);
    for event in ["disconnect", "release"] {
        let e = last(&dir, event);
        assert_eq!(var(&e, "MNIGS_SID"), sid, "{event}");
        assert_eq!(var(&e, "MNIGS_INTERFACE"), s.sub_wg.as_str());
        assert_eq!(var(&e, "MNIGS_REASON"), "disconnect requested");
    }
    assert_eq!(count(&dir, "failover"), 0);

    // Scan reconnects: a second register and connect, with a new session.
    s.cli(Node::Sub, &["scan", "--json"]).expect("scan");
    s.wait_connected(Duration::from_secs(30), &NEVER)
        .expect("reconnects");
    wait_count(&dir, "register", 2);
    wait_count(&dir, "connect", 2);
    let sid2 = var(&last(&dir, "connect"), "MNIGS_SID").to_string();
    assert_ne!(sid2, sid, "a new session after release");

    // The gateway dies: the lease cannot be renewed → disconnect + failover, no release.
    assert!(s.stop(Node::Gw, libc::SIGKILL), "gateway killed");
    wait_count(&dir, "failover", 1);
    wait_count(&dir, "disconnect", 2);
    let f = last(&dir, "failover");
    assert_eq!(var(&f, "MNIGS_SID"), sid2);
    assert_eq!(var(&f, "MNIGS_GATEWAY_NAME"), "gw");
    assert!(
        var(&f, "MNIGS_REASON").contains("gw"),
        "reason: {}",
        var(&f, "MNIGS_REASON")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        count(&dir, "release"),
        1,
        "no release when the gateway is lost"
    );
    assert_eq!(count(&dir, "register"), 2);
    assert_eq!(count(&dir, "connect"), 2);

    // The gateway is back; the subscriber finds it again. Stopping the subscriber daemon then
    // releases the lease, and the daemon waits for those hooks before it exits.
    s.start(Node::Gw).expect("gateway restarts");
    s.wait_connected(Duration::from_secs(30), &NEVER)
        .expect("reconnects after failover");
    wait_count(&dir, "connect", 3);
    assert!(s.stop(Node::Sub, libc::SIGTERM), "subscriber stops");
    assert_eq!(
        count(&dir, "disconnect"),
        3,
        "disconnect hook ran before exit"
    );
    assert_eq!(count(&dir, "release"), 2, "release hook ran before exit");
    assert_eq!(
        var(&last(&dir, "release"), "MNIGS_REASON"),
        "daemon stopping"
    );
}
