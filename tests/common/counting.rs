//! Clients that count on a `counter` room, each sending `incr` and waiting for its reply
//! again and again, and what they saw: the values handed out, closed sockets, and the
//! longest wait for a reply. The fault tests check exactly-once with it: every value once,
//! and the counter equal to the replies.

use super::Ws;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Seen {
    values: Vec<i64>,
    /// Sockets that closed, or whose reply did not come within 30 s.
    closes: usize,
    /// Per client, when its latest reply came.
    last_reply: Vec<Option<Instant>>,
    /// The longest time any client waited for a reply since the last `reset_worst_wait`.
    worst_wait: Duration,
}

pub struct Counting {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

/// What the clients saw, once they stopped.
pub struct Tally {
    /// Every value handed out, sorted.
    pub values: Vec<i64>,
    pub closes: usize,
}

impl Counting {
    /// Starts one counting client per socket.
    pub fn start(sockets: Vec<Ws>) -> Self {
        let seen = Arc::new(Mutex::new(Seen {
            last_reply: vec![None; sockets.len()],
            ..Seen::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = sockets
            .into_iter()
            .enumerate()
            .map(|(i, ws)| tokio::spawn(increment_until(ws, i, seen.clone(), stop.clone())))
            .collect();
        Self {
            seen,
            stop,
            clients,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    pub fn reset_worst_wait(&self) {
        self.seen().worst_wait = Duration::ZERO;
    }

    /// The longest any client waited for a reply since the last reset.
    pub fn worst_wait(&self) -> Duration {
        self.seen().worst_wait
    }

    /// Whether every client got a reply after `since`, waiting up to `within`.
    pub async fn all_replied_after(&self, since: Instant, within: Duration) -> bool {
        super::eventually_within(within, async || {
            let s = self.seen();
            s.last_reply.iter().all(|t| t.is_some_and(|t| t > since))
        })
        .await
    }

    /// Stops the clients once each has its last reply.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.unwrap();
        }
        let s = self.seen.lock().unwrap();
        let mut values = s.values.clone();
        values.sort_unstable();
        Tally {
            values,
            closes: s.closes,
        }
    }
}

impl Tally {
    /// No socket closed, no value handed out twice, and `counter` (the room's value) equal
    /// to the replies: nothing acknowledged lost, nothing applied twice.
    pub fn assert_exactly_once(&self, counter: i64) {
        assert_eq!(self.closes, 0, "client sockets were closed");
        let mut distinct = self.values.clone();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            self.values.len(),
            "a value was handed out twice"
        );
        let replies = self.values.len() as i64;
        assert_eq!(
            counter, replies,
            "counter {counter} for {replies} replies: an acknowledged increment was lost (below), or one was applied twice (above)"
        );
    }
}

/// Sends `incr` and waits for its reply, again and again, until `stop`.
/// The least time between two `incr` of one client: 50 a second, under the gateway's
/// default of 100 messages a second per connection, which clients of a room that answers
/// fast would otherwise reach (the faults are under test here, not that limit).
pub const PACE: Duration = Duration::from_millis(20);

async fn increment_until(mut ws: Ws, i: usize, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let paced = tokio::time::sleep(PACE);
        if futures::SinkExt::send(&mut ws, Message::text("incr"))
            .await
            .is_err()
        {
            seen.lock().unwrap().closes += 1;
            return;
        }
        // One deadline for the reply, whatever else arrives meanwhile (pings).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let value = loop {
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut ws)).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    break v["value"].as_i64();
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    break None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        };
        {
            let mut s = seen.lock().unwrap();
            let Some(value) = value else {
                s.closes += 1;
                return;
            };
            s.values.push(value);
            s.last_reply[i] = Some(Instant::now());
            s.worst_wait = s.worst_wait.max(sent.elapsed());
        }
        paced.await;
    }
}
