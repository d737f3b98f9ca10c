//! Durable Object storage limits. Over a limit is an error, never a truncation.

use super::store::StorageError;

pub const MAX_KEY_BYTES: usize = 2048;
pub const MAX_VALUE_BYTES: usize = 128 * 1024;
pub const MAX_BATCH_KEYS: usize = 128;

pub(crate) fn check_key(key: &str) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn check_value(key: &str, len: usize) -> Result<(), StorageError> {
    if len > MAX_VALUE_BYTES {
        return Err(StorageError::ValueTooLarge {
            key: key.chars().take(64).collect(),
            len,
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn check_batch(len: usize) -> Result<(), StorageError> {
    if len > MAX_BATCH_KEYS {
        return Err(StorageError::TooManyKeys {
            len,
            max: MAX_BATCH_KEYS,
        });
    }
    Ok(())
}
