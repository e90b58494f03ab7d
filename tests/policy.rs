//! Guards the store's recorded policy (issue 27, point 7): the idle limit
//! is written in the store's file, set by the first open and changed only
//! by `LogStore::set_max_idle`, so that every process, the command-line
//! tool (which opens without options) and compaction apply the same rule;
//! an open that asks for another limit is refused by name; a store of an
//! earlier build, which records none, still opens and gets one recorded at
//! its next compaction.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessionlog::{Error, LogStore, ManualClock, Session, SessionId, SessionStore};

const HOUR: Duration = Duration::from_secs(3600);

fn id(s: &str) -> SessionId {
    SessionId::new(s).expect("valid id")
}

fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
}

/// Opens as an application does: with `max_idle` if given.
fn open(
    path: &Path,
    clock: &ManualClock,
    max_idle: Option<Duration>,
) -> sessionlog::Result<LogStore> {
    let mut o = LogStore::options().background(false).clock(clock.clone());
    if let Some(d) = max_idle {
        o = o.max_idle(d);
    }
    o.open(path)
}

fn save(store: &LogStore, name: &str) {
    let mut s = Session::new(id(name), name.as_bytes().to_vec());
    store.save_session(&mut s).expect("save");
}

#[test]
fn every_process_and_the_tools_apply_the_idle_limit_the_store_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    // The application sets up the store with a 1-hour idle limit.
    let app = open(&path, &clock, Some(HOUR)).expect("open");
    save(&app, "idle");
    clock.advance(3 * HOUR);
    save(&app, "busy");
    clock.advance(HOUR / 2);

    // The tool opens with no options (as `sessionlog list`, `stats` and
    // `compact` do): it sees what the application sees.
    let tool = open(&path, &clock, None).expect("open as the tool");
    assert_eq!(tool.load_session(&id("idle")).expect("load"), None);
    assert!(tool.load_session(&id("busy")).expect("load").is_some());
    let ids: Vec<_> = tool.iter_sessions().expect("iter").collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let stats = tool.stats().expect("stats");
    assert_eq!((stats.sessions, stats.expired), (2, 1));
    assert_eq!(stats.policy.max_idle, Some(HOUR));
    assert!(stats.policy_recorded);
    let c = tool.compact().expect("compact");
    assert_eq!((c.kept, c.dropped), (1, 1));
    assert!(app.load_session(&id("busy")).expect("load").is_some());
}

#[test]
fn an_open_asking_for_another_idle_limit_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    drop(open(&path, &clock, Some(HOUR)).expect("set up"));
    match open(&path, &clock, Some(4 * HOUR)) {
        Err(Error::InvalidOption(m)) => {
            assert!(m.contains("records 3600000 ms"), "{m}");
            assert!(m.contains("set_max_idle"), "{m}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // The same limit, or none (follow the store), open.
    drop(open(&path, &clock, Some(HOUR)).expect("the same limit"));
    drop(open(&path, &clock, None).expect("following the store"));
    // A store set up without a limit records "none", which a later open
    // cannot override by accident either.
    let other = dir.path().join("t.db");
    drop(open(&other, &clock, None).expect("set up"));
    match open(&other, &clock, Some(HOUR)) {
        Err(Error::InvalidOption(m)) => assert!(m.contains("records no idle limit"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn set_max_idle_changes_the_rule_for_every_open_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let a = open(&path, &clock, Some(4 * HOUR)).expect("open");
    let b = open(&path, &clock, None).expect("open");
    save(&a, "old");
    clock.advance(2 * HOUR);
    save(&a, "new");
    assert!(b.load_session(&id("old")).expect("load").is_some());

    // One handle shortens the limit; the other, opened earlier, applies
    // it from its next call, and so do new opens.
    let c = a.set_max_idle(Some(HOUR)).expect("set");
    assert_eq!((c.kept, c.dropped), (1, 1));
    assert_eq!(b.load_session(&id("old")).expect("load"), None);
    assert_eq!(b.max_idle().expect("max_idle"), Some(HOUR));
    clock.advance(HOUR / 2);
    assert!(b.load_session(&id("new")).expect("load").is_some());
    drop(open(&path, &clock, Some(HOUR)).expect("the new limit"));
    assert!(
        open(&path, &clock, Some(4 * HOUR)).is_err(),
        "the old limit is refused"
    );

    // A longer limit brings back nothing the shorter one ended.
    clock.advance(HOUR);
    assert_eq!(b.load_session(&id("new")).expect("load"), None);
    b.set_max_idle(Some(8 * HOUR)).expect("set");
    assert_eq!(a.load_session(&id("new")).expect("load"), None);
    // And no limit at all.
    save(&a, "later");
    clock.advance(100 * HOUR);
    b.set_max_idle(None).expect("unset");
    assert_eq!(a.max_idle().expect("max_idle"), None);
    save(&b, "kept");
    clock.advance(1000 * HOUR);
    assert!(a.load_session(&id("kept")).expect("load").is_some());
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn a_store_of_an_earlier_build_opens_and_records_its_policy_at_its_next_compaction() {
    // `tests/golden/v1.log` was written before stores recorded a policy.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.log");
    fs::copy(golden("v1.log"), &path).expect("copy");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000 + s);
    let clock = ManualClock::new(at(3));
    // Until then, each process applies its own option, as before.
    let a = open(&path, &clock, Some(HOUR)).expect("open");
    let stats = a.stats().expect("stats");
    assert!(!stats.policy_recorded);
    assert_eq!(stats.policy.max_idle, Some(HOUR));
    let b = open(&path, &clock, Some(2 * HOUR)).expect("another limit, as before");
    clock.advance(HOUR + Duration::from_secs(10));
    assert_eq!(a.load_session(&id("alice")).expect("load"), None);
    assert!(b.load_session(&id("alice")).expect("load").is_some());

    // The first compaction records the compactor's: from then on every
    // handle applies it.
    a.compact().expect("compact");
    assert!(b.stats().expect("stats").policy_recorded);
    assert_eq!(b.load_session(&id("alice")).expect("load"), None);
    assert_eq!(b.max_idle().expect("max_idle"), Some(HOUR));
    assert!(open(&path, &clock, Some(2 * HOUR)).is_err());
}

#[test]
fn a_damaged_policy_is_reported_and_repair_keeps_every_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let clock = clock();
    let store = open(&path, &clock, Some(HOUR)).expect("open");
    for i in 0..20 {
        save(&store, &format!("s{i}"));
    }
    drop(store);
    for offset in [72u64, 80, 88, 96, 100] {
        let copy = dir.path().join(format!("d{offset}.db"));
        fs::copy(&path, &copy).expect("copy");
        let mut bytes = fs::read(&copy).expect("read");
        bytes[offset as usize] ^= 0x10;
        fs::write(&copy, &bytes).expect("damage");
        match open(&copy, &clock, None) {
            Err(Error::Corrupt { offset: at, .. }) => assert!((72..104).contains(&at), "{at}"),
            other => panic!("{offset}: expected damage, got {:?}", other.map(|_| ())),
        }
        let repaired = LogStore::options()
            .background(false)
            .clock(clock.clone())
            .repair(true)
            .open(&copy)
            .expect("repair");
        for i in 0..20 {
            assert!(
                repaired
                    .load_session(&id(&format!("s{i}")))
                    .expect("load")
                    .is_some()
            );
        }
        drop(repaired);
        drop(open(&copy, &clock, None).expect("opens after repair"));
    }
}
