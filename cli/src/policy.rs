//! `sessionlog policy`: show or change the rules a store records for every
//! process (idle limit, quota, what a full store does); and the lines of
//! `stats` that say how far the store is from its quota and its reserve.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sessionlog::{LogOptions, Stats, StorePolicy, WhenFull};

use crate::{Outcome, fmt_bytes, open_existing, parse_duration};

/// What a save does once the quota is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WhenFullArg {
    /// The save fails and writes nothing (the default).
    Refuse,
    /// The sessions used least recently are deleted to make room.
    EvictOldest,
}

impl From<WhenFullArg> for WhenFull {
    fn from(w: WhenFullArg) -> WhenFull {
        match w {
            WhenFullArg::Refuse => WhenFull::Refuse,
            WhenFullArg::EvictOldest => WhenFull::EvictOldest,
        }
    }
}

/// The rules a store records, as options of `setup` and `policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Sessions idle this long are gone, for every process (e.g. 30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_max_idle")]
    max_idle: Option<Duration>,
    /// No idle limit.
    #[arg(long)]
    no_max_idle: bool,
    /// Quota: at most N live sessions.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "no_max_sessions")]
    max_sessions: Option<u64>,
    /// No session quota.
    #[arg(long)]
    no_max_sessions: bool,
    /// Quota: at most N bytes of live sessions' records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "no_max_bytes")]
    max_bytes: Option<u64>,
    /// No byte quota.
    #[arg(long)]
    no_max_bytes: bool,
    /// What a save does once a quota is reached.
    #[arg(long, value_enum, value_name = "WHAT")]
    when_full: Option<WhenFullArg>,
}

impl PolicyArgs {
    /// Whether any rule is given.
    fn any(&self) -> bool {
        self.max_idle.is_some()
            || self.no_max_idle
            || self.max_sessions.is_some()
            || self.no_max_sessions
            || self.max_bytes.is_some()
            || self.no_max_bytes
            || self.when_full.is_some()
    }

    /// `p` with the rules given here.
    fn apply(&self, mut p: StorePolicy) -> StorePolicy {
        if self.max_idle.is_some() || self.no_max_idle {
            p.max_idle = self.max_idle;
        }
        if self.max_sessions.is_some() || self.no_max_sessions {
            p.max_sessions = self.max_sessions;
        }
        if self.max_bytes.is_some() || self.no_max_bytes {
            p.max_bytes = self.max_bytes;
        }
        if let Some(w) = self.when_full {
            p.when_full = w.into();
        }
        p
    }

    /// Options that record these rules in a new store (and, for an
    /// existing one, must agree with what it records).
    pub fn options(&self, mut o: LogOptions) -> LogOptions {
        let p = self.apply(StorePolicy::default());
        if let Some(d) = p.max_idle {
            o = o.max_idle(d);
        }
        if let Some(n) = p.max_sessions {
            o = o.max_sessions(n);
        }
        if let Some(n) = p.max_bytes {
            o = o.max_bytes(n);
        }
        if let Some(w) = self.when_full {
            o = o.when_full(w.into());
        }
        o
    }
}

/// `sessionlog policy PATH [rules]`: shows the store's rules, or records
/// the ones given (a compaction, which every process follows).
pub fn policy(path: &Path, args: &PolicyArgs, as_json: bool) -> Outcome {
    let store = open_existing(path)?;
    let mut p = store.policy()?;
    if args.any() {
        p = args.apply(p);
        store.set_policy(p)?;
    }
    let recorded = store.stats()?.policy_recorded;
    let mut out = io::stdout().lock();
    if as_json {
        writeln!(out, "{}", policy_json(&p, recorded))?;
    } else {
        writeln!(out, "{}", describe(&p, recorded))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn when_full_name(w: WhenFull) -> &'static str {
    match w {
        WhenFull::EvictOldest => "evict-oldest",
        _ => "refuse",
    }
}

fn policy_json(p: &StorePolicy, recorded: bool) -> Value {
    json!({
        "max_idle_ms": p.max_idle.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "max_sessions": p.max_sessions,
        "max_bytes": p.max_bytes,
        "when_full": when_full_name(p.when_full),
        "recorded": recorded,
    })
}

/// One line: `max idle 30m; quota 1000 sessions, 64.0 MiB; when full: refuse`.
fn describe(p: &StorePolicy, recorded: bool) -> String {
    let idle = p.max_idle.map_or("none".to_owned(), |d| {
        humantime::format_duration(d).to_string()
    });
    let sessions = p
        .max_sessions
        .map_or("no session limit".to_owned(), |n| format!("{n} sessions"));
    let bytes = p.max_bytes.map_or("no byte limit".to_owned(), fmt_bytes);
    let whose = if recorded {
        "recorded in the store"
    } else {
        "not recorded yet: each process applies its own until the next compaction"
    };
    format!(
        "max idle {idle}; quota {sessions}, {bytes}; when full: {} ({whose})",
        when_full_name(p.when_full)
    )
}

/// `used of limit (N to go)`, or `used (no limit)`.
fn distance(used: u64, limit: Option<u64>, show: impl Fn(u64) -> String) -> String {
    match limit {
        Some(l) if used >= l => format!("{} of {} (reached)", show(used), show(l)),
        Some(l) => format!("{} of {} ({} to go)", show(used), show(l), show(l - used)),
        None => format!("{} (no limit)", show(used)),
    }
}

/// The lines of `stats` about the policy, the quota and the reserve.
pub fn stats_lines(out: &mut impl Write, s: &Stats) -> io::Result<()> {
    let live = s.sessions - s.expired;
    writeln!(
        out,
        "policy:          {}",
        describe(&s.policy, s.policy_recorded)
    )?;
    writeln!(
        out,
        "quota sessions:  {}",
        distance(live, s.policy.max_sessions, |n| n.to_string())
    )?;
    writeln!(
        out,
        "quota bytes:     {}",
        distance(s.used_bytes, s.policy.max_bytes, fmt_bytes)
    )?;
    let reserve = if s.reserve_target == 0 {
        "none kept".to_owned()
    } else if s.reserve_bytes >= s.reserve_target {
        format!("{} (whole)", fmt_bytes(s.reserve_bytes))
    } else {
        format!(
            "{} of {} (given back on a full disk: made again when there is room)",
            fmt_bytes(s.reserve_bytes),
            fmt_bytes(s.reserve_target)
        )
    };
    writeln!(out, "space reserve:   {reserve}")?;
    if let Some(free) = s.free_bytes {
        let missing = s.reserve_target.saturating_sub(s.reserve_bytes);
        let note = if free >= missing {
            format!("{} for saves", fmt_bytes(free - missing))
        } else {
            "saves that grow the log are refused until space is freed".to_owned()
        };
        writeln!(out, "disk free:       {} ({note})", fmt_bytes(free))?;
    }
    Ok(())
}

/// The same, for `stats --json`.
pub fn stats_json(s: &Stats) -> Value {
    json!({
        "policy": policy_json(&s.policy, s.policy_recorded),
        "used_bytes": s.used_bytes,
        "reserve_bytes": s.reserve_bytes,
        "reserve_target": s.reserve_target,
        "free_bytes": s.free_bytes,
    })
}
