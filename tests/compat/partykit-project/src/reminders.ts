// reminders: a client sends {"in_ms": 500, "text": "stand up"}; the room stores the
// reminder, sets its alarm and answers {"type":"scheduled","at"}. When the alarm fires
// (also after a restart, also if the room slept in between) every connection gets
// {"type":"reminder","text"} and the reminder is recorded as fired.
// Any HTTP request → {"fired":[…],"pending":[…]}.
//
// The TypeScript twin of the `reminders` party of examples/custom-party (the one the
// persistence test uses for alarms across restarts).
import type * as Party from "partykit/server";

type Reminder = { at: number; text: string };

export default class Reminders implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  constructor(readonly room: Party.Room) {}

  async onMessage(message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    let req: { in_ms?: unknown; text?: unknown } | null;
    try {
      req = JSON.parse(typeof message === "string" ? message : "null");
    } catch (e) {
      // The Rust party fails the handler here: nothing is stored, nothing is sent.
      console.warn("reminders: not JSON", e);
      return;
    }
    const inMs = req?.in_ms;
    const text = req?.text;
    if (!Number.isInteger(inMs) || typeof text !== "string") {
      sender.send(JSON.stringify({ error: 'send {"in_ms":N,"text":"…"}', type: "error" }));
      return;
    }
    const at = Date.now() + Math.max(inMs as number, 0);
    const pending = (await this.room.storage.get<Reminder[]>("pending")) ?? [];
    pending.push({ at, text });
    pending.sort((a, b) => a.at - b.at);
    await this.room.storage.put("pending", pending);
    await this.room.storage.setAlarm(pending[0].at);
    sender.send(JSON.stringify({ at, type: "scheduled" }));
  }

  // Room.id is not available here on PartyKit, and not needed.
  async onAlarm() {
    const now = Date.now();
    const pending = (await this.room.storage.get<Reminder[]>("pending")) ?? [];
    const due = pending.filter((r) => r.at <= now);
    const later = pending.filter((r) => r.at > now);
    const fired = (await this.room.storage.get<Reminder[]>("fired")) ?? [];
    for (const r of due) {
      this.room.broadcast(JSON.stringify({ text: r.text, type: "reminder" }));
      fired.push(r);
    }
    await this.room.storage.put({ fired, pending: later });
    if (later.length > 0) await this.room.storage.setAlarm(later[0].at);
  }

  async onRequest() {
    const pending = (await this.room.storage.get<Reminder[]>("pending")) ?? [];
    const fired = (await this.room.storage.get<Reminder[]>("fired")) ?? [];
    return Response.json({ fired, pending });
  }
}
