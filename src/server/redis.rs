//! `RedisStore`: sessions in Redis, every operation one Lua script.
//!
//! Key layout for prefix `P` (default `sessionlog`); the braces are a hash
//! tag, so that on a cluster every key of a store lives in one slot:
//!
//! ```text
//! {P}:s:<id>      hash  d = data, e = expires (ms, 0: none),
//!                       m = modified (ms), v = version, o = owner (if any)
//! {P}:modified    zset  id -> modified (ms)   for delete_old_sessions
//! {P}:expires     zset  id -> expires (ms)    sessions with a deadline
//! {P}:ids         zset  id -> 0               keyset pages for iter_sessions
//! {P}:o:<owner>   zset  id -> order of modification   one owner's sessions
//! ```
//!
//! An owner's index is scored by the time of the last save or touch (ms),
//! raised where needed to just above the owner's highest score, so that
//! the order of the scores is the order in which the server applied the
//! owner's saves and touches, also within one millisecond (where the ms
//! alone would leave the order to the ids, random). The owner limit
//! evicts, and `sessions_of` lists, in that order; nothing reads these
//! scores as times. Entries scored in whole ms by an earlier version
//! order as before.
//!
//! An owner's index is updated in the script that saves, touches or
//! deletes a session, and is only a hint: `sessions_of` checks every entry
//! against the session (live, and still this owner's) and removes those
//! that are not. Entries of sessions that Redis expired by itself go on
//! the way: every save for an owner checks up to [`TRIM_BATCH`] of its
//! oldest entries, `sessions_of` checks them all, and the index key itself
//! carries a server-side expiry no earlier than its longest-lived session's,
//! so that the index of an owner who never returns goes when the last of
//! its sessions does.
//!
//! Scripts read the time with `TIME` (plus the test offset) and decide
//! liveness themselves. Each session key also carries a server-side expiry
//! (`PEXPIREAT`, at its deadline or after the store's idle limit,
//! whichever comes first), so Redis drops it by itself. Its index entries
//! go on the way: every save also removes up to [`TRIM_BATCH`] entries
//! whose deadline or idle limit has passed, and `delete_old_sessions`
//! removes the rest.

use std::time::Duration;

use redis::{Client, ConnectionAddr, ConnectionInfo, ConnectionLike, RedisError, Script, Value};

use super::pool::{Connect, Pool, Pooled};
use super::{Common, Host, Page, Paged, backend_error, common_setters, ms_i64, restore};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::observe::{Backend, Meters, Op};
use crate::owner::{Owner, SessionInfo};
use crate::session::{SaveMode, Session, duration_millis, expires_millis, from_millis};
use crate::store::{SessionIter, SessionStore, Touch};

const BACKEND: &str = "redis";

/// Largest prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// Sessions removed per `delete_old_sessions` script run, so that one run
/// never blocks the server for long.
const DELETE_BATCH: usize = 1000;

/// Index entries of dead sessions that one save removes at most: bounded
/// work per call, more than the sessions a save can make dead.
const TRIM_BATCH: usize = 16;

/// Data returned per `iter_sessions` page at most (at least one session).
const PAGE_BYTES: usize = 8 << 20;

/// Shared by every script. `KEYS[1..5]` = session, modified, expires, ids,
/// the owner index prefix; `ARGV[1]` = clock offset (ms), `ARGV[2]` = the
/// store's idle limit (ms, -1: none).
const PRELUDE: &str = r"
local oprefix = KEYS[5]
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
-- the server-side expiry: deadline or idle limit, in the server's own time;
-- returns it (nil: none)
local function deadline(k, e)
  local at = nil
  if e ~= 0 then at = e - off end
  if idle >= 0 and (at == nil or now - off + idle < at) then at = now - off + idle end
  if at == nil then redis.call('PERSIST', k) else redis.call('PEXPIREAT', k, at) end
  return at
end
-- removes id from the index of the owner of the session at k, if any
local function unown(k, id)
  local o = redis.call('HGET', k, 'o')
  if o then redis.call('ZREM', oprefix .. o, id) end
end
-- puts id into owner o's index as its latest modification: at now, or just
-- above the highest score there if that is not below now (saves in one ms);
-- 2^-8 ms is exact in a double up to 2^44 ms (the year 2527). The index
-- key lives at least as long as the session (server-side expiry at, nil:
-- none)
local function own(o, id, at)
  local ok = oprefix .. o
  local pt = redis.call('PTTL', ok)
  local score = now
  local top = redis.call('ZREVRANGE', ok, 0, 0, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 0.00390625 end
  redis.call('ZADD', ok, score, id)
  if at == nil then redis.call('PERSIST', ok)
  elseif pt == -2 or (pt >= 0 and now - off + pt < at) then redis.call('PEXPIREAT', ok, at) end
end
-- deletes the session id at key k and every index entry of it
local function drop(k, id)
  unown(k, id)
  redis.call('DEL', k)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
-- whether the session at k is live and owner o's
local function mine(k, o)
  return live(k) and redis.call('HGET', k, 'o') == o
end
";

/// `ARGV[3]` = '1' to check the version, `ARGV[4]` = expected version,
/// `ARGV[5]` = data, `ARGV[6]` = expires, `ARGV[7]` = id, `ARGV[8]` = the session
/// key prefix, `ARGV[9]` = how many dead index entries to remove,
/// `ARGV[10]` = the owner ('' for none), `ARGV[11]` = how many of the owner's
/// other live sessions to keep (-1: all). Returns {1, version, modified}
/// or {0, found}.
const SAVE: &str = r"
-- drop index entries of sessions whose deadline or idle limit passed
local trim = tonumber(ARGV[9])
local dead = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, trim)
if idle >= 0 then
  local idled = redis.call('ZRANGE', KEYS[2], '-inf', now - idle, 'BYSCORE', 'LIMIT', 0, trim)
  for _, id in ipairs(idled) do table.insert(dead, id) end
end
for _, id in ipairs(dead) do
  if id ~= ARGV[7] and not live(ARGV[8] .. id) then drop(ARGV[8] .. id, id) end
end
local found = live(KEYS[1]) or 0
if ARGV[3] == '1' and found ~= tonumber(ARGV[4]) then return {0, found} end
local e = tonumber(ARGV[6])
local o = ARGV[10]
local was = redis.call('HGET', KEYS[1], 'o')
if was and was ~= o then redis.call('ZREM', oprefix .. was, ARGV[7]) end
redis.call('HSET', KEYS[1], 'd', ARGV[5], 'e', ARGV[6], 'm', now, 'v', found + 1)
if o == '' then redis.call('HDEL', KEYS[1], 'o') else redis.call('HSET', KEYS[1], 'o', o) end
redis.call('ZADD', KEYS[2], now, ARGV[7])
if e ~= 0 then redis.call('ZADD', KEYS[3], e, ARGV[7]) else redis.call('ZREM', KEYS[3], ARGV[7]) end
redis.call('ZADD', KEYS[4], 0, ARGV[7])
local at = deadline(KEYS[1], e)
if o ~= '' then
  own(o, ARGV[7], at)
  local ok = oprefix .. o
  local keep = tonumber(ARGV[11])
  if keep >= 0 then
    -- the cap: the newest `keep` others stay, older live ones go
    local ids = redis.call('ZREVRANGE', ok, 0, -1)
    for _, id in ipairs(ids) do
      if id ~= ARGV[7] then
        local k = ARGV[8] .. id
        if mine(k, o) then
          if keep > 0 then keep = keep - 1 else drop(k, id) end
        else
          redis.call('ZREM', ok, id)
        end
      end
    end
  else
    -- the owner's oldest entries, dropped if their session is gone
    for _, id in ipairs(redis.call('ZRANGE', ok, 0, trim - 1)) do
      if id ~= ARGV[7] and not mine(ARGV[8] .. id, o) then redis.call('ZREM', ok, id) end
    end
  end
end
return {1, found + 1, now}
";

/// `ARGV[3]` = '1' to return the data. Returns nil or {e, m, v[, d, o]}.
const LOAD: &str = r"
if not live(KEYS[1]) then return nil end
if ARGV[3] == '1' then return redis.call('HMGET', KEYS[1], 'e', 'm', 'v', 'd', 'o') end
return redis.call('HMGET', KEYS[1], 'e', 'm', 'v')
";

/// `ARGV[3]` = id, `ARGV[4]` = the new deadline (ms, 0: none), or empty to
/// keep it. Returns 1 if touched, 0 if absent.
const TOUCH: &str = r"
if not live(KEYS[1]) then return 0 end
local e
if ARGV[4] == '' then
  e = tonumber(redis.call('HGET', KEYS[1], 'e'))
  redis.call('HSET', KEYS[1], 'm', now)
else
  e = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'm', now, 'e', ARGV[4])
  if e ~= 0 then redis.call('ZADD', KEYS[3], e, ARGV[3]) else redis.call('ZREM', KEYS[3], ARGV[3]) end
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
local at = deadline(KEYS[1], e)
local o = redis.call('HGET', KEYS[1], 'o')
if o then own(o, ARGV[3], at) end
return 1
";

/// `ARGV[3]` = id. Returns 1 if a live session was deleted.
const DELETE: &str = r"
local was = live(KEYS[1])
drop(KEYS[1], ARGV[3])
if was then return 1 end
return 0
";

/// `KEYS[1]` = the session key prefix; `ARGV[3]` = the max_idle argument (ms),
/// `ARGV[4]` = batch size. Returns {removed, looked at}.
const DELETE_OLD: &str = r"
local lim = tonumber(ARGV[3])
if idle >= 0 and idle < lim then lim = idle end
local n = tonumber(ARGV[4])
local old = redis.call('ZRANGE', KEYS[2], '-inf', now - lim, 'BYSCORE', 'LIMIT', 0, n)
local gone = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, n)
local removed = 0
for _, list in ipairs({old, gone}) do
  for _, id in ipairs(list) do
    if redis.call('ZSCORE', KEYS[4], id) then removed = removed + 1 end
    drop(KEYS[1] .. id, id)
  end
end
return {removed, #old + #gone}
";

/// `KEYS[1]` = the session key prefix; `ARGV[3]` = start ('-' or '(' .. id),
/// `ARGV[4]` = count, `ARGV[5]` = byte budget. Returns {last id looked at or
/// '', done, {id, e, m, v, d, ...}}.
const PAGE: &str = r"
local ids = redis.call('ZRANGE', KEYS[4], ARGV[3], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[4]))
local out, bytes, last = {}, 0, ''
for i, id in ipairs(ids) do
  local k = KEYS[1] .. id
  last = id
  if live(k) then
    local h = redis.call('HMGET', k, 'e', 'm', 'v', 'd', 'o')
    table.insert(out, id)
    for i = 1, 5 do table.insert(out, h[i]) end
    bytes = bytes + #h[4]
    if bytes >= tonumber(ARGV[5]) and i < #ids then return {last, 0, out} end
  end
end
local done = 0
if #ids < tonumber(ARGV[4]) then done = 1 end
return {last, done, out}
";

/// `KEYS[1]` = the session key prefix; `ARGV[3]` = the owner. Returns {id, e,
/// m, v, size, ...} of the owner's live sessions; drops the index entries
/// of the others.
const SESSIONS_OF: &str = r"
local ok = oprefix .. ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', ok, 0, -1)) do
  local k = KEYS[1] .. id
  if mine(k, ARGV[3]) then
    local h = redis.call('HMGET', k, 'e', 'm', 'v')
    table.insert(out, id)
    for i = 1, 3 do table.insert(out, h[i]) end
    table.insert(out, redis.call('HSTRLEN', k, 'd'))
  else
    redis.call('ZREM', ok, id)
  end
end
return out
";

/// `KEYS[1]` = the session key prefix; `ARGV[3]` = the owner, `ARGV[4]` = the
/// id to keep ('' for none). Deletes the owner's sessions (expired ones
/// too) but that one; returns how many were live.
const DELETE_OF: &str = r"
local ok = oprefix .. ARGV[3]
local n = 0
for _, id in ipairs(redis.call('ZRANGE', ok, 0, -1)) do
  if id ~= ARGV[4] then
    local k = KEYS[1] .. id
    if redis.call('HGET', k, 'o') == ARGV[3] then
      if live(k) then n = n + 1 end
      drop(k, id)
    else
      redis.call('ZREM', ok, id)
    end
  end
end
return n
";

/// Options for [`RedisStore`]; start with [`RedisStore::options`].
#[derive(Clone)]
pub struct RedisOptions {
    common: Common,
    prefix: String,
}

/// Prints the server from the parsed URL, never the password.
impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = super::shown_target(&self.common.url, |url| {
            redis::IntoConnectionInfo::into_connection_info(url)
                .map_or_else(|_| UNPARSED.to_owned(), |i| describe(&i))
        });
        f.debug_struct("RedisOptions")
            .field("target", &target)
            .field("prefix", &self.prefix)
            .field("common", &self.common)
            .finish()
    }
}

/// The server of `url` as messages show it, never the password.
#[cfg(feature = "tower-sessions")]
pub(crate) fn shown(url: &str) -> String {
    super::shown_target(url, |url| {
        redis::IntoConnectionInfo::into_connection_info(url)
            .map_or_else(|_| UNPARSED.to_owned(), |i| describe(&i))
    })
}

/// The target shown for a URL the client cannot parse.
const UNPARSED: &str = "(unparsable connection URL)";

/// `redis://user@host:port/db` from the parsed connection info: never the
/// password.
fn describe(info: &ConnectionInfo) -> String {
    let r = info.redis_settings();
    let user = r.username().map(|u| format!("{u}@")).unwrap_or_default();
    let db = r.db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{user}{}/{db}", hostport(host, *port)),
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{user}{}/{db}", hostport(host, *port))
        }
        ConnectionAddr::Unix(path) => format!("redis+unix://{user}{}?db={db}", path.display()),
        _ => format!("redis://{user}(unknown address)/{db}"),
    }
}

fn hostport(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
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
        let info = redis::IntoConnectionInfo::into_connection_info(self.common.url.as_str())
            .map_err(|e| {
                // The client's detail may quote parts of the URL: only its kind.
                backend_error(
                    BACKEND,
                    UNPARSED,
                    format!(
                        "invalid connection URL ({:?}); expected redis://:password@host:port/db",
                        e.kind()
                    ),
                    None,
                )
            })?;
        let target = describe(&info);
        let client = client_for(info, &self.common, &target)?;
        let connector = Connector {
            client,
            target: target.clone(),
            connect_timeout: self.common.connect_timeout,
            io_timeout: self.common.io_timeout(),
        };
        let mut first = connector.connect()?;
        redis::cmd("PING")
            .query::<()>(&mut first)
            .map_err(|e| connector.error("connect", e))?;
        let pool = Pool::new(
            connector,
            usize::try_from(self.common.pool_size).unwrap_or(usize::MAX),
            self.common.connect_timeout,
            BACKEND,
            &target,
        );
        pool.put(first);
        let p = &self.prefix;
        Ok(RedisStore {
            meters: Meters::new(
                Backend::Redis,
                &super::metrics_store(&target, "prefix", &self.prefix),
            ),
            pool,
            target,
            keys: Keys {
                session: format!("{{{p}}}:s:"),
                modified: format!("{{{p}}}:modified"),
                expires: format!("{{{p}}}:expires"),
                ids: format!("{{{p}}}:ids"),
                owners: format!("{{{p}}}:o:"),
            },
            scripts: Scripts {
                save: Script::new(&format!("{PRELUDE}{SAVE}")),
                load: Script::new(&format!("{PRELUDE}{LOAD}")),
                touch: Script::new(&format!("{PRELUDE}{TOUCH}")),
                delete: Script::new(&format!("{PRELUDE}{DELETE}")),
                delete_old: Script::new(&format!("{PRELUDE}{DELETE_OLD}")),
                page: Script::new(&format!("{PRELUDE}{PAGE}")),
                sessions_of: Script::new(&format!("{PRELUDE}{SESSIONS_OF}")),
                delete_of: Script::new(&format!("{PRELUDE}{DELETE_OF}")),
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
/// let store = RedisStore::options("redis://127.0.0.1/")
///     .key_prefix("myapp")
///     .open()?;
/// store.setup()?;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    pool: Pool<Connector>,
    target: String,
    prefix: String,
    keys: Keys,
    scripts: Scripts,
    common: Common,
    /// What the store reports: call latency, timeouts, errors.
    meters: Meters,
}

struct Keys {
    session: String,
    modified: String,
    expires: String,
    ids: String,
    owners: String,
}

struct Scripts {
    save: Script,
    load: Script,
    touch: Script,
    delete: Script,
    delete_old: Script,
    page: Script,
    sessions_of: Script,
    delete_of: Script,
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
        RedisStore::options(url).open()
    }

    /// Options for a store at `url`, to change before [`RedisOptions::open`]
    /// (the same shape as every backend's `options()`).
    pub fn options(url: &str) -> RedisOptions {
        RedisOptions {
            common: Common::new(url),
            prefix: "sessionlog".to_owned(),
        }
    }

    fn conn(&self) -> Result<Pooled<'_, Connector>> {
        self.pool.get()
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
            .key(&self.keys.owners)
            .arg(self.common.clock_offset.millis())
            .arg(idle);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn()?;
        inv.invoke::<Value>(&mut *conn)
            .map_err(|e| fail(&mut conn, what, e))
    }

    /// An error for a reply of the wrong shape. It describes the shape
    /// only: the reply holds session ids and data.
    fn bad_reply(&self, what: &str, v: &Value) -> Error {
        backend_error(
            BACKEND,
            &self.target,
            format!(
                "{what}: unexpected reply ({}) (is another program using these keys?)",
                shape(v)
            ),
            None,
        )
    }

    /// Refreshes `modified`, and sets the deadline to `expires` (ms as
    /// text) unless it is empty.
    fn touch_as(&self, id: &SessionId, expires: &[u8]) -> Result<bool> {
        let reply = self.run(
            "touch failed",
            &self.scripts.touch,
            Some(id),
            &[id.as_bytes(), expires],
        )?;
        int(&reply)
            .map(|n| n == 1)
            .ok_or_else(|| self.bad_reply("touch failed", &reply))
    }

    fn save_as(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.common.check_size(session)?;
        let expected = session.version().to_string();
        let expires = ms_i64(expires_millis(session.expires)).to_string();
        let check = match mode {
            SaveMode::IfUnchanged => "1",
            SaveMode::Overwrite => "0",
        };
        let trim = TRIM_BATCH.to_string();
        let owner = session.owner.as_ref().map_or("", Owner::as_str);
        let kept = self.common.others_kept().unwrap_or(-1).to_string();
        let reply = self.run(
            "save failed",
            &self.scripts.save,
            Some(&session.id),
            &[
                check.as_bytes(),
                expected.as_bytes(),
                &session.data,
                expires.as_bytes(),
                session.id.as_bytes(),
                self.keys.session.as_bytes(),
                trim.as_bytes(),
                owner.as_bytes(),
                kept.as_bytes(),
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

    fn delete_of(&self, what: &str, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let keep = keep.map_or("", SessionId::as_str);
        let reply = self.run(
            what,
            &self.scripts.delete_of,
            None,
            &[owner.as_str().as_bytes(), keep.as_bytes()],
        )?;
        int(&reply)
            .map(|n| usize::try_from(n).unwrap_or(0))
            .ok_or_else(|| self.bad_reply(what, &reply))
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
        let mut sessions = Vec::with_capacity(flat.len() / 6);
        for row in flat.chunks(6) {
            let [id, e, m, v, d, o] = row else {
                return Err(bad());
            };
            let id = SessionId::new(String::from_utf8_lossy(&bytes(id).ok_or_else(bad)?))?;
            let mut s = restore(
                id,
                bytes(d).ok_or_else(bad)?,
                int(e).ok_or_else(bad)?,
                int(m).ok_or_else(bad)?,
                int(v).ok_or_else(bad)?,
            );
            s.owner = super::stored_owner(bytes(o).as_deref());
            sessions.push(s);
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
        self.meters.call(Op::Setup, || {
            let mut conn = self.conn()?;
            redis::cmd("PING")
                .query::<()>(&mut *conn)
                .map_err(|e| fail(&mut conn, "setup failed", e))
        })
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.meters.call(Op::Load, || {
            let reply = self.run("load failed", &self.scripts.load, Some(id), &[b"1"])?;
            match &reply {
                Value::Nil => Ok(None),
                Value::Array(f) if f.len() == 5 => {
                    let bad = || self.bad_reply("load failed", &reply);
                    let mut s = restore(
                        id.clone(),
                        bytes(&f[3]).ok_or_else(bad)?,
                        int(&f[0]).ok_or_else(bad)?,
                        int(&f[1]).ok_or_else(bad)?,
                        int(&f[2]).ok_or_else(bad)?,
                    );
                    s.owner = super::stored_owner(bytes(&f[4]).as_deref());
                    Ok(Some(s))
                }
                _ => Err(self.bad_reply("load failed", &reply)),
            }
        })
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.meters.call(Op::Save, || self.save_as(session, mode))
    }

    /// One script refreshes `modified` (and sets the deadline): the data
    /// stay on the server and the version stays, so a conditional save
    /// loaded before the touch still succeeds.
    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        self.meters.call(Op::Touch, || match touch {
            Touch::Idle => self.touch_as(id, b""),
            Touch::Until(expires) => {
                let expires = ms_i64(expires_millis(expires)).to_string();
                self.touch_as(id, expires.as_bytes())
            }
        })
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Delete, || {
            let reply = self.run(
                "delete failed",
                &self.scripts.delete,
                Some(id),
                &[id.as_bytes()],
            )?;
            int(&reply)
                .map(|n| n == 1)
                .ok_or_else(|| self.bad_reply("delete failed", &reply))
        })
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Has, || {
            let reply = self.run("lookup failed", &self.scripts.load, Some(id), &[b"0"])?;
            Ok(!matches!(reply, Value::Nil))
        })
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(Paged::new(move |after| self.page(after))))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.meters.call(Op::Expire, || {
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
        })
    }

    /// One script over the owner's index, which it cleans on the way.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        self.meters.call(Op::Owner, || {
            const WHAT: &str = "listing an owner's sessions failed";
            let reply = self.run(
                WHAT,
                &self.scripts.sessions_of,
                None,
                &[owner.as_str().as_bytes()],
            )?;
            let bad = || self.bad_reply(WHAT, &reply);
            let Value::Array(flat) = &reply else {
                return Err(bad());
            };
            // The script lists the owner's index from the latest
            // modification down: that order breaks ties of `modified`.
            let mut list = Vec::with_capacity(flat.len() / 5);
            for (later, row) in flat.chunks(5).rev().enumerate() {
                let [id, e, m, v, size] = row else {
                    return Err(bad());
                };
                let id = SessionId::new(String::from_utf8_lossy(&bytes(id).ok_or_else(bad)?))?;
                let info = super::info(
                    id,
                    Some(owner.clone()),
                    int(e).ok_or_else(bad)?,
                    int(m).ok_or_else(bad)?,
                    int(v).ok_or_else(bad)?,
                    int(size).ok_or_else(bad)?,
                );
                list.push((info, later));
            }
            Ok(crate::owner::newest_first(list))
        })
    }

    /// One script: the owner's sessions but `keep` are deleted at one
    /// moment.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        self.meters.call(Op::Owner, || {
            self.delete_of("deleting an owner's sessions failed", owner, keep)
        })
    }

    /// The same script: the keys are gone when it returns, but Redis may
    /// keep their bytes in freed memory, its append-only file and
    /// snapshots, and replicas (SERVERS.md).
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

/// The client for `info`: TLS for `rediss://` URLs (with `tls_ca_file`'s
/// CAs when given); plaintext, or TLS without verification (`#insecure`),
/// to a host that is not loopback is refused unless allowed by name.
// The TLS arm does more with the `redis-tls` feature: not one `if`.
#[allow(clippy::collapsible_match)]
fn client_for(info: ConnectionInfo, common: &Common, target: &str) -> Result<Client> {
    let open_error = |e| redis_error(target, common.connect_timeout, "open", e);
    match info.addr() {
        ConnectionAddr::Tcp(host, _) => {
            if common.tls_asked() {
                return Err(Error::InvalidOption(
                    "require_tls / tls_ca_file need a rediss:// URL".into(),
                ));
            }
            common.check_plaintext(
                BACKEND,
                target,
                Host::Tcp(host),
                "redis-tls",
                "a rediss:// URL",
            )?;
        }
        ConnectionAddr::Unix(_) if common.tls_asked() => {
            return Err(Error::InvalidOption(
                "require_tls / tls_ca_file need a rediss:// URL, not a Unix socket".into(),
            ));
        }
        ConnectionAddr::TcpTls { host, insecure, .. } => {
            // TLS without verification is no better than plaintext against
            // someone on the path.
            if *insecure {
                common.check_plaintext(
                    BACKEND,
                    target,
                    Host::Tcp(host),
                    "redis-tls",
                    "a rediss:// URL without #insecure",
                )?;
            }
            #[cfg(feature = "redis-tls")]
            if let Some(path) = &common.tls_ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::InvalidOption(format!("cannot read tls_ca_file {}: {e}", path.display()))
                })?;
                return Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
                .map_err(open_error);
            }
        }
        _ => {}
    }
    Client::open(info).map_err(open_error)
}

/// Opens connections with a connect deadline (which covers the handshake
/// too) and read/write deadlines.
struct Connector {
    client: Client,
    target: String,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Connector {
    fn error(&self, what: &str, e: RedisError) -> Error {
        let after = if what == "connect" {
            self.connect_timeout
        } else {
            self.io_timeout
        };
        redis_error(&self.target, after, what, e)
    }
}

impl Connect for Connector {
    type Conn = redis::Connection;

    fn connect(&self) -> Result<redis::Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|e| self.error("connect", e))?;
        conn.set_read_timeout(Some(self.io_timeout))
            .map_err(|e| self.error("connect", e))?;
        conn.set_write_timeout(Some(self.io_timeout))
            .map_err(|e| self.error("connect", e))?;
        Ok(conn)
    }

    fn is_broken(&self, conn: &mut redis::Connection) -> bool {
        !conn.is_open()
    }
}

/// Turns a failed request into an error, and discards the connection when
/// the failure leaves its state unknown (a timeout mid-reply, an I/O error).
fn fail(conn: &mut Pooled<'_, Connector>, what: &str, e: RedisError) -> Error {
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
    {
        conn.discard();
    }
    conn.pool_connector().error(what, e)
}

/// A reply's shape, without its content.
fn shape(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(_) => "an integer".into(),
        Value::BulkString(b) => format!("a string of {} bytes", b.len()),
        Value::SimpleString(s) => format!("a status of {} bytes", s.len()),
        Value::Okay => "OK".into(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().take(8).map(shape).collect();
            let more = if items.len() > 8 { ", ..." } else { "" };
            format!("an array of {}: [{}{more}]", items.len(), inner.join(", "))
        }
        _ => "a value of another type".into(),
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
fn redis_error(target: &str, after: Duration, what: &str, e: RedisError) -> Error {
    if e.is_timeout() {
        return super::timeout_error(BACKEND, target, what.trim_end_matches(" failed"), after);
    }
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

    #[test]
    fn targets_come_from_the_parsed_url_without_the_password() {
        let d = |url: &str| {
            describe(&redis::IntoConnectionInfo::into_connection_info(url).expect("parses"))
        };
        assert_eq!(
            d("redis://:pw@cache.internal:6380/2"),
            "redis://cache.internal:6380/2"
        );
        assert_eq!(
            d("redis://u:pw@cache.internal/0"),
            "redis://u@cache.internal:6379/0"
        );
        assert_eq!(d("redis://[::1]:7000/"), "redis://[::1]:7000/0");
    }

    #[test]
    fn replies_are_described_by_shape_only() {
        let v = Value::Array(vec![
            Value::BulkString(b"secret-data".to_vec()),
            Value::Int(3),
            Value::Nil,
        ]);
        let text = shape(&v);
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(
            text,
            "an array of 3: [a string of 11 bytes, an integer, nil]"
        );
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("app:sessions-1.x").is_ok());
        for bad in ["", "a b", "{x}", "a*", &"p".repeat(65)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
