//! `mnigs-demo`: the single-host demo, `mnigs-demo demo [--hold] [--cjdns]` (or no arguments).
//!
//! Every other command line is mnigs's own (`mnigs-demo daemon -c FILE`, `mnigs-demo status` …):
//! the demo starts its daemons and asks them for their status with this same binary, so
//! `cargo run -p mnigs-lab` needs no separately built `mnigs`.

use mnigs::cli::{Args, Cmd};

fn main() {
    let args: Args = argh::from_env();
    let code = match args.command {
        None if !args.version => run_demo(false, false),
        Some(Cmd::Demo(a)) => run_demo(a.hold, a.cjdns),
        _ => mnigs::cli::main(args),
    };
    std::process::exit(code);
}

fn run_demo(hold: bool, cjdns: bool) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("mnigs-demo: cannot find our own binary: {e}");
            return 1;
        }
    };
    if cjdns {
        mnigs_lab::cjdemo::run(&exe, hold)
    } else {
        mnigs_lab::demo::run(&exe, hold)
    }
}
