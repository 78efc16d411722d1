//! Cutting the kernel work that is due at once into batches (pure).
//!
//! The lease book's actions are queued in the order they were decided; they are applied in
//! batches, each with its removals first and then its accepts (so that an address freed in a
//! batch can be given again in the same batch). That reordering is only safe while no session
//! appears twice in one batch (a lease granted and released before anything was applied), so
//! a batch ends just before the action that would repeat a session.

use std::collections::HashSet;
use std::ops::Range;

/// The ranges of `sids` (one per queued action, in order) that form batches: consecutive,
/// covering everything, none naming a sid twice.
pub fn split<'a>(sids: impl IntoIterator<Item = &'a str>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    let mut n = 0;
    for (i, sid) in sids.into_iter().enumerate() {
        if !seen.insert(sid) {
            out.push(start..i);
            seen.clear();
            seen.insert(sid);
            start = i;
        }
        n = i + 1;
    }
    if n > start {
        out.push(start..n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_batch_ends_before_a_session_repeats() {
        assert!(split([]).is_empty());
        assert_eq!(split(["a", "b", "c"]), vec![0..3]);
        // Granted, then released before it was applied: two batches, in order.
        assert_eq!(split(["a", "b", "a", "c"]), vec![0..2, 2..4]);
        assert_eq!(split(["a", "a", "a"]), vec![0..1, 1..2, 2..3]);
        assert_eq!(split(["x", "a", "b", "a", "b"]), vec![0..3, 3..5]);
    }
}
