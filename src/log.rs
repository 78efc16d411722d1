//! A tiny leveled logger writing to stderr (procd forwards it to logd).
//!
//! One call is one line: control characters in a message (a newline or a terminal escape in a
//! name another node sent) are written escaped (`\n`, `\u{1b}`), so nothing from the network can
//! start a forged line or drive the terminal of whoever reads the log.

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
        eprintln!("mnigs[{}] {tag}: {}", std::process::id(), escape(msg));
    }
}

/// `msg` with every control character escaped (`\n`, `\r`, `\t`, else `\u{..}`), as one line.
pub fn escape(msg: &str) -> std::borrow::Cow<'_, str> {
    if !msg.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_escape_sequences() {
        let hostile = "gw\nmnigs[1] info: forged\r\u{1b}[31mred\u{7}\u{9b}x\ttab";
        let out = escape(hostile);
        assert!(!out.chars().any(char::is_control), "{out}");
        assert_eq!(
            out,
            "gw\\nmnigs[1] info: forged\\r\\u{1b}[31mred\\u{7}\\u{9b}x\\ttab"
        );
        assert!(matches!(
            escape("plain ünïcode"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
