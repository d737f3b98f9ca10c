//! OpenTelemetry traces: with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` set, a gateway
//! and a node export spans over OTLP, and one client message is one trace across both
//! processes: the gateway's `client.message`, the node's `room.message` under it, and the
//! commit of its writes (`storage.commit`) under that.

mod common;

use common::cluster::{room_on, Cluster};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span: (service, name, trace id, span id, parent span id).
type Exported = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

/// An OTLP trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push((
                    service.clone(),
                    span.name,
                    span.trace_id,
                    span.span_id,
                    span.parent_span_id,
                ));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn one_client_message_is_one_trace_across_gateway_and_node() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The roles this test starts inherit these (this binary holds this one test).
    // SAFETY-free in edition 2021; no other thread reads the environment yet.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let cluster = Cluster::builder().nodes(["a"]).start().await;
    let room = room_on("counter", &["a"], "a");
    let mut ws = cluster.ws(0, &format!("/parties/counter/{room}")).await;
    send(&mut ws, "incr").await;
    assert_eq!(next_json(&mut ws).await["value"], 1);
    // A broadcast (the relay party): its fan-out at the gateway joins the sender's trace.
    let mut listener = cluster.ws(0, "/parties/main/traced?_pk=l").await;
    let mut speaker = cluster.ws(0, "/parties/main/traced?_pk=s").await;
    send(&mut speaker, "hello").await;
    assert_eq!(next_text(&mut listener).await, "hello");

    let find = |spans: &[Exported], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.0.contains(service) && s.1 == name)
            .cloned()
    };
    let mut found = None;
    for _ in 0..100 {
        {
            let spans = receiver.0.lock().unwrap();
            let gateway = find(&spans, "conclave-gateway", "client.message");
            let node = find(&spans, "conclave-node", "room.message");
            let commit = find(&spans, "conclave-node", "storage.commit");
            if let (Some(g), Some(n), Some(c)) = (gateway, node, commit) {
                found = Some((g, n, c));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = receiver.0.lock().unwrap().clone();
    let (gateway, node, commit) = found.unwrap_or_else(|| panic!("spans missing: {spans:?}"));
    assert_eq!(
        node.2, gateway.2,
        "the node's span is in the gateway's trace"
    );
    assert_eq!(node.4, gateway.3, "the node's span is the gateway's child");
    assert_eq!(commit.2, gateway.2, "the commit is in the same trace");
    assert_eq!(commit.4, node.3, "the commit is the node span's child");

    // Connections: the gateway's client.connect, the node's room.connect under it. The
    // broadcast: a room.fanout at the gateway under the node's room.message.
    let child_of = |spans: &[Exported], parent: &Exported, service: &str, name: &str| {
        spans
            .iter()
            .any(|s| s.0.contains(service) && s.1 == name && s.2 == parent.2 && s.4 == parent.3)
    };
    let mut complete = false;
    for _ in 0..100 {
        let spans = receiver.0.lock().unwrap().clone();
        let connected = spans
            .iter()
            .filter(|s| s.0.contains("conclave-gateway") && s.1 == "client.connect")
            .any(|c| child_of(&spans, c, "conclave-node", "room.connect"));
        let fanned_out = spans
            .iter()
            .filter(|s| s.0.contains("conclave-node") && s.1 == "room.message")
            .any(|m| child_of(&spans, m, "conclave-gateway", "room.fanout"));
        if connected && fanned_out {
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = receiver.0.lock().unwrap().clone();
    assert!(complete, "connect or fan-out spans missing: {spans:?}");
}
