//! Logs (`tracing`, `RUST_LOG`) and the Prometheus recorder behind `/metrics`.

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Exports traces until dropped (then flushes what is left).
pub struct Tracing(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Whether the standard OpenTelemetry variables ask for traces over OTLP.
fn otlp_requested() -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").or(var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    endpoint.is_some()
        && var("OTEL_SDK_DISABLED").as_deref() != Some("true")
        && var("OTEL_TRACES_EXPORTER").as_deref() != Some("none")
}

/// OTLP trace export as the `OTEL_*` variables configure it (endpoint, headers, sampler,
/// batch timing); the service is `service` unless `OTEL_SERVICE_NAME` names one.
fn tracer_provider(service: &str) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    if !otlp_requested() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot export traces over OTLP: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_string());
    }
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Installs logging (stderr; `json` selects JSON lines; `RUST_LOG` filters) and, when the
/// `OTEL_*` variables ask for it, OTLP trace export of the spans under
/// [`conclave_proto::trace::TARGET`] as service `service`. Keep the returned value alive
/// while the process runs.
pub fn init(json: bool, service: &str) -> Tracing {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Trace spans are for the exporter only, never for the log.
    let filter = match format!("{}=off", conclave_proto::trace::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(filter);
    let provider = tracer_provider(service);
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        let only_traces = tracing_subscriber::filter::Targets::new()
            .with_target(conclave_proto::trace::TARGET, tracing::Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("conclave"))
            .with_filter(only_traces)
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    conclave_proto::trace::set_enabled(installed.is_ok() && provider.is_some());
    Tracing(provider)
}

/// Labels every series of this process carries, set by [`metrics_labelled`].
static PROCESS_LABELS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Installs the recorder (if no series was recorded yet) with labels that every series of
/// this process carries — its role, node id, region — so a cluster's series stay apart
/// however they are scraped.
pub fn metrics_labelled(labels: &[(&str, &str)]) -> &'static PrometheusHandle {
    let _ = PROCESS_LABELS.set(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    metrics()
}

/// The process-wide metrics recorder (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        use metrics_exporter_prometheus::Matcher;
        // Histograms with buckets (aggregatable across processes), not summaries.
        const SECONDS: [f64; 14] = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        const SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        let mut labelled = PrometheusBuilder::new();
        for (key, value) in PROCESS_LABELS.get().into_iter().flatten() {
            labelled = labelled.add_global_label(key, value);
        }
        let builder = labelled
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZES));
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // A test process may already have a recorder; then this handle renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        metrics::gauge!("conclave_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // The recorder's periodic housekeeping (draining histogram samples into buckets),
        // which nothing else runs for a recorder built by hand.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            });
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
