//! A gateway played by the test: relay events straight to one `Node` over an in-process
//! link, no sockets. With no I/O to wait for, paused tokio time (`start_paused`) advances
//! only when every task waits on a timer, so hibernation and alarm timing can be tested
//! without real sleeps. (Storage calls run as blocking tasks: see `store`.)

use super::store::TestStore;
use conclave_node::{Node, NodeConfig, PartyRegistry};
use conclave_proto::wire::{
    gateway_event, node_event, Admit, AdmitReply, CloseSocket, Frame, GatewayEvent, HomeRequest,
    NodeEvent, Resume,
};
use conclave_proto::{in_process_link, Inbound, RoomKey, LINK_CAPACITY};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the node may take to answer (in paused time: until nothing else can happen).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom a message from the node is for.
#[derive(Debug, PartialEq, Eq)]
pub enum To {
    Socket(u64),
    /// A broadcast: this gateway's members in the room, but for these sockets.
    MembersBut(Vec<u64>),
}

pub struct RelayGateway {
    pub node: Node,
    to_node: mpsc::Sender<GatewayEvent>,
    from_node: Inbound<NodeEvent>,
    /// Each open socket's last frame sequence number.
    sockets: HashMap<u64, u64>,
    /// Messages for sockets that arrived while the test waited for something else.
    messages: VecDeque<(To, String)>,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl RelayGateway {
    /// A node serving `parties` over a fresh redb store, and this gateway attached to it.
    pub fn start(config: NodeConfig, parties: PartyRegistry) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::redb(&dir.path().join("node.redb"));
        Self::start_on(config, parties, store, dir)
    }

    /// A node serving `parties` over `store` (in `dir`, kept as long as the gateway), and
    /// this gateway attached to it.
    pub fn start_on(
        config: NodeConfig,
        parties: PartyRegistry,
        store: TestStore,
        dir: tempfile::TempDir,
    ) -> Self {
        let node = Node::start(config, parties, Arc::new(store));
        let (gateway, node_side) = in_process_link(LINK_CAPACITY);
        node.attach_gateway(node_side);
        Self {
            node,
            to_node: gateway.to_node,
            from_node: gateway.from_node,
            sockets: HashMap::new(),
            messages: VecDeque::new(),
            next_id: 1,
            _dir: dir,
        }
    }

    async fn send_event(&self, event: gateway_event::Event) {
        let event = GatewayEvent { event: Some(event) };
        self.to_node.send(event).await.expect("the node is gone");
    }

    /// Sends `admit` as it is (as a faulty gateway might) and returns the node's answer.
    pub async fn admit(&mut self, admit: Admit) -> AdmitReply {
        let id = admit.request_id;
        self.send_event(gateway_event::Event::Admit(admit)).await;
        let answer = async {
            loop {
                if let node_event::Event::AdmitReply(r) = self.recv().await {
                    if r.request_id == id {
                        return r;
                    }
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .expect("the node did not answer the admission")
    }

    /// Sends `event` as it is.
    pub async fn send_raw(&self, event: gateway_event::Event) {
        self.send_event(event).await;
    }

    /// The next socket the node closes (instead of failing the test on it).
    pub async fn next_close(&mut self) -> CloseSocket {
        loop {
            let ev = tokio::time::timeout(ANSWER_TIMEOUT, self.from_node.recv())
                .await
                .expect("the node closed no socket in time")
                .expect("the node closed the link");
            if let Some(node_event::Event::CloseSocket(c)) = ev.event {
                return c;
            }
        }
    }

    /// Opens a socket `conn_id` in `party/room`; returns its socket id once admitted.
    pub async fn open(&mut self, party: &str, room: &str, conn_id: &str) -> u64 {
        self.join(party, room, conn_id, None).await
    }

    /// A socket `conn_id`, open elsewhere until now, moves to `party/room` on this node (as
    /// after a failover or a hand-off); returns its socket id once admitted.
    pub async fn resume(&mut self, party: &str, room: &str, conn_id: &str) -> u64 {
        self.join(party, room, conn_id, Some(Resume::default()))
            .await
    }

    async fn join(
        &mut self,
        party: &str,
        room: &str,
        conn_id: &str,
        resume: Option<Resume>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let key = RoomKey::new(party, room).unwrap();
        self.send_event(gateway_event::Event::Admit(Admit {
            request_id: id,
            room: Some(key.to_wire()),
            conn_id: conn_id.into(),
            uri: format!("http://test/parties/{party}/{room}?_pk={conn_id}"),
            socket: id,
            origin: 1,
            resume,
            ..Default::default()
        }))
        .await;
        loop {
            if let node_event::Event::AdmitReply(r) = self.recv().await {
                assert_eq!((r.request_id, r.status), (id, 0), "refused: {}", r.body);
                self.sockets.insert(id, 0);
                return id;
            }
        }
    }

    /// Asks the node for `party/room`'s home region, proposing `proposed`: the region, or
    /// the node's refusal.
    pub async fn home(
        &mut self,
        party: &str,
        room: &str,
        proposed: &str,
    ) -> Result<String, String> {
        let id = self.next_id;
        self.next_id += 1;
        let key = RoomKey::new(party, room).unwrap();
        self.send_event(gateway_event::Event::Home(HomeRequest {
            request_id: id,
            room: Some(key.to_wire()),
            proposed: proposed.into(),
        }))
        .await;
        loop {
            if let node_event::Event::HomeReply(r) = self.recv().await {
                if r.request_id == id {
                    return if r.error.is_empty() {
                        Ok(r.region)
                    } else {
                        Err(r.error)
                    };
                }
            }
        }
    }

    /// A text frame from `socket`.
    pub async fn send(&mut self, socket: u64, text: &str) {
        let seq = self.sockets.get_mut(&socket).expect("an open socket");
        *seq += 1;
        let frame = Frame {
            socket,
            payload: text.to_string().into(),
            binary: false,
            seq: *seq,
            ..Frame::default()
        };
        self.send_event(gateway_event::Event::Frame(frame)).await;
    }

    /// The next text the node sends to a socket (directly or as a room broadcast).
    pub async fn next_text(&mut self) -> String {
        self.next_text_within(ANSWER_TIMEOUT)
            .await
            .expect("the node sent nothing in time")
    }

    /// The next message the node sends, and whom it is for.
    pub async fn next_message(&mut self) -> (To, String) {
        self.next_message_within(ANSWER_TIMEOUT)
            .await
            .expect("the node sent nothing in time")
    }

    pub async fn next_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// Whether the node sends no message to any socket for `d`.
    pub async fn silent_for(&mut self, d: Duration) -> bool {
        self.next_text_within(d).await.is_none()
    }

    /// The next text the node sends within `d`, if any.
    pub async fn next_text_within(&mut self, d: Duration) -> Option<String> {
        Some(self.next_message_within(d).await?.1)
    }

    async fn next_message_within(&mut self, d: Duration) -> Option<(To, String)> {
        let deadline = tokio::time::Instant::now() + d;
        while self.messages.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.recv()).await;
            if ev.is_err() {
                return None;
            }
        }
        self.messages.pop_front()
    }

    /// The node's next event; messages also join the queue `next_text` reads.
    async fn recv(&mut self) -> node_event::Event {
        let ev = self
            .from_node
            .recv()
            .await
            .expect("the node closed the link");
        let ev = ev.event.expect("an event");
        match &ev {
            node_event::Event::Send(s) => self
                .messages
                .push_back((To::Socket(s.socket), text(&s.payload))),
            node_event::Event::Deliver(d) => self
                .messages
                .push_back((To::MembersBut(d.exclude.clone()), text(&d.payload))),
            node_event::Event::CloseSocket(c) => {
                panic!(
                    "the node closed socket {}: {} {}",
                    c.socket, c.code, c.reason
                )
            }
            _ => {}
        }
        ev
    }
}

fn text(payload: &[u8]) -> String {
    String::from_utf8(payload.to_vec()).expect("a text message")
}
