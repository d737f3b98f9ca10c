//! `FDBFuture`: a result that a task on the network thread sets, with FoundationDB's rules —
//! a callback registered on a ready future runs at once, in the registering thread; one
//! registered before runs in the thread that sets the result; destroying an unset future
//! cancels it (its callback runs with `operation_cancelled`).

use crate::errors;
use bytes::Bytes;
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Condvar, Mutex};

pub type Callback = unsafe extern "C" fn(*mut Future, *mut c_void);

/// What a future resolves to.
pub enum Payload {
    Unit,
    Int64(i64),
    Value(Option<Bytes>),
    Key(Bytes),
    KeyValues {
        rows: Vec<(Bytes, Bytes)>,
        more: bool,
    },
}

/// `FDBKeyValue` of API version 630 and later (packed to 4 bytes).
#[repr(C, packed(4))]
pub struct KeyValue {
    pub key: *const u8,
    pub key_length: c_int,
    pub value: *const u8,
    pub value_length: c_int,
}

/// `FDBKey` (packed to 4 bytes).
#[repr(C, packed(4))]
pub struct Key {
    pub key: *const u8,
    pub key_length: c_int,
}

#[derive(Default)]
struct State {
    result: Option<Result<Payload, i32>>,
    callback: Option<(Callback, usize, usize)>,
    /// The C views handed out by the getters; they live as long as the future.
    kv_view: Vec<KeyValue>,
    /// The task computing the result, aborted when the future is cancelled.
    task: Option<tokio::task::AbortHandle>,
}

// SAFETY: the raw pointers in the views point into `result`, which the future owns; they
// are only read through the C API, as FoundationDB's are.
unsafe impl Send for State {}

#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

/// The object behind an `FDBFuture*`.
pub struct Future {
    pub shared: Arc<Shared>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the result (once; later calls are ignored) and runs the callback.
    pub fn complete(&self, result: Result<Payload, i32>) {
        let callback = {
            let mut st = self.lock();
            if st.result.is_some() {
                return;
            }
            st.result = Some(result);
            st.task = None;
            st.callback.take()
        };
        self.ready.notify_all();
        if let Some((callback, future, param)) = callback {
            // SAFETY: the caller registered this callback for this future.
            unsafe { callback(future as *mut Future, param as *mut c_void) };
        }
    }

    pub fn set_task(&self, task: tokio::task::AbortHandle) {
        let mut st = self.lock();
        if st.result.is_some() {
            task.abort();
        } else {
            st.task = Some(task);
        }
    }

    pub fn cancel(&self) {
        if let Some(task) = self.lock().task.take() {
            task.abort();
        }
        self.complete(Err(errors::OPERATION_CANCELLED));
    }

    pub fn is_ready(&self) -> bool {
        self.lock().result.is_some()
    }
}

/// A new, unset future and the handle its producer completes.
pub fn pending() -> (*mut Future, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let future = Box::into_raw(Box::new(Future {
        shared: shared.clone(),
    }));
    (future, shared)
}

/// A future that is ready at once.
pub fn ready(result: Result<Payload, i32>) -> *mut Future {
    let (future, shared) = pending();
    shared.complete(result);
    future
}

/// # Safety
/// `f` must be a live future from this library.
unsafe fn get<'a>(f: *mut Future) -> &'a Shared {
    // SAFETY: per the contract above.
    unsafe { &(*f).shared }
}

/// Runs `read` on the future's payload, or returns its error (`future_not_set` if unset).
unsafe fn with_payload(f: *mut Future, read: impl FnOnce(&mut State) -> Result<(), i32>) -> i32 {
    // SAFETY: the caller passes a live future.
    let shared = unsafe { get(f) };
    let mut st = shared.lock();
    match &st.result {
        None => errors::FUTURE_NOT_SET,
        Some(Err(code)) => *code,
        Some(Ok(_)) => read(&mut st).err().unwrap_or(0),
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_destroy(f: *mut Future) {
    if f.is_null() {
        return;
    }
    // SAFETY: the caller gives up its future; it was made by `Box::into_raw`.
    let future = unsafe { Box::from_raw(f) };
    future.shared.cancel();
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_cancel(f: *mut Future) {
    // SAFETY: the caller passes a live future.
    unsafe { get(f) }.cancel();
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_release_memory(_f: *mut Future) {}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_is_ready(f: *mut Future) -> c_int {
    // SAFETY: the caller passes a live future.
    c_int::from(unsafe { get(f) }.is_ready())
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_block_until_ready(f: *mut Future) -> c_int {
    // SAFETY: the caller passes a live future.
    let shared = unsafe { get(f) };
    let mut st = shared.lock();
    while st.result.is_none() {
        st = shared.ready.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_set_callback(
    f: *mut Future,
    callback: Option<Callback>,
    param: *mut c_void,
) -> c_int {
    let Some(callback) = callback else {
        return errors::CLIENT_INVALID_OPERATION;
    };
    // SAFETY: the caller passes a live future.
    let shared = unsafe { get(f) };
    {
        let mut st = shared.lock();
        if st.result.is_none() {
            st.callback = Some((callback, f as usize, param as usize));
            return 0;
        }
    }
    // SAFETY: ready already: FoundationDB calls the callback at once.
    unsafe { callback(f, param) };
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_error(f: *mut Future) -> c_int {
    // SAFETY: the caller passes a live future.
    unsafe { with_payload(f, |_| Ok(())) }
}

fn int64(st: &State) -> Result<i64, i32> {
    match &st.result {
        Some(Ok(Payload::Int64(v))) => Ok(*v),
        _ => Err(errors::CLIENT_INVALID_OPERATION),
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_int64(f: *mut Future, out: *mut i64) -> c_int {
    // SAFETY: the caller passes a live future and a writable `out`.
    unsafe { with_payload(f, |st| int64(st).map(|v| *out = v)) }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_version(f: *mut Future, out: *mut i64) -> c_int {
    // SAFETY: as `fdb_future_get_int64`.
    unsafe { fdb_future_get_int64(f, out) }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_uint64(f: *mut Future, out: *mut u64) -> c_int {
    // SAFETY: the caller passes a live future and a writable `out`.
    unsafe { with_payload(f, |st| int64(st).map(|v| *out = v as u64)) }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_bool(f: *mut Future, out: *mut c_int) -> c_int {
    // SAFETY: the caller passes a live future and a writable `out`.
    unsafe { with_payload(f, |st| int64(st).map(|v| *out = c_int::from(v != 0))) }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_double(f: *mut Future, out: *mut f64) -> c_int {
    // SAFETY: the caller passes a live future and a writable `out`.
    unsafe { with_payload(f, |st| int64(st).map(|v| *out = v as f64)) }
}

fn len(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_value(
    f: *mut Future,
    out_present: *mut c_int,
    out_value: *mut *const u8,
    out_length: *mut c_int,
) -> c_int {
    // SAFETY: the caller passes a live future and writable outputs.
    unsafe {
        with_payload(f, |st| match &st.result {
            Some(Ok(Payload::Value(v))) => {
                *out_present = c_int::from(v.is_some());
                let v = v.as_deref().unwrap_or_default();
                *out_value = v.as_ptr();
                *out_length = len(v.len());
                Ok(())
            }
            _ => Err(errors::CLIENT_INVALID_OPERATION),
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_key(
    f: *mut Future,
    out_key: *mut *const u8,
    out_length: *mut c_int,
) -> c_int {
    // SAFETY: the caller passes a live future and writable outputs.
    unsafe {
        with_payload(f, |st| match &st.result {
            Some(Ok(Payload::Key(k))) => {
                *out_key = k.as_ptr();
                *out_length = len(k.len());
                Ok(())
            }
            _ => Err(errors::CLIENT_INVALID_OPERATION),
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_keyvalue_array(
    f: *mut Future,
    out_kv: *mut *const KeyValue,
    out_count: *mut c_int,
    out_more: *mut c_int,
) -> c_int {
    // SAFETY: the caller passes a live future and writable outputs.
    unsafe {
        with_payload(f, |st| {
            let Some(Ok(Payload::KeyValues { rows, more })) = &st.result else {
                return Err(errors::CLIENT_INVALID_OPERATION);
            };
            let view: Vec<KeyValue> = rows
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.as_ptr(),
                    key_length: len(k.len()),
                    value: v.as_ptr(),
                    value_length: len(v.len()),
                })
                .collect();
            let more = *more;
            st.kv_view = view;
            *out_kv = st.kv_view.as_ptr();
            *out_count = len(st.kv_view.len());
            *out_more = c_int::from(more);
            Ok(())
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_string_array(
    _f: *mut Future,
    _out: *mut *const *const c_char,
    _count: *mut c_int,
) -> c_int {
    errors::CLIENT_INVALID_OPERATION
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_key_array(
    _f: *mut Future,
    _out: *mut *const Key,
    _count: *mut c_int,
) -> c_int {
    errors::CLIENT_INVALID_OPERATION
}

#[no_mangle]
pub unsafe extern "C" fn fdb_future_get_mappedkeyvalue_array(
    _f: *mut Future,
    _out: *mut *const c_void,
    _count: *mut c_int,
    _more: *mut c_int,
) -> c_int {
    errors::CLIENT_INVALID_OPERATION
}
