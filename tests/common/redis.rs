//! A real redis-server on a free port, owned by the test that started it: stopped (or
//! restarted) by the test, killed when the handle drops.

use super::net::{free_port, wait_until_listening};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// TLS only: the certificate and key files it serves, in this directory.
    tls: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            tls: None,
        };
        s.restart().await;
        s
    }

    /// A server that speaks only TLS, with `ca`'s server certificate.
    pub async fn start_tls(ca: &super::tls::TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.crt"), &ca.server_cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &ca.server_key_pem).unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
        let mut s = Self {
            port: free_port(),
            child: None,
            tls: Some(dir),
        };
        s.restart().await;
        s
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]).
    pub async fn restart(&mut self) {
        let port = self.port.to_string();
        let ports: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(dir) => {
                let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.crt"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        let child = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until_listening(addr, Duration::from_secs(10), "redis-server").await;
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
