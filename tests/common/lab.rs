//! Files of daemons run in a [`Lab`] by end-to-end tests.
//!
//! Included with `#[path = "common/lab.rs"] mod lab_common;` by the tests that need it.

#![allow(dead_code)]

use mnigs_lab::netlab::Lab;
use std::path::Path;

/// Writes `text` to the file `name` in the lab's directory; returns its path.
pub fn write(lab: &Lab, name: &str, text: &str) -> String {
    let p = lab.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The last `bytes` (about: cut at a character boundary) of the log at `path`, or nothing.
pub fn log_tail(path: &Path, bytes: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(bytes);
    s[s.floor_char_boundary(start)..].to_string()
}
