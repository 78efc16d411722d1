//! What the headless-browser tests (tests/browser: Playwright driving Chromium) need.
//!
//! Included with `#[path = "common/browser.rs"] mod browser_common;` by the tests that need it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// tests/browser: the Node scripts and their `node_modules`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing for the browser (Chromium, Node, playwright-core), each said in words; empty
/// when nothing is.
pub fn missing_browser() -> Vec<String> {
    let mut missing = Vec::new();
    for p in ["/usr/bin/chromium", "/usr/bin/node"] {
        if !Path::new(p).exists() {
            missing.push(format!("{p} is not installed"));
        }
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        missing.push("playwright-core is missing: run `npm ci` in tests/browser".into());
    }
    missing
}
