//! FoundationDB's error codes as the simulator uses them, their messages and predicates.

use std::ffi::{c_char, CStr};

pub const OPERATION_CANCELLED: i32 = 1101;
pub const NOT_COMMITTED: i32 = 1020;
pub const COMMIT_UNKNOWN_RESULT: i32 = 1021;
pub const TRANSACTION_CANCELLED: i32 = 1025;
pub const TRANSACTION_TIMED_OUT: i32 = 1031;
pub const PROCESS_BEHIND: i32 = 1037;
pub const CLIENT_INVALID_OPERATION: i32 = 2000;
pub const NETWORK_NOT_SETUP: i32 = 2008;
pub const NETWORK_ALREADY_SETUP: i32 = 2009;
pub const FUTURE_NOT_SET: i32 = 2015;
pub const NO_CLUSTER_FILE_FOUND: i32 = 2104;
pub const CONNECTION_STRING_INVALID: i32 = 2100;
pub const USED_DURING_COMMIT: i32 = 2017;
pub const INVERTED_RANGE: i32 = 2005;
pub const KEY_OUTSIDE_LEGAL_RANGE: i32 = 2004;
pub const TRANSACTION_TOO_LARGE: i32 = 2101;
pub const KEY_TOO_LARGE: i32 = 2102;
pub const VALUE_TOO_LARGE: i32 = 2103;
pub const API_VERSION_ALREADY_SET: i32 = 2201;
pub const API_VERSION_NOT_SUPPORTED: i32 = 2203;
pub const EXACT_MODE_WITHOUT_LIMITS: i32 = 2210;
pub const UNKNOWN_ERROR: i32 = 4000;

const PREDICATE_RETRYABLE: i32 = 50000;
const PREDICATE_MAYBE_COMMITTED: i32 = 50001;
const PREDICATE_RETRYABLE_NOT_COMMITTED: i32 = 50002;

fn maybe_committed(code: i32) -> bool {
    // commit_unknown_result, cluster_version_changed
    matches!(code, 1021 | 1039)
}

fn retryable_not_committed(code: i32) -> bool {
    // transaction_too_old, future_version, not_committed, process_behind, database_locked,
    // proxy/grv memory limits, batch and tag throttling
    matches!(
        code,
        1007 | 1009 | 1020 | 1037 | 1038 | 1040 | 1042 | 1078 | 1213
    )
}

pub fn retryable(code: i32) -> bool {
    maybe_committed(code) || retryable_not_committed(code)
}

pub fn predicate(test: i32, code: i32) -> bool {
    match test {
        PREDICATE_RETRYABLE => retryable(code),
        PREDICATE_MAYBE_COMMITTED => maybe_committed(code),
        PREDICATE_RETRYABLE_NOT_COMMITTED => retryable_not_committed(code),
        _ => false,
    }
}

pub fn message(code: i32) -> *const c_char {
    let text: &CStr = match code {
        0 => c"Success",
        1007 => c"Transaction is too old to perform reads or be committed",
        1009 => c"Request for future version",
        1020 => c"Transaction not committed due to conflict with another transaction",
        1021 => c"Transaction may or may not have committed",
        1025 => c"Operation aborted because the transaction was cancelled",
        1031 => c"Operation aborted because the transaction timed out",
        1036 => c"Read or wrote an unreadable key",
        1037 => c"Storage process does not have recent mutations",
        1101 => c"Asynchronous operation cancelled",
        2000 => c"Invalid API call",
        2004 => c"Key outside legal range",
        2005 => c"Range begin key larger than end key",
        2008 => c"Network not setup",
        2009 => c"Network can be configured only once",
        2015 => c"Future not ready",
        2017 => c"Operation issued while a commit was outstanding",
        2100 => c"Connection string invalid",
        2101 => c"Transaction exceeds byte limit",
        2102 => c"Key length exceeds limit",
        2103 => c"Value length exceeds limit",
        2104 => c"Cluster file not found",
        2201 => c"API version may be set only once",
        2203 => c"API version not supported",
        2210 => c"EXACT streaming mode requires limits, but none were given",
        _ => c"An unknown error occurred",
    };
    text.as_ptr()
}
