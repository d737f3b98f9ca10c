//! Memory that members who never read can make a server hold. Alone in its test binary:
//! it measures the process's resident memory, which other tests running beside it would
//! move.

mod common;

use common::*;
use std::time::Duration;

/// This process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Members that never read share one copy of each broadcast (issue 16: 2,000 such members
/// and five 1 MB broadcasts grew the server to 2.08 GB, each socket holding its own
/// serialized copy). Here 300 members and five 1 MB broadcasts: one copy each would be
/// 1.5 GB; the whole process (server and clients) may grow 150 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_never_read_pin_one_shared_copy_of_each_broadcast() {
    let server = start(|_| {}, |r| r).await;
    let mut members = Vec::new();
    for i in 0..300 {
        // A small receive buffer: the kernel takes little of what the server writes.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        members.push(upgrade_by_hand(stream, &format!("/parties/main/big?_pk=m{i}")).await);
    }
    let mut publisher = server.connect("/parties/main/big?_pk=publisher").await;
    let mut witness = server.connect("/parties/main/big?_pk=witness").await;
    let before = resident_bytes();
    for i in 0..5u8 {
        let payload = tokio_tungstenite::tungstenite::Message::binary(vec![i; 1_000_000]);
        futures::SinkExt::send(&mut publisher, payload)
            .await
            .unwrap();
    }
    // A member that reads gets all five: the room broadcast them.
    for i in 0..5u8 {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut witness),
        )
        .await
        .expect("a broadcast in time")
        .unwrap()
        .unwrap();
        assert_eq!(got.into_data(), vec![i; 1_000_000]);
    }
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(resident_bytes().saturating_sub(before));
    }
    assert!(
        peak < 150 << 20,
        "the process grew {} MB for five 1 MB broadcasts to 300 members that never read",
        peak >> 20
    );
    drop(members);
    assert_serving(&server).await;
}
