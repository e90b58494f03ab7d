//! Guards the quota a LogStore records (issue 27, point 2): a save past
//! `max_sessions` or `max_bytes` fails with `Error::QuotaExceeded` and
//! writes nothing (or evicts the least recently used sessions, if the
//! store says so); expired sessions never count, and when they are what
//! fills the quota the save goes through and a background compaction
//! gives their room back; the quota is the store's, as its idle limit is.

use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use sessionlog::{
    Clock, Error, LogOptions, LogStore, ManualClock, Session, SessionId, SessionStore, StorePolicy,
    WhenFull,
};

fn id(i: usize) -> SessionId {
    SessionId::new(format!("user{i:04}")).expect("valid id")
}

fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
}

fn opts(clock: &ManualClock) -> LogOptions {
    LogStore::options().background(false).clock(clock.clone())
}

fn save(store: &LogStore, i: usize, len: usize) -> sessionlog::Result<()> {
    store.save_session(&mut Session::new(id(i), vec![i as u8; len]))
}

fn refused(r: sessionlog::Result<()>) -> (&'static str, u64, u64) {
    match r {
        Err(Error::QuotaExceeded {
            what, limit, used, ..
        }) => (what, limit, used),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
}

#[test]
fn a_save_past_the_session_quota_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let store = opts(&clock).max_sessions(3).open(&path).expect("open");
    for i in 0..3 {
        save(&store, i, 10).expect("under the quota");
    }
    let before = store.stats().expect("stats").log_bytes;
    assert_eq!(refused(save(&store, 3, 10)), ("sessions", 3, 4));
    assert_eq!(
        store.stats().expect("stats").log_bytes,
        before,
        "nothing written"
    );
    assert_eq!(store.load_session(&id(3)).expect("load"), None);
    // Updating a session adds none; a logout makes room.
    save(&store, 0, 20).expect("an update");
    assert!(store.delete_session(&id(1)).expect("delete"));
    save(&store, 3, 10).expect("room after a logout");
    let e = save(&store, 4, 10).expect_err("full again");
    assert!(e.to_string().contains("quota of 3 sessions"), "{e}");
}

#[test]
fn a_save_past_the_byte_quota_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let store = opts(&clock).max_bytes(10_000).open(&path).expect("open");
    let mut saved = 0;
    let last = loop {
        match save(&store, saved, 1000) {
            Ok(()) => saved += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(saved, 9, "9 records of about 1056 bytes fit in 10,000");
    match last {
        Error::QuotaExceeded {
            what, limit, used, ..
        } => {
            assert_eq!((what, limit), ("bytes", 10_000));
            assert!(used > 10_000, "{used}");
        }
        other => panic!("{other:?}"),
    }
    // A smaller session still fits.
    save(&store, 100, 10).expect("a small one");
}

#[test]
fn expired_sessions_do_not_count_and_a_background_compaction_frees_their_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let store = LogStore::options()
        .clock(clock.clone())
        .compact_check_interval(Duration::from_secs(3600))
        .max_sessions(3)
        .open(&path)
        .expect("open");
    for i in 0..3 {
        let mut s =
            Session::new(id(i), vec![1; 10]).with_expires(clock.now() + Duration::from_secs(60));
        store.save_session(&mut s).expect("save");
    }
    clock.advance(Duration::from_secs(120));
    let generation = store.stats().expect("stats").generation;
    // The index is full of expired sessions: the save goes through...
    save(&store, 10, 10).expect("expired sessions do not count");
    // ...and the background thread, asked for a compaction, drops them
    // (its own check would not come for an hour).
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().expect("stats").generation == generation {
        assert!(Instant::now() < deadline, "no compaction was started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = store.stats().expect("stats");
    assert_eq!((stats.sessions, stats.expired), (1, 0));
    save(&store, 11, 10).expect("room");
    save(&store, 12, 10).expect("room");
    assert_eq!(refused(save(&store, 13, 10)), ("sessions", 3, 4));
}

#[test]
fn evict_oldest_makes_room_by_deleting_the_least_recently_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let store = opts(&clock)
        .max_sessions(3)
        .when_full(WhenFull::EvictOldest)
        .open(&path)
        .expect("open");
    for i in 0..3 {
        save(&store, i, 10).expect("save");
        clock.advance(Duration::from_secs(1));
    }
    assert!(
        store.touch_session(&id(0)).expect("touch"),
        "0 is now the most recent"
    );
    clock.advance(Duration::from_secs(1));
    save(&store, 3, 10).expect("evicts one");
    assert_eq!(
        store.load_session(&id(1)).expect("load"),
        None,
        "1 was the oldest"
    );
    for i in [0, 2, 3] {
        assert!(store.load_session(&id(i)).expect("load").is_some(), "{i}");
    }
    assert_eq!(store.stats().expect("stats").sessions, 3);
}

fn reopen(
    path: &Path,
    clock: &ManualClock,
    f: impl FnOnce(LogOptions) -> LogOptions,
) -> sessionlog::Result<LogStore> {
    f(opts(clock)).open(path)
}

#[test]
fn the_quota_is_the_stores_and_set_policy_changes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    drop(reopen(&path, &clock, |o| o.max_sessions(2)).expect("set up"));
    // The tool opens without options and applies it.
    let tool = reopen(&path, &clock, |o| o).expect("open");
    assert_eq!(tool.policy().expect("policy").max_sessions, Some(2));
    save(&tool, 0, 1).expect("save");
    save(&tool, 1, 1).expect("save");
    assert_eq!(refused(save(&tool, 2, 1)), ("sessions", 2, 3));
    // Another quota at open is refused by name.
    match reopen(&path, &clock, |o| o.max_sessions(5)) {
        Err(Error::InvalidOption(m)) => assert!(m.contains("max_sessions 5"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Raised by an explicit call, for every handle.
    let app = reopen(&path, &clock, |o| o.max_sessions(2)).expect("the same quota");
    let p = tool.policy().expect("policy");
    app.set_policy(StorePolicy {
        max_sessions: Some(3),
        ..p
    })
    .expect("set");
    save(&tool, 2, 1).expect("room under the new quota");
    assert_eq!(refused(save(&tool, 3, 1)), ("sessions", 3, 4));
    assert_eq!(tool.stats().expect("stats").policy.max_sessions, Some(3));
}

/// DirStore takes the same quota as an option: refused past it, expired
/// sessions not counted (the save that finds them removes their files).
#[test]
fn a_dir_store_refuses_past_its_quota_and_expired_sessions_do_not_count() {
    use sessionlog::DirStore;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let clock = clock();
    let store = DirStore::options()
        .clock(clock.clone())
        .sync(sessionlog::SyncPolicy::Never)
        .max_sessions(3)
        .open(&dir)
        .expect("open");
    let save = |i: usize, expiring: bool| {
        let mut s = Session::new(id(i), vec![1; 10]);
        if expiring {
            s = s.with_expires(clock.now() + Duration::from_secs(60));
        }
        store.save_session(&mut s)
    };
    save(0, true).expect("save");
    save(1, false).expect("save");
    save(2, false).expect("save");
    assert_eq!(refused(save(3, false)), ("sessions", 3, 4));
    save(1, false).expect("an update adds none");
    let files = || std::fs::read_dir(&dir).expect("ls").count();
    let before = files();
    clock.advance(Duration::from_secs(120));
    save(3, false).expect("the expired session does not count");
    assert_eq!(files(), before, "its file went, the new one came");
    assert_eq!(refused(save(4, false)), ("sessions", 3, 4));

    let bytes = DirStore::options()
        .clock(clock.clone())
        .max_bytes(1000)
        .open(tmp.path().join("b"))
        .expect("open");
    let mut saved = 0;
    let e = loop {
        match bytes.save_session(&mut Session::new(id(saved), vec![0; 200])) {
            Ok(()) => saved += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            e,
            Error::QuotaExceeded {
                what: "bytes",
                limit: 1000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        (3..=4).contains(&saved),
        "{saved} files of about 250 bytes in 1000"
    );
}

/// A refused save costs a lookup, not a walk of the index, until the log
/// changes or a counted session expires: then the count is made again.
#[test]
fn the_count_a_refusal_keeps_follows_expiry_and_new_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store = opts(&clock)
        .max_sessions(2)
        .open(dir.path().join("s.db"))
        .expect("open");
    let mut s =
        Session::new(id(0), vec![1; 10]).with_expires(clock.now() + Duration::from_secs(60));
    store.save_session(&mut s).expect("save");
    save(&store, 1, 10).expect("save");
    for _ in 0..3 {
        assert_eq!(refused(save(&store, 2, 10)), ("sessions", 2, 3));
    }
    // A session counted expires: the next save is counted afresh.
    clock.advance(Duration::from_secs(61));
    save(&store, 2, 10).expect("room once session 0 expired");
    assert_eq!(refused(save(&store, 3, 10)), ("sessions", 2, 3));
    // A logout appends a record: counted afresh too.
    assert!(store.delete_session(&id(1)).expect("delete"));
    save(&store, 3, 10).expect("room after a logout");
}
