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
