//! The web adapters (issue 13).
//!
//! - `TowerStore` and `ActixStore` called through the frameworks' own store
//!   traits, against every backend: LogStore, DirStore, MemoryStore and,
//!   under their features, PostgreSQL, MariaDB and Redis (which must be
//!   running: `bash .ci/servers.sh`; an unreachable one fails the test);
//!   and each of them again through `Encrypted` (issue 29).
//! - The real example binaries (`examples/axum_app.rs`,
//!   `examples/actix_app.rs`) started as 2-4 processes on one LogStore and
//!   driven over loopback HTTP by reqwest with a cookie jar. Every child is
//!   killed when its guard drops; every wait is a bounded poll.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::conformance::{Backend, Config};
use common::web_backends::{Dir, Log, Memory};
use sessionlog::web::{ACTIX_SESSION_ID, ActixStore, TowerStore, actix_session_id};
use sessionlog::{ManualClock, MemoryStore, SessionId, SessionStore};

// ---------------------------------------------------------------------
// Backends

/// A store on a clock that starts at the real time (the frameworks compute
/// deadlines from the real clock), moved forward by `loc.advance`.
fn open<B: Backend>() -> (B, Config, B::Store) {
    let cfg = Config {
        clock: ManualClock::new(SystemTime::now()),
        ..Config::default()
    };
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    (loc, cfg, store)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------
// TowerStore through tower-sessions' traits

fn tower_data(pairs: &[(&str, serde_json::Value)]) -> HashMap<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn tower_store<B: Backend>() {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::{ExpiredDeletion as _, SessionStore as _};

    let (loc, cfg, backend) = open::<B>();
    let store = TowerStore::new(backend);
    let hour = SystemTime::now() + Duration::from_secs(3600);
    runtime().block_on(async {
        let mut rec = Record {
            id: Id::default(),
            data: tower_data(&[("user", "ada".into()), ("n", 1.into())]),
            expiry_date: hour.into(),
        };
        store.create(&mut rec).await.expect("create");
        let loaded = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(loaded.id, rec.id);
        assert_eq!(loaded.data, rec.data, "data round-trips");

        // The id is the session's 22-character text in the backend.
        let sid = SessionId::new(rec.id.to_string()).expect("valid id");
        assert_eq!(sid.as_str().len(), 22);
        // (The backend is called from a blocking thread: the sync
        // PostgreSQL client refuses to run on a runtime's worker.)
        let backend = store.clone();
        let has = tokio::task::spawn_blocking(move || backend.store().has_session(&sid))
            .await
            .expect("task")
            .expect("has");
        assert!(has);

        // create never overwrites a live session: a colliding id is redrawn.
        let mut other = Record {
            id: rec.id,
            data: tower_data(&[("user", "eve".into())]),
            expiry_date: hour.into(),
        };
        store.create(&mut other).await.expect("create colliding");
        assert_ne!(other.id, rec.id, "a new id was drawn");
        let first = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(first.data["user"], "ada", "the live session is intact");
        let second = store.load(&other.id).await.expect("load").expect("present");
        assert_eq!(second.data["user"], "eve");

        // A changed save replaces the data.
        rec.data.insert("n".into(), 2.into());
        store.save(&rec).await.expect("save");
        let loaded = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(loaded.data["n"], 2);

        // An unchanged save (always-save) moves only the deadline: after
        // the old deadline passed, the session is there with its data.
        let short = SystemTime::now() + Duration::from_secs(30);
        let mut rec2 = Record {
            id: Id::default(),
            data: tower_data(&[("k", "v".into())]),
            expiry_date: short.into(),
        };
        store.create(&mut rec2).await.expect("create");
        let loaded = store.load(&rec2.id).await.expect("load").expect("present");
        let later = SystemTime::now() + Duration::from_secs(600);
        let touched = Record {
            expiry_date: later.into(),
            ..loaded
        };
        store.save(&touched).await.expect("unchanged save");
        loc.advance(&cfg, Duration::from_secs(60));
        let loaded = store.load(&rec2.id).await.expect("load").expect("extended");
        assert_eq!(loaded.data["k"], "v");

        // An expired session is never returned.
        loc.advance(&cfg, Duration::from_secs(600));
        assert!(store.load(&rec2.id).await.expect("load").is_none());
        // An unchanged save of a session that expired does not revive it.
        store.save(&touched).await.expect("save");
        assert!(store.load(&rec2.id).await.expect("load").is_none());

        // delete, and absent/forged ids are simply None.
        store.delete(&other.id).await.expect("delete");
        assert!(store.load(&other.id).await.expect("load").is_none());
        assert!(store.load(&Id::default()).await.expect("load").is_none());
        store.delete(&Id::default()).await.expect("delete absent");

        // delete_expired runs the backend's cleanup and keeps live ones.
        store.delete_expired().await.expect("delete_expired");
        assert!(store.load(&rec.id).await.expect("load").is_some());
    });
    assert_eq!(
        store.store().iter_sessions().expect("iter").count(),
        1,
        "only the live session is left"
    );

    // Another writer's change survives this store's unchanged save.
    if B::PERSISTENT {
        let a = TowerStore::new(loc.open(&cfg));
        let b = TowerStore::new(loc.open(&cfg));
        runtime().block_on(async {
            let mut rec = Record {
                id: Id::default(),
                data: tower_data(&[("n", 1.into())]),
                expiry_date: hour.into(),
            };
            a.create(&mut rec).await.expect("create");
            let seen_by_a = a.load(&rec.id).await.expect("load").expect("present");
            let mut by_b = b.load(&rec.id).await.expect("load").expect("present");
            by_b.data.insert("n".into(), 2.into());
            b.save(&by_b).await.expect("save by b");
            a.save(&seen_by_a).await.expect("unchanged save by a");
            let now = a.load(&rec.id).await.expect("load").expect("present");
            assert_eq!(now.data["n"], 2, "b's change was not undone");
        });
    }
}

#[cfg(feature = "tower-sessions-014")]
fn tower_store_014<B: Backend>() {
    use tower_sessions_core_014::SessionStore as _;
    use tower_sessions_core_014::session::{Id, Record};

    let (_loc, _cfg, backend) = open::<B>();
    let store = TowerStore::new(backend);
    runtime().block_on(async {
        let mut rec = Record {
            id: Id::default(),
            data: tower_data(&[("user", "ada".into())]),
            expiry_date: (SystemTime::now() + Duration::from_secs(60)).into(),
        };
        store.create(&mut rec).await.expect("create");
        let loaded = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(loaded.data, rec.data);
        store.delete(&rec.id).await.expect("delete");
        assert!(store.load(&rec.id).await.expect("load").is_none());
    });
}

// ---------------------------------------------------------------------
// ActixStore through actix-session's trait

fn actix_state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn actix_store<B: Backend>() {
    use actix_session::storage::{SessionKey, SessionStore as _};
    use actix_web::cookie::time::Duration as Ttl;

    let (loc, cfg, backend) = open::<B>();
    let store = ActixStore::new(backend);
    let key_of = |s: &str| SessionKey::try_from(s.to_owned()).expect("a session key");
    runtime().block_on(async {
        let state = actix_state(&[("user", "\"ada\"")]);
        let key = store
            .save(state.clone(), &Ttl::seconds(60))
            .await
            .expect("save");
        let text: String = key_of(key.as_ref()).into();
        assert_eq!(text.len(), 22, "a 128-bit id");
        // A loaded state holds its own id (ACTIX_SESSION_ID), as JSON.
        let with_id = |state: &HashMap<String, String>, key: &SessionKey| {
            let mut state = state.clone();
            state.insert(ACTIX_SESSION_ID.to_owned(), format!("\"{}\"", key.as_ref()));
            state
        };
        assert_eq!(
            store.load(&key).await.expect("load"),
            Some(with_id(&state, &key))
        );
        let other = store
            .save(state.clone(), &Ttl::seconds(60))
            .await
            .expect("save");
        assert_ne!(other.as_ref(), key.as_ref(), "every save draws a new id");

        // Any cookie value up to 4064 bytes reaches load: not an id of
        // this store means no session, never an error.
        let long = "x".repeat(4064);
        for bad in [
            "",
            "../etc/passwd",
            "a b",
            "é",
            "a.b",
            &long,
            "AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let k = key_of(bad);
            assert_eq!(store.load(&k).await.expect("load"), None, "{bad:.20}");
            store.update_ttl(&k, &Ttl::seconds(60)).await.expect("ttl");
            store.delete(&k).await.expect("delete");
        }

        // update of a live session: same key, new state. An id planted in
        // the state (another session's) is not stored, and the load puts
        // back the session's own.
        let new_state = actix_state(&[("user", "\"ada\""), ("count", "3")]);
        let mut planted = new_state.clone();
        planted.insert(
            ACTIX_SESSION_ID.to_owned(),
            format!("\"{}\"", other.as_ref()),
        );
        let same = store
            .update(key_of(key.as_ref()), planted, &Ttl::seconds(60))
            .await
            .expect("update");
        assert_eq!(same.as_ref(), key.as_ref());
        assert_eq!(
            store.load(&key).await.expect("load"),
            Some(with_id(&new_state, &key))
        );
        let stored = store
            .store()
            .load_session(&SessionId::new(key.as_ref()).expect("id"))
            .expect("load")
            .expect("present");
        assert!(
            !stored
                .data
                .windows(ACTIX_SESSION_ID.len())
                .any(|w| w == ACTIX_SESSION_ID.as_bytes()),
            "the id entry is never stored"
        );

        // update_ttl moves only the deadline.
        store
            .update_ttl(&key, &Ttl::seconds(3600))
            .await
            .expect("update_ttl");
        loc.advance(&cfg, Duration::from_secs(120));
        assert_eq!(
            store.load(&key).await.expect("load"),
            Some(with_id(&new_state, &key)),
            "extended past the first ttl, data unchanged"
        );
        assert_eq!(store.load(&other).await.expect("load"), None, "expired");

        // update of an expired session: a new key that names no session;
        // the state is stored under neither (issue 26: only `save`
        // creates, a stale update never brings a session back).
        let renewed = store
            .update(key_of(other.as_ref()), state.clone(), &Ttl::seconds(3600))
            .await
            .expect("update expired");
        assert_ne!(renewed.as_ref(), other.as_ref());
        assert_eq!(store.load(&other).await.expect("load"), None);
        assert_eq!(store.load(&renewed).await.expect("load"), None);

        // delete, then update of the deleted key: the same.
        store.delete(&key).await.expect("delete");
        assert_eq!(store.load(&key).await.expect("load"), None);
        let after = store
            .update(key_of(key.as_ref()), state.clone(), &Ttl::seconds(3600))
            .await
            .expect("update deleted");
        assert_ne!(after.as_ref(), key.as_ref());
        assert_eq!(store.load(&key).await.expect("load"), None);
        assert_eq!(store.load(&after).await.expect("load"), None);
    });
}

macro_rules! web_store_tests {
    ($name:ident, $backend:ty) => {
        mod $name {
            use super::*;
            #[test]
            fn tower_store() {
                super::tower_store::<$backend>()
            }
            #[cfg(feature = "tower-sessions-014")]
            #[test]
            fn tower_store_014() {
                super::tower_store_014::<$backend>()
            }
            #[test]
            fn actix_store() {
                super::actix_store::<$backend>()
            }
        }
    };
}

web_store_tests!(memory, Memory);
web_store_tests!(log, Log);
web_store_tests!(dir, Dir);
#[cfg(feature = "postgres")]
web_store_tests!(postgres, common::servers::Postgres);
#[cfg(feature = "mysql")]
web_store_tests!(mysql, common::servers::MySql);
#[cfg(feature = "redis")]
web_store_tests!(redis, common::servers::Redis);
// The adapters over `HashedIds` (ids stored as digests).
web_store_tests!(hashed_log, common::conformance::Hashed<Log>);
web_store_tests!(hashed_dir, common::conformance::Hashed<Dir>);
#[cfg(feature = "redis")]
web_store_tests!(
    hashed_redis,
    common::conformance::Hashed<common::servers::Redis>
);
// The adapters over `Encrypted` (data encrypted), alone and under
// `HashedIds` (the recommended order).
web_store_tests!(enc_memory, common::conformance::Enc<Memory>);
web_store_tests!(enc_log, common::conformance::Enc<Log>);
web_store_tests!(enc_dir, common::conformance::Enc<Dir>);
web_store_tests!(
    hashed_enc_log,
    common::conformance::Hashed<common::conformance::Enc<Log>>
);
#[cfg(feature = "postgres")]
web_store_tests!(
    enc_postgres,
    common::conformance::Enc<common::servers::Postgres>
);
#[cfg(feature = "mysql")]
web_store_tests!(enc_mysql, common::conformance::Enc<common::servers::MySql>);
#[cfg(feature = "redis")]
web_store_tests!(enc_redis, common::conformance::Enc<common::servers::Redis>);

#[test]
fn debug_shows_no_secrets() {
    let store = TowerStore::new(MemoryStore::new());
    let text = format!("{store:?}");
    assert!(text.contains("MemoryStore"), "{text}");
    assert!(!store.uses_blocking_pool(), "MemoryStore runs inline");
    let log = tempfile::tempdir().expect("temp dir");
    let always = sessionlog::LogStore::options()
        .sync(sessionlog::SyncPolicy::Always)
        .open(log.path().join("a.db"))
        .expect("open");
    assert!(TowerStore::new(always).uses_blocking_pool());
    let interval = sessionlog::LogStore::open(log.path().join("b.db")).expect("open");
    assert!(!ActixStore::new(interval).uses_blocking_pool());
}

// ---------------------------------------------------------------------
// The example apps over HTTP

/// The example binary `name` of the `sessionlog-examples` crate, which
/// `cargo test --all-features` at the workspace's root builds next to the
/// tests (the crate is a default member; `cargo test -p sessionlog` alone
/// does not build it).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --all-features` at the workspace's root \
         (it builds the examples crate too), or build them first with `cargo build -p \
         sessionlog-examples --examples --all-features`",
        path.display()
    );
    path
}

/// One running example process, killed (SIGKILL) and reaped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `bin` with `args` plus `--addr 127.0.0.1:0` and waits (at
    /// most 30 s) for its `LISTENING <addr>` line.
    fn start(bin: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => server.base = format!("http://{addr}"),
            Err(_) => panic!("{} did not start listening in 30 s", bin.display()),
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A client with its own cookie jar (or a shared one).
fn client(jar: &Arc<reqwest::cookie::Jar>) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_provider(Arc::clone(jar))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

fn jar() -> Arc<reqwest::cookie::Jar> {
    Arc::new(reqwest::cookie::Jar::default())
}

/// (status, body) of a request.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, String) {
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().expect("body").trim().to_owned())
}

fn login(c: &reqwest::blocking::Client, s: &Server, user: &str) {
    let (status, body) = send(c.post(s.url("/login")).form(&[("user", user)]));
    assert_eq!(
        (status, body.as_str()),
        (200, &*format!("logged in as {user}"))
    );
}

fn start_all(bin: &Path, n: usize, store: &Path, extra: &[&str]) -> Vec<Server> {
    let store = store.to_str().expect("utf-8 path");
    (0..n)
        .map(|_| {
            let mut args = vec!["--store", store];
            args.extend_from_slice(extra);
            Server::start(bin, &args)
        })
        .collect()
}

fn login_counter_logout_everywhere(servers: &[Server]) {
    let jar = jar();
    let c = client(&jar);
    let (a, b, last) = (&servers[0], &servers[1], &servers[servers.len() - 1]);
    assert_eq!(send(c.get(a.url("/counter"))).0, 401, "no session yet");
    login(&c, a, "ada");
    assert_eq!(send(c.post(b.url("/counter"))), (200, "1".into()));
    assert_eq!(send(c.post(last.url("/counter"))), (200, "2".into()));
    for s in servers {
        assert_eq!(send(c.get(s.url("/counter"))), (200, "2".into()));
    }
    use reqwest::cookie::CookieStore as _;
    let url = a.url("/").parse().expect("url");
    let cookie = jar.cookies(&url).expect("a session cookie");
    assert_eq!(send(c.post(last.url("/logout"))).0, 200);
    for s in servers {
        assert_eq!(
            send(c.get(s.url("/counter"))).0,
            401,
            "logged out everywhere"
        );
        // Replaying the old cookie by hand does not bring it back either.
        let replay = reqwest::blocking::Client::new();
        let (status, _) = send(
            replay
                .get(s.url("/counter"))
                .header("cookie", cookie.clone()),
        );
        assert_eq!(status, 401, "the old session is gone on every process");
    }
}

#[test]
fn axum_app_login_counter_logout_across_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = start_all(&example("axum_app"), 3, &dir.path().join("s.db"), &[]);
    login_counter_logout_everywhere(&servers);
}

#[test]
fn actix_app_login_counter_logout_across_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("cookie.key");
    let key = key.to_str().expect("utf-8");
    let servers = start_all(
        &example("actix_app"),
        2,
        &dir.path().join("s.db"),
        &["--key-file", key],
    );
    login_counter_logout_everywhere(&servers);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .expect("the key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the cookie key is the owner's alone");
}

/// A cookie key other users can read is refused: whoever reads it signs
/// any session cookie.
#[test]
fn actix_app_refuses_a_cookie_key_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("cookie.key");
    std::fs::write(&key, [7u8; 64]).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(example("actix_app"))
        .args(["--store", dir.path().join("s.db").to_str().expect("utf-8")])
        .args(["--key-file", key.to_str().expect("utf-8")])
        .args(["--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 0644 key");
    assert!(
        stderr.contains("0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn axum_app_refuses_an_expired_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = start_all(
        &example("axum_app"),
        2,
        &dir.path().join("s.db"),
        &["--idle-secs", "3"],
    );
    let jar = jar();
    let c = client(&jar);
    login(&c, &servers[0], "ada");
    assert_eq!(send(c.get(servers[1].url("/counter"))), (200, "0".into()));
    // Reading does not save (no always-save): the deadline stays. Poll
    // until the server refuses the session, bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if send(c.get(servers[1].url("/counter"))).0 == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the session never expired");
        std::thread::yield_now();
    }
    assert_eq!(send(c.post(servers[0].url("/counter"))).0, 401);
}

#[test]
fn axum_app_gives_bad_cookies_a_fresh_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = start_all(&example("axum_app"), 2, &dir.path().join("s.db"), &[]);
    let s = &servers[1];
    let forged = "A".repeat(22);
    let oversized = "B".repeat(4000);
    for cookie in [
        format!("id={forged}"),
        "id=not-an-id!%%".to_owned(),
        "id=../../etc/passwd".to_owned(),
        "id=".to_owned(),
        format!("id={oversized}"),
    ] {
        let c = reqwest::blocking::Client::new();
        let (status, body) = send(c.get(s.url("/counter")).header("cookie", &cookie));
        assert_eq!(
            (status, body.as_str()),
            (401, "not logged in"),
            "{cookie:.30}"
        );
        let resp = c
            .post(s.url("/login"))
            .header("cookie", &cookie)
            .form(&[("user", "eve")])
            .send()
            .expect("login");
        assert_eq!(resp.status().as_u16(), 200, "{cookie:.30}");
        let set = resp
            .headers()
            .get("set-cookie")
            .expect("a fresh session cookie")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(!set.contains(&forged) && !set.contains(&oversized[..100]));
    }
}

/// Two clients sharing one session increment it `n` times each on
/// different processes at once; returns the final count.
fn race(servers: &[Server], path: &'static str, n: usize) -> u64 {
    let jar = jar();
    login(&client(&jar), &servers[0], "ada");
    std::thread::scope(|scope| {
        for (i, s) in servers.iter().take(2).enumerate() {
            let jar = Arc::clone(&jar);
            scope.spawn(move || {
                let c = client(&jar);
                for _ in 0..n {
                    let (status, _) = send(c.post(s.url(path)));
                    assert_eq!(status, 200, "client {i}");
                }
            });
        }
    });
    let (status, body) = send(client(&jar).get(servers[2].url("/counter")));
    assert_eq!(status, 200);
    body.parse().expect("a count")
}

#[test]
fn axum_app_racing_increments_lose_nothing_on_the_conflict_safe_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = start_all(&example("axum_app"), 3, &dir.path().join("s.db"), &[]);
    let n = 150;
    let safe = race(&servers, "/counter", n);
    let plain = race(&servers, "/counter/plain", n);
    println!(
        "2 clients x {n} increments of one session on 2 processes: conflict-safe {safe}, \
         plain (last writer wins) {plain} ({} lost)",
        2 * n as u64 - plain
    );
    assert_eq!(safe, 2 * n as u64, "the conflict-safe path loses none");
    assert!(plain <= 2 * n as u64);
}

#[test]
fn axum_app_sigkill_mid_load_loses_no_acknowledged_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut servers = start_all(
        &example("axum_app"),
        3,
        &dir.path().join("s.db"),
        &["--sync", "never"],
    );
    let victim = servers.remove(0);
    let victim_url = victim.base.clone();
    let victim = std::sync::Mutex::new(Some(victim));
    let bases: Vec<String> = std::iter::once(victim_url.clone())
        .chain(servers.iter().map(|s| s.base.clone()))
        .collect();

    // Four clients log in and increment, spread over every process (the
    // victim included); client 0 kills the victim after some requests.
    // Acknowledged = a 200 answer: (jar, the count it acknowledged).
    let acked: Vec<(Arc<reqwest::cookie::Jar>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let bases = &bases;
                let victim = &victim;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for round in 0..12 {
                        if t == 0 && round == 4 {
                            drop(victim.lock().expect("lock").take()); // SIGKILL
                        }
                        let jar = jar();
                        let c = client(&jar);
                        let base = &bases[(t + round) % bases.len()];
                        let Ok(r) = c
                            .post(format!("{base}/login"))
                            .form(&[("user", "u")])
                            .send()
                        else {
                            continue;
                        };
                        if r.status().as_u16() != 200 {
                            continue;
                        }
                        let mut count = 0;
                        for k in 0..5 {
                            let base = &bases[(t + round + k + 1) % bases.len()];
                            match c.post(format!("{base}/counter")).send() {
                                Ok(r) if r.status().as_u16() == 200 => {
                                    count = r.text().expect("body").trim().parse().expect("n");
                                }
                                _ => {}
                            }
                        }
                        out.push((jar, count));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(
        victim.lock().expect("lock").is_none(),
        "the victim was killed"
    );
    assert!(
        acked.len() >= 20,
        "most logins were acknowledged: {}",
        acked.len()
    );
    // Every acknowledged session and count is there on every survivor.
    for (jar, count) in &acked {
        let c = client(jar);
        for s in &servers {
            let (status, body) = send(c.get(s.url("/counter")));
            assert_eq!(status, 200, "an acknowledged session is gone");
            let n: u64 = body.parse().expect("a count");
            assert!(n >= *count, "acknowledged count {count}, found {n}");
        }
    }
    // The victim is gone, the others keep serving.
    assert!(
        reqwest::blocking::Client::new()
            .get(format!("{victim_url}/health"))
            .send()
            .is_err()
    );
    for s in &servers {
        assert_eq!(
            send(reqwest::blocking::Client::new().get(s.url("/health"))).0,
            200
        );
    }
}

/// Issue 28: two browsers of one user, and one of another, on different
/// processes: "log out my other devices" from the first logs the second
/// out everywhere and leaves the first and the other user alone.
#[test]
fn axum_app_logs_out_my_other_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = start_all(&example("axum_app"), 2, &dir.path().join("s.db"), &[]);
    let (a, b) = (&servers[0], &servers[1]);
    let (laptop, phone, other) = (client(&jar()), client(&jar()), client(&jar()));
    login(&laptop, a, "ada");
    login(&phone, b, "ada");
    login(&other, b, "bob");
    assert_eq!(send(phone.get(a.url("/counter"))).0, 200);
    assert_eq!(
        send(laptop.post(b.url("/logout-others"))),
        (200, "logged out 1 other sessions".into())
    );
    for s in &servers {
        assert_eq!(
            send(phone.get(s.url("/counter"))).0,
            401,
            "the phone is out"
        );
        assert_eq!(
            send(laptop.get(s.url("/counter"))).0,
            200,
            "the laptop stays"
        );
        assert_eq!(send(other.get(s.url("/counter"))).0, 200, "bob stays");
    }
    assert_eq!(send(client(&jar()).post(a.url("/logout-others"))).0, 401);
}

/// Issue 28, actix-session: three browsers of one user (and one of
/// another) on two processes; "log out my other devices" from one logs the
/// two others out on every process and keeps the caller and the other
/// user. The route knows its own session through the id `ActixStore` puts
/// in the loaded state (`actix_session_id`).
#[test]
fn actix_app_logs_out_my_other_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("cookie.key");
    let key = key.to_str().expect("utf-8");
    let servers = start_all(
        &example("actix_app"),
        2,
        &dir.path().join("s.db"),
        &["--key-file", key],
    );
    let (a, b) = (&servers[0], &servers[1]);
    let (laptop, phone, tablet, other) = (
        client(&jar()),
        client(&jar()),
        client(&jar()),
        client(&jar()),
    );
    login(&laptop, a, "ada");
    login(&phone, b, "ada");
    login(&tablet, a, "ada");
    login(&other, b, "bob");
    for c in [&laptop, &phone, &tablet, &other] {
        assert_eq!(send(c.post(a.url("/counter"))), (200, "1".into()));
    }
    assert_eq!(
        send(phone.post(b.url("/logout-others"))),
        (200, "logged out 2 other sessions".into())
    );
    for s in &servers {
        for (name, c) in [("the laptop", &laptop), ("the tablet", &tablet)] {
            assert_eq!(send(c.get(s.url("/counter"))).0, 401, "{name} is out");
        }
        assert_eq!(
            send(phone.get(s.url("/counter"))),
            (200, "1".into()),
            "the phone stays"
        );
        assert_eq!(
            send(other.get(s.url("/counter"))),
            (200, "1".into()),
            "bob stays"
        );
    }
    // Nothing left to log out; the phone is still in.
    assert_eq!(
        send(phone.post(a.url("/logout-others"))),
        (200, "logged out 0 other sessions".into())
    );
    assert_eq!(send(phone.post(b.url("/counter"))), (200, "2".into()));
    assert_eq!(send(laptop.post(a.url("/logout-others"))).0, 401);
    assert_eq!(send(client(&jar()).post(b.url("/logout-others"))).0, 401);
}

/// axum-login 0.18's data: the user id under `auth_data`, a number or a
/// string, is the owner; no login, no owner.
#[test]
fn axum_login_user_id_is_the_owner() {
    use sessionlog::web::axum_login_owner;
    let data = |v: serde_json::Value| tower_data(&[("auth_data", v)]);
    assert_eq!(
        axum_login_owner(&data(
            serde_json::json!({"user_id": 42, "auth_hash": [1, 2]})
        ))
        .map(|o| o.as_str().to_owned()),
        Some("42".to_owned())
    );
    assert_eq!(
        axum_login_owner(&data(
            serde_json::json!({"user_id": "ada", "auth_hash": null})
        ))
        .map(|o| o.as_str().to_owned()),
        Some("ada".to_owned())
    );
    assert!(axum_login_owner(&data(serde_json::json!({"user_id": null}))).is_none());
    assert!(axum_login_owner(&tower_data(&[])).is_none());
}

/// Issue 28: `TowerStore::with_owner` records the owner its function finds
/// in the record's data on create and on every save of changed data; data
/// without a user clear it. (MemoryStore keeps owners.)
#[test]
fn tower_store_records_the_owner_from_the_data() {
    use tower_sessions::SessionStore as _;
    use tower_sessions::session::{Id, Record};

    let store = TowerStore::new(MemoryStore::new())
        .with_owner(|data| sessionlog::Owner::new(data.get("user")?.as_str()?).ok());
    let ada = sessionlog::Owner::new("ada").expect("owner");
    let hour = SystemTime::now() + Duration::from_secs(3600);
    runtime().block_on(async {
        let mut rec = Record {
            id: Id::default(),
            data: tower_data(&[("user", "ada".into())]),
            expiry_date: hour.into(),
        };
        store.create(&mut rec).await.expect("create");
        let listed = store.store().sessions_of(&ada).expect("sessions_of");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id.as_str(), rec.id.to_string());
        let mut loaded = store.load(&rec.id).await.expect("load").expect("present");
        loaded.data.insert("n".into(), 1.into());
        store.save(&loaded).await.expect("save");
        assert_eq!(store.store().sessions_of(&ada).expect("list").len(), 1);
        let mut loaded = store.load(&rec.id).await.expect("load").expect("present");
        loaded.data.remove("user");
        store.save(&loaded).await.expect("save");
        assert!(
            store.store().sessions_of(&ada).expect("list").is_empty(),
            "logged out: no owner"
        );
    });
}

/// Issue 28: `ActixStore::with_owner` over real HTTP: an in-process
/// actix-web server whose login puts the user in the session state; two
/// browsers (cookie jars) of one user are both listed by `sessions_of`,
/// `delete_sessions_of` with `keep` logs the other out, and a session that
/// loses its user loses its owner.
#[test]
fn actix_store_records_the_owner_from_the_state() {
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::Key;
    use actix_web::{App, HttpResponse, HttpServer, web};

    async fn login(session: Session, form: web::Form<HashMap<String, String>>) -> HttpResponse {
        session.renew();
        session.insert("user", &form["user"]).expect("insert");
        HttpResponse::Ok().body("in")
    }
    async fn whoami(session: Session) -> HttpResponse {
        let user = session.get::<String>("user").expect("get");
        HttpResponse::Ok().body(user.unwrap_or_else(|| "anonymous".into()))
    }
    async fn forget(session: Session) -> HttpResponse {
        session.remove("user");
        session.insert("visited", true).expect("insert");
        HttpResponse::Ok().body("forgotten")
    }
    /// The id of this request's session, and none once renewed.
    async fn mine(session: Session) -> HttpResponse {
        let before = actix_session_id(&session).map_or("none".into(), |id| id.to_string());
        session.renew();
        let after = actix_session_id(&session).map_or("none".into(), |id| id.to_string());
        HttpResponse::Ok().body(format!("{before} {after}"))
    }

    let store = ActixStore::new(MemoryStore::new()).with_owner(|state| {
        let user: String = serde_json::from_str(state.get("user")?).ok()?;
        sessionlog::Owner::new(user).ok()
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    let app_store = store.clone();
    let server = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let key = Key::generate();
            let srv = HttpServer::new(move || {
                App::new()
                    .wrap(
                        SessionMiddleware::builder(app_store.clone(), key.clone())
                            .cookie_secure(false)
                            .build(),
                    )
                    .route("/login", web::post().to(login))
                    .route("/whoami", web::get().to(whoami))
                    .route("/forget", web::post().to(forget))
                    .route("/mine", web::post().to(mine))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run();
            tx.send(srv.handle()).expect("handle");
            srv.await.expect("server")
        })
    });
    let handle = rx.recv().expect("server started");

    let ada = sessionlog::Owner::new("ada").expect("owner");
    let ids = |store: &ActixStore<MemoryStore>| -> Vec<SessionId> {
        let listed = store.store().sessions_of(&ada).expect("sessions_of");
        listed.into_iter().map(|i| i.id).collect()
    };
    let (laptop, phone, bob) = (client(&jar()), client(&jar()), client(&jar()));
    let login_as = |c: &reqwest::blocking::Client, user: &str| {
        let r = send(c.post(format!("{base}/login")).form(&[("user", user)]));
        assert_eq!(r, (200, "in".to_owned()));
    };
    let who = |c: &reqwest::blocking::Client| send(c.get(format!("{base}/whoami"))).1;
    login_as(&laptop, "ada");
    let laptop_id = ids(&store);
    assert_eq!(laptop_id.len(), 1, "the laptop's session is ada's");
    // A handler learns its own session's id (and none after `renew`,
    // which gives the session a new one); a request without one has none.
    let mine = |c: &reqwest::blocking::Client| send(c.post(format!("{base}/mine"))).1;
    assert_eq!(mine(&laptop), format!("{} none", laptop_id[0]));
    let laptop_id = ids(&store);
    assert_eq!(laptop_id.len(), 1, "renewed: still one session");
    assert_eq!(mine(&laptop), format!("{} none", laptop_id[0]));
    assert_eq!(mine(&client(&jar())), "none none");
    login_as(&phone, "ada");
    login_as(&bob, "bob");
    let both = ids(&store);
    assert_eq!(both.len(), 2, "both browsers are listed");
    let phone_id = both
        .into_iter()
        .find(|id| *id != laptop_id[0])
        .expect("the phone's session");

    // "Log out my other devices" from the phone.
    let deleted = store
        .store()
        .delete_sessions_of(&ada, Some(&phone_id))
        .expect("delete_sessions_of");
    assert_eq!(deleted, 1);
    assert_eq!(who(&laptop), "anonymous", "the laptop is logged out");
    assert_eq!(who(&phone), "ada", "the phone is kept");
    assert_eq!(who(&bob), "bob", "another user is untouched");
    assert_eq!(ids(&store), vec![phone_id.clone()]);

    // The phone's session stays but loses its user: no owner any more.
    assert_eq!(send(phone.post(format!("{base}/forget"))).0, 200);
    assert!(
        ids(&store).is_empty(),
        "a session without user has no owner"
    );
    assert!(
        store
            .store()
            .load_session(&phone_id)
            .expect("load")
            .is_some()
    );

    runtime().block_on(handle.stop(true));
    server.join().expect("server thread");
}
