//! Guards LogStore's on-disk behaviour: recovery from a torn tail at every
//! byte offset of the last record, foreign and future-version files left
//! untouched, file modes, damage detection (every bit flip), repair mode,
//! and compaction as expiry.

#[macro_use]
mod common;
use common::id;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sessionlog::internals::format::{self, H_COMMITTED, H_SYNCED, H_VERSION, HEADER_SIZE};
use sessionlog::{Error, LogOptions, LogStore, ManualClock, Session, SessionStore, SyncPolicy};

fn opts() -> LogOptions {
    LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
}

fn word_at(bytes: &[u8], off: usize) -> u64 {
    let w = u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
    format::decode_offset(w).expect("valid word")
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    Fixture { _dir: dir, path }
}

fn data(i: usize) -> Vec<u8> {
    format!("session data number {i} ")
        .repeat(i % 4 + 1)
        .into_bytes()
}

/// Saves sessions `s0..s{n}` with `data(i)`.
fn save_numbered(store: &LogStore, n: usize) {
    for i in 0..n {
        let mut s = Session::new(id(&format!("s{i}")), data(i));
        store.save_session(&mut s).expect("save");
    }
}

/// Asserts that sessions `s0..s{n}` are live with `data(i)`.
fn assert_numbered_kept(store: &LogStore, n: usize, what: &str) {
    for i in 0..n {
        let s = store
            .load_session(&id(&format!("s{i}")))
            .expect("load")
            .expect(what);
        assert_eq!(s.data, data(i), "s{i}");
    }
}

/// Saves `n` synced sessions s0.. and, if `tail`, one more unsynced one.
/// Returns (start of the unsynced record, committed end).
fn build(path: &Path, n: usize, tail: bool) -> (u64, u64) {
    let store = opts().open(path).expect("open");
    for i in 0..n {
        store
            .save_session(&mut Session::new(id(&format!("s{i}")), data(i)))
            .expect("save");
    }
    store.sync().expect("sync");
    if tail {
        store
            .save_session(&mut Session::new(
                id("tail"),
                b"the unsynced last record".to_vec(),
            ))
            .expect("save");
    }
    drop(store);
    let bytes = fs::read(path).expect("read");
    (word_at(&bytes, H_SYNCED), word_at(&bytes, H_COMMITTED))
}

#[test]
fn torn_tail_is_cut_at_every_byte_offset_of_the_last_record() {
    let f = fixture();
    let (tail_start, end) = build(&f.path, 5, true);
    assert!(end > tail_start);
    let original = fs::read(&f.path).expect("read");
    for cut in tail_start..end {
        for mode in ["truncate", "zero", "garbage"] {
            let mut img = original.clone();
            match mode {
                "truncate" => img.truncate(cut as usize),
                "zero" => img[cut as usize..end as usize].fill(0),
                _ => img[cut as usize..end as usize]
                    .iter_mut()
                    .for_each(|b| *b = b.wrapping_mul(7) ^ 0x5A),
            }
            fs::write(&f.path, &img).expect("write image");
            let store = opts()
                .open(&f.path)
                .unwrap_or_else(|e| panic!("{mode} at {cut}: {e}"));
            let report = store.stats().expect("stats").recovery;
            if mode == "truncate" || cut < end - 8 {
                assert_eq!(report.torn_tail_offset, Some(tail_start), "{mode} at {cut}");
                assert_eq!(report.torn_tail_bytes, end - tail_start);
                assert!(
                    !store.has_session(&id("tail")).expect("has"),
                    "{mode} at {cut}"
                );
            }
            assert_numbered_kept(&store, 5, "synced session kept");
            // the store goes on: a new save lands where the torn record was
            let mut s = Session::new(id("after"), b"after the crash".to_vec());
            store.save_session(&mut s).expect("save after recovery");
            drop(store);
            let store = opts().open(&f.path).expect("reopen");
            assert_eq!(
                store.stats().expect("stats").recovery.torn_tail_offset,
                None
            );
            assert_eq!(
                store
                    .load_session(&s.id)
                    .expect("load")
                    .expect("present")
                    .data,
                b"after the crash"
            );
        }
    }
}

fn set_word(bytes: &mut [u8], off: usize, offset: u64) {
    bytes[off..off + 8].copy_from_slice(&format::encode_offset(offset).to_le_bytes());
}

/// Under `SyncPolicy::Always` a save is made durable by writing back its
/// record's range only, not the header page, so after a power loss the
/// committed word on disk may lag behind acknowledged saves. Recovery
/// keeps every complete record past it; a gap (a record that never reached
/// the disk) ends them, and what follows the gap is erased so that it can
/// never come back.
#[test]
fn records_past_a_stale_committed_word_are_kept_up_to_a_gap() {
    let f = fixture();
    let committed = |path: &Path| word_at(&fs::read(path).expect("read"), H_COMMITTED);
    let mut ends = Vec::new();
    {
        let store = LogStore::options()
            .background(false)
            .sync(SyncPolicy::Always)
            .open(&f.path)
            .expect("open");
        ends.push(committed(&f.path));
        for i in 0..5 {
            store
                .save_session(&mut Session::new(id(&format!("s{i}")), data(i)))
                .expect("save");
            ends.push(committed(&f.path));
        }
    }
    // Record s{i} spans ends[i]..ends[i + 1].
    let original = fs::read(&f.path).expect("read");
    let load_all = |store: &LogStore| -> Vec<bool> {
        (0..5)
            .map(|i| {
                let s = store.load_session(&id(&format!("s{i}"))).expect("load");
                if let Some(s) = &s {
                    assert_eq!(s.data, data(i), "s{i} unaltered");
                }
                s.is_some()
            })
            .collect()
    };

    // The header as it was on disk after s1: s2, s3 and s4 lie past it.
    let mut img = original.clone();
    set_word(&mut img, H_COMMITTED, ends[2]);
    set_word(&mut img, H_SYNCED, ends[2]);
    fs::write(&f.path, &img).expect("write image");
    let store = opts().open(&f.path).expect("open");
    assert_eq!(load_all(&store), [true; 5]);
    let report = store.stats().expect("stats").recovery;
    assert_eq!(report.records_past_committed, 3);
    assert_eq!(report.torn_tail_offset, None);
    drop(store);

    // And s3 never reached the disk: s4 lies after a gap.
    let mut img = original.clone();
    set_word(&mut img, H_COMMITTED, ends[2]);
    set_word(&mut img, H_SYNCED, ends[2]);
    img[ends[3] as usize..ends[4] as usize].fill(0);
    fs::write(&f.path, &img).expect("write image");
    let store = opts().open(&f.path).expect("open");
    assert_eq!(load_all(&store), [true, true, true, false, false]);
    let report = store.stats().expect("stats").recovery;
    assert_eq!(report.records_past_committed, 1);
    assert_eq!(report.torn_tail_offset, Some(ends[3]));
    drop(store);
    let after = fs::read(&f.path).expect("read");
    assert!(
        after[ends[3] as usize..].iter().all(|&b| b == 0),
        "the record after the gap is erased"
    );
    let store = opts().open(&f.path).expect("reopen");
    assert_eq!(load_all(&store), [true, true, true, false, false]);
    assert_eq!(
        store.stats().expect("stats").recovery.torn_tail_offset,
        None
    );
}

#[test]
fn a_foreign_file_is_not_a_store_and_is_left_untouched() {
    let f = fixture();
    for content in [&b""[..], b"hello, world\n", &[0u8; 8192], b"\x89SLOG\r\n"] {
        fs::write(&f.path, content).expect("write");
        let err = opts().open(&f.path).expect_err("not a store");
        assert!(
            matches!(err, Error::NotAStore { .. } | Error::Corrupt { .. }),
            "{content:?}: {err}"
        );
        assert_eq!(
            fs::read(&f.path).expect("read"),
            content,
            "left byte for byte"
        );
        assert!(
            !f.path.with_extension("db.lock").exists(),
            "nothing created beside it"
        );
    }
}

#[test]
fn a_future_format_version_is_refused_and_left_untouched() {
    let f = fixture();
    build(&f.path, 2, false);
    let mut bytes = fs::read(&f.path).expect("read");
    bytes[H_VERSION..H_VERSION + 4].copy_from_slice(&3u32.to_le_bytes());
    // A writer of that version checksums what it wrote (with the version
    // alone changed, the header is a damaged version 2: DESIGN.md §2.4).
    let crc = crc32fast::hash(&bytes[..format::H_CRC]) ^ format::HEADER_CRC_XOR;
    bytes[format::H_CRC..format::H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
    fs::write(&f.path, &bytes).expect("write");
    let err = opts().open(&f.path).expect_err("future version");
    for repair in [false, true] {
        let again = opts()
            .repair(repair)
            .open(&f.path)
            .expect_err("still refused");
        assert!(matches!(again, Error::UnsupportedVersion { .. }), "{again}");
    }
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 3"), "{err}");
    assert_eq!(fs::read(&f.path).expect("read"), bytes);
}

#[test]
fn files_are_private() {
    let f = fixture();
    let store = opts().open(&f.path).expect("open");
    store
        .save_session(&mut Session::new(id("a"), b"x".to_vec()))
        .expect("save");
    store.compact().expect("compact");
    for p in [
        f.path.clone(),
        PathBuf::from(format!("{}.lock", f.path.display())),
    ] {
        let mode = fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[test]
fn damage_before_the_synced_end_is_corrupt_with_its_offset() {
    let f = fixture();
    let (synced, _) = build(&f.path, 6, false);
    let mut bytes = fs::read(&f.path).expect("read");
    let salt = u32::from_le_bytes(
        bytes[format::H_SALT..format::H_SALT + 4]
            .try_into()
            .expect("4"),
    );
    // damage the third record's data
    let third = {
        let mut off = HEADER_SIZE as usize;
        for _ in 0..2 {
            off += format::decode_record_salted(&bytes[off..], salt)
                .expect("record")
                .padded_len;
        }
        off
    };
    bytes[third + format::RECORD_HEADER + 4] ^= 0x10;
    fs::write(&f.path, &bytes).expect("write");
    let err = opts().open(&f.path).expect_err("corrupt");
    match &err {
        Error::Corrupt { offset, .. } => assert_eq!(*offset, third as u64),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains(&format!("offset {third}")),
        "{err}"
    );
    assert!((third as u64) < synced);
    assert_eq!(fs::read(&f.path).expect("read"), bytes, "left as it was");

    // repair mode salvages every other record and keeps a copy
    let store = opts().repair(true).open(&f.path).expect("repair");
    let report = store.stats().expect("stats").recovery;
    assert_eq!(report.repaired_ranges.len(), 1);
    assert_eq!(report.repaired_ranges[0].0, third as u64);
    let copy = report.damaged_copy.expect("copy kept");
    assert_eq!(fs::read(&copy).expect("read copy"), bytes);
    for i in 0..6 {
        let got = store.load_session(&id(&format!("s{i}"))).expect("load");
        if i == 2 {
            assert_eq!(got, None, "the damaged session is dropped");
        } else {
            assert_eq!(got.expect("salvaged").data, data(i));
        }
    }
    drop(store);
    opts().open(&f.path).expect("clean after repair");
}

/// The bytes of a store of `end` committed bytes that the damage tests
/// change: every byte that means something (the static header, the shared
/// words, every record) and one in 61 of the header's reserved padding,
/// which the format only requires to be ignored (every byte with
/// `SESSIONLOG_EXHAUSTIVE=1`).
fn damage_positions(end: usize) -> Vec<usize> {
    use sessionlog::internals::format::{H_COMMITTED, H_SHARED_END, H_STATIC_END};
    let all = std::env::var("SESSIONLOG_EXHAUSTIVE").is_ok();
    let header = HEADER_SIZE as usize;
    let meaningful =
        |p: usize| p < H_STATIC_END || (H_COMMITTED..H_SHARED_END).contains(&p) || p >= header;
    let positions: Vec<usize> = (0..end)
        .filter(|&p| all || meaningful(p) || p % 61 == 0)
        .collect();
    assert!(
        positions.iter().any(|&p| !meaningful(p)),
        "the sample covers some padding"
    );
    positions
}

/// Every single-bit flip in the meaningful part of a small synced store
/// (and in a sample of its reserved padding, see `damage_positions`) is
/// either reported as a typed error on open, or harmless: no load returns
/// altered data.
#[test]
fn every_bit_flip_is_detected_or_harmless() {
    let f = fixture();
    let (_, end) = build(&f.path, 4, false);
    let original = fs::read(&f.path).expect("read");
    let expect: Vec<Vec<u8>> = (0..4).map(data).collect();
    let (mut detected, mut harmless) = (0u32, 0u32);
    let bits = damage_positions(end as usize)
        .into_iter()
        .flat_map(|byte| (0..8).map(move |b| byte * 8 + b));
    for bit in bits {
        let mut img = original[..end as usize].to_vec();
        img[bit / 8] ^= 1 << (bit % 8);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&f.path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&file, &img, 0).expect("write image");
        drop(file);
        match opts().open(&f.path) {
            Err(
                Error::NotAStore { .. } | Error::Corrupt { .. } | Error::UnsupportedVersion { .. },
            ) => {
                detected += 1;
            }
            Err(e) => panic!("bit {bit}: untyped failure {e:?}"),
            Ok(store) => {
                harmless += 1;
                for (i, want) in expect.iter().enumerate() {
                    match store.load_session(&id(&format!("s{i}"))) {
                        Ok(Some(s)) => assert_eq!(&s.data, want, "bit {bit}: altered data"),
                        Ok(None) => panic!("bit {bit}: s{i} silently lost"),
                        Err(Error::Corrupt { .. }) => {}
                        Err(e) => panic!("bit {bit}: {e}"),
                    }
                }
            }
        }
    }
    assert!(
        detected > 0 && harmless > 0,
        "{detected} detected, {harmless} harmless"
    );
}

#[test]
fn compaction_removes_expired_and_idle_sessions_from_the_file() {
    let f = fixture();
    let clock = ManualClock::fixed();
    let store = opts()
        .clock(clock.clone())
        .max_idle(Duration::from_secs(600))
        .open(&f.path)
        .expect("open");
    let mut deadline = Session::new(id("deadlineXYZ"), b"d".to_vec());
    deadline.expires = Some(clock.now_plus(Duration::from_secs(60)));
    store.save_session(&mut deadline).expect("save");
    store
        .save_session(&mut Session::new(id("idleXYZ"), b"i".to_vec()))
        .expect("save");
    clock.advance(Duration::from_secs(300));
    store
        .save_session(&mut Session::new(id("freshXYZ"), b"f".to_vec()))
        .expect("save");
    clock.advance(Duration::from_secs(301));
    // invisible before any compaction
    assert!(!store.has_session(&id("deadlineXYZ")).expect("has"));
    assert!(!store.has_session(&id("idleXYZ")).expect("has"));
    let before = fs::read(&f.path).expect("read");
    assert!(contains(&before, b"idleXYZ"));
    let c = store.compact().expect("compact");
    assert_eq!((c.kept, c.dropped), (1, 2));
    assert!(c.bytes_after < c.bytes_before);
    let after = fs::read(&f.path).expect("read");
    assert!(!contains(&after, b"idleXYZ") && !contains(&after, b"deadlineXYZ"));
    assert!(contains(&after, b"freshXYZ"));
    assert!(store.has_session(&id("freshXYZ")).expect("has"));
    let stats = store.stats().expect("stats");
    assert_eq!(stats.generation, 2);
    assert_eq!(stats.last_compaction.expect("recorded").dropped, 2);
}

#[test]
fn options_are_validated() {
    let f = fixture();
    for o in [
        opts().max_session_size(0),
        opts().max_session_size(usize::MAX),
        opts().sync(SyncPolicy::Interval(Duration::ZERO)),
        opts().compact_garbage_ratio(0.0),
        opts().compact_garbage_ratio(f64::NAN),
    ] {
        assert!(matches!(o.open(&f.path), Err(Error::InvalidOption(_))));
    }
    assert!(!f.path.exists(), "nothing created for bad options");
}

#[test]
fn a_missing_directory_is_a_clear_io_error() {
    let err = opts()
        .open("/nonexistent-dir/sub/s.db")
        .expect_err("no dir");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent-dir/sub/s.db"),
        "{err}"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

trait NowPlus {
    fn now_plus(&self, d: Duration) -> std::time::SystemTime;
}
impl NowPlus for ManualClock {
    fn now_plus(&self, d: Duration) -> std::time::SystemTime {
        sessionlog::Clock::now(self) + d
    }
}

/// A store file the process may not open (its own, mode 000) gives
/// `Error::Io` naming the file and the cause. Runs in a child process that
/// drops root privileges first (root bypasses permission checks).
#[test]
fn permission_denied_is_a_clear_io_error() {
    if common::child::role().as_deref() == Some("unprivileged") {
        // SAFETY: plain system calls on this child process's credentials.
        unsafe {
            if libc::geteuid() == 0 {
                assert_eq!(libc::setgid(65534), 0, "setgid");
                assert_eq!(libc::setuid(65534), 0, "setuid");
            }
        }
        let path = std::env::var("STORE").expect("STORE");
        let err = opts().open(&path).expect_err("no permission");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
            "{err:?}"
        );
        assert!(err.to_string().contains(&path), "{err}");
        println!("DENIED {err}");
        return;
    }
    let f = fixture();
    build(&f.path, 1, false);
    fs::set_permissions(
        f.path.parent().expect("dir"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod dir");
    fs::set_permissions(&f.path, fs::Permissions::from_mode(0o000)).expect("chmod file");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // The child runs as uid 65534, which opens only a store of its own
        // (another user's is `Error::Unsafe`): its own, unreadable.
        std::os::unix::fs::chown(&f.path, Some(65534), Some(65534)).expect("chown");
    }
    let mut c = common::child::spawn(
        "permission_denied_is_a_clear_io_error",
        "unprivileged",
        &[("STORE", f.path.display().to_string())],
    );
    let mut r = common::child::Reader::new(&mut c);
    let line = r.next().expect("child reports");
    assert!(line.starts_with("DENIED "), "{line}");
    assert!(c.wait().expect("wait").success());
}

/// A log large enough (over 32 MiB) to be replayed on two threads opens
/// with every session, and damage in it is still reported at its offset.
#[test]
fn a_large_log_replays_in_parallel_and_still_finds_damage() {
    let f = fixture();
    let big = |i: usize| vec![(i % 251) as u8; 64 << 10];
    {
        let store = opts()
            .max_session_size(1 << 20)
            .open(&f.path)
            .expect("open");
        for i in 0..600 {
            store
                .save_session(&mut Session::new(id(&format!("big{i}")), big(i)))
                .expect("save");
        }
        store.sync().expect("sync");
    }
    let store = opts()
        .max_session_size(1 << 20)
        .open(&f.path)
        .expect("reopen");
    assert_eq!(store.stats().expect("stats").recovery.records, 600);
    for i in (0..600).step_by(37) {
        let s = store
            .load_session(&id(&format!("big{i}")))
            .expect("load")
            .expect("present");
        assert_eq!(s.data, big(i));
    }
    drop(store);
    // flip one byte of the 400th record's data
    let bytes = fs::read(&f.path).expect("read");
    let salt = u32::from_le_bytes(
        bytes[format::H_SALT..format::H_SALT + 4]
            .try_into()
            .expect("4"),
    );
    let mut off = HEADER_SIZE as usize;
    for _ in 0..400 {
        off += format::decode_record_salted(&bytes[off..], salt)
            .expect("record")
            .padded_len;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &[bytes[off + 1000] ^ 0xFF],
        (off + 1000) as u64,
    )
    .expect("flip");
    match opts().max_session_size(1 << 20).open(&f.path) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, off as u64),
        other => panic!("expected Corrupt at {off}, got {other:?}"),
    }
}

/// Every byte of a small synced store overwritten with several values
/// (0x00, 0xFF, the top bit flipped, +1, and a value derived from the
/// position): detected or harmless, never altered data. Set
/// `SESSIONLOG_EXHAUSTIVE=1` to try all 256 values at every byte.
#[test]
fn every_byte_overwrite_is_detected_or_harmless() {
    let f = fixture();
    let (_, end) = build(&f.path, 3, false);
    let original = fs::read(&f.path).expect("read");
    let expect: Vec<Vec<u8>> = (0..3).map(data).collect();
    let exhaustive = std::env::var("SESSIONLOG_EXHAUSTIVE").is_ok();
    let mut tried = 0u64;
    for pos in damage_positions(end as usize) {
        let b = original[pos];
        let values: Vec<u8> = if exhaustive {
            (0..=255).collect()
        } else {
            vec![
                0x00,
                0xFF,
                b ^ 0x80,
                b.wrapping_add(1),
                (pos as u8).wrapping_mul(31) ^ 0x5A,
            ]
        };
        for v in values {
            if v == b {
                continue;
            }
            tried += 1;
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&f.path)
                .expect("open");
            std::os::unix::fs::FileExt::write_all_at(&file, &original[..end as usize], 0)
                .expect("restore");
            std::os::unix::fs::FileExt::write_all_at(&file, &[v], pos as u64).expect("overwrite");
            drop(file);
            match opts().open(&f.path) {
                Err(
                    Error::NotAStore { .. }
                    | Error::Corrupt { .. }
                    | Error::UnsupportedVersion { .. },
                ) => {}
                Err(e) => panic!("byte {pos} = {v:#x}: untyped failure {e:?}"),
                Ok(store) => {
                    for (i, want) in expect.iter().enumerate() {
                        match store.load_session(&id(&format!("s{i}"))) {
                            Ok(Some(s)) => {
                                assert_eq!(&s.data, want, "byte {pos} = {v:#x}: altered data")
                            }
                            Ok(None) => panic!("byte {pos} = {v:#x}: s{i} silently lost"),
                            Err(Error::Corrupt { .. }) => {}
                            Err(e) => panic!("byte {pos} = {v:#x}: {e}"),
                        }
                    }
                }
            }
        }
    }
    eprintln!("{tried} byte overwrites checked");
    assert!(tried > 10_000 || !exhaustive);
}

/// The background thread compacts a store left alone once garbage passes
/// the threshold, and stops when the store is dropped.
#[test]
fn background_compaction_keeps_a_store_bounded() {
    let f = fixture();
    // The garbage is made first, without a background thread: one that
    // compacted in the middle of the saves would leave the rest as garbage
    // under `compact_min_bytes`, never compacted.
    {
        let store = opts().open(&f.path).expect("open");
        for round in 0..40 {
            for i in 0..10 {
                let mut s = Session::new(id(&format!("g{i}")), vec![round as u8; 1000]);
                store.save_session(&mut s).expect("save");
            }
        }
    }
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .compact_min_bytes(64 << 10)
        .compact_check_interval(Duration::from_millis(20))
        .open(&f.path)
        .expect("open");
    let before = store.stats().expect("stats");
    assert!(before.garbage_ratio > 0.9, "{before:?}");
    // Wait (bounded) for the background thread to notice; no fixed sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let s = store.stats().expect("stats");
        if s.generation > 1 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(after.garbage_ratio < 0.5, "{after:?}");
    assert_eq!(after.sessions, 10);
    for i in 0..10 {
        let s = store
            .load_session(&id(&format!("g{i}")))
            .expect("load")
            .expect("kept");
        assert_eq!(s.data, vec![39u8; 1000]);
    }
    drop(store); // joins the background thread
}

/// `restore_session` writes a session exactly as given (for restoring a
/// backup): version, modification time and deadline survive, and a
/// conditional save against that version then succeeds.
#[test]
fn restore_session_keeps_version_and_times() {
    let f = fixture();
    let store = opts().open(&f.path).expect("open");
    let modified = std::time::UNIX_EPOCH + Duration::from_millis(1_893_456_000_123);
    let expires = std::time::UNIX_EPOCH + Duration::from_millis(1_993_456_000_000);
    let s = Session::restore(
        id("restored"),
        b"backup".to_vec(),
        Some(expires),
        modified,
        7,
    );
    store.restore_session(&s).expect("restore");
    let back = store.load_session(&s.id).expect("load").expect("present");
    assert_eq!(back, s);
    let mut next = back;
    store
        .save_session_if_unchanged(&mut next)
        .expect("the restored version is current");
    assert_eq!(next.version(), 8);
    let big = Session::restore(id("big"), vec![0; (16 << 20) + 1], None, modified, 1);
    assert!(matches!(
        store.restore_session(&big),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn load_with_lends_what_load_session_returns_and_nothing_for_absent_or_expired() {
    let f = fixture();
    let clock = ManualClock::fixed();
    let store = opts()
        .clock(clock.clone())
        .max_idle(Duration::from_secs(600))
        .open(&f.path)
        .expect("open");
    let mut s = Session::new(id("lendXYZ"), data(7));
    s.expires = Some(clock.now_plus(Duration::from_secs(60)));
    store.save_session(&mut s).expect("save");
    // A touch: the latest record is not the put that holds the data.
    assert!(store.touch_session(&id("lendXYZ")).expect("touch"));
    let loaded = store
        .load_session(&id("lendXYZ"))
        .expect("load")
        .expect("present");
    let lent = store
        .load_with(&id("lendXYZ"), |v| v.to_session())
        .expect("load_with")
        .expect("present");
    assert_eq!(lent, loaded);
    assert_eq!(lent.data, data(7));
    // The trait's object-safe form, through a `Box<dyn SessionStore>`.
    let boxed: Box<dyn SessionStore> = Box::new(store);
    let mut seen = None;
    assert!(
        boxed
            .load_session_with(&id("lendXYZ"), &mut |v| seen =
                Some((v.data().to_vec(), v.version())))
            .expect("load_session_with")
    );
    assert_eq!(seen, Some((data(7), loaded.version())));
    let mut called = false;
    assert!(
        !boxed
            .load_session_with(&id("absentXYZ"), &mut |_| called = true)
            .expect("absent")
    );
    clock.advance(Duration::from_secs(61));
    assert!(
        !boxed
            .load_session_with(&id("lendXYZ"), &mut |_| called = true)
            .expect("expired")
    );
    assert!(!called, "the closure ran for an absent or expired session");
}

#[test]
fn load_with_holds_no_lock_and_its_bytes_outlive_a_compaction_that_replaces_the_file() {
    let f = fixture();
    let store = opts().open(&f.path).expect("open");
    for i in 0..50 {
        store
            .save_session(&mut Session::new(id(&format!("keepXYZ{i}")), data(i)))
            .expect("save");
    }
    let gen_before = store.stats().expect("stats").generation;
    let out = store
        .load_with(&id("keepXYZ3"), |v| {
            // The store is free to write and to compact while the bytes are
            // lent: this would deadlock if the call held a lock.
            let mut s = Session::new(id("keepXYZ3"), b"replaced".to_vec());
            store.save_session(&mut s).expect("save inside");
            store.compact().expect("compact inside");
            v.data().to_vec()
        })
        .expect("load_with")
        .expect("present");
    assert_eq!(out, data(3), "the lent bytes changed under the caller");
    assert!(store.stats().expect("stats").generation > gen_before);
    let now = store
        .load_with(&id("keepXYZ3"), |v| v.data().to_vec())
        .expect("load_with")
        .expect("present");
    assert_eq!(now, b"replaced");
}

#[test]
fn load_with_reports_a_record_damaged_under_an_open_store_as_corrupt_and_lends_nothing() {
    use std::os::unix::fs::FileExt;
    let f = fixture();
    let store = opts().open(&f.path).expect("open");
    store
        .save_session(&mut Session::new(id("flipXYZ"), vec![0x55; 300]))
        .expect("save");
    let bytes = fs::read(&f.path).expect("read");
    let pos = bytes
        .windows(300)
        .position(|w| w.iter().all(|&b| b == 0x55))
        .expect("data in file");
    // Another writer of the file (a disk fault) flips one bit of the data
    // the open store has mapped.
    let raw = fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .expect("open raw");
    raw.write_at(&[0x55 ^ 0x01], (pos + 150) as u64)
        .expect("flip");
    let mut called = false;
    let r = store.load_session_with(&id("flipXYZ"), &mut |_| called = true);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    assert!(!called, "damaged bytes were lent");
    assert!(matches!(
        store.load_session(&id("flipXYZ")),
        Err(Error::Corrupt { .. })
    ));
}

/// Sends the name of the thread that reads a hint file.
#[derive(Debug)]
struct HintReads(std::sync::Mutex<std::sync::mpsc::Sender<String>>);

impl sessionlog::internals::hook::IoHook for HintReads {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        if let sessionlog::internals::hook::IoEvent::ReadHint { .. } = e {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = self.0.lock().expect("lock").send(name);
        }
        Ok(())
    }
}

/// At the compaction's rename: lets the other handle see the pending
/// word, and waits until it has read the hint ahead.
#[derive(Debug)]
struct AtSwap {
    log: PathBuf,
    other: std::sync::Arc<LogStore>,
    probe: sessionlog::SessionId,
    reads: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<String>>>,
    seen: std::sync::Mutex<Vec<String>>,
}

impl sessionlog::internals::hook::IoHook for AtSwap {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        if let sessionlog::internals::hook::IoEvent::Rename { to, .. } = e
            && *to == self.log
        {
            // From another thread: this one holds the write lock.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let got = self
                        .other
                        .load_session(&self.probe)
                        .expect("load before the swap");
                    assert!(got.is_some(), "the old file still serves loads");
                });
            });
            let name = self
                .reads
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(120))
                .expect("the other handle reads the announced hint before the swap");
            self.seen.lock().expect("lock").push(name);
        }
        Ok(())
    }
}

/// A compactor announces its hint before the swap (the pending word);
/// another handle reads it ahead, on a thread of its own, and moves to the
/// new file with it: it does not read the hint again after the swap, and
/// sees every session, those saved after the swap included.
#[test]
fn a_follower_reads_the_hint_ahead_of_the_swap_and_not_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::sync::Arc::new(
        opts()
            .io_hook(std::sync::Arc::new(HintReads(std::sync::Mutex::new(tx))))
            .open(&path)
            .expect("open follower"),
    );
    let reads = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let hook = std::sync::Arc::new(AtSwap {
        log: std::fs::canonicalize(dir.path())
            .expect("canonical")
            .join("s.db"),
        other: std::sync::Arc::clone(&follower),
        probe: id("s0"),
        reads: std::sync::Arc::clone(&reads),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let compactor = opts()
        .io_hook(hook.clone())
        .open(&path)
        .expect("open compactor");
    for round in 0..3 {
        for i in 0..200 {
            let mut s = Session::new(id(&format!("s{i}")), data(i + round));
            compactor.save_session(&mut s).expect("save");
        }
    }
    assert!(follower.load_session(&id("s0")).expect("load").is_some());
    // The follower's open looked for a hint (there was none).
    while reads.lock().expect("lock").try_recv().is_ok() {}
    compactor.compact().expect("compact");
    assert_eq!(
        *hook.seen.lock().expect("lock"),
        ["sessionlog-hint"],
        "one read ahead, on the read-ahead thread"
    );
    let mut late = Session::new(id("late"), b"after the swap".to_vec());
    compactor
        .save_session(&mut late)
        .expect("save after the swap");
    let got = follower
        .load_session(&id("late"))
        .expect("load")
        .expect("saved after the swap");
    assert_eq!(got.data, b"after the swap");
    for i in 0..200 {
        let s = follower
            .load_session(&id(&format!("s{i}")))
            .expect("load")
            .expect("kept by the compaction");
        assert_eq!(s.data, data(i + 2));
    }
    assert!(
        reads.lock().expect("lock").try_recv().is_err(),
        "the move to the new file used the hint read ahead"
    );
}

/// Sends the path of each compaction file a handle maps ahead.
#[derive(Debug)]
struct Premaps(std::sync::Mutex<std::sync::mpsc::Sender<(String, PathBuf)>>);

impl sessionlog::internals::hook::IoHook for Premaps {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        if let sessionlog::internals::hook::IoEvent::Premap { path } = e {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = self
                .0
                .lock()
                .expect("lock")
                .send((name, path.to_path_buf()));
        }
        Ok(())
    }
}

/// At the compaction's rename: lets the other handle see the pending
/// word, waits until it maps the new file ahead, then fails the rename if
/// told to.
#[derive(Debug)]
struct PremapAtSwap {
    log: PathBuf,
    other: std::sync::Arc<LogStore>,
    probe: sessionlog::SessionId,
    premaps: std::sync::Mutex<std::sync::mpsc::Receiver<(String, PathBuf)>>,
    seen: std::sync::Mutex<Vec<(String, PathBuf)>>,
    fail: std::sync::atomic::AtomicBool,
}

impl sessionlog::internals::hook::IoHook for PremapAtSwap {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        if let sessionlog::internals::hook::IoEvent::Rename { to, .. } = e
            && *to == self.log
        {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let got = self.other.load_session(&self.probe).expect("load");
                    assert!(got.is_some(), "the old file still serves loads");
                });
            });
            let seen = self
                .premaps
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(120))
                .expect("the other handle maps the announced file before the swap");
            self.seen.lock().expect("lock").push(seen);
            if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other("injected rename failure"));
            }
        }
        Ok(())
    }
}

/// Another handle maps a compaction's new file ahead of the swap (on its
/// read-ahead thread) and moves to it with that mapping; a compaction that
/// fails after the other handle mapped its file leaves that handle on the
/// old file, and the next compaction's file (a new one) is mapped afresh.
/// Every session reads back exactly, before and after each swap.
#[test]
fn a_follower_maps_the_new_file_ahead_and_never_reads_a_failed_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::sync::Arc::new(
        opts()
            .io_hook(std::sync::Arc::new(Premaps(std::sync::Mutex::new(tx))))
            .open(&path)
            .expect("open follower"),
    );
    let log = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join("s.db");
    let hook = std::sync::Arc::new(PremapAtSwap {
        log: log.clone(),
        other: std::sync::Arc::clone(&follower),
        probe: id("s0"),
        premaps: std::sync::Mutex::new(rx),
        seen: std::sync::Mutex::new(Vec::new()),
        fail: std::sync::atomic::AtomicBool::new(true),
    });
    let compactor = opts()
        .io_hook(hook.clone())
        .open(&path)
        .expect("open compactor");
    let check = |round: usize| {
        for i in 0..300 {
            let s = follower
                .load_session(&id(&format!("s{i}")))
                .expect("load")
                .expect("every session");
            assert_eq!(s.data, data(i + round), "s{i}");
        }
    };
    for round in 0..3 {
        for i in 0..300 {
            let mut s = Session::new(id(&format!("s{i}")), data(i + round));
            compactor.save_session(&mut s).expect("save");
        }
    }
    check(2);
    let failed = compactor.compact();
    assert!(failed.is_err(), "the injected rename failure: {failed:?}");
    check(2);
    for i in 0..300 {
        let mut s = Session::new(id(&format!("s{i}")), data(i + 3));
        compactor.save_session(&mut s).expect("save");
    }
    check(3);
    compactor.compact().expect("compact");
    let mut late = Session::new(id("late"), b"after the swap".to_vec());
    compactor
        .save_session(&mut late)
        .expect("save after the swap");
    check(3);
    let got = follower
        .load_session(&id("late"))
        .expect("load")
        .expect("saved after the swap");
    assert_eq!(got.data, b"after the swap");
    let compact = log.with_file_name("s.db.compact");
    assert_eq!(
        *hook.seen.lock().expect("lock"),
        [
            ("sessionlog-hint".to_owned(), compact.clone()),
            ("sessionlog-hint".to_owned(), compact)
        ],
        "each compaction's file mapped ahead once, on the read-ahead thread"
    );
}

/// A log that grew well past its last hint gets a new hint when the last
/// handle closes, so that the next open reads the hint and replays
/// nothing: reopening costs what is live. A close after little growth
/// writes none, and a hint that a failed write left half done is ignored.
#[test]
fn a_close_after_much_growth_writes_a_hint_that_the_next_open_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let store = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Interval(Duration::from_secs(3600)))
        .open(&path)
        .expect("open");
    let value = vec![7u8; 8 << 10];
    // 100 sessions overwritten until the log holds 24 MiB.
    for round in 0..30 {
        for i in 0..100 {
            let mut s = Session::new(id(&format!("s{i}")), value.clone());
            s.data[0] = round;
            store.save_session(&mut s).expect("save");
        }
    }
    drop(store);
    let hint = dir.path().join("s.db.hint");
    assert!(hint.exists(), "the close wrote a hint");
    let store = opts().open(&path).expect("reopen");
    let st = store.stats().expect("stats");
    assert_eq!(
        st.recovery.hint_end,
        Some(HEADER_SIZE + st.log_bytes),
        "the hint covers the whole log"
    );
    for i in 0..100 {
        let s = store
            .load_session(&id(&format!("s{i}")))
            .expect("load")
            .expect("every session");
        assert_eq!(s.data[0], 29);
    }
    // A little growth: the close leaves the hint as it was.
    let mut s = Session::new(id("one-more"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    let before = fs::read(&hint).expect("read hint");
    drop(store);
    assert_eq!(fs::read(&hint).expect("read hint"), before);
    // A damaged hint: the open replays, and loses nothing.
    let mut bad = before;
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&hint, &bad).expect("damage the hint");
    let store = opts().open(&path).expect("reopen");
    assert_eq!(store.stats().expect("stats").recovery.hint_end, None);
    assert!(store.load_session(&id("one-more")).expect("load").is_some());
    assert_eq!(store.stats().expect("stats").sessions, 101);
}

/// What a follower's hook saw: a hint read (with the reading thread's
/// name), or the range of a replay ahead.
#[derive(Debug)]
enum Seen {
    HintRead(String),
    ReplayAhead(u64, u64),
}

/// Reports a follower's hint reads and replays ahead, and fails every
/// replay ahead if told to.
#[derive(Debug)]
struct FollowerSees {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Seen>>,
    fail_replay: bool,
}

impl sessionlog::internals::hook::IoHook for FollowerSees {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        use sessionlog::internals::hook::IoEvent;
        let seen = match e {
            IoEvent::ReadHint { .. } => {
                Seen::HintRead(std::thread::current().name().unwrap_or("").to_owned())
            }
            IoEvent::ReplayAhead { from, to, .. } => Seen::ReplayAhead(*from, *to),
            _ => return Ok(()),
        };
        let _ = self.tx.lock().expect("lock").send(seen);
        match e {
            IoEvent::ReplayAhead { .. } if self.fail_replay => {
                Err(std::io::Error::other("injected replay-ahead failure"))
            }
            _ => Ok(()),
        }
    }
}

/// The compactor's side: once its hint is announced (at the new file's
/// second fsync), the follower saves, overwrites and deletes sessions, so
/// that the compaction copies records past the hint's end; at the rename,
/// waits until the follower has replayed ahead up to the new file's end
/// (or, when its replays fail, tried once).
#[derive(Debug)]
struct ChangesAfterTheHint {
    log: PathBuf,
    follower: std::sync::Arc<LogStore>,
    syncs: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<std::sync::mpsc::Receiver<Seen>>,
    hint_reads: std::sync::Mutex<Vec<String>>,
    replays: std::sync::Mutex<Vec<(u64, u64)>>,
    fail_replay: bool,
}

impl sessionlog::internals::hook::IoHook for ChangesAfterTheHint {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        use sessionlog::internals::hook::IoEvent;
        let compact = self.log.with_file_name("s.db.compact");
        match e {
            IoEvent::Sync { path }
                if *path == compact
                    && self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 =>
            {
                for i in 0..100 {
                    let mut s = Session::new(id(&format!("n{i}")), data(1000 + i));
                    self.follower.save_session(&mut s).expect("save new");
                    let mut s = Session::new(id(&format!("s{i}")), data(2000 + i));
                    self.follower.save_session(&mut s).expect("overwrite");
                    self.follower
                        .delete_session(&id(&format!("s{}", 100 + i)))
                        .expect("delete");
                }
            }
            IoEvent::Rename { to, .. } if *to == self.log => {
                let end = fs::metadata(&compact).expect("stat").len();
                let seen = self.seen.lock().expect("lock");
                loop {
                    match seen
                        .recv_timeout(Duration::from_secs(120))
                        .expect("the follower replays ahead before the swap")
                    {
                        Seen::HintRead(name) => self.hint_reads.lock().expect("lock").push(name),
                        Seen::ReplayAhead(from, to) => {
                            self.replays.lock().expect("lock").push((from, to));
                            if self.fail_replay || to == end {
                                break;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn a_follower_replays_ahead(fail_replay: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::sync::Arc::new(
        opts()
            .io_hook(std::sync::Arc::new(FollowerSees {
                tx: std::sync::Mutex::new(tx),
                fail_replay,
            }))
            .open(&path)
            .expect("open follower"),
    );
    let hook = std::sync::Arc::new(ChangesAfterTheHint {
        log: std::fs::canonicalize(dir.path())
            .expect("canonical")
            .join("s.db"),
        follower: std::sync::Arc::clone(&follower),
        syncs: std::sync::atomic::AtomicUsize::new(0),
        seen: std::sync::Mutex::new(rx),
        hint_reads: std::sync::Mutex::new(Vec::new()),
        replays: std::sync::Mutex::new(Vec::new()),
        fail_replay,
    });
    let compactor = opts()
        .io_hook(hook.clone())
        .open(&path)
        .expect("open compactor");
    for round in 0..3 {
        for i in 0..300 {
            let mut s = Session::new(id(&format!("s{i}")), data(i + round));
            compactor.save_session(&mut s).expect("save");
        }
    }
    assert!(follower.load_session(&id("s0")).expect("load").is_some());
    // The follower's open looked for a hint (there was none).
    while hook.seen.lock().expect("lock").try_recv().is_ok() {}
    compactor.compact().expect("compact");
    let replays = hook.replays.lock().expect("lock").clone();
    assert!(!replays.is_empty(), "the follower replays ahead");
    if !fail_replay {
        assert!(
            replays
                .windows(2)
                .all(|w| w[1].0 > w[0].0 && w[1].0 >= w[0].1),
            "each replay starts where the last one stopped: {replays:?}"
        );
    }
    for i in 0..300 {
        let got = follower.load_session(&id(&format!("s{i}"))).expect("load");
        match i {
            0..100 => assert_eq!(got.expect("overwritten").data, data(2000 + i), "s{i}"),
            100..200 => assert!(got.is_none(), "s{i} was deleted after the hint"),
            _ => assert_eq!(got.expect("kept").data, data(i + 2), "s{i}"),
        }
        if i < 100 {
            let got = follower.load_session(&id(&format!("n{i}"))).expect("load");
            assert_eq!(got.expect("saved after the hint").data, data(1000 + i));
        }
    }
    let mut late = Session::new(id("late"), b"after the swap".to_vec());
    compactor
        .save_session(&mut late)
        .expect("save after the swap");
    let got = follower.load_session(&id("late")).expect("load");
    assert_eq!(got.expect("saved after the swap").data, b"after the swap");
    let mut reads = hook.hint_reads.lock().expect("lock").clone();
    while let Ok(seen) = hook.seen.lock().expect("lock").try_recv() {
        if let Seen::HintRead(name) = seen {
            reads.push(name);
        }
    }
    assert_eq!(
        reads,
        ["sessionlog-hint"],
        "one read of the hint, ahead, and none at the switch"
    );
}

/// Records a compaction copies after announcing its hint (saves, an
/// overwrite, deletes by another handle) are replayed by that handle
/// ahead of the swap, on its read-ahead thread, from the compaction's
/// temporary file as far as its committed word; the switch takes that
/// table for the new file without reading the hint again, and every
/// session reads back as last written.
#[test]
fn a_follower_replays_ahead_what_the_compaction_copies_after_its_hint() {
    a_follower_replays_ahead(false);
}

/// When replaying ahead fails, the switch replays the records itself, and
/// every session still reads back as last written.
#[test]
fn a_follower_whose_replay_ahead_fails_replays_at_the_switch() {
    a_follower_replays_ahead(true);
}

/// A compaction that finds a dead compactor's file at the temporary path
/// removes it and writes a new one: a file that other processes may have
/// mapped (ahead of a swap that never came) is never cut, so their reads
/// of it cannot fault.
#[test]
fn a_dead_compactors_file_is_replaced_never_cut() {
    let f = fixture();
    let store = opts().open(&f.path).expect("open");
    save_numbered(&store, 50);
    let leftover = f.path.with_file_name("s.db.compact");
    let bytes = vec![0x5au8; 3 * HEADER_SIZE as usize];
    fs::write(&leftover, &bytes).expect("plant");
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o600)).expect("chmod");
    let held = fs::File::open(&leftover).expect("hold the leftover open");
    store.compact().expect("compact");
    assert_eq!(
        held.metadata().expect("stat").len(),
        bytes.len() as u64,
        "the leftover was not cut"
    );
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut again).expect("read");
    assert_eq!(again, bytes, "nor written");
    assert!(!leftover.exists(), "the new file was renamed over the log");
    assert_numbered_kept(&store, 50, "kept");
}

/// Fails the first removal of the compaction's temporary file.
#[derive(Debug, Default)]
struct FailFirstRemove(std::sync::atomic::AtomicUsize);

impl sessionlog::internals::hook::IoHook for FailFirstRemove {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        use sessionlog::internals::hook::IoEvent;
        match e {
            IoEvent::Remove { .. }
                if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 =>
            {
                Err(std::io::Error::other("injected remove failure"))
            }
            _ => Ok(()),
        }
    }
}

/// A compaction that cannot remove a dead compactor's file fails with an
/// error naming it, writes nothing and loses nothing; the next one
/// succeeds.
#[test]
fn a_dead_compactors_file_that_cannot_be_removed_fails_the_compaction() {
    let f = fixture();
    let hook = std::sync::Arc::new(FailFirstRemove::default());
    let store = opts().io_hook(hook.clone()).open(&f.path).expect("open");
    save_numbered(&store, 50);
    let log_before = fs::read(&f.path).expect("read log");
    let leftover = f.path.with_file_name("s.db.compact");
    let bytes = vec![0x5au8; 3 * HEADER_SIZE as usize];
    fs::write(&leftover, &bytes).expect("plant");
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o600)).expect("chmod");

    let err = store.compact().expect_err("the removal fails");
    let msg = err.to_string();
    assert!(
        msg.contains("s.db.compact") && msg.contains("remove stale temporary file"),
        "{msg}"
    );
    assert_eq!(
        fs::read(&leftover).expect("still there"),
        bytes,
        "left as it was"
    );
    assert_eq!(
        fs::read(&f.path).expect("read log"),
        log_before,
        "nothing written"
    );

    let stats = store.compact().expect("the next compaction");
    assert_eq!(stats.kept, 50);
    assert_eq!(
        hook.0.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one failed, one removed"
    );
    assert!(!leftover.exists());
    assert_numbered_kept(&store, 50, "kept");
}

/// Which truncations open by themselves (DESIGN.md §7): one that loses
/// only space reserved past the committed end, or records past the synced
/// end (the trace of a crash), opens and goes on; one that cuts records
/// that had reached the disk (a cleanly closed store cut by 10 bytes) is
/// `Corrupt`, file untouched, because acknowledged saves are gone, and
/// repair keeps every complete record.
#[test]
fn a_truncation_opens_by_itself_unless_it_cuts_synced_records() {
    // Reserved space only: the file is preallocated past its records.
    for which in [
        "10 bytes off",
        "a byte past the records",
        "at the records' end",
    ] {
        let f = fixture();
        let (_, end) = build(&f.path, 20, false);
        let len = fs::metadata(&f.path).expect("stat").len();
        assert!(len > end + 10, "space reserved past the records");
        let cut = match which {
            "10 bytes off" => len - 10,
            "a byte past the records" => end + 1,
            _ => end,
        };
        fs::OpenOptions::new()
            .write(true)
            .open(&f.path)
            .and_then(|file| file.set_len(cut))
            .expect("truncate");
        let store = opts().open(&f.path).expect(which);
        assert_eq!(
            store.stats().expect("stats").recovery.torn_tail_offset,
            None,
            "{which}"
        );
        assert_numbered_kept(&store, 20, which);
        let mut s = Session::new(id("after"), b"after the cut".to_vec());
        store.save_session(&mut s).expect("save after the cut");
        store.delete_session(&s.id).expect("delete");
    }

    // Unsynced records (a crash's torn tail): cut and reported.
    let f = fixture();
    let (tail_start, _) = build(&f.path, 20, true);
    fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .and_then(|file| file.set_len(tail_start + 10))
        .expect("truncate");
    let store = opts().open(&f.path).expect("opens by itself");
    let report = store.stats().expect("stats").recovery;
    assert_eq!(report.torn_tail_offset, Some(tail_start));
    assert_numbered_kept(&store, 20, "synced sessions kept");
    drop(store);

    // Synced records: a cleanly closed, compacted store (its file ends
    // where its records do) cut by 10 bytes.
    let f = fixture();
    build(&f.path, 20, false);
    opts()
        .open(&f.path)
        .expect("open")
        .compact()
        .expect("compact");
    let full = fs::read(&f.path).expect("read");
    let end = word_at(&full, H_COMMITTED);
    assert_eq!(
        full.len() as u64,
        end,
        "a compacted file ends at its records"
    );
    assert_eq!(word_at(&full, H_SYNCED), end, "closed cleanly: all synced");
    fs::write(&f.path, &full[..full.len() - 10]).expect("cut");
    let err = opts()
        .open(&f.path)
        .expect_err("acknowledged saves are lost");
    match &err {
        Error::Corrupt { offset, reason, .. } => {
            assert!(*offset < end - 10 && *offset >= HEADER_SIZE, "{err}");
            // Not "record is cut short", as a torn append: it says the
            // loss is of records that had reached the disk.
            assert!(reason.contains("already on disk"), "{err}");
            assert!(reason.contains("acknowledged"), "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(fs::read(&f.path).expect("read"), &full[..full.len() - 10]);
    let report = sessionlog::check(&f.path).expect("check");
    assert!(!report.is_healthy());
    assert!(
        report.corruption[0].reason.contains("already on disk"),
        "{report:?}"
    );
    let store = opts().repair(true).open(&f.path).expect("repair");
    let recovery = store.stats().expect("stats").recovery;
    assert!(recovery.damaged_copy.is_some());
    assert_eq!(store.iter_sessions().expect("iter").count(), 19);
    let lost: Vec<usize> = (0..20)
        .filter(|i| {
            store
                .load_session(&id(&format!("s{i}")))
                .expect("load")
                .is_none_or(|s| s.data != data(*i))
        })
        .collect();
    assert_eq!(lost.len(), 1, "only the cut record is lost: {lost:?}");
}

/// The first time a handle's open maps the log, another handle saves
/// until the file has grown past the mapped length: records are committed
/// past it before the opener reads the committed end.
#[derive(Debug)]
struct GrowAtMap {
    path: PathBuf,
    other: LogStore,
    saved: std::sync::Mutex<Vec<sessionlog::SessionId>>,
    fired: std::sync::atomic::AtomicBool,
}

impl sessionlog::internals::hook::IoHook for GrowAtMap {
    fn before(&self, e: &sessionlog::internals::hook::IoEvent<'_>) -> std::io::Result<()> {
        if let sessionlog::internals::hook::IoEvent::Mapped { len, .. } = e
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let mut saved = self.saved.lock().expect("lock");
            // The save that grows the file commits a record ending past
            // `len`.
            while fs::metadata(&self.path).expect("stat").len() <= *len {
                let id = id(&format!("grow{}", saved.len()));
                let mut s = Session::new(id.clone(), vec![b'g'; 32 << 10]);
                self.other.save_session(&mut s).expect("save meanwhile");
                saved.push(id);
            }
        }
        Ok(())
    }
}

/// A handle opened while another process grows the log (between the
/// opener's mapping of the file and its reading of the committed end)
/// replays every committed record: it neither takes the records past the
/// mapped length for a torn tail and erases them (acknowledged saves lost,
/// found by `cli/tests/backup.rs` under load) nor calls the store damaged.
#[test]
fn an_open_while_another_handle_grows_the_file_keeps_every_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let first = opts().open(&path).expect("create");
    let mut s = Session::new(id("before"), b"x".to_vec());
    first.save_session(&mut s).expect("save");
    let hook = std::sync::Arc::new(GrowAtMap {
        path: path.clone(),
        other: opts().open(&path).expect("the growing handle"),
        saved: std::sync::Mutex::new(Vec::new()),
        fired: std::sync::atomic::AtomicBool::new(false),
    });
    let opener = opts()
        .io_hook(hook.clone())
        .open(&path)
        .expect("open while the file grows");
    let saved = hook.saved.lock().expect("lock").clone();
    assert!(
        !saved.is_empty(),
        "the hook grew nothing: the test shows nothing"
    );
    for id in saved.iter().chain([&id("before")]) {
        assert!(
            opener.has_session(id).expect("has"),
            "{id:?} missing in the opener"
        );
        assert!(
            first.has_session(id).expect("has"),
            "{id:?} erased from the store by the opener"
        );
    }
    drop((opener, first));
    let reopened = opts().open(&path).expect("reopen");
    for id in &saved {
        assert!(reopened.has_session(id).expect("has"), "{id:?} lost");
    }
}

/// `max_sessions_per_owner` logs out the oldest login even when the
/// logins came within one millisecond (the clock stands still here): the
/// order of their puts in the log decides, not their ids. The ids are
/// saved in descending order, so an order by id would evict the newest
/// of the others instead (Django's test client logged three browsers in
/// within one millisecond and kept the first).
#[test]
fn the_owner_limit_evicts_the_oldest_of_logins_made_in_one_millisecond() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .clock(ManualClock::fixed())
        .max_sessions_per_owner(2)
        .open(dir.path().join("s.db"))
        .expect("open");
    let alice = sessionlog::Owner::new("alice").expect("owner");
    for name in ["z9", "m5", "a0"] {
        let mut s = Session::new(id(name), name.as_bytes().to_vec());
        s.owner = Some(alice.clone());
        store.save_session(&mut s).expect("save");
    }
    assert!(
        !store.has_session(&id("z9")).expect("has"),
        "the first login is logged out"
    );
    assert!(store.has_session(&id("m5")).expect("has"));
    assert!(store.has_session(&id("a0")).expect("has"));
}
