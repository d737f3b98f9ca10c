//! Certificates for the TLS tests: a throwaway CA and a server certificate it signs for
//! 127.0.0.1 (rcgen), as PEM.

pub struct TestCa {
    pub cert_pem: String,
    /// A server certificate for 127.0.0.1 and `localhost`, and its key.
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        Self {
            cert_pem: ca.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }
}
