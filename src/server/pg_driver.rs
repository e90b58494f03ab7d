//! The thread that drives PostgresStore's connections, so that the store
//! works the same inside any async runtime and outside one.
//!
//! tokio-postgres splits a connection in two: the `Connection`, which owns
//! the socket and must run on a tokio runtime, and the `Client`, whose
//! calls are futures that only talk to the `Connection` over channels.
//! Each connection used to carry a current-thread runtime of its own and
//! drive it with `block_on`: that panics when the store is opened or
//! called on a thread that runs an async runtime (`#[tokio::main]`,
//! actix-web), and dropping the last handle there panicked too (a runtime
//! may not be dropped where blocking is not allowed).
//!
//! Now every connection of every PostgresStore of the process runs on one
//! current-thread runtime driven by one thread, started at the first
//! connect and kept for the life of the process (a child of `fork` starts
//! its own). A call polls its client future on the calling thread with
//! [`wait`], which parks the thread between wake-ups: no runtime is entered
//! or dropped on the caller's thread, so nothing there can panic, and a
//! call made inline on an async worker blocks it as any synchronous call
//! does (the web adapters run server stores on the blocking pool).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;

/// The driver's runtime handle and the process that started it.
static DRIVER: Mutex<Option<(u32, Handle)>> = Mutex::new(None);

/// The driver's handle, starting it on first use (and again in a forked
/// child, where the parent's thread does not exist). `Err`: why the
/// runtime or its thread could not start.
pub(crate) fn driver() -> Result<Handle, String> {
    let pid = std::process::id();
    let mut slot = DRIVER.lock();
    if let Some((owner, handle)) = slot.as_ref()
        && *owner == pid
    {
        return Ok(handle.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Host names are resolved on the runtime's blocking pool: one
        // thread at most, gone soon after.
        .max_blocking_threads(1)
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("could not start the client runtime: {e}"))?;
    let handle = rt.handle().clone();
    thread::Builder::new()
        .name("sessionlog-postgres".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("could not start the client thread: {e}"))?;
    *slot = Some((pid, handle.clone()));
    Ok(handle)
}

/// Wakes the waiting thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` to completion on this thread, parked between wake-ups.
///
/// `fut` must not need a runtime on this thread: a client call, a timer or
/// a join handle of the driver. It runs outside tokio's cooperative budget
/// ([`tokio::task::unconstrained`]): called inline on a worker whose task
/// spent its budget, a timer would otherwise yield forever.
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(tokio::task::unconstrained(fut));
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// `fut` with the deadline `io`, timed by the driver, polled with [`wait`].
/// `None`: the deadline passed first.
pub(crate) fn wait_for<F: Future>(handle: &Handle, io: Duration, fut: F) -> Option<F::Output> {
    let limited = {
        // The timer registers with the driver's clock at creation.
        let _enter = handle.enter();
        tokio::time::timeout(io, fut)
    };
    wait(limited).ok()
}
