//! TLS to PostgreSQL (rustls, ring). As libpq does, the URL's `sslmode` decides whether to
//! encrypt (`disable`, `prefer` — the default — or `require`); a CA file decides whether to
//! verify: with one, the server's certificate must chain to it and name the host (libpq's
//! `verify-full`); without one, the link is encrypted but the server is not authenticated
//! (libpq's `prefer`/`require`), which is said in the log.

use super::store::StorageError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector every session of a store uses: verifying against the certificates in
/// `ca_file` (PEM), or encrypting without verification.
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StorageError> {
    let tls_err = |e: rustls::Error| StorageError::Backend(format!("PostgreSQL TLS: {e}"));
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let config = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StorageError::Backend(format!(
                    "cannot read the PostgreSQL CA file {}: {e}",
                    path.display()
                ))
            })?;
            let mut roots = RootCertStore::empty();
            let certs = rustls_pemfile_certs(&pem).map_err(|e| {
                StorageError::Backend(format!("PostgreSQL CA file {}: {e}", path.display()))
            })?;
            for cert in certs {
                roots.add(cert).map_err(tls_err)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e:?}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// Accepts any server certificate (handshake signatures are still checked): encryption
/// without authentication, libpq's `sslmode=require`.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
