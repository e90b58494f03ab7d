//! Guards the `metrics` feature: with a recorder installed (metrics-util's
//! debugging recorder, as an application installs its exporter), every
//! store's counters and latency histograms move under the names DESIGN.md
//! §16 lists, labelled with the backend and the store (its path, or its
//! server without credentials) and nothing else: no session id, no data.
//! A LogStore also reports its syncs, compactions and gauges.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sessionlog::{
    DirStore, Error, LogStore, ManualClock, MemoryStore, Session, SessionStore, SyncPolicy,
};

/// One recorder for the whole test binary (a process has one), and a lock:
/// a snapshot drains what it reads (counters and gauges back to 0,
/// histograms emptied), so each shows what happened since the last one,
/// and tests take turns.
fn recorder() -> (&'static Snapshotter, MutexGuard<'static, ()>) {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let snap = SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snap
    });
    (snap, TURN.lock().unwrap_or_else(|e| e.into_inner()))
}

/// One metric of a snapshot.
#[derive(Debug)]
struct Metric {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

impl Metric {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every metric whose `store` label is `store`.
fn of_store(snap: &Snapshotter, store: &str) -> Vec<Metric> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, value)| {
            let (kind, key) = k.into_parts();
            Metric {
                kind,
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .filter(|m| m.label("store") == Some(store))
        .collect()
}

/// The counter `name` (with every extra label in `extra`), 0 if absent.
fn counter(ms: &[Metric], name: &str, extra: &[(&str, &str)]) -> u64 {
    ms.iter()
        .filter(|m| m.kind == MetricKind::Counter && m.name == name)
        .filter(|m| extra.iter().all(|(k, v)| m.label(k) == Some(v)))
        .map(|m| match m.value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// The values a histogram got since the last snapshot.
fn histogram(ms: &[Metric], name: &str, extra: &[(&str, &str)]) -> Vec<f64> {
    ms.iter()
        .filter(|m| m.kind == MetricKind::Histogram && m.name == name)
        .filter(|m| extra.iter().all(|(k, v)| m.label(k) == Some(v)))
        .flat_map(|m| match &m.value {
            DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn gauge(ms: &[Metric], name: &str) -> Option<f64> {
    ms.iter()
        .find(|m| m.kind == MetricKind::Gauge && m.name == name)
        .and_then(|m| match m.value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
}

/// Every metric is named `sessionlog_*` and carries the backend, the
/// store and at most one more label of a known kind (`kind`, `op`).
fn check_labels(ms: &[Metric], backend: &str) {
    assert!(!ms.is_empty());
    for m in ms {
        assert!(m.name.starts_with("sessionlog_"), "{m:?}");
        assert_eq!(m.label("backend"), Some(backend), "{m:?}");
        for (k, _) in &m.labels {
            assert!(
                ["backend", "store", "kind", "op"].contains(&k.as_str()),
                "unexpected label {k} on {m:?}"
            );
        }
    }
}

/// The calls every store is put through, with what each counter and
/// histogram should show after them. `advance` moves the store's clock
/// past the one session saved with a deadline.
fn exercise(store: &dyn SessionStore, advance: &dyn Fn(Duration)) {
    let mut a = Session::new(common::id("metrics-a"), b"data of a".to_vec());
    store.save_session(&mut a).expect("save a");
    let mut b = Session::new(common::id("metrics-b"), b"data of b".to_vec());
    b.expires = Some(std::time::SystemTime::now() + Duration::from_secs(3600));
    store.save_session(&mut b).expect("save b");
    assert!(store.load_session(&a.id).expect("load a").is_some());
    assert!(
        store
            .load_session(&common::id("metrics-none"))
            .expect("load none")
            .is_none()
    );
    // A conditional save of a stale copy: a conflict, not an error.
    let mut stale = Session::new(a.id.clone(), b"stale".to_vec());
    assert!(matches!(
        store.save_session_if_unchanged(&mut stale),
        Err(Error::Conflict { .. })
    ));
    assert!(store.touch_session(&a.id).expect("touch"));
    assert!(store.delete_session(&a.id).expect("delete"));
    // An error by kind: a session over the store's size limit.
    let mut big = Session::new(common::id("metrics-big"), vec![0; 2 << 20]);
    assert!(matches!(
        store.save_session(&mut big),
        Err(Error::TooLarge { .. })
    ));
    advance(Duration::from_secs(7200));
    assert!(store.load_session(&b.id).expect("load expired").is_none());
}

/// What `exercise` leaves in the counters and histograms.
fn check_exercised(ms: &[Metric], backend: &str) {
    check_labels(ms, backend);
    assert_eq!(counter(ms, "sessionlog_saves_total", &[]), 2);
    assert_eq!(counter(ms, "sessionlog_loads_total", &[]), 3);
    assert_eq!(counter(ms, "sessionlog_conflicts_total", &[]), 1);
    assert_eq!(counter(ms, "sessionlog_touches_total", &[]), 1);
    assert_eq!(counter(ms, "sessionlog_deletes_total", &[]), 1);
    assert_eq!(
        counter(ms, "sessionlog_errors_total", &[("kind", "too_large")]),
        1
    );
    // The conflict is not counted as an error too.
    assert_eq!(counter(ms, "sessionlog_errors_total", &[]), 1);
    // Latencies of every load and save, failed ones included.
    let saves = histogram(ms, "sessionlog_save_seconds", &[]);
    assert_eq!(saves.len(), 4, "{saves:?}");
    assert!(saves.iter().all(|&s| (0.0..60.0).contains(&s)));
    assert_eq!(histogram(ms, "sessionlog_load_seconds", &[]).len(), 3);
}

#[test]
fn log_store_counts_calls_syncs_compactions_and_gauges() {
    let (snap, _turn) = recorder();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let clock = ManualClock::new(std::time::SystemTime::now());
    let store = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .max_session_size(1 << 20)
        .max_sessions(1000)
        .clock(clock.clone())
        .open(&path)
        .expect("open");
    let label = store.path().display().to_string();
    // The open sets the gauges once.
    let opened = of_store(snap, &label);
    assert_eq!(gauge(&opened, "sessionlog_live_sessions"), Some(0.0));

    exercise(&store, &|d| clock.advance(d));
    let ms = of_store(snap, &label);
    check_exercised(&ms, "log");
    assert_eq!(counter(&ms, "sessionlog_expired_on_read_total", &[]), 1);

    store.sync().expect("sync");
    let stats = store.compact().expect("compact");
    store.stats().expect("stats");
    let ms = of_store(snap, &label);
    assert_eq!(histogram(&ms, "sessionlog_sync_seconds", &[]).len(), 1);
    assert_eq!(counter(&ms, "sessionlog_compactions_total", &[]), 1);
    assert_eq!(
        histogram(&ms, "sessionlog_compaction_seconds", &[]).len(),
        1
    );
    assert_eq!(
        counter(&ms, "sessionlog_compaction_read_bytes_total", &[]),
        stats.bytes_before
    );
    assert_eq!(
        counter(&ms, "sessionlog_compaction_written_bytes_total", &[]),
        stats.bytes_after
    );
    // The gauges, under the names Stats::gauges gives them.
    let s = store.stats().expect("stats");
    let ms = of_store(snap, &label);
    for g in s.gauges() {
        assert_eq!(gauge(&ms, g.name), Some(g.value), "{}", g.name);
    }
    assert_eq!(gauge(&ms, "sessionlog_live_sessions"), Some(0.0));
    assert_eq!(gauge(&ms, "sessionlog_quota_max_sessions"), Some(1000.0));
}

#[test]
fn log_store_background_thread_refreshes_gauges_and_counts_its_errors() {
    let (snap, _turn) = recorder();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let store = LogStore::options()
        .compact_check_interval(Duration::from_millis(10))
        .open(&path)
        .expect("open");
    let label = store.path().display().to_string();
    let mut s = Session::new(common::id("metrics-bg"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    // Nothing but the background thread's check sets the gauge after the
    // open (which set it to 0).
    wait_for(
        snap,
        &label,
        "the background thread to refresh the gauge",
        |ms| gauge(ms, "sessionlog_live_sessions") == Some(1.0),
    );
    // The lock file removed under the store: the background thread's
    // check fails, which no caller sees but the error counter.
    std::fs::remove_file(dir.path().join("sessions.db.lock")).expect("remove lock");
    wait_for(
        snap,
        &label,
        "the background thread to count its error",
        |ms| counter(ms, "sessionlog_errors_total", &[("kind", "poisoned")]) == 1,
    );
}

/// Returns once the store's metrics satisfy `done`; fails after 30 s.
fn wait_for(snap: &Snapshotter, store: &str, what: &str, done: impl Fn(&[Metric]) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ms = of_store(snap, store);
        if done(&ms) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}: {ms:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn memory_store_counts_calls() {
    let (snap, _turn) = recorder();
    // MemoryStores share the label: start from a drained snapshot.
    of_store(snap, "memory");
    let clock = ManualClock::new(std::time::SystemTime::now());
    let store = MemoryStore::options()
        .max_session_size(1 << 20)
        .clock(clock.clone())
        .open()
        .expect("open");
    exercise(&store, &|d| clock.advance(d));
    let delta = of_store(snap, "memory");
    check_exercised(&delta, "memory");
    assert_eq!(counter(&delta, "sessionlog_expired_on_read_total", &[]), 1);
}

#[test]
fn dir_store_counts_calls_and_syncs() {
    let (snap, _turn) = recorder();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions");
    let clock = ManualClock::new(std::time::SystemTime::now());
    let store = DirStore::options()
        .sync(SyncPolicy::Always)
        .max_session_size(1 << 20)
        .clock(clock.clone())
        .open(&path)
        .expect("open");
    let label = path.display().to_string();
    exercise(&store, &|d| clock.advance(d));
    let ms = of_store(snap, &label);
    check_exercised(&ms, "dir");
    assert_eq!(counter(&ms, "sessionlog_expired_on_read_total", &[]), 1);
    // SyncPolicy::Always: the directory synced after each change (two
    // saves, a touch, a delete).
    assert!(histogram(&ms, "sessionlog_sync_seconds", &[]).len() >= 4);
}

#[cfg(feature = "redis")]
#[test]
fn redis_store_keeps_call_latency_by_op() {
    use sessionlog::RedisStore;
    let (snap, _turn) = recorder();
    let prefix = format!("sessionlog-metrics-{}", std::process::id());
    let store = RedisStore::options(&common::servers::redis_url())
        .key_prefix(&prefix)
        .max_session_size(1 << 20)
        .open()
        .unwrap_or_else(|e| common::servers::unreachable("Redis", "SESSIONLOG_REDIS_URL", &e));
    store.setup().expect("setup");
    let label = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(k, ..)| {
            let key = k.key();
            let store = key
                .labels()
                .find(|l| l.key() == "store")?
                .value()
                .to_owned();
            store
                .ends_with(&format!("prefix={prefix}"))
                .then_some(store)
        })
        .next()
        .expect("the store's metrics");
    assert!(!label.contains('@'), "{label}");
    let mut s = Session::new(common::id("metrics-redis"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    assert!(store.load_session(&s.id).expect("load").is_some());
    assert!(store.delete_session(&s.id).expect("delete"));
    let ms = of_store(snap, &label);
    check_labels(&ms, "redis");
    assert_eq!(counter(&ms, "sessionlog_saves_total", &[]), 1);
    assert_eq!(counter(&ms, "sessionlog_loads_total", &[]), 1);
    for op in ["save", "load", "delete"] {
        assert_eq!(
            histogram(&ms, "sessionlog_server_call_seconds", &[("op", op)]).len(),
            1,
            "{op}"
        );
    }
}
