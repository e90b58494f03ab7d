//! Model-based tests: random operation sequences (saves, conditional saves,
//! loads, touches, deletes, expiry, compaction, reopen, simulated crash,
//! clock steps forward and back) run against each backend (plain and
//! through `Encrypted<_>`) and a `HashMap`-like model,
//! checked after every step; proptest shrinks a failure to a minimal
//! sequence. Guards every `SessionStore` promise the model encodes, and
//! for `LogStore` that a crash loses at most a suffix of the unsynced
//! operations and never yields data that was not saved.
//!
//! `PROPTEST_CASES` sets the number of cases per backend (default 64).
//! The model itself is in `tests/support/model.rs`, shared with the
//! `ops` fuzz target.

#[path = "support/model.rs"]
mod model;

use model::{Backend, Config, Crash, Damage, IDS, MAX_SIZE, OWNERS, Op, VersionPick};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use sessionlog::SyncPolicy;

/// Which operations a backend supports.
#[derive(Clone, Copy)]
struct Caps {
    reopen: bool,
    log: bool,
    /// Two handles on one store.
    switch: bool,
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..8),
        1 => vec(any::<u8>(), MAX_SIZE - 2..MAX_SIZE + 3),
    ]
}

fn expires_in() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![2 => Just(None), 1 => (0u16..3000).prop_map(Some)]
}

fn version_pick() -> impl Strategy<Value = VersionPick> {
    prop_oneof![
        3 => Just(VersionPick::Current),
        1 => Just(VersionPick::Stale),
        1 => Just(VersionPick::Ahead),
        1 => Just(VersionPick::Zero),
    ]
}

fn crash() -> impl Strategy<Value = Crash> {
    let damage = prop_oneof![
        Just(Damage::None),
        Just(Damage::Truncate),
        Just(Damage::Zeros),
        any::<u64>().prop_map(Damage::Garbage),
    ];
    (any::<u32>(), damage, any::<bool>()).prop_map(|(at, damage, rewind)| Crash {
        at,
        damage,
        rewind,
    })
}

fn op(caps: Caps) -> BoxedStrategy<Op> {
    let id = 0..IDS;
    let common = prop_oneof![
        4 => (id.clone(), data(), expires_in()).prop_map(|(id, data, expires_in)| Op::Save {
            id,
            data,
            expires_in
        }),
        3 => (id.clone(), data(), expires_in(), version_pick()).prop_map(
            |(id, data, expires_in, version)| Op::SaveIfUnchanged {
                id,
                data,
                expires_in,
                version
            }
        ),
        2 => id.clone().prop_map(Op::Load),
        1 => id.clone().prop_map(Op::Has),
        2 => id.clone().prop_map(Op::Touch),
        2 => id.clone().prop_map(Op::Delete),
        3 => (id.clone(), data(), 0..OWNERS).prop_map(|(id, data, owner)| Op::SaveOwned {
            id,
            data,
            owner
        }),
        1 => (0..OWNERS).prop_map(Op::SessionsOf),
        1 => (0..OWNERS, proptest::option::of(id)).prop_map(|(owner, keep)| {
            Op::DeleteSessionsOf { owner, keep }
        }),
        1 => (0..OWNERS).prop_map(Op::EraseSessionsOf),
        1 => Just(Op::Iter),
        1 => prop_oneof![Just(0u16), Just(500), Just(1000), Just(2500)].prop_map(Op::DeleteOld),
        3 => (0u16..1500).prop_map(Op::Advance),
        1 => (0u16..1500).prop_map(Op::Rewind),
    ];
    // Without a second handle the slot goes to another read.
    let switch = if caps.switch { Op::Switch } else { Op::Iter };
    match caps {
        Caps { log: true, .. } => prop_oneof![
            20 => common,
            1 => Just(Op::Compact),
            2 => Just(Op::Sync),
            1 => Just(Op::Reopen),
            3 => crash().prop_map(Op::Crash),
            2 => Just(switch),
        ]
        .boxed(),
        Caps { reopen: true, .. } => prop_oneof![
            20 => common,
            1 => Just(Op::Sync),
            2 => Just(Op::Reopen),
            2 => Just(switch),
        ]
        .boxed(),
        _ => common.boxed(),
    }
}

fn max_idle() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(1000u64))]
}

fn proptest_config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

fn check(backend: Backend, max_idle_ms: Option<u64>, ops: &[Op]) -> Result<(), TestCaseError> {
    check_with(backend, false, max_idle_ms, ops)
}

/// As [`check`], through `Encrypted<_>` if `encrypted`.
fn check_with(
    backend: Backend,
    encrypted: bool,
    max_idle_ms: Option<u64>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let cfg = Config {
        backend,
        max_idle_ms,
        encrypted,
    };
    model::run(cfg, ops, dir.path()).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn memory_store_matches_model(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: false, log: false, switch: false }), 0..40),
    ) {
        check(Backend::Memory, idle, &ops)?;
    }

    #[test]
    fn dir_store_matches_model(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: false, switch: true }), 0..40),
    ) {
        check(Backend::Dir, idle, &ops)?;
    }

    #[test]
    fn log_store_matches_model_across_crashes(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: true, switch: false }), 0..40),
    ) {
        check(Backend::Log(SyncPolicy::Never), idle, &ops)?;
    }

    /// As above with two handles on the store, as two processes.
    #[test]
    fn log_store_two_handles_match_model_across_crashes(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: true, switch: true }), 0..40),
    ) {
        check(Backend::Log(SyncPolicy::Never), idle, &ops)?;
    }

    #[test]
    fn log_store_sync_always_loses_nothing_in_a_crash(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: true, switch: true }), 0..40),
    ) {
        check(Backend::Log(SyncPolicy::Always), idle, &ops)?;
    }

    /// The backends through `Encrypted<_>` (issue 29): the wrapper keeps
    /// every promise the model encodes, crashes and two handles included.
    #[test]
    fn encrypted_memory_store_matches_model(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: false, log: false, switch: false }), 0..40),
    ) {
        check_with(Backend::Memory, true, idle, &ops)?;
    }

    #[test]
    fn encrypted_dir_store_matches_model(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: false, switch: true }), 0..40),
    ) {
        check_with(Backend::Dir, true, idle, &ops)?;
    }

    #[test]
    fn encrypted_log_store_two_handles_match_model_across_crashes(
        idle in max_idle(),
        ops in vec(op(Caps { reopen: true, log: true, switch: true }), 0..40),
    ) {
        check_with(Backend::Log(SyncPolicy::Never), true, idle, &ops)?;
    }
}

/// Shrunk sequences worth keeping as plain tests.
mod sequences {
    use super::*;

    fn save(id: u8) -> Op {
        Op::Save {
            id,
            data: vec![id],
            expires_in: None,
        }
    }

    /// `sync()` on a handle that has just followed another handle's
    /// compaction must make that handle's later appends durable too.
    #[test]
    fn sync_after_following_a_compaction_covers_the_other_handles_appends() {
        let ops = [
            Op::Compact,
            save(1),
            Op::Switch,
            Op::Sync,
            Op::Crash(Crash {
                at: 0,
                damage: Damage::Truncate,
                rewind: false,
            }),
        ];
        let r = check(Backend::Log(SyncPolicy::Never), None, &ops);
        assert!(r.is_ok(), "{r:?}");
    }
}
