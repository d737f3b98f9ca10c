//! The send queue against real sockets.

use super::*;
use tokio::io::AsyncReadExt;

fn frame(bytes: usize) -> Bytes {
    Bytes::from(vec![7u8; bytes])
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn limits(send_frames: usize, send_bytes: usize, write_timeout: Duration) -> Arc<SocketLimits> {
    Arc::new(SocketLimits {
        send_frames,
        send_bytes,
        write_timeout,
        replay_bytes: 1 << 20,
    })
}

/// A connected pair: the server's end (as the gateway holds it) and the client's.
async fn pair() -> (Arc<TcpStream>, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (Arc::new(accepted.unwrap().0), client.unwrap())
}

#[tokio::test]
async fn frames_queued_before_the_upgrade_go_first_and_later_ones_are_written_at_once() {
    let (server, mut client) = pair().await;
    let out = Outbound::new(limits(8, 1024, TIMEOUT));
    assert!(out.enqueue(Bytes::from_static(b"ab")));
    assert!(out.enqueue(Bytes::from_static(b"cd")));
    out.attach(server);
    out.drained().await;
    assert!(out.enqueue(Bytes::from_static(b"ef")));
    assert_eq!(out.queued(), (0, 0), "written at once");
    out.finish(Bytes::from_static(b"!"));
    assert!(!out.enqueue(Bytes::from_static(b"late")), "after the close");
    out.drained().await;
    out.end();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"abcdef!");
}

#[tokio::test]
async fn a_socket_that_stops_reading_queues_then_is_closed_as_a_slow_consumer() {
    let (server, mut client) = pair().await;
    let out = Outbound::new(limits(4, 1 << 30, TIMEOUT));
    out.attach(server);
    // Far more than the kernel's buffers hold: the rest waits in the queue.
    let mut sent = 0;
    while out.close().requested().is_none() && sent < 10_000 {
        out.enqueue(frame(64 * 1024));
        sent += 1;
    }
    assert_eq!(
        out.close().requested().map(|(c, _)| c),
        Some(close::TRY_AGAIN_LATER)
    );
    assert_eq!(out.queued().0, 4);
    assert!(out.enqueue_control(frame(2)), "a ping goes past the bound");
    // Reading again drains the queue through the flusher.
    let reading = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    tokio::time::timeout(TIMEOUT, out.drained()).await.unwrap();
    assert_eq!(out.queued(), (0, 0));
    out.end();
    let total = reading.await.unwrap();
    assert_eq!(total, (sent - 1) * 64 * 1024 + 2);
}

#[tokio::test]
async fn frames_sent_together_arrive_whole_and_in_order_however_the_socket_takes_them() {
    let (server, mut client) = pair().await;
    let out = Outbound::new(limits(100_000, 1 << 30, TIMEOUT));
    out.attach(server);
    // Numbered frames of uneven sizes, in batches far larger than the socket's buffer
    // takes at once: partial writes leave the rest queued behind in order.
    let frames: Vec<Bytes> = (0..3000u32)
        .map(|i| {
            let mut f = i.to_be_bytes().to_vec();
            f.resize(4 + (i as usize * 37) % 3000, 0);
            Bytes::from(f)
        })
        .collect();
    let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
    for batch in frames.chunks(100) {
        assert_eq!(out.enqueue_all(batch), batch.len());
    }
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(TIMEOUT, client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got == expected, "frames arrived out of order or cut");
    assert!(out.close().requested().is_none());
}

#[tokio::test]
async fn a_socket_that_takes_nothing_for_the_write_timeout_is_given_up() {
    let (server, _client) = pair().await;
    let out = Outbound::new(limits(1000, 1 << 30, Duration::from_millis(200)));
    out.attach(server);
    while out.queued().0 == 0 {
        out.enqueue(frame(64 * 1024));
    }
    tokio::time::timeout(TIMEOUT, out.close().wait())
        .await
        .unwrap();
    assert_eq!(
        out.close().requested().map(|(c, _)| c),
        Some(close::ABNORMAL)
    );
    assert_eq!(out.queued(), (0, 0), "the queue is let go");
    assert!(!out.enqueue(frame(1)));
}

#[tokio::test]
async fn an_ended_socket_lets_go_of_its_connection_at_once_even_while_blocked() {
    let (server, _client) = pair().await;
    let out = Outbound::new(limits(1000, 1 << 30, Duration::from_secs(60)));
    out.attach(server.clone());
    while out.queued().0 == 0 {
        out.enqueue(frame(64 * 1024));
    }
    // The flusher waits for the client to read (it never does); the socket ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    out.end();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        Arc::strong_count(&server),
        1,
        "something still holds the connection"
    );
}

#[test]
fn one_frame_may_cross_the_byte_bound_but_none_after_it() {
    let out = Outbound::new(limits(100, 1000, TIMEOUT));
    assert!(
        out.enqueue(frame(5000)),
        "one large frame into an empty queue"
    );
    assert!(
        !out.enqueue(frame(1)),
        "a frame behind a queue over its bound"
    );
    assert!(out.close().requested().is_some());
}

#[test]
fn nothing_is_queued_once_the_socket_has_ended() {
    let out = Outbound::new(limits(8, 1024, TIMEOUT));
    out.end();
    assert!(!out.enqueue(frame(1)));
    assert!(
        out.close().requested().is_none(),
        "an ended socket is not a slow consumer"
    );
}
