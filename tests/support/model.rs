//! The model that `tests/model.rs` (proptest) and `fuzz/fuzz_targets/ops.rs`
//! (cargo-fuzz) run operation sequences against: a plain map of what each
//! session should be, checked against a real store after every step.
//!
//! Crashes make the model a set of possibilities. The store may lose any
//! suffix of the operations since the last point known to be durable (a
//! `Sync`, a compaction, or every write under `SyncPolicy::Always`), so the
//! runner keeps, per candidate, the model state after each operation since
//! that point. After a crash the reopened store must equal one of those
//! states; every later answer must agree with at least one candidate. This
//! accepts a lost suffix and rejects everything else: a lost middle, a
//! session that was never saved, half-written data.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sessionlog::internals::format::{H_COMMITTED, H_SYNCED, decode_offset, encode_offset};
use sessionlog::{
    DirStore, Encrypted, Error, Keyring, LogStore, ManualClock, MemoryStore, Owner, Session,
    SessionId, SessionStore, SyncPolicy,
};

/// How many distinct ids the operations use: few, so that they collide.
pub const IDS: u8 = 5;
/// How many distinct owners the operations use.
pub const OWNERS: u8 = 2;
/// The stores' data limit; generators go a little past it.
pub const MAX_SIZE: usize = 64;
/// Beyond this many candidate histories the runner keeps the first ones.
const MAX_CANDIDATES: usize = 256;

/// The backend under test and its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `MemoryStore`: no reopen, no crash.
    Memory,
    /// `DirStore` with `SyncPolicy::Never`: reopen, no crash.
    Dir,
    /// `LogStore` without its background thread, with this sync policy
    /// (`Never` or `Always`).
    Log(SyncPolicy),
}

/// One test case's store configuration.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The backend.
    pub backend: Backend,
    /// The store's idle limit in ms, if any.
    pub max_idle_ms: Option<u64>,
    /// Whether the backend is used through `Encrypted` (its size limit
    /// raised by the envelope's overhead, so the data's limit is the same).
    pub encrypted: bool,
}

/// Which version a conditional save claims to replace, relative to the
/// version the model holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionPick {
    /// The live version (0 if absent): must succeed.
    Current,
    /// One less (or 1 if absent): must conflict.
    Stale,
    /// One more: must conflict.
    Ahead,
    /// 0, i.e. "create only": conflicts if the session is live.
    Zero,
}

/// What a simulated crash does to the log file before reopening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Nothing: unsynced bytes happened to reach the disk.
    None,
    /// The file ends at the cut.
    Truncate,
    /// Zeros from the cut to the committed end.
    Zeros,
    /// Pseudo-random bytes (from this seed) from the cut to the committed end.
    Garbage(u64),
}

/// A simulated power loss of a `LogStore` (other backends: a plain reopen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    /// Selects the cut point in `[synced, committed]`.
    pub at: u32,
    /// What happens to the bytes after the cut.
    pub damage: Damage,
    /// Also set the header's committed word back to the cut (the header
    /// page reached the disk earlier than the records).
    pub rewind: bool,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `save_session`; expires this many ms from now if set.
    Save {
        /// Id index, taken modulo `IDS`.
        id: u8,
        /// The data.
        data: Vec<u8>,
        /// Absolute deadline relative to now (0: already due).
        expires_in: Option<u16>,
    },
    /// `save_session_if_unchanged` with the chosen version.
    SaveIfUnchanged {
        /// Id index.
        id: u8,
        /// The data.
        data: Vec<u8>,
        /// Absolute deadline relative to now.
        expires_in: Option<u16>,
        /// The version claimed.
        version: VersionPick,
    },
    /// `save_session` of a session with an owner (index modulo `OWNERS`);
    /// a plain `Save` clears the owner.
    SaveOwned {
        /// Id index.
        id: u8,
        /// The data.
        data: Vec<u8>,
        /// Owner index.
        owner: u8,
    },
    /// `sessions_of`.
    SessionsOf(u8),
    /// `delete_sessions_of`, sparing the session with this id index.
    DeleteSessionsOf {
        /// Owner index.
        owner: u8,
        /// Id index of the session kept.
        keep: Option<u8>,
    },
    /// `erase_sessions_of` (for a `LogStore`, a compaction).
    EraseSessionsOf(u8),
    /// `load_session`.
    Load(u8),
    /// `has_session`.
    Has(u8),
    /// `touch_session`.
    Touch(u8),
    /// `delete_session`.
    Delete(u8),
    /// `iter_sessions`.
    Iter,
    /// `delete_old_sessions`.
    DeleteOld(u16),
    /// `LogStore::compact` (no-op elsewhere).
    Compact,
    /// `LogStore::sync` / `DirStore::sync` (no-op for memory).
    Sync,
    /// Drop the store and open it again (no-op for memory).
    Reopen,
    /// Simulated crash (a plain reopen for `DirStore`; no-op for memory).
    Crash(Crash),
    /// Move the clock forward.
    Advance(u16),
    /// Move the clock back (an NTP step): expired sessions that are still
    /// stored come back, exactly as the model keeps them.
    Rewind(u16),
    /// Send the following operations to the other of two handles open on
    /// the same store (as another process would; no-op for memory).
    Switch,
}

impl Op {
    /// The same operation with its id reduced modulo `IDS`.
    pub fn normalized(&self) -> Op {
        let mut op = self.clone();
        match &mut op {
            Op::Save { id, .. }
            | Op::SaveIfUnchanged { id, .. }
            | Op::Load(id)
            | Op::Has(id)
            | Op::Touch(id)
            | Op::Delete(id) => *id %= IDS,
            Op::SaveOwned { id, owner, .. } => {
                *id %= IDS;
                *owner %= OWNERS;
            }
            Op::DeleteSessionsOf { owner, keep } => {
                *owner %= OWNERS;
                if let Some(k) = keep {
                    *k %= IDS;
                }
            }
            Op::SessionsOf(owner) | Op::EraseSessionsOf(owner) => *owner %= OWNERS,
            _ => {}
        }
        op
    }
}

/// A session as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    data: Vec<u8>,
    version: u64,
    modified: u64,
    expires: u64,
    owner: Option<u8>,
    /// Orders saves and touches made in one millisecond: larger is later.
    seq: u64,
}

/// What an operation returned, in a comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Unit,
    Bool(bool),
    Count(usize),
    Saved {
        version: u64,
        modified: u64,
    },
    Conflict {
        expected: u64,
        found: u64,
    },
    TooLarge,
    One(Option<Snap>),
    All(Vec<Snap>),
    Compacted {
        kept: u64,
        dropped: u64,
    },
    /// `sessions_of`: (id index, version, modified), newest first.
    Listed(Vec<(u8, u64, u64)>),
}

/// A live session as observed: (id index, data, version, modified,
/// expires, owner index).
type Snap = (u8, Vec<u8>, u64, u64, u64, Option<u8>);

/// One possible state of the store: every stored record, live or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    stored: BTreeMap<u8, Rec>,
}

fn is_live(r: &Rec, now: u64, idle: Option<u64>) -> bool {
    let due = r.expires != 0 && r.expires <= now;
    let idle_out = idle.is_some_and(|i| r.modified.saturating_add(i) <= now);
    !due && !idle_out
}

impl Model {
    fn live(&self, id: u8, now: u64, idle: Option<u64>) -> Option<&Rec> {
        self.stored.get(&id).filter(|r| is_live(r, now, idle))
    }

    /// Every live session, sorted by id.
    fn observe(&self, now: u64, idle: Option<u64>) -> Vec<Snap> {
        self.stored
            .iter()
            .filter(|(_, r)| is_live(r, now, idle))
            .map(|(&id, r)| {
                (
                    id,
                    r.data.clone(),
                    r.version,
                    r.modified,
                    r.expires,
                    r.owner,
                )
            })
            .collect()
    }

    /// The live sessions of `owner`, newest first (of those saved or
    /// touched in one millisecond, the later first).
    fn listed(&self, owner: u8, now: u64, idle: Option<u64>) -> Vec<(u8, u64, u64)> {
        let mut l: Vec<(u64, (u8, u64, u64))> = self
            .stored
            .iter()
            .filter(|(_, r)| r.owner == Some(owner) && is_live(r, now, idle))
            .map(|(&id, r)| (r.seq, (id, r.version, r.modified)))
            .collect();
        l.sort_by(|(sa, a), (sb, b)| b.2.cmp(&a.2).then(sb.cmp(sa)));
        l.into_iter().map(|(_, x)| x).collect()
    }

    /// The order of a save or touch made now: after every one before.
    /// Derived from what is stored, so that two models holding the same
    /// sessions are equal.
    fn next_seq(&self) -> u64 {
        self.stored.values().map(|r| r.seq).max().unwrap_or(0) + 1
    }

    /// (stored sessions, of which expired), as `LogStore::stats` counts.
    fn counts(&self, now: u64, idle: Option<u64>) -> (u64, u64) {
        let expired = self
            .stored
            .values()
            .filter(|r| !is_live(r, now, idle))
            .count();
        (self.stored.len() as u64, expired as u64)
    }

    /// Saves `(data, expires, owner)` under `id`, conditionally with a
    /// `claim`.
    fn save(
        &mut self,
        id: u8,
        (data, expires, owner): (&[u8], u64, Option<u8>),
        claim: Option<u64>,
        now: u64,
        idle: Option<u64>,
    ) -> Out {
        if data.len() > MAX_SIZE {
            return Out::TooLarge;
        }
        let found = self.live(id, now, idle).map_or(0, |r| r.version);
        if let Some(expected) = claim
            && expected != found
        {
            return Out::Conflict { expected, found };
        }
        let version = found + 1;
        let seq = self.next_seq();
        self.stored.insert(
            id,
            Rec {
                data: data.to_vec(),
                version,
                modified: now,
                expires,
                owner,
                seq,
            },
        );
        Out::Saved {
            version,
            modified: now,
        }
    }

    /// Applies `op` (never `Crash`) and returns what the store should say.
    /// `claim` is the version a conditional save claimed.
    fn apply(&mut self, op: &Op, claim: u64, now: u64, idle: Option<u64>, log: bool) -> Out {
        match op {
            Op::Save {
                id,
                data,
                expires_in,
            } => self.save(
                *id,
                (data, deadline(now, *expires_in), None),
                None,
                now,
                idle,
            ),
            Op::SaveOwned { id, data, owner } => {
                self.save(*id, (data, 0, Some(*owner)), None, now, idle)
            }
            Op::SessionsOf(owner) => Out::Listed(self.listed(*owner, now, idle)),
            Op::DeleteSessionsOf { owner, keep } => {
                let gone: Vec<u8> = self
                    .listed(*owner, now, idle)
                    .into_iter()
                    .map(|(id, ..)| id)
                    .filter(|id| Some(*id) != *keep)
                    .collect();
                for id in &gone {
                    self.stored.remove(id);
                }
                Out::Count(gone.len())
            }
            Op::EraseSessionsOf(owner) => {
                let n = self.listed(*owner, now, idle).len();
                // Expired ones of the owner go too; a LogStore's erasure
                // is a compaction, which drops every expired session.
                self.stored
                    .retain(|_, r| r.owner != Some(*owner) && (!log || is_live(r, now, idle)));
                Out::Count(n)
            }
            Op::SaveIfUnchanged {
                id,
                data,
                expires_in,
                ..
            } => self.save(
                *id,
                (data, deadline(now, *expires_in), None),
                Some(claim),
                now,
                idle,
            ),
            Op::Load(id) => Out::One(self.live(*id, now, idle).map(|r| {
                (
                    *id,
                    r.data.clone(),
                    r.version,
                    r.modified,
                    r.expires,
                    r.owner,
                )
            })),
            Op::Has(id) => Out::Bool(self.live(*id, now, idle).is_some()),
            Op::Touch(id) => {
                let live = self.live(*id, now, idle).is_some();
                let seq = self.next_seq();
                if live && let Some(r) = self.stored.get_mut(id) {
                    r.modified = now;
                    r.seq = seq;
                }
                Out::Bool(live)
            }
            Op::Delete(id) => {
                let old = self.stored.remove(id);
                Out::Bool(old.is_some_and(|r| is_live(&r, now, idle)))
            }
            Op::Iter => Out::All(self.observe(now, idle)),
            Op::DeleteOld(max_idle) => {
                let cutoff = Some(u64::from(*max_idle));
                let before = self.stored.len();
                self.stored
                    .retain(|_, r| is_live(r, now, idle) && is_live(r, now, cutoff));
                Out::Count(before - self.stored.len())
            }
            Op::Compact if log => {
                let before = self.stored.len();
                self.stored.retain(|_, r| is_live(r, now, idle));
                Out::Compacted {
                    kept: self.stored.len() as u64,
                    dropped: (before - self.stored.len()) as u64,
                }
            }
            Op::Compact
            | Op::Sync
            | Op::Reopen
            | Op::Crash(_)
            | Op::Advance(_)
            | Op::Rewind(_)
            | Op::Switch => Out::Unit,
        }
    }
}

fn pick(p: VersionPick, current: u64) -> u64 {
    match p {
        VersionPick::Current => current,
        VersionPick::Stale => current.checked_sub(1).unwrap_or(1),
        VersionPick::Ahead => current + 1,
        VersionPick::Zero => 0,
    }
}

fn deadline(now: u64, expires_in: Option<u16>) -> u64 {
    expires_in.map_or(0, |d| now + u64::from(d))
}

/// The id for an index.
fn sid(i: u8) -> SessionId {
    SessionId::new(format!("sess-{i}")).expect("valid id")
}

fn ms(t: std::time::SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
    )
    .expect("fits in u64")
}

fn snap(i: u8, s: &Session) -> Snap {
    (
        i,
        s.data.clone(),
        s.version(),
        s.modified().map_or(0, ms),
        s.expires.map_or(0, ms),
        s.owner
            .as_ref()
            .and_then(|o| (0..OWNERS).find(|&k| owner_of(k) == *o)),
    )
}

/// The owner for an index.
fn owner_of(i: u8) -> Owner {
    Owner::new(format!("user {i}")).expect("valid owner")
}

/// The store under test.
enum Store {
    Memory(Layer<MemoryStore>),
    Dir(Layer<DirStore>),
    Log(Layer<LogStore>),
}

impl Store {
    fn api(&self) -> &dyn SessionStore {
        match self {
            Store::Memory(s) => s.api(),
            Store::Dir(s) => s.api(),
            Store::Log(s) => s.api(),
        }
    }
}

/// A backend as the test uses it: directly, or through `Encrypted`.
enum Layer<S> {
    Plain(S),
    Encrypted(Encrypted<S>),
}

/// The keyring of `Config::encrypted`.
fn keyring() -> Keyring {
    Keyring::new("model", [7; 32]).expect("a valid key id")
}

impl<S: SessionStore> Layer<S> {
    fn new(store: S, encrypted: bool) -> Layer<S> {
        if encrypted {
            Layer::Encrypted(Encrypted::new(store, keyring()))
        } else {
            Layer::Plain(store)
        }
    }

    /// The backend itself (sync, compaction, stats).
    fn raw(&self) -> &S {
        match self {
            Layer::Plain(s) => s,
            Layer::Encrypted(e) => e.inner(),
        }
    }

    fn api(&self) -> &dyn SessionStore {
        match self {
            Layer::Plain(s) => s,
            Layer::Encrypted(e) => e,
        }
    }
}

/// Runs `ops` against a fresh store of `cfg` in the empty directory `dir`
/// and against the model. `Err` describes the first disagreement.
pub fn run(cfg: Config, ops: &[Op], dir: &Path) -> Result<(), String> {
    let mut r = Runner {
        cfg,
        path: match cfg.backend {
            Backend::Log(_) => dir.join("sessions.db"),
            _ => dir.join("sessions"),
        },
        clock: ManualClock::fixed(),
        handles: [None, None],
        active: 0,
        candidates: vec![vec![Model::default()]],
    };
    r.open_all()?;
    for (step, op) in ops.iter().enumerate() {
        let op = &op.normalized();
        r.step(op)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        r.check_all()
            .map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}

struct Runner {
    cfg: Config,
    path: PathBuf,
    clock: ManualClock,
    /// Two handles on one store (the second stays `None` for memory).
    handles: [Option<Store>; 2],
    /// The handle operations go to.
    active: usize,
    /// Per candidate: the model after each operation since the last
    /// durable point; the last one is the candidate's current state.
    candidates: Vec<Vec<Model>>,
}

fn unexpected(what: &str, e: &Error) -> String {
    format!("{what} failed unexpectedly: {e}")
}

impl Runner {
    fn now(&self) -> u64 {
        ms(sessionlog::Clock::now(&self.clock))
    }

    fn is_log(&self) -> bool {
        matches!(self.cfg.backend, Backend::Log(_))
    }

    fn open(&self) -> Result<Store, String> {
        let idle = self.cfg.max_idle_ms.map(Duration::from_millis);
        let enc = self.cfg.encrypted;
        let max_size = if enc {
            MAX_SIZE + Encrypted::new((), keyring()).overhead()
        } else {
            MAX_SIZE
        };
        match self.cfg.backend {
            Backend::Memory => {
                let mut o = MemoryStore::options()
                    .clock(self.clock.clone())
                    .max_session_size(max_size);
                if let Some(d) = idle {
                    o = o.max_idle(d);
                }
                Ok(Store::Memory(Layer::new(
                    o.open().map_err(|e| e.to_string())?,
                    enc,
                )))
            }
            Backend::Dir => {
                let mut o = DirStore::options()
                    .sync(SyncPolicy::Never)
                    .clock(self.clock.clone())
                    .max_session_size(max_size);
                if let Some(d) = idle {
                    o = o.max_idle(d);
                }
                o.open(&self.path)
                    .map(|s| Store::Dir(Layer::new(s, enc)))
                    .map_err(|e| unexpected("open", &e))
            }
            Backend::Log(policy) => {
                let mut o = LogStore::options()
                    .background(false)
                    .sync(policy)
                    .clock(self.clock.clone())
                    .max_session_size(max_size);
                if let Some(d) = idle {
                    o = o.max_idle(d);
                }
                o.open(&self.path)
                    .map(|s| Store::Log(Layer::new(s, enc)))
                    .map_err(|e| unexpected("open", &e))
            }
        }
    }

    fn store(&self) -> &dyn SessionStore {
        self.handles[self.active]
            .as_ref()
            .expect("store is open")
            .api()
    }

    fn active(&self) -> &Store {
        self.handles[self.active].as_ref().expect("store is open")
    }

    /// Drops both handles without syncing (under `SyncPolicy::Never`).
    fn close_all(&mut self) {
        self.handles = [None, None];
    }

    fn open_all(&mut self) -> Result<(), String> {
        self.handles[0] = Some(self.open()?);
        if self.cfg.backend != Backend::Memory {
            self.handles[1] = Some(self.open()?);
        }
        Ok(())
    }

    /// Everything durable now: each candidate forgets its history.
    fn durable_point(&mut self) {
        for h in &mut self.candidates {
            let last = h.pop().expect("history is never empty");
            h.clear();
            h.push(last);
        }
        self.dedup();
    }

    fn dedup(&mut self) {
        let mut kept: Vec<Vec<Model>> = Vec::new();
        for h in self.candidates.drain(..) {
            if !kept.contains(&h) {
                kept.push(h);
            }
        }
        kept.truncate(MAX_CANDIDATES);
        self.candidates = kept;
    }

    /// The version a conditional save claims, from the first candidate
    /// (all candidates agree on live versions: `check_all` ran).
    fn claim(&self, op: &Op) -> u64 {
        let Op::SaveIfUnchanged { id, version, .. } = op else {
            return 0;
        };
        let current = self.candidates[0]
            .last()
            .and_then(|m| m.live(*id, self.now(), self.cfg.max_idle_ms))
            .map_or(0, |r| r.version);
        pick(*version, current)
    }

    fn save(&self, op: &Op, claim: u64) -> Result<Out, String> {
        let (id, data, expires_in, claim) = match op {
            Op::Save {
                id,
                data,
                expires_in,
            } => (*id, data, *expires_in, None),
            Op::SaveIfUnchanged {
                id,
                data,
                expires_in,
                ..
            } => (*id, data, *expires_in, Some(claim)),
            _ => unreachable!("not a save"),
        };
        let now = self.now();
        let mut s = Session::new(sid(id), data.clone());
        s.expires = expires_in.map(|d| UNIX_EPOCH + Duration::from_millis(now + u64::from(d)));
        if let Some(v) = claim {
            // A session at version v, as a load would have returned it.
            s = Session::restore(s.id, s.data, s.expires, UNIX_EPOCH, v);
        }
        let res = match claim {
            None => self.store().save_session(&mut s),
            Some(_) => self.store().save_session_if_unchanged(&mut s),
        };
        match res {
            Ok(()) => Ok(Out::Saved {
                version: s.version(),
                modified: s.modified().map_or(0, ms),
            }),
            Err(Error::Conflict {
                expected, found, ..
            }) => Ok(Out::Conflict { expected, found }),
            Err(Error::TooLarge { .. }) => Ok(Out::TooLarge),
            Err(e) => Err(unexpected("save", &e)),
        }
    }

    /// Runs `op` on the store; returns its answer (or `None` for a crash,
    /// which the runner checks itself).
    fn act(&mut self, op: &Op, claim: u64) -> Result<Option<Out>, String> {
        let out = match op {
            Op::Save { .. } | Op::SaveIfUnchanged { .. } => self.save(op, claim)?,
            Op::SaveOwned { id, data, owner } => {
                let mut s = Session::new(sid(*id), data.clone()).with_owner(owner_of(*owner));
                match self.store().save_session(&mut s) {
                    Ok(()) => Out::Saved {
                        version: s.version(),
                        modified: s.modified().map_or(0, ms),
                    },
                    Err(Error::TooLarge { .. }) => Out::TooLarge,
                    Err(e) => return Err(unexpected("save with an owner", &e)),
                }
            }
            Op::SessionsOf(owner) => {
                let mut l = Vec::new();
                for info in self
                    .store()
                    .sessions_of(&owner_of(*owner))
                    .map_err(|e| unexpected("sessions_of", &e))?
                {
                    let i = (0..IDS).find(|&i| sid(i) == info.id).ok_or_else(|| {
                        format!("sessions_of returned an id never used: {}", info.id)
                    })?;
                    if info.owner != Some(owner_of(*owner)) {
                        return Err(format!("sessions_of gave another owner for {}", info.id));
                    }
                    l.push((i, info.version, ms(info.modified)));
                }
                Out::Listed(l)
            }
            Op::DeleteSessionsOf { owner, keep } => Out::Count(
                self.store()
                    .delete_sessions_of(&owner_of(*owner), keep.map(sid).as_ref())
                    .map_err(|e| unexpected("delete_sessions_of", &e))?,
            ),
            Op::EraseSessionsOf(owner) => Out::Count(
                self.store()
                    .erase_sessions_of(&owner_of(*owner))
                    .map_err(|e| unexpected("erase_sessions_of", &e))?,
            ),
            Op::Load(id) => Out::One(
                self.store()
                    .load_session(&sid(*id))
                    .map_err(|e| unexpected("load", &e))?
                    .map(|s| snap(*id, &s)),
            ),
            Op::Has(id) => Out::Bool(
                self.store()
                    .has_session(&sid(*id))
                    .map_err(|e| unexpected("has", &e))?,
            ),
            Op::Touch(id) => Out::Bool(
                self.store()
                    .touch_session(&sid(*id))
                    .map_err(|e| unexpected("touch", &e))?,
            ),
            Op::Delete(id) => Out::Bool(
                self.store()
                    .delete_session(&sid(*id))
                    .map_err(|e| unexpected("delete", &e))?,
            ),
            Op::Iter => Out::All(self.iter()?),
            Op::DeleteOld(idle) => Out::Count(
                self.store()
                    .delete_old_sessions(Duration::from_millis(u64::from(*idle)))
                    .map_err(|e| unexpected("delete_old_sessions", &e))?,
            ),
            Op::Compact => match self.active() {
                Store::Log(s) => {
                    let st = s.raw().compact().map_err(|e| unexpected("compact", &e))?;
                    Out::Compacted {
                        kept: st.kept,
                        dropped: st.dropped,
                    }
                }
                _ => Out::Unit,
            },
            Op::Sync => {
                // `sync` covers what this handle has seen; a read first
                // brings its view up to what the other handle wrote.
                self.store()
                    .has_session(&sid(0))
                    .map_err(|e| unexpected("has", &e))?;
                match self.active() {
                    Store::Log(s) => s.raw().sync().map_err(|e| unexpected("sync", &e))?,
                    Store::Dir(s) => s.raw().sync().map_err(|e| unexpected("sync", &e))?,
                    Store::Memory(_) => {}
                }
                Out::Unit
            }
            Op::Reopen => {
                if self.cfg.backend != Backend::Memory {
                    self.close_all();
                    self.open_all()?;
                }
                Out::Unit
            }
            Op::Switch => {
                if self.cfg.backend != Backend::Memory {
                    self.active = 1 - self.active;
                }
                Out::Unit
            }
            Op::Crash(c) => {
                match self.cfg.backend {
                    Backend::Memory => return Ok(Some(Out::Unit)),
                    Backend::Dir => {
                        self.close_all();
                        self.open_all()?;
                        return Ok(Some(Out::Unit));
                    }
                    Backend::Log(_) => self.crash(c)?,
                }
                return Ok(None);
            }
            Op::Advance(d) => {
                self.clock.advance(Duration::from_millis(u64::from(*d)));
                Out::Unit
            }
            Op::Rewind(d) => {
                let now = sessionlog::Clock::now(&self.clock);
                self.clock.set(now - Duration::from_millis(u64::from(*d)));
                Out::Unit
            }
        };
        Ok(Some(out))
    }

    fn iter(&self) -> Result<Vec<Snap>, String> {
        let mut all = Vec::new();
        for s in self
            .store()
            .iter_sessions()
            .map_err(|e| unexpected("iter_sessions", &e))?
        {
            let s = s.map_err(|e| unexpected("iter_sessions item", &e))?;
            let i = (0..IDS)
                .find(|&i| sid(i) == s.id)
                .ok_or_else(|| format!("iter returned an id never used: {}", s.id))?;
            all.push(snap(i, &s));
        }
        all.sort();
        Ok(all)
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let claim = self.claim(op);
        let Some(actual) = self.act(op, claim)? else {
            return self.after_crash();
        };
        let now = self.now();
        let (idle, log) = (self.cfg.max_idle_ms, self.is_log());
        let mut expected_first = None;
        self.candidates.retain_mut(|h| {
            let mut m = h.last().expect("history is never empty").clone();
            let expected = m.apply(op, claim, now, idle, log);
            let ok = expected == actual;
            if ok {
                h.push(m);
            } else if expected_first.is_none() {
                expected_first = Some(expected);
            }
            ok
        });
        if self.candidates.is_empty() {
            return Err(format!(
                "store answered {actual:?}, model expected {:?}",
                expected_first.expect("some candidate was dropped")
            ));
        }
        // A sync, a compaction (it writes and fsyncs a new file), or any
        // write under `Always` makes everything so far durable.
        let durable = matches!(
            (op, self.cfg.backend),
            (
                Op::Sync
                    | Op::Compact
                    | Op::DeleteOld(_)
                    | Op::EraseSessionsOf(_)
                    | Op::DeleteSessionsOf { .. },
                Backend::Log(_)
            ) | (_, Backend::Log(SyncPolicy::Always))
        );
        if durable {
            self.durable_point();
        } else {
            self.dedup();
        }
        Ok(())
    }

    /// Every id loaded and checked with `has`, and the full iteration:
    /// the store must match at least one candidate, and candidates that do
    /// not match are dropped.
    fn observe_store(&self) -> Result<Vec<Snap>, String> {
        let mut by_load = Vec::new();
        for i in 0..IDS {
            let loaded = self
                .store()
                .load_session(&sid(i))
                .map_err(|e| unexpected("load", &e))?;
            let has = self
                .store()
                .has_session(&sid(i))
                .map_err(|e| unexpected("has", &e))?;
            if has != loaded.is_some() {
                return Err(format!(
                    "has_session({i}) = {has} but load_session gave {loaded:?}"
                ));
            }
            if let Some(s) = loaded {
                by_load.push(snap(i, &s));
            }
        }
        let by_iter = self.iter()?;
        if by_iter != by_load {
            return Err(format!(
                "iter_sessions gave {by_iter:?} but loading each id gave {by_load:?}"
            ));
        }
        Ok(by_load)
    }

    fn check_all(&mut self) -> Result<(), String> {
        let seen = self.observe_store()?;
        let now = self.now();
        let idle = self.cfg.max_idle_ms;
        let first = self.candidates[0]
            .last()
            .expect("history is never empty")
            .observe(now, idle);
        self.candidates
            .retain(|h| h.last().expect("history is never empty").observe(now, idle) == seen);
        if self.candidates.is_empty() {
            return Err(format!("store holds {seen:?}, model holds {first:?}"));
        }
        if let Store::Log(s) = self.active() {
            let st = s.raw().stats().map_err(|e| unexpected("stats", &e))?;
            let counts = (st.sessions, st.expired);
            let first = self.candidates[0].last().map(|m| m.counts(now, idle));
            self.candidates
                .retain(|h| h.last().is_some_and(|m| m.counts(now, idle) == counts));
            if self.candidates.is_empty() {
                return Err(format!(
                    "stats() says (sessions, expired) = {counts:?}, model says {first:?}"
                ));
            }
        }
        Ok(())
    }

    /// Drops the store without syncing, damages the log past its synced
    /// end as `c` says, and reopens it.
    fn crash(&mut self, c: &Crash) -> Result<(), String> {
        self.close_all();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| format!("open log file: {e}"))?;
        let word = |off: usize| -> Result<u64, String> {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, off as u64)
                .map_err(|e| format!("read header: {e}"))?;
            Ok(u64::from_le_bytes(b))
        };
        let synced = decode_offset(word(H_SYNCED)?).ok_or("synced word damaged before crash")?;
        let committed =
            decode_offset(word(H_COMMITTED)?).ok_or("committed word damaged before crash")?;
        if synced > committed {
            return Err(format!(
                "header says synced {synced} > committed {committed}"
            ));
        }
        let cut = synced + u64::from(c.at) % (committed - synced + 1);
        let len = (committed - cut) as usize;
        let io = |e: std::io::Error| format!("damage log file: {e}");
        match c.damage {
            Damage::None => {}
            Damage::Truncate => f.set_len(cut).map_err(io)?,
            Damage::Zeros => f.write_all_at(&vec![0u8; len], cut).map_err(io)?,
            Damage::Garbage(seed) => {
                let mut x = seed | 1;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                f.write_all_at(&bytes, cut).map_err(io)?;
            }
        }
        if c.rewind {
            f.write_all_at(&encode_offset(cut).to_le_bytes(), H_COMMITTED as u64)
                .map_err(io)?;
        }
        drop(f);
        self.open_all().map_err(|e| {
            format!("reopen after crash (synced {synced}, committed {committed}, cut {cut}): {e}")
        })
    }

    /// After a crash the store must equal the state after some prefix of
    /// the operations since the last durable point. A candidate history
    /// is cut back to each prefix that matches.
    fn after_crash(&mut self) -> Result<(), String> {
        let seen = self.observe_store()?;
        let now = self.now();
        let idle = self.cfg.max_idle_ms;
        let mut next = Vec::new();
        for h in &self.candidates {
            for k in 0..h.len() {
                if h[k].observe(now, idle) == seen {
                    next.push(h[..=k].to_vec());
                }
            }
        }
        if next.is_empty() {
            let h = &self.candidates[0];
            return Err(format!(
                "reopened store holds {seen:?}, which is no state since the last sync: \
                 durable state {:?}, latest {:?}",
                h[0].observe(now, idle),
                h[h.len() - 1].observe(now, idle)
            ));
        }
        self.candidates = next;
        self.dedup();
        Ok(())
    }
}
