// The site's server: its static files come first (serve in partykit.json), then this
// static onFetch, then public/404.html. Rooms and onFetch read the files too
// (`room.context.assets`, `lobby.assets`).
import type * as Party from "partykit/server";

export default class Site implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request) {
    if (this.room.id === "cron-log") {
      // What onCron reported, in order.
      const runs = (await this.room.storage.get<unknown[]>("runs")) ?? [];
      if (req.method === "POST") {
        runs.push(await req.json());
        await this.room.storage.put("runs", runs);
      }
      return Response.json(runs);
    }
    const file = await this.room.context.assets.fetch("/data.json");
    return new Response(file === null ? "no file" : `room ${this.room.id} read ${await file.text()}`);
  }

  // A cron trigger (crons in partykit.json): reported to the room cron-log.
  static async onCron(cron: Party.Cron, lobby: Party.CronLobby) {
    const report = { name: cron.name, cron: cron.cron, scheduledTime: cron.scheduledTime, env: typeof lobby.env };
    await lobby.parties.main.get("cron-log").fetch({ method: "POST", body: JSON.stringify(report) });
  }

  static async onFetch(req: Party.Request, lobby: Party.FetchLobby) {
    const url = new URL(req.url);
    if (url.pathname === "/api/hello") return new Response(`hello from onFetch, ${req.method}`);
    if (url.pathname === "/api/asset") {
      const file = await lobby.assets.fetch("/data.json");
      const missing = await lobby.assets.fetch("/no-such-file.txt");
      return Response.json({
        status: file?.status,
        type: file?.headers.get("content-type"),
        text: await file?.text(),
        missing,
      });
    }
    // Anything else: no answer, so the site's 404 page answers.
    return undefined as unknown as Response;
  }
}
