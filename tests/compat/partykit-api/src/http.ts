// onRequest: JSON in and out, query strings, custom statuses and headers, binary bodies,
// empty responses, and a handler that throws. The path after the room picks the case.
import type * as Party from "partykit/server";

export default class Http implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname.split("/").slice(4).join("/"); // after /parties/http/ROOM/
    switch (path) {
      case "query":
        return Response.json({
          method: req.method,
          path: url.pathname,
          x: url.searchParams.get("x"),
          ys: url.searchParams.getAll("y"),
          missing: url.searchParams.get("missing"),
          room: this.room.id,
          // Cloudflare's request properties: an object on PartyKit, also in dev.
          cf: typeof req.cf,
        });
      case "json": {
        const body = await req.json<{ name: string; n: number }>();
        return Response.json(
          { hello: body.name, twice: body.n * 2, contentType: req.headers.get("content-type") },
          { status: 201, headers: { "x-custom": "yes" } },
        );
      }
      case "teapot":
        return new Response("short and stout", {
          status: 418,
          headers: { "content-type": "text/x-teapot", "x-a": "1", "x-b": "two words" },
        });
      case "empty":
        return new Response(null, { status: 204 });
      case "bytes": {
        const got = new Uint8Array(await req.arrayBuffer());
        return new Response(got.map((b) => 255 - b), { headers: { "content-type": "application/octet-stream" } });
      }
      case "headers": {
        const h = new Headers({ "Content-Type": "text/plain" });
        h.append("x-multi", "1");
        h.append("x-multi", "2");
        return Response.json({
          seen: req.headers.get("x-request-header"),
          built: [...h],
          multi: h.get("x-multi"),
          has: h.has("CONTENT-TYPE"),
        });
      }
      case "redirect":
        return Response.redirect("https://example.com/elsewhere", 302);
      case "throw":
        throw new Error("boom in onRequest");
      case "throw-code":
        // PartyKit answers a thrown error's numeric `code` as the status.
        throw Object.assign(new Error("no such thing"), { code: 404 });
      default:
        return new Response(`no route ${path}`, { status: 404 });
    }
  }
}
