//! The cluster roles, each run until SIGINT/SIGTERM: `conclave node` (rooms and their
//! storage, behind the relay gRPC service gateways connect to), `conclave gateway` (the
//! client edge: routes each room to its owner on the ring) and `conclave placement`
//! (publishes numbered rings of the live nodes).
//!
//! A cluster is static or dynamic. Static (`--nodes`): every gateway and node is given the
//! same node list, a fixed ring. Dynamic (`--redis-url` and `--placement`): nodes
//! heartbeat into Redis, placement replicas publish rings of the live ones, and gateways
//! and nodes follow them; a node serves only as its [`Membership`] allows.

use crate::config::{GatewayRoleConfig, NodeRoleConfig, PlacementRoleConfig};
use crate::edge::EdgeServer;
use crate::shutdown::shutdown_signal;
use conclave_gateway::{Gateway, GrpcNodes};
use conclave_node::{Node, PartyRegistry};
use conclave_placement::grpc::{follow_placement, placement_service};
use conclave_placement::heartbeat::Beat;
use conclave_placement::{Member, Membership, Ring, RingVersion};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A listener of this role. Its connections have Nagle's algorithm off (they inherit it
/// from the listener): small relay frames and client messages must not wait for the
/// peer's ACK.
fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    conclave_gateway::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// Serves an internal gRPC service (relay, placement) on `listener` until `shutdown`: over
/// mutual TLS with the role's current certificates when it has them (each connection's
/// handshake uses whatever the files held at the last reload). `listener` comes from
/// [`bind`].
async fn serve_internal(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    auth: &conclave_proto::ClusterAuth,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    match &auth.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await
        }
    }
}

/// Runs a node serving `parties` until SIGINT/SIGTERM or `POST /admin/drain`; in a
/// dynamic cluster it first drains (hands every room to other nodes).
pub async fn run_node(config: NodeRoleConfig, parties: PartyRegistry) -> anyhow::Result<()> {
    crate::telemetry::metrics_labelled(&[
        ("role", "node"),
        ("node", &config.id),
        ("region", &config.node.region),
    ]);
    config.auth.spawn_tls_reload();
    let store = crate::store::open_store(&config.storage).await?;
    let node = Node::start(config.node.clone(), parties, store);
    let relay = bind(config.relay_listen, "the relay")?;
    let http = bind(config.http_listen, "metrics and health")?;
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
    let ready = node.clone();
    let ready = Arc::new(move || ready.readiness());
    let ops_routes = crate::telemetry::ops_router(ready).merge(crate::admin::node_router(
        config.admin_token.clone(),
        drain_requested.clone(),
    ));
    let ops = tokio::spawn(async move { axum::serve(http, ops_routes).await });
    let membership = match config.redis.clone() {
        Some(redis) => Some(join_cluster(&node, &config, redis, relay.local_addr()?)),
        None => None,
    };
    let (drained, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = drain_requested.notified() => {}
        }
        if let Some(m) = membership {
            tracing::info!("draining: handing every room to other nodes");
            m.drain().await;
        }
        let _ = drained.send(());
    };
    let attach = node.clone();
    let service = conclave_proto::grpc::relay_service(
        move |side| attach.attach_gateway(side),
        config.auth.secret.clone(),
        &config.id,
    );
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .add_service(service);
    let server = serve_internal(router, relay, &config.auth, shutdown);
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

/// Joins a dynamic cluster: heartbeats into Redis as reachable at `relay` (or the
/// advertised URL) and follows placement's rings.
fn join_cluster(
    node: &Node,
    config: &NodeRoleConfig,
    redis: conclave_placement::RedisTarget,
    relay: SocketAddr,
) -> Membership {
    let beat = Beat {
        id: config.id.clone(),
        relay_url: config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{}://{relay}", config.auth.scheme())),
        incarnation: node.incarnation(),
        region: config.node.region.clone(),
        auth: config.auth.clone(),
    };
    Membership::join(
        Arc::new(ClusterNode(node.clone())),
        beat,
        redis,
        config.liveness,
        config.placement.clone(),
    )
}

/// A node as its membership drives it.
struct ClusterNode(Node);

impl Member for ClusterNode {
    fn set_serving(&self, serving: bool) {
        self.0.set_serving(serving);
    }
    fn set_ring(&self, ring: Ring) {
        self.0.set_ring(ring);
    }
    fn set_regions(&self, regions: Vec<String>) {
        self.0.set_regions(regions);
    }
    fn room_count(&self) -> usize {
        self.0.room_count()
    }
    fn fit(&self, within: Duration) -> futures::future::BoxFuture<'static, bool> {
        self.0.store_reachable(within)
    }
}

/// Runs a placement replica until SIGINT/SIGTERM.
pub async fn run_placement(config: PlacementRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics_labelled(&[("role", "placement")]);
    config.auth.spawn_tls_reload();
    let listener = bind(config.listen, "placement")?;
    let http = bind(config.http_listen, "metrics and health")?;
    println!("conclave placement on http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::watch::channel(conclave_proto::RingView::default());
    let health = conclave_placement::publisher::ReplicaHealth::default();
    tokio::spawn(conclave_placement::publisher::run(
        config.redis.clone(),
        config.liveness,
        tx,
        config.auth.secret.clone(),
        health.clone(),
    ));
    let current = health.current();
    let ready = Arc::new(move || {
        if health.last_poll_ok() {
            Ok(())
        } else {
            Err("not ready: Redis does not answer (the last ring stays published)".to_string())
        }
    });
    let ops = crate::telemetry::ops_router(ready);
    tokio::spawn(async move { axum::serve(http, ops).await });
    let router = tonic::transport::Server::builder().add_service(placement_service(
        rx,
        current,
        config.auth.secret.clone(),
    ));
    serve_internal(router, listener, &config.auth, shutdown_signal()).await?;
    Ok(())
}

/// Runs a gateway until SIGINT/SIGTERM, then closes client sockets with 1001.
pub async fn run_gateway(config: GatewayRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics_labelled(&[("role", "gateway"), ("region", &config.gateway.region)]);
    config.auth.spawn_tls_reload();
    let ring = Ring::new(RingVersion(1), config.nodes.keys().cloned());
    let nodes = GrpcNodes::new(
        config.nodes.clone().into_iter().collect(),
        config.auth.clone(),
    );
    let gateway = Gateway::with_nodes(config.gateway.clone(), ring, nodes);
    if !config.placement.is_empty() {
        let routing = gateway.clone();
        let auth = config.auth.clone();
        follow_placement(config.placement.clone(), auth, move |view| {
            routing.set_ring(view)
        });
    }
    let listener = bind(config.listen, "clients")?;
    let ops = bind(config.ops_listen, "metrics and admin")?;
    let ops_addr = ops.local_addr()?;
    let edge =
        EdgeServer::start(listener, gateway, Some(ops), None)?.with_drain_delay(config.drain_delay);
    println!("conclave gateway listening on http://{}", edge.addr);
    println!("conclave gateway metrics and admin on http://{ops_addr}");
    for (id, url) in &config.nodes {
        println!("  node {id} at {url}");
    }
    edge.wait().await
}
