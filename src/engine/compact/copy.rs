//! Copying the old file's live sessions into the new one: a snapshot of
//! the index taken in short turns of the state lock, the copy of every
//! session's latest record as of it, and the catch-ups with what was
//! appended since.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::engine::file::{LogFile, View};
use crate::engine::format::{self, Kind, RecordRef};
use crate::engine::read::{decode_at, session_at};
use crate::error::{Error, Result};
use crate::pace::Pace;

use super::writer::Writer;
use super::{Erase, Handles};

/// Slots of the index copied per turn of the state lock in phase 1.
const SNAPSHOT_SLOTS: usize = 1 << 15;
/// Phase 1 takes the index in parts this many times before it takes it
/// whole (a store removing sessions fast keeps moving slots).
const SNAPSHOT_TRIES: usize = 8;
/// Catch-up passes without the lock stop when fewer bytes than this were
/// appended during the last one: the rest is copied under the lock.
const CATCH_UP_UNTIL: u64 = 256 << 10;
const CATCH_UP_PASSES: usize = 8;

/// The offsets of every session's latest record in `src`, sorted, as of
/// `from` or later, and `upto`, an applied end of `src` past every one of
/// them.
pub(super) struct Snapshot {
    pub src: Arc<LogFile>,
    pub from: u64,
    upto: u64,
    pub offsets: Vec<u64>,
}

impl Snapshot {
    /// Takes the snapshot without holding the state lock for more than a
    /// few thousand slots at a time.
    ///
    /// Why parts are enough: between two parts, writers only append (at or
    /// past `from`) and change the index accordingly. A slot that changes
    /// in place or is added holds a record at or past `from`, which the
    /// catch-up from `from` copies again anyway; only a change that moves
    /// slots (a removal's shift, a growth) can hide a session from the
    /// walk, and the index counts those: the walk starts over if one
    /// happened.
    pub fn take(h: &Handles<'_>) -> Snapshot {
        let (src, from, upto, mut offsets) = Self::walk(h);
        offsets.sort_unstable();
        Snapshot {
            src,
            from,
            upto,
            offsets,
        }
    }

    fn walk(h: &Handles<'_>) -> (Arc<LogFile>, u64, u64, Vec<u64>) {
        for _ in 0..SNAPSHOT_TRIES {
            let (src, from, moves, slots) = {
                let st = h.state.read_turn();
                (
                    Arc::clone(&st.file),
                    st.applied,
                    st.index.moves(),
                    st.index.slot_count(),
                )
            };
            let mut offsets = Vec::with_capacity(slots / 2 + 16);
            let mut at = 0;
            let mut upto = from;
            let mut pace = Pace::new();
            let complete = loop {
                {
                    let st = h.state.read_turn();
                    if st.file.ino != src.ino || st.index.moves() != moves {
                        break false;
                    }
                    if at >= slots {
                        upto = st.applied;
                        break true;
                    }
                    st.index.offsets_in(at..at + SNAPSHOT_SLOTS, &mut offsets);
                    at += SNAPSHOT_SLOTS;
                }
                // Between turns, holding no lock.
                pace.chunk();
            };
            if complete {
                // `src` may map less than `upto` if the file grew meanwhile.
                let st = h.state.read_turn();
                if st.file.ino == src.ino {
                    return (Arc::clone(&st.file), from, upto.max(from), offsets);
                }
            }
        }
        let st = h.state.read_turn();
        let offsets = st.index.offsets().collect();
        (Arc::clone(&st.file), st.applied, st.applied, offsets)
    }

    /// The records of `src` up to `upto`.
    pub fn view(&self) -> View<'_> {
        // SAFETY: `upto` was this process's applied end of `src`:
        // committed records, never rewritten, within the file.
        unsafe { View::new(&self.src, self.upto) }
    }
}

/// The copy of the old file into the new one, from the snapshot on.
pub(super) struct Copy<'e> {
    pub w: Writer,
    /// Sessions not copied, by id, with their latest offset in the old file.
    pub dropped: HashMap<Vec<u8>, u64>,
    pub erase: &'e mut Option<Erase>,
    /// The old file, mapped again when it outgrows its mapping.
    pub src: Arc<LogFile>,
    /// The end of `src` copied so far.
    pub copied: u64,
    /// The end of `src` whose records the new file holds durably: what
    /// was copied when the new file was last fsynced.
    pub synced_from: u64,
}

impl<'e> Copy<'e> {
    /// Phase 1: copies every session of the snapshot that `dead` (modified,
    /// expires) does not end, and no session of the owner being erased.
    pub fn live(
        mut w: Writer,
        snap: Snapshot,
        dead: impl Fn(u64, u64) -> bool,
        erase: &'e mut Option<Erase>,
    ) -> Result<Copy<'e>> {
        w.index.reserve(snap.offsets.len());
        let mut dropped: HashMap<Vec<u8>, u64> = HashMap::new();
        let view = snap.view();
        // No lock is held: the copy gives the CPU to request threads.
        let mut pace = Pace::new();
        for (i, &off) in snap.offsets.iter().enumerate() {
            pace.at(i);
            let (rec, data) = session_at(&view, off)?;
            if let Some(e) = erase.as_mut()
                && rec.owner == e.owner.as_slice()
            {
                // Expired or not, nothing of it is copied; only the live
                // ones count as erased.
                if !dead(rec.modified_ms, rec.expires_ms) {
                    e.ids.insert(rec.id.to_vec());
                }
                continue;
            }
            if dead(rec.modified_ms, rec.expires_ms) {
                dropped.insert(rec.id.to_vec(), off);
                continue;
            }
            w.put(&rec, data)?;
        }
        Ok(Copy {
            w,
            dropped,
            erase,
            copied: snap.from,
            synced_from: 0,
            src: snap.src,
        })
    }

    /// Copies what was appended to `src` since `copied`, in passes, until a
    /// pass finds less than `CATCH_UP_UNTIL` bytes new.
    pub fn catch_up(&mut self, h: &Handles<'_>) -> Result<()> {
        let mut pace = Pace::new();
        for _ in 0..CATCH_UP_PASSES {
            let end = committed_now(h.path, &mut self.src)?;
            if end < self.copied {
                break; // a torn tail was cut: phase 2 finds out under the lock
            }
            // SAFETY: `end` is the committed end of `src`, within its mapping
            // and the file (checked by `committed_now`).
            let view = unsafe { View::new(&self.src, end) };
            copy_range(
                &mut self.w,
                &view,
                self.copied,
                end,
                &mut self.dropped,
                self.erase,
                Some(&mut pace),
            )?;
            let appended = end - self.copied;
            self.copied = end;
            if appended < CATCH_UP_UNTIL {
                break;
            }
        }
        Ok(())
    }

    /// Writes out and fsyncs the new file (`Writer::sync_data`), which
    /// then holds every record copied so far durably.
    pub fn sync_data(&mut self) -> Result<()> {
        self.w.sync_data()?;
        self.synced_from = self.copied;
        Ok(())
    }

    /// Phase 2: copies the records of `view` (the old file under the write
    /// lock, up to its applied end) appended since the last catch-up.
    pub fn rest(&mut self, view: &View<'_>) -> Result<()> {
        copy_range(
            &mut self.w,
            view,
            self.copied,
            view.end(),
            &mut self.dropped,
            self.erase,
            // Under the write lock: a yield here would make saves wait.
            None,
        )?;
        self.copied = view.end();
        Ok(())
    }
}

/// Copies the records of `view` in `[from, to)` into the new file: puts
/// and deletes re-encoded, touches re-aimed at their session's put in the
/// new file (a touch of a session that phase 1 judged idle brings it back).
/// An erasing compaction leaves out the puts of its owner and the touches
/// and deletes of the sessions it left out. With `pace` (no lock held),
/// it gives the CPU to request threads as it goes.
fn copy_range(
    w: &mut Writer,
    view: &View<'_>,
    from: u64,
    to: u64,
    dropped: &mut HashMap<Vec<u8>, u64>,
    erase: &mut Option<Erase>,
    mut pace: Option<&mut Pace>,
) -> Result<()> {
    let mut off = from;
    let mut i = 0;
    while off < to {
        if let Some(p) = pace.as_deref_mut() {
            p.at(i);
            i += 1;
        }
        let rec = decode_at(view, off)?;
        off += rec.padded_len as u64;
        if let Some(e) = erase.as_mut() {
            if rec.kind == Kind::Put && rec.owner == e.owner.as_slice() {
                dropped.remove(rec.id);
                if w.index.get(&w.out, rec.id).is_some() {
                    e.copied_then_owned = true;
                }
                e.ids.insert(rec.id.to_vec());
                continue;
            }
            if e.ids.contains(rec.id) {
                if rec.kind == Kind::Put {
                    // Saved anew for another owner: it lives on as theirs.
                    e.ids.remove(rec.id);
                } else {
                    continue;
                }
            }
        }
        match rec.kind {
            Kind::Put => {
                dropped.remove(rec.id);
                w.copy(&rec)?;
            }
            Kind::Touch => match w.index.get(&w.out, rec.id) {
                Some(current) => w.touch(&rec, current)?,
                None => {
                    // Touched after phase 1 judged it idle: it lives after all.
                    if let Some(old) = dropped.remove(rec.id) {
                        let (put, data) = session_at(view, old)?;
                        let revived = RecordRef {
                            owner: put.owner,
                            ..rec
                        };
                        if erase
                            .as_ref()
                            .is_some_and(|e| put.owner == e.owner.as_slice())
                        {
                            continue;
                        }
                        w.put(&revived, data)?;
                    }
                }
            },
            Kind::Delete => {
                dropped.remove(rec.id);
                if w.index.get(&w.out, rec.id).is_some() {
                    w.copy(&rec)?;
                }
            }
        }
    }
    Ok(())
}

/// The committed end of `src` as any process may read it now, with a
/// mapping of `src` that covers it.
fn committed_now(path: &Path, src: &mut Arc<LogFile>) -> Result<u64> {
    let end = format::decode_offset(src.committed_word()).ok_or_else(|| {
        Error::corrupt(
            path,
            format::H_COMMITTED as u64,
            "the committed-length word is damaged",
        )
    })?;
    if end > src.mapped_file_len {
        let len = src.file_len()?;
        if end > len {
            return Err(Error::corrupt(
                path,
                end,
                "committed length beyond the end of the file",
            ));
        }
        if end > src.map_len() {
            *src = Arc::new(src.remapped()?);
        }
    }
    Ok(end)
}
