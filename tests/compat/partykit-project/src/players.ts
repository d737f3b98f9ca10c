// players: keeps its players in memory, as many PartyKit projects do (it does not
// hibernate). onConnect adds the connection (its ?name=, else its id), onClose takes it
// out; any message → "players id=name,…" (sorted; a connection appears once for each
// onConnect its instance ran for it).
//
// Not a twin of a built-in: cluster.test.mjs checks with it that a new instance hears
// onConnect for the sockets it inherits after its node was killed.
import type * as Party from "partykit/server";

type Player = { id: string; name: string };

export default class Players implements Party.Server {
  players: Player[] = [];

  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    const name = new URL(ctx.request.url).searchParams.get("name") ?? conn.id;
    this.players.push({ id: conn.id, name });
  }

  onClose(conn: Party.Connection) {
    this.players = this.players.filter((p) => p.id !== conn.id);
  }

  onMessage(_message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const list = this.players.map((p) => `${p.id}=${p.name}`).sort();
    sender.send(`players ${list.join(",")}`);
  }
}
