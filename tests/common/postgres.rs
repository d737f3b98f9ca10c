//! A real PostgreSQL server for the tests: one per test process, on a free port, in a
//! temporary directory, started by the harness and killed when the process exits
//! (parent-death signal). Each test gets a database of its own.

use super::net::{free_port, wait_until_listening};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct PgServer {
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// `cmd` as the postgres user when we are root (initdb and postgres refuse root).
fn as_postgres(program: PathBuf, pdeathsig: bool) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
        if pdeathsig {
            c.arg("--pdeathsig=KILL");
        }
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Data dirs of earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("conclave-pg-") {
            let pid = rest.split('-').next().unwrap_or(rest);
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A fresh data directory for this process's server named `name` (initdb); returns its
/// parent.
fn init_data_dir(bin: &Path, name: &str) -> PathBuf {
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("conclave-pg-{}{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot chown the PostgreSQL test dir");
    }
    let out = as_postgres(bin.join("initdb"), false)
        .args(["-D", dir.join("data").to_str().unwrap()])
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The postgres server of `dir` on `port`; it dies with the thread that spawns it
/// (pdeathsig).
fn postgres_command(bin: &Path, dir: &Path, port: u16, extra: &[String]) -> Command {
    let mut c = as_postgres(bin.join("postgres"), true);
    c.args(["-D", dir.join("data").to_str().unwrap()])
        .args(["-p", &port.to_string(), "-k", dir.to_str().unwrap()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "max_connections=300", "-c", "fsync=off"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs postgres on `port` from a thread that lives as long as the process.
fn run_server(bin: PathBuf, dir: PathBuf, port: u16, extra: Vec<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = postgres_command(&bin, &dir, port, &extra).spawn();
        match child {
            Ok(mut c) => {
                tx.send(Ok(())).ok();
                let _ = c.wait();
            }
            Err(e) => {
                tx.send(Err(e.to_string())).ok();
            }
        }
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().expect("cannot start postgres");
}

/// This process's server, started on first use.
pub async fn server() -> &'static PgServer {
    static SERVER: OnceCell<PgServer> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let bin = bin_dir();
            let port = free_port();
            let dir = {
                let bin = bin.clone();
                tokio::task::spawn_blocking(move || init_data_dir(&bin, ""))
                    .await
                    .unwrap()
            };
            run_server(bin, dir, port, Vec::new());
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_until_listening(addr, Duration::from_secs(30), "postgres").await;
            PgServer { port }
        })
        .await
}

/// A server of its own that speaks TLS with `cert_pem`/`key_pem` (and plain TCP too);
/// returns its port. It lives as long as the process.
pub async fn tls_server(cert_pem: &str, key_pem: &str) -> u16 {
    let bin = bin_dir();
    let port = free_port();
    let dir = {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || init_data_dir(&bin, &format!("-tls{port}")))
            .await
            .unwrap()
    };
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        for f in [&cert, &key] {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(f)
                .status()
                .unwrap();
        }
    }
    let extra = vec![
        "-c".to_string(),
        "ssl=on".to_string(),
        "-c".to_string(),
        format!("ssl_cert_file={}", cert.display()),
        "-c".to_string(),
        format!("ssl_key_file={}", key.display()),
    ];
    run_server(bin, dir, port, extra);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_listening(addr, Duration::from_secs(30), "postgres").await;
    port
}

/// A server of its own that the test stops and starts again (same data, same port). It
/// dies with the thread that started it, or when dropped.
pub struct StoppableServer {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl StoppableServer {
    pub async fn start() -> Self {
        let bin = bin_dir();
        let port = free_port();
        let dir = {
            let bin = bin.clone();
            tokio::task::spawn_blocking(move || init_data_dir(&bin, &format!("-own{port}")))
                .await
                .unwrap()
        };
        let mut server = Self {
            bin,
            dir,
            port,
            child: None,
        };
        server.restart().await;
        server
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (a fast shutdown: clients are disconnected) and waits for it.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Starts the server again and waits until it listens.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let child = postgres_command(&self.bin, &self.dir, self.port, &[])
            .spawn()
            .expect("cannot start postgres");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until_listening(addr, Duration::from_secs(30), "postgres").await;
    }
}

impl Drop for StoppableServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let port = server().await.port;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    // The server accepts connections a moment before it accepts logins: retry briefly.
    let mut last_err = String::new();
    let created =
        super::eventually_within(
            Duration::from_secs(10),
            async || match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("CREATE DATABASE {name}"))
                        .await
                        .unwrap();
                    true
                }
                Err(e) => {
                    last_err = e.to_string();
                    false
                }
            },
        )
        .await;
    assert!(created, "cannot connect to the test postgres: {last_err}");
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

/// The server address of a URL from [`fresh_database`]: `postgres://user@HOST:PORT/db`.
pub fn server_addr(url: &str) -> SocketAddr {
    url.split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {url}"))
}
