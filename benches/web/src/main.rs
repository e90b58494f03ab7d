//! One axum app (tower-sessions 0.14 middleware) over a choice of session
//! stores, for `run.sh` to load with wrk.
//!
//! `sessionlog-web-bench --store KIND [--addr A] [--threads N] [--seed N]
//! [--ids FILE] [--path P] [--always-save] [--reuseport]`
//!
//! KIND: `ts-memory`, `ts-sqlite`, `ts-redis` (tower-sessions' own stores),
//! `log`, `log-pool`, `log-always` (SyncPolicy::Always), `redis`,
//! `redis-inline` (sessionlog stores through `TowerStore`).
//! With `--seed N` the first process creates N logged-in sessions and
//! writes their cookie values to `--ids`, one a line.
//!
//! Routes: `GET /counter` reads the session, `POST /counter` increments
//! (tower-sessions' read-then-write).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use sessionlog::web::{Blocking, TowerStore};
use sessionlog::{LogStore, RedisStore, SyncPolicy};
use tower_sessions::session::{Id, Record};
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

async fn read(session: Session) -> Result<String, StatusCode> {
    match session.get::<u64>("count").await {
        Ok(Some(n)) => Ok(n.to_string()),
        Ok(None) => Err(StatusCode::UNAUTHORIZED),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn increment(session: Session) -> Result<String, StatusCode> {
    let n = match session.get::<u64>("count").await {
        Ok(Some(n)) => n + 1,
        Ok(None) => return Err(StatusCode::UNAUTHORIZED),
        Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR),
    };
    session
        .insert("count", n)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

struct Flags {
    store: String,
    addr: SocketAddr,
    threads: usize,
    seed: usize,
    ids: String,
    path: String,
    always_save: bool,
    reuseport: bool,
}

fn flags() -> Flags {
    let mut f = Flags {
        store: "log".into(),
        addr: "127.0.0.1:3000".parse().expect("addr"),
        threads: 2,
        seed: 0,
        ids: "ids.txt".into(),
        path: "bench-sessions".into(),
        always_save: false,
        reuseport: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--always-save" => f.always_save = true,
            "--reuseport" => f.reuseport = true,
            _ => {
                let v = args.next().expect("flag value");
                match a.as_str() {
                    "--store" => f.store = v,
                    "--addr" => f.addr = v.parse().expect("--addr"),
                    "--threads" => f.threads = v.parse().expect("--threads"),
                    "--seed" => f.seed = v.parse().expect("--seed"),
                    "--ids" => f.ids = v,
                    "--path" => f.path = v,
                    other => panic!("unknown flag {other}"),
                }
            }
        }
    }
    f
}

fn main() {
    let f = flags();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(f.threads)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            match f.store.as_str() {
                "ts-memory" => serve(&f, tower_sessions::MemoryStore::default()).await,
                "ts-sqlite" => {
                    let url = format!("sqlite:{}.sqlite?mode=rwc", f.path);
                    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
                    let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
                    store.migrate().await.expect("migrate");
                    serve(&f, store).await
                }
                "ts-redis" => {
                    use fred::prelude::*;
                    let cfg = Config::from_url("redis://127.0.0.1:6379").expect("url");
                    let pool = Pool::new(cfg, None, None, None, 8).expect("pool");
                    let _task = pool.connect();
                    pool.wait_for_connect().await.expect("redis");
                    serve(&f, tower_sessions_redis_store::RedisStore::new(pool)).await
                }
                "log" | "log-pool" | "log-always" => {
                    let sync = if f.store == "log-always" {
                        SyncPolicy::Always
                    } else {
                        SyncPolicy::Interval(Duration::from_secs(1))
                    };
                    let log = LogStore::options()
                        .sync(sync)
                        .open(format!("{}.db", f.path))
                        .expect("log store");
                    let b = if f.store == "log-pool" { Blocking::Pool } else { Blocking::Auto };
                    serve(&f, TowerStore::new(log).with_blocking(b)).await
                }
                "redis" | "redis-inline" => {
                    let r = RedisStore::options("redis://127.0.0.1/")
                        .key_prefix(&format!("bench{}", std::process::id() % 1))
                        .pool_size(16)
                        .open()
                        .expect("redis store");
                    let b = if f.store == "redis" { Blocking::Auto } else { Blocking::Inline };
                    serve(&f, TowerStore::new(r).with_blocking(b)).await
                }
                other => panic!("unknown store {other}"),
            }
        });
}

async fn serve<S: SessionStore + Clone>(f: &Flags, store: S) {
    if f.seed > 0 {
        let mut out = std::fs::File::create(&f.ids).expect("ids file");
        for _ in 0..f.seed {
            let mut rec = Record {
                id: Id::default(),
                data: [
                    ("user".to_owned(), "bench".into()),
                    ("count".to_owned(), 0.into()),
                ]
                .into_iter()
                .collect(),
                expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(2),
            };
            store.create(&mut rec).await.expect("seed");
            writeln!(out, "{}", rec.id).expect("write id");
        }
    }
    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_always_save(f.always_save)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(2)));
    let app = Router::new()
        .route("/counter", get(read).post(increment))
        .layer(layer);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if f.reuseport {
        socket.set_reuseport(true).expect("SO_REUSEPORT");
    }
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(f.addr).expect("bind");
    let listener = socket.listen(1024).expect("listen");
    println!("LISTENING {}", f.addr);
    axum::serve(listener, app).await.expect("serve");
}
