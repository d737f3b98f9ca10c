//! The actor's hold on its room: claiming it in storage before anything runs, letting go
//! of it when idle or handed off, and leaving it when this node may no longer serve it.

use super::handler::StepError;
use super::RoomActor;
use crate::links::GatewayId;
use crate::mailbox::{AlarmOutcome, RoomEvent};
use crate::message::text_response;
use crate::room::Ledger;
use crate::storage::{Claimed, StorageError};
use conclave_proto::wire::{node_event, Moved};
use std::collections::BTreeMap;
use tracing::{debug, warn};

/// How long a claim waits for another live holder to hand the room over.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl RoomActor {
    /// Answers an event this actor will not handle because it is leaving the room. Frames
    /// need no answer: unacknowledged, they are replayed to the next owner.
    pub(super) async fn bounce(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Open(o) => {
                self.refuse_open(o.peer, o.request_id, "the room is moving")
                    .await
            }
            RoomEvent::Request { reply, .. } => {
                let _ = reply.send(text_response(
                    503,
                    "The room is moving to another node; retry",
                ));
            }
            RoomEvent::Alarm { reply, .. } => {
                let _ = reply.send(AlarmOutcome::NotRun);
            }
            _ => {}
        }
    }

    /// Owns the room in storage before anything runs: claims it unless this actor already
    /// holds the claim.
    /// Failing, it marks the actor to leave: the room's sockets move on and retry.
    pub(super) async fn ensure_owned(&mut self) -> Result<(), StepError> {
        let r = self.claim().await;
        if r.is_err() {
            self.fenced = true;
        }
        r
    }

    pub(super) async fn claim(&mut self) -> Result<(), StepError> {
        if !self.ctx.cluster.is_serving() {
            return Err(StepError::NodeFenced);
        }
        if self.room.storage().fence().is_some() {
            return Ok(());
        }
        let store = self.room.storage().store().clone();
        // A node handing the room to us releases it in a moment: wait for that, briefly.
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let mut claim = self.ctx.cluster.claim();
        // With the claim: what earlier owners committed for frames and outputs
        // (`room/ledger/`), and what the room's keys take, for its storage quota.
        let Claimed {
            owner,
            ledger,
            usage,
        } = loop {
            match store.claim_and_load(self.room.key(), &claim).await {
                Err(StorageError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                    let left = deadline - tokio::time::Instant::now();
                    store.wait_owner_change(self.room.key(), left).await;
                }
                // The holder had its time: it may have left the room without letting go
                // (a release its store failed), and would keep it from us for good.
                Err(StorageError::Held { holder })
                    if !claim.take_over && self.ctx.cluster.places_here(self.room.key()) =>
                {
                    warn!(%holder, "the room's holder did not let it go in time; taking it over (its later commits are refused)");
                    claim.take_over = true;
                }
                other => break other.map_err(StepError::Claim)?,
            }
        };
        debug!(node = %owner.node, epoch = owner.epoch, "claimed");
        *self.room.ledger() = Ledger::load(ledger);
        self.room.ledger().room_came();
        let (quota, party) = (self.ctx.storage_quota, self.ctx.party_total.clone());
        self.room.storage().set_quota(quota, usage, party);
        self.room.storage().set_fence(Some(owner));
        Ok(())
    }

    /// Lets go of the room in storage, if this actor holds it.
    pub(super) async fn release(&mut self) {
        let Some(owner) = self.room.storage().fence().cloned() else {
            return;
        };
        self.room.storage().set_fence(None);
        if !self.ctx.cluster.is_serving() {
            return; // a fenced node writes nothing
        }
        let store = self.room.storage().store().clone();
        if let Err(e) = store.release(self.room.key(), &owner).await {
            warn!(error = %e, "cannot release the room");
        }
    }

    /// This actor must not serve the room any more (hand-off, fencing, or a claim it could
    /// not get). Its sockets are not closed: each gateway is told they moved, and re-attaches
    /// them to the room's owner, replaying the frames not acknowledged here.
    pub(super) async fn tear_down(&mut self) {
        debug!(
            node = self.ctx.cluster.node_id(),
            "leaving the room; its connections move to the next owner"
        );
        let mut per_gateway: BTreeMap<GatewayId, Vec<u64>> = BTreeMap::new();
        for e in self.room.shared().conns().iter() {
            per_gateway.entry(e.gateway).or_default().push(e.socket.0);
        }
        let ring_version = self.ctx.cluster.ring_version();
        self.room.shared().clear_outbox();
        for (gateway, sockets) in per_gateway {
            self.room.shared().push(
                gateway,
                node_event::Event::Moved(Moved {
                    sockets,
                    ring_version: ring_version.0,
                }),
            );
        }
        self.room.flush().await;
        self.ctx.rooms.evict(self.room.key());
    }
}
