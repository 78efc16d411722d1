//! An unbounded channel between the daemon's threads (the subscriber's commands and replies,
//! the gateway's batch replies, stop signals). A leaf: depends on nothing in the crate.
//!
//! The same contract as `std::sync::mpsc::channel` for what mnigs uses, with std's error types:
//! messages arrive in order; `send` fails once the receiver is gone (the message comes back);
//! `recv` and `recv_timeout` return what was sent before the last sender went, then
//! `Disconnected`. It is a queue under a mutex with a condition variable: std's channel carries
//! three channel kinds and their waker machinery for every message type, about 5 KB of code
//! each in the router's binary.

use std::collections::VecDeque;
pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it; a poisoned queue is still a consistent one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending end; clone it for more senders.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A new channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver: true,
        }),
        changed: Condvar::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `t` (never blocks); fails, giving it back, when the receiver is gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        let mut s = self.0.lock();
        if !s.receiver {
            return Err(SendError(t));
        }
        s.queue.push_back(t);
        drop(s);
        self.0.changed.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.senders -= 1;
        let last = s.senders == 0;
        drop(s);
        if last {
            self.0.changed.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    /// The next message; waits for it. `Err` once every sender is gone and nothing is queued.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// The next message, waiting at most `timeout` (a timeout too long to be a time waits
    /// without end, as std's does).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut s = self.0.lock();
        loop {
            if let Some(t) = s.queue.pop_front() {
                return Ok(t);
            }
            if s.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            s = match deadline {
                None => self
                    .0
                    .changed
                    .wait(s)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    let waited = self.0.changed.wait_timeout(s, left);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut s = self.0.lock();
            s.receiver = false;
            std::mem::take(&mut s.queue)
        };
        // Undelivered messages are dropped outside the lock (a message may hold a sender).
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn messages_arrive_in_order_across_threads() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        let a = thread::spawn(move || (0..100).for_each(|i| tx.send(i).unwrap()));
        a.join().unwrap();
        let b = thread::spawn(move || (100..200).for_each(|i| tx2.send(i).unwrap()));
        let got: Vec<i32> = (0..200).map(|_| rx.recv().unwrap()).collect();
        b.join().unwrap();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(rx.recv(), Err(RecvError), "every sender gone");
    }

    #[test]
    fn queued_messages_outlive_their_senders() {
        let (tx, rx) = channel();
        tx.send("a").unwrap();
        drop(tx);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("a"));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn recv_timeout_waits_and_times_out() {
        let (tx, rx) = channel::<()>();
        let start = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(100)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            tx.send(()).unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(()));
        t.join().unwrap();
    }

    #[test]
    fn a_waiting_receiver_wakes_when_the_last_sender_goes() {
        let (tx, rx) = channel::<()>();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            drop(tx);
        });
        let start = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "woken by the drop, not by the timeout"
        );
        assert_eq!(
            rx.recv_timeout(Duration::MAX),
            Err(RecvTimeoutError::Disconnected)
        );
        t.join().unwrap();
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone_and_queued_messages_are_dropped() {
        let (tx, rx) = channel();
        let held = Arc::new(());
        tx.send(held.clone()).unwrap();
        drop(rx);
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the queued message was dropped"
        );
        let back = tx.send(held.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&back.0, &held), "the message comes back");
    }
}
