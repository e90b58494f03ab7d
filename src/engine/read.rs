//! The read path: decoding a record at an offset of the map, and finding a
//! session's latest record and data. Every record is checked (CRC, id,
//! kind) before anything of it is trusted.

use crate::clock::Expiry;
use crate::engine::file::{LogFile, View};
use crate::engine::format::{self, HEADER_SIZE, Kind, RecordRef};
use crate::engine::index::Index;
use crate::engine::state::State;
use crate::error::{Error, Result};
use crate::id::SessionId;

/// A session's latest record (a put, or a touch of one) and its put.
pub(crate) struct Latest<'a> {
    /// Offset of the latest record.
    pub offset: u64,
    /// The latest record: its version, modified and expires are current.
    pub rec: RecordRef<'a>,
    /// Offset of the put holding the data.
    pub put_offset: u64,
}

/// Finds and checks the latest record of `id` (valid, as for
/// [`latest_at`]) in `view`.
pub(crate) fn latest<'a>(index: &Index, view: &View<'a>, id: &[u8]) -> Result<Option<Latest<'a>>> {
    let Some(offset) = index.get(view, id) else {
        return Ok(None);
    };
    latest_at(view, offset, id).map(Some)
}

/// Checks that the record at `offset` of `view` (where an index found
/// `id`, a valid id: a `SessionId`'s or a checked record's) is a put or
/// touch of `id`, and returns it.
pub(crate) fn latest_at<'a>(view: &View<'a>, offset: u64, id: &[u8]) -> Result<Latest<'a>> {
    latest_of(view, offset, decode_at_of(view, offset, id)?, id)
}

/// [`latest_at`] for `rec`, the record already decoded and checked at
/// `offset` of `view`.
fn latest_of<'a>(
    view: &View<'a>,
    offset: u64,
    rec: RecordRef<'a>,
    id: &[u8],
) -> Result<Latest<'a>> {
    if rec.id != id || rec.kind == Kind::Delete {
        return Err(Error::corrupt(
            &view.file.path,
            offset,
            "the index points at another record",
        ));
    }
    let put_offset = rec.touch_target().unwrap_or(offset);
    if put_offset > offset || put_offset < HEADER_SIZE {
        return Err(Error::corrupt(
            &view.file.path,
            offset,
            "a touch points at no put",
        ));
    }
    Ok(Latest {
        offset,
        rec,
        put_offset,
    })
}

/// The latest record of `id` if the session is live at `now`.
pub(crate) fn live<'a>(
    st: &'a State,
    expiry: &Expiry,
    id: &SessionId,
    now: u64,
) -> Result<Option<Latest<'a>>> {
    Ok(latest(&st.index, &st.view(), id.as_bytes())?.filter(|l| {
        !expiry.expired(
            st.file.recorded_idle(),
            l.rec.modified_ms,
            l.rec.expires_ms,
            now,
        )
    }))
}

/// Decodes the record at `offset` of `view`, as a typed error if damaged.
pub(crate) fn decode_at<'a>(view: &View<'a>, offset: u64) -> Result<RecordRef<'a>> {
    let file: &'a LogFile = view.file;
    let bytes = view.tail(offset);
    warm(bytes);
    format::decode_record_salted(bytes, file.header.salt)
        .map_err(|e| Error::corrupt(&file.path, offset, e.to_string()))
}

/// [`decode_at`] for a record that should hold `id`, a validated id
/// (`format::decode_record_of`): the same checks and errors, without
/// checking the id's alphabet when the record holds `id`.
fn decode_at_of<'a>(view: &View<'a>, offset: u64, id: &[u8]) -> Result<RecordRef<'a>> {
    let file: &'a LogFile = view.file;
    let bytes = view.tail(offset);
    warm(bytes);
    format::decode_record_of(bytes, file.header.salt, id)
        .map_err(|e| Error::corrupt(&file.path, offset, e.to_string()))
}

/// Asks for every cache line of the record at the start of `bytes` at
/// once, so that the memory system fetches them together rather than one
/// after another as the CRC walks them. On x86-64 with prefetch
/// instructions, which retire without waiting for their line: plain loads
/// held the CPU's window of instructions in flight until each line came,
/// and the next request's work (its id, its slot) could not start under
/// them (about 5 % of a 1 KiB load, `benches/peers` hotpath). Elsewhere by
/// reading one byte of each line.
fn warm(bytes: &[u8]) {
    let Some(len) = format::peek_len(bytes) else {
        return;
    };
    let rec = &bytes[..len.min(bytes.len())];
    // Every 64-byte window of the record holds one of these points, so
    // every cache line inside it is asked for; the last byte covers the
    // line the record ends in, and the first line (the header) was read.
    // A plain loop: `step_by` cost half as much again in instructions.
    let mut i = 64;
    while i < rec.len() {
        ask_for_line(rec, i);
        i += 64;
    }
    if let Some(last) = rec.len().checked_sub(1) {
        ask_for_line(rec, last);
    }
}

/// Starts fetching the cache line of `rec[i]` (if there is one), without
/// waiting for it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ask_for_line(rec: &[u8], i: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    if let Some(b) = rec.get(i) {
        // SAFETY: the address is that of a byte of `rec`, taken from a
        // reference; a prefetch neither reads into the program nor faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(b).cast()) };
    }
}

/// Fetches the cache line of `rec[i]` (if there is one) by reading that
/// byte.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn ask_for_line(rec: &[u8], i: usize) {
    std::hint::black_box(rec.get(i).copied());
}

/// A session's put (checked to be the right one): its data and owner.
#[inline]
pub(crate) fn put_of<'a>(view: &View<'a>, l: &Latest<'a>) -> Result<RecordRef<'a>> {
    if l.put_offset == l.offset {
        return Ok(l.rec);
    }
    let put = decode_at(view, l.put_offset)?;
    if put.kind != Kind::Put || put.id != l.rec.id {
        return Err(Error::corrupt(
            &view.file.path,
            l.put_offset,
            "a touch points at another record",
        ));
    }
    Ok(put)
}

/// A session's latest record (with its put's owner) and its data, from the
/// index's `offset` in `view` (for compaction, which walks the index's
/// offsets).
pub(crate) fn session_at<'a>(view: &View<'a>, offset: u64) -> Result<(RecordRef<'a>, &'a [u8])> {
    let rec = decode_at(view, offset)?;
    let put_offset = rec.touch_target().unwrap_or(offset);
    let l = Latest {
        offset,
        rec,
        put_offset,
    };
    if rec.kind == Kind::Delete || put_offset > offset {
        return Err(Error::corrupt(
            &view.file.path,
            offset,
            "the index points at a bad record",
        ));
    }
    let put = put_of(view, &l)?;
    Ok((
        RecordRef {
            owner: put.owner,
            ..rec
        },
        put.data,
    ))
}

/// One live session of an owner, as `sessions_of` lists it.
pub(crate) struct Owned<'a> {
    /// Its latest record (version, times).
    pub latest: Latest<'a>,
    /// Its put (data, owner).
    pub put: RecordRef<'a>,
}

/// The live sessions of `owner` (non-empty) in `st` at `now`, every
/// record checked, in no order. Costs what the owner has (the owner index).
pub(crate) fn owned_live<'a>(
    st: &'a State,
    expiry: &Expiry,
    owner: &[u8],
    now: u64,
) -> Result<Vec<Owned<'a>>> {
    let view = st.view();
    let mut offsets = Vec::new();
    st.index.owned_by(&view, owner, &mut offsets);
    let mut out = Vec::with_capacity(offsets.len());
    for offset in offsets {
        // Decoded (and its CRC checked) once.
        let rec = decode_at(&view, offset)?;
        let latest = latest_of(&view, offset, rec, rec.id)?;
        if expiry.expired(
            st.file.recorded_idle(),
            latest.rec.modified_ms,
            latest.rec.expires_ms,
            now,
        ) {
            continue;
        }
        let put = put_of(&view, &latest)?;
        if put.owner == owner {
            out.push(Owned { latest, put });
        }
    }
    Ok(out)
}
