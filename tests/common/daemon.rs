//! A real mnigs daemon on loopback for tests: a free port, a config file listening there, and a
//! guard that stops the daemon also when an assertion fails.
//!
//! Included with `#[path = "common/daemon.rs"] mod daemon_common;` by the tests that need it.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;

/// A TCP port free on loopback a moment ago (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `dir/mnigs`: node `name` answering RPC on 127.0.0.1:`port`, its database `dir/db`,
/// then the `extra` lines (each `\toption …\n` or `\tlist …\n`) of the main section.
pub fn loopback_config(dir: &Path, name: &str, port: u16, extra: &str) -> PathBuf {
    let config = dir.join("mnigs");
    std::fs::write(
        &config,
        format!(
            "config mnigs 'main'\n\toption name '{name}'\n\toption rpc_port '{port}'\n\
             \tlist listen '127.0.0.1'\n\toption database '{}'\n{extra}",
            dir.join("db").display()
        ),
    )
    .unwrap();
    config
}

/// A daemon process, killed and reaped when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
