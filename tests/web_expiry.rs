//! Issue 26: TowerStore keeps tower-sessions' `expiry_date` to the
//! nanosecond for this process's own saves, although the stores keep
//! deadlines to the millisecond: two saves within one millisecond read back
//! in order (tower-sessions' own always-save tests send two requests back
//! to back and compare the stored expiry). The deadlines are built with a
//! chosen sub-millisecond part, so nothing depends on timing. Another
//! handle on the same file (as another process would be) reads back the
//! millisecond, never a later deadline than the one stored.
#![cfg(feature = "tower-sessions")]

use std::collections::HashMap;

use sessionlog::web::TowerStore;
use sessionlog::{DirStore, HashedIds, LogStore, MemoryStore, SessionStore};
use tower_sessions::cookie::time::{Duration, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::SessionStore as _;

/// An hour from now, at 0.5 ms + 100 ns past a whole millisecond.
fn deadline() -> OffsetDateTime {
    let secs = (OffsetDateTime::now_utc() + Duration::hours(1)).unix_timestamp();
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(secs) * 1_000_000_000 + 500_100)
        .expect("a valid time")
}

fn truncated_to_ms(t: OffsetDateTime) -> OffsetDateTime {
    let ns = t.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(ns - ns.rem_euclid(1_000_000)).expect("valid")
}

async fn exact_within_a_millisecond<S: SessionStore + 'static>(store: TowerStore<S>) {
    let t1 = deadline();
    let mut rec = Record {
        id: Id::default(),
        data: HashMap::from([("k".to_owned(), serde_json::json!(1))]),
        expiry_date: t1,
    };
    store.create(&mut rec).await.expect("create");
    let read = |s: &TowerStore<S>, id| {
        let s = s.clone();
        async move { s.load(&id).await.expect("load").expect("live").expiry_date }
    };
    assert_eq!(read(&store, rec.id).await, t1);
    // The same data, 1 µs later, within the same millisecond: a touch.
    rec.expiry_date = t1 + Duration::microseconds(1);
    store.save(&rec).await.expect("save");
    assert_eq!(read(&store, rec.id).await, t1 + Duration::microseconds(1));
    // Changed data, 2 µs later: a full save.
    rec.data.insert("k".to_owned(), serde_json::json!(2));
    rec.expiry_date = t1 + Duration::microseconds(2);
    store.save(&rec).await.expect("save");
    assert_eq!(read(&store, rec.id).await, t1 + Duration::microseconds(2));
}

#[tokio::test]
async fn memory_store_keeps_the_exact_expiry() {
    exact_within_a_millisecond(TowerStore::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn dir_store_keeps_the_exact_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    exact_within_a_millisecond(TowerStore::new(
        DirStore::open(dir.path().join("d")).expect("open"),
    ))
    .await;
}

#[tokio::test]
async fn hashed_log_store_keeps_the_exact_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open(dir.path().join("s.log")).expect("open");
    exact_within_a_millisecond(TowerStore::new(HashedIds::new(s))).await;
}

#[tokio::test]
async fn log_store_keeps_the_exact_expiry_and_another_handle_reads_the_millisecond() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.log");
    exact_within_a_millisecond(TowerStore::new(LogStore::open(&path).expect("open"))).await;

    let mine = TowerStore::new(LogStore::open(&path).expect("open"));
    let theirs = TowerStore::new(LogStore::open(&path).expect("open a second handle"));
    let t = deadline();
    let mut rec = Record {
        id: Id::default(),
        data: HashMap::from([("k".to_owned(), serde_json::json!("v"))]),
        expiry_date: t,
    };
    mine.create(&mut rec).await.expect("create");
    let seen = theirs.load(&rec.id).await.expect("load").expect("live");
    assert_eq!(seen.expiry_date, truncated_to_ms(t));
    assert_eq!(
        mine.load(&rec.id)
            .await
            .expect("load")
            .expect("live")
            .expiry_date,
        t
    );
}
