// The callee of caller.ts: describes each request it gets, counts calls in storage, and
// answers 201 with an x-other header.
import type * as Party from "partykit/server";

export default class Other implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request) {
    const url = new URL(req.url);
    const calls = ((await this.room.storage.get<number>("calls")) ?? 0) + 1;
    await this.room.storage.put("calls", calls);
    return Response.json(
      {
        party: this.room.name,
        room: this.room.id,
        method: req.method,
        path: url.pathname,
        via: url.searchParams.get("via"),
        from: req.headers.get("x-from"),
        body: await req.text(),
        calls,
      },
      { status: 201, headers: { "x-other": "yes" } },
    );
  }
}
