// Message types: text arrives as a string, binary as an ArrayBuffer (or a view). Text is
// answered with a description; binary is sent back reversed, as binary.
import type * as Party from "partykit/server";

export default class Echo implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    if (typeof message === "string") {
      sender.send(JSON.stringify({ kind: "text", text: message, length: message.length }));
      return;
    }
    const bytes = message instanceof ArrayBuffer ? new Uint8Array(message) : new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    sender.send(JSON.stringify({ kind: "binary", arrayBuffer: message instanceof ArrayBuffer, bytes: [...bytes] }));
    sender.send(bytes.slice().reverse());
  }
}
