// The peer for scripts/bench-side-by-side.sh: a PartyKit party that behaves like
// Conclave's built-in relay (every message goes to everyone else in the room).
import type * as Party from "partykit/server";

export default class Relay implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    this.room.broadcast(message as string | ArrayBuffer, [sender.id]);
  }
}
