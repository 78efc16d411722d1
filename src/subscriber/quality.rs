//! Connection quality per gateway: a bounded window of probe results, summarised as RTT, loss
//! and availability, and the down rule (`down_after` consecutive failed intervals). Pure.

use std::collections::VecDeque;

/// Probe results kept per gateway; older ones fall out of the window.
pub const WINDOW: usize = 64;

/// Recent probe results of one gateway.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// `Some(rtt_ms)` for an answered probe, `None` for a lost one; newest last.
    results: VecDeque<Option<f64>>,
    /// Failed intervals in a row, up to now.
    consecutive_failures: u32,
    /// Probes ever sent (not bounded by the window).
    pub total: u64,
    /// Probes ever lost.
    pub lost: u64,
}

/// A summary of a [`Record`], as stored and shown.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Mean RTT of the answered probes in the window.
    pub rtt_ms: Option<f64>,
    /// Share of probes lost in the window, 0..=1.
    pub loss: f64,
    /// Probes in the window.
    pub window: usize,
    /// Failed intervals in a row, up to now.
    pub consecutive_failures: u32,
}

impl Record {
    /// Adds one interval's result: the RTT if the path answered, `None` if not.
    pub fn push(&mut self, rtt_ms: Option<f64>) {
        if self.results.len() == WINDOW {
            self.results.pop_front();
        }
        self.results.push_back(rtt_ms);
        self.total += 1;
        match rtt_ms {
            Some(_) => self.consecutive_failures = 0,
            None => {
                self.lost += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
        }
    }

    /// Forgets the current run of failures (a new tunnel to the gateway starts afresh).
    pub fn restart_streak(&mut self) {
        self.consecutive_failures = 0;
    }

    /// Probes unanswered in a row, up to now.
    pub fn missed_in_a_row(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether the last `down_after` intervals all failed.
    pub fn is_down(&self, down_after: u32) -> bool {
        self.consecutive_failures >= down_after.max(1)
    }

    /// The slowest of the last 16 answers in the window, in ms (for the probe's timeout).
    pub fn slowest_recent(&self) -> Option<f64> {
        self.results
            .iter()
            .rev()
            .flatten()
            .take(16)
            .copied()
            .reduce(f64::max)
    }

    /// RTT, loss and window size.
    pub fn summary(&self) -> Summary {
        let ok: Vec<f64> = self.results.iter().flatten().copied().collect();
        let rtt_ms = (!ok.is_empty()).then(|| ok.iter().sum::<f64>() / ok.len() as f64);
        let loss = if self.results.is_empty() {
            0.0
        } else {
            1.0 - ok.len() as f64 / self.results.len() as f64
        };
        Summary {
            rtt_ms,
            loss,
            window: self.results.len(),
            consecutive_failures: self.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_and_summarised() {
        let mut r = Record::default();
        for i in 0..100 {
            r.push(if i % 4 == 0 { None } else { Some(10.0) });
        }
        let s = r.summary();
        assert_eq!(s.window, WINDOW);
        assert_eq!(s.rtt_ms, Some(10.0));
        assert!((s.loss - 0.25).abs() < 1e-9, "{}", s.loss);
        assert_eq!((r.total, r.lost), (100, 25));
    }

    #[test]
    fn down_after_consecutive_failures_only() {
        let mut r = Record::default();
        r.push(Some(1.0));
        r.push(None);
        r.push(None);
        assert!(!r.is_down(3));
        r.push(Some(2.0));
        r.push(None);
        r.push(None);
        assert!(!r.is_down(3));
        r.push(None);
        assert!(r.is_down(3));
        r.push(Some(1.0));
        assert!(!r.is_down(1));
        assert_eq!(Record::default().summary().rtt_ms, None);
        assert_eq!(Record::default().slowest_recent(), None);
    }

    #[test]
    fn the_slowest_of_the_last_sixteen_answers() {
        let mut r = Record::default();
        r.push(Some(90.0));
        for _ in 0..16 {
            r.push(Some(5.0));
            r.push(None);
        }
        assert_eq!(r.slowest_recent(), Some(5.0), "90 ms is 16 answers ago");
        r.push(Some(7.5));
        assert_eq!(r.slowest_recent(), Some(7.5));
    }
}
