//! The simulator's server: the store behind the gRPC protocol the client library speaks.

use crate::proto::sim_server::{Sim, SimServer as SimService};
use crate::proto::*;
use crate::store::{RangeQuery, Store};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// A running simulator, serving until dropped.
pub struct SimServer {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SimServer {
    /// Serves an empty database on `addr` (port 0: any free port) from the current tokio
    /// runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store = Arc::new(Store::default());
        let service = SimService::new(Service {
            store: store.clone(),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("fdbsim: server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            store,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many transactions with writes have committed so far.
    pub fn commits(&self) -> u64 {
        self.store.committed()
    }

    /// A cluster file's contents naming this server (FoundationDB's
    /// `description:id@address` format).
    pub fn cluster_string(&self) -> String {
        format!("fdbsim:sim@{}", self.addr)
    }

    /// Writes a cluster file for this server at `path`.
    pub fn write_cluster_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.cluster_string() + "\n")
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Service {
    store: Arc<Store>,
}

fn selector(s: Option<KeySelector>) -> Result<KeySelector, Status> {
    s.ok_or_else(|| Status::invalid_argument("missing key selector"))
}

#[tonic::async_trait]
impl Sim for Service {
    async fn read_version(
        &self,
        _: Request<ReadVersionRequest>,
    ) -> Result<Response<ReadVersionReply>, Status> {
        Ok(Response::new(ReadVersionReply {
            error: 0,
            version: self.store.read_version(),
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let r = req.into_inner();
        let reply = match self.store.get(r.version, &r.key, &r.writes) {
            Ok(value) => GetReply {
                error: 0,
                present: value.is_some(),
                value: value.unwrap_or_default(),
            },
            Err(error) => GetReply {
                error,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn get_key(&self, req: Request<GetKeyRequest>) -> Result<Response<GetKeyReply>, Status> {
        let r = req.into_inner();
        let sel = selector(r.selector)?;
        let reply = match self.store.get_key(r.version, &sel, &r.writes) {
            Ok(key) => GetKeyReply {
                error: 0,
                key: key.into(),
            },
            Err(error) => GetKeyReply {
                error,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn get_range(
        &self,
        req: Request<GetRangeRequest>,
    ) -> Result<Response<GetRangeReply>, Status> {
        let r = req.into_inner();
        let (begin, end) = (selector(r.begin)?, selector(r.end)?);
        let query = RangeQuery {
            version: r.version,
            begin: &begin,
            end: &end,
            limit: usize::try_from(r.limit).unwrap_or(0),
            target_bytes: usize::try_from(r.target_bytes).unwrap_or(0),
            reverse: r.reverse,
            writes: &r.writes,
        };
        let reply = match self.store.get_range(&query) {
            Ok(batch) => GetRangeReply {
                error: 0,
                rows: batch
                    .rows
                    .into_iter()
                    .map(|(key, value)| KeyValue {
                        key: key.into(),
                        value,
                    })
                    .collect(),
                more: batch.more,
                read: Some(KeyRange {
                    begin: batch.read.0.into(),
                    end: batch.read.1.into(),
                }),
            },
            Err(error) => GetRangeReply {
                error,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn commit(&self, req: Request<CommitRequest>) -> Result<Response<CommitReply>, Status> {
        let r = req.into_inner();
        let reply = match self.store.commit(
            r.read_version,
            &r.read_conflicts,
            r.write_conflicts,
            &r.mutations,
        ) {
            Ok(done) => CommitReply {
                error: 0,
                version: done.version,
                versionstamp: done.versionstamp.to_vec().into(),
            },
            Err(error) => CommitReply {
                error,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchReply>, Status> {
        let r = req.into_inner();
        self.store.watch(&r.key, r.version).await;
        Ok(Response::new(WatchReply { error: 0 }))
    }
}
