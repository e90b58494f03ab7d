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
mod pg_driver;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) mod pool;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Sessions fetched per round trip by `iter_sessions`.
pub(crate) const PAGE_SIZE: usize = 100;

/// Sessions removed per statement by `delete_old_sessions` on the SQL
/// servers, so that each statement stays well inside the statement and io
/// deadlines however many sessions are old.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const SQL_DELETE_BATCH: u64 = 1000;

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
#[derive(Clone)]
pub(crate) struct Common {
    /// The connection URL as given, password and all: never printed.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// The client-side deadline per request; `None`: `statement_timeout`
    /// plus [`IO_MARGIN`].
    pub io_timeout: Option<Duration>,
    pub max_idle: Option<Duration>,
    pub max_session_size: usize,
    /// Whether `max_session_size` was set rather than left at its default.
    pub max_session_size_set: bool,
    pub clock_offset: ClockOffset,
    /// Whether plaintext to a host other than loopback is allowed.
    pub allow_plaintext_to_remote: bool,
    /// TLS even to loopback.
    pub require_tls: bool,
    /// CA certificates (PEM) to trust instead of the system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The most live sessions one owner may have; a save beyond it deletes
    /// the owner's least recently modified others.
    pub max_sessions_per_owner: Option<usize>,
}

/// How much longer than `statement_timeout` the client waits by default, so
/// that the server's own cancellation arrives first when the server is up.
pub(crate) const IO_MARGIN: Duration = Duration::from_secs(1);

/// Leaves out the URL (it may hold a password); the options builders print
/// the target from the driver's parsed configuration instead.
impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("io_timeout", &self.io_timeout())
            .field("max_idle", &self.max_idle)
            .field("max_session_size", &self.max_session_size)
            .field("allow_plaintext_to_remote", &self.allow_plaintext_to_remote)
            .field("require_tls", &self.require_tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("max_sessions_per_owner", &self.max_sessions_per_owner)
            .finish_non_exhaustive()
    }
}

impl Common {
    pub fn new(url: &str) -> Common {
        Common {
            url: url.to_owned(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            io_timeout: None,
            max_idle: None,
            max_session_size: crate::options::DEFAULT_MAX_SESSION_SIZE,
            max_session_size_set: false,
            clock_offset: ClockOffset::new(),
            allow_plaintext_to_remote: false,
            require_tls: false,
            tls_ca_file: None,
            max_sessions_per_owner: None,
        }
    }

    /// Whether the caller asked for TLS by option.
    pub fn tls_asked(&self) -> bool {
        self.require_tls || self.tls_ca_file.is_some()
    }

    pub fn check(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::InvalidOption("pool_size must be at least 1".into()));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
            ("io_timeout", self.io_timeout()),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Error::InvalidOption(format!(
                    "{name} must be at least 1 ms"
                )));
            }
        }
        if self.max_sessions_per_owner == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions_per_owner must be at least 1".into(),
            ));
        }
        check_url_shape(&self.url)
    }

    /// How many of an owner's other live sessions a save for that owner
    /// keeps (the limit less the one saved), if there is a limit.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
    pub fn others_kept(&self) -> Option<i64> {
        self.max_sessions_per_owner
            .map(|n| i64::try_from(n.saturating_sub(1)).unwrap_or(i64::MAX))
    }

    /// The client-side deadline for one request.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
            .unwrap_or_else(|| self.statement_timeout.saturating_add(IO_MARGIN))
    }

    /// The store's idle limit in ms; `i64::MAX` for none, so that
    /// `modified > now - idle` holds for every session.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub fn idle_ms(&self) -> i64 {
        self.max_idle.map_or(i64::MAX, |d| {
            i64::try_from(duration_millis(d)).unwrap_or(i64::MAX)
        })
    }

    pub fn check_size(&self, session: &Session) -> Result<()> {
        crate::session::check_size(session, self.max_session_size)
    }

    /// Refuses a plaintext connection to `host` unless it is loopback or
    /// the caller allowed it by name.
    pub fn check_plaintext(
        &self,
        backend: &'static str,
        target: &str,
        host: Host<'_>,
        tls_feature: &str,
        how_to_enable: &str,
    ) -> Result<()> {
        if self.allow_plaintext_to_remote || host.is_local() {
            return Ok(());
        }
        Err(backend_error(
            backend,
            target,
            format!(
                "refusing to send credentials and sessions in plaintext to a host that is not loopback: \
                 use TLS ({how_to_enable}, with the `{tls_feature}` feature), or, on a network you \
                 trust, call allow_plaintext_to_remote(true)"
            ),
            None,
        ))
    }
}

/// Where a server store connects, as far as plaintext policy cares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Host<'a> {
    /// A TCP host name or address literal.
    Tcp(&'a str),
    /// A Unix-domain socket: local by construction.
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    Unix,
}

impl Host<'_> {
    /// Loopback: `localhost`, 127.0.0.0/8, `::1`, or a Unix socket.
    pub fn is_local(self) -> bool {
        match self {
            Host::Unix => true,
            Host::Tcp(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h.eq_ignore_ascii_case("localhost")
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

/// A rustls client configuration (ring provider) that trusts the CA
/// certificates in `ca_file`, or the system's roots.
#[cfg(feature = "postgres-tls")]
pub(crate) fn rustls_config(
    ca_file: Option<&std::path::Path>,
) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read tls_ca_file {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!("tls_ca_file {}: not PEM certificates: {e}", path.display())
                })?;
                roots.add(cert).map_err(|e| {
                    format!("tls_ca_file {}: unusable certificate: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls_ca_file {} holds no certificate",
                    path.display()
                ));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no CA certificates found on this system: give the server's CA with tls_ca_file"
                        .into(),
                );
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Refuses a URL with an `@` after its authority: a password with a raw
/// `/`, `?` or `#` (which must be percent-encoded), that the drivers would
/// otherwise split into host, database or query, and print.
pub(crate) fn check_url_shape(url: &str) -> Result<()> {
    let Some(scheme_end) = url.find("://") else {
        return Ok(()); // key=value form: no authority to split
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') {
        return Err(Error::InvalidOption(
            "the connection URL has an '@' after the host part: percent-encode the \
             characters / ? # @ : in the user name and password (e.g. / as %2F)"
                .into(),
        ));
    }
    Ok(())
}

/// `e` and its sources, as one line.
#[cfg(feature = "postgres")]
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The hint for a failure whose text (`error_chain`) shows a TLS problem.
pub(crate) fn tls_hint(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    (t.contains("certificate") || t.contains("tls handshake") || t.contains("tls error")).then_some(
        "the TLS handshake failed: the server's certificate is not trusted (give its CA with \
         tls_ca_file) or does not name the host in the URL",
    )
}

/// The target an options builder's `Debug` shows: `describe(url)`, or a
/// placeholder for a URL that [`check_url_shape`] refuses (the driver would
/// split its password into host or database).
pub(crate) fn shown_target(url: &str, describe: impl FnOnce(&str) -> String) -> String {
    match check_url_shape(url) {
        Ok(()) => describe(url),
        Err(_) => "(malformed connection URL)".to_owned(),
    }
}

/// The `store` label of a server store's metrics: its target (already
/// without the password) without the user name either, and the table or
/// key prefix that tells two stores on one server apart.
pub(crate) fn metrics_store(target: &str, what: &str, name: &str) -> String {
    let bare = match target.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => target.to_owned(),
        },
        None => target.to_owned(),
    };
    let sep = if bare.contains('?') { '&' } else { '?' };
    format!("{bare}{sep}{what}={name}")
}

/// Builds an [`Error::Timeout`].
pub(crate) fn timeout_error(
    backend: &'static str,
    target: &str,
    operation: &str,
    after: Duration,
) -> Error {
    Error::Timeout {
        backend,
        target: target.to_owned(),
        operation: operation.to_owned(),
        after,
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

        /// How long opening a connection may take in all (TCP connect, TLS
        /// handshake, authentication), and how long to wait for a free
        /// connection when all are in use, before failing with
        /// [`Error::Timeout`](crate::Error::Timeout) (default 5 s).
        pub fn connect_timeout(mut self, d: std::time::Duration) -> $t {
            self.common.connect_timeout = d;
            self
        }

        /// How long one statement or script may run on the server
        /// (default 5 s). PostgreSQL enforces it itself
        /// (`statement_timeout`); for MySQL and Redis it is the client-side
        /// deadline's default.
        pub fn statement_timeout(mut self, d: std::time::Duration) -> $t {
            self.common.statement_timeout = d;
            self
        }

        /// The client-side deadline for each request: a server, proxy or
        /// network that takes longer to answer fails the call with
        /// [`Error::Timeout`](crate::Error::Timeout), and the connection is
        /// discarded (default: `statement_timeout` plus 1 s, so 6 s).
        pub fn io_timeout(mut self, d: std::time::Duration) -> $t {
            self.common.io_timeout = Some(d);
            self
        }

        /// Connects with TLS, the server's certificate and host name
        /// verified, even to loopback (default: TLS for hosts that are not
        /// loopback, see [`allow_plaintext_to_remote`](Self::allow_plaintext_to_remote)).
        /// Needs the backend's `*-tls` feature.
        pub fn require_tls(mut self, require: bool) -> $t {
            self.common.require_tls = require;
            self
        }

        /// Trusts the CA certificates in this PEM file, instead of the
        /// system's, to verify the server (MySQL: in addition to the
        /// Mozilla roots built into the `mysql` crate); implies
        /// [`require_tls`](Self::require_tls). Needs the backend's `*-tls`
        /// feature.
        pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> $t {
            self.common.tls_ca_file = Some(path.into());
            self
        }

        /// Allows connecting without TLS to a host that is not loopback
        /// (default: refused). Credentials and every session then cross the
        /// network in the clear: only for a network you trust.
        pub fn allow_plaintext_to_remote(mut self, allow: bool) -> $t {
            self.common.allow_plaintext_to_remote = allow;
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

        /// The most live sessions one owner may have (default: no limit;
        /// at least 1). A save that would give an owner more deletes that
        /// owner's least recently modified other sessions in the same
        /// transaction (a Lua script for Redis), so that concurrent logins
        /// from several processes never leave more: the newest login wins.
        pub fn max_sessions_per_owner(mut self, n: usize) -> $t {
            self.common.max_sessions_per_owner = Some(n);
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

/// An owner read back from a column: `None` for none, or for bytes that
/// are not a valid owner (written by something else).
pub(crate) fn stored_owner(bytes: Option<&[u8]>) -> Option<crate::owner::Owner> {
    bytes.and_then(crate::owner::Owner::from_stored)
}

/// A listing entry from stored columns.
pub(crate) fn info(
    id: SessionId,
    owner: Option<crate::owner::Owner>,
    expires: i64,
    modified: i64,
    version: i64,
    size: i64,
) -> crate::owner::SessionInfo {
    crate::owner::SessionInfo::new(
        id,
        owner,
        from_millis(ms_u64(modified)),
        expires_from_millis(ms_u64(expires)),
        ms_u64(version),
        usize::try_from(size).unwrap_or(0),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_labels_hold_no_user_name() {
        assert_eq!(
            metrics_store("postgres://app@db.internal:5432/app", "table", "sessions"),
            "postgres://db.internal:5432/app?table=sessions"
        );
        assert_eq!(
            metrics_store("redis+unix://u@/run/redis.sock?db=0", "prefix", "s"),
            "redis+unix:///run/redis.sock?db=0&prefix=s"
        );
        assert_eq!(
            metrics_store("mysql://localhost/db (socket /x)", "table", "t"),
            "mysql://localhost/db (socket /x)?table=t"
        );
    }

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
    fn passwords_with_raw_reserved_characters_are_refused() {
        for bad in [
            "postgres://u:se/cret@h/db",
            "mysql://u:se?cret@h/db",
            "redis://:se#cret@h/0",
        ] {
            let err = check_url_shape(bad).expect_err(bad);
            assert!(!err.to_string().contains("cret"), "{err}");
        }
        for ok in [
            "postgres://u:se%2Fcret@h/db?x=1",
            "host=h password=x/y@z",
            "redis://h/0",
        ] {
            assert!(check_url_shape(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for local in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(Host::Tcp(local).is_local(), "{local}");
        }
        for remote in [
            "db.internal",
            "10.0.0.1",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "localhost.evil",
        ] {
            assert!(!Host::Tcp(remote).is_local(), "{remote}");
        }
        assert!(Host::Unix.is_local());
    }
}
