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
    let store = open_store(&config.data_dir, config.postgres_url.as_deref()).await?;
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
    let ops = tokio::spawn(async move { axum::serve(http, crate::telemetry::ops_router()).await });
    if let Some(redis_url) = config.redis_url.clone() {
        follow_cluster(&node, &config, redis_url, relay.local_addr()?);
    }
    let attach = node.clone();
    let service = conclave_proto::grpc::relay_service(move |side| attach.attach_gateway(side));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .add_service(service)
        .serve_with_incoming_shutdown(nodelay_incoming(relay), shutdown_signal())
        .await?;
    ops.abort();
    Ok(())
}

/// A dynamic cluster: heartbeat into Redis and place rooms on the rings placement
/// publishes. The node serves only while its heartbeat is fresh *and* it holds a ring that
/// includes it: before that, its view of who is alive could let it take rooms that live
/// nodes hold.
fn follow_cluster(node: &Node, config: &NodeRoleConfig, redis_url: String, relay: SocketAddr) {
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
    };
    let on_fence = update.clone();
    tokio::spawn(conclave_placement::heartbeat::run(
        redis_url,
        beat,
        config.liveness,
        move |fenced| on_fence(&|g| g.alive = !fenced),
    ));
    let mut rings = conclave_proto::grpc::watch_placement(config.placement.clone());
    let (node, id) = (node.clone(), config.id.clone());
    tokio::spawn(async move {
        while rings.changed().await.is_ok() {
            let view = rings.borrow_and_update().clone();
            if let Some(view) = view {
                let placed = view.members.contains_key(&id);
                node.set_ring(view.ring());
                update(&|g| g.placed = placed);
            }
        }
    });
}

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
        .add_service(conclave_proto::grpc::placement_service(rx))
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
        let mut rings = conclave_proto::grpc::watch_placement(config.placement.clone());
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
