//! **libfdb_c of a FoundationDB test double** — not FoundationDB. This crate builds
//! `libfdb_c.so` exporting the part of FoundationDB's C API (API version 730) that the
//! `foundationdb` crate calls, over the in-memory simulator server of `conclave-fdbsim`.
//! CI links Conclave's FoundationDB backend against it (`FDB_CLIENT_LIB_PATH`,
//! `LD_LIBRARY_PATH`) to run the storage suite and a cluster test where FoundationDB cannot
//! be installed; a real cluster stays the reference (docs/foundationdb.md).
//!
//! Kept from libfdb_c: the network thread that completes every future and runs its
//! callbacks, read-your-writes, read versions, conflict ranges (reads that are not
//! snapshot reads, writes unless `NEXT_WRITE_NO_WRITE_CONFLICT_RANGE`), range reads in
//! batches with each streaming mode's byte target and the `more` flag, `on_error` with its
//! retryable errors, backoff, retry limit and a timeout that retries do not reset,
//! deferred write errors (key/value size, inverted ranges), the 10 MB transaction limit by
//! `get_approximate_size`, watches armed at commit, versionstamps, and seeded fault
//! injection (`faults`: `FDBSIM_FAULT_SEED`, `FDBSIM_FAULT_RATE`). Not simulated:
//! tenants, blob granules, mapped ranges, locality and size estimates (they fail with
//! `client_invalid_operation`), system keys, and multi-version client options.

#![allow(clippy::missing_safety_doc)] // the C API: every pointer is the caller's promise
#![warn(clippy::unwrap_used)]

mod database;
mod errors;
mod faults;
mod future;
mod network;
mod transaction;

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicI32, Ordering};

/// The newest API version this library speaks (the `foundationdb` crate's `fdb-7_3`).
const MAX_API_VERSION: c_int = 730;
static API_VERSION: AtomicI32 = AtomicI32::new(0);

#[no_mangle]
pub extern "C" fn fdb_get_max_api_version() -> c_int {
    MAX_API_VERSION
}

#[no_mangle]
pub extern "C" fn fdb_select_api_version_impl(
    runtime_version: c_int,
    header_version: c_int,
) -> c_int {
    if runtime_version > MAX_API_VERSION
        || header_version > MAX_API_VERSION
        || runtime_version < 610
    {
        return errors::API_VERSION_NOT_SUPPORTED;
    }
    match API_VERSION.compare_exchange(0, runtime_version, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => 0,
        Err(current) if current == runtime_version => 0,
        Err(_) => errors::API_VERSION_ALREADY_SET,
    }
}

#[no_mangle]
pub extern "C" fn fdb_get_error(code: c_int) -> *const c_char {
    errors::message(code)
}

#[no_mangle]
pub extern "C" fn fdb_error_predicate(predicate_test: c_int, code: c_int) -> c_int {
    c_int::from(errors::predicate(predicate_test, code))
}
