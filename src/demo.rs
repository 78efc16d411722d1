//! `mnigs demo`: the single-host demo.

/// Runs the demo; returns the exit code.
pub fn run(_hold: bool) -> i32 {
    eprintln!("demo: not yet");
    1
}
