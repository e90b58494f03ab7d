//! Metrics and traces: the one seam through which every store reports what
//! it does (cargo features `metrics` and `tracing`).
//!
//! A store keeps one [`Meters`], made at open, and calls it at a few
//! points: around each `SessionStore` call ([`Meters::call`]), after a
//! sync, a compaction, a background error, and when it refreshes its
//! gauges. Without the features every one of those calls compiles to
//! nothing (the types are empty). With `metrics`, the handles are
//! registered once, at open, with the recorder then installed; with none
//! installed (the `metrics` crate's no-op recorder, a zero-sized type)
//! nothing is registered and no clock is read, so the cost is one branch
//! per call. DESIGN.md §16 lists the names, and what no label or field
//! may hold: a session id, session data, a password.

#[cfg(feature = "metrics")]
mod meters;
#[cfg(feature = "tracing")]
mod trace;

use std::path::Path;

use crate::engine::GaugeReading;
use crate::error::{Error, Result};

/// Which kind of store reports: the `backend` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Log,
    Dir,
    Memory,
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    MySql,
    #[cfg(feature = "redis")]
    Redis,
}

impl Backend {
    /// The label's value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Log => "log",
            Backend::Dir => "dir",
            Backend::Memory => "memory",
            #[cfg(feature = "postgres")]
            Backend::Postgres => "postgres",
            #[cfg(feature = "mysql")]
            Backend::MySql => "mysql",
            #[cfg(feature = "redis")]
            Backend::Redis => "redis",
        }
    }

    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    /// Whether each call is a round trip to a server (call latency and
    /// timeouts are kept, and each call gets a span).
    pub fn is_server(self) -> bool {
        !matches!(self, Backend::Log | Backend::Dir | Backend::Memory)
    }
}

/// What a `SessionStore` call does: the `op` label of a server call, and
/// which counter and latency histogram the call feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `load_session`, `load_session_with`: `sessionlog_loads_total`,
    /// `sessionlog_load_seconds`.
    Load,
    /// `has_session` (counted as no load).
    Has,
    /// Every save (and `copy_in`): `sessionlog_saves_total`,
    /// `sessionlog_save_seconds`.
    Save,
    /// `touch_session`, `touch_session_until`: `sessionlog_touches_total`.
    Touch,
    /// `delete_session`: `sessionlog_deletes_total`.
    Delete,
    /// `sessions_of`, `delete_sessions_of`, `erase_sessions_of`.
    Owner,
    /// `delete_old_sessions`.
    Expire,
    /// `setup`.
    Setup,
}

impl Op {
    /// Every op, in the order of the server stores' handles.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub const ALL: [Op; 8] = [
        Op::Load,
        Op::Has,
        Op::Save,
        Op::Touch,
        Op::Delete,
        Op::Owner,
        Op::Expire,
        Op::Setup,
    ];

    /// The `op` label's value.
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    pub fn name(self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Has => "has",
            Op::Save => "save",
            Op::Touch => "touch",
            Op::Delete => "delete",
            Op::Owner => "owner",
            Op::Expire => "expire",
            Op::Setup => "setup",
        }
    }
}

/// The `kind` label of `sessionlog_errors_total`: the error's variant, in
/// snake case. A conflict is counted by `sessionlog_conflicts_total`
/// instead.
#[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
pub(crate) fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidId { .. } => "invalid_id",
        Error::InvalidOwner { .. } => "invalid_owner",
        Error::TooLarge { .. } => "too_large",
        Error::Conflict { .. } => "conflict",
        Error::QuotaExceeded { .. } => "quota_exceeded",
        Error::NotAStore { .. } => "not_a_store",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::Corrupt { .. } => "corrupt",
        Error::Io { .. } => "io",
        Error::Poisoned { .. } => "poisoned",
        Error::InvalidOption(_) => "invalid_option",
        Error::Busy { .. } => "busy",
        Error::Unsafe { .. } => "unsafe",
        Error::OtherProcess { .. } => "other_process",
        Error::Random(_) => "random",
        Error::KeyMissing { .. } => "key_missing",
        Error::Undecryptable { .. } => "undecryptable",
        Error::BadKeys { .. } => "bad_keys",
        Error::Backend { .. } => "backend",
        Error::Timeout { .. } => "timeout",
    }
}

/// The moment a timed call began: a clock reading only when a recorder
/// keeps the latency, else nothing.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub(crate) struct Timer(#[cfg(feature = "metrics")] Option<std::time::Instant>);

/// What one store reports through, made once at open. Without the
/// features it holds only the backend, and its methods do nothing.
pub(crate) struct Meters {
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    backend: Backend,
    /// The store label: its path, or its server without credentials.
    #[cfg(feature = "tracing")]
    store: std::sync::Arc<str>,
    /// `None` while no recorder is installed (or for a store that reports
    /// nothing, such as a backup's working copy).
    #[cfg(feature = "metrics")]
    on: Option<Box<meters::Handles>>,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl Meters {
    /// The meters of a store of `backend` named `store` (a path, or a
    /// server without credentials: it becomes the `store` label).
    #[cfg_attr(
        not(any(feature = "metrics", feature = "tracing")),
        allow(unused_variables)
    )]
    pub fn new(backend: Backend, store: &str) -> Meters {
        Meters {
            backend,
            #[cfg(feature = "tracing")]
            store: std::sync::Arc::from(store),
            #[cfg(feature = "metrics")]
            on: meters::Handles::register(backend, store).map(Box::new),
        }
    }

    /// The meters of a store at `path`.
    pub fn for_path(backend: Backend, path: &Path) -> Meters {
        Meters::new(backend, &path.display().to_string())
    }

    /// Meters that keep no metrics (a store the application never sees,
    /// such as a backup's working copy); its spans still name it.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn silent(backend: Backend, path: &Path) -> Meters {
        Meters {
            backend,
            #[cfg(feature = "tracing")]
            store: std::sync::Arc::from(path.display().to_string()),
            #[cfg(feature = "metrics")]
            on: None,
        }
    }

    /// A span named `name` (`open`, `compaction`) that says which store:
    /// its backend and store fields.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn span(&self, name: &'static str) -> Span {
        Span(
            #[cfg(feature = "tracing")]
            Some(trace::store(name, self.backend, &self.store)),
        )
    }

    /// Whether a recorder keeps what these meters report (gauges are
    /// worth computing).
    #[inline]
    pub fn is_recording(&self) -> bool {
        #[cfg(feature = "metrics")]
        {
            self.on.is_some()
        }
        #[cfg(not(feature = "metrics"))]
        {
            false
        }
    }

    /// Starts timing (reads the clock only when a recorder is installed).
    #[inline]
    pub fn start(&self) -> Timer {
        Timer(
            #[cfg(feature = "metrics")]
            self.on.as_ref().map(|_| std::time::Instant::now()),
        )
    }

    /// Runs one `SessionStore` call: counts it (or its error by kind),
    /// keeps its latency, and for a server store opens a span around it.
    /// With nothing to report to, `f` runs in the caller's place: its
    /// result goes straight to the caller, copied nowhere.
    #[inline(always)]
    #[cfg_attr(
        not(any(feature = "metrics", feature = "tracing")),
        allow(unused_variables)
    )]
    pub fn call<T>(&self, op: Op, f: impl FnOnce() -> Result<T>) -> Result<T> {
        #[cfg(any(feature = "metrics", feature = "tracing"))]
        if self.is_observed() {
            return self.call_observed(op, f);
        }
        f()
    }

    /// Whether a call is worth observing: a recorder keeps metrics, or a
    /// server store's call gets a span.
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    #[inline(always)]
    fn is_observed(&self) -> bool {
        #[cfg(feature = "tracing")]
        if self.backend.is_server() {
            return true;
        }
        self.is_recording()
    }

    /// [`call`](Self::call) with something to report to, out of line.
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    #[inline(never)]
    fn call_observed<T>(&self, op: Op, f: impl FnOnce() -> Result<T>) -> Result<T> {
        #[cfg(feature = "tracing")]
        let _span = self
            .backend
            .is_server()
            .then(|| trace::server_call(self.backend, &self.store, op));
        let t = self.start();
        let r = f();
        self.finish(op, t, &r);
        r
    }

    /// Counts a call that began at `t` and ended with `r`.
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn finish<T>(&self, op: Op, t: Timer, r: &Result<T>) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.finish(op, t, r.as_ref().err());
        }
    }

    /// A load found the session's record, but it had expired.
    #[inline]
    pub fn expired_on_read(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.expired_on_read.increment(1);
        }
    }

    /// A sync (fsync, fdatasync, a range write-back) that began at `t`
    /// ended.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn synced(&self, t: Timer) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.sync_seconds.record(meters::seconds_since(t));
        }
    }

    /// A compaction that began at `t` ended: with the committed bytes of
    /// the file it read and of the one it wrote, or with an error.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn compacted(&self, t: Timer, result: std::result::Result<(u64, u64), &Error>) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.compacted(t, result);
        }
    }

    /// Sets the store's gauges (`Stats::gauges`).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn gauges(&self, readings: &[GaugeReading]) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.gauges(readings);
        }
    }

    /// A failure no caller sees (a background thread's, or one in
    /// `Drop`): counted by kind, and a `tracing` event. `what` says what
    /// failed ("background compaction", "interval sync", ...).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn background_error(&self, what: &'static str, e: &Error) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.on {
            h.error(e);
        }
        #[cfg(feature = "tracing")]
        trace::background_error(self.backend, &self.store, what, e);
    }
}

/// An entered span, left when dropped; nothing without `tracing`.
#[must_use]
pub(crate) struct Span(
    // A guard: never read, it leaves the span when dropped.
    #[cfg(feature = "tracing")]
    #[allow(dead_code)]
    Option<tracing::span::EnteredSpan>,
);

/// A span around one step of opening a log (`recovery`, `repair`) or a
/// phase of a compaction (`copy`, `catch_up`, `swap`), inside the store's
/// span ([`Meters::span`]).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn step_span(name: &'static str) -> Span {
    Span(
        #[cfg(feature = "tracing")]
        Some(trace::step(name)),
    )
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// With the no-op recorder in place (no application installed one),
    /// a store registers nothing and its timers read no clock; with a
    /// recorder, it registers its handles.
    #[test]
    fn nothing_is_registered_or_timed_without_a_recorder() {
        let silent = metrics::with_local_recorder(&metrics::NoopRecorder, || {
            Meters::new(Backend::Log, "/x/sessions.db")
        });
        assert!(!silent.is_recording());
        assert!(silent.start().0.is_none());
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshot = recorder.snapshotter();
        let on =
            metrics::with_local_recorder(&recorder, || Meters::new(Backend::Log, "/x/sessions.db"));
        assert!(on.is_recording());
        assert!(on.start().0.is_some());
        assert!(!snapshot.snapshot().into_vec().is_empty());
    }
}
