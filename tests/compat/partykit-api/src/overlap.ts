// A room's events overlap where a handler waits on something other than storage: a
// timer, a fetch. A Durable Object's input gate opens then, so PartyKit takes the room's
// next event meanwhile; storage calls and `room.blockConcurrencyWhile` keep it shut.
import type * as Party from "partykit/server";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export default class Overlap implements Party.Server {
  early: Promise<string> | undefined;
  /** Ends the wait of an `onRequest` (`?until-message`). */
  release: ((value: string) => void) | undefined;

  constructor(readonly room: Party.Room) {}

  onStart() {
    // Work onStart leaves running, which onConnect then awaits. (A fetch of another room
    // here holds partykit dev up for 10 s or more.)
    if (this.room.id.startsWith("early")) {
      this.early = sleep(300).then(() => "slowly");
    }
  }

  async onConnect(conn: Party.Connection) {
    if (!this.early) return;
    // A timer of its own, unrelated to what it awaits (as AbortSignal.timeout leaves one).
    const unrelated = setTimeout(() => {}, 5000);
    conn.send(`early ${await this.early}`);
    clearTimeout(unrelated);
  }

  slowRoom() {
    return this.room.context.parties.overlap.get(`${this.room.id}-slow`).fetch({ method: "POST" });
  }

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const [verb, arg] = String(message).split(":");
    switch (verb) {
      case "sleep": {
        await this.room.storage.put("before", arg);
        sender.send(`sleeping ${arg}`);
        await sleep(400);
        await this.room.storage.put("after", arg);
        sender.send(`woke ${arg}`);
        return;
      }
      case "fetch": {
        sender.send("fetching");
        const res = await this.slowRoom();
        sender.send(`fetched ${await res.text()}`);
        return;
      }
      case "block": {
        await this.room.blockConcurrencyWhile(async () => {
          await sleep(400);
        });
        sender.send("unblocked");
        return;
      }
      case "block-unawaited": {
        void this.room.blockConcurrencyWhile(async () => {
          await sleep(400);
          sender.send("unblocked");
        });
        return;
      }
      case "nested": {
        await this.room.blockConcurrencyWhile(() => this.room.blockConcurrencyWhile(() => sleep(100)));
        sender.send("nested done");
        return;
      }
      case "txn": {
        // A transaction that waits on a timer, then rolls back: nothing of it stands.
        await this.room.storage.transaction(async (txn) => {
          await txn.put("txn", arg);
          await sleep(200);
          txn.rollback();
        });
        sender.send(`txn ${await this.room.storage.get("txn")}`);
        return;
      }
      case "fetch-then-txn": {
        await (await this.slowRoom()).text();
        await this.room.storage.transaction(async (txn) => {
          await txn.put("txn", arg);
          await sleep(200);
          txn.rollback();
        });
        sender.send(`txn after fetch ${await this.room.storage.get("txn")}`);
        return;
      }
      case "block-then-throw": {
        void this.room.blockConcurrencyWhile(() => sleep(200));
        throw new Error("failed while holding the room");
      }
      case "fail-later": {
        await sleep(50);
        throw new Error("failed after a timer");
      }
      case "read": {
        const [before, after] = await Promise.all([this.room.storage.get("before"), this.room.storage.get("after")]);
        sender.send(`read ${before} ${after}`);
        return;
      }
      case "release": {
        this.release?.(arg);
        return;
      }
      case "read-request": {
        sender.send(`request ${await this.room.storage.get("request")}`);
        return;
      }
      case "ping":
        sender.send("pong");
    }
  }

  async onRequest(req: Party.Request) {
    const params = new URL(req.url).searchParams;
    if (params.has("until-message")) {
      // Waits for a message to the room, which the room takes meanwhile.
      await this.room.storage.put("request", "waiting");
      const released = new Promise<string>((resolve) => {
        this.release = resolve;
      });
      this.room.broadcast("request waiting");
      const value = await released;
      await this.room.storage.put("request", value);
      return new Response(`released ${value}`);
    }
    if (params.has("throw-later")) {
      await sleep(50);
      throw Object.assign(new Error("thrown after a timer"), { code: 418 });
    }
    const wait = params.has("wait");
    await sleep(wait ? 600 : 400);
    return new Response(wait ? "waited" : "slowly");
  }
}
