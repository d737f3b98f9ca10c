// Isolation. Messages: "throw" (onMessage throws), "reject" (an awaited promise rejects),
// "spin" (an endless loop), "ping" ("pong" back, with this instance's id), "note TEXT"
// (stored). onError records what it was told in storage (a handler's throw is not one of
// those: it is only logged); onConnect throws for ?fail.
// GET → {"notes","errors"}.
import type * as Party from "partykit/server";

export default class Crash implements Party.Server {
  readonly instance = crypto.randomUUID();

  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    if (new URL(ctx.request.url).searchParams.has("fail")) throw new Error("no entry");
    conn.send("hello");
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    if (message === "throw") throw new Error("boom");
    if (message === "reject") await Promise.reject(new Error("async boom"));
    if (message === "spin") for (;;) {}
    if (message === "ping") sender.send(`pong ${this.instance}`);
    if (typeof message === "string" && message.startsWith("note ")) {
      const notes = (await this.room.storage.get<string[]>("notes")) ?? [];
      notes.push(message.slice(5));
      await this.room.storage.put("notes", notes);
      sender.send(`noted ${notes.length}`);
    }
  }

  async onError(conn: Party.Connection, error: Error) {
    const errors = (await this.room.storage.get<string[]>("errors")) ?? [];
    errors.push(`${conn.id}: ${error?.message ?? error}`);
    await this.room.storage.put("errors", errors);
  }

  async onRequest() {
    return Response.json({
      notes: (await this.room.storage.get<string[]>("notes")) ?? [],
      errors: (await this.room.storage.get<string[]>("errors")) ?? [],
    });
  }
}
