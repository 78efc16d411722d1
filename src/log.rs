//! A tiny leveled logger writing to stderr (procd forwards it to logd).

use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(2);

/// Log levels, from most to least verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl Level {
    /// Parses `debug|info|warn|error`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// Sets the least severe level that is still printed.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

fn emit(level: Level, msg: &str) {
    if level as u8 >= LEVEL.load(Ordering::Relaxed) {
        let tag = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        eprintln!("mnigs[{}] {tag}: {msg}", std::process::id());
    }
}

/// Logs at debug level.
pub fn debug(msg: &str) {
    emit(Level::Debug, msg);
}
/// Logs at info level.
pub fn info(msg: &str) {
    emit(Level::Info, msg);
}
/// Logs at warn level.
pub fn warn(msg: &str) {
    emit(Level::Warn, msg);
}
/// Logs at error level.
pub fn error(msg: &str) {
    emit(Level::Error, msg);
}
