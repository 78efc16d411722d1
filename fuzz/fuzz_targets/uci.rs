//! The UCI grammar and the config model over arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnigs::config::{model, uci};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = uci::parse(text);
    let _ = model::from_text(text, Path::new("/etc/config/mnigs"));
});
