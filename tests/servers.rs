//! Guards what the conformance suite cannot show for the server backends
//! (PostgresStore, MySqlStore, RedisStore), each under its feature:
//! - several processes share one store without lost updates (the test
//!   binary re-runs itself as 4 child processes incrementing one counter);
//! - a server that is not there, or a missing database, gives a clear
//!   `Error::Backend` at once instead of a hang or a panic;
//! - data at the 16 MiB default limit round-trips byte for byte, one byte
//!   more is `TooLarge`;
//! - `iter_sessions` pages through more sessions than one page holds;
//! - unsafe table names and key prefixes are refused before any SQL;
//! - issue 12: a stalled server or proxy fails a call or `open` with
//!   `Error::Timeout` (16); open/drop cycles leave no threads behind (17);
//!   no password in `Debug` or errors, whatever the URL's form (14); no
//!   session id or data in errors (13); plaintext to a remote host is
//!   refused (15).
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
use common::servers::{Named, Proxy, thread_count, upstream_of, via_port, within};
use sessionlog::{Error, Session, SessionStore};

/// Set in the children of a multi-process test: the location to open.
const CHILD_ENV: &str = "SESSIONLOG_TEST_CHILD_LOCATION";
/// Set in the child of a thread-count test: the location to open.
const THREADS_ENV: &str = "SESSIONLOG_TEST_THREADS_LOCATION";
/// An outer bound for calls that must time out by themselves much sooner.
const HANG: Duration = Duration::from_secs(60);
/// A password that must never appear in a message.
const SECRET: &str = "Pw1sEcReT";
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

/// Runs this same test in a child process with `env` = `value`, and
/// fails if the child fails.
fn run_child(test_name: &str, env: &str, value: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(env, value)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "the child failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 12, item 17: 40 open/use/drop cycles leave the thread count where
/// one cycle left it (r2d2 left 3 threads per dropped pool for ~30 s). Runs
/// in a child process of its own, where no other test adds threads.
fn open_drop_cycles_leave_no_threads<B: Named>(test_name: &str) {
    if let Ok(name) = std::env::var(THREADS_ENV) {
        let cycle = || {
            let store = B::open_named(&name);
            assert!(!store.has_session(&id("nobody")).expect("has"));
            drop(store);
        };
        cycle();
        let before = thread_count();
        for _ in 0..40 {
            cycle();
        }
        let after = thread_count();
        assert!(
            after <= before + 2,
            "threads grew from {before} to {after} over 40 open/drop cycles"
        );
        return;
    }
    let loc = B::new_location();
    loc.open(&Config::default()).setup().expect("setup");
    run_child(test_name, THREADS_ENV, loc.name());
}

/// Issue 26, point 5: a store opens, works and drops on a thread that runs
/// an async runtime (a multi-thread worker, a current-thread runtime,
/// actix-web's runtime) as well as outside any: no "cannot start a runtime
/// from within a runtime" or "cannot drop a runtime" panic.
fn lives_inside_every_runtime<B: Named>() {
    let loc = B::new_location();
    loc.open(&Config::default()).setup().expect("setup");
    let name = Named::name(&loc).to_owned();
    let cycle = move |tag: &'static str| {
        let store = B::open_named(&name);
        let sid = id(tag);
        let mut s = Session::new(sid.clone(), tag.as_bytes().to_vec());
        store.save_session(&mut s).expect("save");
        let back = store.load_session(&sid).expect("load").expect("present");
        assert_eq!(back.data, tag.as_bytes());
        // The last handle is dropped here, on the runtime's thread.
        drop(store);
    };
    cycle("outside-any-runtime");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let c = cycle.clone();
    multi
        .block_on(async move { tokio::spawn(async move { c("multi-thread-worker") }).await })
        .expect("the task on a worker finished without a panic");
    let c = cycle.clone();
    multi.block_on(async move { c("multi-thread-block-on") });
    drop(multi);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    let c = cycle.clone();
    current.block_on(async move { c("current-thread") });
    drop(current);
    actix_web::rt::System::new().block_on(async move { cycle("actix-rt") });
}

/// The error and everything it carries, as text.
fn all_text(err: &Error) -> String {
    let mut out = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    out
}

/// Issue 12, item 14: neither the builder's `Debug` nor the error of a
/// failed `open` shows the password, for each way of writing it.
fn no_password_in_debug_or_errors<O: std::fmt::Debug, S: std::fmt::Debug>(
    urls: &[String],
    builder: impl Fn(&str) -> O,
    open: impl Fn(O) -> sessionlog::Result<S>,
) {
    let pieces: Vec<&str> = SECRET.split(['/', '?', '#']).collect();
    for url in urls {
        let shown = format!("{:?}", builder(url));
        for p in &pieces {
            assert!(
                !shown.contains(p),
                "{url}: builder Debug shows the password: {shown}"
            );
        }
        let err = open(builder(url)).expect_err("nothing listens on port 1");
        let text = all_text(&err);
        for p in &pieces {
            assert!(
                !text.contains(p),
                "{url}: the error shows the password: {text}"
            );
        }
    }
}

/// Issue 12, item 13: a conflict's message names the session by its digest
/// hint, never by the id.
fn conflict_message_hides_the_id<B: Backend>() {
    let cfg = Config::default();
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    let sid = id("Secret-Session-Id-0123456789");
    let mut a = Session::new(sid.clone(), b"a".to_vec());
    store.save_session(&mut a).expect("save");
    let mut stale = a.clone();
    store.save_session(&mut a).expect("save again");
    let err = store
        .save_session_if_unchanged(&mut stale)
        .expect_err("conflict");
    assert!(err.is_conflict(), "{err}");
    let text = err.to_string();
    assert!(
        !text.contains(sid.as_str()),
        "the message shows the id: {text}"
    );
    assert!(
        text.contains(&sid.digest_hint()),
        "names the digest: {text}"
    );
}

/// More old sessions than one delete statement removes: all go, and the
/// count is right (each statement stays small enough for the deadlines).
fn delete_old_sessions_in_batches<B: Backend>() {
    let cfg = Config::default();
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    // A deadline an hour ahead: a server that expires keys by its own
    // clock (Redis) must not drop any while a slow machine saves them.
    let deadline = sessionlog::Clock::now(&cfg.clock) + Duration::from_secs(3600);
    for i in 0..2_500u32 {
        let mut s = Session::new(id(&format!("old{i:05}")), b"x".to_vec());
        s.expires = Some(deadline);
        store.save_session(&mut s).expect("save");
    }
    loc.advance(&cfg, Duration::from_secs(7200));
    let removed = store
        .delete_old_sessions(Duration::from_secs(3600))
        .expect("delete old");
    assert_eq!(removed, 2_500);
    assert_eq!(store.iter_sessions().expect("iter").count(), 0);
}

macro_rules! server_tests {
    ($feature:literal, $m:ident, $backend:ty, $store:ident, $dead_url:literal, $missing_db:expr, $words:literal,
     url: $url:expr, port: $port:literal, secrets: $secrets:expr, remote: $remote:literal) => {
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

            /// Issue 12, item 16: a server that stops answering mid-use
            /// fails the call with `Error::Timeout` (not a 25 s hang), and
            /// the store works again once the server answers.
            #[test]
            fn a_stalled_server_fails_calls_with_timeout() {
                let url: String = $url;
                let proxy = Proxy::start(upstream_of(&url, $port));
                let loc = <$backend>::new_location();
                let store = std::sync::Arc::new(
                    $store::options(&via_port(&url, proxy.port()))
                        .pool_size(2)
                        .connect_timeout(Duration::from_secs(2))
                        .io_timeout(Duration::from_secs(1))
                        .open_with_name(Named::name(&loc))
                        .expect("open through the proxy"),
                );
                store.setup().expect("setup");
                let mut s = Session::new(id("stall"), b"before".to_vec());
                store.save_session(&mut s).expect("save");
                proxy.stall();
                let st = std::sync::Arc::clone(&store);
                let err = within(HANG, "load through a stalled proxy", move || {
                    st.load_session(&id("stall"))
                })
                .expect_err("the server does not answer");
                assert!(err.is_timeout(), "expected Error::Timeout, got {err:?}");
                let st = std::sync::Arc::clone(&store);
                let err = within(HANG, "save through a stalled proxy", move || {
                    st.save_session(&mut Session::new(id("stall2"), b"x".to_vec()))
                })
                .expect_err("the server does not answer");
                assert!(err.is_timeout(), "expected Error::Timeout, got {err:?}");
                proxy.resume();
                let st = std::sync::Arc::clone(&store);
                let back = within(HANG, "load after the stall", move || {
                    st.load_session(&id("stall"))
                })
                .expect("answers again")
                .expect("present");
                assert_eq!(back.data, b"before");
            }

            /// Issue 12, item 16: `open` against a server that accepts the
            /// connection but never answers fails with `Error::Timeout`.
            #[test]
            fn open_against_a_silent_server_times_out() {
                let url: String = $url;
                let proxy = Proxy::start(upstream_of(&url, $port));
                proxy.stall();
                let proxied = via_port(&url, proxy.port());
                let err = within(HANG, "open against a silent server", move || {
                    $store::options(&proxied)
                        .connect_timeout(Duration::from_secs(1))
                        .io_timeout(Duration::from_secs(1))
                        .open()
                        .map(drop)
                })
                .expect_err("the server never answers");
                assert!(err.is_timeout(), "expected Error::Timeout, got {err:?}");
            }

            #[test]
            fn lives_inside_every_runtime() {
                super::lives_inside_every_runtime::<$backend>();
            }

            #[test]
            fn open_drop_cycles_leave_no_threads() {
                super::open_drop_cycles_leave_no_threads::<$backend>(concat!(
                    stringify!($m),
                    "::open_drop_cycles_leave_no_threads"
                ));
            }

            #[test]
            fn no_password_in_debug_or_errors() {
                let urls: Vec<String> = $secrets;
                super::no_password_in_debug_or_errors(
                    &urls,
                    |u| $store::options(u).connect_timeout(Duration::from_secs(2)),
                    |b| b.open(),
                );
            }

            #[test]
            fn delete_old_sessions_in_batches() {
                super::delete_old_sessions_in_batches::<$backend>();
            }

            #[test]
            fn conflict_message_hides_the_id() {
                super::conflict_message_hides_the_id::<$backend>();
            }

            /// Issue 12, item 15: plaintext (or TLS without verification)
            /// to a host that is not loopback is refused before anything is
            /// sent, unless allowed by name.
            #[test]
            fn plaintext_to_a_remote_host_is_refused() {
                let err = $store::options($remote).open().expect_err("refused");
                assert!(
                    err.to_string().contains("allow_plaintext_to_remote"),
                    "{err}"
                );
                // Allowed by name, it tries to connect (and fails: nothing
                // listens on that reserved address).
                let err = $store::options($remote)
                    .allow_plaintext_to_remote(true)
                    .connect_timeout(Duration::from_millis(300))
                    .open()
                    .expect_err("nothing there");
                assert!(
                    !err.to_string().contains("allow_plaintext_to_remote"),
                    "{err}"
                );
            }

            #[test]
            fn unsafe_names_are_refused() {
                let err = $store::options($dead_url)
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
    "database does not exist",
    url: common::servers::postgres_url(),
    port: 5432,
    secrets: vec![
        format!("postgres://u:{SECRET}@127.0.0.1:1/db"),
        format!("host=127.0.0.1 port=1 user=u password={SECRET} dbname=db"),
        format!("host=127.0.0.1 port=1 user=u password='{SECRET}' dbname=db"),
        format!("postgres://u@127.0.0.1:1/db?password={SECRET}"),
        "postgres://u:Pw1s/EcReT@127.0.0.1:1/db".to_owned(),
        "postgres://u:Pw1s?EcReT@127.0.0.1:1/db".to_owned(),
        "postgres://u:Pw1s#EcReT@127.0.0.1:1/db".to_owned(),
        "postgres://u:Pw1s/EcReT?x@127.0.0.1:1/db".to_owned(),
    ],
    remote: "postgres://u@192.0.2.1/db?sslmode=disable"
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
    "database does not exist",
    url: common::servers::mysql_url(),
    port: 3306,
    secrets: vec![
        format!("mysql://u:{SECRET}@127.0.0.1:1/db"),
        format!("mysql://u@127.0.0.1:1/db?password={SECRET}"),
        "mysql://u:Pw1s/EcReT@127.0.0.1:1/db".to_owned(),
        "mysql://u:Pw1s?EcReT@127.0.0.1:1/db".to_owned(),
        "mysql://u:Pw1s#EcReT@127.0.0.1:1/db".to_owned(),
    ],
    remote: "mysql://u@192.0.2.1/db?danger_accept_invalid_certs=true"
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
    "DB index is out of range",
    url: common::servers::redis_url(),
    port: 6379,
    secrets: vec![
        format!("redis://:{SECRET}@127.0.0.1:1/0"),
        format!("redis://u:{SECRET}@127.0.0.1:1/0"),
        "redis://:Pw1s/EcReT@127.0.0.1:1/0".to_owned(),
        "redis://:Pw1s?EcReT@127.0.0.1:1/0".to_owned(),
        "redis://:Pw1s#EcReT@127.0.0.1:1/0".to_owned(),
    ],
    remote: "redis://192.0.2.1/"
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

/// A raw connection to the test Redis, for looking at or planting keys.
#[cfg(feature = "redis")]
fn raw_redis() -> ::redis::Connection {
    ::redis::Client::open(common::servers::redis_url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to the test Redis")
}

/// Issue 12, item 17: the index sets lose the ids of sessions past their
/// deadline or idle limit as later saves go by, without waiting for
/// `delete_old_sessions`.
#[cfg(feature = "redis")]
#[test]
fn redis_index_sets_drop_dead_ids_on_the_way() {
    let cfg = Config {
        max_idle: Some(Duration::from_secs(3600)),
        ..Config::default()
    };
    let loc = common::servers::Redis::new_location();
    let store = loc.open(&cfg);
    let now = sessionlog::Clock::now(&cfg.clock);
    for i in 0..20 {
        let mut s = Session::new(id(&format!("deadline{i}")), b"x".to_vec());
        s.expires = Some(now + Duration::from_secs(1));
        store.save_session(&mut s).expect("save");
        store
            .save_session(&mut Session::new(id(&format!("idle{i}")), b"x".to_vec()))
            .expect("save");
    }
    loc.advance(&cfg, Duration::from_secs(2 * 3600));
    let mut conn = raw_redis();
    let card = |conn: &mut ::redis::Connection, set: &str| -> usize {
        ::redis::cmd("ZCARD")
            .arg(format!("{{{}}}:{set}", loc.prefix))
            .query(conn)
            .expect("ZCARD")
    };
    assert_eq!(card(&mut conn, "ids"), 40, "all indexed before");
    // Each save removes a bounded number: a few saves clear 40.
    for _ in 0..5 {
        store
            .save_session(&mut Session::new(id("fresh"), b"y".to_vec()))
            .expect("save");
    }
    assert_eq!(
        card(&mut conn, "ids"),
        1,
        "only the live session stays indexed"
    );
    assert_eq!(card(&mut conn, "modified"), 1);
    assert_eq!(card(&mut conn, "expires"), 0);
    assert!(store.has_session(&id("fresh")).expect("has"));
}

/// Issue 12, item 13: a reply of the wrong shape (another program wrote
/// the session's hash) gives an error that carries neither the session's
/// data nor its id.
#[cfg(feature = "redis")]
#[test]
fn redis_bad_reply_shows_no_session_data() {
    let cfg = Config::default();
    let loc = common::servers::Redis::new_location();
    let store = loc.open(&cfg);
    let victim = "Victim-Session-Id-42";
    let mut conn = raw_redis();
    // `m` is a number to Lua, not an integer to us: the reply is malformed.
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{{{}}}:s:{victim}", loc.prefix))
        .arg(&["d", "TopSecretSessionData", "e", "0", "m", "1e99", "v", "1"][..])
        .query(&mut conn)
        .expect("HSET");
    let err = store.load_session(&id(victim)).expect_err("malformed");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    let text = all_text(&err);
    assert!(!text.contains("TopSecretSessionData"), "{text}");
    assert!(!text.contains(victim), "{text}");
    assert!(text.contains("unexpected reply"), "{text}");
}

/// Issue 12, item 15: TLS against the local servers, with a CA and server
/// certificate the test makes (openssl command). Each test shows that the
/// store's connection really is TLS (the server refuses plaintext, or
/// reports the connection as TLS) and that the certificate is verified (a
/// CA the server's certificate does not chain to is refused).
#[cfg(any(feature = "postgres-tls", feature = "mysql-tls", feature = "redis-tls"))]
mod tls {
    use super::*;
    #[allow(unused_imports)]
    use common::servers::{ChildServer, free_port, make_certs, poll};

    /// A directory other users (the servers) can read.
    fn shared_tempdir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        dir
    }

    /// A CA that did not sign the server's certificate.
    fn other_ca() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = shared_tempdir();
        make_certs(dir.path(), "sessionlog unrelated test CA");
        let ca = dir.path().join("ca.pem");
        (dir, ca)
    }

    #[cfg(feature = "postgres-tls")]
    mod postgres {
        use super::*;
        use common::servers::{pg_batch, pg_query_i64};
        use sessionlog::PostgresStore;

        /// Restores the cluster's certificate settings (the Debian
        /// defaults from postgresql.conf) on drop, even when the test fails.
        struct RestoreSslConfig;

        impl Drop for RestoreSslConfig {
            fn drop(&mut self) {
                for sql in [
                    "ALTER SYSTEM RESET ssl_cert_file",
                    "ALTER SYSTEM RESET ssl_key_file",
                    "SELECT pg_reload_conf()",
                ] {
                    if let Err(e) = pg_batch(sql) {
                        eprintln!("restoring PostgreSQL's TLS settings: {sql}: {e}");
                    }
                }
            }
        }

        fn uid_of(user: &str) -> u32 {
            let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&user)).then(|| f[2].parse().expect("uid"))
                })
                .unwrap_or_else(|| panic!("no user {user}"))
        }

        /// The running cluster is switched to the test's certificate with
        /// ALTER SYSTEM and a reload (plaintext keeps working for everyone
        /// else), and switched back on drop.
        #[test]
        fn postgres_store_speaks_verified_tls() {
            use std::os::unix::fs::PermissionsExt;
            if common::root::skip_unless_root("gives the server's key to the postgres user") {
                return;
            }
            let dir = shared_tempdir();
            make_certs(dir.path(), "sessionlog test CA");
            let key = dir.path().join("server.key");
            std::os::unix::fs::chown(&key, Some(uid_of("postgres")), None).expect("chown key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
            let cert = dir.path().join("server.pem");
            std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644))
                .expect("chmod cert");
            let ca = dir.path().join("ca.pem");
            let (_other_dir, wrong_ca) = other_ca();

            let _restore = RestoreSslConfig;
            pg_batch(&format!(
                "ALTER SYSTEM SET ssl_cert_file = '{}'",
                cert.display()
            ))
            .expect("set ssl_cert_file");
            pg_batch(&format!(
                "ALTER SYSTEM SET ssl_key_file = '{}'",
                key.display()
            ))
            .expect("set ssl_key_file");
            pg_batch("SELECT pg_reload_conf()").expect("reload");

            let app = common::servers::unique("sltls");
            let url = format!(
                "postgres://postgres@127.0.0.1/test?sslmode=require&application_name={app}"
            );
            let loc = <common::servers::Postgres as Backend>::new_location();
            // The reload is asynchronous: until it is done the server shows
            // its old certificate, which the test CA does not verify.
            let store = poll(Duration::from_secs(30), "TLS with the test CA", || {
                PostgresStore::options(&url)
                    .table(&loc.table)
                    .tls_ca_file(&ca)
                    .open()
            });
            store.setup().expect("setup over TLS");
            let mut s = Session::new(id("tls"), b"over tls".to_vec());
            store.save_session(&mut s).expect("save over TLS");
            let back = store.load_session(&s.id).expect("load").expect("present");
            assert_eq!(back.data, b"over tls");
            let tls_conns = pg_query_i64(&format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE s.ssl AND a.application_name = '{app}'"
            ))
            .expect("pg_stat_ssl");
            assert!(
                tls_conns >= 1,
                "the server sees the store's connection as TLS"
            );

            let err = PostgresStore::options(&url)
                .table(&loc.table)
                .tls_ca_file(&wrong_ca)
                .connect_timeout(Duration::from_secs(5))
                .open()
                .expect_err("a certificate from another CA");
            eprintln!("another CA: {err}");
            assert!(matches!(err, Error::Backend { .. }), "{err:?}");
            assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        }
    }

    #[cfg(feature = "mysql-tls")]
    mod mysql {
        use super::*;
        use sessionlog::MySqlStore;

        /// A MariaDB of the test's own (mariadb-install-db into a temporary
        /// directory, mariadbd on a free port, TLS only:
        /// require_secure_transport), stopped on drop; the shared server is
        /// not touched (enabling TLS there would need a restart).
        #[test]
        fn mysql_store_speaks_verified_tls() {
            let dir = shared_tempdir();
            let d = dir.path();
            make_certs(d, "sessionlog test CA");
            let out = Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", d.join("data").display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .arg("--skip-test-db")
                .output()
                .unwrap_or_else(|e| panic!("mariadb-install-db is needed (see SERVERS.md): {e}"));
            assert!(
                out.status.success(),
                "mariadb-install-db: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let port = free_port();
            let file = |name: &str| d.join(name).display().to_string();
            let _server = ChildServer(
                Command::new("/usr/sbin/mariadbd")
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", file("data")))
                    .arg(format!("--port={port}"))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", file("sock")))
                    .arg(format!("--pid-file={}", file("pid")))
                    .arg(format!("--log-error={}", file("err.log")))
                    .arg("--user=root")
                    .arg(format!("--ssl-cert={}", file("server.pem")))
                    .arg(format!("--ssl-key={}", file("server.key")))
                    .arg(format!("--ssl-ca={}", file("ca.pem")))
                    .arg("--require-secure-transport=ON")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start mariadbd"),
            );
            let url = format!("mysql://root@127.0.0.1:{port}/mysql");
            let ca = d.join("ca.pem");
            let store = poll(Duration::from_secs(60), "TLS to our MariaDB", || {
                MySqlStore::options(&url)
                    .table("sl_tls")
                    .tls_ca_file(&ca)
                    .open()
            });
            store.setup().expect("setup over TLS");
            let mut s = Session::new(id("tls"), b"over tls".to_vec());
            store.save_session(&mut s).expect("save over TLS");
            let back = store.load_session(&s.id).expect("load").expect("present");
            assert_eq!(back.data, b"over tls");

            let err = MySqlStore::options(&url)
                .open()
                .expect_err("the server refuses plaintext");
            eprintln!("plaintext: {err}");
            assert!(matches!(err, Error::Backend { .. }), "{err:?}");
            let (_other_dir, wrong_ca) = other_ca();
            let err = MySqlStore::options(&url)
                .tls_ca_file(&wrong_ca)
                .open()
                .expect_err("a certificate from another CA");
            eprintln!("another CA: {err}");
            assert!(matches!(err, Error::Backend { .. }), "{err:?}");
            assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        }
    }

    #[cfg(feature = "redis-tls")]
    mod redis {
        use super::*;
        use sessionlog::RedisStore;

        /// A redis-server of the test's own, TLS only (`--port 0
        /// --tls-port N`), stopped on drop; the shared server is not touched.
        #[test]
        fn redis_store_speaks_verified_tls() {
            let dir = shared_tempdir();
            let d = dir.path();
            make_certs(d, "sessionlog test CA");
            let port = free_port();
            let file = |name: &str| d.join(name).display().to_string();
            let _server = ChildServer(
                Command::new("redis-server")
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("redis-server is needed (see SERVERS.md): {e}")),
            );
            let url = format!("rediss://127.0.0.1:{port}/");
            let ca = d.join("ca.pem");
            let store = poll(Duration::from_secs(30), "TLS to our redis-server", || {
                RedisStore::options(&url).tls_ca_file(&ca).open()
            });
            let mut s = Session::new(id("tls"), b"over tls".to_vec());
            store.save_session(&mut s).expect("save over TLS");
            let back = store.load_session(&s.id).expect("load").expect("present");
            assert_eq!(back.data, b"over tls");

            let plain = format!("redis://127.0.0.1:{port}/");
            let err = RedisStore::options(&plain)
                .connect_timeout(Duration::from_secs(2))
                .open()
                .expect_err("the port speaks TLS only");
            eprintln!("plaintext: {err}");
            assert!(
                matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
                "{err:?}"
            );
            let (_other_dir, wrong_ca) = other_ca();
            let err = RedisStore::options(&url)
                .tls_ca_file(&wrong_ca)
                .open()
                .expect_err("a certificate from another CA");
            eprintln!("another CA: {err}");
            assert!(matches!(err, Error::Backend { .. }), "{err:?}");
            assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        }
    }
}
