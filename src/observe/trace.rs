//! The `tracing` feature: spans and events. Their fields say which store
//! (backend, and its path or server without credentials) and what it did;
//! none holds a session id or data (an `Error`'s message never does).

use tracing::span::EnteredSpan;

use super::{Backend, Op};
use crate::error::Error;

/// A span named `name` for the store, entered.
pub(super) fn store(name: &'static str, backend: Backend, store: &str) -> EnteredSpan {
    // `tracing` needs the span's name at the call site, so each name the
    // crate uses has its own.
    match name {
        "open" => tracing::info_span!("sessionlog.open", backend = backend.name(), store),
        "compaction" => {
            tracing::info_span!("sessionlog.compaction", backend = backend.name(), store)
        }
        _ => tracing::info_span!(
            "sessionlog.store",
            backend = backend.name(),
            store,
            what = name
        ),
    }
    .entered()
}

/// A step inside the current span, entered.
pub(super) fn step(name: &'static str) -> EnteredSpan {
    match name {
        "recovery" => tracing::info_span!("sessionlog.recovery"),
        "repair" => tracing::warn_span!("sessionlog.repair"),
        _ => tracing::debug_span!("sessionlog.phase", phase = name),
    }
    .entered()
}

/// A server store's call, entered.
pub(super) fn server_call(backend: Backend, store: &str, op: Op) -> EnteredSpan {
    tracing::debug_span!(
        "sessionlog.server_call",
        backend = backend.name(),
        store,
        op = op.name()
    )
    .entered()
}

/// A failure that no caller sees.
pub(super) fn background_error(backend: Backend, store: &str, what: &'static str, e: &Error) {
    tracing::error!(
        backend = backend.name(),
        store,
        what,
        kind = super::error_kind(e),
        error = %e,
        "sessionlog: {what} failed"
    );
}
