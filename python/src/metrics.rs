//! The process's metrics recorder: the library's `metrics` feature reports
//! through the `metrics` facade, and this module, installed as the global
//! recorder when the extension loads, keeps what it is given in atomics
//! that `sessionlog_store.metrics()` reads. Counters and gauges keep their value;
//! a histogram keeps its count and sum (what a Prometheus summary without
//! quantiles shows).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// A counter, or a gauge (its `f64` bits).
#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl Cell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

/// A histogram's count and sum.
#[derive(Default)]
struct Summary {
    count: AtomicU64,
    sum: Cell,
}

impl HistogramFn for Summary {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.update(|v| v + value);
    }
}

/// What one metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The name Python sees.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Handle {
    Cell(Arc<Cell>),
    Summary(Arc<Summary>),
}

/// The recorder: every registered metric by kind and key, and each name's
/// description.
#[derive(Default)]
pub struct Registry {
    metrics: Mutex<Vec<(Kind, Key, Handle)>>,
    help: Mutex<HashMap<String, String>>,
}

impl Registry {
    fn find_or_add(&self, kind: Kind, key: &Key) -> Handle {
        let mut all = lock(&self.metrics);
        if let Some((_, _, h)) = all.iter().find(|(k, key2, _)| *k == kind && key2 == key) {
            return match h {
                Handle::Cell(c) => Handle::Cell(Arc::clone(c)),
                Handle::Summary(s) => Handle::Summary(Arc::clone(s)),
            };
        }
        let h = match kind {
            Kind::Histogram => Handle::Summary(Arc::default()),
            _ => Handle::Cell(Arc::default()),
        };
        let copy = match &h {
            Handle::Cell(c) => Handle::Cell(Arc::clone(c)),
            Handle::Summary(s) => Handle::Summary(Arc::clone(s)),
        };
        all.push((kind, key.clone(), copy));
        h
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        lock(&self.help).insert(key.as_str().to_owned(), description.into_owned());
    }

    /// Every metric: kind, name, labels, value (a histogram's count and
    /// sum; `None` for the others' count).
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.metrics)
            .iter()
            .map(|(kind, key, h)| {
                let (count, value) = match h {
                    Handle::Cell(c) => {
                        let bits = c.0.load(Ordering::Relaxed);
                        let v = match kind {
                            Kind::Gauge => f64::from_bits(bits),
                            _ => bits as f64,
                        };
                        (None, v)
                    }
                    Handle::Summary(s) => (
                        Some(s.count.load(Ordering::Relaxed)),
                        f64::from_bits(s.sum.0.load(Ordering::Relaxed)),
                    ),
                };
                Sample {
                    kind: *kind,
                    name: key.name().to_owned(),
                    labels: key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    count,
                    value,
                }
            })
            .collect()
    }

    /// A metric name's description, if the library gave one.
    pub fn help(&self, name: &str) -> Option<String> {
        lock(&self.help).get(name).cloned()
    }
}

/// One metric as `sessionlog_store.metrics()` returns it.
pub struct Sample {
    pub kind: Kind,
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// A histogram's number of observations.
    pub count: Option<u64>,
    /// A counter's or gauge's value; a histogram's sum.
    pub value: f64,
}

/// The global recorder (`&'static`, so that Python can read it while the
/// `metrics` crate holds it too).
pub struct Global(pub &'static Registry);

impl Recorder for Global {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.0.find_or_add(Kind::Counter, key) {
            Handle::Cell(c) => Counter::from_arc(c),
            Handle::Summary(_) => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.0.find_or_add(Kind::Gauge, key) {
            Handle::Cell(c) => Gauge::from_arc(c),
            Handle::Summary(_) => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.0.find_or_add(Kind::Histogram, key) {
            Handle::Summary(s) => Histogram::from_arc(s),
            Handle::Cell(_) => Histogram::noop(),
        }
    }
}

/// The registry, installed as the process's recorder on first use; `None`
/// if another recorder was installed first (by the program embedding
/// Python), which then gets the metrics instead.
pub fn registry() -> Option<&'static Registry> {
    static INSTALLED: std::sync::OnceLock<Option<&'static Registry>> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let registry: &'static Registry = Box::leak(Box::default());
        metrics::set_global_recorder(Global(registry))
            .ok()
            .map(|()| registry)
    })
}

/// A lock that a panic elsewhere does not make unusable (the values are
/// plain numbers, never left half-written).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
