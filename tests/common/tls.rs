//! Certificates for the TLS tests: a throwaway CA (rcgen) and certificates it issues, as
//! PEM.

pub struct TestCa {
    pub cert_pem: String,
    /// A server certificate for 127.0.0.1 and `localhost`, and its key.
    pub server_cert_pem: String,
    pub server_key_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut ca = Self {
            cert_pem: ca.pem(),
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            ca,
            ca_key,
        };
        let (cert, key) = ca.issue(&["localhost"]);
        (ca.server_cert_pem, ca.server_key_pem) = (cert, key);
        ca
    }

    /// A certificate (and its key) for these DNS names and 127.0.0.1.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The certificate (DER) the TLS server at `addr` presents for `name`, shaking hands as
    /// a client holding a certificate from this CA.
    pub async fn served_certificate(&self, addr: std::net::SocketAddr, name: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let (cert, key) = self.issue(&["a-test-client"]);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// Writes a certificate for `names` into `dir` as `<file>.crt`/`<file>.key`; returns
    /// their paths.
    pub fn issue_files(
        &self,
        dir: &std::path::Path,
        file: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = self.issue(names);
        let (cert_path, key_path) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }
}
