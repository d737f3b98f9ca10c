// presence: each connection has a name (?name=, else its id) and a status ("online" at
// first; {"type":"status","status":"…"} changes it). On every join, leave and status
// change everyone gets {"type":"presence","users":{"<id>":{"name","status"}}}. Names and
// statuses are clipped to 256 characters. The data lives in connection state, so it
// survives hibernation.
//
// The TypeScript twin of node/src/parties/presence.rs.
import type * as Party from "partykit/server";

const MAX_FIELD_CHARS = 256;

type User = { name: string; status: string };

const clip = (s: string) => [...s].slice(0, MAX_FIELD_CHARS).join("");

const plain = { "content-type": "text/plain; charset=utf-8" };

export default class Presence implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  /** Sends everyone the users of the room, by connection id (sorted, as the Rust party does). */
  announce() {
    const connections = [...this.room.getConnections<User>()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const users: Record<string, User> = {};
    for (const c of connections) {
      users[c.id] = { name: c.state?.name ?? "", status: c.state?.status ?? "" };
    }
    this.room.broadcast(JSON.stringify({ type: "presence", users }));
  }

  onConnect(conn: Party.Connection<User>) {
    const name = new URL(conn.uri).searchParams.get("name");
    conn.setState({ name: name === null ? conn.id : clip(name), status: "online" });
    this.announce();
  }

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection<User>) {
    let incoming: { type?: unknown; status?: unknown } | null = null;
    if (typeof message === "string") {
      try {
        incoming = JSON.parse(message);
      } catch {
        incoming = null;
      }
    }
    if (incoming?.type === "status" && typeof incoming.status === "string") {
      sender.setState({ name: sender.state?.name ?? "", status: clip(incoming.status) });
      this.announce();
    } else {
      sender.send(JSON.stringify({ error: 'expected {"type":"status","status":"…"}', type: "error" }));
    }
  }

  onClose() {
    this.announce();
  }

  onError() {
    this.announce();
  }

  // Like a Rust party without on_request.
  onRequest() {
    return new Response("This party does not handle HTTP requests", { status: 404, headers: plain });
  }
}
