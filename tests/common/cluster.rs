//! A cluster of real `conclave` processes: nodes sharing one PostgreSQL database and
//! gateways in front of them, either static (every role gets the node list: a fixed ring)
//! or dynamic (a real redis-server and a placement replica: nodes heartbeat, gateways and
//! nodes follow placement's rings), in one region or several.
//!
//! The harness picks every address and passes it as a flag. A role counts as started once
//! it is ready (`/readyz`, or a listening port for placement); a dynamic cluster once every
//! gateway lists every node and a room on each node answers through each gateway.

use super::net::free_addr;
use super::partition::Partition;
use super::process::{Readiness, Role};
use super::redis::RedisServer;
use super::{eventually_within, get, http, strings_of, ws_connect, Ws};
use conclave_proto::{Ring, RingVersion, RoomKey, DEFAULT_REGION};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// The admin token of every gateway and node of a test cluster.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a dynamic cluster may take to place every node.
const PLACED_TIMEOUT: Duration = Duration::from_secs(20);

/// A room of `party` (`r0`, `r1`, …) that the ring of `nodes` places on `node`.
pub fn room_on(party: &str, nodes: &[&str], node: &str) -> String {
    named_room_on("r", party, nodes, node)
}

/// A room of `party` named `<prefix><n>` that the ring of `nodes` places on `node`.
pub fn named_room_on(prefix: &str, party: &str, nodes: &[&str], node: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|room| owner_of(party, room, nodes) == node)
        .unwrap()
}

/// The node the ring of `nodes` places `party/room` on.
pub fn owner_of(party: &str, room: &str, nodes: &[&str]) -> String {
    let ring = Ring::new(RingVersion(1), nodes.iter().map(|n| n.to_string()));
    let key = RoomKey::new(party, room).unwrap();
    ring.owner(&key).expect("a ring with nodes").to_string()
}

/// What to start; see [`Cluster::builder`].
#[derive(Default)]
pub struct ClusterBuilder {
    /// (id, region)
    nodes: Vec<(String, String)>,
    /// One region per gateway.
    gateways: Vec<String>,
    /// Flags every gateway gets besides the harness's own.
    gateway_flags: Vec<String>,
    node_flags: Vec<String>,
    placement: bool,
    /// (renew every, time to live)
    heartbeat: Option<(Duration, Duration)>,
    database: Option<String>,
    /// Nodes that reach the database at another URL.
    node_databases: std::collections::HashMap<String, String>,
    /// The binary every role runs (else `conclave`).
    program: Option<PathBuf>,
    /// Nodes whose Redis traffic and relay links go through proxies the test can cut.
    partitionable: Vec<String>,
    /// Rooms in FoundationDB (cluster file, directory) instead of PostgreSQL.
    foundationdb: Option<(PathBuf, String)>,
    /// Redis speaks only TLS; roles verify it against this CA (written to the cluster's
    /// directory at start).
    redis_tls: Option<super::tls::TestCa>,
    /// Every internal link over mutual TLS with certificates from this CA.
    mtls: Option<super::tls::TestCa>,
    /// How often roles re-read their TLS files (`--tls-reload-ms`), if not the default.
    tls_reload_ms: Option<u64>,
}

impl ClusterBuilder {
    /// Nodes with these ids, in the default region.
    pub fn nodes<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        for id in ids {
            self = self.node_in(id, DEFAULT_REGION);
        }
        self
    }

    pub fn node_in(mut self, id: &str, region: &str) -> Self {
        self.nodes.push((id.into(), region.into()));
        self
    }

    /// `n` gateways in the default region (without any, the cluster has one).
    pub fn gateways(mut self, n: usize) -> Self {
        for _ in 0..n {
            self = self.gateway_in(DEFAULT_REGION);
        }
        self
    }

    pub fn gateway_in(mut self, region: &str) -> Self {
        self.gateways.push(region.into());
        self
    }

    /// Extra flags for every gateway.
    pub fn gateway_flags(mut self, flags: &[&str]) -> Self {
        self.gateway_flags.extend(args(flags));
        self
    }

    /// Extra flags for every node.
    pub fn node_flags(mut self, flags: &[&str]) -> Self {
        self.node_flags.extend(args(flags));
        self
    }

    /// A dynamic cluster: redis-server and a placement replica; nodes heartbeat.
    pub fn placement(mut self) -> Self {
        self.placement = true;
        self
    }

    /// Liveness timing of nodes and placement (else the roles' defaults).
    pub fn heartbeat(mut self, every: Duration, ttl: Duration) -> Self {
        self.heartbeat = Some((every, ttl));
        self
    }

    /// Runs every role from `program`, a server binary of its own built on
    /// `conclave::Conclave` (else from `conclave`).
    pub fn program(mut self, program: PathBuf) -> Self {
        self.program = Some(program);
        self
    }

    /// Shares this database (else the cluster gets a fresh one).
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.into());
        self
    }

    /// With [`ClusterBuilder::mtls`]: roles re-read their certificate files this often.
    pub fn tls_reload(mut self, every: Duration) -> Self {
        self.tls_reload_ms = Some(every.as_millis() as u64);
        self
    }

    /// Every internal link (relay, placement) over mutual TLS: each role gets a
    /// certificate from one CA (a node's names its id), URLs are https://. Setting
    /// `CONCLAVE_TEST_MTLS` turns it on for every cluster a test starts (scripts/test.sh
    /// runs the cluster suites so).
    pub fn mtls(mut self) -> Self {
        self.mtls = Some(super::tls::TestCa::new());
        self
    }

    /// Redis speaks only TLS (`rediss://`, its certificate verified with
    /// `--redis-ca-file`).
    pub fn redis_tls(mut self) -> Self {
        self.redis_tls = Some(super::tls::TestCa::new());
        self
    }

    /// Every node stores rooms in FoundationDB (`--storage fdb`), in `directory` of the
    /// cluster `cluster_file` names; needs a `--features fdb` build.
    pub fn foundationdb(mut self, cluster_file: &std::path::Path, directory: &str) -> Self {
        self.foundationdb = Some((cluster_file.into(), directory.into()));
        self
    }

    /// Node `id` reaches the cluster's database at `url` instead (e.g. through a
    /// [`Partition`](super::partition::Partition) to the same server).
    pub fn node_database(mut self, id: &str, url: &str) -> Self {
        self.node_databases.insert(id.into(), url.into());
        self
    }

    /// Node `id` reaches Redis, and gateways reach it, through proxies the test can cut
    /// ([`Cluster::redis_link`], [`Cluster::relay_link`]).
    pub fn partitionable(mut self, id: &str) -> Self {
        self.partitionable.push(id.into());
        self
    }

    pub async fn start(mut self) -> Cluster {
        if self.mtls.is_none() && std::env::var_os("CONCLAVE_TEST_MTLS").is_some() {
            self = self.mtls();
        }
        assert!(
            self.placement || self.nodes.iter().all(|(_, r)| r == DEFAULT_REGION),
            "regions need placement"
        );
        if self.gateways.is_empty() {
            self = self.gateway_in(DEFAULT_REGION);
        }
        let database = match (self.database.take(), &self.foundationdb) {
            (Some(url), _) => url,
            (None, Some(_)) => String::new(),
            (None, None) => super::postgres::fresh_database().await,
        };
        let dir = tempfile::tempdir().unwrap();
        let redis_ca = self.redis_tls.as_ref().map(|ca| {
            let path = dir.path().join("redis-ca.pem");
            std::fs::write(&path, &ca.cert_pem).unwrap();
            path
        });
        // Each role's --tls-* flags, with its own certificate.
        let tls_flags = |file: &str, names: &[&str]| -> Vec<String> {
            let Some(ca) = &self.mtls else {
                return Vec::new();
            };
            let ca_path = dir.path().join("cluster-ca.pem");
            std::fs::write(&ca_path, &ca.cert_pem).unwrap();
            let (cert, key) = ca.issue_files(dir.path(), file, names);
            let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
            let mut flags = vec![
                "--tls-cert".into(),
                path(&cert),
                "--tls-key".into(),
                path(&key),
                "--tls-ca".into(),
                path(&ca_path),
            ];
            if let Some(ms) = self.tls_reload_ms {
                flags.extend(args(&["--tls-reload-ms", &ms.to_string()]));
            }
            flags
        };
        let placement_tls = tls_flags("placement", &["placement"]);
        let gateway_tls = tls_flags("gateway", &["gateway"]);
        let node_tls: std::collections::HashMap<String, Vec<String>> = self
            .nodes
            .iter()
            .map(|(id, _)| (id.clone(), tls_flags(&format!("node-{id}"), &[id])))
            .collect();
        let (redis, placement) = if self.placement {
            let (redis, placement) = self
                .start_placement(redis_ca.as_deref(), placement_tls)
                .await;
            (Some(redis), Some(placement))
        } else {
            (None, None)
        };
        // Every address first: a static cluster's roles all get the node list.
        let addrs: Vec<(SocketAddr, SocketAddr)> = self
            .nodes
            .iter()
            .map(|_| (free_addr(), free_addr()))
            .collect();
        let (mut node_ring, gateway_ring) =
            self.ring_flags(redis.as_ref(), placement.as_ref(), &addrs);
        if let Some(ca) = &redis_ca {
            node_ring.extend(args(&["--redis-ca-file", ca.to_str().unwrap()]));
        }
        let mut links = std::collections::HashMap::new();
        for (id, &(relay, _)) in self.nodes.iter().map(|(id, _)| id).zip(&addrs) {
            if self.partitionable.contains(id) {
                let redis = redis.as_ref().expect("partitions need placement");
                let to_redis = Partition::start(([127, 0, 0, 1], redis.port).into()).await;
                let to_relay = Partition::start(relay).await;
                links.insert(id.clone(), (to_redis, to_relay));
            }
        }
        let nodes = self
            .nodes
            .iter()
            .zip(&addrs)
            .map(|((id, region), &(relay, http))| {
                let mut flags = args(&["node", "--id", id]);
                if region != DEFAULT_REGION {
                    flags.extend(args(&["--region", region]));
                }
                flags.extend(args(&["--relay-listen", &relay.to_string()]));
                flags.extend(args(&["--http-listen", &http.to_string()]));
                match &self.foundationdb {
                    Some((cluster_file, directory)) => flags.extend(args(&[
                        "--storage",
                        "fdb",
                        "--fdb-cluster-file",
                        cluster_file.to_str().unwrap(),
                        "--fdb-directory",
                        directory,
                    ])),
                    None => {
                        let database = self.node_databases.get(id).unwrap_or(&database);
                        flags.extend(args(&["--postgres-url", database]));
                    }
                }
                flags.extend(args(&["--admin-token", ADMIN_TOKEN]));
                flags.extend(args(&["--data-dir", dir.path().join(id).to_str().unwrap()]));
                flags.extend(node_ring.iter().chain(&self.heartbeat_flags()).cloned());
                flags.extend(node_tls[id].iter().cloned());
                flags.extend(self.node_flags.iter().cloned());
                if let Some((to_redis, to_relay)) = links.get(id) {
                    let redis_url = format!("redis://{}", to_redis.addr);
                    let at = flags.iter().position(|f| f == "--redis-url").unwrap();
                    flags[at + 1] = redis_url;
                    let advertise = format!("{}://{}", self.scheme(), to_relay.addr);
                    flags.extend(args(&["--advertise-url", &advertise]));
                }
                let (id, region) = (id.clone(), region.clone());
                let program = self.binary();
                async move {
                    let name = format!("node {id}");
                    let role =
                        Role::start_program(program, name, flags, Readiness::Readyz(http)).await;
                    ClusterNode {
                        id,
                        region,
                        relay,
                        http,
                        role,
                    }
                }
            });
        let nodes = futures::future::join_all(nodes).await;
        let gateways = self.gateways.iter().enumerate().map(|(i, region)| {
            let (addr, ops) = (free_addr(), free_addr());
            let mut flags = args(&["gateway", "--port", &addr.port().to_string()]);
            flags.extend(args(&["--ops-listen", &ops.to_string()]));
            flags.extend(args(&["--region", region, "--admin-token", ADMIN_TOKEN]));
            flags.extend(gateway_ring.iter().cloned());
            flags.extend(gateway_tls.iter().cloned());
            flags.extend(self.gateway_flags.iter().cloned());
            let program = self.binary();
            async move {
                let name = format!("gateway {i}");
                let role = Role::start_program(program, name, flags, Readiness::Readyz(addr)).await;
                ClusterGateway { addr, ops, role }
            }
        });
        let gateways = futures::future::join_all(gateways).await;
        let cluster = Cluster {
            nodes,
            gateways,
            links,
            placement,
            redis,
            database,
            dir,
            tls: self.mtls.take(),
        };
        if cluster.placement.is_some() {
            cluster.wait_until_placed().await;
        }
        cluster
    }

    /// The binary every role runs.
    fn binary(&self) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(super::process::conclave)
    }

    fn heartbeat_flags(&self) -> Vec<String> {
        let Some((every, ttl)) = self.heartbeat else {
            return Vec::new();
        };
        let (every, ttl) = (every.as_millis().to_string(), ttl.as_millis().to_string());
        args(&["--heartbeat-ms", &every, "--heartbeat-ttl-ms", &ttl])
    }

    /// redis-server and a placement replica watching it; the replica's address.
    async fn start_placement(
        &self,
        redis_ca: Option<&std::path::Path>,
        tls: Vec<String>,
    ) -> (RedisServer, (Role, SocketAddr)) {
        let redis = match &self.redis_tls {
            Some(ca) => RedisServer::start_tls(ca).await,
            None => RedisServer::start().await,
        };
        let (listen, http) = (free_addr(), free_addr());
        let mut flags = args(&["placement", "--listen", &listen.to_string()]);
        flags.extend(args(&["--http-listen", &http.to_string()]));
        flags.extend(args(&["--redis-url", &redis.url()]));
        if let Some(ca) = redis_ca {
            flags.extend(args(&["--redis-ca-file", ca.to_str().unwrap()]));
        }
        flags.extend(tls);
        flags.extend(self.heartbeat_flags());
        // Ready once it has read Redis (its /readyz).
        let readiness = Readiness::Readyz(http);
        let role = Role::start_program(self.binary(), "placement", flags, readiness).await;
        (redis, (role, listen))
    }

    /// Where nodes and gateways learn the ring: from placement (nodes also heartbeat into
    /// Redis), or a fixed list of the nodes and their relay addresses.
    fn ring_flags(
        &self,
        redis: Option<&RedisServer>,
        placement: Option<&(Role, SocketAddr)>,
        addrs: &[(SocketAddr, SocketAddr)],
    ) -> (Vec<String>, Vec<String>) {
        if let (Some(redis), Some((_, listen))) = (redis, placement) {
            let placement = args(&["--placement", &format!("{}://{listen}", self.scheme())]);
            let mut node = args(&["--redis-url", &redis.url()]);
            node.extend(placement.clone());
            return (node, placement);
        }
        let list: Vec<String> = self
            .nodes
            .iter()
            .zip(addrs)
            .map(|((id, _), (relay, _))| format!("{id}={}://{relay}", self.scheme()))
            .collect();
        let nodes = args(&["--nodes", &list.join(",")]);
        (nodes.clone(), nodes)
    }
}

impl ClusterBuilder {
    /// The scheme of internal URLs: https with mutual TLS.
    fn scheme(&self) -> &'static str {
        if self.mtls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub struct ClusterNode {
    pub id: String,
    pub region: String,
    /// The relay gRPC service.
    pub relay: SocketAddr,
    /// `/metrics`, `/readyz`, `/admin/drain`.
    pub http: SocketAddr,
    role: Role,
}

struct ClusterGateway {
    addr: SocketAddr,
    /// `/metrics` and `/admin/*`.
    ops: SocketAddr,
    role: Role,
}

pub struct Cluster {
    nodes: Vec<ClusterNode>,
    gateways: Vec<ClusterGateway>,
    /// Per partitionable node: its proxies to Redis and from gateways.
    links: std::collections::HashMap<String, (Partition, Partition)>,
    /// The placement replica and its gRPC address.
    placement: Option<(Role, SocketAddr)>,
    redis: Option<RedisServer>,
    database: String,
    dir: tempfile::TempDir,
    /// The CA of the cluster's certificates (with mutual TLS).
    tls: Option<super::tls::TestCa>,
}

impl Cluster {
    /// The CA the cluster's certificates come from ([`ClusterBuilder::mtls`]).
    pub fn tls_ca(&self) -> &super::tls::TestCa {
        self.tls.as_ref().expect("a cluster with mutual TLS")
    }

    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The URL of the cluster's Redis (a dynamic cluster).
    pub fn redis_url(&self) -> String {
        self.redis.as_ref().expect("a dynamic cluster").url()
    }

    /// The placement replica's gRPC URL (a dynamic cluster).
    pub fn placement_url(&self) -> String {
        let (_, addr) = self.placement.as_ref().expect("a dynamic cluster");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// Node `id`'s traffic to Redis (the node must be [`ClusterBuilder::partitionable`]).
    pub fn redis_link(&self, id: &str) -> &Partition {
        &self.links[id].0
    }

    /// Every gateway's relay link to node `id` (see [`Cluster::redis_link`]).
    pub fn relay_link(&self, id: &str) -> &Partition {
        &self.links[id].1
    }

    /// Gateway `i`'s client address.
    pub fn gateway(&self, i: usize) -> SocketAddr {
        self.gateways[i].addr
    }

    /// A WebSocket to `path` through gateway `i`.
    pub async fn ws(&self, i: usize, path: &str) -> Ws {
        ws_connect(self.gateway(i), path).await
    }

    /// `GET path` through gateway `i`: (status, body).
    pub async fn get(&self, i: usize, path: &str) -> (u16, String) {
        get(self.gateway(i), path).await
    }

    /// Sends `sig` (as for kill(1)) to gateway `i`.
    pub fn signal_gateway(&self, i: usize, sig: &str) {
        self.gateways[i].role.signal(sig);
    }

    /// How gateway `i` exited; panics if it still runs after `within`.
    pub async fn gateway_exit_status(&mut self, i: usize, within: Duration) -> ExitStatus {
        self.gateways[i].role.exit_status(within).await
    }

    /// Gateway `i`'s ops address (`/metrics`, `/admin/*`).
    pub fn gateway_ops(&self, i: usize) -> SocketAddr {
        self.gateways[i].ops
    }

    /// An admin `GET path` on gateway `i` with `token`: (status, body).
    pub async fn admin_with(&self, i: usize, path: &str, token: &str) -> (u16, String) {
        http(self.gateway_ops(i), "GET", path, Some(token), "").await
    }

    /// An admin `GET path` on gateway `i`, which must answer 200 with JSON.
    pub async fn admin(&self, i: usize, path: &str) -> serde_json::Value {
        let (status, body) = self.admin_with(i, path, ADMIN_TOKEN).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn node(&self, id: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The value of metric `name` on node `id`'s `/metrics` (each series is
    /// `name{labels} value`: a cluster role labels every series), if it has one.
    pub async fn node_metric(&self, id: &str, name: &str) -> Option<f64> {
        let (_, body) = super::get(self.node(id).http, "/metrics").await;
        body.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !rest.starts_with([' ', '{']) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
    }

    /// Whether metric `name` on node `id` reads `value` within `within`.
    pub async fn node_metric_reaches(
        &self,
        id: &str,
        name: &str,
        value: f64,
        within: Duration,
    ) -> bool {
        super::eventually_within(within, async || {
            self.node_metric(id, name).await == Some(value)
        })
        .await
    }

    fn node_mut(&mut self, id: &str) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node ids, in the order they were given.
    pub fn node_ids(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.id.as_str()).collect()
    }

    /// Where node `id` keeps its local files.
    /// The certificate and key files a role was started with (`node-<id>`, `gateway`,
    /// `placement`), with mutual TLS: writing new ones rotates them.
    pub fn tls_files(&self, role: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        (
            dir.join(format!("{role}.crt")),
            dir.join(format!("{role}.key")),
        )
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    /// The PostgreSQL database every node stores rooms in.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a static cluster has no redis")
    }

    pub fn pid(&self, node: &str) -> u32 {
        self.node(node).role.pid()
    }

    /// Sends `sig` (`-KILL`, `-STOP`, `-CONT`, `-TERM`) to node `id`.
    pub fn signal(&self, node: &str, sig: &str) {
        self.node(node).role.signal(sig);
    }

    /// Starts node `id` again, on the same addresses and data, once it is ready.
    pub async fn restart(&mut self, node: &str) {
        self.node_mut(node).role.restart().await;
    }

    /// `POST /admin/drain` on node `id` with `token`; the status.
    pub async fn drain_with(&self, node: &str, token: &str) -> u16 {
        http(
            self.node(node).http,
            "POST",
            "/admin/drain",
            Some(token),
            "",
        )
        .await
        .0
    }

    /// Drains node `id`, which must accept.
    pub async fn drain(&self, node: &str) {
        assert_eq!(
            self.drain_with(node, ADMIN_TOKEN).await,
            202,
            "drain {node}"
        );
    }

    /// How node `id` exited; panics if it still runs after `within`.
    pub async fn exit_status(&mut self, node: &str, within: Duration) -> ExitStatus {
        self.node_mut(node).role.exit_status(within).await
    }

    /// Waits until every gateway's ring lists every node and every node serves: a room
    /// placed on each node answers through each gateway.
    pub async fn wait_until_placed(&self) {
        let mut ids = self.node_ids();
        ids.sort();
        for g in 0..self.gateways.len() {
            let listed = eventually_within(PLACED_TIMEOUT, async || {
                let (status, body) = self.admin_with(g, "/admin/cluster", ADMIN_TOKEN).await;
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                    return false;
                };
                let mut listed = strings_of(&v["nodes"], "id");
                listed.sort();
                status == 200 && listed == ids
            })
            .await;
            assert!(listed, "gateway {g} never listed nodes {ids:?}");
        }
        for node in &self.nodes {
            let peers: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.region == node.region)
                .map(|n| n.id.as_str())
                .collect();
            let room = named_room_on("ready-", "counter", &peers, &node.id);
            let path = format!("/parties/counter/{room}?_region={}", node.region);
            for g in 0..self.gateways.len() {
                let served = eventually_within(PLACED_TIMEOUT, async || {
                    self.get(g, &path).await == (200, r#"{"value":0}"#.to_string())
                })
                .await;
                assert!(
                    served,
                    "node {} never served {path} through gateway {g}",
                    node.id
                );
            }
        }
    }
}
