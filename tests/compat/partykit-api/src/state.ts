// Connection state with hibernation: the room keeps nothing in memory between events, each
// connection carries {name, count} in its state. "bump" adds one (setState with a
// function), "clear" sets null, anything else just reads. Every reply says which instance
// answered (a fresh one after the room woke up) and how many times onStart ran.
import type * as Party from "partykit/server";

type Member = { name: string; count: number };

export default class State implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };
  readonly instance = crypto.randomUUID();
  ready = false;
  starts = 0;

  constructor(readonly room: Party.Room) {}

  async onStart() {
    await this.room.blockConcurrencyWhile(async () => {
      this.starts = ((await this.room.storage.get<number>("starts")) ?? 0) + 1;
      await this.room.storage.put("starts", this.starts);
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    this.ready = true;
  }

  onConnect(conn: Party.Connection<Member>, ctx: Party.ConnectionContext) {
    conn.setState({ name: new URL(ctx.request.url).searchParams.get("name") ?? "anonymous", count: 0 });
    this.reply(conn);
  }

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection<Member>) {
    if (message === "bump") sender.setState((prev) => ({ name: prev?.name ?? "anonymous", count: (prev?.count ?? 0) + 1 }));
    if (message === "clear") sender.setState(null);
    this.reply(sender);
  }

  // The state of the connection that left is still there here.
  onClose(conn: Party.Connection<Member>) {
    this.room.broadcast(JSON.stringify({ left: conn.id, state: conn.state }));
  }

  reply(conn: Party.Connection<Member>) {
    const everyone = [...this.room.getConnections<Member>()]
      .map((c) => ({ id: c.id, state: c.state }))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    conn.send(JSON.stringify({ instance: this.instance, ready: this.ready, starts: this.starts, state: conn.state, everyone }));
  }
}
