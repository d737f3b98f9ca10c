//! Logs (`tracing`, `RUST_LOG`) and the Prometheus recorder behind `/metrics`.

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Installs the log subscriber once; `json` selects JSON lines.
pub fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide metrics recorder (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // A test process may already have a recorder; then this handle renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Whether a role can do its work now: `Err` says why not.
pub type Readiness = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// `/metrics`, `/healthz` (the process is up) and `/readyz` (200 while `ready` says the
/// role can do its work; 503 with the reason otherwise, so load balancers and Kubernetes
/// send it nothing), on every role.
pub fn ops_router(ready: Readiness) -> Router {
    let handle = metrics();
    health_router(ready).route("/metrics", get(move || async move { handle.render() }))
}

/// `/healthz` and `/readyz` only: what a gateway's public port answers to load balancers.
pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                match ready() {
                    Ok(()) => (axum::http::StatusCode::OK, "ok".to_string()),
                    Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
}
