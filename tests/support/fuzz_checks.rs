//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` and
//! `tests/fuzz_regressions.rs` so that a saved crash input replays the
//! same check under plain `cargo test`. Each check panics on a failure.

use std::path::PathBuf;

use arbitrary::{Result, Unstructured};
use sessionlog::internals::format::{
    DecodeError, Kind, RECORD_HEADER, RecordFields, decode_record, encode_record,
};
use sessionlog::{LogStore, ManualClock, Session, SessionId, SessionStore, SyncPolicy};

use crate::model::{self, Backend, Config, Crash, Damage, Op, VersionPick};

/// A scratch directory, in memory when the machine has `/dev/shm`.
pub fn scratch() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(&shm)
    {
        return d;
    }
    tempfile::tempdir().expect("temporary directory")
}

const ID_BYTES: &[u8] = b"ABCXYZabcxyz0189-_,";

fn id_bytes(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(1..=sessionlog::MAX_ID_LEN)?;
    (0..len)
        .map(|_| Ok(ID_BYTES[u.choose_index(ID_BYTES.len())?]))
        .collect()
}

/// `record`: arbitrary bytes never make the decoder panic, and whatever
/// it accepts re-encodes to the same bytes; then a structured record
/// round-trips, every prefix of it is `Truncated`, and a flipped byte
/// before the padding is rejected.
pub fn record(data: &[u8]) {
    if let Ok(r) = decode_record(data) {
        let mut again = Vec::new();
        let n = encode_record(&mut again, &fields(&r));
        assert_eq!(n, r.padded_len, "padded length");
        let unpadded = RECORD_HEADER + r.id.len() + r.owner.len() + r.data.len();
        assert_eq!(&again[..unpadded], &data[..unpadded], "re-encoding differs");
    }
    let mut u = Unstructured::new(data);
    let _ = structured(&mut u);
}

/// Fuzz target `hint`: arbitrary bytes into the hint decoder, which must
/// not panic, and must accept only what re-encodes to the same bytes (a
/// table it rebuilt from anything else could send a lookup astray).
pub fn hint(data: &[u8]) {
    if let Some(same) = sessionlog::internals::hint::check_round_trip(data) {
        assert!(same, "an accepted hint does not re-encode to its bytes");
    }
}

/// Fuzz target `envelope`: arbitrary bytes as an encrypted session's
/// stored data. The decoder must not panic and must accept only what
/// re-seals to the same bytes; a load through `Encrypted` gives the data
/// only for an authentic envelope, and otherwise one of the two typed
/// errors, never garbage.
pub fn envelope(data: &[u8]) {
    use sessionlog::{Encrypted, Error, Keyring, MemoryStore, Session, SessionId, SessionStore};
    sessionlog::internals::envelope::check_round_trip(data);
    let keys = Keyring::new("k1", [1; 32]).expect("keys");
    // Half the inputs with plaintext accepted, half without.
    let accept = data.len().is_multiple_of(2);
    let store = Encrypted::new(MemoryStore::new(), keys).accept_plaintext(accept);
    let id = SessionId::new("sid").expect("id");
    store
        .inner()
        .save_session(&mut Session::new(id.clone(), data.to_vec()))
        .expect("plant");
    match store.load_session(&id) {
        Ok(Some(s)) => {
            let sealed = Encrypted::<()>::key_id_of(data).ok().flatten().is_some();
            assert!(sealed || accept, "plaintext returned while refused");
            assert!(sealed || s.data == data, "plaintext changed");
        }
        Ok(None) => panic!("a planted session is live"),
        Err(Error::Undecryptable { .. } | Error::KeyMissing { .. }) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn fields<'a>(r: &sessionlog::internals::format::RecordRef<'a>) -> RecordFields<'a> {
    RecordFields {
        kind: r.kind,
        id: r.id,
        data: r.data,
        version: r.version,
        modified_ms: r.modified_ms,
        expires_ms: r.expires_ms,
        owner: r.owner,
    }
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let kind = *u.choose(&[Kind::Put, Kind::Touch, Kind::Delete])?;
    let id = id_bytes(u)?;
    let data: Vec<u8> = match kind {
        Kind::Put => u.arbitrary()?,
        // A touch carries the offset of the put it refreshes.
        Kind::Touch => u.arbitrary::<u64>()?.to_le_bytes().to_vec(),
        Kind::Delete => Vec::new(),
    };
    let f = RecordFields {
        kind,
        id: &id,
        data: &data,
        version: u.arbitrary()?,
        modified_ms: u.arbitrary()?,
        expires_ms: u.arbitrary()?,
        owner: &[],
    };
    let mut buf = Vec::new();
    let n = encode_record(&mut buf, &f);
    assert_eq!(n, buf.len());
    assert_eq!(n % 8, 0, "records are 8-byte aligned");
    match decode_record(&buf) {
        Ok(r) => {
            assert_eq!(
                (r.kind, r.id, r.data, r.version, r.modified_ms, r.expires_ms),
                (f.kind, f.id, f.data, f.version, f.modified_ms, f.expires_ms)
            );
            assert_eq!(r.padded_len, n);
        }
        Err(e) => panic!("valid record rejected: {e}"),
    }
    let cut = u.int_in_range(0..=n - 1)?;
    assert_eq!(decode_record(&buf[..cut]), Err(DecodeError::Truncated));
    let unpadded = RECORD_HEADER + id.len() + data.len();
    let at = u.int_in_range(0..=unpadded - 1)?;
    let x = u.int_in_range(1..=255u8)?;
    buf[at] ^= x;
    assert!(
        decode_record(&buf).is_err(),
        "damage at byte {at} (xor {x:#x}) went unnoticed"
    );
    Ok(())
}

/// `open`: arbitrary bytes as a log file. Opening returns a store or a
/// typed error; an opened store answers every read, one save and a
/// compaction with values or typed errors, never a panic.
pub fn open(data: &[u8]) {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("sessions.db");
    std::fs::write(&path, file).expect("write store file");
    // The mode a store's files have: the input, not the mode, is fuzzed.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod store file");
    let clock = ManualClock::fixed();
    let mut o = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .clock(clock.clone())
        .repair(flags & 1 != 0);
    if flags & 2 != 0 {
        o = o.max_idle(std::time::Duration::from_secs(60));
    }
    let Ok(store) = o.open(&path) else {
        return;
    };
    let Ok(iter) = store.iter_sessions() else {
        return;
    };
    let sessions: Vec<Session> = iter.filter_map(|s| s.ok()).collect();
    for s in &sessions {
        if let Ok(loaded) = store.load_session(&s.id) {
            assert_eq!(loaded.as_ref(), Some(s), "iter and load disagree");
        }
        if let Ok(has) = store.has_session(&s.id) {
            assert!(has, "iter returned {} but has_session is false", s.id);
        }
    }
    let _ = store.stats();
    let mut s = Session::new(SessionId::new("fuzz").expect("valid id"), b"x".to_vec());
    if store.save_session(&mut s).is_ok()
        && let Ok(loaded) = store.load_session(&s.id)
    {
        assert_eq!(loaded, Some(s), "a save right after opening");
    }
    let _ = store.compact();
    if let Ok(iter) = store.iter_sessions() {
        for s in iter.flatten() {
            let _ = store.load_session(&s.id);
        }
    }
}

/// `ops`: an operation sequence against the model, as `tests/model.rs`
/// runs it, including reopen and crash.
pub fn ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((cfg, ops)) = case(&mut u) else {
        return;
    };
    let dir = scratch();
    if let Err(e) = model::run(cfg, &ops, dir.path()) {
        panic!("{cfg:?}\n{ops:#?}\n{e}");
    }
}

fn case(u: &mut Unstructured<'_>) -> Result<(Config, Vec<Op>)> {
    let backend = *u.choose(&[
        Backend::Memory,
        Backend::Dir,
        Backend::Log(SyncPolicy::Never),
        Backend::Log(SyncPolicy::Never),
        Backend::Log(SyncPolicy::Always),
    ])?;
    let max_idle_ms = if u.arbitrary()? { Some(1000) } else { None };
    let mut ops = Vec::new();
    while ops.len() < 64 && !u.is_empty() {
        ops.push(op(u)?);
    }
    Ok((
        Config {
            backend,
            max_idle_ms,
            // Plain: an extra draw would change what the stored
            // regression inputs decode to (the model test covers
            // `Encrypted`).
            encrypted: false,
        },
        ops,
    ))
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    let id = |u: &mut Unstructured<'_>| u.int_in_range(0..=model::IDS - 1);
    let data = |u: &mut Unstructured<'_>| -> Result<Vec<u8>> {
        let len = u.int_in_range(0..=model::MAX_SIZE + 2)?;
        Ok(u.bytes(len)?.to_vec())
    };
    let expires = |u: &mut Unstructured<'_>| -> Result<Option<u16>> {
        Ok(if u.ratio(1, 3)? {
            Some(u.int_in_range(0..=3000)?)
        } else {
            None
        })
    };
    Ok(match u.int_in_range(0..=19u8)? {
        16 => Op::SaveOwned {
            id: id(u)?,
            data: data(u)?,
            owner: u.int_in_range(0..=model::OWNERS - 1)?,
        },
        17 => Op::SessionsOf(u.int_in_range(0..=model::OWNERS - 1)?),
        18 => Op::DeleteSessionsOf {
            owner: u.int_in_range(0..=model::OWNERS - 1)?,
            keep: if u.ratio(1, 2)? { Some(id(u)?) } else { None },
        },
        19 => Op::EraseSessionsOf(u.int_in_range(0..=model::OWNERS - 1)?),
        0 | 1 => Op::Save {
            id: id(u)?,
            data: data(u)?,
            expires_in: expires(u)?,
        },
        2 => Op::SaveIfUnchanged {
            id: id(u)?,
            data: data(u)?,
            expires_in: expires(u)?,
            version: *u.choose(&[
                VersionPick::Current,
                VersionPick::Current,
                VersionPick::Stale,
                VersionPick::Ahead,
                VersionPick::Zero,
            ])?,
        },
        3 => Op::Load(id(u)?),
        4 => Op::Has(id(u)?),
        5 => Op::Touch(id(u)?),
        6 => Op::Delete(id(u)?),
        7 => Op::Iter,
        8 => Op::DeleteOld(*u.choose(&[0, 500, 1000, 2500])?),
        9 => Op::Compact,
        10 => Op::Sync,
        11 => Op::Reopen,
        12 => Op::Crash(Crash {
            at: u.arbitrary()?,
            damage: match u.int_in_range(0..=3u8)? {
                0 => Damage::None,
                1 => Damage::Truncate,
                2 => Damage::Zeros,
                _ => Damage::Garbage(u.arbitrary()?),
            },
            rewind: u.arbitrary()?,
        }),
        13 => Op::Switch,
        14 => Op::Rewind(u.int_in_range(0..=1500)?),
        _ => Op::Advance(u.int_in_range(0..=1500)?),
    })
}
