//! The client-facing server of `conclave dev` and `conclave gateway`: the gateway's routes
//! plus `/metrics`, `/healthz` and `/readyz` on one listener, until the process is told
//! to stop; then every client socket is closed with 1001 so clients reconnect at once.

use crate::shutdown::shutdown_signal;
use conclave_gateway::Gateway;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long closing client sockets may take at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A gateway serving clients.
pub struct EdgeServer {
    pub addr: SocketAddr,
    gateway: Gateway,
    drain_delay: Duration,
    server: JoinHandle<std::io::Result<()>>,
}

impl EdgeServer {
    /// Serves `gateway` on `listener`: rooms, `/healthz` and `/readyz`, and — unless an
    /// `ops` listener takes them — `/metrics` and `/admin/*` too. `/readyz` answers the
    /// gateway's readiness and then `node`'s, when the process hosts rooms too.
    pub fn start(
        listener: TcpListener,
        gateway: Gateway,
        ops: Option<TcpListener>,
        node: Option<crate::telemetry::Readiness>,
    ) -> std::io::Result<Self> {
        use crate::telemetry::{health_router, ops_router};
        let addr = listener.local_addr()?;
        let ready = gateway.clone();
        let ready: crate::telemetry::Readiness = std::sync::Arc::new(move || {
            ready.readiness()?;
            node.as_ref().map_or(Ok(()), |node| node())
        });
        let app = match ops {
            None => ops_router(ready).merge(gateway.router()),
            Some(ops) => {
                let ops_app = ops_router(ready.clone()).merge(gateway.admin_router());
                tokio::spawn(async move { axum::serve(ops, ops_app).await });
                health_router(ready).merge(gateway.client_router())
            }
        };
        let server = tokio::spawn(conclave_gateway::serve_http1(listener, app, &gateway));
        Ok(Self {
            addr,
            gateway,
            drain_delay: Duration::ZERO,
            server,
        })
    }

    /// On a stop signal, fail `/readyz` for `delay` (sockets carry on) before closing
    /// them, so a load balancer health-checking the gateway stops sending it new clients
    /// first.
    pub fn with_drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Serves until the server fails or the process gets SIGINT/SIGTERM; then fails
    /// `/readyz` for the drain delay and closes client sockets with 1001.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            r = &mut self.server => return Ok(r??),
            _ = shutdown_signal() => {}
        }
        self.stop().await;
        Ok(())
    }

    /// Stops as on a stop signal: fails `/readyz` for the drain delay, lets the frames
    /// clients sent get their answers, then closes client sockets with 1001.
    pub async fn stop(&self) {
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "draining: /readyz fails, sockets stay");
            self.gateway.start_draining();
            tokio::time::sleep(self.drain_delay).await;
        }
        tracing::info!("shutting down");
        self.gateway.shutdown(CLOSE_GRACE).await;
    }

    /// Stops serving at once, closing nothing.
    pub fn abort(&self) {
        self.server.abort();
    }
}
