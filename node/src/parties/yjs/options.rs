//! How a yjs party stores its documents, who may edit them, and where it reports them
//! (`[parties.NAME.yjs]` in the TOML file, or [`YjsOptions`] in code).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most updates kept beside the snapshot, as y-partykit bounds `maxUpdates`.
pub const MAX_UPDATES_LIMIT: usize = 10_000;
/// Most bytes of updates kept beside the snapshot, as y-partykit bounds `maxBytes`.
pub const MAX_BYTES_LIMIT: usize = 10_000_000;

/// When the document is compacted into one snapshot.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// Updates are kept as such until `max_updates` or `max_bytes`, then compacted.
    #[default]
    History,
    /// As history, and compacted into one snapshot whenever the room empties.
    Snapshot,
}

/// The yjs party's settings.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct YjsOptions {
    pub persist: Persistence,
    /// Updates stored beside the snapshot before the document is compacted.
    #[serde(alias = "maxUpdates")]
    pub max_updates: usize,
    /// Bytes of updates stored beside the snapshot before the document is compacted.
    #[serde(alias = "maxBytes")]
    pub max_bytes: usize,
    /// Every connection only reads: its updates are not applied (it still gets everyone
    /// else's, and shares awareness). Per connection: [`super::YjsHooks::read_only`].
    #[serde(alias = "readOnly")]
    pub read_only: bool,
    /// POST the document's shared types to a URL after edits, debounced.
    pub callback: Option<CallbackOptions>,
}

impl Default for YjsOptions {
    fn default() -> Self {
        Self {
            persist: Persistence::History,
            max_updates: 500,
            max_bytes: 1024 * 1024,
            read_only: false,
            callback: None,
        }
    }
}

/// y-partykit's `callback`: after edits stop for `debounce_wait_ms` (or at least every
/// `debounce_max_wait_ms` while they go on), `{"room": …, "data": {name: {"type", "content"}}}`
/// is POSTed as JSON to `url` for each shared type named in `objects`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct CallbackOptions {
    /// An `http://` URL (HTTPS is not supported yet).
    pub url: String,
    #[serde(default = "default_debounce_wait", alias = "debounceWait")]
    pub debounce_wait_ms: u64,
    #[serde(default = "default_debounce_max_wait", alias = "debounceMaxWait")]
    pub debounce_max_wait_ms: u64,
    /// How long one POST may take.
    #[serde(default = "default_callback_timeout", alias = "timeout")]
    pub timeout_ms: u64,
    /// The shared types to send, by name.
    #[serde(default)]
    pub objects: BTreeMap<String, SharedType>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_debounce_wait() -> u64 {
    2_000
}
fn default_debounce_max_wait() -> u64 {
    10_000
}
fn default_callback_timeout() -> u64 {
    5_000
}

/// A shared type's kind, as y-partykit names it in `callback.objects` (a root
/// `XmlElement`, which yrs cannot read, is not supported).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedType {
    Array,
    Map,
    Text,
    XmlFragment,
}

impl YjsOptions {
    /// Refuses settings that cannot work, with the reason.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_UPDATES_LIMIT).contains(&self.max_updates) {
            return Err(format!(
                "max_updates must be between 1 and {MAX_UPDATES_LIMIT}"
            ));
        }
        if !(1..=MAX_BYTES_LIMIT).contains(&self.max_bytes) {
            return Err(format!("max_bytes must be between 1 and {MAX_BYTES_LIMIT}"));
        }
        if let Some(c) = &self.callback {
            let uri: http::Uri = c
                .url
                .parse()
                .map_err(|e| format!("callback.url {:?}: {e}", c.url))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(format!(
                    "callback.url {:?} must be an http:// URL (HTTPS is not supported yet)",
                    c.url
                ));
            }
            if c.debounce_wait_ms == 0 || c.debounce_max_wait_ms < c.debounce_wait_ms {
                return Err(
                    "callback: debounce_wait_ms must be over 0 and at most debounce_max_wait_ms"
                        .into(),
                );
            }
            if c.timeout_ms == 0 {
                return Err("callback.timeout_ms must be over 0".into());
            }
            for (name, value) in &c.headers {
                http::HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("callback.headers: invalid name {name:?}"))?;
                http::HeaderValue::try_from(value.as_str())
                    .map_err(|_| format!("callback.headers: invalid value for {name:?}"))?;
            }
        }
        Ok(())
    }
}

impl CallbackOptions {
    pub(super) fn wait(&self) -> Duration {
        Duration::from_millis(self.debounce_wait_ms)
    }
    pub(super) fn max_wait(&self) -> Duration {
        Duration::from_millis(self.debounce_max_wait_ms)
    }
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
