// Work a handler starts without awaiting it: a `.then` in onConnect, and an async timer
// callback that reads and writes storage before it broadcasts. PartyKit runs both with
// the room as any other code.
import type * as Party from "partykit/server";

export default class Late implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection) {
    void this.room.storage.put("greeting", "hello");
    void this.room.storage.get<string>("greeting").then((g) => conn.send(`then: ${g}`));
  }

  onMessage(message: string | ArrayBuffer | ArrayBufferView) {
    if (message !== "timer") return;
    setTimeout(async () => {
      const n = ((await this.room.storage.get<number>("n")) ?? 0) + 1;
      await this.room.storage.put("n", n);
      this.room.broadcast(`timer: ${n}`);
    }, 10);
  }
}
