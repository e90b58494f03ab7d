//! Stores for the frameworks' own test suites (`.ci/upstream.sh`).
//!
//! `SESSIONLOG_UPSTREAM_BACKEND` picks the backend behind the adapters:
//! `log`, `hashed` (HashedIds<LogStore>), `dir`, `memory`, `postgres`,
//! `mysql` or `redis`. File stores get a fresh temporary location per
//! store the suite asks for; server stores share one fresh table (or key
//! prefix) per test process, which the suites' random session ids keep
//! apart. The server URLs are those of the repository's tests
//! (`SESSIONLOG_POSTGRES_URL`, `SESSIONLOG_MYSQL_URL`,
//! `SESSIONLOG_REDIS_URL`, defaulting to the local servers of
//! `.ci/servers.sh`).
//!
//! Nothing here changes what the suites check: each adapter type below
//! only forwards the framework's trait to sessionlog's adapter.

use sessionlog::{
    DirStore, HashedIds, LogStore, MemoryStore, MySqlStore, PostgresStore, RedisStore,
};

/// The backend named by `SESSIONLOG_UPSTREAM_BACKEND` (default `log`).
pub fn backend() -> String {
    std::env::var("SESSIONLOG_UPSTREAM_BACKEND").unwrap_or_else(|_| "log".to_owned())
}

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A name no other test process uses (table or key prefix).
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// One backend, opened, and the temporary directory of a file store (it
/// must outlive the store).
pub enum Backend {
    /// LogStore.
    Log(LogStore),
    /// HashedIds<LogStore>.
    Hashed(HashedIds<LogStore>),
    /// DirStore.
    Dir(DirStore),
    /// MemoryStore.
    Memory(MemoryStore),
    /// PostgresStore.
    Postgres(PostgresStore),
    /// MySqlStore.
    MySql(MySqlStore),
    /// RedisStore.
    Redis(RedisStore),
}

/// Whether the backend is a server (one store per test process).
pub fn is_server() -> bool {
    matches!(backend().as_str(), "postgres" | "mysql" | "redis")
}

/// Opens the backend named by `SESSIONLOG_UPSTREAM_BACKEND`; a file store
/// in `tmp`.
pub fn open(tmp: &std::path::Path) -> Backend {
    use sessionlog::SessionStore;
    match backend().as_str() {
        "log" => Backend::Log(LogStore::open(tmp.join("s.log")).expect("open LogStore")),
        "hashed" => Backend::Hashed(HashedIds::new(
            LogStore::open(tmp.join("s.log")).expect("open LogStore"),
        )),
        "dir" => Backend::Dir(DirStore::open(tmp.join("d")).expect("open DirStore")),
        "memory" => Backend::Memory(MemoryStore::new()),
        "postgres" => {
            let s = PostgresStore::options(&url(
                "SESSIONLOG_POSTGRES_URL",
                "postgres://postgres@127.0.0.1/test",
            ))
            .table(&unique("upstream"))
            .open()
            .expect("open PostgresStore");
            s.setup().expect("setup");
            Backend::Postgres(s)
        }
        "mysql" => {
            let s =
                MySqlStore::options(&url("SESSIONLOG_MYSQL_URL", "mysql://root@127.0.0.1/test"))
                    .table(&unique("upstream"))
                    .open()
                    .expect("open MySqlStore");
            s.setup().expect("setup");
            Backend::MySql(s)
        }
        "redis" => {
            let s = RedisStore::options(&url("SESSIONLOG_REDIS_URL", "redis://127.0.0.1/"))
                .key_prefix(&format!("{}:", unique("upstream")))
                .open()
                .expect("open RedisStore");
            s.setup().expect("setup");
            Backend::Redis(s)
        }
        other => panic!(
            "SESSIONLOG_UPSTREAM_BACKEND={other}: expected log, hashed, dir, memory, postgres, \
             mysql or redis"
        ),
    }
}

/// Declares `$name`, an enum of one adapter `$ty` per backend, made with
/// `$ty::new`; clones share the backend.
#[allow(unused_macros)]
macro_rules! adapters {
    ($name:ident, $ty:ident) => {
        /// sessionlog's adapter over the chosen backend.
        #[derive(Clone, Debug)]
        pub(crate) enum $name {
            Log($ty<sessionlog::LogStore>),
            Hashed($ty<sessionlog::HashedIds<sessionlog::LogStore>>),
            Dir($ty<sessionlog::DirStore>),
            Memory($ty<sessionlog::MemoryStore>),
            Postgres($ty<sessionlog::PostgresStore>),
            MySql($ty<sessionlog::MySqlStore>),
            Redis($ty<sessionlog::RedisStore>),
        }

        impl $name {
            pub(crate) fn new(b: crate::Backend) -> $name {
                match b {
                    crate::Backend::Log(s) => $name::Log($ty::new(s)),
                    crate::Backend::Hashed(s) => $name::Hashed($ty::new(s)),
                    crate::Backend::Dir(s) => $name::Dir($ty::new(s)),
                    crate::Backend::Memory(s) => $name::Memory($ty::new(s)),
                    crate::Backend::Postgres(s) => $name::Postgres($ty::new(s)),
                    crate::Backend::MySql(s) => $name::MySql($ty::new(s)),
                    crate::Backend::Redis(s) => $name::Redis($ty::new(s)),
                }
            }
        }
    };
}

/// Forwards `$call` to the adapter inside whichever variant `$e` is.
#[allow(unused_macros)]
macro_rules! each {
    ($name:ident, $e:expr, $s:ident => $call:expr) => {
        match $e {
            $name::Log($s) => $call,
            $name::Hashed($s) => $call,
            $name::Dir($s) => $call,
            $name::Memory($s) => $call,
            $name::Postgres($s) => $call,
            $name::MySql($s) => $call,
            $name::Redis($s) => $call,
        }
    };
}

/// A store for one test: a fresh file store in its own temporary
/// directory, or the process's one server store. `$kind` caches the
/// server's adapter.
#[allow(unused_macros)]
macro_rules! fresh {
    ($kind:ident) => {{
        static SERVER: std::sync::Mutex<Option<$kind>> = std::sync::Mutex::new(None);
        if crate::is_server() {
            let mut slot = SERVER.lock().unwrap_or_else(|e| e.into_inner());
            let a = slot.get_or_insert_with(|| {
                $kind::new(crate::open(std::path::Path::new("/nonexistent")))
            });
            (a.clone(), None)
        } else {
            let tmp = tempfile::tempdir().expect("temporary directory");
            let a = $kind::new(crate::open(tmp.path()));
            (a, Some(std::sync::Arc::new(tmp)))
        }
    }};
}

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "tower015")]
pub mod tower;
#[cfg(feature = "tower014")]
pub mod tower014;
