//! The `metrics` feature: one store's handles, registered once at open.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use parking_lot::Mutex;

use super::{Backend, Op, Timer, error_kind};
use crate::engine::GaugeReading;
use crate::error::Error;

/// Where sessionlog's metrics come from, for recorders that filter on it.
static META: Metadata<'static> = Metadata::new("sessionlog", Level::INFO, Some("sessionlog"));

/// Counters of `SessionStore` calls that succeeded.
pub(crate) const LOADS: &str = "sessionlog_loads_total";
pub(crate) const SAVES: &str = "sessionlog_saves_total";
pub(crate) const TOUCHES: &str = "sessionlog_touches_total";
pub(crate) const DELETES: &str = "sessionlog_deletes_total";
/// Conditional saves refused because the session changed.
pub(crate) const CONFLICTS: &str = "sessionlog_conflicts_total";
/// Loads that found the session expired.
pub(crate) const EXPIRED_ON_READ: &str = "sessionlog_expired_on_read_total";
/// Errors, by `kind`.
pub(crate) const ERRORS: &str = "sessionlog_errors_total";
/// Latencies, in seconds.
pub(crate) const LOAD_SECONDS: &str = "sessionlog_load_seconds";
pub(crate) const SAVE_SECONDS: &str = "sessionlog_save_seconds";
pub(crate) const SYNC_SECONDS: &str = "sessionlog_sync_seconds";
/// Compactions (LogStore).
pub(crate) const COMPACTIONS: &str = "sessionlog_compactions_total";
pub(crate) const COMPACTION_SECONDS: &str = "sessionlog_compaction_seconds";
pub(crate) const COMPACTION_READ_BYTES: &str = "sessionlog_compaction_read_bytes_total";
pub(crate) const COMPACTION_WRITTEN_BYTES: &str = "sessionlog_compaction_written_bytes_total";
/// Server stores: every call's latency and the calls that timed out, by
/// `op`.
pub(crate) const SERVER_CALL_SECONDS: &str = "sessionlog_server_call_seconds";
pub(crate) const SERVER_TIMEOUTS: &str = "sessionlog_server_timeouts_total";

/// Each counter and histogram, with its unit and description, told to
/// the recorder at registration (an exporter prints them as HELP).
const DESCRIBED: &[(&str, Kind, Unit, &str)] = &[
    (
        LOADS,
        Kind::Counter,
        Unit::Count,
        "Session loads that returned (found or not).",
    ),
    (SAVES, Kind::Counter, Unit::Count, "Sessions saved."),
    (
        TOUCHES,
        Kind::Counter,
        Unit::Count,
        "Touches (sliding expiry) that returned.",
    ),
    (
        DELETES,
        Kind::Counter,
        Unit::Count,
        "Session deletes that returned.",
    ),
    (
        CONFLICTS,
        Kind::Counter,
        Unit::Count,
        "Conditional saves refused: the session changed.",
    ),
    (
        EXPIRED_ON_READ,
        Kind::Counter,
        Unit::Count,
        "Loads that found the session expired.",
    ),
    (
        ERRORS,
        Kind::Counter,
        Unit::Count,
        "Calls and background work that failed, by kind.",
    ),
    (
        LOAD_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Latency of a session load.",
    ),
    (
        SAVE_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Latency of a session save.",
    ),
    (
        SYNC_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Latency of one sync to stable storage.",
    ),
    (
        COMPACTIONS,
        Kind::Counter,
        Unit::Count,
        "Compactions that completed.",
    ),
    (
        COMPACTION_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Duration of a compaction.",
    ),
    (
        COMPACTION_READ_BYTES,
        Kind::Counter,
        Unit::Bytes,
        "Committed bytes of the files compactions replaced.",
    ),
    (
        COMPACTION_WRITTEN_BYTES,
        Kind::Counter,
        Unit::Bytes,
        "Committed bytes of the files compactions wrote.",
    ),
    (
        SERVER_CALL_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Latency of a server store's call, by op.",
    ),
    (
        SERVER_TIMEOUTS,
        Kind::Counter,
        Unit::Count,
        "Server store calls that timed out, by op.",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// Seconds since `t` (0 for a timer that did not read the clock).
pub(super) fn seconds_since(t: Timer) -> f64 {
    t.0.map_or(0.0, |start| start.elapsed().as_secs_f64())
}

/// The handles of one store.
pub(crate) struct Handles {
    /// `backend` and `store`: every metric of the store carries them.
    labels: Vec<Label>,
    loads: Counter,
    saves: Counter,
    touches: Counter,
    deletes: Counter,
    conflicts: Counter,
    pub expired_on_read: Counter,
    load_seconds: Histogram,
    save_seconds: Histogram,
    pub sync_seconds: Histogram,
    compaction: Option<Compaction>,
    /// A server store's call latency, one per [`Op::ALL`].
    server_calls: Option<Vec<Histogram>>,
    /// Registered when first set (which gauges a store has depends on its
    /// policy).
    gauges: Mutex<Vec<(&'static str, Gauge)>>,
}

/// A LogStore's compaction handles.
struct Compaction {
    runs: Counter,
    seconds: Histogram,
    read_bytes: Counter,
    written_bytes: Counter,
}

/// Whether `r` is a recorder at all: the `metrics` crate's no-op
/// recorder, in place until an application installs one, is zero-sized;
/// any recorder that keeps something is not.
fn keeps_anything(r: &dyn Recorder) -> bool {
    std::mem::size_of_val(r) != 0
}

impl Handles {
    /// Registers a store's handles with the recorder installed now;
    /// `None` if there is none.
    pub fn register(backend: Backend, store: &str) -> Option<Handles> {
        metrics::with_recorder(|r| {
            if !keeps_anything(r) {
                return None;
            }
            for &(name, kind, unit, help) in DESCRIBED {
                let key = KeyName::from_const_str(name);
                match kind {
                    Kind::Counter => r.describe_counter(key, Some(unit), help.into()),
                    Kind::Histogram => r.describe_histogram(key, Some(unit), help.into()),
                }
            }
            let labels = vec![
                Label::new("backend", backend.name()),
                Label::new("store", store.to_owned()),
            ];
            let key = |name: &'static str| Key::from_parts(name, labels.clone());
            let counter = |name| r.register_counter(&key(name), &META);
            let histogram = |name| r.register_histogram(&key(name), &META);
            let compaction = (backend == Backend::Log).then(|| Compaction {
                runs: counter(COMPACTIONS),
                seconds: histogram(COMPACTION_SECONDS),
                read_bytes: counter(COMPACTION_READ_BYTES),
                written_bytes: counter(COMPACTION_WRITTEN_BYTES),
            });
            let server_calls = backend.is_server().then(|| {
                Op::ALL
                    .iter()
                    .map(|op| {
                        let mut l = labels.clone();
                        l.push(Label::new("op", op.name()));
                        r.register_histogram(&Key::from_parts(SERVER_CALL_SECONDS, l), &META)
                    })
                    .collect()
            });
            Some(Handles {
                loads: counter(LOADS),
                saves: counter(SAVES),
                touches: counter(TOUCHES),
                deletes: counter(DELETES),
                conflicts: counter(CONFLICTS),
                expired_on_read: counter(EXPIRED_ON_READ),
                load_seconds: histogram(LOAD_SECONDS),
                save_seconds: histogram(SAVE_SECONDS),
                sync_seconds: histogram(SYNC_SECONDS),
                compaction,
                server_calls,
                gauges: Mutex::new(Vec::new()),
                labels,
            })
        })
    }

    /// A call of `op` that began at `t` ended, with `error` if it failed.
    #[inline]
    pub fn finish(&self, op: Op, t: Timer, error: Option<&Error>) {
        let seconds = seconds_since(t);
        match op {
            Op::Load => self.load_seconds.record(seconds),
            Op::Save => self.save_seconds.record(seconds),
            _ => {}
        }
        if let Some(calls) = &self.server_calls
            && let Some(h) = calls.get(op as usize)
        {
            h.record(seconds);
        }
        match error {
            None => match op {
                Op::Load => self.loads.increment(1),
                Op::Save => self.saves.increment(1),
                Op::Touch => self.touches.increment(1),
                Op::Delete => self.deletes.increment(1),
                _ => {}
            },
            Some(Error::Conflict { .. }) => self.conflicts.increment(1),
            Some(e) => {
                if e.is_timeout() && self.server_calls.is_some() {
                    self.registered(SERVER_TIMEOUTS, Some(("op", op.name())))
                        .increment(1);
                }
                self.error(e);
            }
        }
    }

    /// Counts an error by kind (registered when it first happens: most
    /// kinds never do).
    pub fn error(&self, e: &Error) {
        self.registered(ERRORS, Some(("kind", error_kind(e))))
            .increment(1);
    }

    /// A counter of this store, with one more label, registered with the
    /// recorder installed now (for rare events).
    fn registered(
        &self,
        name: &'static str,
        extra: Option<(&'static str, &'static str)>,
    ) -> Counter {
        let mut labels = self.labels.clone();
        labels.extend(extra.map(|(k, v)| Label::new(k, v)));
        metrics::with_recorder(|r| r.register_counter(&Key::from_parts(name, labels), &META))
    }

    /// A compaction that began at `t` ended.
    pub fn compacted(&self, t: Timer, result: Result<(u64, u64), &Error>) {
        let Some(c) = &self.compaction else {
            return;
        };
        c.seconds.record(seconds_since(t));
        if let Ok((read, written)) = result {
            c.runs.increment(1);
            c.read_bytes.increment(read);
            c.written_bytes.increment(written);
        }
    }

    /// Sets gauges by name, registering (and describing) the ones not
    /// seen before.
    pub fn gauges(&self, readings: &[GaugeReading]) {
        let mut known = self.gauges.lock();
        for g in readings {
            if let Some((_, handle)) = known.iter().find(|(n, _)| *n == g.name) {
                handle.set(g.value);
                continue;
            }
            let handle = metrics::with_recorder(|r| {
                r.describe_gauge(
                    KeyName::from_const_str(g.name),
                    Some(unit_of(g.name)),
                    g.help.into(),
                );
                r.register_gauge(&Key::from_parts(g.name, self.labels.clone()), &META)
            });
            handle.set(g.value);
            known.push((g.name, handle));
        }
    }
}

/// A gauge's unit, from its name's suffix.
fn unit_of(name: &str) -> Unit {
    if name.ends_with("_bytes") {
        Unit::Bytes
    } else if name.ends_with("_seconds") {
        Unit::Seconds
    } else {
        Unit::Count
    }
}
