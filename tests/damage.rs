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
            owner: &[],
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

/// A scratch directory in memory when the machine has `/dev/shm` (the
/// header tests repair a store hundreds of times).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

/// A store with history: sessions saved before and after a compaction (so
/// generation 2 and a hint beside it), a touch and a delete. Returns what
/// each live session holds.
fn store_with_history(path: &Path) -> Vec<(String, Vec<u8>)> {
    let store = open(path, SyncPolicy::Always, false).expect("open");
    for i in 0..12 {
        save(&store, &format!("s{i}"), format!("before {i}").as_bytes());
    }
    store.compact().expect("compact");
    for i in 8..16 {
        save(&store, &format!("s{i}"), format!("after {i}").as_bytes());
    }
    store
        .delete_session(&SessionId::new("s3").expect("valid id"))
        .expect("delete");
    store
        .touch_session(&SessionId::new("s4").expect("valid id"))
        .expect("touch");
    (0..16)
        .filter(|&i| i != 3)
        .map(|i| {
            let data = if i >= 8 {
                format!("after {i}")
            } else {
                format!("before {i}")
            };
            (format!("s{i}"), data.into_bytes())
        })
        .collect()
}

fn assert_all(store: &LogStore, expect: &[(String, Vec<u8>)], what: &str) {
    for (id, data) in expect {
        let s = store
            .load_session(&SessionId::new(id.as_str()).expect("valid id"))
            .expect("load")
            .unwrap_or_else(|| panic!("{what}: {id} lost"));
        assert_eq!(&s.data, data, "{what}: {id}");
    }
    let gone = SessionId::new("s3").expect("valid id");
    assert_eq!(store.load_session(&gone).expect("load"), None, "{what}");
}

/// Removes the copies repair keeps, so that the next repair (at the same
/// fixed time) can keep its own.
fn remove_copies(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().contains(".damaged-") {
            std::fs::remove_file(&p).expect("remove copy");
            n += 1;
        }
    }
    n
}

/// Issue 27, point 4: every bit of the header's meaningful bytes (the
/// static part, 0..72, and the shared words, 128..160) flipped in turn.
/// Opening without repair gives the store whole or a typed error naming
/// damage (never a foreign file or a future version, which nothing would
/// repair); repair mode then gives back every session, keeps a copy of
/// the damaged file, and leaves a store that opens and checks clean.
#[test]
fn every_bit_of_the_header_flipped_in_turn_is_repaired_with_every_session() {
    use sessionlog::internals::format::{H_SHARED_END, H_STATIC_END};
    let dir = scratch();
    let path = dir.path().join("sessions.db");
    let expect = store_with_history(&path);
    let original = std::fs::read(&path).expect("read");
    let hint = std::fs::read(dir.path().join("sessions.db.hint")).expect("hint");
    let bits = (0..H_STATIC_END * 8).chain(H_COMMITTED * 8..H_SHARED_END * 8);
    for bit in bits {
        let mut img = original.clone();
        img[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &img).expect("write image");
        std::fs::write(dir.path().join("sessions.db.hint"), &hint).expect("hint");
        let what = format!("bit {bit} (byte {})", bit / 8);
        match open(&path, SyncPolicy::Always, false) {
            Ok(store) => assert_all(&store, &expect, &what),
            Err(Error::Corrupt { .. }) => {
                assert_eq!(
                    std::fs::read(&path).expect("read"),
                    img,
                    "{what}: untouched"
                );
                let store = open(&path, SyncPolicy::Always, true)
                    .unwrap_or_else(|e| panic!("{what}: repair: {e}"));
                assert_all(&store, &expect, &what);
                let recovery = store.stats().expect("stats").recovery;
                assert!(recovery.damaged_copy.is_some(), "{what}");
                drop(store);
                assert_eq!(remove_copies(dir.path()), 1, "{what}: one copy kept");
                let report = sessionlog::check(&path).expect("check after repair");
                assert!(report.is_healthy(), "{what}: {report:?}");
                let store = open(&path, SyncPolicy::Always, false).expect("reopen");
                assert_all(&store, &expect, &what);
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Issue 27, point 4: the static part past the magic and version
/// overwritten (more than a bit: nothing for the checksum to mend), with
/// the hint beside the log or without it. Repair takes the salt from the
/// records' checksums and the generation from the hint, or from what is
/// left. (A file whose magic is gone is a foreign file, and one with a
/// version past mending a future one: neither is ever touched.)
#[test]
fn a_header_overwritten_past_its_version_is_rebuilt_from_the_records() {
    use sessionlog::internals::format::{H_GENERATION, H_STATIC_END};
    let dir = scratch();
    let path = dir.path().join("sessions.db");
    let expect = store_with_history(&path);
    let original = std::fs::read(&path).expect("read");
    for (fill, keep_hint) in [(0u8, true), (0xA7, false)] {
        let mut img = original.clone();
        img[H_GENERATION..H_STATIC_END].fill(fill);
        std::fs::write(&path, &img).expect("write image");
        if !keep_hint {
            let _ = std::fs::remove_file(dir.path().join("sessions.db.hint"));
        }
        let what = format!("filled with {fill:#x}, hint kept: {keep_hint}");
        assert!(
            open(&path, SyncPolicy::Always, false).is_err(),
            "{what}: refused without repair"
        );
        let store =
            open(&path, SyncPolicy::Always, true).unwrap_or_else(|e| panic!("{what}: repair: {e}"));
        assert_all(&store, &expect, &what);
        let stats = store.stats().expect("stats");
        assert!(stats.recovery.header_repair.is_some(), "{what}");
        if keep_hint {
            assert_eq!(stats.generation, 3, "{what}: the hint's generation, + 1");
        }
        drop(store);
        remove_copies(dir.path());
    }
}

/// Issue 27, point 4: a file cut inside its header (at every byte of the
/// static part and the shared words, then every 64 bytes) holds no
/// record: repair keeps a copy of what is left and gives back a working,
/// empty store. An empty file is no store at all (`NotAStore`), repair
/// or not.
#[test]
fn a_file_cut_inside_its_header_is_repaired_into_an_empty_store() {
    let dir = scratch();
    let path = dir.path().join("sessions.db");
    store_with_history(&path);
    let original = std::fs::read(&path).expect("read");
    assert!(matches!(
        {
            std::fs::write(&path, b"").expect("write");
            open(&path, SyncPolicy::Always, true)
        },
        Err(Error::NotAStore { .. })
    ));
    let cuts = (1..200).chain((200..HEADER_SIZE as usize).step_by(64));
    for cut in cuts {
        std::fs::write(&path, &original[..cut]).expect("write image");
        let what = format!("cut at {cut}");
        assert!(
            matches!(
                open(&path, SyncPolicy::Always, false),
                Err(Error::Corrupt { .. })
            ),
            "{what}"
        );
        let store =
            open(&path, SyncPolicy::Always, true).unwrap_or_else(|e| panic!("{what}: repair: {e}"));
        assert_eq!(store.iter_sessions().expect("iter").count(), 0, "{what}");
        let copy = store
            .stats()
            .expect("stats")
            .recovery
            .damaged_copy
            .expect("a copy is kept");
        assert_eq!(
            std::fs::read(&copy).expect("copy"),
            &original[..cut],
            "{what}"
        );
        save(&store, "new", b"after the repair");
        drop(store);
        remove_copies(dir.path());
        let store = open(&path, SyncPolicy::Always, false).expect("reopen");
        assert_eq!(store.iter_sessions().expect("iter").count(), 1, "{what}");
        drop(store);
        let _ = std::fs::remove_file(dir.path().join("sessions.db.hint"));
    }
}

/// Writes `generation` into the header of the log at `path`, with a valid
/// checksum (a crafted header, not a damaged one).
fn set_generation(path: &Path, generation: u64) {
    use sessionlog::internals::format::{H_CRC, H_GENERATION, H_STATIC_END, HEADER_CRC_XOR};
    let mut b = std::fs::read(path).expect("read");
    b[H_GENERATION..H_GENERATION + 8].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&b[..H_CRC]) ^ HEADER_CRC_XOR;
    b[H_CRC..H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &b).expect("write");
}

/// Issue 27, point 5: a generation read from disk is never incremented
/// past its range. One past `MAX_GENERATION` (here `u64::MAX`) is refused
/// at the header check, by open and by `check`, and repair numbers the
/// store afresh; `MAX_GENERATION` itself opens, but compaction refuses
/// with a typed error (it used to overflow: a panic in debug builds, the
/// reserved 0 in release), `check` reports it, and repair numbers the
/// store from 1 again. Every session survives.
#[test]
fn a_crafted_generation_is_refused_or_renumbered_never_wrapped() {
    use sessionlog::internals::format::{H_GENERATION, MAX_GENERATION};
    let dir = scratch();
    let path = dir.path().join("sessions.db");
    let expect = store_with_history(&path);
    let _ = std::fs::remove_file(dir.path().join("sessions.db.hint"));

    set_generation(&path, u64::MAX);
    let at_16 =
        |e: &Error| matches!(e, Error::Corrupt { offset, .. } if *offset == H_GENERATION as u64);
    let err = open(&path, SyncPolicy::Always, false).expect_err("refused");
    assert!(at_16(&err), "{err}");
    let err = sessionlog::check(&path).expect_err("check refuses too");
    assert!(at_16(&err), "{err}");
    let store = open(&path, SyncPolicy::Always, true).expect("repair");
    assert_all(&store, &expect, "after repair of u64::MAX");
    assert_eq!(store.stats().expect("stats").generation, 2);
    assert_eq!(store.compact().expect("compact").generation, 3);
    drop(store);
    remove_copies(dir.path());

    set_generation(&path, MAX_GENERATION);
    let _ = std::fs::remove_file(dir.path().join("sessions.db.hint"));
    let store = open(&path, SyncPolicy::Always, false).expect("the last generation opens");
    assert_all(&store, &expect, "at MAX_GENERATION");
    let err = store.compact().expect_err("no generation follows");
    assert!(at_16(&err), "{err}");
    assert_all(&store, &expect, "after the refused compaction");
    drop(store);
    let report = sessionlog::check(&path).expect("check");
    assert!(!report.is_healthy(), "check reports it");
    assert_eq!(report.corruption[0].offset, H_GENERATION as u64);
    let store = open(&path, SyncPolicy::Always, true).expect("repair");
    assert_eq!(
        store.stats().expect("stats").generation,
        1,
        "numbered afresh"
    );
    assert_all(&store, &expect, "after repair of MAX_GENERATION");
    assert_eq!(store.compact().expect("compact").generation, 2);
    drop(store);
    assert!(sessionlog::check(&path).expect("check").is_healthy());
}
