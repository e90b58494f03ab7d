//! `check`: an offline verifier of a log file. It reads the file with
//! plain reads (no lock, no map, no writes), checks the header the way
//! opening does, then walks every record up to the committed end, checking
//! each CRC and rebuilding the set of live sessions.
//!
//! A bad record at or after the synced end is a torn tail (the normal trace
//! of a crash, cut on the next open); one before it is corruption. After
//! corruption the walk resumes, as repair mode does, at the next 8-byte
//! aligned offset where a valid record starts.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::engine::format::{
    self, DecodeError, H_COMMITTED, H_SUPERSEDED, H_SYNCED, HEADER_SIZE, Kind, RECORD_ALIGN,
    SUPERSEDED,
};
use crate::error::{Error, Result};

/// Records counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordCounts {
    /// `Put` records: full session states.
    pub put: u64,
    /// `Touch` records: new modification times.
    pub touch: u64,
    /// `Delete` records.
    pub delete: u64,
}

impl RecordCounts {
    /// All valid records.
    pub fn total(&self) -> u64 {
        self.put + self.touch + self.delete
    }
}

/// A range of bytes before the synced end that holds no valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// Offset of the first bad record.
    pub offset: u64,
    /// Bytes from `offset` to where valid records resume (or to the end).
    pub len: u64,
    /// Why the record at `offset` is bad.
    pub reason: String,
    /// Offset where valid records resume, `None` if none do before the
    /// committed end.
    pub resumes_at: Option<u64>,
}

/// Bad bytes at or after the synced end: records a crash left unfinished.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// Offset of the first bad record.
    pub offset: u64,
    /// Bytes from there to the committed end.
    pub len: u64,
    /// Why the record there is bad.
    pub reason: String,
}

/// What [`check`] found in a log file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The file checked.
    pub path: PathBuf,
    /// Size of the file on disk, reserved space included.
    pub file_bytes: u64,
    /// The file's generation: 1 for a new store, +1 per compaction.
    pub generation: u64,
    /// The committed word: end of the last complete record.
    pub committed: u64,
    /// The synced word: everything before it reached stable storage.
    pub synced: u64,
    /// True if a compaction marked this file replaced (a compaction in
    /// progress, or one that died before its rename).
    pub superseded: bool,
    /// Valid records, by kind.
    pub records: RecordCounts,
    /// Sessions with a live `Put` record (expired ones included: they stay
    /// until compaction).
    pub live_sessions: u64,
    /// Of those, sessions whose deadline has passed.
    pub expired_sessions: u64,
    /// Bytes of the live `Put` records.
    pub live_bytes: u64,
    /// Bytes of valid records that compaction would drop.
    pub garbage_bytes: u64,
    /// `Touch` or `Delete` records naming no live session (left by a
    /// repair that lost the `Put`; harmless).
    pub orphan_records: u64,
    /// Damaged ranges before the synced end, in file order.
    pub corruption: Vec<Damage>,
    /// A torn tail, if the file has one.
    pub torn_tail: Option<TornTail>,
    /// Complete records that follow the committed end without a gap. The
    /// next open (the first process to open the store) keeps them: they
    /// are durable saves whose header page had not reached the disk when
    /// power was lost (DESIGN.md §6). Not in the counts above.
    pub records_past_committed: u64,
    /// Bytes from the end of those records to the last non-zero byte of
    /// the file: a torn append past the committed end, or records after a
    /// gap a power loss left. The next open erases them. Not in the counts
    /// above either.
    pub torn_bytes_past_committed: u64,
}

impl CheckReport {
    /// True if nothing is corrupt (a torn tail is not damage: opening cuts
    /// it).
    pub fn is_healthy(&self) -> bool {
        self.corruption.is_empty()
    }

    /// Bytes inside damaged ranges.
    pub fn corrupt_bytes(&self) -> u64 {
        self.corruption.iter().map(|d| d.len).sum()
    }
}

/// Verifies the log file at `path` without changing it; see [`check_with`].
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
    check_with(path, |_, _| {})
}

/// Verifies the log file at `path`, calling `progress(done, total)` with
/// bytes walked as it goes.
///
/// Fails like opening does when the file is missing or unreadable
/// ([`Error::Io`]), is not a store ([`Error::NotAStore`]), has another
/// format version ([`Error::UnsupportedVersion`]), or its header or shared
/// words are damaged ([`Error::Corrupt`]); damage to records is reported in
/// the [`CheckReport`] instead. Never panics, whatever the file holds.
pub fn check_with(
    path: impl AsRef<Path>,
    mut progress: impl FnMut(u64, u64),
) -> Result<CheckReport> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let stat = |file: &File| {
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(path, "stat", e))
    };
    let mut file_bytes = stat(&file)?;

    let mut header = Vec::new();
    (&mut file)
        .take(HEADER_SIZE)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, "read header", e))?;
    let static_header = crate::engine::file::check_header(path, &header)?;
    if (header.len() as u64) < HEADER_SIZE {
        return Err(Error::corrupt(
            path,
            header.len() as u64,
            "the file ends inside the header",
        ));
    }
    crate::engine::file::check_policy(path, &header)?;
    let committed = shared_word(path, &header, H_COMMITTED, "committed")?;
    let synced = shared_word(path, &header, H_SYNCED, "synced")?;
    let superseded = word_at(&header, H_SUPERSEDED) == SUPERSEDED;
    if committed > file_bytes {
        // A process appending to a store in use may have grown the file
        // and committed past its old length since the `stat` above: a
        // file is never shortened, so its length now is the one to judge.
        file_bytes = stat(&file)?;
    }

    // Records: [HEADER_SIZE, end). Past the file's end is handled below.
    // The file is mapped, not read into memory: a log of any size costs
    // page cache, which the kernel can take back, not heap.
    let end = committed.min(file_bytes);
    let map = map_file(path, &file, file_bytes)?;
    let log = &map[HEADER_SIZE as usize..end as usize];

    let mut report = CheckReport {
        path: path.to_owned(),
        file_bytes,
        generation: static_header.generation,
        committed,
        synced,
        superseded,
        records: RecordCounts::default(),
        live_sessions: 0,
        expired_sessions: 0,
        live_bytes: 0,
        garbage_bytes: 0,
        orphan_records: 0,
        corruption: Vec::new(),
        torn_tail: None,
        records_past_committed: 0,
        torn_bytes_past_committed: 0,
    };
    let walked = walk(log, static_header.salt, &mut report, &mut progress);
    progress(walked, log.len() as u64);
    if format::next_generation(static_header.generation).is_none() {
        // Only a crafted header gets there; the next compaction would
        // fail, and repair numbers the files from 1 again.
        report.corruption.insert(
            0,
            Damage {
                offset: format::H_GENERATION as u64,
                len: 8,
                reason: "the generation is at its largest value: no compaction can follow".into(),
                resumes_at: Some(HEADER_SIZE),
            },
        );
    }
    if committed <= file_bytes && report.torn_tail.is_none() && report.corruption.is_empty() {
        past_committed(&file, &map, end, static_header.salt, &mut report);
    }
    if committed > file_bytes {
        // The committed records run past the end of the file: the range
        // that reaches the file's end is bad up to the committed end.
        let reason = "the file ends before its committed length";
        if let Some(t) = &mut report.torn_tail {
            t.len = committed - t.offset;
        } else if let Some(d) = report
            .corruption
            .last_mut()
            .filter(|d| d.resumes_at.is_none())
        {
            d.len = committed - d.offset;
            if file_bytes < synced {
                d.reason = format!(
                    "the file ends at byte {file_bytes}, inside records that were already on \
                     disk (synced up to byte {synced}): it was cut short after they were written"
                );
            }
        } else if file_bytes >= synced {
            report.torn_tail = Some(TornTail {
                offset: file_bytes,
                len: committed - file_bytes,
                reason: reason.to_owned(),
            });
        } else {
            report.corruption.push(Damage {
                offset: file_bytes,
                len: committed - file_bytes,
                reason: reason.to_owned(),
                resumes_at: None,
            });
        }
    }
    Ok(report)
}

/// Looks past the committed end, as the first opener does: counts the
/// complete records that follow it, and the bytes up to the last non-zero
/// one after them (the next open erases those).
/// Only the parts of the file that hold data are scanned for the last
/// non-zero byte (a sparse file of any apparent size costs a few calls).
fn past_committed(file: &File, map: &[u8], end: u64, salt: u32, report: &mut CheckReport) {
    let mut pos = end as usize;
    while let Ok(rec) = format::decode_record_salted(&map[pos..], salt) {
        report.records_past_committed += 1;
        pos += rec.padded_len;
    }
    let last = crate::engine::file::data_ranges(file, pos as u64, map.len() as u64)
        .into_iter()
        .filter_map(|(a, b)| {
            map[a as usize..b as usize]
                .iter()
                .rposition(|&x| x != 0)
                .map(|i| a as usize + i)
        })
        .max();
    if let Some(last) = last {
        report.torn_bytes_past_committed = (last + 1 - pos) as u64;
    }
}

/// The whole file, mapped read-only (an empty slice for an empty file).
fn map_file(path: &Path, file: &File, len: u64) -> Result<memmap2::Mmap> {
    usize::try_from(len).map_err(|_| Error::corrupt(path, len, "file too large to map"))?;
    // SAFETY: the mapping is read-only and private to this function's
    // caller, which reads it as plain bytes and never trusts them (every
    // record is checked). Another process appending to the file changes
    // only bytes past what the check looks at, or bytes it then reports as
    // damaged; a process that truncated the file under the check would
    // make it fault, which no sessionlog process does (DESIGN.md §10).
    unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }
        .map_err(|e| Error::io(path, "mmap", e))
}

/// Walks the records in `log` (which starts at `HEADER_SIZE`), filling in
/// `report`. Returns the bytes walked.
fn walk(
    log: &[u8],
    salt: u32,
    report: &mut CheckReport,
    progress: &mut impl FnMut(u64, u64),
) -> u64 {
    struct Live {
        len: u64,
        expires_ms: u64,
    }
    let total = log.len() as u64;
    let mut live: HashMap<&[u8], Live> = HashMap::new();
    let mut pos = 0usize;
    let mut next_report = 0usize;
    // The first bad record of the current damaged run.
    let mut bad: Option<(usize, DecodeError)> = None;
    while pos < log.len() {
        if pos >= next_report {
            progress(pos as u64, total);
            next_report = pos.saturating_add(1 << 20);
        }
        let rec = match format::decode_record_salted(&log[pos..], salt) {
            Ok(rec) => rec,
            Err(e) => {
                if bad.is_none() {
                    let offset = HEADER_SIZE + pos as u64;
                    if offset >= report.synced {
                        report.torn_tail = Some(TornTail {
                            offset,
                            len: total - pos as u64,
                            reason: e.to_string(),
                        });
                        break;
                    }
                    bad = Some((pos, e));
                }
                pos = pos.saturating_add(RECORD_ALIGN);
                continue;
            }
        };
        if let Some((start, e)) = bad.take() {
            report.corruption.push(Damage {
                offset: HEADER_SIZE + start as u64,
                len: (pos - start) as u64,
                reason: e.to_string(),
                resumes_at: Some(HEADER_SIZE + pos as u64),
            });
        }
        let len = rec.padded_len as u64;
        match rec.kind {
            Kind::Put => {
                report.records.put += 1;
                live.insert(
                    rec.id,
                    Live {
                        len,
                        expires_ms: rec.expires_ms,
                    },
                );
            }
            Kind::Touch => {
                report.records.touch += 1;
                if !live.contains_key(rec.id) {
                    report.orphan_records += 1;
                }
            }
            Kind::Delete => {
                report.records.delete += 1;
                if live.remove(rec.id).is_none() {
                    report.orphan_records += 1;
                }
            }
        }
        pos = pos.saturating_add(rec.padded_len);
    }
    // Where the walk stopped: the torn tail's start, or the end.
    let walked = if report.torn_tail.is_some() {
        pos as u64
    } else {
        total
    };
    if let Some((start, e)) = bad {
        report.corruption.push(Damage {
            offset: HEADER_SIZE + start as u64,
            len: walked - start as u64,
            reason: e.to_string(),
            resumes_at: None,
        });
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    report.live_sessions = live.len() as u64;
    report.expired_sessions = live
        .values()
        .filter(|l| l.expires_ms != 0 && l.expires_ms <= now_ms)
        .count() as u64;
    report.live_bytes = live.values().map(|l| l.len).sum();
    let valid_bytes = walked.saturating_sub(report.corrupt_bytes());
    report.garbage_bytes = valid_bytes.saturating_sub(report.live_bytes);
    walked
}

fn word_at(header: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = header.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

/// Decodes a shared word, failing as opening does when it is damaged.
fn shared_word(path: &Path, header: &[u8], at: usize, name: &str) -> Result<u64> {
    let offset = format::decode_offset(word_at(header, at)).ok_or_else(|| {
        Error::corrupt(
            path,
            at as u64,
            format!("the {name}-length word is damaged"),
        )
    })?;
    if offset < HEADER_SIZE {
        return Err(Error::corrupt(
            path,
            at as u64,
            format!("{name} length inside the header"),
        ));
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::{RecordFields, StaticHeader, encode_header, encode_record};

    fn header(committed: u64, synced: u64) -> Vec<u8> {
        let mut b = encode_header(
            &StaticHeader {
                version: format::FORMAT_VERSION,
                generation: 1,
                created_ms: 1,
                compact_kept: 0,
                compact_dropped: 0,
                compact_source_bytes: 0,
                compact_result_bytes: 0,
                salt: 0,
            },
            HEADER_SIZE,
        );
        b[H_COMMITTED..H_COMMITTED + 8]
            .copy_from_slice(&format::encode_offset(committed).to_le_bytes());
        b[H_SYNCED..H_SYNCED + 8].copy_from_slice(&format::encode_offset(synced).to_le_bytes());
        b
    }

    fn rec(out: &mut Vec<u8>, kind: Kind, id: &[u8], data: &[u8]) {
        encode_record(
            out,
            &RecordFields {
                owner: &[],
                kind,
                id,
                data,
                version: 1,
                modified_ms: 1,
                expires_ms: 0,
            },
        );
    }

    /// A file of three puts (a, b, a), a delete of b; returns it and the
    /// offsets of each record.
    fn sample(synced_all: bool) -> (Vec<u8>, Vec<u64>) {
        let mut log = Vec::new();
        let mut offs = Vec::new();
        for (k, id, d) in [
            (Kind::Put, &b"a"[..], &b"one"[..]),
            (Kind::Put, b"b", b"two"),
            (Kind::Put, b"a", b"three"),
            (Kind::Delete, b"b", b""),
        ] {
            offs.push(HEADER_SIZE + log.len() as u64);
            rec(&mut log, k, id, d);
        }
        let end = HEADER_SIZE + log.len() as u64;
        let mut f = header(end, if synced_all { end } else { HEADER_SIZE });
        f.extend_from_slice(&log);
        (f, offs)
    }

    fn check_bytes(bytes: &[u8]) -> Result<CheckReport> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "create", e))?;
        let p = dir.path().join("s.db");
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, "write", e))?;
        check(&p)
    }

    #[test]
    fn a_clean_file_is_counted() {
        let (f, offs) = sample(true);
        let r = check_bytes(&f).expect("checks");
        assert!(r.is_healthy());
        assert_eq!(r.torn_tail, None);
        assert_eq!(
            r.records,
            RecordCounts {
                put: 3,
                touch: 0,
                delete: 1
            }
        );
        assert_eq!(r.live_sessions, 1);
        assert_eq!(r.live_bytes, offs[3] - offs[2]);
        assert_eq!(r.garbage_bytes, r.committed - HEADER_SIZE - r.live_bytes);
    }

    #[test]
    fn damage_before_synced_is_corruption_and_resumes() {
        let (mut f, offs) = sample(true);
        f[offs[1] as usize + 41] ^= 0xFF; // record b's data
        let r = check_bytes(&f).expect("checks");
        assert!(!r.is_healthy());
        assert_eq!(r.corruption.len(), 1);
        assert_eq!(r.corruption[0].offset, offs[1]);
        assert_eq!(r.corruption[0].resumes_at, Some(offs[2]));
        assert_eq!(r.records.total(), 3);
        assert_eq!(r.orphan_records, 1);
    }

    #[test]
    fn damage_after_synced_is_a_torn_tail() {
        let (mut f, offs) = sample(false);
        f[offs[3] as usize + 2] ^= 1;
        let r = check_bytes(&f).expect("checks");
        // synced is HEADER_SIZE: even the first record is past it.
        assert!(r.is_healthy());
        assert_eq!(r.torn_tail.as_ref().map(|t| t.offset), Some(offs[3]));
        assert_eq!(r.records.total(), 3);
        // b's delete is torn: it is still live.
        assert_eq!(r.live_sessions, 2);
    }

    #[test]
    fn records_past_a_stale_committed_end_are_counted_up_to_a_gap() {
        let (mut f, offs) = sample(true);
        // The header as a power loss can leave it: committed (and synced)
        // at the second record, the last two records past it.
        f[H_COMMITTED..H_COMMITTED + 8]
            .copy_from_slice(&format::encode_offset(offs[2]).to_le_bytes());
        f[H_SYNCED..H_SYNCED + 8].copy_from_slice(&format::encode_offset(offs[2]).to_le_bytes());
        f.extend_from_slice(&[0u8; 4096]);
        let r = check_bytes(&f).expect("checks");
        assert_eq!(r.records_past_committed, 2);
        assert_eq!(
            (r.torn_bytes_past_committed, r.torn_tail.clone()),
            (0, None)
        );
        assert_eq!(r.records.total(), 2);
        // A gap: the third record never reached the disk; the fourth,
        // after it, is counted as torn bytes (the next open erases them).
        f[offs[2] as usize..offs[3] as usize].fill(0);
        let r = check_bytes(&f).expect("checks");
        assert_eq!(r.records_past_committed, 0);
        assert!(
            r.torn_bytes_past_committed > offs[3] - offs[2],
            "the fourth record is counted"
        );
        assert!(r.is_healthy());
    }

    #[test]
    fn a_short_file_is_reported_not_panicked() {
        let (f, offs) = sample(true);
        let r = check_bytes(&f[..offs[2] as usize + 10]).expect("checks");
        assert_eq!(r.corruption.len(), 1);
        assert_eq!(r.corruption[0].offset, offs[2]);
        let (f, _) = sample(false);
        let r = check_bytes(&f[..f.len() - 3]).expect("checks");
        assert!(r.torn_tail.is_some());
    }

    #[test]
    fn header_errors_match_open() {
        assert!(matches!(check_bytes(b""), Err(Error::NotAStore { .. })));
        assert!(matches!(
            check_bytes(b"hello world"),
            Err(Error::NotAStore { .. })
        ));
        let (f, _) = sample(true);
        assert!(matches!(check_bytes(&f[..100]), Err(Error::Corrupt { .. })));
        let mut v = f.clone();
        v[format::H_VERSION] = 9;
        let crc = crc32fast::hash(&v[..format::H_CRC]) ^ format::HEADER_CRC_XOR;
        v[format::H_CRC..format::H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_bytes(&v),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        let mut w = f.clone();
        w[H_COMMITTED] ^= 1;
        assert!(matches!(
            check_bytes(&w),
            Err(Error::Corrupt { offset, .. }) if offset == H_COMMITTED as u64
        ));
    }

    #[test]
    fn every_byte_flip_is_survived() {
        let (f, _) = sample(true);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.db");
        for i in (0..f.len()).step_by(7) {
            let mut g = f.clone();
            g[i] ^= 0x5A;
            std::fs::write(&p, &g).expect("write");
            let _ = check(&p);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Any body after a valid header, with any committed and synced
        /// words, is reported or refused, never a panic; and the byte
        /// accounting adds up.
        #[test]
        fn never_panics_on_any_body(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            committed in 0u64..5000,
            synced in 0u64..5000,
            records in 0usize..4,
        ) {
            let mut log = Vec::new();
            for i in 0..records {
                rec(&mut log, Kind::Put, format!("id{i}").as_bytes(), b"data");
            }
            log.extend_from_slice(&body);
            let mut f = header(HEADER_SIZE + committed, HEADER_SIZE + synced);
            f.extend_from_slice(&log);
            if let Ok(r) = check_bytes(&f) {
                let torn = r.torn_tail.as_ref().map_or(0, |t| t.len);
                proptest::prop_assert_eq!(
                    r.live_bytes + r.garbage_bytes + r.corrupt_bytes() + torn,
                    r.committed - HEADER_SIZE
                );
            }
        }
    }
}
