//! The cluster roles: `conclave node` (rooms + storage, relay gRPC service) and
//! `conclave gateway` (client edge, routes rooms to nodes by consistent hashing).
//!
//! This is a static cluster: every gateway is given the same node list, so all compute
//! the same owner for every room. Liveness-driven rings, fenced ownership and failover
//! arrive with the placement service.

use crate::config::{GatewayRoleConfig, NodeRoleConfig, PlacementRoleConfig};
use crate::dev::{open_store, registry_for};
use conclave_gateway::{Gateway, GrpcNodes};
use conclave_node::Node;
use conclave_proto::{Ring, RingVersion};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// Accepted relay connections with Nagle off: tonic sets TCP_NODELAY only on listeners it
/// binds itself, and small relay frames must not wait for the peer's ACK.
fn nodelay_incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    })
}

/// Runs a node until SIGINT/SIGTERM.
pub async fn run_node(config: NodeRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let store = open_store(&config.storage).await?;
    let node = Node::start(config.node.clone(), registry_for(&config.parties), store);
    let relay = bind(config.relay_listen, "the relay").await?;
    let http = bind(config.http_listen, "metrics and health").await?;
    println!(
        "conclave node {} relay on http://{}",
        config.id,
        relay.local_addr()?
    );
    println!(
        "conclave node {} metrics on http://{}",
        config.id,
        http.local_addr()?
    );
    let drain_requested = Arc::new(tokio::sync::Notify::new());
    let ops_routes = crate::telemetry::ops_router().merge(crate::admin::node_router(
        config.admin_token.clone(),
        drain_requested.clone(),
    ));
    let ops = tokio::spawn(async move { axum::serve(http, ops_routes).await });
    let membership = match config.redis_url.clone() {
        Some(redis_url) => Some(follow_cluster(
            &node,
            &config,
            redis_url,
            relay.local_addr()?,
        )),
        None => None,
    };
    let drain_node = node.clone();
    let (drained, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = drain_requested.notified() => {}
        }
        if let Some(m) = membership {
            tracing::info!("draining: handing every room to other nodes");
            m.drain(&drain_node).await;
        }
        let _ = drained.send(());
    };
    let attach = node.clone();
    let service = conclave_proto::grpc::relay_service(move |side| attach.attach_gateway(side));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .add_service(service)
        .serve_with_incoming_shutdown(nodelay_incoming(relay), shutdown);
    // Relay streams are long-lived and would hold a graceful shutdown open forever: once
    // the rooms are gone, give in-flight frames a moment, then stop.
    tokio::select! {
        r = server => r?,
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        } => {}
    }
    ops.abort();
    Ok(())
}

/// A dynamic cluster: heartbeat into Redis and place rooms on the rings placement
/// publishes. The node serves only while its heartbeat is fresh *and* it holds a ring that
/// includes it: before that, its view of who is alive could let it take rooms that live
/// nodes hold.
fn follow_cluster(
    node: &Node,
    config: &NodeRoleConfig,
    redis_url: String,
    relay: SocketAddr,
) -> Membership {
    #[derive(Default)]
    struct Gate {
        alive: bool,
        placed: bool,
    }
    let gate = Arc::new(std::sync::Mutex::new(Gate::default()));
    let update = {
        let (gate, node) = (gate.clone(), node.clone());
        move |f: &dyn Fn(&mut Gate)| {
            let mut g = gate.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut g);
            node.set_serving(g.alive && g.placed);
        }
    };
    node.set_serving(false);
    let beat = conclave_placement::heartbeat::Beat {
        id: config.id.clone(),
        relay_url: config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{relay}")),
        incarnation: node.incarnation(),
        region: config.node.region.clone(),
    };
    let on_fence = update.clone();
    let (leave, leave_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(conclave_placement::heartbeat::run(
        redis_url,
        beat,
        config.liveness,
        move |fenced| on_fence(&|g| g.alive = !fenced),
        leave_rx,
    ));
    let mut rings = conclave_placement::grpc::watch_placement(config.placement.clone());
    let membership = Membership {
        leave,
        rings: rings.clone(),
        id: config.id.clone(),
    };
    let (node, id, region) = (node.clone(), config.id.clone(), config.node.region.clone());
    tokio::spawn(async move {
        while rings.changed().await.is_ok() {
            let view = rings.borrow_and_update().clone();
            if let Some(view) = view {
                let placed = view.members.contains_key(&id);
                node.set_ring(view.ring_for(&region));
                update(&|g| g.placed = placed);
            }
        }
    });
    membership
}

/// A node's place in a dynamic cluster, for leaving it.
struct Membership {
    leave: tokio::sync::watch::Sender<bool>,
    rings: tokio::sync::watch::Receiver<Option<conclave_proto::RingView>>,
    id: String,
}

impl Membership {
    /// Leaves the ring (deletes the heartbeat) and waits until placement published a ring
    /// without this node: by then its rooms have been handed off and their clients told to
    /// reconnect to their new owners.
    async fn drain(mut self, node: &Node) {
        let _ = self.leave.send(true);
        let id = self.id.clone();
        let gone = self
            .rings
            .wait_for(|r| r.as_ref().is_some_and(|v| !v.members.contains_key(&id)));
        if tokio::time::timeout(DRAIN_TIMEOUT, gone).await.is_err() {
            tracing::warn!("placement did not drop this node in time; closing its rooms anyway");
        }
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while node.room_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a drain waits for placement, then for rooms to leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a placement replica until SIGINT/SIGTERM.
pub async fn run_placement(config: PlacementRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let listener = bind(config.listen, "placement").await?;
    println!("conclave placement on http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::watch::channel(conclave_proto::RingView::default());
    tokio::spawn(conclave_placement::publisher::run(
        config.redis_url.clone(),
        config.liveness,
        tx,
    ));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(conclave_placement::grpc::placement_service(rx))
        .serve_with_incoming_shutdown(nodelay_incoming(listener), shutdown_signal())
        .await?;
    Ok(())
}

/// Runs a gateway until SIGINT/SIGTERM, then closes client sockets with 1001.
pub async fn run_gateway(config: GatewayRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let ring = Ring::new(RingVersion(1), config.nodes.keys().cloned());
    let nodes = GrpcNodes::new(config.nodes.clone().into_iter().collect());
    let gateway = Gateway::with_nodes(config.gateway.clone(), ring, nodes);
    if !config.placement.is_empty() {
        let mut rings = conclave_placement::grpc::watch_placement(config.placement.clone());
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while rings.changed().await.is_ok() {
                let view = rings.borrow_and_update().clone();
                if let Some(view) = view {
                    gateway.set_ring(&view);
                }
            }
        });
    }
    let listener = bind(config.listen, "clients").await?;
    println!(
        "conclave gateway listening on http://{}",
        listener.local_addr()?
    );
    for (id, url) in &config.nodes {
        println!("  node {id} at {url}");
    }
    let app = crate::telemetry::ops_router().merge(gateway.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::select! {
        r = server => return Ok(r??),
        _ = shutdown_signal() => {}
    }
    gateway.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
