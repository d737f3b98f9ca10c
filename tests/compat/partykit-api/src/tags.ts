// getConnectionTags and room.getConnections(tag): tags come from ?teams=a,b. Messages:
// "who TAG" → the ids tagged TAG; "to TAG TEXT" → TEXT to each of them; "dm ID TEXT" →
// TEXT to that one connection; "uri" → the sender's uri. Leaving is announced.
import type * as Party from "partykit/server";

export default class Tags implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  getConnectionTags(_conn: Party.Connection, ctx: Party.ConnectionContext) {
    const teams = new URL(ctx.request.url).searchParams.get("teams");
    return teams ? teams.split(",") : [];
  }

  onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    if (typeof message !== "string") return;
    const [cmd, arg = "", ...rest] = message.split(" ");
    const text = rest.join(" ");
    if (cmd === "who") {
      const ids = [...this.room.getConnections(arg)].map((c) => c.id).sort();
      sender.send(JSON.stringify({ who: arg, ids }));
    } else if (cmd === "to") {
      for (const c of this.room.getConnections(arg)) c.send(`${sender.id} to ${arg}: ${text}`);
    } else if (cmd === "dm") {
      const target = this.room.getConnection(arg);
      if (target) target.send(`${sender.id} to you: ${text}`);
      else sender.send(`no connection ${arg}`);
    } else if (cmd === "uri") {
      sender.send(JSON.stringify({ uri: sender.uri }));
    }
  }

  onClose(conn: Party.Connection) {
    this.room.broadcast(`left ${conn.id}`);
  }
}
