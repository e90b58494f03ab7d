//! A stop signal for a helper thread that works in rounds (the log's
//! background thread, `DirStore`'s flusher): the thread sleeps between
//! rounds and wakes at once when its owner, dropping the store, raises the
//! signal, or when someone wants the next round now. Neither a stop nor a
//! wake given before the thread waits is lost.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Raised once by the owner, seen by the thread that waits on it.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    flags: Mutex<Flags>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Flags {
    stopped: bool,
    /// A round was asked for since the last wait returned.
    woken: bool,
}

impl StopSignal {
    /// Raises the signal and wakes every thread waiting on it. Raising it
    /// again does nothing more.
    pub fn stop(&self) {
        self.flags.lock().stopped = true;
        self.cv.notify_all();
    }

    /// Ends the current (or the next) wait early without stopping: the
    /// thread does its next round now.
    pub fn wake(&self) {
        self.flags.lock().woken = true;
        self.cv.notify_all();
    }

    /// Sleeps until `timeout` has passed, the signal is raised or a wake
    /// comes; true if the signal was raised (before the call or during
    /// it): the thread should return then instead of doing another round.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut flags = self.flags.lock();
        if !flags.stopped && !flags.woken {
            self.cv.wait_for(&mut flags, timeout);
        }
        flags.woken = false;
        flags.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignal;
    use std::sync::{Arc, Barrier, mpsc};
    use std::time::Duration;

    /// Longer than any test run: a wait that lasted this long failed.
    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_wait_without_a_stop_times_out_unstopped() {
        let s = StopSignal::default();
        assert!(!s.wait(Duration::ZERO));
        assert!(!s.wait(Duration::from_millis(1)));
    }

    #[test]
    fn a_stop_before_the_wait_is_not_lost() {
        let s = StopSignal::default();
        s.stop();
        s.stop();
        // Returns at once: the signal is checked before sleeping.
        assert!(s.wait(FOREVER));
        assert!(s.wait(FOREVER));
    }

    #[test]
    fn a_wake_before_the_wait_is_not_lost_and_counts_once() {
        let s = StopSignal::default();
        s.wake();
        s.wake();
        // Returns at once, not stopped.
        assert!(!s.wait(FOREVER));
        // The wakes were one request, answered.
        assert!(!s.wait(Duration::ZERO));
        s.stop();
        assert!(s.wait(FOREVER));
    }

    /// A thread asleep (or about to be) returns from its wait, unstopped,
    /// on a wake; then again, stopped, on a stop.
    #[test]
    fn a_wake_and_a_stop_reach_a_waiting_thread() {
        let s = Arc::new(StopSignal::default());
        let ready = Arc::new(Barrier::new(2));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (s, ready) = (Arc::clone(&s), Arc::clone(&ready));
            std::thread::spawn(move || {
                for _ in 0..2 {
                    ready.wait();
                    tx.send(s.wait(FOREVER)).expect("send");
                }
            })
        };
        let bound = Duration::from_secs(60);
        ready.wait();
        s.wake();
        assert_eq!(rx.recv_timeout(bound), Ok(false), "woken, not stopped");
        ready.wait();
        s.stop();
        assert_eq!(rx.recv_timeout(bound), Ok(true), "stopped");
        waiter.join().expect("waiter");
    }

    #[test]
    fn a_stop_wakes_a_waiting_thread() {
        let s = Arc::new(StopSignal::default());
        let ready = Arc::new(Barrier::new(2));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (s, ready) = (Arc::clone(&s), Arc::clone(&ready));
            std::thread::spawn(move || {
                ready.wait();
                tx.send(s.wait(FOREVER)).expect("send");
            })
        };
        ready.wait();
        // Whether the waiter is asleep yet or not, it must see the signal.
        s.stop();
        // A lost wake-up would leave the waiter asleep for an hour: the
        // bound turns that hang into a failure.
        let stopped = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the waiter was not woken by stop()");
        assert!(stopped);
        waiter.join().expect("waiter");
    }
}
