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
    if enabled(level) {
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

/// Whether lines of `level` are printed now: the logging macros format their message only then.
pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Logs a `format!` message at debug level; the message is formatted only when debug lines are
/// printed (most runs: every command run is logged at debug level).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*))
        }
    };
}

/// Logs a `format!` message at info level, formatted only when info lines are printed.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::write($crate::log::Level::Info, format_args!($($arg)*))
        }
    };
}

/// Logs a `format!` message at warn level, formatted only when warnings are printed.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*))
        }
    };
}

/// Logs a `format!` message at error level, formatted only when errors are printed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::write($crate::log::Level::Error, format_args!($($arg)*))
        }
    };
}

/// Logs a message the macros above pass as `format_args!`: formatted here rather than at each
/// of the ~70 places that log (smaller on a router).
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    emit(level, &std::fmt::format(args));
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
    fn a_message_below_the_level_is_never_formatted() {
        struct Counted<'a>(&'a std::cell::Cell<u32>);
        impl std::fmt::Display for Counted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.set(self.0.get() + 1);
                f.write_str("x")
            }
        }
        let formatted = std::cell::Cell::new(0);
        set_level(Level::Info);
        crate::debug!("{}", Counted(&formatted));
        assert_eq!(
            formatted.get(),
            0,
            "a debug line was formatted at level info"
        );
        set_level(Level::Error);
        crate::warn!("{}", Counted(&formatted));
        assert_eq!(formatted.get(), 0);
        crate::error!("{}", Counted(&formatted));
        assert_eq!(formatted.get(), 1, "an error line is formatted");
        set_level(Level::Info);
    }

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
