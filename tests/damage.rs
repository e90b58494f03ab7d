//! Guards what `LogStore` does with damage it can see on open: a damaged
//! committed word, damage far before the end, records forged inside session
//! data, and what repair mode salvages. Each test started as a reproducer
//! that the model or fuzz runs pointed at, and states the behaviour
//! DESIGN.md promises.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sessionlog::internals::format::{H_COMMITTED, HEADER_SIZE};
use sessionlog::{Error, LogStore, ManualClock, Session, SessionId, SessionStore, SyncPolicy};

fn open(path: &Path, sync: SyncPolicy, repair: bool) -> sessionlog::Result<LogStore> {
    LogStore::options()
        .background(false)
        .sync(sync)
        .clock(ManualClock::fixed())
        .repair(repair)
        .open(path)
}

fn save(store: &LogStore, id: &str, data: &[u8]) {
    let mut s = Session::new(SessionId::new(id).expect("valid id"), data.to_vec());
    store.save_session(&mut s).expect("save");
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open log");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 0x01;
    f.write_all_at(&b, offset).expect("write");
}

/// Repair mode exists to get a store back from damage; DESIGN.md §7 says
/// it scans the file and keeps every record that passes its CRC (and
/// `compact::repair` even falls back to the file length when the committed
/// word does not decode). A flipped bit in the committed word must not make
/// the store impossible to open in repair mode.
#[test]
fn repair_mode_opens_a_log_whose_committed_word_is_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.db");
    {
        let store = open(&path, SyncPolicy::Always, false).expect("open");
        save(&store, "a", b"alpha");
        save(&store, "b", b"beta");
    }
    flip(&path, H_COMMITTED as u64);
    let plain = open(&path, SyncPolicy::Always, false);
    assert!(
        matches!(plain, Err(Error::Corrupt { .. })),
        "without repair: Corrupt, got {plain:?}"
    );
    let store = open(&path, SyncPolicy::Always, true).expect("repair mode opens the store");
    let a = store
        .load_session(&SessionId::new("a").expect("valid id"))
        .expect("load");
    assert_eq!(a.map(|s| s.data), Some(b"alpha".to_vec()));
}

/// Under `SyncPolicy::Never` the synced word stays at the header forever
/// (only `sync()` or a compaction raises it), so damage to a record that
/// has been in the file for any time, followed by many intact records,
/// is taken for a torn tail: the damaged record and every later one are
/// dropped without an error. DESIGN.md §7 separates "torn tail after power
/// loss" from "bit rot"; here a store that was closed and reopened cleanly
/// (so everything it holds was replayed and could have been synced) loses
/// its whole history to one flipped bit.
#[test]
fn damage_far_before_the_end_is_not_silently_cut_after_a_clean_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.db");
    {
        let store = open(&path, SyncPolicy::Never, false).expect("open");
        for i in 0..50 {
            save(&store, &format!("s{i}"), b"some session data");
        }
    }
    // A clean reopen replays the whole log, then closes again.
    drop(open(&path, SyncPolicy::Never, false).expect("clean reopen"));
    // One bit of the first record's data rots.
    flip(&path, HEADER_SIZE + 48);
    match open(&path, SyncPolicy::Never, false) {
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(store) => {
            let left = store.iter_sessions().expect("iter").count();
            let report = store.stats().expect("stats").recovery;
            panic!("opened without error and kept {left} of 50 sessions; recovery: {report:?}");
        }
    }
}

/// Repair scans at 8-byte steps and keeps "every record that passes its
/// CRC", so a record-shaped byte string inside some session's data comes
/// back as a session of its own once the record around it is damaged:
/// a session that nobody ever saved. Session data is often shaped by the
/// user (form drafts, preferences), so this lets a user plant a session
/// with an id of their choice, to appear whenever repair mode runs.
#[test]
fn repair_does_not_resurrect_records_embedded_in_session_data() {
    use sessionlog::internals::format::{Kind, RecordFields, encode_record};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.db");
    let mut planted = Vec::new();
    encode_record(
        &mut planted,
        &RecordFields {
            kind: Kind::Put,
            id: b"forged",
            data: b"user=admin",
            version: 1,
            modified_ms: 1_893_456_000_000,
            expires_ms: 0,
        },
    );
    {
        let store = open(&path, SyncPolicy::Always, false).expect("open");
        // An 8-byte id puts the data on an 8-byte boundary.
        save(&store, "innocnt1", &planted);
        save(&store, "other", b"x");
    }
    // The outer record's checksum is damaged (below the synced end).
    flip(&path, HEADER_SIZE);
    let store = open(&path, SyncPolicy::Always, true).expect("repair mode opens");
    let forged = store
        .load_session(&SessionId::new("forged").expect("valid id"))
        .expect("load");
    assert_eq!(
        forged, None,
        "repair invented a session that was never saved"
    );
}

/// The hint a compaction writes beside its file (`<log>.hint`) only saves
/// time: a store reopens with every session whether the hint is used,
/// missing, damaged, or another file's.
#[test]
fn a_missing_damaged_or_stale_hint_is_ignored_and_the_log_replayed() {
    let dir = tempfile::tempdir().expect("test step");
    let path = dir.path().join("s.db");
    let hint = dir.path().join("s.db.hint");
    let ids: Vec<String> = (0..300).map(|i| format!("{i:032x}")).collect();
    {
        let store = open(&path, SyncPolicy::Never, false).expect("test step");
        for (i, id) in ids.iter().enumerate() {
            save(&store, id, format!("old {i}").as_bytes());
        }
        for (i, id) in ids.iter().enumerate().step_by(2) {
            save(&store, id, format!("new {i}").as_bytes());
        }
        store.compact().expect("test step");
        // Saves after the compaction: past the hint's end.
        for (i, id) in ids.iter().enumerate().step_by(3) {
            save(&store, id, format!("late {i}").as_bytes());
        }
    }
    let expect = |i: usize| {
        if i.is_multiple_of(3) {
            format!("late {i}")
        } else if i.is_multiple_of(2) {
            format!("new {i}")
        } else {
            format!("old {i}")
        }
    };
    let check = |store: &LogStore| {
        for (i, id) in ids.iter().enumerate() {
            let s = store
                .load_session(&SessionId::new(id.as_str()).expect("test step"))
                .expect("test step")
                .unwrap_or_else(|| panic!("session {i} lost"));
            assert_eq!(s.data, expect(i).as_bytes(), "session {i}");
        }
    };
    let good = std::fs::read(&hint).expect("the compaction wrote a hint");
    {
        let store = open(&path, SyncPolicy::Never, false).expect("test step");
        assert!(
            store
                .stats()
                .expect("test step")
                .recovery
                .hint_end
                .is_some(),
            "hint used"
        );
        check(&store);
    }
    // Damaged: one bit in the middle of the table.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&hint, &bad).expect("test step");
    {
        let store = open(&path, SyncPolicy::Never, false).expect("test step");
        assert_eq!(store.stats().expect("test step").recovery.hint_end, None);
        check(&store);
    }
    // Stale: the hint of the file before another compaction.
    {
        std::fs::write(&hint, &good).expect("test step");
        let store = open(&path, SyncPolicy::Never, false).expect("test step");
        store.compact().expect("test step");
        drop(store);
        std::fs::write(&hint, &good).expect("test step");
        let store = open(&path, SyncPolicy::Never, false).expect("test step");
        assert_eq!(store.stats().expect("test step").recovery.hint_end, None);
        check(&store);
    }
    // Missing.
    std::fs::remove_file(&hint).expect("test step");
    let store = open(&path, SyncPolicy::Never, false).expect("test step");
    assert_eq!(store.stats().expect("test step").recovery.hint_end, None);
    check(&store);
}
