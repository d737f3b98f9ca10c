//! y-partykit's HTTP callback: after edits, debounced, the document's named shared types
//! are POSTed as JSON to a URL, for apps that mirror documents elsewhere. In memory: an
//! edit made just before its node dies is reported by no one (the document itself is
//! safe in storage); a failed POST is logged and counted, not retried.

use super::options::{CallbackOptions, SharedType};
use crate::room::Room;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Map, Value};
use std::time::Instant;
use yrs::types::ToJson;
use yrs::{Doc, GetString, ReadTxn, Transact};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One client (and connection pool) for every room's callbacks, made at the first POST.
fn client() -> &'static HttpClient {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(hyper_util::rt::TokioExecutor::new()).build_http())
}

/// The debounced callback of one room's document.
pub struct Callback {
    options: CallbackOptions,
    /// When the first and the latest edits not yet reported were made.
    pending: Option<(Instant, Instant)>,
    /// A wake-up is scheduled for this time.
    wake_at: Option<Instant>,
}

impl Callback {
    pub fn new(options: CallbackOptions) -> Self {
        Self {
            options,
            pending: None,
            wake_at: None,
        }
    }

    /// Whether edits wait to be reported (the document must then stay loaded).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The document changed: report it once edits pause, or at the longest wait.
    pub fn edited(&mut self, room: &Room) {
        let now = Instant::now();
        match &mut self.pending {
            Some((_, last)) => *last = now,
            None => self.pending = Some((now, now)),
        }
        if self.wake_at.is_none() {
            self.schedule(room, now + self.options.wait());
        }
    }

    /// The room woke: POSTs the document if it is due, else waits on.
    pub fn woke(&mut self, room: &Room, doc: &Doc) {
        let now = Instant::now();
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
        }
        let Some((first, last)) = self.pending else {
            return;
        };
        let due = (last + self.options.wait()).min(first + self.options.max_wait());
        if due > now {
            if self.wake_at.is_none_or(|at| at > due) {
                self.schedule(room, due);
            }
            return;
        }
        self.pending = None;
        self.post(room.id(), doc);
    }

    fn schedule(&mut self, room: &Room, at: Instant) {
        self.wake_at = Some(at);
        room.wake_after(at.saturating_duration_since(Instant::now()));
    }

    fn post(&self, room: &str, doc: &Doc) {
        let body = json!({ "room": room, "data": self.contents(doc) }).to_string();
        let mut req = http::Request::post(&self.options.url)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.options.headers {
            req = req.header(name, value);
        }
        // The options were validated, so the request builds.
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            return;
        };
        let (timeout, url) = (self.options.timeout(), self.options.url.clone());
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(timeout, client().request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => "ok",
                Ok(Ok(resp)) => {
                    tracing::warn!(%url, status = %resp.status(), "yjs callback refused");
                    "failed"
                }
                Ok(Err(e)) => {
                    tracing::warn!(%url, error = %e, "yjs callback failed");
                    "failed"
                }
                Err(_) => {
                    tracing::warn!(%url, ?timeout, "yjs callback timed out");
                    "failed"
                }
            };
            metrics::counter!("conclave_yjs_callbacks_total", "outcome" => outcome).increment(1);
        });
    }

    /// `{name: {"type", "content"}}` for each shared type the options name.
    fn contents(&self, doc: &Doc) -> Value {
        let txn = doc.transact();
        let mut data = Map::new();
        for (name, kind) in &self.options.objects {
            let content = match kind {
                SharedType::Text => json!(txn
                    .get_text(name.as_str())
                    .map(|t| t.get_string(&txn))
                    .unwrap_or_default()),
                SharedType::XmlFragment => json!(txn
                    .get_xml_fragment(name.as_str())
                    .map(|t| t.get_string(&txn))
                    .unwrap_or_default()),
                SharedType::Map => txn
                    .get_map(name.as_str())
                    .and_then(|m| serde_json::to_value(m.to_json(&txn)).ok())
                    .unwrap_or_else(|| json!({})),
                SharedType::Array => txn
                    .get_array(name.as_str())
                    .and_then(|a| serde_json::to_value(a.to_json(&txn)).ok())
                    .unwrap_or_else(|| json!([])),
            };
            data.insert(name.clone(), json!({ "type": kind, "content": content }));
        }
        Value::Object(data)
    }
}
