//! When to look again for a hot standby that could not be found, decided without I/O.
//!
//! After a failover the standby slot is empty, and the gateway just left is down or backing off;
//! its uplink may come back within seconds. Waiting for the next regular scan (`scan_interval`,
//! 300 s by default) would leave the subscriber without a standby — a second failure would then
//! be a cold one — for minutes. So while the slot stays empty the subscriber scans sooner: after
//! [`FIRST_RESCAN`], doubling each time nothing usable turned up, never later than the regular
//! scan. On a mesh with a single gateway this costs a few extra scans, then the regular rhythm.

use std::time::Duration;

/// The first early scan after the standby slot became (or stayed) empty.
pub const FIRST_RESCAN: Duration = Duration::from_secs(15);

/// The delay before the next scan meant to find a standby: [`FIRST_RESCAN`] the first time
/// (`previous` `None`), then twice the previous delay, at most `scan_interval`.
pub fn next_rescan(previous: Option<Duration>, scan_interval: Duration) -> Duration {
    previous
        .map_or(FIRST_RESCAN, |p| p.saturating_mul(2))
        .min(scan_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_scans_back_off_to_the_regular_interval() {
        let regular = Duration::from_secs(300);
        let mut delays = vec![];
        let mut prev = None;
        for _ in 0..7 {
            let d = next_rescan(prev, regular);
            delays.push(d.as_secs());
            prev = Some(d);
        }
        assert_eq!(delays, [15, 30, 60, 120, 240, 300, 300]);
        // A short regular interval is never lengthened.
        assert_eq!(
            next_rescan(None, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
