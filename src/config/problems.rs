//! [`Problem`], [`Severity`]: findings about a config file, shown as
//! `FILE:LINE: section.option: message`.

use std::fmt;
use std::path::PathBuf;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ignored input (unknown section or option); the config is still usable.
    Warning,
    /// An invalid value or structure; the config must not be used.
    Error,
}

/// One finding about a config file, printed as `FILE:LINE: section.option: message`.
///
/// `LINE` is left out when it is 0 (the file as a whole, e.g. it cannot be read), the place
/// when it is empty, and warnings have `warning: ` before the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, or 0 for the whole file.
    pub line: usize,
    /// `section.option`, or just `section`, or empty for grammar errors.
    pub place: String,
    /// What is wrong, in English.
    pub message: String,
}

impl Problem {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.place.is_empty() {
            write!(f, "{}: ", self.place)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/config/mnigs";

    #[test]
    fn problem_display() {
        let mut pr = Problem {
            severity: Severity::Error,
            file: PathBuf::from(FILE),
            line: 12,
            place: "main.rpc_port".into(),
            message: "must be a port number 1-65535, got 'abc'".into(),
        };
        assert_eq!(
            pr.to_string(),
            "/etc/config/mnigs:12: main.rpc_port: must be a port number 1-65535, got 'abc'"
        );
        pr.severity = Severity::Warning;
        pr.place = "main.colour".into();
        pr.message = "unknown option, ignored".into();
        assert_eq!(
            pr.to_string(),
            "/etc/config/mnigs:12: main.colour: warning: unknown option, ignored"
        );
        pr.place.clear();
        pr.line = 0;
        pr.severity = Severity::Error;
        pr.message = "cannot read: gone".into();
        assert_eq!(pr.to_string(), "/etc/config/mnigs: cannot read: gone");
    }
}
