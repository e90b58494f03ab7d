//! The login / counter / logout app of `axum_app`, on actix-web with
//! actix-session and a sessionlog `LogStore` (`ActixStore`).
//!
//! ```text
//! cargo run -p sessionlog-examples --example actix_app --features actix-session -- \
//!     --store sessions.db --addr 127.0.0.1:8080 --key-file cookie.key
//! ```
//!
//! Routes: `POST /login` (form `user=NAME`), `GET /counter`, `POST
//! /counter` (last writer wins, as actix-session is), `POST /logout`,
//! `POST /logout-others` ("log out my other devices": deletes every other
//! session of this session's user; 401 without a logged-in session),
//! `GET /health`. Flags: `--store PATH`, `--addr HOST:PORT` (port 0 picks
//! a free one), `--sync always|never|interval:MS`, `--idle-secs N`,
//! `--key-file PATH` (64 bytes signing the cookies, shared by every
//! process; created mode 0600 if missing, refused if others can read it). Prints `LISTENING <addr>` when ready.

use std::time::Duration;

use actix_session::config::{PersistentSession, SessionLifecycle, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use sessionlog::web::{ActixStore, actix_session_id};
use sessionlog::{LogStore, Owner, SessionStore, SyncPolicy};

/// The session store: every save records the session's user as its owner.
type Store = ActixStore<LogStore>;

#[derive(Deserialize)]
struct Login {
    user: String,
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    eprintln!("actix_app: session error: {e}");
    HttpResponse::InternalServerError().body("session storage failed")
}

async fn login(session: Session, form: web::Form<Login>) -> HttpResponse {
    if form.user.is_empty() || form.user.len() > 64 {
        return HttpResponse::BadRequest().body("user: 1 to 64 bytes");
    }
    // A new key at login (actix-session: delete the old, save the new).
    session.renew();
    session.clear();
    if let Err(e) = session.insert("user", &form.user) {
        return internal(e);
    }
    if let Err(e) = session.insert("count", 0u64) {
        return internal(e);
    }
    HttpResponse::Ok().body(format!("logged in as {}\n", form.user))
}

/// The count of a logged-in session, `None` without one.
fn count(session: &Session) -> Result<Option<u64>, Box<HttpResponse>> {
    match session.get::<String>("user") {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        Err(e) => return Err(Box::new(internal(e))),
    }
    match session.get::<u64>("count") {
        Ok(n) => Ok(Some(n.unwrap_or(0))),
        Err(e) => Err(Box::new(internal(e))),
    }
}

async fn read_counter(session: Session) -> HttpResponse {
    match count(&session) {
        Ok(Some(n)) => HttpResponse::Ok().body(format!("{n}\n")),
        Ok(None) => HttpResponse::Unauthorized().body("not logged in"),
        Err(r) => *r,
    }
}

async fn increment(session: Session) -> HttpResponse {
    match count(&session) {
        Ok(Some(n)) => match session.insert("count", n + 1) {
            Ok(()) => HttpResponse::Ok().body(format!("{}\n", n + 1)),
            Err(e) => internal(e),
        },
        Ok(None) => HttpResponse::Unauthorized().body("not logged in"),
        Err(r) => *r,
    }
}

/// "Log out my other devices": every other session of this user goes.
/// The store knows each session's user because `ActixStore::with_owner`
/// (in `main`) records it on every save; actix-session does not tell a
/// handler its session's key, so `actix_session_id` reads the one the
/// store put in the state when it loaded this session.
async fn logout_others(session: Session, store: web::Data<Store>) -> HttpResponse {
    let user = match session.get::<String>("user") {
        Ok(Some(user)) => user,
        Ok(None) => return HttpResponse::Unauthorized().body("not logged in"),
        Err(e) => return internal(e),
    };
    let (Ok(owner), Some(here)) = (Owner::new(user), actix_session_id(&session)) else {
        return internal("the session has no stored id or owner");
    };
    let store = store.into_inner();
    let deleted = web::block(move || store.store().delete_sessions_of(&owner, Some(&here))).await;
    match deleted {
        Ok(Ok(n)) => HttpResponse::Ok().body(format!("logged out {n} other sessions\n")),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body("logged out\n")
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body(format!("ok {}\n", std::process::id()))
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "actix_app: {msg}\nusage: actix_app [--store PATH] [--addr HOST:PORT] \
         [--sync always|never|interval:MS] [--idle-secs N] [--key-file PATH]"
    );
    std::process::exit(2)
}

/// The cookie signing key from `path`, created (64 random bytes, mode
/// 0600) if absent. An existing key file must be a regular file of this
/// user that no one else can read or write: whoever reads the key can sign
/// any cookie.
fn load_key(path: &str) -> std::io::Result<Key> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match opened {
        Ok(mut f) => {
            let meta = f.metadata()?;
            let mode = meta.mode() & 0o7777;
            if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
                return Err(std::io::Error::other(format!(
                    "{path}: the cookie key must be a regular file of this user"
                )));
            }
            if mode & 0o077 != 0 {
                return Err(std::io::Error::other(format!(
                    "{path}: mode {mode:04o} lets other users read the cookie key \
                     (they could sign any session cookie); `chmod 600` it"
                )));
            }
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            Key::try_from(bytes.as_slice())
                .map_err(|_| std::io::Error::other(format!("{path}: not a 64-byte key")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            let tmp = format!("{path}.{}", std::process::id());
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(key.master())?;
            f.sync_all()?;
            // Another process may have won the race: use whichever is
            // there (a hard link never replaces an existing file).
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            load_key(path)
        }
        Err(e) => Err(e),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut store_path = "sessions.db".to_owned();
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut sync = SyncPolicy::Interval(Duration::from_secs(1));
    let mut idle = 3600i64;
    let mut key_file = "cookie.key".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--store" => store_path = value,
            "--addr" => addr = value,
            "--key-file" => key_file = value,
            "--sync" => {
                sync = match value.as_str() {
                    "always" => SyncPolicy::Always,
                    "never" => SyncPolicy::Never,
                    v => match v.strip_prefix("interval:").map(str::parse::<u64>) {
                        Some(Ok(ms)) => SyncPolicy::Interval(Duration::from_millis(ms)),
                        _ => usage("--sync: always, never or interval:MS"),
                    },
                }
            }
            "--idle-secs" => {
                idle = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--idle-secs: a positive number"))
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let log = LogStore::options()
        .sync(sync)
        .open(&store_path)
        .map_err(std::io::Error::other)?;
    // Each session's owner is its user, so that /logout-others can find
    // the user's other sessions.
    let store: Store = ActixStore::new(log).with_owner(|state| {
        let user: String = serde_json::from_str(state.get("user")?).ok()?;
        Owner::new(user).ok()
    });
    let key = load_key(&key_file)?;
    let server = HttpServer::new(move || {
        let lifecycle = SessionLifecycle::PersistentSession(
            PersistentSession::default()
                .session_ttl(actix_web::cookie::time::Duration::seconds(idle))
                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        );
        App::new()
            .app_data(web::Data::new(store.clone()))
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .session_lifecycle(lifecycle)
                    .build(),
            )
            .route("/login", web::post().to(login))
            .route("/counter", web::get().to(read_counter))
            .route("/counter", web::post().to(increment))
            .route("/logout", web::post().to(logout))
            .route("/logout-others", web::post().to(logout_others))
            .route("/health", web::get().to(health))
    })
    .workers(2)
    .bind(&addr)?;
    for a in server.addrs() {
        println!("LISTENING {a}");
    }
    server.run().await
}
