//! What a party to the cluster's internal protocols may not do, whoever it claims to be:
//! without the cluster secret nothing attaches to a node's relay, follows the ring or
//! joins it through Redis; with it, a gateway still cannot home a room in a region that
//! does not exist.

mod common;

use common::cluster::{room_on, Cluster};
use common::process::CLUSTER_SECRET;
use common::relay::RelayGateway;
use common::*;
use conclave::config::{default_parties, registry_for, PartyKinds};
use conclave_node::NodeConfig;
use conclave_placement::grpc::follow_placement;
use conclave_proto::grpc::connect_relay;
use conclave_proto::{ClusterAuth, ClusterSecret, RoleTls};
use std::time::Duration;

/// Nodes a and b with placement, as most cluster tests run them.
fn dynamic_pair() -> common::cluster::ClusterBuilder {
    Cluster::builder()
        .nodes(["a", "b"])
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
}

async fn dynamic_cluster() -> Cluster {
    dynamic_pair().start().await
}

/// A counter room on each node counts its first increment through gateway 0.
async fn rooms_answer_on_both(cluster: &Cluster) {
    for node in ["a", "b"] {
        let room = room_on("counter", &["a", "b"], node);
        let mut ws = cluster.ws(0, &format!("/parties/counter/{room}")).await;
        send(&mut ws, "incr").await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["value"], 1, "room on {node}: {reply}");
    }
}

fn secret(text: &str) -> ClusterAuth {
    ClusterAuth {
        secret: Some(ClusterSecret::new(text).unwrap()),
        tls: None,
    }
}

#[tokio::test]
async fn without_the_cluster_secret_nothing_attaches_to_a_node_or_follows_the_ring() {
    let cluster = dynamic_cluster().await;
    let url = format!("http://{}", cluster.node("a").relay);
    assert!(
        connect_relay(&url, "a", &ClusterAuth::default())
            .await
            .is_err(),
        "no proof"
    );
    let wrong = secret("not-the-secret-of-this-cluster");
    assert!(
        connect_relay(&url, "a", &wrong).await.is_err(),
        "another secret"
    );
    // A proof is for one node: one made for b does not open a.
    assert!(connect_relay(&url, "b", &secret(CLUSTER_SECRET))
        .await
        .is_err());
    assert!(connect_relay(&url, "a", &secret(CLUSTER_SECRET))
        .await
        .is_ok());

    let placement = vec![cluster.placement_url()];
    let stranger = follow_placement(placement.clone(), ClusterAuth::default(), |_| {});
    let impostor = follow_placement(placement.clone(), wrong, |_| {});
    let member = follow_placement(placement, secret(CLUSTER_SECRET), |_| {});
    let mut got = member.clone();
    tokio::time::timeout(Duration::from_secs(5), got.wait_for(Option::is_some))
        .await
        .expect("a member follows the ring")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stranger.borrow().is_none(), "the ring reached a stranger");
    assert!(impostor.borrow().is_none(), "the ring reached an impostor");
}

/// Anyone who can write to Redis can write a heartbeat or a ring there. Placement believes
/// only entries signed with the cluster secret: a fake node never joins the ring, so no
/// gateway ever sends it a client's connection, and a forged ring is never published.
#[tokio::test]
async fn a_node_without_the_secret_cannot_join_the_ring_through_redis() {
    let mut cluster = dynamic_cluster().await;
    let client = ::redis::Client::open(cluster.redis().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let fake = r#"{"relay_url":"http://127.0.0.1:9","incarnation":1,"region":"default"}"#;
    let forged = r#"{"version":999,"members":{"evil":"http://127.0.0.1:9"},"regions":{}}"#;
    let _: () = ::redis::cmd("SET")
        .arg("conclave:node:evil")
        .arg(fake)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("conclave:ring")
        .arg(forged)
        .query_async(&mut conn)
        .await
        .unwrap();
    let rings = follow_placement(
        vec![cluster.placement_url()],
        secret(CLUSTER_SECRET),
        |_| {},
    );
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        if let Some(view) = rings.borrow().as_ref() {
            assert!(
                !view.members.contains_key("evil"),
                "a fake node joined: {view:?}"
            );
            assert!(view.members.contains_key("a") && view.members.contains_key("b"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Rooms on both nodes still answer through the gateway.
    rooms_answer_on_both(&cluster).await;
}

fn parties() -> conclave_node::PartyRegistry {
    registry_for(&default_parties(), &PartyKinds::builtin())
}

/// A room's home region is fixed once and for good: a gateway (or anything that speaks
/// the relay protocol) proposing a region that does not exist would leave the room homed
/// where no node ever serves it. The node refuses the proposal and the room stays usable.
#[tokio::test]
async fn a_room_cannot_be_homed_in_a_region_that_does_not_exist() {
    let mut gw = RelayGateway::start(NodeConfig::default(), parties());
    assert_eq!(
        gw.home("main", "r", "nowhere").await,
        Err("unknown region".to_string())
    );
    let huge = "x".repeat(100_000);
    assert_eq!(
        gw.home("main", "r", &huge).await,
        Err("unknown region".to_string())
    );
    assert_eq!(gw.home("main", "r", "default").await, Ok("default".into()));
    let socket = gw.open("main", "r", "a").await;
    let other = gw.open("main", "r", "b").await;
    gw.send(socket, "still served").await;
    assert_eq!(gw.next_text().await, "still served");
    let _ = other;
}

/// The link to PostgreSQL can be encrypted and its server authenticated: with a CA file
/// the server's certificate must chain to it (a server signed by anyone else is refused);
/// `sslmode=require` alone encrypts without authenticating, as libpq does.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_against_the_ca_file() {
    use conclave_node::storage::{PostgresStore, Store};
    let ca = common::tls::TestCa::new();
    let port = common::postgres::tls_server(&ca.server_cert_pem, &ca.server_key_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, stranger_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    std::fs::write(&stranger_file, common::tls::TestCa::new().cert_pem).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    // The server takes logins a moment after it listens.
    let mut last = Err("not tried".to_string());
    for _ in 0..100 {
        last = PostgresStore::connect_with(&url, 2, Some(&ca_file))
            .await
            .map_err(|e| e.to_string());
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = last.unwrap_or_else(|e| panic!("TLS with the right CA failed: {e}"));
    assert!(store.ping().await.is_ok());
    // Its sessions are encrypted (seen from a plain admin session).
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) >= 1, "no encrypted session");
    let refused = PostgresStore::connect_with(&url, 2, Some(&stranger_file)).await;
    let err = refused
        .err()
        .expect("a server another CA signed was accepted")
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(
        PostgresStore::connect(&url, 2).await.is_ok(),
        "require, unverified"
    );
}

/// Redis may speak only TLS: nodes heartbeat and placement reads them over `rediss://`,
/// verifying the server against `--redis-ca-file`.
#[tokio::test]
async fn a_cluster_runs_on_a_redis_that_speaks_only_tls() {
    let cluster = dynamic_pair().redis_tls().start().await;
    // `start` returned once both nodes were placed: their heartbeats went through TLS.
    assert!(cluster.redis_url().starts_with("rediss://"));
    rooms_answer_on_both(&cluster).await;
}

/// With mutual TLS every internal link is encrypted and both ends are certified by the
/// cluster's CA: a client with a certificate from elsewhere is refused, and a gateway
/// talks to node `b` only if the far end holds `b`'s certificate — an address that Redis
/// or anyone else maps to `b` but that `a` (or an intruder) answers is refused.
#[tokio::test]
async fn with_mutual_tls_only_certified_roles_speak_and_a_node_is_who_its_certificate_says() {
    let cluster = dynamic_pair().mtls().start().await;
    rooms_answer_on_both(&cluster).await;
    let ca = cluster.tls_ca();
    let gateway_tls = |ca_of_cert: &common::tls::TestCa| {
        let (cert, key) = ca_of_cert.issue(&["gateway"]);
        ClusterAuth {
            secret: secret(CLUSTER_SECRET).secret,
            tls: Some(
                RoleTls::from_pem(
                    cert.into_bytes(),
                    key.into_bytes(),
                    ca.cert_pem.clone().into_bytes(),
                )
                .unwrap(),
            ),
        }
    };
    let url_of_a = format!("https://{}", cluster.node("a").relay);
    let member = gateway_tls(ca);
    assert!(connect_relay(&url_of_a, "a", &member).await.is_ok());
    assert!(
        connect_relay(&url_of_a, "b", &member).await.is_err(),
        "a's address answered as b"
    );
    let stranger = gateway_tls(&common::tls::TestCa::new());
    assert!(
        connect_relay(&url_of_a, "a", &stranger).await.is_err(),
        "a client certified by another CA attached"
    );
    let plain = secret(CLUSTER_SECRET);
    let http_url = format!("http://{}", cluster.node("a").relay);
    assert!(
        connect_relay(&http_url, "a", &plain).await.is_err(),
        "plain text"
    );
}

/// Certificates rotate without a restart: a node whose certificate files are replaced
/// presents the new certificate on its next connection (and the cluster keeps working
/// over the new links); a broken replacement is refused and the last good one kept.
#[tokio::test]
async fn rotated_certificates_are_used_without_a_restart_and_a_broken_rotation_is_refused() {
    let cluster = dynamic_pair()
        .mtls()
        .tls_reload(Duration::from_millis(200))
        .start()
        .await;
    let ca = cluster.tls_ca();
    let relay_of_a = cluster.node("a").relay;
    let before = ca.served_certificate(relay_of_a, "a").await;

    let (cert_file, key_file) = cluster.tls_files("node-a");
    let (cert, key) = ca.issue(&["a"]);
    // The key first, then the certificate: between the two writes the pair does not
    // match, which a reload must survive too.
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, &cert).unwrap();
    let rotated = eventually(async || ca.served_certificate(relay_of_a, "a").await != before).await;
    assert!(rotated, "node a still presents its old certificate");
    let now = ca.served_certificate(relay_of_a, "a").await;
    use rustls::pki_types::pem::PemObject;
    let issued = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(
        now,
        issued.to_vec(),
        "node a presents a certificate it was not given"
    );
    rooms_answer_on_both(&cluster).await;

    std::fs::write(&cert_file, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ca.served_certificate(relay_of_a, "a").await, now);
}

/// A faulty (or compromised) gateway cannot break a node: an admission with more headers
/// than any gateway lets through, a second new admission of a socket already in a room
/// and a frame over the frame limit are each refused or closed, and the link and the room
/// go on serving. A socket moving back to a node that still lists it is taken.
#[tokio::test]
async fn a_node_refuses_what_no_gateway_would_send_and_keeps_serving() {
    use conclave_proto::wire::{gateway_event, Admit, Frame, Header};
    use conclave_proto::RoomKey;
    let config = NodeConfig {
        max_frame_bytes: 1024,
        ..NodeConfig::default()
    };
    let mut gw = RelayGateway::start(config, parties());
    let room = Some(RoomKey::new("main", "r").unwrap().to_wire());
    let admit = |request_id: u64, socket: u64, conn_id: &str| Admit {
        request_id,
        room: room.clone(),
        conn_id: conn_id.into(),
        uri: "http://test/parties/main/r".into(),
        socket,
        origin: 1,
        ..Default::default()
    };
    // ~30,000 distinct headers would panic an http::HeaderMap (and with it the link).
    let mut flood = admit(1000, 1000, "flood");
    flood.headers = (0..30_000)
        .map(|i| Header {
            name: format!("x-h{i}"),
            value: "v".into(),
        })
        .collect();
    assert_eq!(gw.admit(flood).await.status, 431);

    let a = gw.open("main", "r", "a").await;
    assert_eq!(gw.admit(admit(1001, a, "a-again")).await.status, 409);
    // The same socket coming back (moving here again) is taken, not refused.
    let mut back = admit(1002, a, "a");
    back.resume = Some(conclave_proto::wire::Resume {
        tags: vec!["a".into()],
        ..Default::default()
    });
    assert_eq!(
        gw.admit(back).await.status,
        0,
        "a returning socket was refused"
    );

    let big = Frame {
        socket: a,
        payload: vec![b'x'; 2048].into(),
        binary: true,
        seq: 1,
        ..Default::default()
    };
    gw.send_raw(gateway_event::Event::Frame(big)).await;
    let closed = gw.next_close().await;
    assert_eq!((closed.socket, closed.code), (a, 1009));

    let b = gw.open("main", "r", "b").await;
    let _c = gw.open("main", "r", "c").await;
    gw.send(b, "still served").await;
    assert_eq!(gw.next_text().await, "still served");
}
