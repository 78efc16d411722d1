//! Starting threads through one copy of std's start-up code.
//!
//! `std::thread::spawn` is generic over its closure, so each place that starts a thread gets its
//! own copy of the code that starts one (stack size, name, spawn hooks, the result's packet):
//! about 500 bytes each on a router. These functions box the closure first, so that every
//! thread with the same kind of result starts through the same copy. Same threads, same names,
//! same errors and panics as calling std directly.

use std::io;
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

/// A thread's work, boxed.
type Work<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// [`std::thread::spawn`]: panics as it does when the system cannot start a thread.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let work: Work<'static, T> = Box::new(f);
    std::thread::spawn(work)
}

/// [`Builder::spawn`] of a thread called `name`.
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let work: Work<'static, T> = Box::new(f);
    Builder::new().name(name.to_string()).spawn(work)
}

/// [`Scope::spawn`]: panics as it does when the system cannot start a thread.
pub fn spawn_scoped<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> ScopedJoinHandle<'scope, T> {
    let work: Work<'scope, T> = Box::new(f);
    scope.spawn(work)
}

/// [`Builder::spawn_scoped`] of a thread called `name`.
pub fn spawn_scoped_named<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> io::Result<ScopedJoinHandle<'scope, T>> {
    let work: Work<'scope, T> = Box::new(f);
    Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_returns_its_result() {
        assert_eq!(spawn(|| 6 * 7).join().unwrap(), 42);
    }

    #[test]
    fn scoped_threads_borrow_and_return() {
        let text = String::from("borrowed");
        let (len, name) = std::thread::scope(|s| {
            let a = spawn_scoped(s, || text.len());
            let b = spawn_scoped_named(s, "scoped", || {
                std::thread::current().name().map(String::from)
            });
            (a.join().unwrap(), b.unwrap().join().unwrap())
        });
        assert_eq!((len, name.as_deref()), (8, Some("scoped")));
    }

    #[test]
    fn a_named_thread_carries_its_name() {
        let name = spawn_named("worker", || std::thread::current().name().map(String::from));
        assert_eq!(name.unwrap().join().unwrap().as_deref(), Some("worker"));
    }
}
