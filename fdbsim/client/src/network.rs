//! The network thread: as in libfdb_c, `fdb_run_network` drives every request (here a
//! current-thread tokio runtime) until `fdb_stop_network`; futures complete and their
//! callbacks run on it.

use crate::errors;
use std::ffi::c_int;
use std::sync::{Mutex, OnceLock};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

struct Network {
    runtime: Runtime,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

static NETWORK: OnceLock<Network> = OnceLock::new();

/// The runtime requests run on (`network_not_setup` before `fdb_setup_network`).
pub fn handle() -> Result<Handle, i32> {
    NETWORK
        .get()
        .map(|n| n.runtime.handle().clone())
        .ok_or(errors::NETWORK_NOT_SETUP)
}

/// Runs `work` on the network thread and completes `future` with its result.
pub fn spawn(
    future: std::sync::Arc<crate::future::Shared>,
    work: impl std::future::Future<Output = Result<crate::future::Payload, i32>> + Send + 'static,
) {
    let handle = match handle() {
        Ok(h) => h,
        Err(code) => return future.complete(Err(code)),
    };
    let done = future.clone();
    let task = handle.spawn(async move { done.complete(work.await) });
    future.set_task(task.abort_handle());
}

#[no_mangle]
pub extern "C" fn fdb_network_set_option(_option: c_int, _value: *const u8, _len: c_int) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn fdb_setup_network() -> c_int {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return errors::UNKNOWN_ERROR,
    };
    let (stop, stopped) = oneshot::channel();
    let network = Network {
        runtime,
        stop: Mutex::new(Some(stop)),
        stopped: Mutex::new(Some(stopped)),
    };
    match NETWORK.set(network) {
        Ok(()) => {
            crate::faults::init();
            0
        }
        Err(_) => errors::NETWORK_ALREADY_SETUP,
    }
}

#[no_mangle]
pub extern "C" fn fdb_run_network() -> c_int {
    let Some(network) = NETWORK.get() else {
        return errors::NETWORK_NOT_SETUP;
    };
    let Some(stopped) = network
        .stopped
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return errors::CLIENT_INVALID_OPERATION; // run twice
    };
    network.runtime.block_on(async {
        let _ = stopped.await;
    });
    0
}

#[no_mangle]
pub extern "C" fn fdb_stop_network() -> c_int {
    let Some(network) = NETWORK.get() else {
        return errors::NETWORK_NOT_SETUP;
    };
    if let Some(stop) = network
        .stop
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        let _ = stop.send(());
    }
    0
}

#[no_mangle]
pub extern "C" fn fdb_add_network_thread_completion_hook(
    _hook: Option<unsafe extern "C" fn(*mut std::ffi::c_void)>,
    _param: *mut std::ffi::c_void,
) -> c_int {
    0
}
