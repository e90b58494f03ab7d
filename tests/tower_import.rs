//! Guards the move from tower-sessions' own published stores to
//! sessionlog (`web::tower_import`): sessions written in the layouts of
//! `tower-sessions-redis-store` and `tower-sessions-sqlx-store`'s
//! `PostgresStore` are copied into a LogStore, and the example axum app
//! (TowerStore over that LogStore) serves the same cookie as logged in,
//! with the same data; expired records are not copied; a record that is
//! not one fails the copy;
//! - a client logged in to the example app on a LogStore stays logged in,
//!   with its count, as the store is copied (`copy_sessions`, what
//!   `sessionlog copy` runs) to PostgreSQL and the app restarted on it, and
//!   again from PostgreSQL to Redis.
//!
//! The layouts are written here by hand, as those crates' sources write
//! them (maxcountryman/tower-sessions-stores, `redis-store/src/lib.rs`:
//! key = prefix + `Id` text, value = `rmp_serde::to_vec(&record)`, `EXAT`
//! the expiry; `sqlx-store/src/postgres_store.rs`: table
//! `"tower_sessions"."session" (id text primary key, data bytea,
//! expiry_date timestamptz)`, `data` = `rmp_serde::to_vec(&record)`):
//! the crates themselves pull in fred and sqlx.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessionlog::web::tower_import::{copy_from_tower_postgres, copy_from_tower_redis};
use sessionlog::{CopyOptions, LogStore, SessionId, SessionStore};
use tower_sessions::session::{Id, Record};

#[path = "common/server_check.rs"]
mod server_check;

fn raw_redis_url() -> String {
    std::env::var("SESSIONLOG_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into())
}

fn raw_postgres_url() -> String {
    std::env::var("SESSIONLOG_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into())
}

/// Once per process: both servers answer, or the process says how to
/// start them and the calling test fails (tests/common/server_check.rs).
fn require_servers(name: &str) {
    use server_check::{Server, require};
    require(name, || {
        vec![
            Server {
                name: "PostgreSQL",
                var: "SESSIONLOG_POSTGRES_URL",
                url: raw_postgres_url(),
                default_port: 5432,
            },
            Server {
                name: "Redis",
                var: "SESSIONLOG_REDIS_URL",
                url: raw_redis_url(),
                default_port: 6379,
            },
        ]
    });
}

fn redis_url() -> String {
    require_servers("Redis");
    raw_redis_url()
}

fn postgres_url() -> String {
    require_servers("PostgreSQL");
    raw_postgres_url()
}

/// A name no other run uses.
fn unique(stem: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{stem}_{}_{nanos}", std::process::id())
}

/// A record as a tower-sessions app logged in as `user` leaves it, with
/// `count` in its data, expiring `expires_in` from now (negative: gone).
fn record(user: &str, count: u64, expires_in: i64) -> Record {
    let data: HashMap<String, serde_json::Value> = [
        ("user".to_owned(), user.into()),
        ("count".to_owned(), count.into()),
    ]
    .into();
    let now = SystemTime::now();
    let at = if expires_in >= 0 {
        now + Duration::from_secs(expires_in.unsigned_abs())
    } else {
        now - Duration::from_secs(expires_in.unsigned_abs())
    };
    Record {
        id: Id::default(),
        data,
        expiry_date: at.into(),
    }
}

/// The example axum app of the `sessionlog-examples` crate, built with its
/// `postgres` and `redis` features by `cargo test --all-features` at the
/// workspace's root (the crate is a default member).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("examples").join("axum_app");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --all-features` at the workspace's root \
         (it builds the examples crate too), or build it first with `cargo build -p \
         sessionlog-examples --example axum_app --features tower-sessions,postgres,redis`",
        bin.display()
    );
    bin
}

/// The example app on `store`, killed on drop.
struct App {
    child: Child,
    base: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    fn start(store: &Path) -> App {
        App::start_with(&[store.to_str().expect("utf-8")])
    }

    /// The app with `--store ARGS[0]` and, if given, `--name ARGS[1]`.
    fn start_with(args: &[&str]) -> App {
        let mut cmd = Command::new(example());
        cmd.args(["--store", args[0]]);
        if let Some(name) = args.get(1) {
            cmd.args(["--name", name]);
        }
        let mut child = cmd
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let mut app = App {
            child,
            base: String::new(),
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the example listens");
        app.base = format!("http://{addr}");
        app
    }

    /// `GET /counter` from a browser holding the cookie `id` (tower-sessions'
    /// default name) set to `id`, as the app before the switch set it.
    fn counter_with_cookie(&self, id: Option<&str>) -> (u16, String) {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let url: reqwest::Url = self.base.parse().expect("url");
        if let Some(id) = id {
            jar.add_cookie_str(&format!("id={id}; Path=/"), &url);
        }
        let client = reqwest::blocking::Client::builder()
            .cookie_provider(jar)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let resp = client
            .get(format!("{}/counter", self.base))
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().expect("body").trim().to_owned())
    }
}

/// Checks the LogStore at `store` after an import of `live` (and not of
/// `gone`) through the example app.
fn logged_in_after_the_switch(store: &Path, live: &Record, gone: &Record) {
    let id = live.id.to_string();
    {
        let log = LogStore::open(store).expect("open");
        let s = log
            .load_session(&SessionId::new(id.clone()).expect("id"))
            .expect("load")
            .expect("the session was copied under its tower-sessions id");
        let want = SystemTime::from(live.expiry_date);
        let got = s.expires.expect("a deadline");
        let diff = want.duration_since(got).unwrap_or_else(|e| e.duration());
        assert!(
            diff < Duration::from_millis(1),
            "deadline {got:?} != {want:?}"
        );
        assert!(
            !log.has_session(&SessionId::new(gone.id.to_string()).expect("id"))
                .expect("has"),
            "an expired record was copied"
        );
    }
    let app = App::start(store);
    assert_eq!(
        app.counter_with_cookie(Some(&id)),
        (200, "3".to_owned()),
        "the browser is still logged in, with its data"
    );
    // The test can fail: without the session the same request is refused.
    assert_eq!(app.counter_with_cookie(None).0, 401);
    assert_eq!(
        app.counter_with_cookie(Some(&Id::default().to_string())).0,
        401
    );
}

#[test]
fn a_tower_sessions_redis_store_moves_without_logging_anyone_out() {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_connection()
        .expect("Redis at SESSIONLOG_REDIS_URL (bash .ci/servers.sh)");
    let prefix = format!("{}:", unique("tsimport"));
    let live = record("ada", 3, 3600);
    let gone = record("eve", 1, -3600);
    for r in [&live, &gone] {
        let bytes = rmp_serde::to_vec(r).expect("encode");
        let key = format!("{prefix}{}", r.id);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .query(&mut conn)
            .expect("set");
        let at = SystemTime::from(r.expiry_date)
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        // The live key expires in an hour; the other one is gone at once.
        let _: i64 = redis::cmd("EXPIREAT")
            .arg(&key)
            .arg(at)
            .query(&mut conn)
            .expect("expireat");
    }
    // A key under another prefix is not the store's.
    let other = format!("{}:{}", unique("tsother"), Id::default());
    let _: () = redis::cmd("SET")
        .arg(&other)
        .arg("x")
        .query(&mut conn)
        .expect("set");

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("s.db");
    let log = LogStore::open(&store).expect("create");
    let report =
        copy_from_tower_redis(&redis_url(), &prefix, &log, &mut CopyOptions::new()).expect("copy");
    assert_eq!((report.copied, report.skipped), (1, 0), "{report:?}");
    // Again: the live session is skipped, not duplicated.
    let again =
        copy_from_tower_redis(&redis_url(), &prefix, &log, &mut CopyOptions::new()).expect("copy");
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    drop(log);
    logged_in_after_the_switch(&store, &live, &gone);

    // A value under the prefix that is not a record fails the copy.
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}junk"))
        .arg("not msgpack")
        .query(&mut conn)
        .expect("set");
    let log = LogStore::open(&store).expect("open");
    assert!(copy_from_tower_redis(&redis_url(), &prefix, &log, &mut CopyOptions::new()).is_err());
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}{}", live.id))
        .arg(format!("{prefix}junk"))
        .arg(&other)
        .query(&mut conn)
        .expect("del");
}

#[test]
fn a_tower_sessions_postgres_store_moves_without_logging_anyone_out() {
    let schema = unique("tsimport");
    let live = record("ada", 3, 3600);
    let gone = record("eve", 1, -3600);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = postgres_url();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at SESSIONLOG_POSTGRES_URL (bash .ci/servers.sh)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "create schema \"{schema}\"; create table \"{schema}\".\"session\" \
                 (id text primary key not null, data bytea not null, \
                 expiry_date timestamptz not null)"
            ))
            .await
            .expect("create");
        for r in [&live, &gone] {
            let bytes = rmp_serde::to_vec(r).expect("encode");
            client
                .execute(
                    &format!(
                        "insert into \"{schema}\".\"session\" (id, data, expiry_date) \
                         values ($1, $2, $3)"
                    ),
                    &[&r.id.to_string(), &bytes, &SystemTime::from(r.expiry_date)],
                )
                .await
                .expect("insert");
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("s.db");
    let log = LogStore::open(&store).expect("create");
    let report = copy_from_tower_postgres(&url, &schema, "session", &log, &mut CopyOptions::new())
        .expect("copy");
    assert_eq!((report.copied, report.skipped), (1, 0), "{report:?}");
    drop(log);
    logged_in_after_the_switch(&store, &live, &gone);
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("drop schema \"{schema}\" cascade"))
            .await
            .expect("drop");
    });
}

/// A browser: one cookie jar across every app (cookies do not depend on
/// the port).
fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn call(req: reqwest::blocking::RequestBuilder) -> (u16, String) {
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().expect("body").trim().to_owned())
}

#[test]
fn a_logged_in_client_of_the_example_app_stays_logged_in_across_switches_of_store() {
    use sessionlog::{PostgresStore, RedisStore, copy_sessions};

    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("s.db");
    let c = browser();
    {
        let app = App::start(&file);
        let (status, body) = call(
            c.post(format!("{}/login", app.base))
                .form(&[("user", "ada")]),
        );
        assert_eq!((status, body.as_str()), (200, "logged in as ada"));
        assert_eq!(
            call(c.post(format!("{}/counter", app.base))),
            (200, "1".into())
        );
    }

    // LogStore -> PostgreSQL, the app restarted on PostgreSQL.
    let table = unique("tsswitch");
    let url = postgres_url();
    {
        let log = LogStore::open(&file).expect("open");
        let pg = PostgresStore::options(&url)
            .table(&table)
            .open()
            .expect("PostgreSQL");
        pg.setup().expect("setup");
        let report = copy_sessions(&log, &pg, &mut CopyOptions::new()).expect("copy");
        assert_eq!(report.copied, 1, "{report:?}");
    }
    {
        let app = App::start_with(&[&url, &table]);
        assert_eq!(
            call(c.get(format!("{}/counter", app.base))),
            (200, "1".into()),
            "still logged in on PostgreSQL"
        );
        assert_eq!(
            call(c.post(format!("{}/counter", app.base))),
            (200, "2".into())
        );
        // Another browser is not: the test can fail.
        let other = browser();
        assert_eq!(call(other.get(format!("{}/counter", app.base))).0, 401);
    }

    // PostgreSQL -> Redis, the app restarted on Redis.
    let prefix = unique("tsswitch");
    {
        let pg = PostgresStore::options(&url)
            .table(&table)
            .open()
            .expect("PostgreSQL");
        let redis = RedisStore::options(&redis_url())
            .key_prefix(&prefix)
            .open()
            .expect("Redis");
        let report = copy_sessions(&pg, &redis, &mut CopyOptions::new()).expect("copy");
        assert_eq!(report.copied, 1, "{report:?}");
        for s in pg.iter_sessions().expect("iterate") {
            pg.delete_session(&s.expect("session").id)
                .expect("clean up");
        }
    }
    {
        let app = App::start_with(&[&redis_url(), &prefix]);
        assert_eq!(
            call(c.get(format!("{}/counter", app.base))),
            (200, "2".into()),
            "still logged in on Redis"
        );
        let (status, _) = call(c.post(format!("{}/logout", app.base)));
        assert_eq!(status, 200);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("drop table \"{table}\""))
            .await
            .expect("drop");
    });
}
