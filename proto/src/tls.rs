//! A role's TLS material for the internal links, and serving with it: certificates are
//! re-read from their files while the process runs (a rotated certificate is used for the
//! next connection, with no restart), and a server takes each connection through the TLS
//! handshake with whatever material is current then.

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How long an accepted connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`RoleTls::spawn_reload`] looks at the files by default.
pub const DEFAULT_TLS_RELOAD: Duration = Duration::from_secs(10);

/// A role's certificate and key, and its cluster's CA (all PEM), as currently in force.
#[derive(Clone)]
pub struct RoleTls {
    current: Arc<RwLock<Material>>,
    /// Where the material came from, to re-read it (none for material given in memory).
    files: Option<Arc<[PathBuf; 3]>>,
    /// How often [`RoleTls::spawn_reload`] reads the files.
    reload: Duration,
}

#[derive(Clone)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    /// Built from the three, and checked: a server that requires clients with
    /// certificates from the CA.
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for RoleTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleTls(<certificate, key and CA>)")
    }
}

impl Material {
    fn new(cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Result<Self, String> {
        let server = server_config(&cert, &key, &ca)?;
        Ok(Self {
            cert,
            key,
            ca,
            server,
        })
    }

    fn same_files(&self, cert: &[u8], key: &[u8], ca: &[u8]) -> bool {
        self.cert == cert && self.key == key && self.ca == ca
    }
}

fn server_config(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca) {
        let ca = ca.map_err(|e| format!("the CA: {e}"))?;
        roots.add(ca).map_err(|e| format!("the CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("the CA: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl RoleTls {
    /// Material given in memory (it is never reloaded).
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Result<Self, String> {
        Ok(Self {
            current: Arc::new(RwLock::new(Material::new(cert, key, ca)?)),
            files: None,
            reload: DEFAULT_TLS_RELOAD,
        })
    }

    /// Reads and checks the three PEM files.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let material = Material::new(read(cert)?, read(key)?, read(ca)?)?;
        Ok(Self {
            current: Arc::new(RwLock::new(material)),
            files: Some(Arc::new([cert.into(), key.into(), ca.into()])),
            reload: DEFAULT_TLS_RELOAD,
        })
    }

    /// Reads the files every `every` once [`RoleTls::spawn_reload`] runs.
    pub fn reloading_every(mut self, every: Duration) -> Self {
        self.reload = every;
        self
    }

    /// The server side of the current material (what each accepted connection needs;
    /// cloning it copies no PEM).
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .server
            .clone()
    }

    fn material(&self) -> Material {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again and, if they changed and make a valid set, uses them from the
    /// next connection on. Ok(true) when the material changed.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let [cert, key, ca] = &**files;
        let (cert, key, ca) = (read(cert)?, read(key)?, read(ca)?);
        if self.material().same_files(&cert, &key, &ca) {
            return Ok(false);
        }
        let material = Material::new(cert, key, ca)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = material;
        Ok(true)
    }

    /// Reloads the files periodically for as long as the runtime runs; a bad set (a key
    /// that does not match, a file half written) is logged and the old material kept.
    pub fn spawn_reload(&self) {
        if self.files.is_none() {
            return;
        }
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(tls.reload);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match tls.reload() {
                    Ok(true) => tracing::info!("TLS certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificates not reloaded; keeping the old ones")
                    }
                }
            }
        });
    }

    /// A client of the server that must present a certificate for `server_name`.
    pub fn client(&self, server_name: &str) -> ClientTlsConfig {
        let m = self.material();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&m.ca))
            .identity(Identity::from_pem(&m.cert, &m.key))
            .domain_name(server_name)
    }

    /// The connections accepted on `listener` (Nagle off), each through the TLS handshake
    /// with the material current when it arrived; handshakes run concurrently, so a slow
    /// or silent client holds up no other.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + use<> {
        let (tx, mut rx) = mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match tcp {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an internal connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
