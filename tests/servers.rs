//! Guards what the conformance suite cannot show for the server backends
//! (PostgresStore, MySqlStore, RedisStore), each under its feature:
//! - several processes share one store without lost updates (the test
//!   binary re-runs itself as 4 child processes incrementing one counter);
//! - a server that is not there, or a missing database, gives a clear
//!   `Error::Backend` at once instead of a hang or a panic;
//! - data at the 16 MiB default limit round-trips byte for byte, one byte
//!   more is `TooLarge`;
//! - `iter_sessions` pages through more sessions than one page holds;
//! - unsafe table names and key prefixes are refused before any SQL.
//!
//! The servers must be running (`bash .ci/servers.sh`); an unreachable one
//! fails these tests, it never skips them.
#![cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]

#[macro_use]
mod common;
use common::id;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::{Backend, Config};
use common::servers::Named;
use sessionlog::{Error, Session, SessionStore};

/// Set in the children of a multi-process test: the location to open.
const CHILD_ENV: &str = "SESSIONLOG_TEST_CHILD_LOCATION";
const CHILDREN: u64 = 4;
const INCREMENTS: u64 = 50;

fn read_counter(s: &Session) -> u64 {
    u64::from_le_bytes(s.data[..8].try_into().expect("8 bytes"))
}

fn increment<S: SessionStore>(store: &S) {
    let cid = id("counter");
    for _ in 0..INCREMENTS {
        loop {
            let mut c = store
                .load_session(&cid)
                .expect("load counter")
                .unwrap_or_else(|| Session::new(cid.clone(), 0u64.to_le_bytes().to_vec()));
            c.data = (read_counter(&c) + 1).to_le_bytes().to_vec();
            match store.save_session_if_unchanged(&mut c) {
                Ok(()) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("counter save: {e}"),
            }
        }
    }
}

/// The parent creates the location and starts the children (this same
/// test, run by name); each child increments the counter 50 times.
fn shared_counter_across_processes<B: Named>(test_name: &str) {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let store = B::open_named(&name);
        assert!(store.is_multiprocess_safe());
        increment(&store);
        return;
    }
    let cfg = Config::default();
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    let exe = std::env::current_exe().expect("current_exe");
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, loc.name())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for child");
        assert!(
            out.status.success(),
            "a child failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = store
        .load_session(&id("counter"))
        .expect("load")
        .expect("present");
    assert_eq!(read_counter(&c), CHILDREN * INCREMENTS, "no lost update");
    assert_eq!(c.version(), CHILDREN * INCREMENTS);
}

fn nothing_listening_fails_fast<S: SessionStore + std::fmt::Debug>(
    open: impl FnOnce() -> sessionlog::Result<S>,
    backend: &str,
) {
    let start = Instant::now();
    let err = open().expect_err("nothing listens on port 1");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    match &err {
        Error::Backend {
            backend: b,
            target,
            message,
            ..
        } => {
            assert_eq!(*b, backend);
            assert!(target.contains(":1"), "{target}");
            assert!(!message.is_empty());
        }
        other => panic!("expected Error::Backend, got {other:?}"),
    }
    assert!(
        err.to_string().contains("running"),
        "says what to check: {err}"
    );
}

fn missing_database_is_named<S: SessionStore + std::fmt::Debug>(
    open: impl FnOnce() -> sessionlog::Result<S>,
    words: &str,
) {
    let err = open().expect_err("no such database");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains(words), "{err}");
}

fn max_size_round_trips<B: Backend>() {
    let cfg = Config {
        max_session_size: sessionlog::DEFAULT_MAX_SESSION_SIZE,
        ..Config::default()
    };
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    let data: Vec<u8> = (0..cfg.max_session_size)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let mut s = Session::new(id("big"), data.clone());
    store.save_session(&mut s).expect("16 MiB fits");
    let back = store.load_session(&s.id).expect("load").expect("present");
    assert!(back.data == data, "byte for byte");
    let mut over = Session::new(id("big"), vec![7u8; cfg.max_session_size + 1]);
    let err = store.save_session(&mut over).expect_err("too large");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let got: Vec<_> = store
        .iter_sessions()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("items");
    assert_eq!(got.len(), 1);
    assert!(got[0].data == data);
}

fn iter_pages_through_many<B: Backend>() {
    let cfg = Config::default();
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    let mut want = HashSet::new();
    for i in 0..250u32 {
        let mut s = Session::new(id(&format!("s{i:04}")), i.to_le_bytes().to_vec());
        if i % 7 == 0 {
            s.expires = Some(sessionlog::Clock::now(&cfg.clock) + Duration::from_secs(1));
        } else {
            want.insert(s.id.clone());
        }
        store.save_session(&mut s).expect("save");
    }
    loc.advance(&cfg, Duration::from_secs(2));
    let mut seen = HashSet::new();
    for s in store.iter_sessions().expect("iter") {
        let s = s.expect("item");
        assert!(seen.insert(s.id.clone()), "{} listed twice", s.id);
    }
    assert_eq!(seen, want);
    let removed = store
        .delete_old_sessions(Duration::from_secs(3600))
        .expect("delete old");
    assert_eq!(removed, 250 - want.len(), "the expired ones");
}

macro_rules! server_tests {
    ($feature:literal, $m:ident, $backend:ty, $store:ident, $dead_url:literal, $missing_db:expr, $words:literal) => {
        #[cfg(feature = $feature)]
        mod $m {
            use super::*;
            use sessionlog::$store;

            #[test]
            fn shared_counter_across_processes() {
                super::shared_counter_across_processes::<$backend>(concat!(
                    stringify!($m),
                    "::shared_counter_across_processes"
                ));
            }

            #[test]
            fn nothing_listening_fails_fast() {
                super::nothing_listening_fails_fast(|| $store::open($dead_url), $feature);
            }

            #[test]
            fn missing_database_is_named() {
                let url: String = $missing_db;
                super::missing_database_is_named(|| $store::open(&url), $words);
            }

            #[test]
            fn max_size_round_trips() {
                super::max_size_round_trips::<$backend>();
            }

            #[test]
            fn iter_pages_through_many() {
                super::iter_pages_through_many::<$backend>();
            }

            #[test]
            fn unsafe_names_are_refused() {
                let err = $store::builder($dead_url)
                    .pool_size(1)
                    .open_with_name("x; DROP TABLE y")
                    .expect_err("refused");
                assert!(matches!(err, Error::InvalidOption(_)), "{err}");
            }
        }
    };
}

/// Sets the table name or key prefix, whichever the builder has.
trait WithName: Sized {
    type Store;
    fn open_with_name(self, name: &str) -> sessionlog::Result<Self::Store>;
}

#[cfg(feature = "postgres")]
impl WithName for sessionlog::PostgresOptions {
    type Store = sessionlog::PostgresStore;
    fn open_with_name(self, name: &str) -> sessionlog::Result<Self::Store> {
        self.table(name).open()
    }
}

#[cfg(feature = "mysql")]
impl WithName for sessionlog::MySqlOptions {
    type Store = sessionlog::MySqlStore;
    fn open_with_name(self, name: &str) -> sessionlog::Result<Self::Store> {
        self.table(name).open()
    }
}

#[cfg(feature = "redis")]
impl WithName for sessionlog::RedisOptions {
    type Store = sessionlog::RedisStore;
    fn open_with_name(self, name: &str) -> sessionlog::Result<Self::Store> {
        self.key_prefix(name).open()
    }
}

server_tests!(
    "postgres",
    postgres,
    common::servers::Postgres,
    PostgresStore,
    "postgres://postgres@127.0.0.1:1/test",
    common::servers::postgres_url()
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/sessionlog_no_such_db"))
        .expect("url has a database"),
    "database does not exist"
);

server_tests!(
    "mysql",
    mysql,
    common::servers::MySql,
    MySqlStore,
    "mysql://root@127.0.0.1:1/test",
    common::servers::mysql_url()
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/sessionlog_no_such_db"))
        .expect("url has a database"),
    "database does not exist"
);

server_tests!(
    "redis",
    redis,
    common::servers::Redis,
    RedisStore,
    "redis://127.0.0.1:1/",
    format!(
        "{}/9999",
        common::servers::redis_url().trim_end_matches('/')
    ),
    "DB index is out of range"
);

/// A private redis-server (started and stopped by this test only) goes
/// away and comes back: operations fail with `Error::Backend` meanwhile,
/// and the pool reconnects by itself afterwards.
#[cfg(feature = "redis")]
#[test]
fn redis_store_recovers_when_the_server_returns() {
    use sessionlog::RedisStore;
    let port = 20_000 + std::process::id() % 20_000;
    let start = || {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed (see SERVERS.md): {e}"))
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let wait_ready = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match RedisStore::open(&url) {
                Ok(store) => return store,
                Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    let mut server = start();
    let store = wait_ready("first start");
    let mut s = Session::new(id("r"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    server.kill().expect("kill our redis-server");
    server.wait().expect("reap");
    let err = store.load_session(&s.id).expect_err("server is gone");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    let mut server = start();
    drop(wait_ready("restart"));
    // The data went with the server (no persistence); the store works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        match store.save_session(&mut Session::new(id("r"), b"y".to_vec())) {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = server.kill();
    let _ = server.wait();
    result.expect("the pool reconnected");
}
