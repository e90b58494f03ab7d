//! `PostgresStore`: sessions in one PostgreSQL table.
//!
//! ```text
//! CREATE TABLE <table> (
//!     id       text COLLATE "C" PRIMARY KEY,
//!     data     bytea  NOT NULL,
//!     expires  bigint NOT NULL DEFAULT 0,  -- ms since the epoch, 0: none
//!     modified bigint NOT NULL,            -- ms since the epoch, server clock
//!     version  bigint NOT NULL,
//!     owner    text COLLATE "C",            -- NULL: none
//!     stamp    bigint                       -- µs, server clock; NULL: none
//! );
//! CREATE INDEX ON <table> (modified);
//! CREATE INDEX ON <table> (expires) WHERE expires <> 0;
//! CREATE INDEX ON <table> (owner, modified) WHERE owner IS NOT NULL;
//! ```
//!
//! `stamp` is the statement's time in µs (without the test offset) at the
//! last save or touch: it orders the modifications that fall in one
//! millisecond of `modified`, for the owner limit and `sessions_of`
//! (`ORDER BY modified DESC, stamp DESC NULLS LAST`; a row last written by
//! an earlier version has none and counts as the older). The owner's rows
//! come from the `(owner, modified)` index and are few: sorting them on
//! `stamp` as well needs no index.
//!
//! `setup` adds the `owner` and `stamp` columns and the owner index to a
//! table created by an earlier version (`ALTER TABLE ... ADD COLUMN IF NOT
//! EXISTS`), keeping its sessions.
//!
//! Every statement reads the time once, as `statement_timestamp()` plus the
//! test offset (`$1`), and takes the store's idle limit as `$2`; liveness
//! is decided in the statement itself.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::config::{Host as PgHost, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Row};

use super::pg_driver;
use super::pool::{Connect, Pool, Pooled};
use super::{
    Common, Host, Page, Paged, backend_error, common_setters, ms_i64, restore, timeout_error,
};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::observe::{Backend, Meters, Op};
use crate::owner::{Owner, SessionInfo};
use crate::session::{SaveMode, Session, duration_millis, expires_millis, from_millis};
use crate::store::{SessionIter, SessionStore, Touch};

const BACKEND: &str = "postgres";

/// The server's time in ms plus the test offset `$1`.
const NOW: &str = "(floor(extract(epoch from statement_timestamp()) * 1000)::bigint + $1::bigint)";

/// The server's time in µs, for the `stamp` column: the order of the
/// statements that modify rows within one millisecond.
const STAMP: &str = "floor(extract(epoch from statement_timestamp()) * 1000000)::bigint";

/// The order of an owner's sessions, the latest modified first.
const LATEST_FIRST: &str = "s.modified DESC, s.stamp DESC NULLS LAST, s.id";

/// Options for [`PostgresStore`]; start with [`PostgresStore::options`].
#[derive(Clone)]
pub struct PostgresOptions {
    common: Common,
    table: String,
}

/// Prints the server from the parsed URL, never the password.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field(
                "target",
                &super::shown_target(&self.common.url, describe_url),
            )
            .field("table", &self.table)
            .field("common", &self.common)
            .finish()
    }
}

impl PostgresOptions {
    /// The table that holds the sessions (default `sessions`); it must
    /// match `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn table(mut self, name: &str) -> PostgresOptions {
        name.clone_into(&mut self.table);
        self
    }

    common_setters!(PostgresOptions);

    /// Connects (one connection, to report a wrong URL, password or
    /// database at once) and builds the pool. Call
    /// [`setup`](SessionStore::setup) before first use.
    ///
    /// The URL is a `postgres://` URL or a `key=value` string, as
    /// `libpq` takes. A plaintext connection to a host that is not
    /// loopback is refused unless allowed with
    /// [`allow_plaintext_to_remote`](PostgresOptions::allow_plaintext_to_remote).
    pub fn open(self) -> Result<PostgresStore> {
        self.common.check()?;
        super::check_table_name(&self.table)?;
        let mut config: Config = self.common.url.parse().map_err(|e: tokio_postgres::Error| {
            backend_error(
                BACKEND,
                UNPARSED,
                format!("invalid connection URL: {e}; expected postgres://user:password@host:port/database or host=... user=... dbname=..."),
                Some(Box::new(e)),
            )
        })?;
        let target = describe(&config);
        let statement_ms = duration_millis(self.common.statement_timeout);
        config
            .tcp_user_timeout(self.common.io_timeout())
            .keepalives(true)
            .options(format!("-c statement_timeout={statement_ms}"));
        let tls = tls_for(&mut config, &self.common, &target)?;
        let connector = Connector {
            config,
            tls,
            target: target.clone(),
            connect_timeout: self.common.connect_timeout,
        };
        let first = connector.connect()?;
        let pool = Pool::new(
            connector,
            usize::try_from(self.common.pool_size).unwrap_or(usize::MAX),
            self.common.connect_timeout,
            BACKEND,
            &target,
        );
        pool.put(first);
        Ok(PostgresStore {
            meters: Meters::new(
                Backend::Postgres,
                &super::metrics_store(&target, "table", &self.table),
            ),
            sql: Sql::new(&self.table),
            lock_key: lock_key(&self.table),
            pool,
            target,
            table: self.table,
            common: self.common,
        })
    }
}

/// The target shown for a connection string the driver cannot parse.
const UNPARSED: &str = "(unparsable connection string)";

/// `postgres://user@host:port/db` from the parsed configuration: never the
/// password, whatever form the string had.
fn describe(config: &Config) -> String {
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                PgHost::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
                PgHost::Tcp(h) => format!("{h}:{port}"),
                #[cfg(unix)]
                PgHost::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// [`describe`] for a string, or [`UNPARSED`].
/// The server of `url` as messages show it, never the password.
#[cfg(feature = "tower-sessions")]
pub(crate) fn shown(url: &str) -> String {
    super::shown_target(url, describe_url)
}

fn describe_url(url: &str) -> String {
    url.parse::<Config>()
        .map_or_else(|_| UNPARSED.to_owned(), |c| describe(&c))
}

/// How connections are encrypted.
#[derive(Clone)]
enum Tls {
    /// Plaintext: loopback, `sslmode=disable`, or allowed by name.
    Off,
    /// rustls, the server's certificate and host name verified.
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Decides TLS for `config`: TLS when `sslmode=require`, when asked by
/// option, or (for `sslmode=prefer`, the default) when a host is not
/// loopback; plaintext otherwise, refused to a remote host unless allowed.
/// `prefer` never falls back to plaintext silently where it matters: to a
/// remote host it means `require`.
fn tls_for(config: &mut Config, common: &Common, target: &str) -> Result<Tls> {
    let mut hosts: Vec<String> = Vec::new();
    let mut remote = false;
    for h in config.get_hosts() {
        let host = match h {
            PgHost::Tcp(h) => Host::Tcp(h),
            #[cfg(unix)]
            PgHost::Unix(_) => Host::Unix,
        };
        remote |= !host.is_local();
        if let PgHost::Tcp(h) = h {
            hosts.push(h.clone());
        }
    }
    for a in config.get_hostaddrs() {
        remote |= !Host::Tcp(&a.to_string()).is_local();
    }
    let tls = match config.get_ssl_mode() {
        SslMode::Disable => {
            if common.tls_asked() {
                return Err(Error::InvalidOption(
                    "sslmode=disable contradicts require_tls / tls_ca_file".into(),
                ));
            }
            false
        }
        SslMode::Require => true,
        _ => common.tls_asked() || (remote && !common.allow_plaintext_to_remote),
    };
    if !tls {
        for h in &hosts {
            common.check_plaintext(
                BACKEND,
                target,
                Host::Tcp(h),
                "postgres-tls",
                "sslmode=require",
            )?;
        }
        for a in config.get_hostaddrs() {
            let a = a.to_string();
            common.check_plaintext(
                BACKEND,
                target,
                Host::Tcp(&a),
                "postgres-tls",
                "sslmode=require",
            )?;
        }
        config.ssl_mode(SslMode::Disable);
        return Ok(Tls::Off);
    }
    #[cfg(feature = "postgres-tls")]
    {
        config.ssl_mode(SslMode::Require);
        let rustls = super::rustls_config(common.tls_ca_file.as_deref())
            .map_err(|m| backend_error(BACKEND, target, m, None))?;
        Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            rustls,
        )))
    }
    #[cfg(not(feature = "postgres-tls"))]
    {
        Err(backend_error(
            BACKEND,
            target,
            "TLS is needed (sslmode=require, require_tls, tls_ca_file, or a host that is not \
             loopback) but this build has no TLS support: enable the `postgres-tls` feature, \
             or, for a remote host on a network you trust, call allow_plaintext_to_remote(true)",
            None,
        ))
    }
}

/// One connection: a tokio-postgres client whose socket the process's
/// driver thread runs (`pg_driver`), with a deadline on every call.
struct PgConn {
    client: Client,
    /// Set when a call timed out or the connection failed: it is closed
    /// instead of returned to the pool.
    broken: Cell<bool>,
}

/// Why a call failed.
enum Failure {
    Timeout(Duration),
    Pg(tokio_postgres::Error),
    /// The driver thread could not be started.
    Driver(String),
}

impl PgConn {
    /// Runs `fut` (a call on `self.client`) with the deadline `io`, on
    /// this thread (in a runtime or not: see `pg_driver`).
    fn block<T>(
        &self,
        io: Duration,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> std::result::Result<T, Failure> {
        let handle = pg_driver::driver().map_err(Failure::Driver)?;
        match pg_driver::wait_for(&handle, io, fut) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => {
                if e.as_db_error().is_none() {
                    self.broken.set(true);
                }
                Err(Failure::Pg(e))
            }
            None => {
                // The request is in flight: the connection's state is unknown.
                self.broken.set(true);
                Err(Failure::Timeout(io))
            }
        }
    }
}

/// Opens [`PgConn`]s.
struct Connector {
    config: Config,
    tls: Tls,
    target: String,
    connect_timeout: Duration,
}

impl Connect for Connector {
    type Conn = PgConn;

    fn connect(&self) -> Result<PgConn> {
        let handle =
            pg_driver::driver().map_err(|m| backend_error(BACKEND, &self.target, m, None))?;
        let (config, tls, limit) = (self.config.clone(), self.tls.clone(), self.connect_timeout);
        // The connection's socket lives on the driver: connect there.
        let connecting = handle.spawn(async move {
            tokio::time::timeout(limit, async move {
                match tls {
                    Tls::Off => {
                        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                        tokio::spawn(connection);
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                    #[cfg(feature = "postgres-tls")]
                    Tls::Rustls(tls) => {
                        let (client, connection) = config.connect(tls).await?;
                        tokio::spawn(connection);
                        Ok(client)
                    }
                }
            })
            .await
        });
        match pg_driver::wait(connecting) {
            Ok(Ok(Ok(client))) => Ok(PgConn {
                client,
                broken: Cell::new(false),
            }),
            Ok(Ok(Err(e))) => Err(pg_error(&self.target, "could not connect", e)),
            Ok(Err(_)) => Err(timeout_error(
                BACKEND,
                &self.target,
                "connecting (TCP, TLS and authentication)",
                self.connect_timeout,
            )),
            Err(e) => Err(backend_error(
                BACKEND,
                &self.target,
                format!("the connecting task failed: {e}"),
                None,
            )),
        }
    }

    fn is_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken.get() || conn.client.is_closed()
    }
}

/// A [`SessionStore`] in a PostgreSQL table, shared by any number of
/// threads, processes and hosts (feature `postgres`).
///
/// ```no_run
/// use sessionlog::{PostgresStore, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let store = PostgresStore::options("postgres://app:secret@db.internal/app")
///     .table("web_sessions")
///     .pool_size(16)
///     .open()?;
/// store.setup()?;
/// # Ok(()) }
/// ```
pub struct PostgresStore {
    pool: Pool<Connector>,
    target: String,
    table: String,
    sql: Sql,
    lock_key: i64,
    common: Common,
    /// What the store reports: call latency, timeouts, errors.
    meters: Meters,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens a store at `url` (`postgres://user:password@host:port/db`)
    /// with default options: table `sessions`, 10 connections.
    pub fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::options(url).open()
    }

    /// Options for a store at `url`, to change before [`PostgresOptions::open`]
    /// (the same shape as every backend's `options()`).
    pub fn options(url: &str) -> PostgresOptions {
        PostgresOptions {
            common: Common::new(url),
            table: "sessions".to_owned(),
        }
    }

    fn conn(&self) -> Result<Pooled<'_, Connector>> {
        self.pool.get()
    }

    fn fail(&self, what: &str, f: Failure) -> Error {
        match f {
            Failure::Timeout(after) => timeout_error(BACKEND, &self.target, what, after),
            Failure::Pg(e) => pg_error(&self.target, &format!("{what} failed"), e),
            Failure::Driver(m) => backend_error(BACKEND, &self.target, m, None),
        }
    }

    fn err(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        let what = format!("{what} failed");
        move |e| pg_error(&self.target, &what, e)
    }

    /// Runs one statement on a pooled connection, with the io deadline.
    fn query(
        &self,
        conn: &Pooled<'_, Connector>,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        conn.block(
            self.common.io_timeout(),
            conn.client.query_typed(sql, params),
        )
        .map_err(|f| self.fail(what, f))
    }

    /// Runs a statement without parameters (`BEGIN`, `COMMIT`).
    fn simple(&self, conn: &Pooled<'_, Connector>, what: &str, sql: &str) -> Result<()> {
        conn.block(self.common.io_timeout(), conn.client.batch_execute(sql))
            .map_err(|f| self.fail(what, f))
    }

    /// Deletes `owner`'s sessions but `keep`, returning how many were live.
    fn delete_of(&self, what: &str, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let (off, idle) = self.base();
        let owner = owner.as_str();
        let keep = keep.map(SessionId::as_str);
        let conn = self.conn()?;
        let rows = self.query(
            &conn,
            what,
            &self.sql.delete_of,
            &[
                (&off, Type::INT8),
                (&idle, Type::INT8),
                (&owner, Type::TEXT),
                (&keep, Type::TEXT),
            ],
        )?;
        let mut n = 0;
        for row in rows {
            if row.try_get::<_, bool>(0).map_err(self.err(what))? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn base(&self) -> (i64, i64) {
        (self.common.clock_offset.millis(), self.common.idle_ms())
    }

    fn save_as(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.common.check_size(session)?;
        let (off, idle) = self.base();
        let id = session.id.as_str();
        let data = session.data.as_slice();
        let expires = ms_i64(expires_millis(session.expires));
        let owner = session.owner.as_ref().map(Owner::as_str);
        let conn = self.conn()?;
        let args: [(&(dyn ToSql + Sync), Type); 6] = [
            (&off, Type::INT8),
            (&idle, Type::INT8),
            (&id, Type::TEXT),
            (&data, Type::BYTEA),
            (&expires, Type::INT8),
            (&owner, Type::TEXT),
        ];
        let expected = ms_i64(session.version());
        let capped = match (owner, self.common.others_kept()) {
            (Some(owner), Some(kept)) => Some((owner, kept)),
            _ => None,
        };
        if capped.is_some() {
            // The save and the trim in one transaction, serialised per
            // owner by an advisory lock: each sees the other's rows.
            self.simple(&conn, "save", "BEGIN")?;
        }
        let saved = (|| {
            if let Some((owner, _)) = capped {
                // First, so that every capped save of this owner waits here
                // before it holds any row lock.
                let key = lock_key(&format!("{}\0{owner}", self.table));
                self.query(
                    &conn,
                    "save",
                    "SELECT pg_advisory_xact_lock($1::bigint)",
                    &[(&key, Type::INT8)],
                )?;
            }
            let rows = match (mode, session.version()) {
                (SaveMode::Overwrite, _) => self.query(&conn, "save", &self.sql.upsert, &args)?,
                (SaveMode::IfUnchanged, 0) => self.query(&conn, "save", &self.sql.create, &args)?,
                (SaveMode::IfUnchanged, _) => {
                    let [a, b, c, d, e, f] = args;
                    self.query(
                        &conn,
                        "save",
                        &self.sql.update,
                        &[a, b, c, d, e, f, (&expected, Type::INT8)],
                    )?
                }
            };
            if let (Some((owner, kept)), Some(_)) = (capped, rows.first()) {
                self.query(
                    &conn,
                    "save",
                    &self.sql.trim,
                    &[
                        (&off, Type::INT8),
                        (&idle, Type::INT8),
                        (&owner, Type::TEXT),
                        (&id, Type::TEXT),
                        (&kept, Type::INT8),
                    ],
                )?;
            }
            Ok(rows)
        })();
        let rows = match (capped, saved) {
            (None, r) => r?,
            (Some(_), Ok(rows)) => {
                self.simple(&conn, "save", "COMMIT")?;
                rows
            }
            (Some(_), Err(e)) => {
                // A connection left inside a transaction is not reused.
                if self.simple(&conn, "save", "ROLLBACK").is_err() {
                    conn.broken.set(true);
                }
                return Err(e);
            }
        };
        match rows.into_iter().next() {
            Some(row) => {
                let modified: i64 = row.try_get(0).map_err(self.err("save"))?;
                let version: i64 = row.try_get(1).map_err(self.err("save"))?;
                session.mark_saved(from_millis(super::ms_u64(modified)), super::ms_u64(version));
                Ok(())
            }
            None => {
                let found = self
                    .query(&conn, "save", &self.sql.version, &by_id(&off, &idle, &id))?
                    .into_iter()
                    .next()
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()
                    .map_err(self.err("save"))?
                    .map_or(0, super::ms_u64);
                Err(Error::Conflict {
                    id: session.id.clone(),
                    expected: session.version(),
                    found,
                })
            }
        }
    }

    fn page(&self, after: Option<&SessionId>) -> Result<Page> {
        let (off, idle) = self.base();
        let after = after.map_or("", SessionId::as_str);
        let limit = i64::try_from(super::PAGE_SIZE).unwrap_or(100);
        let conn = self.conn()?;
        let rows = self.query(
            &conn,
            "listing sessions",
            &self.sql.page,
            &[
                (&off, Type::INT8),
                (&idle, Type::INT8),
                (&after, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )?;
        drop(conn);
        let more = rows.len() == super::PAGE_SIZE;
        let get = self.err("listing sessions");
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let id: &str = row.try_get(0).map_err(&get)?;
            let id = SessionId::new(id)?;
            let mut s = restore(
                id,
                row.try_get(1).map_err(&get)?,
                row.try_get(2).map_err(&get)?,
                row.try_get(3).map_err(&get)?,
                row.try_get(4).map_err(&get)?,
            );
            s.owner = super::stored_owner(
                row.try_get::<_, Option<&str>>(5)
                    .map_err(&get)?
                    .map(str::as_bytes),
            );
            sessions.push(s);
        }
        let last = if more {
            sessions.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok((sessions, last))
    }

    /// One statement by id (`$1` offset, `$2` idle limit, `$3` id).
    /// Refreshes `modified`, and sets the deadline to `expires` (ms, 0:
    /// none) if given; false if no live session has this id.
    fn touch_as(&self, id: &SessionId, expires: Option<i64>) -> Result<bool> {
        let (off, idle) = self.base();
        let id = id.as_str();
        let conn = self.conn()?;
        let rows = self.query(
            &conn,
            "touch",
            &self.sql.touch,
            &[
                (&off, Type::INT8),
                (&idle, Type::INT8),
                (&id, Type::TEXT),
                (&expires, Type::INT8),
            ],
        )?;
        Ok(!rows.is_empty())
    }

    fn by_id(&self, what: &str, sql: &str, id: &SessionId) -> Result<Option<Row>> {
        let (off, idle) = self.base();
        let conn = self.conn()?;
        let rows = self.query(&conn, what, sql, &by_id(&off, &idle, &id.as_str()))?;
        Ok(rows.into_iter().next())
    }
}

impl SessionStore for PostgresStore {
    fn setup(&self) -> Result<()> {
        self.meters.call(Op::Setup, || {
            let conn = self.conn()?;
            // One simple query is one implicit transaction: the advisory lock
            // serialises concurrent setups (CREATE ... IF NOT EXISTS alone can
            // race on the catalog) and is released at its end.
            let batch = format!(
                "SELECT pg_advisory_xact_lock({}); {}",
                self.lock_key, self.sql.setup
            );
            conn.block(self.common.io_timeout(), conn.client.batch_execute(&batch))
                .map_err(|f| self.fail("setup (creating the table needs the CREATE privilege)", f))
        })
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.meters.call(Op::Load, || {
            let Some(row) = self.by_id("load", &self.sql.load, id)? else {
                return Ok(None);
            };
            let get = self.err("load");
            let mut s = restore(
                id.clone(),
                row.try_get(0).map_err(&get)?,
                row.try_get(1).map_err(&get)?,
                row.try_get(2).map_err(&get)?,
                row.try_get(3).map_err(&get)?,
            );
            s.owner = super::stored_owner(
                row.try_get::<_, Option<&str>>(4)
                    .map_err(&get)?
                    .map(str::as_bytes),
            );
            Ok(Some(s))
        })
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.meters.call(Op::Save, || self.save_as(session, mode))
    }

    /// One `UPDATE` of `modified` (and the deadline): the data stay on
    /// the server and the version stays, so a conditional save loaded
    /// before the touch still succeeds.
    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        let expires = match touch {
            Touch::Idle => None,
            Touch::Until(expires) => Some(ms_i64(expires_millis(expires))),
        };
        self.meters.call(Op::Touch, || self.touch_as(id, expires))
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Delete, || {
            match self.by_id("delete", &self.sql.delete, id)? {
                Some(row) => row.try_get(0).map_err(self.err("delete")),
                None => Ok(false),
            }
        })
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Has, || {
            Ok(self.by_id("lookup", &self.sql.version, id)?.is_some())
        })
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(Paged::new(move |after| self.page(after))))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.meters.call(Op::Expire, || {
            let (off, idle) = self.base();
            let limit = i64::try_from(duration_millis(max_idle)).unwrap_or(i64::MAX);
            let conn = self.conn()?;
            let mut total = 0u64;
            loop {
                let n = conn
                    .block(
                        self.common.io_timeout(),
                        conn.client.execute_typed(
                            &self.sql.delete_old,
                            &[
                                (&off, Type::INT8),
                                (&idle, Type::INT8),
                                (&limit, Type::INT8),
                            ],
                        ),
                    )
                    .map_err(|f| self.fail("deleting old sessions", f))?;
                total += n;
                if n < super::SQL_DELETE_BATCH {
                    return Ok(usize::try_from(total).unwrap_or(usize::MAX));
                }
            }
        })
    }

    /// One query on the `(owner, modified)` index.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        self.meters.call(Op::Owner, || {
            let (off, idle) = self.base();
            let name = owner.as_str();
            let conn = self.conn()?;
            let rows = self.query(
                &conn,
                "listing an owner's sessions",
                &self.sql.sessions_of,
                &[(&off, Type::INT8), (&idle, Type::INT8), (&name, Type::TEXT)],
            )?;
            drop(conn);
            let get = self.err("listing an owner's sessions");
            let mut list = Vec::with_capacity(rows.len());
            for row in rows {
                let id: &str = row.try_get(0).map_err(&get)?;
                list.push(super::info(
                    SessionId::new(id)?,
                    Some(owner.clone()),
                    row.try_get(1).map_err(&get)?,
                    row.try_get(2).map_err(&get)?,
                    row.try_get(3).map_err(&get)?,
                    row.try_get(4).map_err(&get)?,
                ));
            }
            Ok(list)
        })
    }

    /// One `DELETE` of the owner's rows but `keep` (expired ones too);
    /// counts the live ones.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        self.meters.call(Op::Owner, || {
            self.delete_of("deleting an owner's sessions", owner, keep)
        })
    }

    /// The same `DELETE`: the rows are gone from the table when it returns,
    /// but PostgreSQL keeps their bytes in dead tuples until `VACUUM`, in
    /// its write-ahead log, and in replicas and backups (SERVERS.md).
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        self.meters.call(Op::Owner, || {
            self.delete_of("erasing an owner's sessions", owner, None)
        })
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        true
    }
}

/// The store's statements, with the validated table name formatted in.
struct Sql {
    setup: String,
    load: String,
    version: String,
    upsert: String,
    create: String,
    update: String,
    touch: String,
    delete: String,
    page: String,
    delete_old: String,
    sessions_of: String,
    delete_of: String,
    trim: String,
}

impl Sql {
    fn new(t: &str) -> Sql {
        let live = |s: &str| {
            format!(
                "(({s}.expires = 0 OR {s}.expires > {NOW}) AND {s}.modified > {NOW} - $2::bigint)"
            )
        };
        let live_s = live("s");
        // An existing row is replaced as new (version 1) when it expired.
        let old_live = "((s.expires = 0 OR s.expires > EXCLUDED.modified) \
                        AND s.modified > EXCLUDED.modified - $2::bigint)";
        let insert = format!(
            "INSERT INTO {t} AS s (id, data, expires, modified, version, owner, stamp) \
             VALUES ($3, $4, $5::bigint, {NOW}, 1, $6::text, {STAMP}) \
             ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires, \
             modified = EXCLUDED.modified, owner = EXCLUDED.owner, stamp = EXCLUDED.stamp"
        );
        let m_idx = index_name(t, "modified");
        let e_idx = index_name(t, "expires");
        let o_idx = index_name(t, "owner");
        Sql {
            setup: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id text COLLATE \"C\" PRIMARY KEY, \
                 data bytea NOT NULL, \
                 expires bigint NOT NULL DEFAULT 0, \
                 modified bigint NOT NULL, \
                 version bigint NOT NULL); \
                 CREATE INDEX IF NOT EXISTS {m_idx} ON {t} (modified); \
                 CREATE INDEX IF NOT EXISTS {e_idx} ON {t} (expires) WHERE expires <> 0; \
                 ALTER TABLE {t} ADD COLUMN IF NOT EXISTS owner text COLLATE \"C\"; \
                 ALTER TABLE {t} ADD COLUMN IF NOT EXISTS stamp bigint; \
                 CREATE INDEX IF NOT EXISTS {o_idx} ON {t} (owner, modified) \
                 WHERE owner IS NOT NULL;"
            ),
            load: format!(
                "SELECT data, expires, modified, version, owner FROM {t} AS s \
                 WHERE s.id = $3 AND {live_s}"
            ),
            version: format!("SELECT version FROM {t} AS s WHERE s.id = $3 AND {live_s}"),
            upsert: format!(
                "{insert}, version = CASE WHEN {old_live} THEN s.version + 1 ELSE 1 END \
                 RETURNING modified, version"
            ),
            create: format!(
                "{insert}, version = 1 WHERE NOT {old_live} RETURNING modified, version"
            ),
            update: format!(
                "UPDATE {t} AS s SET data = $4, expires = $5::bigint, modified = {NOW}, \
                 version = s.version + 1, owner = $6::text, stamp = {STAMP} \
                 WHERE s.id = $3 AND s.version = $7::bigint AND {live_s} \
                 RETURNING modified, version"
            ),
            // $4: the new deadline, or NULL to keep it
            touch: format!(
                "UPDATE {t} AS s SET modified = {NOW}, stamp = {STAMP}, \
                 expires = COALESCE($4::bigint, s.expires) \
                 WHERE s.id = $3 AND {live_s} RETURNING 1"
            ),
            delete: format!("DELETE FROM {t} AS s WHERE s.id = $3 RETURNING {live_s}"),
            page: format!(
                "SELECT id, data, expires, modified, version, owner FROM {t} AS s \
                 WHERE s.id > $3 AND {live_s} ORDER BY s.id LIMIT $4"
            ),
            sessions_of: format!(
                "SELECT id, expires, modified, version, length(data)::bigint FROM {t} AS s \
                 WHERE s.owner = $3 AND {live_s} ORDER BY {LATEST_FIRST}"
            ),
            // $4: the id to keep, or NULL
            delete_of: format!(
                "DELETE FROM {t} AS s WHERE s.owner = $3 AND s.id IS DISTINCT FROM $4::text \
                 RETURNING {live_s}"
            ),
            // $3 owner, $4 the id just saved, $5 how many others stay
            trim: format!(
                "DELETE FROM {t} WHERE id IN (SELECT s.id FROM {t} AS s \
                 WHERE s.owner = $3 AND s.id <> $4 AND {live_s} \
                 ORDER BY {LATEST_FIRST} OFFSET $5::bigint)"
            ),
            delete_old: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
                 WHERE modified <= {NOW} - LEAST($3::bigint, $2::bigint) \
                 OR (expires <> 0 AND expires <= {NOW}) LIMIT {})",
                super::SQL_DELETE_BATCH
            ),
        }
    }
}

/// Parameters `$1` (clock offset), `$2` (idle limit), `$3` (id).
fn by_id<'a>(off: &'a i64, idle: &'a i64, id: &'a &'a str) -> [(&'a (dyn ToSql + Sync), Type); 3] {
    [(off, Type::INT8), (idle, Type::INT8), (id, Type::TEXT)]
}

/// An index name unique to `table` within 63 bytes (PostgreSQL truncates
/// longer identifiers, which could make two names collide).
fn index_name(table: &str, what: &str) -> String {
    let name = format!("{table}_{what}_idx");
    if name.len() <= 63 {
        return name;
    }
    let head: String = table.chars().take(30).collect();
    format!("{head}_{:016x}_{what}", fnv1a(table.as_bytes()))
}

/// The advisory lock that serialises `setup` for one table.
fn lock_key(table: &str) -> i64 {
    i64::from_le_bytes(fnv1a(table.as_bytes()).to_le_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Turns a client error into an [`Error::Backend`] that says what to do.
fn pg_error(target: &str, what: &str, e: tokio_postgres::Error) -> Error {
    let hint = match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "authentication failed: check the user and password in the URL"
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "the database does not exist: create it (createdb NAME) or fix the URL"
        }
        Some(c) if *c == SqlState::UNDEFINED_TABLE => "the table is missing: call setup() first",
        Some(c) if *c == SqlState::QUERY_CANCELED => {
            "the statement was cancelled (statement_timeout): the server is overloaded or a lock is held"
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "permission denied: grant the user rights on the table"
        }
        Some(_) => "the server rejected the statement",
        None if e.is_closed() || e.as_db_error().is_none() => {
            "could not talk to the server: check that PostgreSQL is running and accepts TCP connections at this address"
        }
        None => "unexpected error",
    };
    let message = match e.as_db_error() {
        Some(db) => format!("{what}: {hint} ({}: {})", db.code().code(), db.message()),
        None => {
            let text = super::error_chain(&e);
            let hint = super::tls_hint(&text).unwrap_or(hint);
            format!("{what}: {hint} ({text})")
        }
    };
    backend_error(BACKEND, target, message, Some(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_parsed_config_without_the_password() {
        for (url, want) in [
            (
                "postgres://u:pw@db.internal:6000/app",
                "postgres://u@db.internal:6000/app",
            ),
            (
                "host=db.internal user=u password=pw dbname=app",
                "postgres://u@db.internal:5432/app",
            ),
            (
                "host=h1,h2 port=1,2 user=u password='p w' dbname=app",
                "postgres://u@h1:1,h2:2/app",
            ),
            (
                "postgres://u@[::1]/app?password=pw",
                "postgres://u@[::1]:5432/app",
            ),
            ("postgres://u:p%2Fw@h/app", "postgres://u@h:5432/app"),
        ] {
            assert_eq!(describe_url(url), want, "{url}");
        }
        assert_eq!(describe_url("host=h password=pw bogus=1"), UNPARSED);
    }

    #[test]
    fn long_table_names_get_distinct_short_index_names() {
        let t = "t".repeat(63);
        let (m, e) = (index_name(&t, "modified"), index_name(&t, "expires"));
        assert!(m.len() <= 63 && e.len() <= 63);
        assert_ne!(m, e);
        assert_eq!(index_name("sessions", "modified"), "sessions_modified_idx");
    }
}
