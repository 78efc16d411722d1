//! Starting threads through one copy of std's start-up code.
//!
//! `std::thread::spawn` is generic over its closure, so each place that starts a thread gets its
//! own copy of the code that starts one (stack size, name, spawn hooks, the result's packet):
//! about 500 bytes each on a router. These functions box the closure first, so that every
//! thread with the same kind of result starts through the same copy. Same threads, same names,
//! same errors and panics as calling std directly.

use std::io;
use std::thread::{Builder, JoinHandle};

/// A thread's work, boxed.
type Work<T> = Box<dyn FnOnce() -> T + Send>;

/// [`std::thread::spawn`]: panics as it does when the system cannot start a thread.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let work: Work<T> = Box::new(f);
    std::thread::spawn(work)
}

/// [`Builder::spawn`] of a thread called `name`.
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let work: Work<T> = Box::new(f);
    Builder::new().name(name.to_string()).spawn(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_returns_its_result() {
        assert_eq!(spawn(|| 6 * 7).join().unwrap(), 42);
    }

    #[test]
    fn a_named_thread_carries_its_name() {
        let name = spawn_named("worker", || std::thread::current().name().map(String::from));
        assert_eq!(name.unwrap().join().unwrap().as_deref(), Some("worker"));
    }
}
