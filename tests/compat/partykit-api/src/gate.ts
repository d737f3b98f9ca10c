// Static onBeforeConnect / onBeforeRequest: they run before the room is reached. A Response
// refuses (its status and body go to the client), a throw refuses with 401 and the error
// message, a Request goes on to the room (here with a header the room then reads). With
// `mode=timer` each check leaves a long timer behind, as a fetch's `AbortSignal.timeout` does.
import type * as Party from "partykit/server";

export default class Gate implements Party.Server {
  static async onBeforeConnect(req: Party.Request, lobby: Party.Lobby) {
    const mode = new URL(req.url).searchParams.get("mode");
    if (mode === "refuse") return new Response("no", { status: 403 });
    if (mode === "throw") throw new Error("bad token");
    if (mode === "timer") setTimeout(() => {}, 600_000);
    if (mode === "ask") {
      // Another room, reached from outside any room.
      const answer = await lobby.parties.main.get(`asked-by-${lobby.id}`).fetch();
      req.headers.set("x-gate", await answer.text());
      return req;
    }
    req.headers.set("x-gate", `connect to ${lobby.id}`);
    return req;
  }

  static async onBeforeRequest(req: Party.Request, lobby: Party.Lobby) {
    const mode = new URL(req.url).searchParams.get("mode");
    if (mode === "refuse") return new Response("no", { status: 403 });
    if (mode === "throw") throw new Error("bad key");
    if (mode === "timer") setTimeout(() => {}, 600_000);
    const headers = new Headers(req.headers);
    if (mode === "ask") {
      const answer = await lobby.parties.main.get(`asked-by-${lobby.id}`).fetch("/sub", { method: "PUT" });
      headers.set("x-gate", await answer.text());
      return new Request(req, { headers });
    }
    headers.set("x-gate", `request to ${lobby.id}`);
    return new Request(req, { headers });
  }

  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    conn.send(JSON.stringify({ gate: ctx.request.headers.get("x-gate"), mode: new URL(ctx.request.url).searchParams.get("mode") }));
  }

  async onRequest(req: Party.Request) {
    return Response.json({ gate: req.headers.get("x-gate"), method: req.method, body: await req.text() });
  }
}
