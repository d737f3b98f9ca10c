// A room whose onMessage asks an outside HTTP service before it answers (an AI or
// moderation call, a webhook): the message is the URL to fetch, and the answer is
// broadcast. For scripts/awaiting-handler.mjs (docs/benchmarks.md).
import type * as Party from "partykit/server";

export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onMessage(message: string | ArrayBuffer | ArrayBufferView) {
    const res = await fetch(String(message));
    this.room.broadcast(await res.text());
  }
}
