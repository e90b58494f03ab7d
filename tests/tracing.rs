//! Guards the `tracing` feature: opening a store, its recovery, a
//! compaction and each of its phases get spans, a background failure gets
//! an event, and no span or event field holds a session id or session data.
//! The subscriber is this file's own: it writes down every span and event
//! with its fields.

mod common;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sessionlog::{DirStore, LogStore, Session, SessionStore, SyncPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span or event as the subscriber saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// The span's name, or "event".
    name: String,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// Writes down everything, at every level.
struct Recorder {
    next: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                name: span.metadata().name().to_owned(),
                fields,
            });
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                name: "event".to_owned(),
                fields,
            });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The process's subscriber (background threads report through the
/// global one), and a lock: tests take turns and start from nothing seen.
fn subscriber() -> (&'static Mutex<Vec<Seen>>, MutexGuard<'static, ()>) {
    static SEEN: OnceLock<&'static Recorder> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let rec = SEEN.get_or_init(|| {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder {
            next: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        }));
        tracing::subscriber::set_global_default(Forward(rec)).expect("the only subscriber");
        rec
    });
    rec.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    (&rec.seen, turn)
}

/// A `Subscriber` by reference (the global default must own one).
struct Forward(&'static Recorder);

impl Subscriber for Forward {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }
    fn record(&self, id: &Id, r: &Record<'_>) {
        self.0.record(id, r)
    }
    fn record_follows_from(&self, a: &Id, b: &Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, id: &Id) {
        self.0.enter(id)
    }
    fn exit(&self, id: &Id) {
        self.0.exit(id)
    }
}

fn snapshot(seen: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// No field of anything seen holds `secret`.
fn holds_none_of(all: &[Seen], secrets: &[&str]) {
    for s in all {
        for (k, v) in &s.fields {
            for secret in secrets {
                assert!(
                    !v.contains(secret),
                    "{} field {k} holds {secret}: {v}",
                    s.name
                );
            }
        }
    }
}

const ID: &str = "tracing-secret-session-id";
const DATA: &str = "tracing-secret-data";

#[test]
fn log_store_spans_open_recovery_and_compaction_phases() {
    let (seen, _turn) = subscriber();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let store = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .open(&path)
        .expect("open");
    let mut s = Session::new(common::id(ID), DATA.as_bytes().to_vec());
    store.save_session(&mut s).expect("save");
    store.save_session(&mut s).expect("save again");
    store.compact().expect("compact");
    assert!(store.load_session(&s.id).expect("load").is_some());
    drop(store);

    let all = snapshot(seen);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "sessionlog.open",
        "sessionlog.recovery",
        "sessionlog.compaction",
    ] {
        assert!(names.contains(&name), "no {name} span in {names:?}");
    }
    let open = all
        .iter()
        .find(|s| s.name == "sessionlog.open")
        .expect("open span");
    assert_eq!(open.field("backend"), Some("log"));
    let store_field = open.field("store").expect("store field");
    assert!(store_field.ends_with("sessions.db"), "{store_field}");
    let phases: Vec<&str> = all
        .iter()
        .filter(|s| s.name == "sessionlog.phase")
        .filter_map(|s| s.field("phase"))
        .collect();
    assert_eq!(phases, ["copy", "catch_up", "swap"]);
    holds_none_of(&all, &[ID, DATA]);
}

#[test]
fn a_background_failure_is_an_event() {
    let (seen, _turn) = subscriber();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let store = LogStore::options()
        .compact_check_interval(Duration::from_millis(10))
        .open(&path)
        .expect("open");
    let mut s = Session::new(common::id(ID), DATA.as_bytes().to_vec());
    store.save_session(&mut s).expect("save");
    // The lock file removed under the store: only the background thread's
    // check finds out.
    std::fs::remove_file(dir.path().join("sessions.db.lock")).expect("remove lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        if let Some(e) = snapshot(seen).into_iter().find(|s| s.name == "event") {
            break e;
        }
        assert!(Instant::now() < deadline, "no event in 30 s");
        std::thread::yield_now();
    };
    assert_eq!(event.field("backend"), Some("log"));
    assert_eq!(event.field("kind"), Some("poisoned"));
    assert!(
        event.field("what").is_some_and(|w| w.contains("lock file")),
        "{event:?}"
    );
    drop(store);
    holds_none_of(&snapshot(seen), &[ID, DATA]);
}

#[test]
fn dir_store_open_is_a_span() {
    let (seen, _turn) = subscriber();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DirStore::open(dir.path().join("s")).expect("open");
    let mut s = Session::new(common::id(ID), DATA.as_bytes().to_vec());
    store.save_session(&mut s).expect("save");
    let all = snapshot(seen);
    assert!(
        all.iter()
            .any(|s| s.name == "sessionlog.open" && s.field("backend") == Some("dir")),
        "{all:?}"
    );
    holds_none_of(&all, &[ID, DATA]);
}

#[cfg(feature = "redis")]
#[test]
fn server_calls_are_spans_naming_the_server_without_credentials() {
    use sessionlog::RedisStore;
    let (seen, _turn) = subscriber();
    let prefix = format!("sessionlog-tracing-{}", std::process::id());
    let store = RedisStore::options(&common::servers::redis_url())
        .key_prefix(&prefix)
        .open()
        .unwrap_or_else(|e| common::servers::unreachable("Redis", "SESSIONLOG_REDIS_URL", &e));
    let mut s = Session::new(common::id(ID), DATA.as_bytes().to_vec());
    store.save_session(&mut s).expect("save");
    assert!(store.load_session(&s.id).expect("load").is_some());
    assert!(store.delete_session(&s.id).expect("delete"));
    let all = snapshot(seen);
    let calls: Vec<&Seen> = all
        .iter()
        .filter(|s| s.name == "sessionlog.server_call")
        .collect();
    let ops: Vec<&str> = calls.iter().filter_map(|s| s.field("op")).collect();
    assert_eq!(ops, ["save", "load", "delete"]);
    for c in &calls {
        assert_eq!(c.field("backend"), Some("redis"));
        let store = c.field("store").expect("store field");
        assert!(store.ends_with(&format!("prefix={prefix}")), "{store}");
        assert!(!store.contains('@'), "{store}");
    }
    holds_none_of(&all, &[ID, DATA]);
}
