// Node.js built-ins, as PartyKit's build provides them (workerd's own modules or unenv's
// polyfills; Conclave bundles unenv's).
import type * as Party from "partykit/server";
import { Buffer } from "node:buffer";
import { EventEmitter } from "events";
import * as util from "node:util";
import path from "node:path";

export default class NodeParty implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onRequest(): Response {
    const emitter = new EventEmitter();
    let heard = "";
    emitter.on("x", (v: string) => (heard += v));
    emitter.emit("x", "a");
    emitter.emit("x", "b");
    return Response.json({
      base64: Buffer.from("héllo").toString("base64"),
      fromBase64: Buffer.from("aMOpbGxv", "base64").toString("utf8"),
      hex: Buffer.from([1, 255]).toString("hex"),
      concat: Buffer.concat([Buffer.from("a"), Buffer.from("b")]).toString(),
      isBuffer: Buffer.isBuffer(Buffer.alloc(2)) && Buffer.alloc(2) instanceof Uint8Array,
      heard,
      format: util.format("%s=%d", "n", 4),
      join: path.join("/a", "b", "../c"),
    });
  }
}
