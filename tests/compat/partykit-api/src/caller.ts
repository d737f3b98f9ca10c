// Room to room: this room calls a room of the party `other` through
// room.context.parties.other.get(id).fetch(…). POST /direct/ID returns the other room's
// Response as it is; POST /wrap/ID describes it; POST /init/ID calls with an init alone
// and describes the answer; a message "call ID TEXT" sends the
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

  // The other form PartyKit's templates use: an init alone, for the room's own URL.
  callWithInit(target: string, body: string) {
    return this.room.context.parties.other.get(target).fetch({ method: "POST", body });
  }

  async onRequest(req: Party.Request) {
    const [, , , , kind, target] = new URL(req.url).pathname.split("/"); // /parties/caller/ROOM/KIND/TARGET
    if (kind === "init") return Response.json(await this.describe(await this.callWithInit(target, await req.text())));
    const res = await this.call(target, await req.text());
    if (kind === "direct") return res;
    return Response.json(await this.describe(res));
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const [, target, ...text] = (message as string).split(" ");
    sender.send(JSON.stringify(await this.describe(await this.call(target, text.join(" ")))));
  }
}
