// counter: "incr" adds one to a persisted value, "get" reads it; either way the sender gets
// {"type":"count","value":N}, only once the value is durable (the output gate holds the
// reply until the write commits). GET (or HEAD) → {"value":N}, other methods 405.
//
// The TypeScript twin of node/src/parties/counter.rs. Beyond it: a client's request with
// ?deny=1 is refused (403) by onBeforeRequest, which does not see other rooms' requests.
import type * as Party from "partykit/server";
import { methodNotAllowed } from "./http";

const KEY = "value";

export default class Counter implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  static async onBeforeRequest(req: Party.Request) {
    if (new URL(req.url).searchParams.get("deny") === "1") return new Response("denied", { status: 403 });
    return req;
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const value = (await this.room.storage.get<number>(KEY)) ?? 0;
    if (message === "incr") {
      await this.room.storage.put(KEY, value + 1);
      sender.send(JSON.stringify({ type: "count", value: value + 1 }));
    } else if (message === "get") {
      sender.send(JSON.stringify({ type: "count", value }));
    } else {
      sender.send(JSON.stringify({ error: 'send "incr" or "get"', type: "error" }));
    }
  }

  async onRequest(req: Party.Request) {
    if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed();
    return Response.json({ value: (await this.room.storage.get<number>(KEY)) ?? 0 });
  }
}
