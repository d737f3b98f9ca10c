//! The process's FoundationDB client: its network thread (started once, stopped at exit)
//! and how the bindings' errors become [`StorageError`]s.

use super::super::store::StorageError;
use foundationdb::api::NetworkAutoStop;
use foundationdb::directory::DirectoryError;
use foundationdb::tuple::hca::HcaError;
use foundationdb::{FdbBindingError, FdbError};
use std::sync::Mutex;

/// The client's network thread: started once per process, stopped by
/// [`stop_network`] before the process exits.
static NETWORK: Mutex<Option<NetworkAutoStop>> = Mutex::new(None);
/// How starting the network went: `None` until the first attempt (which is the only one:
/// FoundationDB selects its API version once per process).
static BOOTED: Mutex<Option<Result<(), String>>> = Mutex::new(None);

pub(super) fn boot_network() -> Result<(), StorageError> {
    let mut booted = BOOTED.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = booted.get_or_insert_with(|| {
        let builder = foundationdb::api::FdbApiBuilder::default()
            .build()
            .map_err(describe_fdb)?;
        // SAFETY: runs once per process (guarded by BOOTED); the handle is kept until
        // `stop_network`, after which no FoundationDB store is used.
        let network = unsafe { builder.boot() }.map_err(describe_fdb)?;
        *NETWORK.lock().unwrap_or_else(|e| e.into_inner()) = Some(network);
        Ok(())
    });
    outcome
        .clone()
        .map_err(|e| backend(format!("cannot start the client network: {e}")))
}

/// Stops the FoundationDB network thread. Call it at process exit, after every
/// [`FdbStore`] is dropped: no FoundationDB store may be used afterwards. Does nothing if
/// it never started.
pub fn stop_network() {
    drop(NETWORK.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// An FDB error as an operator reads it: its message and code.
fn describe_fdb(e: FdbError) -> String {
    format!("{} (error {})", e.message(), e.code())
}

fn describe(e: &FdbBindingError) -> String {
    match e {
        FdbBindingError::NonRetryableFdbError(e) => describe_fdb(*e),
        other => other.to_string(),
    }
}

/// The directory layer wraps an error of its prefix allocator as `HcaError(FdbError)`,
/// which the bindings' retry loop does not look into: unwrapped, a retryable error (a
/// conflict with another node opening the directory, 1037, …) is retried, not fatal.
pub(super) fn directory_error(e: DirectoryError) -> FdbBindingError {
    match e {
        DirectoryError::FdbError(e) | DirectoryError::HcaError(HcaError::FdbError(e)) => e.into(),
        other => other.into(),
    }
}

pub(super) fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("FoundationDB: {e}"))
}

/// A refusal from inside a transaction closure (fenced, held, …), carried out of the
/// retry loop unchanged.
pub(super) fn refuse(e: StorageError) -> FdbBindingError {
    FdbBindingError::new_custom_error(Box::new(e))
}

pub(super) fn from_binding(e: FdbBindingError) -> StorageError {
    match e {
        FdbBindingError::CustomError(inner) => match inner.downcast::<StorageError>() {
            Ok(e) => *e,
            Err(other) => backend(other),
        },
        other => backend(describe(&other)),
    }
}
