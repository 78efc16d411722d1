//! Wall-clock time as the store, the lease book and the subscriber keep it: Unix seconds.
//! A leaf: depends on nothing in the crate.

/// Unix time now, in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
