//! What a room's keys take in storage, and the quotas that bound it.
//!
//! Every backend keeps one usage record per room that holds keys (`("usage", party, room)`,
//! apart from the room's own keys so that a party's rooms are one range), updated in the
//! transaction of each commit from the sizes of the entries it replaced: exact, whatever
//! the handler wrote. The room's [`Storage`](super::Storage) checks each write against its
//! quota before buffering it ([`Storage::put`](super::Storage::put)).

use super::store::{StorageError, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The keys a room (or a party) holds and their bytes: each entry counts its key's and its
/// value's bytes. The runtime's own records (ledger, alarm, owner) are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub bytes: u64,
    pub keys: u64,
}

impl Usage {
    /// The bytes one entry counts for.
    pub fn entry_bytes(key: &str, value_len: usize) -> u64 {
        (key.len() + value_len) as u64
    }

    /// The usage after an entry of `key` whose value was `old` bytes (if any) is replaced
    /// by one of `new` bytes (if any).
    pub fn replace(&mut self, key: &str, old: Option<usize>, new: Option<usize>) {
        if let Some(old) = old {
            self.bytes = self.bytes.saturating_sub(Self::entry_bytes(key, old));
            self.keys = self.keys.saturating_sub(1);
        }
        if let Some(new) = new {
            self.bytes += Self::entry_bytes(key, new);
            self.keys += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The stored form of a usage record.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.bytes.to_be_bytes());
        out[8..].copy_from_slice(&self.keys.to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Option<Self> {
        Some(Self {
            bytes: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            keys: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
        })
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            bytes: self.bytes.saturating_add(other.bytes),
            keys: self.keys.saturating_add(other.keys),
        }
    }
}

/// How much one room, and all rooms of one party together, may store. `None`: no bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageQuota {
    pub room_bytes: Option<u64>,
    pub room_keys: Option<u64>,
    pub party_bytes: Option<u64>,
    pub party_keys: Option<u64>,
}

impl Default for StorageQuota {
    /// 256 MiB and a million keys per room; no bound per party.
    fn default() -> Self {
        Self {
            room_bytes: Some(256 * 1024 * 1024),
            room_keys: Some(1_000_000),
            party_bytes: None,
            party_keys: None,
        }
    }
}

impl StorageQuota {
    /// No bound at all (what a [`Storage`](super::Storage) made outside the runtime has).
    pub const UNLIMITED: StorageQuota = StorageQuota {
        room_bytes: None,
        room_keys: None,
        party_bytes: None,
        party_keys: None,
    };

    /// Whether a room may hold `room` while its party holds `party`; the error names the
    /// bound that does not hold.
    pub fn check(&self, room: Usage, party: Usage) -> Result<(), StorageError> {
        let over = |scope: &'static str, what: &'static str, used: u64, limit: Option<u64>| {
            limit
                .filter(|&limit| used > limit)
                .map(|limit| StorageError::QuotaExceeded {
                    scope,
                    what,
                    used,
                    limit,
                })
        };
        match over("room", "bytes", room.bytes, self.room_bytes)
            .or_else(|| over("room", "keys", room.keys, self.room_keys))
            .or_else(|| over("party", "bytes", party.bytes, self.party_bytes))
            .or_else(|| over("party", "keys", party.keys, self.party_keys))
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn bounds_party(&self) -> bool {
        self.party_bytes.is_some() || self.party_keys.is_some()
    }
}

/// The last known usage of all rooms of one party, shared by its rooms on this node: read
/// from the store every [`PARTY_REFRESH`], and moved by this node's own commits between.
/// Other nodes' commits show at the next refresh, so a party may go past its quota by what
/// they write meanwhile.
#[derive(Debug, Default)]
pub struct PartyTotal {
    bytes: AtomicU64,
    keys: AtomicU64,
}

/// How often a party's total is read again.
pub const PARTY_REFRESH: Duration = Duration::from_secs(5);

impl PartyTotal {
    pub fn get(&self) -> Usage {
        Usage {
            bytes: self.bytes.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, usage: Usage) {
        self.bytes.store(usage.bytes, Ordering::Relaxed);
        self.keys.store(usage.keys, Ordering::Relaxed);
    }

    /// One of the party's rooms went from holding `before` to holding `after`.
    pub fn changed(&self, before: Usage, after: Usage) {
        let shift = |total: &AtomicU64, before: u64, after: u64| {
            let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(before).saturating_add(after))
            });
        };
        shift(&self.bytes, before.bytes, after.bytes);
        shift(&self.keys, before.keys, after.keys);
    }
}

/// The totals of the parties whose quota bounds the whole party, kept fresh while this
/// lives.
pub struct PartyTotals {
    totals: BTreeMap<String, Arc<PartyTotal>>,
}

impl PartyTotals {
    /// Totals for `parties`, read from `store` now and every [`PARTY_REFRESH`] after (on
    /// the current tokio runtime) until this is dropped.
    pub fn start(store: Arc<dyn Store>, parties: impl IntoIterator<Item = String>) -> Arc<Self> {
        let totals = parties
            .into_iter()
            .map(|p| (p, Arc::new(PartyTotal::default())))
            .collect();
        let this = Arc::new(Self { totals });
        if !this.totals.is_empty() {
            tokio::spawn(refresh(Arc::downgrade(&this), store));
        }
        this
    }

    /// The total of `party`, if its quota bounds it.
    pub fn get(&self, party: &str) -> Option<Arc<PartyTotal>> {
        self.totals.get(party).cloned()
    }
}

async fn refresh(totals: Weak<PartyTotals>, store: Arc<dyn Store>) {
    loop {
        let Some(this) = totals.upgrade() else { return };
        for (party, total) in &this.totals {
            match store.party_usage(party).await {
                Ok(usage) => total.set(usage),
                Err(e) => {
                    tracing::warn!(%party, error = %e, "cannot read the party's storage usage")
                }
            }
        }
        drop(this);
        tokio::time::sleep(PARTY_REFRESH).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_entries_counts_keys_and_bytes_exactly() {
        let mut u = Usage::default();
        u.replace("a", None, Some(10));
        u.replace("bb", None, Some(5));
        assert_eq!(u, Usage { bytes: 18, keys: 2 });
        u.replace("a", Some(10), Some(3));
        assert_eq!(u, Usage { bytes: 11, keys: 2 });
        u.replace("bb", Some(5), None);
        assert_eq!(u, Usage { bytes: 4, keys: 1 });
        // Deleting what is not there changes nothing.
        u.replace("zz", None, None);
        assert_eq!(Usage::decode(&u.encode()), Some(u));
    }

    #[test]
    fn a_quota_names_the_bound_that_does_not_hold() {
        let q = StorageQuota {
            room_bytes: Some(100),
            room_keys: Some(2),
            party_bytes: Some(1000),
            party_keys: None,
        };
        let room = |bytes, keys| Usage { bytes, keys };
        assert!(q.check(room(100, 2), room(1000, 99)).is_ok());
        let e = q.check(room(101, 1), room(0, 0)).unwrap_err().to_string();
        assert!(
            e.contains("room") && e.contains("101") && e.contains("100"),
            "{e}"
        );
        let e = q.check(room(1, 3), room(0, 0)).unwrap_err().to_string();
        assert!(e.contains("keys"), "{e}");
        let e = q.check(room(1, 1), room(1001, 0)).unwrap_err().to_string();
        assert!(e.contains("party"), "{e}");
        assert!(StorageQuota::UNLIMITED
            .check(room(u64::MAX, u64::MAX), room(u64::MAX, u64::MAX))
            .is_ok());
    }
}
