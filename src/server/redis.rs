//! `RedisStore`: sessions in Redis, every operation one Lua script.
//!
//! Key layout for prefix `P` (default `sessionlog`); the braces are a hash
//! tag, so that on a cluster every key of a store lives in one slot:
//!
//! ```text
//! {P}:s:<id>      hash  d = data, e = expires (ms, 0: none),
//!                       m = modified (ms), v = version
//! {P}:modified    zset  id -> modified (ms)   for delete_old_sessions
//! {P}:expires     zset  id -> expires (ms)    sessions with a deadline
//! {P}:ids         zset  id -> 0               keyset pages for iter_sessions
//! ```
//!
//! Scripts read the time with `TIME` (plus the test offset) and decide
//! liveness themselves. Each session key also carries a server-side expiry
//! (`PEXPIREAT`, at its deadline or after the store's idle limit,
//! whichever comes first), so Redis drops it by itself; the index entries
//! of such a key stay until `delete_old_sessions` removes them.

use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use redis::{Client, Connection, ConnectionLike, RedisError, Script, Value};

use super::{Common, Page, Paged, backend_error, common_setters, ms_i64, restore};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Session, duration_millis, expires_millis, from_millis};
use crate::store::{SessionIter, SessionStore};

const BACKEND: &str = "redis";

/// Largest prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// Sessions removed per `delete_old_sessions` script run, so that one run
/// never blocks the server for long.
const DELETE_BATCH: usize = 1000;

/// Data returned per `iter_sessions` page at most (at least one session).
const PAGE_BYTES: usize = 8 << 20;

/// Shared by every script. KEYS[1..4] = session, modified, expires, ids;
/// ARGV[1] = clock offset (ms), ARGV[2] = the store's idle limit (ms, -1:
/// none).
const PRELUDE: &str = r"
local off = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + off
-- the version of a live session at key k, or nil
local function live(k)
  local h = redis.call('HMGET', k, 'e', 'm', 'v')
  if not h[3] then return nil end
  local e, m = tonumber(h[1]), tonumber(h[2])
  if e ~= 0 and e <= now then return nil end
  if idle >= 0 and m + idle <= now then return nil end
  return tonumber(h[3])
end
-- the server-side expiry: deadline or idle limit, in the server's own time
local function deadline(k, e)
  local at = nil
  if e ~= 0 then at = e - off end
  if idle >= 0 and (at == nil or now - off + idle < at) then at = now - off + idle end
  if at == nil then redis.call('PERSIST', k) else redis.call('PEXPIREAT', k, at) end
end
";

/// ARGV[3] = '1' to check the version, ARGV[4] = expected version,
/// ARGV[5] = data, ARGV[6] = expires, ARGV[7] = id.
/// Returns {1, version, modified} or {0, found}.
const SAVE: &str = r"
local found = live(KEYS[1]) or 0
if ARGV[3] == '1' and found ~= tonumber(ARGV[4]) then return {0, found} end
local e = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'd', ARGV[5], 'e', ARGV[6], 'm', now, 'v', found + 1)
redis.call('ZADD', KEYS[2], now, ARGV[7])
if e ~= 0 then redis.call('ZADD', KEYS[3], e, ARGV[7]) else redis.call('ZREM', KEYS[3], ARGV[7]) end
redis.call('ZADD', KEYS[4], 0, ARGV[7])
deadline(KEYS[1], e)
return {1, found + 1, now}
";

/// ARGV[3] = '1' to return the data. Returns nil or {e, m, v[, d]}.
const LOAD: &str = r"
if not live(KEYS[1]) then return nil end
if ARGV[3] == '1' then return redis.call('HMGET', KEYS[1], 'e', 'm', 'v', 'd') end
return redis.call('HMGET', KEYS[1], 'e', 'm', 'v')
";

/// ARGV[3] = id. Returns 1 if touched, 0 if absent.
const TOUCH: &str = r"
if not live(KEYS[1]) then return 0 end
redis.call('HSET', KEYS[1], 'm', now)
redis.call('ZADD', KEYS[2], now, ARGV[3])
deadline(KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'e')))
return 1
";

/// ARGV[3] = id. Returns 1 if a live session was deleted.
const DELETE: &str = r"
local was = live(KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
if was then return 1 end
return 0
";

/// KEYS[1] = the session key prefix; ARGV[3] = the max_idle argument (ms),
/// ARGV[4] = batch size. Returns {removed, looked at}.
const DELETE_OLD: &str = r"
local lim = tonumber(ARGV[3])
if idle >= 0 and idle < lim then lim = idle end
local n = tonumber(ARGV[4])
local old = redis.call('ZRANGE', KEYS[2], '-inf', now - lim, 'BYSCORE', 'LIMIT', 0, n)
local gone = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, n)
local removed = 0
for _, list in ipairs({old, gone}) do
  for _, id in ipairs(list) do
    if redis.call('ZREM', KEYS[4], id) == 1 then removed = removed + 1 end
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('DEL', KEYS[1] .. id)
  end
end
return {removed, #old + #gone}
";

/// KEYS[1] = the session key prefix; ARGV[3] = start ('-' or '(' .. id),
/// ARGV[4] = count, ARGV[5] = byte budget. Returns {last id looked at or
/// '', done, {id, e, m, v, d, ...}}.
const PAGE: &str = r"
local ids = redis.call('ZRANGE', KEYS[4], ARGV[3], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[4]))
local out, bytes, last = {}, 0, ''
for i, id in ipairs(ids) do
  local k = KEYS[1] .. id
  last = id
  if live(k) then
    local h = redis.call('HMGET', k, 'e', 'm', 'v', 'd')
    table.insert(out, id)
    for _, x in ipairs(h) do table.insert(out, x) end
    bytes = bytes + #h[4]
    if bytes >= tonumber(ARGV[5]) and i < #ids then return {last, 0, out} end
  end
end
local done = 0
if #ids < tonumber(ARGV[4]) then done = 1 end
return {last, done, out}
";

/// Options for [`RedisStore`]; start with [`RedisStore::builder`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    common: Common,
    prefix: String,
}

impl RedisOptions {
    /// The prefix of the store's keys (default `sessionlog`): 1 to 64
    /// characters from `A-Z a-z 0-9 _ - . :`. Keys are `{prefix}:...`.
    pub fn key_prefix(mut self, prefix: &str) -> RedisOptions {
        prefix.clone_into(&mut self.prefix);
        self
    }

    common_setters!(RedisOptions);

    /// Connects (one connection, to report a wrong URL or password at
    /// once) and builds the pool.
    pub fn open(self) -> Result<RedisStore> {
        self.common.check()?;
        check_prefix(&self.prefix)?;
        let target = super::redact_url(&self.common.url);
        let client = Client::open(self.common.url.as_str()).map_err(|e| {
            backend_error(
                BACKEND,
                &target,
                format!("invalid connection URL: {e}; expected redis://:password@host:port/db"),
                Some(Box::new(e)),
            )
        })?;
        let manager = Manager {
            client,
            connect_timeout: self.common.connect_timeout,
            io_timeout: self.common.statement_timeout,
        };
        let mut first = r2d2::ManageConnection::connect(&manager)
            .map_err(|e| redis_error(&target, "could not connect", e))?;
        r2d2::ManageConnection::is_valid(&manager, &mut first)
            .map_err(|e| redis_error(&target, "could not connect", e))?;
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
        let p = &self.prefix;
        Ok(RedisStore {
            pool,
            target,
            keys: Keys {
                session: format!("{{{p}}}:s:"),
                modified: format!("{{{p}}}:modified"),
                expires: format!("{{{p}}}:expires"),
                ids: format!("{{{p}}}:ids"),
            },
            scripts: Scripts {
                save: Script::new(&format!("{PRELUDE}{SAVE}")),
                load: Script::new(&format!("{PRELUDE}{LOAD}")),
                touch: Script::new(&format!("{PRELUDE}{TOUCH}")),
                delete: Script::new(&format!("{PRELUDE}{DELETE}")),
                delete_old: Script::new(&format!("{PRELUDE}{DELETE_OLD}")),
                page: Script::new(&format!("{PRELUDE}{PAGE}")),
            },
            prefix: self.prefix,
            common: self.common,
        })
    }
}

/// A [`SessionStore`] in Redis, shared by any number of threads, processes
/// and hosts (feature `redis`).
///
/// ```no_run
/// use sessionlog::{RedisStore, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let store = RedisStore::builder("redis://127.0.0.1/")
///     .key_prefix("myapp")
///     .open()?;
/// store.setup()?;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    pool: Pool<Manager>,
    target: String,
    prefix: String,
    keys: Keys,
    scripts: Scripts,
    common: Common,
}

struct Keys {
    session: String,
    modified: String,
    expires: String,
    ids: String,
}

struct Scripts {
    save: Script,
    load: Script,
    touch: Script,
    delete: Script,
    delete_old: Script,
    page: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens a store at `url` (`redis://:password@host:port/db`) with
    /// default options: prefix `sessionlog`, 10 connections.
    pub fn open(url: &str) -> Result<RedisStore> {
        RedisStore::builder(url).open()
    }

    /// Options for a store at `url`, to change before [`RedisOptions::open`].
    pub fn builder(url: &str) -> RedisOptions {
        RedisOptions {
            common: Common::new(url),
            prefix: "sessionlog".to_owned(),
        }
    }

    fn conn(&self) -> Result<PooledConnection<Manager>> {
        super::pooled(
            &self.pool,
            BACKEND,
            "Redis",
            &self.target,
            self.common.connect_timeout,
        )
    }

    /// Runs `script` on the session `id` (or on the prefix for `None`)
    /// with the clock and idle arguments, then `args`.
    fn run(
        &self,
        what: &str,
        script: &Script,
        id: Option<&SessionId>,
        args: &[&[u8]],
    ) -> Result<Value> {
        let idle = match self.common.max_idle {
            Some(d) => i64::try_from(duration_millis(d)).unwrap_or(i64::MAX),
            None => -1,
        };
        let first = match id {
            Some(id) => format!("{}{}", self.keys.session, id.as_str()),
            None => self.keys.session.clone(),
        };
        let mut inv = script.prepare_invoke();
        inv.key(first)
            .key(&self.keys.modified)
            .key(&self.keys.expires)
            .key(&self.keys.ids)
            .arg(self.common.clock_offset.millis())
            .arg(idle);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn()?;
        inv.invoke::<Value>(&mut *conn)
            .map_err(|e| redis_error(&self.target, what, e))
    }

    fn bad_reply(&self, what: &str, v: &Value) -> Error {
        backend_error(
            BACKEND,
            &self.target,
            format!("{what}: unexpected reply {v:?} (is another program using these keys?)"),
            None,
        )
    }

    fn save(&self, session: &mut Session, check: bool) -> Result<()> {
        self.common.check_size(session)?;
        let expected = session.version().to_string();
        let expires = ms_i64(expires_millis(session.expires)).to_string();
        let check = if check { "1" } else { "0" };
        let reply = self.run(
            "save failed",
            &self.scripts.save,
            Some(&session.id),
            &[
                check.as_bytes(),
                expected.as_bytes(),
                &session.data,
                expires.as_bytes(),
                session.id.as_str().as_bytes(),
            ],
        )?;
        match ints(&reply).as_deref() {
            Some([1, version, modified]) => {
                session.mark_saved(
                    from_millis(super::ms_u64(*modified)),
                    super::ms_u64(*version),
                );
                Ok(())
            }
            Some([0, found]) => Err(Error::Conflict {
                id: session.id.clone(),
                expected: session.version(),
                found: super::ms_u64(*found),
            }),
            _ => Err(self.bad_reply("save failed", &reply)),
        }
    }

    fn page(&self, after: Option<&SessionId>) -> Result<Page> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({}", id.as_str()));
        let count = super::PAGE_SIZE.to_string();
        let budget = PAGE_BYTES.to_string();
        let reply = self.run(
            "listing sessions failed",
            &self.scripts.page,
            None,
            &[start.as_bytes(), count.as_bytes(), budget.as_bytes()],
        )?;
        let bad = || self.bad_reply("listing sessions failed", &reply);
        let Value::Array(parts) = &reply else {
            return Err(bad());
        };
        let [last, done, Value::Array(flat)] = parts.as_slice() else {
            return Err(bad());
        };
        let mut sessions = Vec::with_capacity(flat.len() / 5);
        for row in flat.chunks(5) {
            let [id, e, m, v, d] = row else {
                return Err(bad());
            };
            let id = SessionId::new(String::from_utf8_lossy(&bytes(id).ok_or_else(bad)?))?;
            sessions.push(restore(
                id,
                bytes(d).ok_or_else(bad)?,
                int(e).ok_or_else(bad)?,
                int(m).ok_or_else(bad)?,
                int(v).ok_or_else(bad)?,
            ));
        }
        let last = bytes(last).ok_or_else(bad)?;
        let last = if int(done) == Some(1) || last.is_empty() {
            None
        } else {
            Some(SessionId::new(String::from_utf8_lossy(&last))?)
        };
        Ok((sessions, last))
    }
}

impl SessionStore for RedisStore {
    /// Checks that the server answers; Redis needs nothing created.
    fn setup(&self) -> Result<()> {
        let mut conn = self.conn()?;
        redis::cmd("PING")
            .query::<()>(&mut *conn)
            .map_err(|e| redis_error(&self.target, "setup failed", e))
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let reply = self.run("load failed", &self.scripts.load, Some(id), &[b"1"])?;
        match &reply {
            Value::Nil => Ok(None),
            Value::Array(f) if f.len() == 4 => {
                let bad = || self.bad_reply("load failed", &reply);
                Ok(Some(restore(
                    id.clone(),
                    bytes(&f[3]).ok_or_else(bad)?,
                    int(&f[0]).ok_or_else(bad)?,
                    int(&f[1]).ok_or_else(bad)?,
                    int(&f[2]).ok_or_else(bad)?,
                )))
            }
            _ => Err(self.bad_reply("load failed", &reply)),
        }
    }

    fn save_session(&self, session: &mut Session) -> Result<()> {
        self.save(session, false)
    }

    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        self.save(session, true)
    }

    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        let reply = self.run(
            "touch failed",
            &self.scripts.touch,
            Some(id),
            &[id.as_str().as_bytes()],
        )?;
        int(&reply)
            .map(|n| n == 1)
            .ok_or_else(|| self.bad_reply("touch failed", &reply))
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        let reply = self.run(
            "delete failed",
            &self.scripts.delete,
            Some(id),
            &[id.as_str().as_bytes()],
        )?;
        int(&reply)
            .map(|n| n == 1)
            .ok_or_else(|| self.bad_reply("delete failed", &reply))
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        let reply = self.run("lookup failed", &self.scripts.load, Some(id), &[b"0"])?;
        Ok(!matches!(reply, Value::Nil))
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(Paged::new(move |after| self.page(after))))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        let limit = i64::try_from(duration_millis(max_idle))
            .unwrap_or(i64::MAX)
            .to_string();
        let batch = DELETE_BATCH.to_string();
        let mut total = 0usize;
        loop {
            let reply = self.run(
                "deleting old sessions failed",
                &self.scripts.delete_old,
                None,
                &[limit.as_bytes(), batch.as_bytes()],
            )?;
            match ints(&reply).as_deref() {
                Some([removed, seen]) => {
                    total += usize::try_from(*removed).unwrap_or(0);
                    if *seen == 0 {
                        return Ok(total);
                    }
                }
                _ => return Err(self.bad_reply("deleting old sessions failed", &reply)),
            }
        }
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        true
    }
}

/// Opens pooled connections with a connect timeout and read/write timeouts.
struct Manager {
    client: Client,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    fn connect(&self) -> std::result::Result<Connection, RedisError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.io_timeout))?;
        conn.set_write_timeout(Some(self.io_timeout))?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> std::result::Result<(), RedisError> {
        redis::cmd("PING").query(conn)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        !conn.is_open()
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption(format!(
            "key prefix {prefix:?} must be 1 to {MAX_PREFIX_LEN} characters from A-Z a-z 0-9 _ - . :"
        )))
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Array(items) => items.iter().map(int).collect(),
        _ => None,
    }
}

/// Turns a client error into an [`Error::Backend`] that says what to do.
fn redis_error(target: &str, what: &str, e: RedisError) -> Error {
    let hint = if e.is_connection_refusal() {
        "connection refused: check that Redis is running and listening at this address"
    } else if e.is_timeout() {
        "timed out: check that Redis is running and not overloaded"
    } else if e.is_connection_dropped() || e.is_io_error() {
        "could not talk to the server: check that Redis is running and reachable"
    } else {
        match e.code() {
            Some("NOAUTH" | "WRONGPASS") => "authentication failed: check the password in the URL",
            Some("NOPERM") => "permission denied: grant the user rights on these keys and EVAL",
            Some("OOM") => "Redis is out of memory (maxmemory): free memory or raise the limit",
            Some("READONLY") => "the server is a read-only replica: point the URL at the primary",
            _ => "the server rejected the command",
        }
    };
    backend_error(
        BACKEND,
        target,
        format!("{what}: {hint} ({e})"),
        Some(Box::new(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(check_prefix("app:sessions-1.x").is_ok());
        for bad in ["", "a b", "{x}", "a*", &"p".repeat(65)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
