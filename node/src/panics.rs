//! Party code is the user's own: a panic in it fails what it was doing (a handler, a
//! connect check, a constructor), not the task that ran it. Unwinding out of a room's task
//! would leave its sockets in a room no one serves; out of a gateway link's, every socket
//! of that gateway would have to move.

use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Runs `f`; a panic in it comes back as what it said. What the panic interrupted must
/// not be used again: callers drop the party instance, or refuse what it was checking.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| said(p.as_ref()))
}

/// Awaits `fut`; a panic while polling it comes back as what it said (see [`guarded`]).
pub(crate) async fn guarded_future<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| said(p.as_ref()))
}

fn said(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The error a step fails with when its party panicked: the instance is dropped.
pub(crate) fn broken(what: &str) -> crate::party::PartyError {
    Box::new(crate::party::InstanceBroken(format!(
        "the party panicked: {what}"
    )))
}
