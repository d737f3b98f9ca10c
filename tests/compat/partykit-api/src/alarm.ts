// Alarms: {"op":"set","in":MS} sets the room's alarm MS from now, "get" and "delete" do
// what they say; each answers {"op","at"?,"alarm"} with getAlarm()'s value. When the alarm
// fires, onAlarm counts it in storage and tells everyone {"op":"fired","fired":N,"at"}.
// GET → {"alarm","fired"}.
import type * as Party from "partykit/server";

export default class Alarm implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const cmd = JSON.parse(message as string) as { op: string; in?: number };
    const storage = this.room.storage;
    if (cmd.op === "set") {
      const at = Date.now() + (cmd.in ?? 0);
      await storage.setAlarm(at);
      sender.send(JSON.stringify({ op: "set", at, alarm: await storage.getAlarm() }));
    } else if (cmd.op === "delete") {
      await storage.deleteAlarm();
      sender.send(JSON.stringify({ op: "delete", alarm: await storage.getAlarm() }));
    } else {
      sender.send(JSON.stringify({ op: "get", alarm: await storage.getAlarm() }));
    }
  }

  async onAlarm() {
    const fired = ((await this.room.storage.get<number>("fired")) ?? 0) + 1;
    await this.room.storage.put("fired", fired);
    this.room.broadcast(JSON.stringify({ op: "fired", fired, at: Date.now(), alarm: await this.room.storage.getAlarm() }));
  }

  async onRequest() {
    return Response.json({ alarm: await this.room.storage.getAlarm(), fired: (await this.room.storage.get<number>("fired")) ?? 0 });
  }
}
