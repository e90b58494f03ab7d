//! `PostgresStore`: sessions in one PostgreSQL table.
//!
//! ```text
//! CREATE TABLE <table> (
//!     id       text COLLATE "C" PRIMARY KEY,
//!     data     bytea  NOT NULL,
//!     expires  bigint NOT NULL DEFAULT 0,  -- ms since the epoch, 0: none
//!     modified bigint NOT NULL,            -- ms since the epoch, server clock
//!     version  bigint NOT NULL
//! );
//! CREATE INDEX ON <table> (modified);
//! CREATE INDEX ON <table> (expires) WHERE expires <> 0;
//! ```
//!
//! Every statement reads the time once, as `statement_timestamp()` plus the
//! test offset (`$1`), and takes the store's idle limit as `$2`; liveness
//! is decided in the statement itself.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Config, NoTls, Row};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::{Common, Page, Paged, backend_error, common_setters, ms_i64, restore};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Session, duration_millis, expires_millis, from_millis};
use crate::store::{SessionIter, SessionStore};

const BACKEND: &str = "postgres";

/// The server's time in ms plus the test offset `$1`.
const NOW: &str = "(floor(extract(epoch from statement_timestamp()) * 1000)::bigint + $1::bigint)";

type Manager = PostgresConnectionManager<NoTls>;

/// Options for [`PostgresStore`]; start with [`PostgresStore::builder`].
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    common: Common,
    table: String,
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
    pub fn open(self) -> Result<PostgresStore> {
        self.common.check()?;
        super::check_table_name(&self.table)?;
        let target = super::redact_url(&self.common.url);
        let mut config: Config = self.common.url.parse().map_err(|e: postgres::Error| {
            backend_error(
                BACKEND,
                &target,
                format!("invalid connection URL: {e}; expected postgres://user:password@host:port/database"),
                Some(Box::new(e)),
            )
        })?;
        let statement_ms = duration_millis(self.common.statement_timeout);
        config
            .connect_timeout(self.common.connect_timeout)
            .tcp_user_timeout(self.common.statement_timeout)
            .keepalives(true)
            .options(&format!("-c statement_timeout={statement_ms}"));
        let manager = Manager::new(config, NoTls);
        let first = r2d2::ManageConnection::connect(&manager)
            .map_err(|e| pg_error(&target, "could not connect", e))?;
        drop(first);
        // No test query on every checkout (a round trip per operation): a
        // connection that broke is dropped by the pool when it is returned,
        // so the call that met the failure reports it and the next one
        // reconnects.
        let pool = Pool::builder()
            .max_size(self.common.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(self.common.connect_timeout)
            .build_unchecked(manager);
        Ok(PostgresStore {
            sql: Sql::new(&self.table),
            pool,
            target,
            table: self.table,
            common: self.common,
        })
    }
}

/// A [`SessionStore`] in a PostgreSQL table, shared by any number of
/// threads, processes and hosts (feature `postgres`).
///
/// ```no_run
/// use sessionlog::{PostgresStore, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let store = PostgresStore::builder("postgres://app:secret@db.internal/app")
///     .table("web_sessions")
///     .pool_size(16)
///     .open()?;
/// store.setup()?;
/// # Ok(()) }
/// ```
pub struct PostgresStore {
    pool: Pool<Manager>,
    target: String,
    table: String,
    sql: Sql,
    common: Common,
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
        PostgresStore::builder(url).open()
    }

    /// Options for a store at `url`, to change before [`PostgresOptions::open`].
    pub fn builder(url: &str) -> PostgresOptions {
        PostgresOptions {
            common: Common::new(url),
            table: "sessions".to_owned(),
        }
    }

    fn conn(&self) -> Result<PooledConnection<Manager>> {
        super::pooled(
            &self.pool,
            BACKEND,
            "PostgreSQL",
            &self.target,
            self.common.connect_timeout,
        )
    }

    fn err(&self, what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
        let what = what.to_owned();
        move |e| pg_error(&self.target, &what, e)
    }

    fn base(&self) -> (i64, i64) {
        (self.common.clock_offset.millis(), self.common.idle_ms())
    }

    fn save(&self, session: &mut Session, expected: Option<u64>) -> Result<()> {
        self.common.check_size(session)?;
        let (off, idle) = self.base();
        let id = session.id.as_str();
        let data = session.data.as_slice();
        let expires = ms_i64(expires_millis(session.expires));
        let mut conn = self.conn()?;
        let args: [(&(dyn ToSql + Sync), Type); 5] = [
            (&off, Type::INT8),
            (&idle, Type::INT8),
            (&id, Type::TEXT),
            (&data, Type::BYTEA),
            (&expires, Type::INT8),
        ];
        let row = match expected {
            None => first(conn.query_typed(&self.sql.upsert, &args)),
            Some(0) => first(conn.query_typed(&self.sql.create, &args)),
            Some(v) => {
                let v = ms_i64(v);
                let [a, b, c, d, e] = args;
                first(conn.query_typed(&self.sql.update, &[a, b, c, d, e, (&v, Type::INT8)]))
            }
        }
        .map_err(self.err("save failed"))?;
        match row {
            Some(row) => {
                let modified: i64 = row.try_get(0).map_err(self.err("save failed"))?;
                let version: i64 = row.try_get(1).map_err(self.err("save failed"))?;
                session.mark_saved(from_millis(super::ms_u64(modified)), super::ms_u64(version));
                Ok(())
            }
            None => {
                let found = first(conn.query_typed(&self.sql.version, &by_id(&off, &idle, &id)))
                    .map_err(self.err("save failed"))?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()
                    .map_err(self.err("save failed"))?
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
        let rows = self
            .conn()?
            .query_typed(
                &self.sql.page,
                &[
                    (&off, Type::INT8),
                    (&idle, Type::INT8),
                    (&after, Type::TEXT),
                    (&limit, Type::INT8),
                ],
            )
            .map_err(self.err("listing sessions failed"))?;
        let more = rows.len() == super::PAGE_SIZE;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let id: &str = row
                .try_get(0)
                .map_err(self.err("listing sessions failed"))?;
            let id = SessionId::new(id)?;
            sessions.push(restore(
                id,
                row.try_get(1)
                    .map_err(self.err("listing sessions failed"))?,
                row.try_get(2)
                    .map_err(self.err("listing sessions failed"))?,
                row.try_get(3)
                    .map_err(self.err("listing sessions failed"))?,
                row.try_get(4)
                    .map_err(self.err("listing sessions failed"))?,
            ));
        }
        let last = if more {
            sessions.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok((sessions, last))
    }
}

impl SessionStore for PostgresStore {
    fn setup(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(self.err("setup failed"))?;
        // Serialises concurrent setups: CREATE ... IF NOT EXISTS alone can
        // race on the catalog.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(&self.table)],
        )
        .map_err(self.err("setup failed"))?;
        tx.batch_execute(&self.sql.setup)
            .map_err(self.err("setup failed (creating the table needs the CREATE privilege)"))?;
        tx.commit().map_err(self.err("setup failed"))
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let (off, idle) = self.base();
        let row = first(
            self.conn()?
                .query_typed(&self.sql.load, &by_id(&off, &idle, &id.as_str())),
        )
        .map_err(self.err("load failed"))?;
        let Some(row) = row else { return Ok(None) };
        let get = self.err("load failed");
        Ok(Some(restore(
            id.clone(),
            row.try_get(0).map_err(&get)?,
            row.try_get(1).map_err(&get)?,
            row.try_get(2).map_err(&get)?,
            row.try_get(3).map_err(&get)?,
        )))
    }

    fn save_session(&self, session: &mut Session) -> Result<()> {
        self.save(session, None)
    }

    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        let v = session.version();
        self.save(session, Some(v))
    }

    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        let (off, idle) = self.base();
        let rows = self
            .conn()?
            .query_typed(&self.sql.touch, &by_id(&off, &idle, &id.as_str()))
            .map_err(self.err("touch failed"))?;
        Ok(!rows.is_empty())
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        let (off, idle) = self.base();
        let row = first(
            self.conn()?
                .query_typed(&self.sql.delete, &by_id(&off, &idle, &id.as_str())),
        )
        .map_err(self.err("delete failed"))?;
        match row {
            Some(row) => row.try_get(0).map_err(self.err("delete failed")),
            None => Ok(false),
        }
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        let (off, idle) = self.base();
        let row = first(
            self.conn()?
                .query_typed(&self.sql.version, &by_id(&off, &idle, &id.as_str())),
        )
        .map_err(self.err("lookup failed"))?;
        Ok(row.is_some())
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(Paged::new(move |after| self.page(after))))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        let (off, idle) = self.base();
        let limit = i64::try_from(duration_millis(max_idle)).unwrap_or(i64::MAX);
        let n = self
            .conn()?
            .execute(&self.sql.delete_old, &[&off, &idle, &limit])
            .map_err(self.err("deleting old sessions failed"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
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
            "INSERT INTO {t} AS s (id, data, expires, modified, version) \
             VALUES ($3, $4, $5::bigint, {NOW}, 1) \
             ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires, \
             modified = EXCLUDED.modified"
        );
        let m_idx = index_name(t, "modified");
        let e_idx = index_name(t, "expires");
        Sql {
            setup: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id text COLLATE \"C\" PRIMARY KEY, \
                 data bytea NOT NULL, \
                 expires bigint NOT NULL DEFAULT 0, \
                 modified bigint NOT NULL, \
                 version bigint NOT NULL); \
                 CREATE INDEX IF NOT EXISTS {m_idx} ON {t} (modified); \
                 CREATE INDEX IF NOT EXISTS {e_idx} ON {t} (expires) WHERE expires <> 0;"
            ),
            load: format!(
                "SELECT data, expires, modified, version FROM {t} AS s WHERE s.id = $3 AND {live_s}"
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
                 version = s.version + 1 \
                 WHERE s.id = $3 AND s.version = $6::bigint AND {live_s} \
                 RETURNING modified, version"
            ),
            touch: format!(
                "UPDATE {t} AS s SET modified = {NOW} WHERE s.id = $3 AND {live_s} RETURNING 1"
            ),
            delete: format!("DELETE FROM {t} AS s WHERE s.id = $3 RETURNING {live_s}"),
            page: format!(
                "SELECT id, data, expires, modified, version FROM {t} AS s \
                 WHERE s.id > $3 AND {live_s} ORDER BY s.id LIMIT $4"
            ),
            delete_old: format!(
                "DELETE FROM {t} WHERE modified <= {NOW} - LEAST($3::bigint, $2::bigint) \
                 OR (expires <> 0 AND expires <= {NOW})"
            ),
        }
    }
}

/// The first row of a result, if any. Statements run with `query_typed`:
/// the parameter types are given, so a statement costs one round trip
/// (no separate prepare).
fn first(
    rows: std::result::Result<Vec<Row>, postgres::Error>,
) -> std::result::Result<Option<Row>, postgres::Error> {
    rows.map(|r| r.into_iter().next())
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
fn pg_error(target: &str, what: &str, e: postgres::Error) -> Error {
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
        None => format!("{what}: {hint} ({e})"),
    };
    backend_error(BACKEND, target, message, Some(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_names_get_distinct_short_index_names() {
        let t = "t".repeat(63);
        let (m, e) = (index_name(&t, "modified"), index_name(&t, "expires"));
        assert!(m.len() <= 63 && e.len() <= 63);
        assert_ne!(m, e);
        assert_eq!(index_name("sessions", "modified"), "sessions_modified_idx");
    }
}
