//! The cluster roles: `conclave node` (rooms + storage, relay gRPC service) and
//! `conclave gateway` (client edge, routes rooms to nodes by consistent hashing).
//!
//! This is a static cluster: every gateway is given the same node list, so all compute
//! the same owner for every room. Liveness-driven rings, fenced ownership and failover
//! arrive with the placement service.

use crate::config::{GatewayRoleConfig, NodeRoleConfig};
use crate::dev::{open_store, registry_for};
use conclave_gateway::{Gateway, GrpcNodes};
use conclave_node::Node;
use conclave_proto::{Ring, RingVersion};
use std::net::SocketAddr;
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

/// Runs a gateway until SIGINT/SIGTERM, then closes client sockets with 1001.
pub async fn run_gateway(config: GatewayRoleConfig) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let ring = Ring::new(RingVersion(1), config.nodes.keys().cloned());
    let nodes = GrpcNodes::new(config.nodes.clone().into_iter().collect());
    let gateway = Gateway::with_nodes(config.gateway.clone(), ring, nodes);
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
