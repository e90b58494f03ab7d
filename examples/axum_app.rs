//! An axum app with sessions in a sessionlog `LogStore`: log in, count,
//! log out. Several processes may serve one store file at once.
//!
//! ```text
//! cargo run --release -p sessionlog-examples --example axum_app --features tower-sessions -- \
//!     --store sessions.db --addr 127.0.0.1:3000 --sync interval:1000
//! curl -c jar -b jar -d user=ada http://127.0.0.1:3000/login
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/counter      # 1
//! curl -c jar -b jar http://127.0.0.1:3000/counter              # 1
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/logout
//! ```
//!
//! Routes:
//! - `POST /login` (form `user=NAME`): a new session (new id) holding the user.
//! - `GET /counter`: the session's count; 401 without a logged-in session.
//! - `POST /counter`: increments it conflict-safely (`SessionUpdate`).
//! - `POST /counter/plain`: increments it the usual tower-sessions way
//!   (read, then write: concurrent requests can lose increments).
//! - `POST /logout`: deletes the session.
//! - `POST /logout-others`: "log out my other devices": deletes every other
//!   session of this session's user (the store records each session's
//!   user as its owner); 401 without a logged-in session.
//! - `GET /health`: `ok` and the process id.
//!
//! Flags: `--store PATH` (default `sessions.db`; built with the `postgres`
//! or `redis` feature also a `postgres://` or `redis://` URL, the store's
//! default table or key prefix unless `--name NAME` says which, so that
//! `sessionlog copy` moves its users), `--addr HOST:PORT`
//! (default `127.0.0.1:3000`; port 0 picks a free one), `--sync
//! always|never|interval:MS` (default `interval:1000`), `--idle-secs N`
//! (sliding expiry, default 3600), `--always-save` (tower-sessions saves
//! every request, refreshing the expiry), `--blocking auto|inline|pool`,
//! `--threads N` (runtime workers, default: one per core). The app prints
//! `LISTENING <addr>` once it accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sessionlog::web::{Blocking, SessionUpdate, TowerStore, UpdateError};
use sessionlog::{LogStore, Owner, SessionId, SessionStore, SyncPolicy};
use tower_sessions::cookie::time;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// The store behind the app: a LogStore file, or with the `postgres` or
/// `redis` feature a server named by its URL.
type Backend = Box<dyn SessionStore>;

#[derive(Clone)]
struct AppState {
    sessions: TowerStore<Backend>,
}

impl FromRef<AppState> for TowerStore<Backend> {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.clone()
    }
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

const USER: &str = "user";
const COUNT: &str = "count";

fn internal(e: impl std::fmt::Display) -> Response {
    eprintln!("axum_app: session error: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, "session storage failed").into_response()
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "not logged in").into_response()
}

async fn login(session: Session, Form(form): Form<Login>) -> Response {
    if form.user.is_empty() || form.user.len() > 64 {
        return (StatusCode::BAD_REQUEST, "user: 1 to 64 bytes").into_response();
    }
    // A new id at login: an id set before (by anyone) is never promoted.
    if let Err(e) = session.cycle_id().await {
        return internal(e);
    }
    session.clear().await;
    if let Err(e) = session.insert(USER, &form.user).await {
        return internal(e);
    }
    if let Err(e) = session.insert(COUNT, 0u64).await {
        return internal(e);
    }
    format!("logged in as {}\n", form.user).into_response()
}

async fn logged_in(session: &Session) -> Result<bool, Response> {
    match session.get::<String>(USER).await {
        Ok(user) => Ok(user.is_some()),
        Err(e) => Err(internal(e)),
    }
}

async fn read_counter(session: Session) -> Response {
    match logged_in(&session).await {
        Ok(true) => {}
        Ok(false) => return unauthorized(),
        Err(r) => return r,
    }
    match session.get::<u64>(COUNT).await {
        Ok(n) => format!("{}\n", n.unwrap_or(0)).into_response(),
        Err(e) => internal(e),
    }
}

/// The conflict-safe increment: the closure runs again if another request
/// saved the session in between.
async fn increment(update: SessionUpdate<Backend>) -> Result<Response, UpdateError> {
    let n = update
        .update(|data| {
            data.get(USER)?;
            let n = data.get(COUNT).and_then(|v| v.as_u64()).unwrap_or(0) + 1;
            data.insert(COUNT.to_owned(), n.into());
            Some(n)
        })
        .await?;
    Ok(match n {
        Some(n) => format!("{n}\n").into_response(),
        None => unauthorized(),
    })
}

/// The usual tower-sessions way: last writer wins.
async fn increment_plain(session: Session) -> Response {
    match logged_in(&session).await {
        Ok(true) => {}
        Ok(false) => return unauthorized(),
        Err(r) => return r,
    }
    let n = match session.get::<u64>(COUNT).await {
        Ok(n) => n.unwrap_or(0) + 1,
        Err(e) => return internal(e),
    };
    match session.insert(COUNT, n).await {
        Ok(()) => format!("{n}\n").into_response(),
        Err(e) => internal(e),
    }
}

/// "Log out my other devices": every other session of this user goes.
/// The store knows each session's user because `TowerStore::with_owner`
/// (in `serve`) records it on every save; with axum-login, give it
/// `sessionlog::web::axum_login_owner` instead.
async fn logout_others(State(state): State<AppState>, session: Session) -> Response {
    let user = match session.get::<String>(USER).await {
        Ok(Some(user)) => user,
        Ok(None) => return unauthorized(),
        Err(e) => return internal(e),
    };
    let (Ok(owner), Some(Ok(here))) = (
        Owner::new(user),
        session.id().map(|id| SessionId::new(id.to_string())),
    ) else {
        return internal("the session has no stored id or owner");
    };
    let store = state.sessions.clone();
    let deleted =
        tokio::task::spawn_blocking(move || store.store().delete_sessions_of(&owner, Some(&here)))
            .await;
    match deleted {
        Ok(Ok(n)) => format!("logged out {n} other sessions\n").into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn logout(session: Session) -> Response {
    match session.delete().await {
        Ok(()) => "logged out\n".into_response(),
        Err(e) => internal(e),
    }
}

async fn health() -> String {
    format!("ok {}\n", std::process::id())
}

struct Flags {
    store: String,
    addr: SocketAddr,
    sync: SyncPolicy,
    idle: i64,
    always_save: bool,
    blocking: Blocking,
    threads: Option<usize>,
    /// The table of a `postgres://` store, the key prefix of a `redis://`
    /// one (the store's default when absent).
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    name: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "axum_app: {msg}\nusage: axum_app [--store PATH|URL] [--name TABLE|PREFIX] [--addr HOST:PORT] \
         [--sync always|never|interval:MS] [--idle-secs N] [--always-save] \
         [--blocking auto|inline|pool] [--threads N]"
    );
    std::process::exit(2)
}

fn parse_flags() -> Flags {
    let mut f = Flags {
        store: "sessions.db".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        sync: SyncPolicy::Interval(Duration::from_secs(1)),
        idle: 3600,
        always_save: false,
        blocking: Blocking::Auto,
        threads: None,
        name: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--always-save" {
            f.always_save = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--store" => f.store = value,
            "--name" => f.name = Some(value),
            "--addr" => f.addr = value.parse().unwrap_or_else(|_| usage("--addr: HOST:PORT")),
            "--sync" => {
                f.sync = match value.as_str() {
                    "always" => SyncPolicy::Always,
                    "never" => SyncPolicy::Never,
                    v => match v.strip_prefix("interval:").map(str::parse::<u64>) {
                        Some(Ok(ms)) => SyncPolicy::Interval(Duration::from_millis(ms)),
                        _ => usage("--sync: always, never or interval:MS"),
                    },
                }
            }
            "--idle-secs" => {
                f.idle = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--idle-secs: a positive number"))
            }
            "--blocking" => {
                f.blocking = match value.as_str() {
                    "auto" => Blocking::Auto,
                    "inline" => Blocking::Inline,
                    "pool" => Blocking::Pool,
                    _ => usage("--blocking: auto, inline or pool"),
                }
            }
            "--threads" => {
                f.threads = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--threads: a positive number")),
                )
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    f
}

fn main() {
    let flags = parse_flags();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = flags.threads {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("axum_app: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = rt.block_on(serve(flags)) {
        eprintln!("axum_app: {e}");
        std::process::exit(1)
    }
}

/// `--store`: a `postgres://` or `redis://` URL (with that feature), else
/// a LogStore file.
fn open_backend(flags: &Flags) -> Result<Backend, Box<dyn std::error::Error>> {
    #[cfg(feature = "postgres")]
    if flags.store.starts_with("postgres://") {
        let mut options = sessionlog::PostgresStore::options(&flags.store);
        if let Some(table) = &flags.name {
            options = options.table(table);
        }
        let store = options.open()?;
        store.setup()?;
        return Ok(Box::new(store));
    }
    #[cfg(feature = "redis")]
    if flags.store.starts_with("redis://") {
        let mut options = sessionlog::RedisStore::options(&flags.store);
        if let Some(prefix) = &flags.name {
            options = options.key_prefix(prefix);
        }
        return Ok(Box::new(options.open()?));
    }
    Ok(Box::new(
        LogStore::options().sync(flags.sync).open(&flags.store)?,
    ))
}

async fn serve(flags: Flags) -> Result<(), Box<dyn std::error::Error>> {
    let backend = open_backend(&flags)?;
    let sessions = TowerStore::new(backend)
        .with_blocking(flags.blocking)
        // Each session's owner is its user, so that /logout-others can
        // find the user's other sessions.
        .with_owner(|data| Owner::new(data.get(USER)?.as_str()?).ok());
    let layer = SessionManagerLayer::new(sessions.clone())
        .with_secure(false)
        .with_always_save(flags.always_save)
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(flags.idle)));
    let app = Router::new()
        .route("/login", post(login))
        .route("/counter", get(read_counter).post(increment))
        .route("/counter/plain", post(increment_plain))
        .route("/logout", post(logout))
        .route("/logout-others", post(logout_others))
        .route("/health", get(health))
        .layer(layer)
        .with_state(AppState { sessions });
    let listener = tokio::net::TcpListener::bind(flags.addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
