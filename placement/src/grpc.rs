//! The placement gRPC service (`WatchRing`) and the client gateways and nodes use to
//! follow it ([`follow_placement`]).

use conclave_proto::auth::PLACEMENT_NAME;
use conclave_proto::secret::{attach_proof, require_proof};
use conclave_proto::wire::placement_client::PlacementClient;
use conclave_proto::wire::placement_server::{Placement, PlacementServer};
use conclave_proto::wire::{RingMember, RingUpdate, WatchRingRequest};
use conclave_proto::{ClusterAuth, ClusterSecret, RingVersion, RingView, DEFAULT_REGION};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::{Request, Response, Status};

fn to_wire(view: &RingView) -> RingUpdate {
    RingUpdate {
        version: view.version.0,
        members: view
            .members
            .iter()
            .map(|(id, url)| RingMember {
                id: id.clone(),
                relay_url: url.clone(),
                region: view.region_of(id).to_string(),
            })
            .collect(),
    }
}

fn from_wire(update: RingUpdate) -> RingView {
    RingView {
        version: RingVersion(update.version),
        regions: update
            .members
            .iter()
            .filter(|m| !m.region.is_empty() && m.region != DEFAULT_REGION)
            .map(|m| (m.id.clone(), m.region.clone()))
            .collect(),
        members: update
            .members
            .into_iter()
            .map(|m| (m.id, m.relay_url))
            .collect(),
    }
}

struct PlacementService {
    rings: watch::Receiver<RingView>,
    /// Whether this replica's rings are current (it read Redis within a TTL).
    current: watch::Receiver<bool>,
}

/// Why a replica that cannot read Redis turns its followers away.
const NOT_CURRENT: &str =
    "this placement replica has not read Redis within a TTL: follow another replica";

type RingStream = Pin<Box<dyn Stream<Item = Result<RingUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Placement for PlacementService {
    type WatchRingStream = RingStream;

    async fn watch_ring(
        &self,
        _: Request<WatchRingRequest>,
    ) -> Result<Response<RingStream>, Status> {
        if !*self.current.borrow() {
            return Err(Status::unavailable(NOT_CURRENT));
        }
        // The stream ends once this replica stops reading Redis: its followers then follow
        // another replica, which may see nodes come and go that this one cannot.
        let mut current = self.current.clone();
        let not_current = async move {
            let _ = current.wait_for(|c| !*c).await;
        };
        let updates = tokio_stream::wrappers::WatchStream::new(self.rings.clone())
            .map(|v| Ok(to_wire(&v)))
            .take_until(not_current);
        Ok(Response::new(Box::pin(updates)))
    }
}

/// The ring feed of a placement replica: streams every ring `rings` takes while `current`
/// says the replica reads Redis ([`crate::publisher::run`]); with a cluster secret, only
/// callers that prove they hold it may follow it.
pub fn placement_service(
    rings: watch::Receiver<RingView>,
    current: watch::Receiver<bool>,
    secret: Option<ClusterSecret>,
) -> InterceptedService<PlacementServer<impl Placement>, impl Interceptor + Clone> {
    InterceptedService::new(
        PlacementServer::new(PlacementService { rings, current }),
        require_proof(secret, PLACEMENT_NAME.into()),
    )
}

/// Follows the rings published by any of the placement replicas at `urls` and calls
/// `apply` with each newer one (gateways route by it, nodes place rooms on it). The
/// returned receiver sees the same rings, for waiting on one.
pub fn follow_placement(
    urls: Vec<String>,
    auth: ClusterAuth,
    apply: impl Fn(&RingView) + Send + 'static,
) -> watch::Receiver<Option<RingView>> {
    let rings = watch_placement(urls, auth);
    let mut updates = rings.clone();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let view = updates.borrow_and_update().clone();
            if let Some(view) = view {
                apply(&view);
            }
        }
    });
    rings
}

/// The rings of the placement replicas at `urls`, reconnecting (to the next replica) when
/// a stream ends. The receiver keeps the last ring seen while no replica answers; it holds
/// `None` until the first one arrives.
fn watch_placement(urls: Vec<String>, auth: ClusterAuth) -> watch::Receiver<Option<RingView>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            if tx.is_closed() {
                return;
            }
            let Some(url) = urls.get(next % urls.len().max(1)) else {
                return;
            };
            next += 1;
            if let Err(e) = follow(url, &auth, &tx).await {
                tracing::debug!(url, error = %e, "placement stream ended");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    rx
}

async fn follow(
    url: &str,
    auth: &ClusterAuth,
    tx: &watch::Sender<Option<RingView>>,
) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2));
    let endpoint = auth
        .endpoint(endpoint, PLACEMENT_NAME)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut stream = PlacementClient::with_interceptor(
        channel,
        attach_proof(auth.secret.clone(), PLACEMENT_NAME.into()),
    )
    .watch_ring(WatchRingRequest {})
    .await
    .map_err(|e| e.to_string())?
    .into_inner();
    while let Some(update) = stream.message().await.map_err(|e| e.to_string())? {
        let view = from_wire(update);
        // Replicas agree on versions; never step back to an older one.
        tx.send_if_modified(|current| match current {
            Some(c) if c.version >= view.version => false,
            _ => {
                *current = Some(view.clone());
                true
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_views_cross_the_wire_unchanged() {
        let view = RingView {
            version: RingVersion(4),
            members: [
                ("a".to_string(), "http://x:1".to_string()),
                ("b".to_string(), "http://x:2".to_string()),
            ]
            .into(),
            regions: [("b".to_string(), "eu".to_string())].into(),
        };
        assert_eq!(from_wire(to_wire(&view)), view);
    }
}
