//! A store that stops taking writes — a full disk under the embedded file, PostgreSQL
//! stopped — makes `/readyz` fail while it lasts, refuses to acknowledge what it could not
//! keep, and takes writes again without a restart once it is back.

mod common;

use common::postgres::StoppableServer;
use common::*;
use conclave_node::async_trait;
use conclave_node::storage::{ListOptions, PostgresStore, Store};
use conclave_node::{Connection, Message, Party, PartyError, Room};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Keeps every numbered message under its number, with a value of `VALUE_BYTES`, and
/// answers the number once it is stored; `list` answers the stored numbers.
#[derive(Default)]
struct Keeper;

const VALUE_BYTES: usize = 16 * 1024;

#[async_trait]
impl Party for Keeper {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let text = msg.as_text().unwrap_or_default().to_string();
        if text == "list" {
            let keys: Vec<String> = room
                .storage()
                .list(&ListOptions::default())
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            conn.send(Message::text(keys.join(",")));
            return Ok(());
        }
        room.storage().put(&text, vec![7u8; VALUE_BYTES])?;
        conn.send(Message::text(text));
        Ok(())
    }
}

const ROOM: &str = "/parties/keeper/r";

/// Sends `n` and waits up to `within` for its acknowledgement.
async fn stored(ws: &mut Ws, n: u32, within: Duration) -> bool {
    send(ws, &n.to_string()).await;
    let reply = tokio::time::timeout(within, next_text(ws)).await;
    match reply {
        Ok(text) => {
            assert_eq!(text, n.to_string(), "acknowledged another message");
            true
        }
        Err(_) => false,
    }
}

/// The numbers the room has stored, read through a fresh socket.
async fn stored_numbers(server: &TestServer) -> Vec<u32> {
    let mut ws = server.connect(ROOM).await;
    send(&mut ws, "list").await;
    let text = next_text_within(&mut ws, Duration::from_secs(10)).await;
    let mut numbers: Vec<u32> = text.split(',').filter_map(|k| k.parse().ok()).collect();
    numbers.sort_unstable();
    numbers
}

/// `/readyz`: its status and body.
async fn readyz(server: &TestServer) -> (u16, String) {
    get(server.addr, "/readyz").await
}

async fn eventually_ready(server: &TestServer, ready: bool, within: Duration) {
    let mut last = (0, String::new());
    let reached = eventually_within(within, async || {
        last = readyz(server).await;
        (last.0 == 200) == ready
    })
    .await;
    assert!(
        reached,
        "/readyz did not become ready={ready} within {within:?}: {last:?}"
    );
}

/// A tmpfs of `megabytes` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` with one file, to its last byte; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![1u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    path
}

/// The embedded store on a disk that fills up: writes stop being acknowledged and
/// `/readyz` fails; once space is freed the file is reopened and writes go on, with every
/// acknowledged one kept. (redb refuses all writes after one failed until the file is
/// reopened: before, only a restart brought it back.)
#[tokio::test]
async fn a_full_disk_fails_readiness_and_writes_resume_when_space_returns() {
    let disk = Tmpfs::mount(24);
    let dir = disk.path().to_path_buf();
    let server = start(
        |c| c.storage = conclave::config::StorageTarget::Redb(dir),
        |r| r.with::<Keeper>("keeper"),
    )
    .await;
    let mut ws = server.connect(ROOM).await;
    let mut acknowledged = Vec::new();
    for n in 1..=20 {
        assert!(
            stored(&mut ws, n, Duration::from_secs(10)).await,
            "write {n}"
        );
        acknowledged.push(n);
    }
    eventually_ready(&server, true, Duration::from_secs(1)).await;

    let filler = fill(disk.path());
    // redb grows its file in steps: a few writes may still fit.
    let mut refused = None;
    for n in 21..=400 {
        if stored(&mut ws, n, Duration::from_secs(3)).await {
            acknowledged.push(n);
        } else {
            refused = Some(n);
            break;
        }
    }
    assert!(
        refused.is_some(),
        "400 writes of 16 KiB went through on a full disk"
    );
    eventually_ready(&server, false, Duration::from_secs(5)).await;
    assert!(
        readyz(&server).await.1.contains("storage failing"),
        "/readyz does not say why"
    );

    std::fs::remove_file(filler).unwrap();
    eventually_ready(&server, true, Duration::from_secs(10)).await;
    let mut ws = server.connect(ROOM).await;
    for n in 1000..1010 {
        assert!(
            stored(&mut ws, n, Duration::from_secs(10)).await,
            "write {n} after space returned"
        );
        acknowledged.push(n);
    }
    let kept = stored_numbers(&server).await;
    // The refused write may be kept too: its socket's gateway still held it, unacknowledged.
    for n in &acknowledged {
        assert!(
            kept.contains(n),
            "acknowledged write {n} is lost; kept {kept:?}"
        );
    }
}

/// PostgreSQL stopped under a running server: `/readyz` fails, nothing is acknowledged;
/// started again, the pool reconnects and writes go on without a restart of Conclave.
#[tokio::test]
async fn postgres_stopped_fails_readiness_and_writes_resume_when_it_returns() {
    let mut pg = StoppableServer::start().await;
    let url = pg.url();
    let mut store = None;
    let connected = eventually_within(Duration::from_secs(10), async || {
        store = PostgresStore::connect(&url, 4).await.ok();
        store.is_some()
    })
    .await;
    assert!(connected, "cannot connect to the test postgres");
    let store: Arc<dyn Store> = Arc::new(store.unwrap());
    let server = start_with_store(|_| {}, |r| r.with::<Keeper>("keeper"), |_| store).await;
    let mut ws = server.connect(ROOM).await;
    for n in 1..=5 {
        assert!(
            stored(&mut ws, n, Duration::from_secs(10)).await,
            "write {n}"
        );
    }
    eventually_ready(&server, true, Duration::from_secs(1)).await;

    pg.stop().await;
    eventually_ready(&server, false, Duration::from_secs(10)).await;
    assert!(
        readyz(&server).await.1.contains("storage failing"),
        "/readyz does not say why"
    );
    assert!(
        !stored(&mut ws, 6, Duration::from_secs(2)).await,
        "a write was acknowledged with PostgreSQL stopped"
    );

    pg.restart().await;
    eventually_ready(&server, true, Duration::from_secs(15)).await;
    let mut ws = server.connect(ROOM).await;
    for n in 7..=9 {
        assert!(
            stored(&mut ws, n, Duration::from_secs(10)).await,
            "write {n} after PostgreSQL returned"
        );
    }
    let kept = stored_numbers(&server).await;
    for n in [1, 2, 3, 4, 5, 7, 8, 9] {
        assert!(
            kept.contains(&n),
            "acknowledged write {n} is lost; kept {kept:?}"
        );
    }
}
