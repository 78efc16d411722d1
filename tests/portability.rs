//! Source rules that keep mnigs building and behaving the same on every router CPU:
//! no 64-bit atomics (32-bit MIPS has none; dependencies gate theirs on
//! `target_has_atomic = "64"`), and nothing that relies on `panic = "abort"` (the OpenWrt feed
//! builds with `panic = "unwind"`; the daemon installs an aborting panic hook instead).

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_64_bit_atomics_or_unwind_catching_in_our_code() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found the sources");
    // Spelled in pieces so that this file does not match itself if it is ever moved into src/.
    let banned = [
        ["Atomic", "U64"].concat(),
        ["Atomic", "I64"].concat(),
        ["catch", "_unwind"].concat(),
    ];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for b in &banned {
            assert!(!text.contains(b.as_str()), "{} uses {b}", f.display());
        }
    }
    let daemon =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon.rs"))
            .unwrap();
    assert!(
        daemon.contains("std::process::abort()"),
        "the daemon's panic hook aborts, whatever the profile's panic strategy"
    );
}
