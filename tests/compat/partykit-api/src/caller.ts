// Room to room: this room calls a room of the party `other` through
// room.context.parties.other.get(id).fetch(…). POST /direct/ID returns the other room's
// Response as it is; POST /wrap/ID describes it; a message "call ID TEXT" sends the
// description back over the socket.
import type * as Party from "partykit/server";

export default class Caller implements Party.Server {
  constructor(readonly room: Party.Room) {}

  call(target: string, body: string) {
    return this.room.context.parties.other.get(target).fetch("/echo?via=caller", {
      method: "POST",
      body,
      headers: { "content-type": "text/plain", "x-from": `${this.room.name}/${this.room.id}` },
    });
  }

  async describe(res: Response) {
    return { status: res.status, header: res.headers.get("x-other"), json: await res.json() };
  }

  async onRequest(req: Party.Request) {
    const [, , , , kind, target] = new URL(req.url).pathname.split("/"); // /parties/caller/ROOM/KIND/TARGET
    const res = await this.call(target, await req.text());
    if (kind === "direct") return res;
    return Response.json(await this.describe(res));
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const [, target, ...text] = (message as string).split(" ");
    sender.send(JSON.stringify(await this.describe(await this.call(target, text.join(" ")))));
  }
}
