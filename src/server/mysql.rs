//! `MySqlStore`: sessions in one MySQL / MariaDB table (InnoDB).
//!
//! ```text
//! CREATE TABLE <table> (
//!     id       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
//!     data     LONGBLOB NOT NULL,        -- MEDIUMBLOB stops 1 byte short of 16 MiB
//!     expires  BIGINT NOT NULL DEFAULT 0, -- ms since the epoch, 0: none
//!     modified BIGINT NOT NULL,           -- ms since the epoch, server clock
//!     version  BIGINT NOT NULL,
//!     owner    VARBINARY(255) NULL,       -- the owner's UTF-8, NULL: none
//!     stamp    BIGINT NULL,               -- µs, server clock; NULL: none
//!     INDEX <table>_modified (modified),
//!     INDEX <table>_expires (expires),
//!     INDEX <table>_owner (owner, modified)
//! ) ENGINE=InnoDB
//! ```
//!
//! `stamp` is the statement's time in µs (`UTC_TIMESTAMP(6)`, without the
//! test offset) at the last save or touch: it orders the modifications
//! that fall in one millisecond of `modified`, for the owner limit and
//! `sessions_of` (`ORDER BY modified DESC, stamp DESC`, where a NULL, a row
//! last written by an earlier version, sorts last: the older). It is
//! computed in the statement that writes, so a capped save, which waits for
//! the owner's lock after reading the clock, is stamped in the order the
//! saves were applied. The owner's rows come from the `(owner, modified)`
//! index and are few: sorting them on `stamp` as well needs no index.
//!
//! `setup` adds the `owner` column and its index, and the `stamp` column,
//! to a table created by an earlier version (it looks in
//! `information_schema`), keeping its sessions.
//!
//! Writes first read the server's clock (`UTC_TIMESTAMP(6)`, independent of
//! the session time zone) and bind it, so that the statement and the value
//! stamped into the session agree; the liveness test and the version
//! arithmetic happen inside the one statement that writes. Reads compute
//! the time inside the query.

use std::time::Duration;

use mysql::consts::CapabilityFlags;
use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, params};

use super::{Common, Host, Page, Paged, backend_error, common_setters, ms_i64, restore};
use crate::error::{Error, Result};
use crate::id::{MAX_ID_LEN, SessionId};
use crate::observe::{Backend, Meters, Op};
use crate::owner::{Owner, SessionInfo};
use crate::session::{SaveMode, Session, duration_millis, expires_millis, from_millis};
use crate::store::{SessionIter, SessionStore, Touch};

const BACKEND: &str = "mysql";

/// A stored row's data, expires, modified, version and owner.
type StoredRow = (Vec<u8>, i64, i64, i64, Option<Vec<u8>>);
/// A listed row: the id, then as [`StoredRow`].
type PageRow = (String, Vec<u8>, i64, i64, i64, Option<Vec<u8>>);

/// The server's time in ms (without the test offset).
const NOW: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";

/// The server's time in µs, for the `stamp` column.
const STAMP: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) AS SIGNED)";

/// The order of an owner's sessions, the latest modified first (a NULL
/// `stamp` sorts last in descending order).
const LATEST_FIRST: &str = "modified DESC, stamp DESC, id";

/// Room for the statement around the data in one packet.
const PACKET_OVERHEAD: usize = 64 * 1024;

const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_DUP_FIELDNAME: u16 = 1060;
const ER_DUP_KEYNAME: u16 = 1061;

/// Options for [`MySqlStore`]; start with [`MySqlStore::options`].
#[derive(Clone)]
pub struct MySqlOptions {
    common: Common,
    table: String,
}

/// Prints the server from the parsed URL, never the password.
impl std::fmt::Debug for MySqlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = super::shown_target(&self.common.url, |url| {
            Opts::from_url(url).map_or_else(|_| UNPARSED.to_owned(), |o| describe(&o))
        });
        f.debug_struct("MySqlOptions")
            .field("target", &target)
            .field("table", &self.table)
            .field("common", &self.common)
            .finish()
    }
}

/// The target shown for a URL the driver cannot parse.
const UNPARSED: &str = "(unparsable connection URL)";

/// `mysql://user@host:port/db` from the parsed options: never the password,
/// whether it came in the authority or as `?password=`.
fn describe(opts: &Opts) -> String {
    let user = opts.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = opts.get_db_name().unwrap_or("");
    match opts.get_socket() {
        Some(socket) => format!("mysql://{user}localhost/{db} (socket {socket})"),
        None => {
            let host = opts.get_ip_or_hostname();
            let port = opts.get_tcp_port();
            if host.contains(':') {
                format!("mysql://{user}[{host}]:{port}/{db}")
            } else {
                format!("mysql://{user}{host}:{port}/{db}")
            }
        }
    }
}

impl MySqlOptions {
    /// The table that holds the sessions (default `sessions`); it must
    /// match `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn table(mut self, name: &str) -> MySqlOptions {
        name.clone_into(&mut self.table);
        self
    }

    common_setters!(MySqlOptions);

    /// Builds the pool and takes one connection from it, to report a wrong
    /// URL, password or database at once. Reads the server's
    /// `max_allowed_packet`: a `max_session_size` set explicitly that does
    /// not fit is an error; the 16 MiB default is lowered to what fits
    /// (see [`MySqlStore::max_session_size`]). Call
    /// [`setup`](SessionStore::setup) before first use.
    pub fn open(self) -> Result<MySqlStore> {
        self.common.check()?;
        super::check_table_name(&self.table)?;
        let opts = Opts::from_url(&self.common.url).map_err(|e| {
            backend_error(
                BACKEND,
                UNPARSED,
                format!(
                    "invalid connection URL: {}; expected mysql://user:password@host:port/database",
                    url_error_text(&e)
                ),
                None,
            )
        })?;
        let target = describe(&opts);
        let ssl = tls_for(&opts, &self.common, &target)?;
        let opts = OptsBuilder::from_opts(opts).ssl_opts(ssl);
        let opts = Opts::from(opts);
        let max = usize::try_from(self.common.pool_size).unwrap_or(usize::MAX);
        let constraints = PoolConstraints::new(0, max)
            .ok_or_else(|| Error::InvalidOption("pool_size must be at least 1".into()))?;
        // The read and write timeouts cover the handshake too.
        let io = Some(self.common.io_timeout());
        let opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .tcp_connect_timeout(Some(self.common.connect_timeout))
            .read_timeout(io)
            .write_timeout(io)
            // affected rows = matched rows, so a touch within the same
            // millisecond still reports the session as present
            .additional_capabilities(CapabilityFlags::CLIENT_FOUND_ROWS)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        let limits = (self.common.connect_timeout, self.common.io_timeout());
        let pool =
            Pool::new(opts).map_err(|e| my_error(&target, limits, "could not connect", e))?;
        let mut store = MySqlStore {
            meters: Meters::new(
                Backend::MySql,
                &super::metrics_store(&target, "table", &self.table),
            ),
            sql: Sql::new(&self.table),
            pool,
            target,
            table: self.table,
            common: self.common,
        };
        let packet: Option<u64> = store
            .conn()?
            .query_first("SELECT @@max_allowed_packet")
            .map_err(store.err("could not read max_allowed_packet"))?;
        let packet = usize::try_from(packet.unwrap_or(0)).unwrap_or(usize::MAX);
        let fits = packet.saturating_sub(PACKET_OVERHEAD);
        if store.common.max_session_size > fits {
            if store.common.max_session_size_set {
                return Err(backend_error(
                    BACKEND,
                    &store.target,
                    format!(
                        "the server's max_allowed_packet is {packet} bytes, too small for sessions of up to {} bytes: \
                         raise it to at least {} (SET GLOBAL max_allowed_packet = ..., or max_allowed_packet in the \
                         server's config) or lower the store's max_session_size to {fits}",
                        store.common.max_session_size,
                        store
                            .common
                            .max_session_size
                            .saturating_add(PACKET_OVERHEAD),
                    ),
                    None,
                ));
            }
            // The default limit shrinks to what the server can carry.
            store.common.max_session_size = fits;
        }
        Ok(store)
    }
}

/// A [`SessionStore`] in a MySQL or MariaDB table, shared by any number of
/// threads, processes and hosts (feature `mysql`).
///
/// ```no_run
/// use sessionlog::{MySqlStore, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let store = MySqlStore::options("mysql://app:secret@db.internal/app")
///     .table("web_sessions")
///     .open()?;
/// store.setup()?;
/// # Ok(()) }
/// ```
pub struct MySqlStore {
    pool: Pool,
    target: String,
    table: String,
    sql: Sql,
    common: Common,
    /// What the store reports: call latency, timeouts, errors.
    meters: Meters,
}

impl std::fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlStore")
            .field("target", &self.target)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl MySqlStore {
    /// Opens a store at `url` (`mysql://user:password@host:port/db`) with
    /// default options: table `sessions`, 10 connections.
    pub fn open(url: &str) -> Result<MySqlStore> {
        MySqlStore::options(url).open()
    }

    /// Options for a store at `url`, to change before [`MySqlOptions::open`]
    /// (the same shape as every backend's `options()`).
    pub fn options(url: &str) -> MySqlOptions {
        MySqlOptions {
            common: Common::new(url),
            table: "sessions".to_owned(),
        }
    }

    /// The largest session data this store accepts: `max_session_size`,
    /// or, when that was left at its default, at most what the server's
    /// `max_allowed_packet` can carry (less 64 KiB for the statement).
    pub fn max_session_size(&self) -> usize {
        self.common.max_session_size
    }

    fn conn(&self) -> Result<PooledConn> {
        self.pool
            .try_get_conn(self.common.connect_timeout)
            .map_err(|e| my_error(&self.target, self.limits(), "could not get a connection", e))
    }

    fn err(&self, what: &str) -> impl Fn(mysql::Error) -> Error + '_ {
        let what = what.to_owned();
        move |e| my_error(&self.target, self.limits(), &what, e)
    }

    /// Adds `column` to a table an earlier version created without it, with
    /// `ddl` (an `ALTER TABLE`), if `information_schema` does not list it;
    /// a concurrent setup that added it (or its index) first is fine.
    fn add_column(
        &self,
        conn: &mut PooledConn,
        column: &str,
        ddl: &str,
        failed: &impl Fn(mysql::Error) -> Error,
    ) -> Result<()> {
        let has: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = :t AND column_name = :c",
                params! {"t" => &self.table, "c" => column},
            )
            .map_err(failed)?;
        if has.unwrap_or(0) != 0 {
            return Ok(());
        }
        match conn.query_drop(ddl) {
            Ok(()) => Ok(()),
            Err(mysql::Error::MySqlError(e))
                if e.code == ER_DUP_FIELDNAME || e.code == ER_DUP_KEYNAME =>
            {
                Ok(())
            }
            Err(e) => Err(self.err(&format!(
                "setup failed (adding the {column} column needs the ALTER privilege)"
            ))(e)),
        }
    }

    fn limits(&self) -> (Duration, Duration) {
        (self.common.connect_timeout, self.common.io_timeout())
    }

    /// The server's time plus the test offset.
    fn now(&self, conn: &mut PooledConn) -> Result<i64> {
        let now: Option<i64> = conn
            .query_first(format!("SELECT {NOW}"))
            .map_err(self.err("reading the server's clock failed"))?;
        let now = now.ok_or_else(|| {
            backend_error(BACKEND, &self.target, "the server returned no time", None)
        })?;
        Ok(now.saturating_add(self.common.clock_offset.millis()))
    }

    /// Runs one write, again if InnoDB chose it as a deadlock victim (it
    /// was rolled back whole, so a retry is safe).
    fn write(
        &self,
        conn: &mut PooledConn,
        sql: &str,
        params: impl Fn() -> mysql::Params,
    ) -> mysql::Result<u64> {
        let mut tries = 0;
        loop {
            match conn.exec_drop(sql, params()) {
                Ok(()) => return Ok(conn.affected_rows()),
                Err(mysql::Error::MySqlError(e)) if e.code == ER_LOCK_DEADLOCK && tries < 5 => {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Refreshes `modified`, and sets the deadline to `expires` (ms, 0:
    /// none) if given; false if no live session has this id.
    fn touch_as(&self, id: &SessionId, expires: Option<i64>) -> Result<bool> {
        let mut conn = self.conn()?;
        let now = self.now(&mut conn)?;
        let idle = self.common.idle_ms();
        let n = self
            .write(
                &mut conn,
                &self.sql.touch,
                || params! {"id" => id.as_str(), expires, now, idle},
            )
            .map_err(self.err("touch failed"))?;
        Ok(n > 0)
    }

    fn save_as(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.common.check_size(session)?;
        let mut conn = self.conn()?;
        let now = self.now(&mut conn)?;
        let idle = self.common.idle_ms();
        let owner = session.owner.clone();
        let owner = owner.as_ref().map(Owner::as_str);
        let failed = self.err("save failed");
        let capped = match (owner, self.common.others_kept()) {
            (Some(owner), Some(kept)) => Some((owner, kept)),
            _ => None,
        };
        let Some((owner_name, kept)) = capped else {
            return self.save_on(&mut conn, session, mode, now);
        };
        // Capped: the owner's named lock serialises this owner's saves
        // across connections and hosts; the save and the trim are one
        // transaction under it.
        let lock = owner_lock(&self.table, owner_name);
        let got: Option<i64> = conn
            .exec_first(
                "SELECT GET_LOCK(:lock, :secs)",
                params! {"lock" => &lock, "secs" => self.common.statement_timeout.as_secs().max(1)},
            )
            .map_err(&failed)?;
        if got != Some(1) {
            return Err(backend_error(
                BACKEND,
                &self.target,
                "save failed: timed out waiting for the owner's lock (max_sessions_per_owner)",
                None,
            ));
        }
        let r = (|| {
            conn.query_drop("START TRANSACTION").map_err(&failed)?;
            let r = self.save_on(&mut conn, session, mode, now).and_then(|()| {
                let id = session.id.as_str();
                let ids: Vec<String> = conn
                    .exec(
                        &self.sql.trim,
                        params! {"owner" => owner_name, id, now, idle, kept},
                    )
                    .map_err(&failed)?;
                for victim in ids {
                    conn.exec_drop(&self.sql.delete, params! {"id" => victim})
                        .map_err(&failed)?;
                }
                Ok(())
            });
            match r {
                Ok(()) => conn.query_drop("COMMIT").map_err(&failed),
                Err(e) => {
                    let _ = conn.query_drop("ROLLBACK");
                    Err(e)
                }
            }
        })();
        let _ = conn.exec_drop("DO RELEASE_LOCK(:lock)", params! {"lock" => &lock});
        r
    }

    /// The save itself on `conn`, at the server time `now`.
    fn save_on(
        &self,
        conn: &mut PooledConn,
        session: &mut Session,
        mode: SaveMode,
        now: i64,
    ) -> Result<()> {
        let conn = &mut *conn;
        let idle = self.common.idle_ms();
        let id = session.id.as_str();
        let data = session.data.as_slice();
        let expires = ms_i64(expires_millis(session.expires));
        let expected = session.version();
        let owner = session.owner.as_ref().map(Owner::as_str);
        let failed = self.err("save failed");
        let version = if mode == SaveMode::Overwrite {
            let n = self
                .write(
                    conn,
                    &self.sql.upsert,
                    || params! {id, data, expires, now, idle, owner},
                )
                .map_err(&failed)?;
            // 1: inserted; 2: updated, LAST_INSERT_ID(expr) carries the version
            if n == 1 { 1 } else { conn.last_insert_id() }
        } else if expected == 0 {
            // An expired row is absent: removing it changes nothing visible.
            self.write(conn, &self.sql.delete_dead, || params! {id, now, idle})
                .map_err(&failed)?;
            match self.write(
                conn,
                &self.sql.insert,
                || params! {id, data, expires, now, owner},
            ) {
                Ok(_) => 1,
                Err(mysql::Error::MySqlError(e)) if e.code == ER_DUP_ENTRY => 0,
                Err(e) => return Err(failed(e)),
            }
        } else {
            let v = ms_i64(expected);
            let n = self
                .write(
                    conn,
                    &self.sql.update,
                    || params! {id, data, expires, now, idle, v, owner},
                )
                .map_err(&failed)?;
            if n == 1 { expected + 1 } else { 0 }
        };
        if version == 0 {
            let found: Option<i64> = conn
                .exec_first(&self.sql.version, params! {id, now, idle})
                .map_err(&failed)?;
            return Err(Error::Conflict {
                id: session.id.clone(),
                expected,
                found: found.map_or(0, super::ms_u64),
            });
        }
        session.mark_saved(from_millis(super::ms_u64(now)), version);
        Ok(())
    }

    fn page(&self, after: Option<&SessionId>) -> Result<Page> {
        let mut conn = self.conn()?;
        let off = self.common.clock_offset.millis();
        let idle = self.common.idle_ms();
        let after = after.map_or("", SessionId::as_str);
        let rows: Vec<PageRow> = conn
            .exec(&self.sql.page, params! {off, idle, after})
            .map_err(self.err("listing sessions failed"))?;
        let more = rows.len() == super::PAGE_SIZE;
        let mut sessions = Vec::with_capacity(rows.len());
        for (id, data, expires, modified, version, owner) in rows {
            let mut s = restore(SessionId::new(id)?, data, expires, modified, version);
            s.owner = super::stored_owner(owner.as_deref());
            sessions.push(s);
        }
        let last = if more {
            sessions.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok((sessions, last))
    }
}

impl MySqlStore {
    /// Deletes `owner`'s sessions but `keep`, returning how many were live:
    /// a locking count and the `DELETE` in one transaction.
    fn delete_of(&self, what: &str, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let mut conn = self.conn()?;
        let now = self.now(&mut conn)?;
        let idle = self.common.idle_ms();
        let failed = self.err(what);
        let owner = owner.as_str();
        let keep = keep.map_or("", SessionId::as_str);
        let mut tx = conn
            .start_transaction(mysql::TxOpts::default())
            .map_err(&failed)?;
        let live: Option<i64> = tx
            .exec_first(&self.sql.count_of, params! {owner, keep, now, idle})
            .map_err(&failed)?;
        tx.exec_drop(&self.sql.delete_of, params! {owner, keep})
            .map_err(&failed)?;
        tx.commit().map_err(&failed)?;
        Ok(usize::try_from(live.unwrap_or(0)).unwrap_or(0))
    }
}

/// The name of the `GET_LOCK` lock that serialises an owner's capped
/// saves: a digest, within MySQL's 64 characters, that shows no owner.
fn owner_lock(table: &str, owner: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(table.as_bytes());
    h.update([0]);
    h.update(owner.as_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sessionlog.owner.{hex}")
}

impl SessionStore for MySqlStore {
    /// Creates the table, or adds the `owner` column and its index and the
    /// `stamp` column to a table an earlier version created (a concurrent
    /// setup that added them first is fine).
    fn setup(&self) -> Result<()> {
        self.meters.call(Op::Setup, || {
            let mut conn = self.conn()?;
            let failed = self.err("setup failed (creating the table needs the CREATE privilege)");
            conn.query_drop(&self.sql.setup).map_err(&failed)?;
            self.add_column(&mut conn, "owner", &self.sql.add_owner, &failed)?;
            self.add_column(&mut conn, "stamp", &self.sql.add_stamp, &failed)?;
            Ok(())
        })
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.meters.call(Op::Load, || {
            let off = self.common.clock_offset.millis();
            let idle = self.common.idle_ms();
            let row: Option<StoredRow> = self
                .conn()?
                .exec_first(&self.sql.load, params! {"id" => id.as_str(), off, idle})
                .map_err(self.err("load failed"))?;
            Ok(row.map(|(data, expires, modified, version, owner)| {
                let mut s = restore(id.clone(), data, expires, modified, version);
                s.owner = super::stored_owner(owner.as_deref());
                s
            }))
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
            let mut conn = self.conn()?;
            let now = self.now(&mut conn)?;
            let idle = self.common.idle_ms();
            let id = id.as_str();
            let failed = self.err("delete failed");
            self.write(&mut conn, &self.sql.delete_dead, || params! {id, now, idle})
                .map_err(&failed)?;
            let n = self
                .write(&mut conn, &self.sql.delete, || params! {id})
                .map_err(&failed)?;
            Ok(n > 0)
        })
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Has, || {
            let off = self.common.clock_offset.millis();
            let idle = self.common.idle_ms();
            let row: Option<i64> = self
                .conn()?
                .exec_first(
                    &self.sql.version_c,
                    params! {"id" => id.as_str(), off, idle},
                )
                .map_err(self.err("lookup failed"))?;
            Ok(row.is_some())
        })
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(Paged::new(move |after| self.page(after))))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.meters.call(Op::Expire, || {
            let mut conn = self.conn()?;
            let now = self.now(&mut conn)?;
            let limit = i64::try_from(duration_millis(max_idle))
                .unwrap_or(i64::MAX)
                .min(self.common.idle_ms());
            let cutoff = now.saturating_sub(limit);
            let mut total = 0u64;
            loop {
                let n = self
                    .write(&mut conn, &self.sql.delete_old, || params! {now, cutoff})
                    .map_err(self.err("deleting old sessions failed"))?;
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
            let off = self.common.clock_offset.millis();
            let idle = self.common.idle_ms();
            let rows: Vec<(String, i64, i64, i64, i64)> = self
                .conn()?
                .exec(
                    &self.sql.sessions_of,
                    params! {"owner" => owner.as_str(), off, idle},
                )
                .map_err(self.err("listing an owner's sessions failed"))?;
            let mut list = Vec::with_capacity(rows.len());
            for (id, expires, modified, version, size) in rows {
                list.push(super::info(
                    SessionId::new(id)?,
                    Some(owner.clone()),
                    expires,
                    modified,
                    version,
                    size,
                ));
            }
            Ok(list)
        })
    }

    /// One `DELETE` of the owner's rows but `keep` (expired ones too), in
    /// a transaction with the count of the live ones it removes.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        self.meters.call(Op::Owner, || {
            self.delete_of("deleting an owner's sessions failed", owner, keep)
        })
    }

    /// The same `DELETE`: the rows are gone from the table when it returns,
    /// but InnoDB keeps their bytes in free pages and undo logs until they
    /// are reused or purged, and the binary log, replicas and backups keep
    /// them too (SERVERS.md).
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        self.meters.call(Op::Owner, || {
            self.delete_of("erasing an owner's sessions failed", owner, None)
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
    version_c: String,
    upsert: String,
    insert: String,
    update: String,
    touch: String,
    delete_dead: String,
    delete: String,
    page: String,
    delete_old: String,
    add_owner: String,
    add_stamp: String,
    sessions_of: String,
    count_of: String,
    delete_of: String,
    trim: String,
}

impl Sql {
    fn new(t: &str) -> Sql {
        // live at the bound :now (writes) or at the computed c.now (reads)
        let live = "((expires = 0 OR expires > :now) AND modified > :now - :idle)";
        let live_c = "((s.expires = 0 OR s.expires > c.now) AND s.modified > c.now - :idle)";
        let clock = format!("(SELECT {NOW} + :off AS now) AS c");
        Sql {
            setup: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id VARCHAR({MAX_ID_LEN}) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
                 data LONGBLOB NOT NULL, \
                 expires BIGINT NOT NULL DEFAULT 0, \
                 modified BIGINT NOT NULL, \
                 version BIGINT NOT NULL, \
                 owner VARBINARY(255) NULL, \
                 stamp BIGINT NULL, \
                 INDEX {t}_modified (modified), \
                 INDEX {t}_expires (expires), \
                 INDEX {t}_owner (owner, modified)\
                 ) ENGINE=InnoDB"
            ),
            add_owner: format!(
                "ALTER TABLE {t} ADD COLUMN owner VARBINARY(255) NULL, \
                 ADD INDEX {t}_owner (owner, modified)"
            ),
            add_stamp: format!("ALTER TABLE {t} ADD COLUMN stamp BIGINT NULL"),
            load: format!(
                "SELECT s.data, s.expires, s.modified, s.version, s.owner FROM {t} AS s, {clock} \
                 WHERE s.id = :id AND {live_c}"
            ),
            version: format!("SELECT version FROM {t} WHERE id = :id AND {live}"),
            version_c: format!(
                "SELECT s.version FROM {t} AS s, {clock} WHERE s.id = :id AND {live_c}"
            ),
            // `version` is assigned first, so it sees the old expires and
            // modified (MySQL assigns left to right).
            upsert: format!(
                "INSERT INTO {t} (id, data, expires, modified, version, owner, stamp) \
                 VALUES (:id, :data, :expires, :now, 1, :owner, {STAMP}) \
                 ON DUPLICATE KEY UPDATE \
                 version = LAST_INSERT_ID(IF({live}, version + 1, 1)), \
                 data = VALUES(data), expires = VALUES(expires), modified = VALUES(modified), \
                 owner = VALUES(owner), stamp = VALUES(stamp)"
            ),
            insert: format!(
                "INSERT INTO {t} (id, data, expires, modified, version, owner, stamp) \
                 VALUES (:id, :data, :expires, :now, 1, :owner, {STAMP})"
            ),
            update: format!(
                "UPDATE {t} SET data = :data, expires = :expires, modified = :now, \
                 version = version + 1, owner = :owner, stamp = {STAMP} \
                 WHERE id = :id AND version = :v AND {live}"
            ),
            // :expires: the new deadline, or NULL to keep it; the WHERE
            // clause sees the row as it was, before the new deadline
            touch: format!(
                "UPDATE {t} SET modified = :now, stamp = {STAMP}, \
                 expires = COALESCE(:expires, expires) \
                 WHERE id = :id AND {live}"
            ),
            delete_dead: format!("DELETE FROM {t} WHERE id = :id AND NOT {live}"),
            delete: format!("DELETE FROM {t} WHERE id = :id"),
            page: format!(
                "SELECT s.id, s.data, s.expires, s.modified, s.version, s.owner \
                 FROM {t} AS s, {clock} \
                 WHERE s.id > :after AND {live_c} ORDER BY s.id LIMIT {}",
                super::PAGE_SIZE
            ),
            sessions_of: format!(
                "SELECT s.id, s.expires, s.modified, s.version, CAST(LENGTH(s.data) AS SIGNED) \
                 FROM {t} AS s, {clock} \
                 WHERE s.owner = :owner AND {live_c} \
                 ORDER BY s.modified DESC, s.stamp DESC, s.id"
            ),
            // :keep: the id to spare, or '' (no id is empty)
            count_of: format!(
                "SELECT COUNT(*) FROM {t} WHERE owner = :owner AND id <> :keep AND {live} \
                 FOR UPDATE"
            ),
            delete_of: format!("DELETE FROM {t} WHERE owner = :owner AND id <> :keep"),
            // the owner's live sessions but :id past the :kept newest
            trim: format!(
                "SELECT id FROM {t} WHERE owner = :owner AND id <> :id AND {live} \
                 ORDER BY {LATEST_FIRST} LIMIT 18446744073709551615 OFFSET :kept \
                 FOR UPDATE"
            ),
            delete_old: format!(
                "DELETE FROM {t} WHERE modified <= :cutoff OR (expires <> 0 AND expires <= :now) \
                 LIMIT {}",
                super::SQL_DELETE_BATCH
            ),
        }
    }
}

/// Decides TLS: on when the URL configures it (`root_cert_path=...`),
/// when asked by option, or (with the `mysql-tls` feature) for a host that
/// is not loopback; plaintext, or TLS without verification, to a remote
/// host is refused unless allowed by name.
fn tls_for(opts: &Opts, common: &Common, target: &str) -> Result<Option<mysql::SslOpts>> {
    let name = opts.get_ip_or_hostname();
    let host = if opts.get_socket().is_some() {
        Host::Unix
    } else {
        Host::Tcp(&name)
    };
    #[cfg_attr(not(feature = "mysql-tls"), allow(unused_mut))]
    let mut ssl = opts.get_ssl_opts().cloned();
    let wanted = common.tls_asked() || (!host.is_local() && !common.allow_plaintext_to_remote);
    if wanted {
        #[cfg(feature = "mysql-tls")]
        {
            let mut o = ssl.unwrap_or_default();
            if let Some(path) = &common.tls_ca_file {
                o = o.with_root_cert_path(Some(path.clone()));
            }
            ssl = Some(o);
        }
        #[cfg(not(feature = "mysql-tls"))]
        if ssl.is_none() {
            return Err(backend_error(
                BACKEND,
                target,
                "TLS is needed (require_tls, tls_ca_file, or a host that is not loopback) but \
                 this build has no TLS support: enable the `mysql-tls` feature, or, for a remote \
                 host on a network you trust, call allow_plaintext_to_remote(true)",
                None,
            ));
        }
    }
    let verified = ssl
        .as_ref()
        .is_some_and(|o| !o.accept_invalid_certs() && !o.skip_domain_validation());
    if !verified {
        common.check_plaintext(BACKEND, target, host, "mysql-tls", "require_tls(true)")?;
    }
    Ok(ssl)
}

/// The text of a URL error, without the values it may quote.
fn url_error_text(e: &mysql::UrlError) -> String {
    match e {
        mysql::UrlError::InvalidValue(param, _) => {
            format!("invalid value for URL parameter `{param}'")
        }
        other => other.to_string(),
    }
}

/// Whether `e` is the client giving up waiting for the server.
fn is_timeout(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::DriverError(
            mysql::DriverError::ConnectTimeout | mysql::DriverError::Timeout,
        ) => true,
        mysql::Error::IoError(io) => io_timed_out(io),
        // The packet codec wraps the socket's error as its source.
        mysql::Error::CodecError(c) => std::error::Error::source(c)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(io_timed_out),
        _ => false,
    }
}

/// A socket read or write that ran into its timeout.
fn io_timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Turns a client error into an [`Error::Timeout`] or an [`Error::Backend`]
/// that says what to do.
/// `limits` are the connect and io deadlines, to say which one passed.
fn my_error(target: &str, limits: (Duration, Duration), what: &str, e: mysql::Error) -> Error {
    if is_timeout(&e) {
        let after = match e {
            mysql::Error::DriverError(_) => limits.0,
            _ => limits.1,
        };
        let operation = match what {
            "could not connect" | "could not get a connection" => "connecting",
            w => w.trim_end_matches(" failed"),
        };
        return super::timeout_error(BACKEND, target, operation, after);
    }
    let hint = match &e {
        mysql::Error::MySqlError(m) => match m.code {
            1044 | 1045 | 1698 => "authentication failed: check the user and password in the URL",
            1049 => "the database does not exist: create it (CREATE DATABASE name) or fix the URL",
            1146 => "the table is missing: call setup() first",
            1153 | 1301 => "the data exceeds the server's max_allowed_packet: raise it",
            1205 => "a lock wait timed out: another transaction holds the row",
            1142 => "permission denied: grant the user rights on the table",
            _ => "the server rejected the statement",
        },
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => {
            "could not talk to the server: check that MySQL/MariaDB is running and accepts TCP connections at this address"
        }
        mysql::Error::DriverError(
            mysql::DriverError::ConnectTimeout | mysql::DriverError::Timeout,
        ) => "timed out: check that the server is running and not overloaded",
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(_)) => {
            "could not connect: check that MySQL/MariaDB is running and accepts TCP connections at this address"
        }
        mysql::Error::DriverError(_) => "the client failed",
        mysql::Error::UrlError(_) => "invalid connection URL",
        _ => "unexpected error",
    };
    let text = e.to_string();
    let hint = super::tls_hint(&text).unwrap_or(hint);
    backend_error(
        BACKEND,
        target,
        format!("{what}: {hint} ({text})"),
        Some(Box::new(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(url: &str, common: &Common) -> Result<Option<mysql::SslOpts>> {
        let opts = Opts::from_url(url).expect("url");
        tls_for(&opts, common, "t")
    }

    #[test]
    fn targets_come_from_the_parsed_url_without_the_password() {
        let d = |url: &str| describe(&Opts::from_url(url).expect("parses"));
        assert_eq!(
            d("mysql://u:pw@db.internal:3307/app"),
            "mysql://u@db.internal:3307/app"
        );
        assert_eq!(
            d("mysql://u@db.internal/app?password=pw"),
            "mysql://u@db.internal:3306/app"
        );
        assert_eq!(d("mysql://u:p%2Fw@h/app"), "mysql://u@h:3306/app");
    }

    #[test]
    fn plaintext_to_loopback_is_fine_to_remote_refused_or_tls() {
        let common = Common::new("");
        assert_eq!(
            decide("mysql://u@127.0.0.1/db", &common).expect("loopback"),
            None
        );
        let remote = decide("mysql://u@db.internal/db", &common);
        #[cfg(feature = "mysql-tls")]
        assert!(remote.expect("TLS").is_some(), "a remote host gets TLS");
        #[cfg(not(feature = "mysql-tls"))]
        assert!(
            remote
                .expect_err("refused")
                .to_string()
                .contains("allow_plaintext_to_remote")
        );
        let allowed = Common {
            allow_plaintext_to_remote: true,
            ..Common::new("")
        };
        assert_eq!(
            decide("mysql://u@db.internal/db", &allowed).expect("allowed"),
            None
        );
        let err = decide(
            "mysql://u@db.internal/db?danger_accept_invalid_certs=true",
            &common,
        )
        .expect_err("unverified TLS to a remote host");
        assert!(
            err.to_string().contains("allow_plaintext_to_remote"),
            "{err}"
        );
    }
}
