//! Room-to-room requests: `room.parties("chat").get("lobby").fetch(req)`.
//!
//! A room reaches other rooms through [`RoomRequests`], which the node's host implements;
//! rooms hold it weakly, so a live room does not keep a stopped node alive.

use crate::message::{Request, Response};
use conclave_proto::RoomKey;
use futures::future::BoxFuture;
use std::sync::{Arc, Weak};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid room name: {0}")]
    Name(#[from] conclave_proto::NameError),
    #[error("Party {0} not found")]
    UnknownParty(String),
    #[error("the room did not answer in time")]
    Timeout,
    #[error("the node is shutting down")]
    Closed,
    #[error("the room is on another node, and no gateway is linked to this one to ask it")]
    Unreachable,
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
}

/// Delivers HTTP requests to rooms, answered by their `on_request`.
pub(crate) trait RoomRequests: Send + Sync + 'static {
    fn fetch(
        self: Arc<Self>,
        room: RoomKey,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, FetchError>>;

    /// Delivers `Party::on_wake` to the room.
    fn wake(self: Arc<Self>, room: RoomKey);
}

/// A handle for calling other rooms on this node's cluster.
#[derive(Clone)]
pub struct RoomFetcher {
    requests: Weak<dyn RoomRequests>,
}

impl RoomFetcher {
    pub(crate) fn new(requests: Weak<dyn RoomRequests>) -> Self {
        Self { requests }
    }

    /// Asks `room` to run its party's `on_wake` (nothing happens if the node stopped).
    pub(crate) fn wake(&self, room: RoomKey) {
        if let Some(requests) = self.requests.upgrade() {
            requests.wake(room);
        }
    }

    pub fn party(&self, party: &str) -> PartyStub<'_> {
        PartyStub {
            fetcher: self,
            party: party.to_string(),
        }
    }
}

pub struct PartyStub<'a> {
    fetcher: &'a RoomFetcher,
    party: String,
}

impl<'a> PartyStub<'a> {
    pub fn get(&self, room: &str) -> RoomStub<'a> {
        RoomStub {
            fetcher: self.fetcher,
            party: self.party.clone(),
            room: room.to_string(),
        }
    }
}

pub struct RoomStub<'a> {
    fetcher: &'a RoomFetcher,
    party: String,
    room: String,
}

impl RoomStub<'_> {
    /// Sends an HTTP request to the room's `on_request`. A room must not fetch itself, nor
    /// wait on a room that is waiting on it: the call would time out.
    pub async fn fetch(&self, req: Request) -> Result<Response, FetchError> {
        let key = RoomKey::new(&self.party, &self.room)?;
        let requests = self.fetcher.requests.upgrade().ok_or(FetchError::Closed)?;
        requests.fetch(key, req).await
    }
}
