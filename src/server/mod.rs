//! Backends that keep sessions in a database or cache server, shared by
//! many application servers: [`PostgresStore`](crate::PostgresStore),
//! [`MySqlStore`](crate::MySqlStore) and [`RedisStore`](crate::RedisStore).
//!
//! Every decision (is the session live, which version comes next, what time
//! is it) is taken on the server in one statement or script, so that
//! several processes and hosts agree. Times are milliseconds since the Unix
//! epoch, read from the server's clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Session, duration_millis, expires_from_millis, from_millis};

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Sessions fetched per round trip by `iter_sessions`.
pub(crate) const PAGE_SIZE: usize = 100;

/// A shared offset, in milliseconds, added to the server's clock in every
/// query and script of the stores it is given to. **A testing aid**: it lets
/// a test move a server store's time forward without sleeping. Leave it
/// out in production. Clones share one value.
#[derive(Clone, Debug, Default)]
pub struct ClockOffset(Arc<AtomicI64>);

impl ClockOffset {
    /// An offset of zero.
    pub fn new() -> ClockOffset {
        ClockOffset::default()
    }

    /// Moves the stores' time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(duration_millis(d)).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the offset so that the server's clock reads `t` now, assuming
    /// the server's clock agrees with this machine's.
    pub fn set_to(&self, t: SystemTime) {
        self.0.store(
            signed_millis(t) - signed_millis(SystemTime::now()),
            Ordering::SeqCst,
        );
    }

    /// The offset in milliseconds.
    pub fn millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn signed_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Settings every server store shares.
#[derive(Clone, Debug)]
pub(crate) struct Common {
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub max_idle: Option<Duration>,
    pub max_session_size: usize,
    /// Whether `max_session_size` was set rather than left at its default.
    pub max_session_size_set: bool,
    pub clock_offset: ClockOffset,
}

impl Common {
    pub fn new(url: &str) -> Common {
        Common {
            url: url.to_owned(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            max_idle: None,
            max_session_size: crate::options::DEFAULT_MAX_SESSION_SIZE,
            max_session_size_set: false,
            clock_offset: ClockOffset::new(),
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::InvalidOption("pool_size must be at least 1".into()));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Error::InvalidOption(format!(
                    "{name} must be at least 1 ms"
                )));
            }
        }
        Ok(())
    }

    /// The store's idle limit in ms; `i64::MAX` for none, so that
    /// `modified > now - idle` holds for every session.
    pub fn idle_ms(&self) -> i64 {
        self.max_idle.map_or(i64::MAX, |d| {
            i64::try_from(duration_millis(d)).unwrap_or(i64::MAX)
        })
    }

    pub fn check_size(&self, session: &Session) -> Result<()> {
        crate::session::check_size(session, self.max_session_size)
    }
}

/// The setters every server options builder shares; `$t` is the builder.
macro_rules! common_setters {
    ($t:ty) => {
        /// Connections kept open at most (default 10): this many threads
        /// can run queries at once; more wait for a free connection.
        pub fn pool_size(mut self, n: u32) -> $t {
            self.common.pool_size = n;
            self
        }

        /// How long to wait for a connection, new or from the pool, before
        /// failing with [`Error::Backend`](crate::Error::Backend)
        /// (default 5 s).
        pub fn connect_timeout(mut self, d: std::time::Duration) -> $t {
            self.common.connect_timeout = d;
            self
        }

        /// How long one statement or script may take before it fails
        /// (default 30 s).
        pub fn statement_timeout(mut self, d: std::time::Duration) -> $t {
            self.common.statement_timeout = d;
            self
        }

        /// Sessions not saved or touched for this long are treated as
        /// absent (default: no limit).
        pub fn max_idle(mut self, d: std::time::Duration) -> $t {
            self.common.max_idle = Some(d);
            self
        }

        /// Largest accepted session data in bytes (default 16 MiB); larger
        /// data is [`Error::TooLarge`](crate::Error::TooLarge) before
        /// anything is sent.
        pub fn max_session_size(mut self, bytes: usize) -> $t {
            self.common.max_session_size = bytes;
            self.common.max_session_size_set = true;
            self
        }

        /// **Testing aid:** adds `offset` to the server's clock in every
        /// query, so that a test can move time forward without sleeping.
        /// Do not use in production.
        pub fn clock_offset(mut self, offset: $crate::ClockOffset) -> $t {
            self.common.clock_offset = offset;
            self
        }
    };
}
pub(crate) use common_setters;

/// Checks a table name against `[A-Za-z_][A-Za-z0-9_]{0,62}` before it is
/// formatted into SQL.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
pub(crate) fn check_table_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption(format!(
            "table name {name:?} must match [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        )))
    }
}

/// `url` with any password replaced by `***`, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
}

/// Builds an [`Error::Backend`].
pub(crate) fn backend_error(
    backend: &'static str,
    target: &str,
    message: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> Error {
    Error::Backend {
        backend,
        target: target.to_owned(),
        message: message.into(),
        source,
    }
}

/// Converts stored milliseconds (never negative when written by us).
pub(crate) fn ms_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Converts milliseconds for a signed database column.
pub(crate) fn ms_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Rebuilds a session from stored columns.
pub(crate) fn restore(
    id: SessionId,
    data: Vec<u8>,
    expires: i64,
    modified: i64,
    version: i64,
) -> Session {
    Session::restore(
        id,
        data,
        expires_from_millis(ms_u64(expires)),
        from_millis(ms_u64(modified)),
        ms_u64(version),
    )
}

/// One page of sessions after a key, and the last key looked at (which may
/// be past the last session returned when the page's tail was expired), or
/// `None` at the end.
pub(crate) type Page = (Vec<Session>, Option<SessionId>);

/// Streams sessions page by page (keyset pagination by id): only one page
/// is in memory at a time.
pub(crate) struct Paged<F> {
    fetch: F,
    after: Option<SessionId>,
    buf: VecDeque<Session>,
    done: bool,
}

impl<F: FnMut(Option<&SessionId>) -> Result<Page>> Paged<F> {
    pub fn new(fetch: F) -> Paged<F> {
        Paged {
            fetch,
            after: None,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl<F: FnMut(Option<&SessionId>) -> Result<Page>> Iterator for Paged<F> {
    type Item = Result<Session>;

    fn next(&mut self) -> Option<Result<Session>> {
        while self.buf.is_empty() && !self.done {
            match (self.fetch)(self.after.as_ref()) {
                Ok((sessions, last)) => {
                    self.buf.extend(sessions);
                    match last {
                        Some(last) => self.after = Some(last),
                        None => self.done = true,
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// A connection from an r2d2 pool, or an error naming the server.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn pooled<M: r2d2::ManageConnection>(
    pool: &r2d2::Pool<M>,
    backend: &'static str,
    server: &str,
    target: &str,
    timeout: std::time::Duration,
) -> Result<r2d2::PooledConnection<M>> {
    pool.get().map_err(|e| {
        backend_error(
            backend,
            target,
            format!("no connection within {timeout:?}: {e}; check that {server} is running and reachable"),
            Some(Box::new(e)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["sessions", "_x", "a1_B2", &"t".repeat(63)] {
            assert!(check_table_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a b", "x;drop", "\"q\"", &"t".repeat(64)] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("redis://:pw@h/0"), "redis://:***@h/0");
        assert_eq!(redact_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
    }
}
