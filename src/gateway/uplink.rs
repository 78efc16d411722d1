//! The gateway's check of its own Internet access: ICMP echo to `list uplink_target` out of
//! `wan_interface` every `uplink_interval` seconds. Healthy while any target answers; the result
//! goes into `nodeInfo.uplink`, and no new leases are granted while it is unhealthy.

use crate::sys::icmp;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Whether any of `targets` answers an echo sent out of `wan` within `timeout` each.
pub fn check(targets: &[IpAddr], wan: &str, timeout: Duration) -> bool {
    targets
        .iter()
        .any(|t| icmp::echo(*t, Some(wan), timeout).is_ok())
}

/// Checks every `interval` and passes the result to `report`, until `stop` is dropped or sent to.
pub fn spawn(
    targets: Vec<IpAddr>,
    wan: String,
    interval: Duration,
    report: impl Fn(bool) + Send + 'static,
    stop: Receiver<()>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let timeout = interval.min(Duration::from_secs(1));
        loop {
            report(check(&targets, &wan, timeout));
            match stop.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
    })
}
