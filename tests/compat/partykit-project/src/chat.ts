// chat: {"type":"message","text":"…"} (1 to 4096 characters) gets an id (increasing per
// room), `from` (the sender's id) and `ts`, is persisted, then broadcast to everyone
// including the sender. A new connection first gets {"type":"history","messages":[…]}
// (the last 100, oldest first). GET (or HEAD) → {"messages":[…]}, other methods 405. The room keeps the
// last 1000 messages; mistakes are answered {"type":"error","error":"…"}.
//
// The TypeScript twin of node/src/parties/chat.rs: same messages and storage keys. Objects
// are written with their keys sorted, as the Rust party's serde_json writes them.
import type * as Party from "partykit/server";
import { methodNotAllowed } from "./http";

const HISTORY = 100;
const KEEP = 1000;
const MAX_TEXT_CHARS = 4096;
const NEXT_ID = "next_id";
const MSG_PREFIX = "msg:";

type ChatMessage = { id: number; from: string; text: string; ts: number };

/** `msg:` and the id padded to 20 digits, so keys sort by id. */
const msgKey = (id: number) => `${MSG_PREFIX}${String(id).padStart(20, "0")}`;

const wire = (m: ChatMessage) => ({ from: m.from, id: m.id, text: m.text, ts: m.ts, type: "message" });

function error(conn: Party.Connection, error: string) {
  conn.send(JSON.stringify({ error, type: "error" }));
}

/** Why `value` is not a {"type": string, "text"?: string} message, or null if it is one. */
function shapeError(value: unknown): string | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected an object, got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`;
  }
  const { type, text } = value as Record<string, unknown>;
  if (type === undefined) return "missing field `type`";
  if (typeof type !== "string") return "`type` must be a string";
  if (text !== undefined && text !== null && typeof text !== "string") return "`text` must be a string";
  return null;
}

export default class Chat implements Party.Server {
  // Everything lives in storage, so the room may leave memory between events.
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  async history() {
    const stored = await this.room.storage.list<ChatMessage>({ prefix: MSG_PREFIX, reverse: true, limit: HISTORY });
    return [...stored.values()].reverse().map(wire);
  }

  async onConnect(conn: Party.Connection) {
    conn.send(JSON.stringify({ messages: await this.history(), type: "history" }));
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    if (typeof message !== "string") return error(sender, "binary messages are not supported");
    let incoming: unknown;
    try {
      incoming = JSON.parse(message);
    } catch (e) {
      return error(sender, `invalid JSON: ${(e as Error).message}`);
    }
    const wrong = shapeError(incoming);
    if (wrong) return error(sender, `invalid JSON: ${wrong}`);
    const { type, text: maybeText } = incoming as { type: string; text?: string | null };
    if (type !== "message") return error(sender, `unknown message type ${JSON.stringify(type)}`);
    const text = maybeText ?? "";
    const chars = [...text].length; // characters, not UTF-16 units
    if (chars === 0 || chars > MAX_TEXT_CHARS) {
      return error(sender, `text must be 1 to ${MAX_TEXT_CHARS} characters, got ${chars}`);
    }

    const id = (await this.room.storage.get<number>(NEXT_ID)) ?? 1;
    const m: ChatMessage = { id, from: sender.id, text, ts: Date.now() };
    // Not awaited: these writes commit together, and the broadcast below is held until
    // they are durable (the output gate).
    this.room.storage.put<ChatMessage | number>({ [msgKey(id)]: m, [NEXT_ID]: id + 1 });
    if (id > KEEP) this.room.storage.delete(msgKey(id - KEEP));
    this.room.broadcast(JSON.stringify(wire(m)));
  }

  async onRequest(req: Party.Request) {
    if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed();
    return Response.json({ messages: await this.history() });
  }
}
