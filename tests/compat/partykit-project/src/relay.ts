// relay (the party named `main`): every message goes unchanged to every other connection
// of the room, text as text and binary as binary.
// GET → {"connections","party","room"} (plus "tagged": N for ?tag=); POST broadcasts the
// body to everyone (as text if it is UTF-8, else as binary) and answers "OK"; any other
// method is 405. A connection's tags come from ?tags=a,b.
//
// The TypeScript twin of node/src/parties/relay.rs: same messages, same HTTP answers to
// rooms. As the main party it also answers requests outside /parties/ (static onFetch:
// "outside PATH?QUERY", or /outside/ask/ROOM: "STATUS BODY" of counter room ROOM), which
// the Rust relay answers 404.
import type * as Party from "partykit/server";
import { methodNotAllowed } from "./http";

/** Tags a connection may add to its id, and their longest length (as Conclave keeps them). */
const MAX_EXTRA_TAGS = 9;
const MAX_TAG_BYTES = 256;

const plain = { "content-type": "text/plain; charset=utf-8" };

function count(connections: Iterable<Party.Connection>): number {
  let n = 0;
  for (const _ of connections) n++;
  return n;
}

export default class Relay implements Party.Server {
  // Nothing lives in memory: connections keep their ids and tags while the room sleeps.
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  static async onFetch(req: Party.Request, lobby: Party.FetchLobby): Promise<Response> {
    const url = new URL(req.url);
    // /outside/ask/ROOM: what counter room ROOM answers, wherever it lives.
    const ask = url.pathname.match(/^\/outside\/ask\/([^/]+)$/);
    if (ask) {
      const res = await lobby.parties.counter.get(ask[1]).fetch(url.search);
      return new Response(`${res.status} ${await res.text()}`, { headers: plain });
    }
    return new Response(`outside ${url.pathname}${url.search}`, { headers: plain });
  }

  getConnectionTags(_conn: Party.Connection, ctx: Party.ConnectionContext): string[] {
    const tags = new URL(ctx.request.url).searchParams.get("tags");
    if (tags === null) return [];
    const encoder = new TextEncoder();
    return tags
      .split(",")
      .filter((t) => t !== "" && encoder.encode(t).length <= MAX_TAG_BYTES)
      .slice(0, MAX_EXTRA_TAGS);
  }

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    this.room.broadcast(message, [sender.id]);
  }

  async onRequest(req: Party.Request): Promise<Response> {
    if (req.method === "GET") {
      // Keys in the order the Rust party writes them (sorted), so the bytes match too.
      const info: Record<string, unknown> = {
        connections: count(this.room.getConnections()),
        party: this.room.name,
        room: this.room.id,
      };
      const tag = new URL(req.url).searchParams.get("tag");
      if (tag !== null) {
        // No connection has the empty tag (getConnections("") would mean "all").
        info.tagged = tag === "" ? 0 : count(this.room.getConnections(tag));
      }
      return Response.json(info);
    }
    if (req.method === "POST") {
      const body = await req.arrayBuffer();
      let text: string | undefined;
      try {
        // fatal: invalid UTF-8 goes out as binary; ignoreBOM: a leading BOM is kept.
        text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(body);
      } catch {
        text = undefined;
      }
      this.room.broadcast(text ?? body);
      return new Response("OK", { headers: plain });
    }
    return methodNotAllowed("GET, POST");
  }
}
