//! A connection pool without threads of its own, for the PostgreSQL and
//! Redis stores.
//!
//! A caller that finds no idle connection and room under the limit
//! connects itself, in its own thread, under the store's connect deadline;
//! a caller that finds the pool full waits (bounded) for a connection to be
//! returned. Nothing runs in the background, so dropping a store frees
//! everything at once (r2d2, used before, kept three threads alive for
//! about 30 s per dropped pool). Idle connections older than
//! [`MAX_IDLE_AGE`] are closed when the pool is next used instead of being
//! reaped by a thread.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// Idle connections older than this are closed rather than reused: the
/// server or a middlebox may have dropped them meanwhile.
pub(crate) const MAX_IDLE_AGE: Duration = Duration::from_secs(300);

/// Opens connections for a [`Pool`].
pub(crate) trait Connect: Send + Sync {
    /// One connection.
    type Conn: Send;

    /// Opens a connection, within the connect deadline.
    fn connect(&self) -> Result<Self::Conn>;

    /// Whether `conn` can no longer be used (closed, or left mid-request by
    /// a timeout); such a connection is closed instead of returned.
    fn is_broken(&self, conn: &mut Self::Conn) -> bool;
}

struct State<T> {
    /// Returned connections and when; the most recent last.
    idle: Vec<(T, Instant)>,
    /// Connections that exist: idle, lent, or being opened.
    open: usize,
}

/// At most `max` connections made by `C`, shared by any number of threads.
pub(crate) struct Pool<C: Connect> {
    connector: C,
    max: usize,
    /// How long `get` waits for a connection when all are lent.
    wait: Duration,
    backend: &'static str,
    target: String,
    state: Mutex<State<C::Conn>>,
    returned: Condvar,
}

impl<C: Connect> Pool<C> {
    pub fn new(
        connector: C,
        max: usize,
        wait: Duration,
        backend: &'static str,
        target: &str,
    ) -> Pool<C> {
        Pool {
            connector,
            max: max.max(1),
            wait,
            backend,
            target: target.to_owned(),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Adds an already open connection (the one `open` checked with).
    pub fn put(&self, conn: C::Conn) {
        let mut st = self.state.lock();
        st.open += 1;
        drop(st);
        self.give_back(conn);
    }

    /// An idle connection, a new one, or `Error::Timeout` when all `max`
    /// stay lent for the whole wait.
    pub fn get(&self) -> Result<Pooled<'_, C>> {
        let deadline = Instant::now() + self.wait;
        let mut stale = Vec::new();
        let mut st = self.state.lock();
        loop {
            while let Some((conn, since)) = st.idle.pop() {
                if since.elapsed() < MAX_IDLE_AGE {
                    drop(st);
                    drop(stale);
                    return Ok(self.lend(conn));
                }
                st.open -= 1;
                stale.push(conn);
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                drop(stale);
                return match self.connector.connect() {
                    Ok(conn) => Ok(self.lend(conn)),
                    Err(e) => {
                        self.forget_one();
                        Err(e)
                    }
                };
            }
            if self.returned.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::Timeout {
                    backend: self.backend,
                    target: self.target.clone(),
                    operation: format!(
                        "waiting for one of the pool's {} connections (all in use)",
                        self.max
                    ),
                    after: self.wait,
                });
            }
        }
    }

    fn lend(&self, conn: C::Conn) -> Pooled<'_, C> {
        Pooled {
            pool: self,
            conn: Some(conn),
            broken: false,
        }
    }

    fn forget_one(&self) {
        self.state.lock().open -= 1;
        self.returned.notify_one();
    }

    fn give_back(&self, conn: C::Conn) {
        let now = Instant::now();
        let mut st = self.state.lock();
        // The oldest idle connections are first: close those past their age.
        let old = st
            .idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= MAX_IDLE_AGE)
            .count();
        let stale: Vec<_> = st.idle.drain(..old).collect();
        st.open -= stale.len();
        st.idle.push((conn, now));
        drop(st);
        self.returned.notify_one();
        drop(stale);
    }

    /// Connections open now (idle or lent); for tests.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.state.lock().open
    }
}

/// A connection lent by a [`Pool`]; returned to it on drop, or closed if it
/// broke.
pub(crate) struct Pooled<'a, C: Connect> {
    pool: &'a Pool<C>,
    conn: Option<C::Conn>,
    broken: bool,
}

impl<C: Connect> Pooled<'_, C> {
    /// Closes the connection instead of returning it: after a timeout or an
    /// I/O error its state is unknown.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn discard(&mut self) {
        self.broken = true;
    }

    /// The pool's connector (for error context).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn pool_connector(&self) -> &C {
        &self.pool.connector
    }
}

impl<C: Connect> Deref for Pooled<'_, C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a Pooled holds its connection until dropped"),
        }
    }
}

impl<C: Connect> DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("a Pooled holds its connection until dropped"),
        }
    }
}

impl<C: Connect> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.broken || self.pool.connector.is_broken(&mut conn) {
            drop(conn);
            self.pool.forget_one();
        } else {
            self.pool.give_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter(AtomicUsize);

    impl Connect for Counter {
        type Conn = usize;
        fn connect(&self) -> Result<usize> {
            Ok(self.0.fetch_add(1, Ordering::SeqCst))
        }
        fn is_broken(&self, _: &mut usize) -> bool {
            false
        }
    }

    fn pool(max: usize) -> Pool<Counter> {
        Pool::new(
            Counter(AtomicUsize::new(0)),
            max,
            Duration::from_millis(50),
            "test",
            "here",
        )
    }

    #[test]
    fn reuses_returned_connections() {
        let p = pool(2);
        let a = *p.get().expect("first");
        let b = *p.get().expect("second");
        assert_eq!(a, b, "the returned connection is lent again");
        assert_eq!(p.open_count(), 1);
    }

    #[test]
    fn a_full_pool_times_out_then_recovers() {
        let p = pool(1);
        let held = p.get().expect("first");
        let err = p.get().err().expect("the only connection is lent");
        assert!(err.is_timeout(), "{err}");
        drop(held);
        assert!(p.get().is_ok());
    }

    #[test]
    fn discarded_connections_are_replaced() {
        let p = pool(1);
        let mut c = p.get().expect("first");
        assert_eq!(*c, 0);
        c.discard();
        drop(c);
        assert_eq!(p.open_count(), 0);
        assert_eq!(*p.get().expect("new"), 1);
    }
}
