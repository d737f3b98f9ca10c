//! Two regions of one cluster (real redis-server, PostgreSQL, placement, nodes and
//! gateways): a room lives in the region it was created in, and clients arriving through
//! the other region's gateway are forwarded there.

mod common;

use common::process::{spawn_role, RoleProcess};
use common::*;

struct TwoRegions {
    _redis: redis::RedisServer,
    _placement: RoleProcess,
    _nodes: Vec<RoleProcess>,
    /// Gateway in region `us`, then in region `eu`.
    gateways: Vec<RoleProcess>,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "regions-admin";

impl TwoRegions {
    async fn start() -> Self {
        let redis = redis::RedisServer::start();
        let postgres = postgres::fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        let fast = ["--heartbeat-ms", "200", "--heartbeat-ttl-ms", "1000"];
        let mut args = vec!["placement", "--listen", "127.0.0.1:0", "--redis-url"];
        let redis_url = redis.url();
        args.push(&redis_url);
        args.extend(fast);
        let placement = spawn_role(&args, 1).await;
        let placement_url = format!("http://{}", placement.addrs[0]);
        let mut nodes = Vec::new();
        for (id, region) in [("a", "us"), ("b", "eu")] {
            let data = dir.path().join(id).display().to_string();
            let mut args = vec![
                "node",
                "--id",
                id,
                "--region",
                region,
                "--relay-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--redis-url",
                &redis_url,
                "--placement",
                &placement_url,
                "--postgres-url",
                &postgres,
                "--data-dir",
                &data,
            ];
            args.extend(fast);
            nodes.push(spawn_role(&args, 2).await);
        }
        let mut gateways = Vec::new();
        for region in ["us", "eu"] {
            gateways.push(
                spawn_role(
                    &[
                        "gateway",
                        "--port",
                        "0",
                        "--region",
                        region,
                        "--placement",
                        &placement_url,
                        "--admin-token",
                        TOKEN,
                    ],
                    1,
                )
                .await,
            );
        }
        let cluster = Self {
            _redis: redis,
            _placement: placement,
            _nodes: nodes,
            gateways,
            _dir: dir,
        };
        // Both regions on the ring: each gateway lists both nodes.
        for g in 0..2 {
            assert!(
                eventually(async || cluster.admin(g, "/admin/cluster").await["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 2))
                .await,
                "placement never showed both regions"
            );
        }
        cluster
    }

    fn gw(&self, i: usize) -> &str {
        &self.gateways[i].addrs[0]
    }

    async fn admin(&self, gateway: usize, path: &str) -> serde_json::Value {
        let (status, body) = raw_http(
            self.gw(gateway).parse().unwrap(),
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn ws(&self, gateway: usize, path: &str) -> Ws {
        tokio_tungstenite::connect_async(format!("ws://{}{path}", self.gw(gateway)))
            .await
            .unwrap_or_else(|e| panic!("connect {path}: {e}"))
            .0
    }
}

#[tokio::test]
async fn a_room_is_served_from_its_home_region_whichever_gateway_clients_use() {
    let cluster = TwoRegions::start().await;
    const US: usize = 0;
    const EU: usize = 1;

    // Created through the us gateway: homed in us, run by node a.
    let mut alice = cluster
        .ws(US, "/parties/main/transatlantic?_pk=alice")
        .await;
    // Bob arrives through the eu gateway and is forwarded to us.
    let mut bob = cluster.ws(EU, "/parties/main/transatlantic?_pk=bob").await;
    send(&mut bob, "hello from eu").await;
    assert_eq!(next_text(&mut alice).await, "hello from eu");
    send(&mut alice, "hello from us").await;
    assert_eq!(next_text(&mut bob).await, "hello from us");
    for g in [US, EU] {
        let room = cluster.admin(g, "/admin/rooms/main/transatlantic").await;
        assert_eq!(room["home_region"], "us", "{room}");
        assert_eq!(room["ring_owner"], "a", "{room}");
        assert_eq!(room["node"]["owner"]["node"], "a", "{room}");
        assert_eq!(room["node"]["owner"]["region"], "us", "{room}");
    }

    // A client may ask for the region of a new room; later arrivals cannot move it.
    let mut c = cluster.ws(US, "/parties/counter/euro?_region=eu").await;
    send(&mut c, "incr").await;
    assert_eq!(next_json(&mut c).await["value"], 1);
    let mut d = cluster.ws(EU, "/parties/counter/euro?_region=us").await;
    send(&mut d, "incr").await;
    assert_eq!(next_json(&mut d).await["value"], 2);
    let room = cluster.admin(US, "/admin/rooms/counter/euro").await;
    assert_eq!(room["home_region"], "eu", "{room}");
    assert_eq!(room["node"]["owner"]["node"], "b", "{room}");

    // A region with no nodes is refused before the upgrade.
    let (status, body) = raw_http(
        cluster.gw(US).parse().unwrap(),
        "GET /parties/main/x?_region=mars HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mars"), "{body}");
}
