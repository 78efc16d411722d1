//! End to end, as root: a gateway with `option persist_path` keeps its live database in "RAM"
//! (the testbed directory), copies it to "flash" (another directory) periodically and at
//! SIGTERM, and after a "reboot" (live database deleted) restores it: the gateway comes back with
//! the same WireGuard key. Without the flash copy the key is new (the test can tell).

use mnigs_lab::scenario::Scenario;
use mnigs_lab::testbed::{Node, e2e_gate};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mnigs");
static NEVER: AtomicBool = AtomicBool::new(false);

fn public_key(s: &Scenario) -> String {
    s.bed
        .exec(Node::Gw, &["wg", "show", &s.gw_wg, "public-key"])
        .expect("wg show")
        .trim()
        .to_string()
}

fn remove_live_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    assert!(!db.exists());
}

fn log(s: &Scenario) -> String {
    std::fs::read_to_string(s.log(Node::Gw)).unwrap()
}

#[test]
fn gateway_keys_survive_a_reboot_through_the_flash_copy() {
    if !e2e_gate("gateway_keys_survive_a_reboot_through_the_flash_copy") {
        return;
    }
    let mut s = Scenario::new(EXE.as_ref(), 60).expect("testbed");
    s.bed
        .wait_converged(Duration::from_secs(20))
        .expect("Babel converges");
    let gw_before = s.system_state(Node::Gw);
    let flash = s.bed.dir.join("flash/state.db");
    let live = s.bed.dir.join("gw.db");
    let conf = s.config(Node::Gw);
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replacen(
        "\toption log_level 'debug'\n",
        &format!(
            "\toption log_level 'debug'\n\toption persist_path '{}'\n\toption persist_interval '1'\n",
            flash.display()
        ),
        1,
    );
    std::fs::write(&conf, text).unwrap();

    s.start(Node::Gw).unwrap();
    let key = public_key(&s);
    // The key was made after start: the periodic copy (every second here) picks it up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flash.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        flash.exists(),
        "periodic copy made; log:\n{}",
        s.tail(Node::Gw)
    );
    // `status` counts the copies written to flash.
    let deadline = Instant::now() + Duration::from_secs(5);
    let counted = || s.status(Node::Gw).unwrap()["persist"].clone();
    while counted()["writes"] == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = counted();
    assert_eq!(p["path"], flash.display().to_string());
    assert!(p["writes"].as_u64().unwrap() >= 1, "{p}");
    assert!(
        p["bytes"].as_u64().unwrap() >= 4096 * p["writes"].as_u64().unwrap(),
        "each copy is a whole database of 4 KB pages: {p}"
    );
    s.start(Node::Sub).unwrap();
    s.wait_connected(Duration::from_secs(30), &NEVER).unwrap();
    assert!(s.stop(Node::Sub, libc::SIGTERM));
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    let l = log(&s);
    let summary = l
        .lines()
        .find(|l| l.contains("state copied to") && l.contains("time(s) this run"))
        .unwrap_or_else(|| panic!("shutdown summary in the log:\n{l}"));
    assert!(!summary.contains(" 0 time(s)"), "{summary}");
    let flash_files: Vec<_> = std::fs::read_dir(flash.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(flash_files, ["state.db"], "only the copy is on flash");

    // Reboot: RAM is empty, the flash copy is there.
    remove_live_db(&live);
    s.start(Node::Gw).unwrap();
    assert!(
        log(&s).contains("state restored from"),
        "{}",
        s.tail(Node::Gw)
    );
    assert_eq!(public_key(&s), key, "same WireGuard key after the reboot");
    assert!(s.stop(Node::Gw, libc::SIGTERM));
    assert_eq!(s.system_state(Node::Gw), gw_before, "nothing left on gw");

    // Negative control: without the flash copy a reboot makes a new key.
    remove_live_db(&live);
    std::fs::remove_file(&flash).unwrap();
    s.start(Node::Gw).unwrap();
    assert_ne!(public_key(&s), key, "a new key when nothing was kept");
    assert!(s.stop(Node::Gw, libc::SIGTERM));
}
