//! What repair reads from a damaged header: the static part as written,
//! mended when one bit of it flipped, or else rebuilt from what the
//! records say (every record's CRC carries the file's salt) and from the
//! hint (which names its file's generation, creation time and salt).
//!
//! Pure: bytes in, a header out. `compact::repair` reads the file and the
//! hint, and writes the new file.

use crate::engine::format::{
    self, H_COMMITTED, H_CRC, H_GENERATION, H_SALT, HEADER_SIZE, MAX_GENERATION, RECORD_ALIGN,
    StaticHeader,
};

/// How the header repair read the records with was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderFix {
    /// The static part checked out (the damage was elsewhere).
    Intact,
    /// One flipped bit, found by the header's CRC and put back.
    Mended,
    /// Rebuilt: the salt from the records, the generation and creation
    /// time from the hint when it names a file of that salt, else from
    /// what the damaged header holds (or 1).
    Rebuilt {
        /// The hint confirmed the salt and gave the generation.
        from_hint: bool,
    },
}

impl HeaderFix {
    /// For the recovery report: what was done, or `None` if nothing.
    pub fn describe(self) -> Option<&'static str> {
        match self {
            HeaderFix::Intact => None,
            HeaderFix::Mended => {
                Some("one flipped bit of the header was found by its checksum and put back")
            }
            HeaderFix::Rebuilt { from_hint: true } => Some(
                "the header was rebuilt: the salt from the records' checksums, the generation from the hint",
            ),
            HeaderFix::Rebuilt { from_hint: false } => Some(
                "the header was rebuilt: the salt from the records' checksums, the generation from the damaged header (1 where it holds none in range)",
            ),
        }
    }
}

/// A damaged log's header as repair will use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Salvaged {
    /// The static part (its salt verifies the records).
    pub header: StaticHeader,
    /// The committed word, if it is on disk and intact.
    pub committed: Option<u64>,
    pub fix: HeaderFix,
}

/// How far into the records repair looks for a record to take the salt
/// from, when the header lost it (the first record is at the start unless
/// it is damaged too).
const SALT_SCAN: usize = 4 << 20;
/// At most this many different salts are tried.
const SALT_CANDIDATES: usize = 64;

/// Reads the header of a damaged log: `head` is the file's first bytes
/// (up to `HEADER_SIZE`, fewer if the file is shorter), `records` the
/// bytes from `HEADER_SIZE` on, `hint` the identity (generation, creation
/// time, salt) of the hint beside it, if one could be read.
pub(crate) fn header(head: &[u8], records: &[u8], hint: Option<(u64, u64, u32)>) -> Salvaged {
    let committed = (head.len() >= H_COMMITTED + 8)
        .then(|| format::decode_offset(word(head, H_COMMITTED)))
        .flatten()
        .filter(|&c| c >= HEADER_SIZE);
    let salted = |fix, header| Salvaged {
        header,
        committed,
        fix,
    };
    if let Ok(h) = format::decode_static_header(head) {
        return salted(HeaderFix::Intact, h);
    }
    let found = record_salt(records, hint.map(|h| h.2), field_salt(head));
    if let Some(h) = format::mend_static_header(head)
        && found.is_none_or(|s| s == h.salt)
    {
        return salted(HeaderFix::Mended, h);
    }
    let salt = found
        .or(hint.map(|h| h.2))
        .or(field_salt(head))
        .unwrap_or(0);
    let (generation, created_ms, from_hint) = match hint {
        Some((g, c, s)) if s == salt && (1..=MAX_GENERATION).contains(&g) => (g, c, true),
        _ => {
            let g = (head.len() >= H_GENERATION + 8)
                .then(|| word(head, H_GENERATION))
                .filter(|g| (1..=MAX_GENERATION).contains(g))
                .unwrap_or(1);
            (g, 0, false)
        }
    };
    salted(
        HeaderFix::Rebuilt { from_hint },
        StaticHeader {
            version: format::FORMAT_VERSION,
            generation,
            created_ms,
            compact_kept: 0,
            compact_dropped: 0,
            compact_source_bytes: 0,
            compact_result_bytes: 0,
            salt,
        },
    )
}

/// The salt field of a damaged header, if the file reaches it.
fn field_salt(head: &[u8]) -> Option<u32> {
    let b = head.get(H_SALT..H_CRC)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn word(head: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&head[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The salt the records were written with, `None` if no record is found.
///
/// Every 8-byte step that holds a well-formed record offers the salt that
/// makes its CRC check out (any one record, damaged or not, offers one),
/// and the salt under which the longest run of records follows wins; a
/// salt the hint or the damaged header also names wins a tie, then the
/// earliest. Record-shaped bytes inside session data offer a salt too, but
/// their run ends inside that session, while the file's own runs on.
fn record_salt(records: &[u8], hint: Option<u32>, field: Option<u32>) -> Option<u32> {
    let mut best: Option<(u64, bool, u32)> = None;
    let mut tried: Vec<u32> = Vec::new();
    let mut at = 0usize;
    while at < records.len().min(SALT_SCAN) && tried.len() < SALT_CANDIDATES {
        if let Some((salt, _)) = format::salt_of_record(&records[at..])
            && !tried.contains(&salt)
        {
            tried.push(salt);
            let run = run_from(records, at, salt);
            let named = Some(salt) == hint || Some(salt) == field;
            if best.is_none_or(|(r, n, _)| (run, named) > (r, n)) {
                best = Some((run, named, salt));
            }
        }
        at += RECORD_ALIGN;
    }
    best.map(|(_, _, salt)| salt)
}

/// How many records in a row decode with `salt` from `at`.
fn run_from(records: &[u8], mut at: usize, salt: u32) -> u64 {
    let mut n = 0;
    while let Some(rest) = records.get(at..)
        && let Ok(r) = format::decode_record_salted(rest, salt)
    {
        n += 1;
        at += r.padded_len;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::{
        H_SHARED_END, H_STATIC_END, Kind, RecordFields, encode_header, encode_record_salted,
    };

    const SALT: u32 = 0x0BAD_CAFE;

    fn h() -> StaticHeader {
        StaticHeader {
            version: format::FORMAT_VERSION,
            generation: 9,
            created_ms: 77,
            compact_kept: 1,
            compact_dropped: 2,
            compact_source_bytes: 3,
            compact_result_bytes: 4,
            salt: SALT,
        }
    }

    fn records(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            encode_record_salted(
                &mut out,
                &RecordFields {
                    owner: &[],
                    kind: Kind::Put,
                    id: format!("s{i}").as_bytes(),
                    data: b"data",
                    version: 1,
                    modified_ms: 5,
                    expires_ms: 0,
                },
                SALT,
            );
        }
        out
    }

    #[test]
    fn an_intact_static_part_is_used_as_is() {
        let head = encode_header(&h(), HEADER_SIZE + 64);
        let s = header(&head, &records(2), None);
        assert_eq!(
            (s.header, s.committed, s.fix),
            (h(), Some(HEADER_SIZE + 64), HeaderFix::Intact)
        );
    }

    #[test]
    fn a_flipped_bit_is_mended_and_garbage_rebuilt_from_records_and_hint() {
        let recs = records(3);
        let mut head = encode_header(&h(), HEADER_SIZE);
        head[H_GENERATION + 2] ^= 0x10;
        let s = header(&head, &recs, None);
        assert_eq!((s.header, s.fix), (h(), HeaderFix::Mended));
        // The whole static part overwritten: the salt from the records,
        // the generation from the hint that names that salt.
        head[..H_STATIC_END].fill(0xEE);
        let s = header(&head, &recs, Some((9, 77, SALT)));
        assert_eq!(s.header.salt, SALT);
        assert_eq!(s.header.generation, 9);
        assert_eq!(s.fix, HeaderFix::Rebuilt { from_hint: true });
        // A hint of another file (another salt) is not believed.
        let s = header(&head, &recs, Some((40, 77, 1)));
        assert_eq!((s.header.salt, s.header.generation), (SALT, 1));
        // The first record damaged too: the salt of the run that follows.
        let mut recs2 = recs.clone();
        recs2[0] ^= 0xFF;
        let s = header(&head, &recs2, None);
        assert_eq!(s.header.salt, SALT);
    }

    #[test]
    fn a_file_cut_inside_the_header_gives_what_it_still_holds() {
        let full = encode_header(&h(), HEADER_SIZE);
        for cut in 0..H_SHARED_END {
            let s = header(&full[..cut], &[], None);
            if cut >= H_STATIC_END {
                assert_eq!((s.header, s.fix), (h(), HeaderFix::Intact), "cut {cut}");
            } else {
                let g = if cut >= H_GENERATION + 8 { 9 } else { 1 };
                assert_eq!(s.header.generation, g, "cut {cut}");
            }
            let committed = (cut >= H_COMMITTED + 8).then_some(HEADER_SIZE);
            assert_eq!(s.committed, committed, "cut {cut}");
        }
    }
}
