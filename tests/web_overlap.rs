//! Issue 26, points 1-3: with the web adapters, a logout stays a logout and
//! an acknowledged update stays, when requests overlap.
//!
//! Each scenario runs a real server in this process on 127.0.0.1 (axum
//! with tower-sessions over `TowerStore`, or actix-web with actix-session
//! over `ActixStore`) and drives it over HTTP with reqwest clients and
//! cookie jars. The overlap is made, not hoped for: a handler loads the
//! session, reports that through a channel and blocks on a `Notify` until
//! the test has run the other requests to completion; only then is it
//! released. Every wait is bounded; nothing sleeps.
//!
//! - A request that loaded the session before another request logged out
//!   does not log the old cookie in again when it ends: neither by the
//!   always-save of its unchanged copy, nor by a save of changed data, for
//!   tower-sessions with `with_always_save` true and false and for
//!   actix-session with both TTL extension policies; no session is left.
//! - Six increments through `SessionUpdate` acknowledged while a slow
//!   read-only request that loaded before them is held open: after it
//!   ends, the counter reads 6 (always-save true and false).
//! - `SessionUpdate` in a request that loaded the session before a
//!   concurrent logout starts a new session from empty data: the logged-out
//!   user is not carried into it, and the old cookie stays dead.
//!
//! Every scenario runs on MemoryStore, LogStore, `HashedIds<LogStore>`,
//! DirStore, `HashedIds<DirStore>` and, under their features, PostgreSQL,
//! MariaDB and Redis (which must be running: `bash .ci/servers.sh`; an
//! unreachable one fails the test); and through `Encrypted` on MemoryStore,
//! LogStore (also under `HashedIds`), DirStore and the three servers.

#[macro_use]
mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::conformance::{Backend, Config, Enc, Hashed};
use common::web_backends::{Dir, Log, Memory};
use reqwest::cookie::CookieStore as _;
use sessionlog::web::{ActixStore, TowerStore};
use sessionlog::{ManualClock, SessionStore};

/// The longest any single wait in these tests may take before it fails.
const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------
// Backends

/// A store on a clock that starts at the real time (the frameworks compute
/// deadlines from the real clock). The location must outlive the store.
fn open<B: Backend>() -> (B, B::Store) {
    let cfg = Config {
        clock: ManualClock::new(SystemTime::now()),
        ..Config::default()
    };
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    (loc, store)
}

/// How many live sessions the backend holds (called outside any runtime).
fn live_sessions<S: SessionStore>(store: &S) -> usize {
    let mut n = 0;
    for s in store.iter_sessions().expect("iter") {
        s.expect("session");
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------
// Holding a request open

/// Lets a handler report that it loaded the session and then wait until
/// the test releases it.
struct Hold {
    loaded: Mutex<mpsc::Sender<()>>,
    release: tokio::sync::Notify,
}

impl Hold {
    fn new() -> (Arc<Hold>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let hold = Hold {
            loaded: Mutex::new(tx),
            release: tokio::sync::Notify::new(),
        };
        (Arc::new(hold), rx)
    }

    /// Called by the handler after it loaded the session.
    async fn wait(&self) {
        let _ = self.loaded.lock().expect("not poisoned").send(());
        self.release.notified().await;
    }
}

/// A running server: its base URL and the handle on its held handlers.
struct Site {
    base: String,
    hold: Arc<Hold>,
    loaded: mpsc::Receiver<()>,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts `path` on a thread of its own with the cookies of `jar`, and
    /// returns once its handler has loaded the session and is held.
    fn start_held(
        &self,
        jar: &Arc<reqwest::cookie::Jar>,
        path: &str,
    ) -> std::thread::JoinHandle<(u16, String)> {
        let req = client(jar).post(self.url(path));
        let t = std::thread::spawn(move || send(req));
        self.loaded
            .recv_timeout(BOUND)
            .expect("the held handler loaded the session");
        t
    }

    /// Lets the held handler finish and returns its response.
    fn release(&self, held: std::thread::JoinHandle<(u16, String)>) -> (u16, String) {
        self.hold.release.notify_one();
        held.join().expect("the held request's thread")
    }

    /// The session cookie(s) `jar` holds for this site.
    fn cookie(&self, jar: &reqwest::cookie::Jar) -> String {
        let url: reqwest::Url = self.base.parse().expect("url");
        jar.cookies(&url)
            .expect("a session cookie")
            .to_str()
            .expect("ascii")
            .to_owned()
    }

    /// `/whoami` sent with exactly `cookie`.
    fn whoami_with(&self, cookie: &str) -> String {
        let c = reqwest::blocking::Client::builder()
            .timeout(BOUND)
            .build()
            .expect("client");
        let (status, body) = send(c.get(self.url("/whoami")).header("cookie", cookie));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn get(&self, jar: &Arc<reqwest::cookie::Jar>, path: &str) -> String {
        let (status, body) = send(client(jar).get(self.url(path)));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn post(&self, jar: &Arc<reqwest::cookie::Jar>, path: &str) -> String {
        let (status, body) = send(client(jar).post(self.url(path)));
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }
}

fn client(jar: &Arc<reqwest::cookie::Jar>) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_provider(Arc::clone(jar))
        .timeout(BOUND)
        .build()
        .expect("client")
}

fn send(req: reqwest::blocking::RequestBuilder) -> (u16, String) {
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().expect("body"))
}

// ---------------------------------------------------------------------
// The axum app (tower-sessions, TowerStore, SessionUpdate)

mod axum_app {
    use super::*;
    use axum::Router;
    use axum::extract::{FromRef, State};
    use axum::routing::{get, post};
    use sessionlog::web::{SessionUpdate, UpdateError};
    use tower_sessions::{Session, SessionManagerLayer};

    struct AppState<S> {
        store: TowerStore<S>,
        hold: Arc<Hold>,
    }

    impl<S> Clone for AppState<S> {
        fn clone(&self) -> Self {
            AppState {
                store: self.store.clone(),
                hold: Arc::clone(&self.hold),
            }
        }
    }

    impl<S: SessionStore + 'static> FromRef<AppState<S>> for TowerStore<S> {
        fn from_ref(state: &AppState<S>) -> Self {
            state.store.clone()
        }
    }

    async fn user(session: &Session) -> String {
        session
            .get::<String>("user")
            .await
            .expect("session")
            .unwrap_or_else(|| "anonymous".into())
    }

    async fn login(session: Session) -> &'static str {
        session.cycle_id().await.expect("cycle id");
        session.insert("user", "ada").await.expect("insert");
        "ok"
    }

    async fn whoami(session: Session) -> String {
        user(&session).await
    }

    async fn logout(session: Session) -> &'static str {
        session.flush().await.expect("flush");
        "bye"
    }

    /// Loads the session, is held, and changes nothing.
    async fn hold_read<S>(State(st): State<AppState<S>>, session: Session) -> String {
        let who = user(&session).await;
        st.hold.wait().await;
        who
    }

    /// Loads the session, is held, then changes it.
    async fn hold_write<S>(State(st): State<AppState<S>>, session: Session) -> String {
        let who = user(&session).await;
        st.hold.wait().await;
        session.insert("page", "settings").await.expect("insert");
        who
    }

    /// The conflict-safe increment.
    async fn count<S: SessionStore + 'static>(
        update: SessionUpdate<S>,
    ) -> Result<String, UpdateError> {
        let n = update
            .update_value("count", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(n.to_string())
    }

    /// Loads the session through tower-sessions, is held, then increments
    /// through `SessionUpdate`.
    async fn count_held<S: SessionStore + 'static>(
        State(st): State<AppState<S>>,
        session: Session,
        update: SessionUpdate<S>,
    ) -> Result<String, UpdateError> {
        let _ = user(&session).await;
        st.hold.wait().await;
        count(update).await
    }

    async fn read_count(session: Session) -> String {
        let n: u64 = session
            .get("count")
            .await
            .expect("session")
            .unwrap_or_default();
        n.to_string()
    }

    /// A running axum server; the runtime (and the server) stop on drop.
    pub struct Axum {
        pub site: Site,
        _rt: tokio::runtime::Runtime,
    }

    pub fn start<S: SessionStore + 'static>(store: &TowerStore<S>, always_save: bool) -> Axum {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (hold, loaded) = Hold::new();
        let state = AppState {
            store: store.clone(),
            hold: Arc::clone(&hold),
        };
        let layer = SessionManagerLayer::new(store.clone())
            .with_secure(false)
            .with_always_save(always_save);
        let app = Router::new()
            .route("/login", post(login))
            .route("/whoami", get(whoami))
            .route("/logout", post(logout))
            .route("/hold/read", post(hold_read::<S>))
            .route("/hold/write", post(hold_write::<S>))
            .route("/count", get(read_count).post(count::<S>))
            .route("/count/held", post(count_held::<S>))
            .layer(layer)
            .with_state(state);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(async move { axum::serve(listener, app).await });
        Axum {
            site: Site {
                base: format!("http://{addr}"),
                hold,
                loaded,
            },
            _rt: rt,
        }
    }
}

// ---------------------------------------------------------------------
// The actix-web app (actix-session, ActixStore)

mod actix_app {
    use super::*;
    use actix_session::config::{PersistentSession, SessionLifecycle, TtlExtensionPolicy};
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::Key;
    use actix_web::{App, HttpServer, web};

    fn user(session: &Session) -> String {
        session
            .get::<String>("user")
            .expect("session")
            .unwrap_or_else(|| "anonymous".into())
    }

    async fn login(session: Session) -> &'static str {
        session.renew();
        session.insert("user", "ada").expect("insert");
        "ok"
    }

    async fn whoami(session: Session) -> String {
        user(&session)
    }

    async fn logout(session: Session) -> &'static str {
        session.purge();
        "bye"
    }

    async fn hold_read(session: Session, hold: web::Data<Hold>) -> String {
        let who = user(&session);
        hold.wait().await;
        who
    }

    async fn hold_write(session: Session, hold: web::Data<Hold>) -> String {
        let who = user(&session);
        hold.wait().await;
        session.insert("page", "settings").expect("insert");
        who
    }

    /// A running actix-web server, stopped and joined on drop.
    pub struct Actix {
        pub site: Site,
        handle: actix_web::dev::ServerHandle,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Actix {
        fn drop(&mut self) {
            super::runtime().block_on(self.handle.stop(false));
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn start<S: SessionStore + 'static>(store: &ActixStore<S>, every_request: bool) -> Actix {
        let (hold, loaded) = Hold::new();
        let data = web::Data::from(Arc::clone(&hold));
        let store = store.clone();
        let key = Key::generate();
        let policy = if every_request {
            TtlExtensionPolicy::OnEveryRequest
        } else {
            TtlExtensionPolicy::OnStateChanges
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let lifecycle = SessionLifecycle::PersistentSession(
                        PersistentSession::default()
                            .session_ttl(actix_web::cookie::time::Duration::hours(1))
                            .session_ttl_extension_policy(policy.clone()),
                    );
                    App::new()
                        .app_data(data.clone())
                        .wrap(
                            SessionMiddleware::builder(store.clone(), key.clone())
                                .cookie_secure(false)
                                .session_lifecycle(lifecycle)
                                .build(),
                        )
                        .route("/login", web::post().to(login))
                        .route("/whoami", web::get().to(whoami))
                        .route("/logout", web::post().to(logout))
                        .route("/hold/read", web::post().to(hold_read))
                        .route("/hold/write", web::post().to(hold_write))
                })
                .workers(2)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("send");
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv_timeout(BOUND).expect("the server started");
        Actix {
            site: Site {
                base: format!("http://{addr}"),
                hold,
                loaded,
            },
            handle,
            thread: Some(thread),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------
// Scenarios

/// Logs in; a request that loaded the session is held at `held` while the
/// user logs out; then it ends. The old cookie, and whatever cookie the
/// stale response left in the jar, are anonymous, and no session is left.
fn logout_stays_a_logout<S: SessionStore>(site: &Site, store: &S, held: &str, what: &str) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    assert_eq!(site.post(&jar, "/login"), "ok", "{what}");
    let old = site.cookie(&jar);
    assert_eq!(site.whoami_with(&old), "ada", "{what}: logged in");

    let stale = site.start_held(&jar, held);
    assert_eq!(site.post(&jar, "/logout"), "bye", "{what}");
    assert_eq!(site.whoami_with(&old), "anonymous", "{what}: logged out");
    let (status, body) = site.release(stale);
    assert_eq!(
        (status, body.as_str()),
        (200, "ada"),
        "{what}: the held request loaded the session before the logout"
    );

    assert_eq!(
        site.whoami_with(&old),
        "anonymous",
        "{what}: the stale request logged the old cookie in again"
    );
    assert_eq!(
        site.get(&jar, "/whoami"),
        "anonymous",
        "{what}: the stale response's cookie is logged in"
    );
    assert_eq!(
        live_sessions(store),
        0,
        "{what}: the stale request left a session behind"
    );
}

/// The held requests `held` in turn, on a tower-sessions app.
fn tower_logout<B: Backend>(always_save: bool, held: &[&str]) {
    let (_loc, backend) = open::<B>();
    let store = TowerStore::new(backend);
    for path in held {
        let app = axum_app::start(&store, always_save);
        let what = format!("always_save {always_save}, {path}");
        logout_stays_a_logout(&app.site, store.store(), path, &what);
    }
}

/// The held requests `held` in turn, on an actix-web app.
fn actix_logout<B: Backend>(every_request: bool, held: &[&str]) {
    let (_loc, backend) = open::<B>();
    let store = ActixStore::new(backend);
    for path in held {
        let app = actix_app::start(&store, every_request);
        let what = format!("TTL extended on every request {every_request}, {path}");
        logout_stays_a_logout(&app.site, store.store(), path, &what);
    }
}

/// Six `SessionUpdate` increments acknowledged while a read-only request
/// that loaded the session before them is held open; after it ends the
/// counter reads 6 and the user is still logged in.
fn tower_counter<B: Backend>() {
    let (_loc, backend) = open::<B>();
    let store = TowerStore::new(backend);
    for always_save in [true, false] {
        let app = axum_app::start(&store, always_save);
        let site = &app.site;
        let jar = Arc::new(reqwest::cookie::Jar::default());
        assert_eq!(site.post(&jar, "/login"), "ok");
        let slow = site.start_held(&jar, "/hold/read");
        for i in 1..=6 {
            assert_eq!(site.post(&jar, "/count"), i.to_string(), "acknowledged");
        }
        let (status, body) = site.release(slow);
        assert_eq!((status, body.as_str()), (200, "ada"));
        assert_eq!(
            site.get(&jar, "/count"),
            "6",
            "always_save {always_save}: the slow request undid acknowledged increments"
        );
        assert_eq!(site.get(&jar, "/whoami"), "ada");
    }
}

/// A `SessionUpdate` in a request that loaded the session before a
/// concurrent logout: the update lands in a new session that holds only
/// the update, the old cookie stays anonymous.
fn tower_update_after_logout<B: Backend>() {
    let (_loc, backend) = open::<B>();
    let store = TowerStore::new(backend);
    for always_save in [true, false] {
        let app = axum_app::start(&store, always_save);
        let site = &app.site;
        let jar = Arc::new(reqwest::cookie::Jar::default());
        assert_eq!(site.post(&jar, "/login"), "ok");
        let old = site.cookie(&jar);
        let stale = site.start_held(&jar, "/count/held");
        assert_eq!(site.post(&jar, "/logout"), "bye");
        let (status, body) = site.release(stale);
        assert_eq!((status, body.as_str()), (200, "1"), "counted from empty");
        assert_eq!(
            site.whoami_with(&old),
            "anonymous",
            "always_save {always_save}: the old cookie is logged in again"
        );
        let new = site.cookie(&jar);
        assert_ne!(new, old, "a new session under a new id");
        assert_eq!(
            site.get(&jar, "/whoami"),
            "anonymous",
            "always_save {always_save}: the logged-out user was carried into the new session"
        );
        assert_eq!(site.get(&jar, "/count"), "1");
        assert_eq!(site.post(&jar, "/logout"), "bye");
        assert_eq!(live_sessions(store.store()), 0);
    }
}

macro_rules! overlap_tests {
    ($name:ident, $backend:ty) => {
        mod $name {
            /// Point 1: the always-save of a stale, unchanged copy.
            #[test]
            fn tower_stale_always_save_does_not_log_in_again() {
                super::tower_logout::<$backend>(true, &["/hold/read"])
            }
            /// Points 1 and 3: the always-save of a stale, changed copy.
            #[test]
            fn tower_stale_always_save_of_changes_does_not_log_in_again() {
                super::tower_logout::<$backend>(true, &["/hold/write"])
            }
            /// Point 3: a save of changed data without always-save.
            #[test]
            fn tower_stale_changed_save_does_not_log_in_again() {
                super::tower_logout::<$backend>(false, &["/hold/write", "/hold/read"])
            }
            /// Point 2.
            #[test]
            fn tower_acknowledged_increments_stay() {
                super::tower_counter::<$backend>()
            }
            /// Point 3 through `SessionUpdate`.
            #[test]
            fn tower_update_after_logout_starts_afresh() {
                super::tower_update_after_logout::<$backend>()
            }
            /// Point 3 (`update`), then `update_ttl` of a stale request.
            #[test]
            fn actix_stale_update_does_not_log_in_again_ttl_on_every_request() {
                super::actix_logout::<$backend>(true, &["/hold/write", "/hold/read"])
            }
            /// Point 3 (`update`), then a stale read-only request.
            #[test]
            fn actix_stale_update_does_not_log_in_again_ttl_on_changes() {
                super::actix_logout::<$backend>(false, &["/hold/write", "/hold/read"])
            }
        }
    };
}

overlap_tests!(memory, super::Memory);
overlap_tests!(log, super::Log);
overlap_tests!(hashed_log, super::Hashed<super::Log>);
overlap_tests!(dir, super::Dir);
overlap_tests!(hashed_dir, super::Hashed<super::Dir>);
#[cfg(feature = "postgres")]
overlap_tests!(postgres, crate::common::servers::Postgres);
#[cfg(feature = "mysql")]
overlap_tests!(mysql, crate::common::servers::MySql);
#[cfg(feature = "redis")]
overlap_tests!(redis, crate::common::servers::Redis);
// Through `Encrypted` (issue 29).
overlap_tests!(enc_memory, super::Enc<super::Memory>);
overlap_tests!(enc_log, super::Enc<super::Log>);
overlap_tests!(hashed_enc_log, super::Hashed<super::Enc<super::Log>>);
overlap_tests!(enc_dir, super::Enc<super::Dir>);
#[cfg(feature = "postgres")]
overlap_tests!(enc_postgres, super::Enc<crate::common::servers::Postgres>);
#[cfg(feature = "mysql")]
overlap_tests!(enc_mysql, super::Enc<crate::common::servers::MySql>);
#[cfg(feature = "redis")]
overlap_tests!(enc_redis, super::Enc<crate::common::servers::Redis>);
