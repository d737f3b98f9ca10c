//! The party handlers a step can run, and why a step may not take effect.

use crate::message::{Message, Request, Response};
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use crate::storage::StorageError;

/// A party handler, with its arguments.
pub(super) enum Handler<'a> {
    Start,
    Connect(&'a Connection),
    /// A client frame; `seq` (0: none) is acknowledged together with the step's messages
    /// when the handler succeeds.
    Message {
        conn: &'a Connection,
        msg: Message,
        seq: u64,
    },
    Close(&'a Connection, u16, &'a str),
    Error(&'a Connection, &'a str),
    Request(Request),
    Alarm,
    Wake,
}

impl Handler<'_> {
    /// Runs the handler; only a request's answers with a response. A panic in the party's
    /// code fails the step as a broken instance: the room drops the instance and starts a
    /// fresh one for its next event, as for a thrown error in JavaScript. (Unwinding out of
    /// the room's task would leave its sockets in a room no one serves.)
    pub(super) async fn call(
        self,
        party: &mut dyn Party,
        room: &mut Room,
    ) -> Result<Option<Response>, PartyError> {
        // The party is dropped after a panic, and the room's held writes and messages are
        // discarded with the failed step: what the panic interrupted is not used again.
        crate::panics::guarded_future(self.run(party, room))
            .await
            .unwrap_or_else(|what| Err(crate::panics::broken(&what)))
    }

    async fn run(
        self,
        party: &mut dyn Party,
        room: &mut Room,
    ) -> Result<Option<Response>, PartyError> {
        match self {
            Handler::Start => party.on_start(room).await.map(|()| None),
            Handler::Connect(conn) => party.on_connect(room, conn).await.map(|()| None),
            Handler::Message { conn, msg, .. } => {
                party.on_message(room, conn, msg).await.map(|()| None)
            }
            Handler::Close(conn, code, reason) => party
                .on_close(room, conn, code, reason)
                .await
                .map(|()| None),
            Handler::Error(conn, error) => party.on_error(room, conn, error).await.map(|()| None),
            Handler::Request(req) => party.on_request(room, req).await.map(Some),
            Handler::Alarm => party.on_alarm(room).await.map(|()| None),
            Handler::Wake => party.on_wake(room).await.map(|()| None),
        }
    }
}

/// Why a step did not take effect. Shown as the underlying error.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The node may not serve rooms (its liveness lapsed).
    #[error("this node is fenced: its liveness lapsed")]
    NodeFenced,
    /// The room could not be claimed.
    #[error("{0}")]
    Claim(StorageError),
    /// The handler failed: its writes and messages were discarded.
    #[error("{0}")]
    Handler(PartyError),
    /// The handler's writes did not commit: they and its messages were discarded.
    #[error("{0}")]
    Commit(StorageError),
    /// The store failed a read the handler made (a client frame's, or `on_start`'s): what
    /// it did rests on data it did not see, so it was discarded (`RoomActor::run_step`).
    #[error("{0}")]
    Read(StorageError),
}
