//! The conformance suite: one set of behaviours that every `SessionStore`
//! backend must show. Each backend adds one `conformance!` line in
//! `tests/conformance.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use sessionlog::{
    Clock, Encrypted, Error, HashedIds, Keyring, ManualClock, Owner, Session, SessionId,
    SessionInfo, SessionStore,
};

/// How a test wants its store configured.
#[derive(Clone, Debug)]
pub struct Config {
    /// The clock the store must use for stamping and expiry.
    pub clock: ManualClock,
    /// The store's idle limit.
    pub max_idle: Option<Duration>,
    /// The store's data size limit.
    pub max_session_size: usize,
    /// The store's limit of live sessions per owner.
    pub max_sessions_per_owner: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clock: ManualClock::fixed(),
            max_idle: None,
            max_session_size: 64 * 1024,
            max_sessions_per_owner: None,
        }
    }
}

/// One backend under test. A value names one storage location (a temporary
/// directory, a table, a key prefix); opening it twice gives the same data.
pub trait Backend: Sized {
    /// The store type.
    type Store: SessionStore + 'static;
    /// Whether sessions survive dropping and reopening the store.
    const PERSISTENT: bool;
    /// A fresh, empty, private location.
    fn new_location() -> Self;
    /// Opens the store at this location (calling `setup` is the test's job).
    fn open(&self, cfg: &Config) -> Self::Store;
    /// Moves the store's clock forward.
    fn advance(&self, cfg: &Config, d: Duration) {
        cfg.clock.advance(d);
    }
    /// Puts the store's clock back at the test clock's time: nothing to do
    /// for a store that reads the test clock, while a server store's clock
    /// runs on, so that a test holds it to make saves in a row fall in one
    /// millisecond (most of the time: the server reads its clock a little
    /// after this call).
    fn hold_clock(&self, _cfg: &Config) {}
    /// The id `iter_sessions` gives a session saved with `id`: the id
    /// itself, or for `HashedIds` its digest.
    fn listed_id(id: &SessionId) -> SessionId {
        id.clone()
    }
    /// The owner a session saved with `owner` is stored (and loaded) with:
    /// the owner itself, or for `HashedIds` its digest.
    fn stored_owner(owner: &Owner) -> Owner {
        owner.clone()
    }
}

/// Any backend wrapped in `HashedIds`: the same behaviours, with
/// `iter_sessions` naming each session by its digest.
pub struct Hashed<B>(pub B);
impl<B: Backend> Backend for Hashed<B> {
    type Store = HashedIds<B::Store>;
    const PERSISTENT: bool = B::PERSISTENT;
    fn new_location() -> Self {
        Hashed(B::new_location())
    }
    fn open(&self, cfg: &Config) -> Self::Store {
        HashedIds::new(self.0.open(cfg))
    }
    fn advance(&self, cfg: &Config, d: Duration) {
        self.0.advance(cfg, d);
    }
    fn hold_clock(&self, cfg: &Config) {
        self.0.hold_clock(cfg);
    }
    fn listed_id(id: &SessionId) -> SessionId {
        HashedIds::<()>::stored_id(id)
    }
    fn stored_owner(owner: &Owner) -> Owner {
        HashedIds::<()>::stored_owner(owner)
    }
}

/// Any backend wrapped in `Encrypted`: the same behaviours, the data
/// encrypted. The wrapped store's size limit is raised by the envelope's
/// overhead, as the wrapper's documentation says to.
pub struct Enc<B>(pub B);
impl<B: Backend> Backend for Enc<B> {
    type Store = Encrypted<B::Store>;
    const PERSISTENT: bool = B::PERSISTENT;
    fn new_location() -> Self {
        Enc(B::new_location())
    }
    fn open(&self, cfg: &Config) -> Self::Store {
        let keys = test_keyring();
        let overhead = Encrypted::new((), keys.clone()).overhead();
        let mut inner = cfg.clone();
        inner.max_session_size += overhead;
        Encrypted::new(self.0.open(&inner), keys)
    }
    fn advance(&self, cfg: &Config, d: Duration) {
        self.0.advance(cfg, d);
    }
    fn hold_clock(&self, cfg: &Config) {
        self.0.hold_clock(cfg);
    }
    fn listed_id(id: &SessionId) -> SessionId {
        B::listed_id(id)
    }
    fn stored_owner(owner: &Owner) -> Owner {
        B::stored_owner(owner)
    }
}

/// The keyring of the `Enc` backends: a current key and a retired one.
pub fn test_keyring() -> Keyring {
    Keyring::new("test-2026", [42; 32])
        .and_then(|k| k.with_retired("test-2025", [41; 32]))
        .expect("valid keys")
}

pub use super::id;

fn open<B: Backend>(cfg: &Config) -> (B, B::Store) {
    let loc = B::new_location();
    let store = loc.open(cfg);
    store.setup().expect("setup");
    (loc, store)
}

/// Data whose bytes check themselves: a torn or mixed write shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seed.to_le_bytes());
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn check_pattern(data: &[u8]) -> u64 {
    let seed = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    assert_eq!(
        data,
        &pattern(seed, data.len() - 8)[..],
        "torn data for seed {seed}"
    );
    seed
}

pub fn a_saved_session_loads_back_byte_for_byte<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    for (name, data) in [("binary", all_bytes), ("empty", Vec::new())] {
        let mut s = Session::new(id(name), data.clone());
        s.expires = Some(cfg.clock.now() + Duration::from_secs(3600));
        assert_eq!(s.version(), 0);
        assert_eq!(s.modified(), None);
        store.save_session(&mut s).expect("save");
        assert_eq!(s.version(), 1);
        assert!(s.modified().is_some());
        let loaded = store.load_session(&s.id).expect("load").expect("present");
        assert_eq!(loaded, s, "{name}: loaded equals saved, stamps included");
        assert_eq!(loaded.data, data);
    }
    assert_eq!(store.load_session(&id("missing")).expect("load"), None);
}

pub fn every_save_replaces_the_data_and_increments_the_version<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut s = Session::new(id("abc"), b"one".to_vec());
    for v in 1..=5u64 {
        s.data = format!("value {v}").into_bytes();
        store.save_session(&mut s).expect("save");
        assert_eq!(s.version(), v);
        let loaded = store.load_session(&s.id).expect("load").expect("present");
        assert_eq!(loaded.data, s.data);
        assert_eq!(loaded.version(), v);
    }
    // last write wins even from a stale copy
    let mut stale = Session::new(id("abc"), b"stale".to_vec());
    store.save_session(&mut stale).expect("save");
    assert_eq!(stale.version(), 6);
    assert_eq!(
        store
            .load_session(&s.id)
            .expect("load")
            .expect("present")
            .data,
        b"stale"
    );
}

pub fn a_save_over_a_stale_version_conflicts_and_writes_nothing<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut a = Session::new(id("k"), b"base".to_vec());
    store.save_session_if_unchanged(&mut a).expect("create");
    let mut b = store.load_session(&a.id).expect("load").expect("present");
    b.data = b"from b".to_vec();
    store.save_session_if_unchanged(&mut b).expect("b wins");
    assert_eq!(b.version(), 2);
    a.data = b"from a".to_vec();
    let err = store
        .save_session_if_unchanged(&mut a)
        .expect_err("a is stale");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(a.version(), 1, "a failed save leaves the session untouched");
    let stored = store.load_session(&a.id).expect("load").expect("present");
    assert_eq!(
        (stored.data.as_slice(), stored.version()),
        (&b"from b"[..], 2)
    );
}

pub fn creating_an_id_that_is_live_conflicts<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut first = Session::new(id("dup"), b"first".to_vec());
    store.save_session_if_unchanged(&mut first).expect("create");
    let mut second = Session::new(id("dup"), b"second".to_vec());
    let err = store
        .save_session_if_unchanged(&mut second)
        .expect_err("exists");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store
            .load_session(&first.id)
            .expect("load")
            .expect("present")
            .data,
        b"first"
    );
    // a deleted session may be created again
    assert!(store.delete_session(&first.id).expect("delete"));
    store
        .save_session_if_unchanged(&mut second)
        .expect("create after delete");
    assert_eq!(second.version(), 1);
}

pub fn touch_refreshes_idle_time_without_a_new_version<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let mut s = Session::new(id("t"), b"data".to_vec());
    store.save_session(&mut s).expect("save");
    let first = s.modified().expect("stamped");
    loc.advance(&cfg, Duration::from_secs(60));
    assert!(store.touch_session(&s.id).expect("touch"));
    let loaded = store.load_session(&s.id).expect("load").expect("present");
    assert_eq!(loaded.data, b"data");
    assert!(
        loaded.modified().expect("stamped") > first,
        "touch moves modified forward"
    );
    assert_eq!(
        loaded.version(),
        s.version(),
        "a touch is not a new version"
    );
    assert!(!store.touch_session(&id("absent")).expect("touch"));
    assert!(
        !store.has_session(&id("absent")).expect("has"),
        "touch never creates"
    );
}

/// `touch_session_until` moves the deadline (later, earlier, or away)
/// and refreshes `modified`, keeps the data and the version (a
/// conditional save of the session as loaded before still succeeds),
/// never creates, and a deadline in the past makes the session absent.
pub fn touch_until_moves_only_the_deadline_and_never_creates<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let start = cfg.clock.now();
    let mut s =
        Session::new(id("tu"), b"data".to_vec()).with_expires(start + Duration::from_secs(60));
    store.save_session(&mut s).expect("save");
    let first = s.modified().expect("stamped");
    loc.advance(&cfg, Duration::from_secs(50));

    let later = start + Duration::from_secs(3600);
    assert!(
        store
            .touch_session_until(&s.id, Some(later))
            .expect("touch")
    );
    let loaded = store.load_session(&s.id).expect("load").expect("present");
    assert_eq!(loaded.data, b"data", "the data is untouched");
    assert_eq!(
        loaded.version(),
        s.version(),
        "a touch is not a new version"
    );
    let mut before = s.clone();
    before.expires = Some(later);
    store
        .save_session_if_unchanged(&mut before)
        .expect("a save conditional on the version before the touch succeeds");
    let loaded = store.load_session(&s.id).expect("load").expect("present");
    assert_eq!(loaded.version(), s.version() + 1);
    assert!(
        loaded.modified().expect("stamped") > first,
        "modified moves"
    );
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis()
    };
    assert_eq!(loaded.expires.map(ms), Some(ms(later)));
    // the old deadline has passed, the new one holds
    loc.advance(&cfg, Duration::from_secs(60));
    assert!(store.has_session(&s.id).expect("has"), "extended");

    // no deadline at all
    assert!(store.touch_session_until(&s.id, None).expect("touch"));
    let loaded = store.load_session(&s.id).expect("load").expect("present");
    assert_eq!(loaded.expires, None);
    assert_eq!(loaded.data, b"data");

    // a deadline already passed ends the session
    let past = cfg.clock.now() - Duration::from_secs(1);
    assert!(store.touch_session_until(&s.id, Some(past)).expect("touch"));
    assert_eq!(store.load_session(&s.id).expect("load"), None);
    assert!(
        !store
            .touch_session_until(&s.id, Some(later + Duration::from_secs(60)))
            .expect("touch"),
        "an expired session stays gone"
    );

    // never creates
    assert!(
        !store
            .touch_session_until(&id("absent"), Some(later))
            .expect("touch")
    );
    assert!(!store.has_session(&id("absent")).expect("has"));
}

pub fn delete_removes_the_session_and_says_whether_it_was_live<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut s = Session::new(id("d"), b"x".to_vec());
    assert!(!store.has_session(&s.id).expect("has"));
    store.save_session(&mut s).expect("save");
    assert!(store.has_session(&s.id).expect("has"));
    assert!(store.delete_session(&s.id).expect("delete"));
    assert!(!store.delete_session(&s.id).expect("delete twice"));
    assert!(!store.has_session(&s.id).expect("has"));
    assert_eq!(store.load_session(&s.id).expect("load"), None);
}

pub fn iter_sessions_lists_every_live_session_once<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut want = HashMap::new();
    for i in 0..25u64 {
        let mut s = Session::new(id(&format!("s{i}")), pattern(i, 100));
        store.save_session(&mut s).expect("save");
        s.id = B::listed_id(&s.id);
        want.insert(s.id.clone(), s);
    }
    assert!(store.delete_session(&id("s3")).expect("delete"));
    want.remove(&B::listed_id(&id("s3")));
    let mut gone = Session::new(id("expired"), b"e".to_vec());
    gone.expires = Some(cfg.clock.now());
    store.save_session(&mut gone).expect("save");
    let got: HashMap<SessionId, Session> = store
        .iter_sessions()
        .expect("iter")
        .map(|r| r.map(|s| (s.id.clone(), s)))
        .collect::<Result<_, _>>()
        .expect("every item");
    assert_eq!(got, want);
}

pub fn a_session_past_its_deadline_is_absent_before_any_cleanup<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let mut s = Session::new(id("exp"), b"x".to_vec());
    s.expires = Some(cfg.clock.now() + Duration::from_secs(60));
    store.save_session(&mut s).expect("save");
    loc.advance(&cfg, Duration::from_secs(59));
    assert!(store.has_session(&s.id).expect("has"));
    loc.advance(&cfg, Duration::from_secs(2));
    assert_eq!(store.load_session(&s.id).expect("load"), None);
    assert!(!store.has_session(&s.id).expect("has"));
    assert!(!store.touch_session(&s.id).expect("touch"));
    assert_eq!(store.iter_sessions().expect("iter").count(), 0);
    // an expired session counts as absent for a conditional create
    let mut again = Session::new(id("exp"), b"new".to_vec());
    store
        .save_session_if_unchanged(&mut again)
        .expect("create over expired");
    assert_eq!(again.version(), 1);
    assert_eq!(
        store
            .load_session(&s.id)
            .expect("load")
            .expect("present")
            .data,
        b"new"
    );
}

pub fn an_idle_session_is_absent_before_any_cleanup<B: Backend>() {
    let cfg = Config {
        max_idle: Some(Duration::from_secs(30 * 60)),
        ..Config::default()
    };
    let (loc, store) = open::<B>(&cfg);
    let mut s = Session::new(id("idle"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    loc.advance(&cfg, Duration::from_secs(20 * 60));
    assert!(store.touch_session(&s.id).expect("touch"));
    loc.advance(&cfg, Duration::from_secs(20 * 60));
    assert!(
        store.has_session(&s.id).expect("has"),
        "touch restarted the idle time"
    );
    loc.advance(&cfg, Duration::from_secs(11 * 60));
    assert_eq!(store.load_session(&s.id).expect("load"), None);
    assert!(!store.has_session(&s.id).expect("has"));
    assert!(!store.touch_session(&s.id).expect("touch"));
    assert_eq!(store.iter_sessions().expect("iter").count(), 0);
}

pub fn delete_old_sessions_removes_only_idle_sessions<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    for name in ["old1", "old2", "touched"] {
        store
            .save_session(&mut Session::new(id(name), b"x".to_vec()))
            .expect("save");
    }
    loc.advance(&cfg, Duration::from_secs(2 * 3600));
    assert!(store.touch_session(&id("touched")).expect("touch"));
    store
        .save_session(&mut Session::new(id("new"), b"x".to_vec()))
        .expect("save");
    let removed = store
        .delete_old_sessions(Duration::from_secs(3600))
        .expect("delete old");
    assert_eq!(removed, 2);
    for (name, present) in [
        ("old1", false),
        ("old2", false),
        ("touched", true),
        ("new", true),
    ] {
        assert_eq!(
            store.has_session(&id(name)).expect("has"),
            present,
            "{name}"
        );
    }
    assert_eq!(
        store
            .delete_old_sessions(Duration::from_secs(3600))
            .expect("again"),
        0
    );
}

pub fn oversized_data_is_rejected_and_nothing_written<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let mut ok = Session::new(id("big"), vec![1u8; cfg.max_session_size]);
    store.save_session(&mut ok).expect("exactly the limit fits");
    let mut big = Session::new(id("big"), vec![2u8; cfg.max_session_size + 1]);
    let err = store.save_session(&mut big).expect_err("too large");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = store
        .save_session_if_unchanged(&mut big)
        .expect_err("too large");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let stored = store.load_session(&ok.id).expect("load").expect("present");
    assert_eq!(
        (stored.version(), stored.data[0]),
        (1, 1),
        "old version untouched"
    );
    let mut fresh = Session::new(id("fresh"), vec![0u8; cfg.max_session_size + 1]);
    assert!(store.save_session(&mut fresh).is_err());
    assert!(!store.has_session(&fresh.id).expect("has"));
}

pub fn invalid_ids_are_rejected() {
    for bad in ["", "../x", "a/b", "a.b", "has space", "ü", "x\0"] {
        assert!(
            matches!(SessionId::new(bad), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
    }
}

pub fn setup_is_idempotent_and_keeps_sessions<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    store
        .save_session(&mut Session::new(id("keep"), b"x".to_vec()))
        .expect("save");
    store.setup().expect("setup again");
    assert!(store.has_session(&id("keep")).expect("has"));
    if B::PERSISTENT {
        let other = loc.open(&cfg);
        other.setup().expect("setup from a second handle");
        assert!(other.has_session(&id("keep")).expect("has"));
    }
}

pub fn threads_save_and_load_without_loss_or_tearing<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    assert!(store.is_thread_safe());
    let store = Arc::new(store);
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 60;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for r in 0..ROUNDS {
                    // own id: every save must be seen by the next load
                    let own = id(&format!("own-{t}"));
                    let mut s = Session::new(
                        own.clone(),
                        pattern(t << 32 | r, 300 + (r as usize * 37) % 900),
                    );
                    store.save_session(&mut s).expect("save own");
                    let back = store
                        .load_session(&own)
                        .expect("load own")
                        .expect("present");
                    assert_eq!(check_pattern(&back.data), t << 32 | r);
                    // shared ids: any complete value is fine, a torn one is not
                    let shared = id(&format!("shared-{}", r % 4));
                    let mut s = Session::new(shared.clone(), pattern(t << 32 | r, 500));
                    store.save_session(&mut s).expect("save shared");
                    if let Some(got) = store.load_session(&shared).expect("load shared") {
                        check_pattern(&got.data);
                    }
                    // a counter incremented only through conditional saves
                    loop {
                        let cid = id("counter");
                        let mut c = store
                            .load_session(&cid)
                            .expect("load counter")
                            .unwrap_or_else(|| Session::new(cid, 0u64.to_le_bytes().to_vec()));
                        let n = u64::from_le_bytes(c.data[..8].try_into().expect("8 bytes"));
                        c.data = (n + 1).to_le_bytes().to_vec();
                        match store.save_session_if_unchanged(&mut c) {
                            Ok(()) => break,
                            Err(e) if e.is_conflict() => continue,
                            Err(e) => panic!("counter save: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    for t in 0..THREADS {
        let s = store
            .load_session(&id(&format!("own-{t}")))
            .expect("load")
            .expect("present");
        assert_eq!(check_pattern(&s.data), t << 32 | (ROUNDS - 1));
        assert_eq!(s.version(), ROUNDS);
    }
    let c = store
        .load_session(&id("counter"))
        .expect("load")
        .expect("present");
    assert_eq!(
        u64::from_le_bytes(c.data[..8].try_into().expect("8")),
        THREADS * ROUNDS,
        "no lost update"
    );
    assert_eq!(c.version(), THREADS * ROUNDS);
}

pub fn every_session_survives_a_reopen_with_its_version<B: Backend>() {
    if !B::PERSISTENT {
        return;
    }
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let mut want = HashMap::new();
    for i in 0..40u64 {
        let mut s = Session::new(id(&format!("p{i}")), pattern(i, (i as usize * 131) % 2000));
        if i % 3 == 0 {
            s.expires = Some(cfg.clock.now() + Duration::from_secs(86_400));
        }
        store.save_session(&mut s).expect("save");
        if i % 5 == 0 {
            store.save_session(&mut s).expect("save again");
        }
        want.insert(s.id.clone(), s);
    }
    for i in (0..40).step_by(7) {
        let gone = id(&format!("p{i}"));
        assert!(store.delete_session(&gone).expect("delete"));
        want.remove(&gone);
    }
    loc.advance(&cfg, Duration::from_secs(5));
    assert!(store.touch_session(&id("p1")).expect("touch"));
    let touched = store
        .load_session(&id("p1"))
        .expect("load")
        .expect("present");
    want.insert(touched.id.clone(), touched);
    drop(store);
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    for (k, s) in &want {
        assert_eq!(
            store.load_session(k).expect("load").as_ref(),
            Some(s),
            "{k}"
        );
    }
    assert_eq!(store.iter_sessions().expect("iter").count(), want.len());
    let mut next = want[&id("p2")].clone();
    store
        .save_session_if_unchanged(&mut next)
        .expect("versions survive reopen");
}

fn owner(s: &str) -> Owner {
    Owner::new(s).expect("valid owner")
}

/// Saves a session `name` for `who` (or no one) and returns it.
fn save_owned<S: SessionStore>(store: &S, name: &str, who: Option<&Owner>) -> Session {
    let mut s = Session::new(id(name), name.as_bytes().to_vec());
    s.owner = who.cloned();
    store.save_session(&mut s).expect("save");
    s
}

fn listed<B: Backend>(store: &B::Store, who: &Owner) -> Vec<SessionId> {
    store
        .sessions_of(who)
        .expect("sessions_of")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

pub fn sessions_of_lists_an_owners_live_sessions_newest_first<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let (alice, bob) = (owner("alice@example.com"), owner("bob"));
    let mut saved = Vec::new();
    for name in ["a-laptop", "a-phone", "a-tablet"] {
        saved.push(save_owned(&store, name, Some(&alice)));
        loc.advance(&cfg, Duration::from_millis(10));
    }
    save_owned(&store, "b-laptop", Some(&bob));
    save_owned(&store, "nobody", None);
    let mut soon = Session::new(id("a-expiring"), b"x".to_vec()).with_owner(alice.clone());
    soon.expires = Some(cfg.clock.now() + Duration::from_secs(1));
    store.save_session(&mut soon).expect("save");
    assert_eq!(saved[0].owner.as_ref(), Some(&alice), "the caller's owner");

    let list = store.sessions_of(&alice).expect("sessions_of");
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(list[0].id, B::listed_id(&soon.id), "newest first");
    let expected = SessionInfo::new(
        B::listed_id(&saved[0].id),
        Some(alice.clone()),
        saved[0].modified().expect("saved"),
        None,
        1,
        b"a-laptop".len(),
    );
    assert_eq!(list[3], expected, "every field, the owner as asked");
    assert_eq!(
        listed::<B>(&store, &bob),
        vec![B::listed_id(&id("b-laptop"))]
    );
    assert!(listed::<B>(&store, &owner("carol")).is_empty());

    // Expired: gone from the listing before any cleanup.
    loc.advance(&cfg, Duration::from_secs(2));
    assert_eq!(
        listed::<B>(&store, &alice),
        ["a-tablet", "a-phone", "a-laptop"]
            .map(|n| B::listed_id(&id(n)))
            .to_vec()
    );
    // A load gives the owner back (as stored); a save with another owner
    // moves the session, one with none clears it; a touch keeps it.
    let loaded = store
        .load_session(&id("a-phone"))
        .expect("load")
        .expect("live");
    assert_eq!(loaded.owner, Some(B::stored_owner(&alice)));
    let mut moved = loaded.clone();
    moved.owner = Some(bob.clone());
    store.save_session(&mut moved).expect("move");
    let mut cleared = store
        .load_session(&id("a-tablet"))
        .expect("load")
        .expect("live");
    cleared.owner = None;
    store.save_session(&mut cleared).expect("clear");
    assert!(store.touch_session(&id("a-laptop")).expect("touch"));
    assert_eq!(
        listed::<B>(&store, &alice),
        vec![B::listed_id(&id("a-laptop"))]
    );
    let mut bobs = listed::<B>(&store, &bob);
    bobs.sort();
    let mut want = vec![B::listed_id(&id("a-phone")), B::listed_id(&id("b-laptop"))];
    want.sort();
    assert_eq!(bobs, want);
    // Deleted: gone.
    assert!(store.delete_session(&id("a-laptop")).expect("delete"));
    assert!(listed::<B>(&store, &alice).is_empty());

    if B::PERSISTENT {
        drop(store);
        let store = loc.open(&cfg);
        let mut bobs = listed::<B>(&store, &bob);
        bobs.sort();
        assert_eq!(bobs, want, "the owners survive a reopen");
        assert!(listed::<B>(&store, &alice).is_empty());
        let again = store
            .load_session(&id("a-phone"))
            .expect("load")
            .expect("live");
        assert_eq!(again.owner, Some(B::stored_owner(&bob)));
    }
}

pub fn delete_sessions_of_logs_an_owner_out_everywhere_but_here<B: Backend>() {
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let (alice, bob) = (owner("alice"), owner("bob"));
    for i in 0..5 {
        save_owned(&store, &format!("a{i}"), Some(&alice));
    }
    save_owned(&store, "b0", Some(&bob));
    save_owned(&store, "n0", None);
    assert_eq!(
        store
            .delete_sessions_of(&alice, Some(&id("a2")))
            .expect("delete"),
        4
    );
    assert_eq!(listed::<B>(&store, &alice), vec![B::listed_id(&id("a2"))]);
    for i in [0, 1, 3, 4] {
        assert!(!store.has_session(&id(&format!("a{i}"))).expect("has"));
    }
    assert!(store.has_session(&id("a2")).expect("kept"));
    assert!(store.has_session(&id("b0")).expect("other owner kept"));
    assert!(store.has_session(&id("n0")).expect("no owner kept"));
    assert_eq!(store.delete_sessions_of(&alice, None).expect("delete"), 1);
    assert_eq!(store.delete_sessions_of(&alice, None).expect("delete"), 0);
    assert!(listed::<B>(&store, &alice).is_empty());
    assert_eq!(listed::<B>(&store, &bob).len(), 1);
}

pub fn erase_sessions_of_removes_every_session_of_the_owner<B: Backend>() {
    let cfg = Config::default();
    let (loc, store) = open::<B>(&cfg);
    let (alice, bob) = (owner("alice"), owner("bob"));
    for i in 0..3 {
        save_owned(&store, &format!("a{i}"), Some(&alice));
    }
    save_owned(&store, "b0", Some(&bob));
    assert_eq!(store.erase_sessions_of(&alice).expect("erase"), 3);
    assert!(listed::<B>(&store, &alice).is_empty());
    assert!(!store.has_session(&id("a0")).expect("has"));
    assert!(store.has_session(&id("b0")).expect("other owner kept"));
    assert_eq!(store.erase_sessions_of(&alice).expect("erase again"), 0);
    if B::PERSISTENT {
        drop(store);
        let store = loc.open(&cfg);
        assert!(listed::<B>(&store, &alice).is_empty());
        assert_eq!(listed::<B>(&store, &bob).len(), 1);
    }
}

/// A save racing `delete_sessions_of` for the same owner: every session
/// whose save returned before the delete began is gone when it returns,
/// and no session of another owner is touched.
pub fn delete_sessions_of_races_saves_of_the_same_owner<B: Backend>() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cfg = Config::default();
    let (_loc, store) = open::<B>(&cfg);
    let store = Arc::new(store);
    let (alice, bob) = (owner("alice"), owner("bob"));
    let saved = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let saver = {
        let (store, saved, barrier) =
            (Arc::clone(&store), Arc::clone(&saved), Arc::clone(&barrier));
        let (alice, bob) = (alice.clone(), bob.clone());
        thread::spawn(move || {
            barrier.wait();
            for i in 0..200 {
                save_owned(&*store, &format!("a{i}"), Some(&alice));
                save_owned(&*store, &format!("b{i}"), Some(&bob));
                saved.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    barrier.wait();
    let mut rounds = 0;
    loop {
        // Ends when the saver does, whether it finished or failed.
        let finished = saver.is_finished();
        let before = saved.load(Ordering::SeqCst);
        store.delete_sessions_of(&alice, None).expect("delete");
        for i in 0..before {
            assert!(
                !store.has_session(&id(&format!("a{i}"))).expect("has"),
                "a{i}, saved before the delete began, survived it"
            );
        }
        rounds += 1;
        if finished {
            break;
        }
    }
    saver.join().expect("saver");
    assert!(rounds >= 1);
    assert!(listed::<B>(&store, &alice).is_empty());
    assert_eq!(
        listed::<B>(&store, &bob).len(),
        200,
        "other owners untouched"
    );
}

/// `max_sessions_per_owner`: the newest login wins, the least recently
/// modified others go; other owners and re-saves are unaffected.
pub fn a_save_over_the_owner_limit_deletes_the_least_recently_modified<B: Backend>() {
    let cfg = Config {
        max_sessions_per_owner: Some(2),
        ..Config::default()
    };
    let (loc, store) = open::<B>(&cfg);
    let alice = owner("alice");
    save_owned(&store, "a0", Some(&alice));
    loc.advance(&cfg, Duration::from_millis(5));
    save_owned(&store, "a1", Some(&alice));
    loc.advance(&cfg, Duration::from_millis(5));
    // a0 is used again: a1 is now the least recently modified.
    assert!(store.touch_session(&id("a0")).expect("touch"));
    loc.advance(&cfg, Duration::from_millis(5));
    save_owned(&store, "b0", Some(&owner("bob")));
    save_owned(&store, "n0", None);
    save_owned(&store, "a2", Some(&alice));
    assert_eq!(
        listed::<B>(&store, &alice),
        vec![B::listed_id(&id("a2")), B::listed_id(&id("a0"))]
    );
    assert!(!store.has_session(&id("a1")).expect("has"));
    assert!(store.has_session(&id("b0")).expect("has"));
    assert!(store.has_session(&id("n0")).expect("has"));
    // Saving one of the owner's sessions again deletes nothing.
    save_owned(&store, "a0", Some(&alice));
    assert_eq!(listed::<B>(&store, &alice).len(), 2);
}

/// Holds the store's clock (`Backend::hold_clock`), then saves `login` for
/// `who`; the time the store stamped it with.
fn save_held<B: Backend>(
    loc: &B,
    cfg: &Config,
    store: &B::Store,
    login: &SessionId,
    who: &Owner,
) -> Option<SystemTime> {
    loc.hold_clock(cfg);
    let mut s = Session::new(login.clone(), b"login".to_vec());
    s.owner = Some(who.clone());
    store.save_session(&mut s).expect("save");
    s.modified()
}

/// Runs `round(n)` for owners `n` = 0, 1, … until, for even and for odd
/// `n` alike (the two orders of ids), three rounds said `Some(true)` (their
/// saves fell in one millisecond, the case under test), at most 400; a
/// round says `None` if its times went back and it checked nothing. Fails
/// naming `tie` if too few rounds tied.
fn until_tied(tie: &str, mut round: impl FnMut(usize) -> Option<bool>) {
    let mut checked = 0;
    let mut tied = [0; 2];
    for n in 0..400 {
        if tied.iter().all(|&t| t >= 3) {
            break;
        }
        let Some(was_tied) = round(n) else {
            continue;
        };
        checked += 1;
        if was_tied {
            tied[n % 2] += 1;
        }
    }
    assert!(
        tied.iter().all(|&t| t >= 3),
        "too few rounds had {tie} in one millisecond ({tied:?} of {checked} checked)"
    );
}

/// `max_sessions_per_owner` logs out the oldest of logins made within one
/// millisecond: three logins in a row with a cap of 2 keep the two newest.
/// The clock does not move between them, and half the owners save their
/// ids in descending order, half in ascending order, so that an order by
/// id, in either direction, logs out the wrong one for some owners.
///
/// A server store reads its own clock plus the test's offset (in whole ms),
/// which the test sets back before each save so that the saves fall in one
/// millisecond most of the time. The server reads its clock a little after
/// that, so a save can land one millisecond before the one made ahead of
/// it: that owner's logins are then not in the order they were made, as
/// far as the store can know, and are not checked. Owners log in until, for
/// each order of ids, three had their first two logins in one millisecond
/// (the case an order by id gets wrong; every owner for a store that reads
/// the test's clock), at most 400; every round whose times never go back
/// is checked.
pub fn the_owner_limit_evicts_the_oldest_of_logins_made_in_one_millisecond<B: Backend>() {
    let cfg = Config {
        max_sessions_per_owner: Some(2),
        ..Config::default()
    };
    let (loc, store) = open::<B>(&cfg);
    let orders = [["z", "m", "a"], ["a", "m", "z"]];
    until_tied("the first two logins", |n| {
        let who = owner(&format!("user-{n:03}"));
        let logins = orders[n % 2].map(|l| id(&format!("{l}-{n:03}")));
        let times = logins
            .each_ref()
            .map(|login| save_held(&loc, &cfg, &store, login, &who));
        if times.windows(2).any(|w| w[1] < w[0]) {
            return None;
        }
        let [first, second, third] = logins;
        assert!(
            !store.has_session(&first).expect("has"),
            "owner {n}: the first login is logged out"
        );
        assert_eq!(
            listed::<B>(&store, &who),
            vec![B::listed_id(&third), B::listed_id(&second)],
            "owner {n}: the two newest logins stay, the newest listed first"
        );
        Some(times[0] == times[1])
    });
}

/// A touch is a modification: of two sessions, the one touched after the
/// other was saved, in the same millisecond, is the newer. With a cap of
/// 2, `a` saved, `b` saved, `a` touched and then `c` saved logs `b` out,
/// and lists `c` then `a`. Ids alternate between both orders, and server
/// stores' clocks are held, as in the test above; rounds whose times go
/// back are not checked, and the test needs, for each order of ids, three
/// rounds where `b`'s save and `a`'s touch fell in one millisecond.
pub fn a_touch_in_the_same_millisecond_makes_a_session_the_newest<B: Backend>() {
    let cfg = Config {
        max_sessions_per_owner: Some(2),
        ..Config::default()
    };
    let (loc, store) = open::<B>(&cfg);
    let orders = [["a", "m", "z"], ["z", "m", "a"]];
    until_tied("b's save and a's touch", |n| {
        let who = owner(&format!("toucher-{n:03}"));
        let [a, b, c] = orders[n % 2].map(|l| id(&format!("{l}-{n:03}")));
        let t0 = save_held(&loc, &cfg, &store, &a, &who);
        let t1 = save_held(&loc, &cfg, &store, &b, &who);
        loc.hold_clock(&cfg);
        assert!(store.touch_session(&a).expect("touch"));
        let t2 = store
            .load_session(&a)
            .expect("load")
            .expect("a is live")
            .modified();
        let t3 = save_held(&loc, &cfg, &store, &c, &who);
        if !(t0 <= t1 && t1 <= t2 && t2 <= t3) {
            return None;
        }
        assert!(
            !store.has_session(&b).expect("has"),
            "owner {n}: b, not touched since its save, is logged out"
        );
        assert_eq!(
            listed::<B>(&store, &who),
            vec![B::listed_id(&c), B::listed_id(&a)],
            "owner {n}: c, then a (touched after b's save)"
        );
        Some(t1 == t2)
    });
}

/// Expands to one `#[test]` per conformance check for a backend type.
#[macro_export]
macro_rules! conformance {
    ($modname:ident, $backend:ty) => {
        mod $modname {
            use super::*;
            #[test]
            fn a_saved_session_loads_back_byte_for_byte() {
                conformance::a_saved_session_loads_back_byte_for_byte::<$backend>()
            }
            #[test]
            fn every_save_replaces_the_data_and_increments_the_version() {
                conformance::every_save_replaces_the_data_and_increments_the_version::<$backend>()
            }
            #[test]
            fn a_save_over_a_stale_version_conflicts_and_writes_nothing() {
                conformance::a_save_over_a_stale_version_conflicts_and_writes_nothing::<$backend>()
            }
            #[test]
            fn creating_an_id_that_is_live_conflicts() {
                conformance::creating_an_id_that_is_live_conflicts::<$backend>()
            }
            #[test]
            fn touch_refreshes_idle_time_without_a_new_version() {
                conformance::touch_refreshes_idle_time_without_a_new_version::<$backend>()
            }
            #[test]
            fn touch_until_moves_only_the_deadline_and_never_creates() {
                conformance::touch_until_moves_only_the_deadline_and_never_creates::<$backend>()
            }
            #[test]
            fn delete_removes_the_session_and_says_whether_it_was_live() {
                conformance::delete_removes_the_session_and_says_whether_it_was_live::<$backend>()
            }
            #[test]
            fn iter_sessions_lists_every_live_session_once() {
                conformance::iter_sessions_lists_every_live_session_once::<$backend>()
            }
            #[test]
            fn a_session_past_its_deadline_is_absent_before_any_cleanup() {
                conformance::a_session_past_its_deadline_is_absent_before_any_cleanup::<$backend>()
            }
            #[test]
            fn an_idle_session_is_absent_before_any_cleanup() {
                conformance::an_idle_session_is_absent_before_any_cleanup::<$backend>()
            }
            #[test]
            fn delete_old_sessions_removes_only_idle_sessions() {
                conformance::delete_old_sessions_removes_only_idle_sessions::<$backend>()
            }
            #[test]
            fn oversized_data_is_rejected_and_nothing_written() {
                conformance::oversized_data_is_rejected_and_nothing_written::<$backend>()
            }
            #[test]
            fn invalid_ids_are_rejected() {
                conformance::invalid_ids_are_rejected()
            }
            #[test]
            fn setup_is_idempotent_and_keeps_sessions() {
                conformance::setup_is_idempotent_and_keeps_sessions::<$backend>()
            }
            #[test]
            fn threads_save_and_load_without_loss_or_tearing() {
                conformance::threads_save_and_load_without_loss_or_tearing::<$backend>()
            }
            #[test]
            fn sessions_of_lists_an_owners_live_sessions_newest_first() {
                conformance::sessions_of_lists_an_owners_live_sessions_newest_first::<$backend>()
            }
            #[test]
            fn delete_sessions_of_logs_an_owner_out_everywhere_but_here() {
                conformance::delete_sessions_of_logs_an_owner_out_everywhere_but_here::<$backend>()
            }
            #[test]
            fn erase_sessions_of_removes_every_session_of_the_owner() {
                conformance::erase_sessions_of_removes_every_session_of_the_owner::<$backend>()
            }
            #[test]
            fn delete_sessions_of_races_saves_of_the_same_owner() {
                conformance::delete_sessions_of_races_saves_of_the_same_owner::<$backend>()
            }
            #[test]
            fn a_save_over_the_owner_limit_deletes_the_least_recently_modified() {
                conformance::a_save_over_the_owner_limit_deletes_the_least_recently_modified::<
                    $backend,
                >()
            }
            #[test]
            fn the_owner_limit_evicts_the_oldest_of_logins_made_in_one_millisecond() {
                conformance::the_owner_limit_evicts_the_oldest_of_logins_made_in_one_millisecond::<
                    $backend,
                >()
            }
            #[test]
            fn a_touch_in_the_same_millisecond_makes_a_session_the_newest() {
                conformance::a_touch_in_the_same_millisecond_makes_a_session_the_newest::<$backend>(
                )
            }
            #[test]
            fn every_session_survives_a_reopen_with_its_version() {
                conformance::every_session_survives_a_reopen_with_its_version::<$backend>()
            }
        }
    };
}
