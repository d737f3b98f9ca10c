//! `FDBDatabase`: a connection to the simulator's server named by a cluster file, and the
//! transaction options every transaction starts with.

use crate::errors;
use crate::network;
use conclave_fdbsim::proto::sim_client::SimClient;
use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

/// Transaction options that change how the client library behaves (the others are
/// accepted and ignored).
#[derive(Clone, Copy)]
pub struct TxOptions {
    /// 0: none.
    pub timeout_ms: i64,
    /// -1: unlimited.
    pub retry_limit: i64,
    pub max_retry_delay_ms: i64,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self {
            timeout_ms: 0,
            retry_limit: -1,
            max_retry_delay_ms: 1_000,
        }
    }
}

pub const OPTION_TIMEOUT: c_int = 500;
pub const OPTION_RETRY_LIMIT: c_int = 501;
pub const OPTION_MAX_RETRY_DELAY: c_int = 502;

impl TxOptions {
    /// Applies an option with an integer parameter (the same codes for databases and
    /// transactions); false if `option` is not one of them.
    pub fn apply(&mut self, option: c_int, value: *const u8, len: c_int) -> bool {
        let Some(v) = int_param(value, len) else {
            return false;
        };
        match option {
            OPTION_TIMEOUT => self.timeout_ms = v,
            OPTION_RETRY_LIMIT => self.retry_limit = v,
            OPTION_MAX_RETRY_DELAY => self.max_retry_delay_ms = v,
            _ => return false,
        }
        true
    }
}

/// An option's 8-byte little-endian integer parameter.
fn int_param(value: *const u8, len: c_int) -> Option<i64> {
    if value.is_null() || len != 8 {
        return None;
    }
    // SAFETY: the caller passes `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(value, 8) };
    Some(i64::from_le_bytes(bytes.try_into().ok()?))
}

pub struct Database {
    pub client: SimClient<Channel>,
    pub defaults: Mutex<TxOptions>,
}

/// The server address in a cluster file's `description:id@host:port[,…]`.
fn parse_connection_string(s: &str) -> Option<String> {
    let (_, addresses) = s.trim().split_once('@')?;
    let first = addresses.split(',').next()?.trim();
    let first = first.strip_suffix(":tls").unwrap_or(first);
    first.parse::<std::net::SocketAddr>().ok()?;
    Some(first.to_string())
}

fn connect(connection_string: &str, out: *mut *mut Database) -> c_int {
    let Some(addr) = parse_connection_string(connection_string) else {
        return errors::CONNECTION_STRING_INVALID;
    };
    let handle = match network::handle() {
        Ok(h) => h,
        Err(code) => return code,
    };
    let _runtime = handle.enter();
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return errors::CONNECTION_STRING_INVALID;
    };
    let channel = endpoint.tcp_nodelay(true).connect_lazy();
    let client = SimClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let db = Database {
        client,
        defaults: Mutex::new(TxOptions::default()),
    };
    // SAFETY: the caller passes a writable `out`.
    unsafe { *out = Box::into_raw(Box::new(db)) };
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_create_database(
    path: *const c_char,
    out: *mut *mut Database,
) -> c_int {
    let path = if path.is_null() {
        None
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(path) }
            .to_str()
            .ok()
            .filter(|p| !p.is_empty())
            .map(String::from)
    };
    let path = path
        .or_else(|| std::env::var("FDB_CLUSTER_FILE").ok())
        .unwrap_or_else(|| "/etc/foundationdb/fdb.cluster".into());
    match std::fs::read_to_string(&path) {
        Ok(contents) => connect(&contents, out),
        Err(_) => errors::NO_CLUSTER_FILE_FOUND,
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_create_database_from_connection_string(
    connection_string: *const c_char,
    out: *mut *mut Database,
) -> c_int {
    if connection_string.is_null() {
        return errors::CONNECTION_STRING_INVALID;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    match unsafe { CStr::from_ptr(connection_string) }.to_str() {
        Ok(s) => connect(s, out),
        Err(_) => errors::CONNECTION_STRING_INVALID,
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_destroy(d: *mut Database) {
    if !d.is_null() {
        // SAFETY: the caller gives up its database, made by `Box::into_raw`.
        drop(unsafe { Box::from_raw(d) });
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_set_option(
    d: *mut Database,
    option: c_int,
    value: *const u8,
    len: c_int,
) -> c_int {
    // SAFETY: the caller passes a live database.
    let db = unsafe { &*d };
    db.defaults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .apply(option, value, len);
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_open_tenant(
    _d: *mut Database,
    _name: *const u8,
    _len: c_int,
    _out: *mut *mut std::ffi::c_void,
) -> c_int {
    errors::CLIENT_INVALID_OPERATION // tenants are not simulated
}

#[no_mangle]
pub unsafe extern "C" fn fdb_tenant_create_transaction(
    _t: *mut std::ffi::c_void,
    _out: *mut *mut std::ffi::c_void,
) -> c_int {
    errors::CLIENT_INVALID_OPERATION
}

#[no_mangle]
pub unsafe extern "C" fn fdb_tenant_destroy(_t: *mut std::ffi::c_void) {}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_get_main_thread_busyness(_d: *mut Database) -> f64 {
    0.0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_get_client_status(
    _d: *mut Database,
) -> *mut crate::future::Future {
    crate::future::ready(Err(errors::CLIENT_INVALID_OPERATION))
}

#[cfg(test)]
mod tests {
    use super::parse_connection_string;

    #[test]
    fn a_cluster_file_names_its_first_coordinator() {
        assert_eq!(
            parse_connection_string("fdbsim:sim@127.0.0.1:4500\n").as_deref(),
            Some("127.0.0.1:4500")
        );
        assert_eq!(
            parse_connection_string("a:b@10.0.0.1:4500:tls,10.0.0.2:4500").as_deref(),
            Some("10.0.0.1:4500")
        );
        assert_eq!(parse_connection_string("no address"), None);
    }
}
