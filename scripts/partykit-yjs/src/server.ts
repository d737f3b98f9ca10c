// The peer for scripts/bench-yjs.mjs: y-partykit's own Yjs server on PartyKit, persisting
// its documents in history mode (as Conclave's yjs party does by default).
import type * as Party from "partykit/server";
import { onConnect } from "y-partykit";

export default class YjsServer implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection) {
    return onConnect(conn, this.room, { persist: { mode: "history" } });
  }
}
