// The older object API (`PartyKitServer`): handlers get the room as an argument, and
// onConnect listens on the socket itself. Without `onMessage` this party does not
// hibernate on PartyKit: the listeners and `seen` below live as long as the connection.
import type * as Party from "partykit/server";

export default {
  onConnect(ws, room) {
    let seen = 0; // per connection, in memory
    ws.send(`welcome ${ws.id} to ${room.name}/${room.id}`);
    ws.addEventListener("message", (event) => {
      seen++;
      const data = typeof event.data === "string" ? event.data : `${event.data.byteLength} bytes`;
      ws.send(`#${seen} ${data}`);
      room.broadcast(`${ws.id} said ${data}`, [ws.id]);
    });
  },

  async onRequest(req, room) {
    const ids = [...room.getConnections()].map((c) => c.id).sort();
    return new Response(`${req.method} ${room.name}/${room.id}: ${ids.join(",")}`);
  },

  // Requests outside /parties/ (the main party's only): no room, the project's env.
  async onFetch(req, lobby, ctx) {
    const url = new URL(req.url);
    if (url.pathname === "/outside/throw") throw Object.assign(new Error("no such page"), { code: 404 });
    if (url.pathname === "/outside/never") return new Promise<Response>(() => {});
    if (url.pathname === "/outside/forever") {
      ctx.waitUntil(new Promise(() => {}));
      return new Response("answered anyway");
    }
    if (url.pathname === "/outside/later") {
      // Work handed to waitUntil still runs: it asks another room, which counts the calls.
      ctx.waitUntil(lobby.parties.other.get("waited-for").fetch({ method: "POST" }));
      return new Response("answered");
    }
    if (url.pathname === "/outside/lobby-parties") {
      const answer = await lobby.parties.main.get("from-outside").fetch({ method: "DELETE" });
      return new Response(`asked: ${await answer.text()}`);
    }
    return Response.json(
      { method: req.method, path: url.pathname, query: url.search, body: await req.text(), env: lobby.env.GREETING ?? null },
      { status: 203, headers: { "x-on-fetch": "yes" } },
    );
  },
} satisfies Party.PartyKitServer;
