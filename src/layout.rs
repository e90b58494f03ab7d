//! Every on-disk byte layout of the crate, in one place: the log file's
//! header page, a record, the hint file, the lock file and a `DirStore`
//! session file. Only constants live here, and compile-time checks of
//! them; the code that encodes and decodes each layout stays beside its
//! user (`engine::format`, `record`, `engine::hint`, `engine::lock`,
//! `dir::file`) and takes every offset and size from here. DESIGN.md §2
//! describes the same layouts for people.
//!
//! One naming convention throughout:
//! - the offset of a field is `<T>_<FIELD>`, where the tag `T` names the
//!   layout: `H` the log's header, `R` a record, `I` the hint (the log's
//!   index snapshot), `L` the lock file, `F` a session file;
//! - each offset is the previous one plus the previous field's size, so
//!   that a field's size is written once; a field placed at a fixed
//!   offset instead (a cache line, an aligned mutex) says why, and
//!   `const _` asserts pin the totals and keep the parts apart;
//! - the other constants of a layout (magic, version, sizes, the values
//!   XORed into its checksums, flags) carry the layout's name, `HINT_`,
//!   `LOCK_`, `DIR_`, `RECORD_`; the log's own, the crate's first format,
//!   carry none (`MAGIC`, `FORMAT_VERSION`, `HEADER_SIZE`).
//!
//! All integers are little-endian.

/// The log file (`<log>`): a header page, then records.
///
/// ```text
/// file    := header (HEADER_SIZE bytes) record* unused-space
/// header  := static part (H_MAGIC..H_STATIC_END = 72 bytes, CRC-protected)
///            + the store's policy (H_POLICY..H_POLICY_END, its own CRC)
///            + shared words (atomic, H_COMMITTED..H_SHARED_END: committed,
///              synced, superseded, pending)
/// ```
pub mod log {
    /// First bytes of every log file. The high-bit byte catches 7-bit
    /// transfers; CR LF catches line-ending conversion; 0x1A stops `type`.
    pub const MAGIC: [u8; 8] = [0x89, b'S', b'L', b'O', b'G', b'\r', b'\n', 0x1A];
    /// The format version this build writes: 2, whose put records may
    /// carry the session's owner (`R_OWNER_LEN`).
    pub const FORMAT_VERSION: u32 = 2;
    /// The oldest format version this build reads: 1, whose records are
    /// version-2 records without owners. Appends to a version-1 file never
    /// carry an owner (an older build would take the owner length for
    /// damaged reserved bytes): a save with an owner first compacts the
    /// file, which rewrites it as version 2.
    pub const MIN_FORMAT_VERSION: u32 = 1;
    /// Bytes reserved for the header; records start here. One page, so the
    /// shared words never share a page with record data.
    pub const HEADER_SIZE: u64 = 4096;

    // ---- static header fields, written once when the file is created ----
    /// Offset of the magic.
    pub const H_MAGIC: usize = 0;
    /// Offset of the format version (u32).
    pub const H_VERSION: usize = H_MAGIC + MAGIC.len();
    /// Offset of the header size (u32), equal to `HEADER_SIZE`.
    pub const H_HEADER_SIZE: usize = H_VERSION + 4;
    /// Offset of the generation (u64): 1 for a new store, +1 per compaction.
    pub const H_GENERATION: usize = H_HEADER_SIZE + 4;
    /// Offset of the creation time of this file (u64 ms since the epoch).
    pub const H_CREATED: usize = H_GENERATION + 8;
    /// Offset of the number of sessions the compaction that wrote this file
    /// kept (u64).
    pub const H_COMPACT_KEPT: usize = H_CREATED + 8;
    /// Offset of the number of sessions that compaction dropped (u64).
    pub const H_COMPACT_DROPPED: usize = H_COMPACT_KEPT + 8;
    /// Offset of the committed length of the file that compaction replaced
    /// (u64).
    pub const H_COMPACT_SOURCE_BYTES: usize = H_COMPACT_DROPPED + 8;
    /// Offset of this file's committed length when that compaction finished
    /// (u64).
    pub const H_COMPACT_RESULT_BYTES: usize = H_COMPACT_SOURCE_BYTES + 8;
    /// Offset of the file's salt (u32): a random number drawn when the file
    /// is written, XORed into every record CRC of this file. Record-shaped
    /// bytes that did not come from this file (inside session data, or left
    /// over from another file) fail their check, so a rescan cannot be
    /// fooled.
    pub const H_SALT: usize = H_COMPACT_RESULT_BYTES + 8;
    /// Offset of the CRC32 of bytes `[0, H_CRC)`, XORed with
    /// `HEADER_CRC_XOR` (u32).
    pub const H_CRC: usize = H_SALT + 4;
    /// End of the static part.
    pub const H_STATIC_END: usize = H_CRC + 4;
    /// XORed into the header CRC so that a zeroed header never checks out.
    pub const HEADER_CRC_XOR: u32 = 0x5E55_10C0;

    // ---- the store's policy, written with the static part (zero in files
    // of earlier builds, which ignore these bytes) ----
    /// Offset of the policy's idle limit (u64 ms, 0 for none).
    pub const H_POLICY: usize = H_STATIC_END;
    /// Offset of the policy's session quota (u64, 0 for none).
    pub const H_POLICY_SESSIONS: usize = H_POLICY + 8;
    /// Offset of the policy's byte quota (u64, 0 for none).
    pub const H_POLICY_BYTES: usize = H_POLICY_SESSIONS + 8;
    /// Offset of the policy's flags (u32: `POLICY_RECORDED`,
    /// `POLICY_EVICT`).
    pub const H_POLICY_FLAGS: usize = H_POLICY_BYTES + 8;
    /// Offset of the policy's CRC: CRC32 of `[H_POLICY, H_POLICY_CRC)`,
    /// XORed with `POLICY_CRC_XOR` (u32).
    pub const H_POLICY_CRC: usize = H_POLICY_FLAGS + 4;
    /// End of the policy.
    pub const H_POLICY_END: usize = H_POLICY_CRC + 4;
    /// XORed into the policy's CRC, so that zeros (no policy) never check
    /// out.
    pub const POLICY_CRC_XOR: u32 = 0x504F_4C59;
    /// Policy flag: set in every recorded policy (so one is never all
    /// zeros).
    pub const POLICY_RECORDED: u32 = 1;
    /// Policy flag: a save over the quota evicts the oldest sessions
    /// instead of being refused.
    pub const POLICY_EVICT: u32 = 2;

    // ---- shared words (u64 each), updated in place through the shared
    // mapping ----
    /// Offset of the committed word: end of the last complete record. Not
    /// chained: the shared words start a cache line of their own, apart
    /// from the static part that every load does not need.
    pub const H_COMMITTED: usize = 128;
    /// Offset of the synced word: everything before it is on stable
    /// storage.
    pub const H_SYNCED: usize = H_COMMITTED + 8;
    /// Offset of the superseded word: `SUPERSEDED` once a compaction has
    /// replaced this file, 0 before.
    pub const H_SUPERSEDED: usize = H_SYNCED + 8;
    /// Offset of the pending word: while a compaction runs, the identity of
    /// the file that will replace this one, once its hint is written (so
    /// that other processes can read the hint before the swap); 0 before.
    /// Only an invitation to read ahead: a reader checks the hint against
    /// the new file when it moves to it, so any value is harmless. Version
    /// 1 files written before this word existed hold 0 here (the bytes
    /// were reserved).
    pub const H_PENDING: usize = H_SUPERSEDED + 8;
    /// End of the shared words.
    pub const H_SHARED_END: usize = H_PENDING + 8;
    /// Value of the superseded word once the file has been replaced.
    pub const SUPERSEDED: u64 = u64::from_le_bytes(*b"SUPERSED");

    const _: () = assert!(H_STATIC_END == 72);
    const _: () = assert!(H_POLICY_END <= H_COMMITTED);
    const _: () = assert!(H_COMMITTED.is_multiple_of(64));
    const _: () = assert!(H_SHARED_END as u64 <= HEADER_SIZE);
}

/// A record: one session change, in the log (its CRC salted with the
/// file's salt) and in a `DirStore` session file (unsalted).
///
/// ```text
/// record := record header (RECORD_HEADER = 40 bytes), id, owner, data,
///           zero padding to RECORD_ALIGN
/// ```
pub mod record {
    /// Offset of the record CRC (u32): CRC32 of bytes `[R_DATA_LEN,
    /// unpadded length)`, XORed with `RECORD_CRC_XOR` and the file's salt.
    pub const R_CRC: usize = 0;
    /// Offset of the data length (u32).
    pub const R_DATA_LEN: usize = R_CRC + 4;
    /// Offset of the kind byte (1 put, 2 touch, 3 delete).
    pub const R_KIND: usize = R_DATA_LEN + 4;
    /// Offset of the id length byte (1 to 128).
    pub const R_ID_LEN: usize = R_KIND + 1;
    /// Offset of the owner length byte (0 for none, else 1 to 255):
    /// reserved and zero in format version 1, which had no owners, so that
    /// a version-1 record is a version-2 record without an owner.
    pub const R_OWNER_LEN: usize = R_ID_LEN + 1;
    /// Offset of five reserved bytes, zero.
    pub const R_RESERVED: usize = R_OWNER_LEN + 1;
    /// Offset of the session version (u64).
    pub const R_VERSION: usize = R_RESERVED + 5;
    /// Offset of the modification time (u64 ms since the epoch).
    pub const R_MODIFIED: usize = R_VERSION + 8;
    /// Offset of the deadline (u64 ms since the epoch, 0 for none).
    pub const R_EXPIRES: usize = R_MODIFIED + 8;
    /// Size of the record header; the id follows, then the owner, then the
    /// data.
    pub const RECORD_HEADER: usize = R_EXPIRES + 8;
    /// Records start at multiples of this.
    pub const RECORD_ALIGN: usize = 8;
    /// XORed into record CRCs so that a run of zeros never checks out.
    pub const RECORD_CRC_XOR: u32 = 0xA5E5_5105;
    /// Data length of a `Touch` record: the offset (u64) of the `Put`
    /// record whose session it refreshes, so that an index entry pointing
    /// at a touch still reaches the data.
    pub const TOUCH_DATA_LEN: usize = 8;

    const _: () = assert!(R_VERSION == 16 && RECORD_HEADER == 40);
    const _: () = assert!(RECORD_HEADER.is_multiple_of(RECORD_ALIGN));
}

/// The hint file (`<log>.hint`): a snapshot of a log file's index.
///
/// ```text
/// hint := head (HINT_HEAD = 80 bytes) slot* crc (u32) zero (u32)
/// slot := hash (u64) offset (u64), offset 0 for an empty slot
/// ```
pub mod hint {
    /// First bytes of a hint file.
    pub const HINT_MAGIC: [u8; 8] = [0x89, b'S', b'L', b'H', b'I', b'N', b'T', b'\n'];
    /// The hint format this build reads and writes.
    pub const HINT_VERSION: u32 = 1;
    /// XORed into the CRC so that a zeroed file never checks out.
    pub const HINT_CRC_XOR: u32 = 0x4849_4E54;
    /// Flag: some sessions of the file have owners. The hint does not hold
    /// the owner index: a reader rebuilds it from the records (one look at
    /// each session's record). Builds that read format version 1 only
    /// refuse such a hint, as they refuse the version-2 log it describes.
    pub const HINT_FLAG_OWNERS: u32 = 1;

    /// Offset of the magic.
    pub const I_MAGIC: usize = 0;
    /// Offset of the hint's version (u32).
    pub const I_VERSION: usize = I_MAGIC + HINT_MAGIC.len();
    /// Offset of the flags (u32: `HINT_FLAG_OWNERS`).
    pub const I_FLAGS: usize = I_VERSION + 4;
    /// Offset of the generation of the log file described (u64).
    pub const I_GENERATION: usize = I_FLAGS + 4;
    /// Offset of that file's creation time (u64 ms since the epoch).
    pub const I_CREATED: usize = I_GENERATION + 8;
    /// Offset of that file's salt (u32).
    pub const I_SALT: usize = I_CREATED + 8;
    /// Offset of four reserved bytes, zero.
    pub const I_RESERVED: usize = I_SALT + 4;
    /// Offset of the end of the log (u64) up to which the hint reflects it.
    pub const I_LOG_END: usize = I_RESERVED + 4;
    /// Offset of the index's hash seed (u64).
    pub const I_SEED: usize = I_LOG_END + 8;
    /// Offset of the index's session count (u64).
    pub const I_LEN: usize = I_SEED + 8;
    /// Offset of the index's live bytes (u64).
    pub const I_LIVE: usize = I_LEN + 8;
    /// Offset of the slot count (u64).
    pub const I_SLOTS: usize = I_LIVE + 8;
    /// Bytes before the slots.
    pub const HINT_HEAD: usize = I_SLOTS + 8;
    /// Bytes of a slot: the id's hash (u64), then the offset of its latest
    /// record (u64).
    pub const HINT_SLOT: usize = 16;
    /// Bytes after the slots: the CRC (u32) of everything before it, XORed
    /// with `HINT_CRC_XOR`, and 4 zero bytes.
    pub const HINT_TAIL: usize = 8;

    const _: () = assert!(HINT_HEAD == 80);
}

/// The lock file (`<log>.lock`): one page, mapped shared by every process
/// that has the store open.
///
/// ```text
/// lock := magic (8) version (u32) reserved (4) mutex layout (20)
///         .. mutex (at L_MUTEX) .. status (at L_STATUS) .. to LOCK_FILE_SIZE
/// ```
pub mod lock {
    /// Bytes of the lock file: one page.
    pub const LOCK_FILE_SIZE: u64 = 4096;
    /// The lock file's first bytes.
    pub const LOCK_MAGIC: [u8; 8] = *b"SLOGLOCK";
    /// The lock protocol. A process finding another value refuses the
    /// store: two protocols cannot share one. Version 2 records who wrote
    /// the mutex (`L_MUTEX_LAYOUT`).
    pub const LOCK_VERSION: u32 = 2;

    /// Offset of the magic.
    pub const L_MAGIC: usize = 0;
    /// Offset of the lock protocol's version (u32).
    pub const L_VERSION: usize = L_MAGIC + LOCK_MAGIC.len();
    /// Offset of four reserved bytes, zero.
    pub const L_RESERVED: usize = L_VERSION + 4;
    /// Offset of the mutex layout record: the C library's name
    /// (`LOCK_LIBC_NAME` bytes, zero-padded), then
    /// `size_of::<pthread_mutex_t>()` (u32). A process built against
    /// another C library, or another layout, refuses the store rather than
    /// share a mutex it cannot read.
    pub const L_MUTEX_LAYOUT: usize = L_RESERVED + 4;
    /// Bytes of the C library's name in the layout record.
    pub const LOCK_LIBC_NAME: usize = 16;
    /// Bytes of the mutex layout record.
    pub const LOCK_MUTEX_LAYOUT: usize = LOCK_LIBC_NAME + 4;
    /// End of the head (magic, version, layout record).
    pub const L_HEAD_END: usize = L_MUTEX_LAYOUT + LOCK_MUTEX_LAYOUT;
    /// Offset of the process-shared robust mutex (the writer lock). Not
    /// chained: 64-byte aligned, its size is the C library's (`lock.rs`
    /// checks that it ends before `L_STATUS`).
    pub const L_MUTEX: usize = 64;
    /// Offset of the last background failure of any process on the store
    /// (for `stats` and `sessionlog stats`): its time (u64 ms, 0 for none,
    /// written last). Not chained: past any C library's mutex.
    pub const L_STATUS: usize = 512;
    /// Offset of the status message's length (u32).
    pub const L_STATUS_LEN: usize = L_STATUS + 8;
    /// Offset of the status message (UTF-8, at most `LOCK_STATUS_MESSAGE`
    /// bytes).
    pub const L_STATUS_MESSAGE: usize = L_STATUS_LEN + 4;
    /// Most bytes of the status message.
    pub const LOCK_STATUS_MESSAGE: usize = 480;

    /// Offsets of the shared flush's robust mutexes (DESIGN.md §6, group
    /// commit across processes), each held by a process that flushes for
    /// every durable save waiting (a *flush turn*). Not chained: 64-byte
    /// aligned, their size is the C library's (`lock.rs` checks that each
    /// ends before what follows it). `lock.rs`'s `FLUSH_TURNS` of them are
    /// used; every one is initialised.
    pub const L_FLUSH_MUTEXES: [usize; 2] = [1024, 1152];
    /// Offset of `LOCK_FLUSH_MAGIC`, written once the first opener
    /// initialised the flush turns. A page written by an earlier build
    /// holds zeros here: its processes flush each for itself, and so do
    /// this build's on that page. Not chained: past the first turn's
    /// mutex.
    pub const L_FLUSH_MAGIC: usize = 1088;
    /// What `L_FLUSH_MAGIC` holds once the flush turns are set up.
    pub const LOCK_FLUSH_MAGIC: [u8; 8] = *b"SLOGFLSH";
    /// Offset of a futex word (u32) that every flush turn's end
    /// increments: processes waiting for another's flush sleep on it.
    pub const L_FLUSH_SEQ: usize = L_FLUSH_MAGIC + LOCK_FLUSH_MAGIC.len();
    /// Offset of the count (u32) of durable writers of every process
    /// between entering a write and finishing its append: an elected
    /// flusher gives them a moment to join its flush.
    pub const L_FLUSH_WRITERS: usize = L_FLUSH_SEQ + 4;
    /// End of the flush words.
    pub const L_FLUSH_END: usize = L_FLUSH_WRITERS + 4;

    const _: () = assert!(L_HEAD_END <= L_MUTEX && L_MUTEX.is_multiple_of(64));
    const _: () = assert!(L_STATUS.is_multiple_of(8));
    const _: () = assert!(L_STATUS_MESSAGE + LOCK_STATUS_MESSAGE <= LOCK_FILE_SIZE as usize);
    const _: () = assert!(L_STATUS_MESSAGE + LOCK_STATUS_MESSAGE <= L_FLUSH_MUTEXES[0]);
    const _: () = assert!(L_FLUSH_MUTEXES[0].is_multiple_of(64));
    const _: () = assert!(L_FLUSH_MUTEXES[1].is_multiple_of(64));
    const _: () = assert!(L_FLUSH_END <= L_FLUSH_MUTEXES[1]);
    const _: () = assert!(L_FLUSH_MUTEXES[1] < LOCK_FILE_SIZE as usize);
    const _: () = assert!(L_FLUSH_SEQ.is_multiple_of(4));
}

/// A `DirStore` session file (`h-<digest>`): a file header, then exactly
/// one put record (the log's record, unsalted).
///
/// ```text
/// session file := file header (DIR_HEADER = 16 bytes) + one Put record
/// file header  := magic (8) | format version (u32) | reserved (4, zero)
/// ```
pub mod dir {
    /// First bytes of every session file: distinct from the log's magic;
    /// the high-bit byte catches 7-bit transfers, CR LF line-ending
    /// conversion.
    pub const DIR_MAGIC: [u8; 8] = [0x89, b'S', b'L', b'D', b'I', b'R', b'\r', b'\n'];
    /// The newest session file version this build reads and writes: 2, a
    /// file whose record carries the session's owner. A session without an
    /// owner is written as version 1 (`DIR_PLAIN_VERSION`: identical but
    /// for the version field), which older builds read.
    pub const DIR_VERSION: u32 = 2;
    /// The version of a file whose session has no owner.
    pub const DIR_PLAIN_VERSION: u32 = 1;

    /// Offset of the magic.
    pub const F_MAGIC: usize = 0;
    /// Offset of the format version (u32).
    pub const F_VERSION: usize = F_MAGIC + DIR_MAGIC.len();
    /// Offset of four reserved bytes, zero.
    pub const F_RESERVED: usize = F_VERSION + 4;
    /// Size of the file header; the record starts here.
    pub const DIR_HEADER: usize = F_RESERVED + 4;

    const _: () = assert!(DIR_HEADER == 16);
}
