// Node.js built-ins and the `Buffer` and `global` globals, as PartyKit's build provides
// them (workerd's own modules or unenv's polyfills; Conclave bundles unenv's).
import type * as Party from "partykit/server";
import { Buffer as ImportedBuffer } from "node:buffer";
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
      base64: ImportedBuffer.from("héllo").toString("base64"),
      fromBase64: ImportedBuffer.from("aMOpbGxv", "base64").toString("utf8"),
      hex: ImportedBuffer.from([1, 255]).toString("hex"),
      concat: ImportedBuffer.concat([ImportedBuffer.from("a"), ImportedBuffer.from("b")]).toString(),
      isBuffer: ImportedBuffer.isBuffer(ImportedBuffer.alloc(2)) && ImportedBuffer.alloc(2) instanceof Uint8Array,
      // The globals, without an import. PartyKit's build injects both as module objects:
      // `Buffer` is node:buffer's namespace, `global` is { default: globalThis }.
      freeBuffer: (() => {
        try {
          return Buffer === ImportedBuffer && Buffer.from("x").toString("hex");
        } catch (e) {
          return (e as Error).message;
        }
      })(),
      heard,
      format: util.format("%s=%d", "n", 4),
      join: path.join("/a", "b", "../c"),
      global: typeof global === "undefined" ? "undefined" : global === globalThis ? "globalThis" : `${typeof global}: ${Object.keys(global).slice(0, 6)}`,
    });
  }
}
