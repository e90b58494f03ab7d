//! Moving sessions out of tower-sessions' own published stores into any
//! sessionlog store, so that an app switched to [`TowerStore`] keeps its
//! users logged in.
//!
//! The layouts, as `tower-sessions-redis-store` and
//! `tower-sessions-sqlx-store` (0.15) write them: each session is its
//! tower-sessions `Record` (`id`, `data`, `expiry_date`) encoded with
//! `rmp_serde::to_vec`, that is MessagePack with the struct as an array;
//! the id's text is the 22-character base64url form of its `i128`.
//!
//! - Redis: the key is the id's text after an optional prefix (none by
//!   default), the value the encoded record, expiring at `expiry_date`
//!   (`EXAT`).
//! - PostgreSQL: the table `"tower_sessions"."session"` by default, with
//!   columns `id text`, `data bytea` (the encoded record) and
//!   `expiry_date timestamptz`.
//!
//! [`TowerStore`] keeps a record as the [`Session`] whose id is that same
//! text, whose data is the record's map in its own encoding and whose
//! deadline is `expiry_date`: [`session_from_tower_record`] makes that
//! session, so the cookie the app set before the switch names it after.
//!
//! [`TowerStore`]: super::TowerStore

use std::time::SystemTime;

use tower_sessions_core::session::Record;

use super::encode_map;
use crate::error::{Error, Result};
#[cfg(any(feature = "redis", feature = "postgres"))]
use crate::{CopyOptions, CopyReport, SessionStore};
use crate::{Session, SessionId};

/// The session [`TowerStore`](super::TowerStore) keeps for a record that
/// tower-sessions' published stores wrote (`bytes` as they store it:
/// `rmp_serde::to_vec(&record)`): the same id text, the record's data in
/// TowerStore's encoding, its `expiry_date` as the deadline. No owner:
/// [`TowerStore::with_owner`](super::TowerStore::with_owner) records it at
/// the session's next save. `what` names the record's place for an error.
pub fn session_from_tower_record(bytes: &[u8], what: &str) -> Result<Session> {
    let bad = |reason: &str| Error::InvalidOption(format!("{what}: {reason}"));
    let record: Record = rmp_serde::from_slice(bytes)
        .map_err(|_| bad("not a tower-sessions record (MessagePack of id, data, expiry_date)"))?;
    let id = SessionId::new(record.id.to_string())?;
    let data =
        encode_map(&record.data, None).map_err(|_| bad("the record's data cannot be encoded"))?;
    let mut session = Session::new(id, data);
    session.expires = Some(SystemTime::from(record.expiry_date));
    Ok(session)
}

/// Copies every live session of a tower-sessions Redis store (the
/// published `tower-sessions-redis-store`: keys `prefix` + id, "" by
/// default) at `url` into `to`, as [`copy_sessions`](crate::copy_sessions)
/// does (a session live at `to` is skipped unless `overwrite`). Keys under
/// the prefix that do not hold a record fail the copy, naming the key's
/// length only (a key is a login). Needs features `redis` and
/// `tower-sessions`.
#[cfg(feature = "redis")]
pub fn copy_from_tower_redis(
    url: &str,
    prefix: &str,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<CopyReport> {
    crate::server::check_url_shape(url)?;
    let target = crate::server::redis::shown(url);
    let fail = |e: redis::RedisError| Error::Backend {
        backend: "redis",
        target: target.clone(),
        message: e.to_string(),
        source: None,
    };
    let client = redis::Client::open(url).map_err(fail)?;
    let mut conn = client.get_connection().map_err(fail)?;
    let mut pattern = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let keys: Vec<Vec<u8>> = {
        let iter = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<Vec<u8>>(&mut conn)
            .map_err(fail)?;
        iter.collect::<std::result::Result<_, _>>().map_err(fail)?
    };
    let sessions = keys.into_iter().filter_map(|key| {
        let value: Option<Vec<u8>> = match redis::cmd("GET").arg(&key).query(&mut conn) {
            Ok(v) => v,
            Err(e) => return Some(Err(fail(e))),
        };
        // Expired or deleted since the scan: nothing to copy.
        let value = value?;
        let what = format!("redis key of {} bytes under the prefix", key.len());
        Some(session_from_tower_record(&value, &what))
    });
    crate::copy::copy_iter(sessions, to, options)
}

/// Copies every live session of a tower-sessions PostgreSQL store (the
/// published `tower-sessions-sqlx-store`'s `PostgresStore`: the table
/// `"schema"."table"`, `tower_sessions` and `session` by default) at `url`
/// into `to`, as [`copy_from_tower_redis`] does. Needs features
/// `postgres` and `tower-sessions`.
#[cfg(feature = "postgres")]
pub fn copy_from_tower_postgres(
    url: &str,
    schema: &str,
    table: &str,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<CopyReport> {
    crate::server::check_url_shape(url)?;
    let target = crate::server::postgres::shown(url);
    let fail = |message: String| Error::Backend {
        backend: "postgres",
        target: target.clone(),
        message,
        source: None,
    };
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let query = format!(
        "select data from {}.{} where expiry_date > now()",
        quote(schema),
        quote(table)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start a runtime: {e}")))?;
    let rows: Vec<Vec<u8>> = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| fail(crate::server::error_chain(&e)))?;
        let driver = tokio::spawn(connection);
        let rows = client
            .query(query.as_str(), &[])
            .await
            .map_err(|e| fail(crate::server::error_chain(&e)))?;
        drop(client);
        let _ = driver.await;
        rows.iter()
            .map(|r| {
                r.try_get::<_, Vec<u8>>(0)
                    .map_err(|e| fail(crate::server::error_chain(&e)))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let sessions = rows
        .iter()
        .map(|bytes| session_from_tower_record(bytes, &format!("a row of {schema}.{table}")));
    crate::copy::copy_iter(sessions, to, options)
}
