// State that outlives processes and memory: chat history across restarts, hibernated
// rooms waking with their connections, alarms set before a restart firing after it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PartySocket } from "partysocket";
import WS from "ws";
import { startServer, tempDir, nextMessage, opened, sleep } from "./harness.mjs";

async function metric(host, name) {
  const text = await (await fetch(`http://${host}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

test("chat history survives a restart of conclave dev", async () => {
  const dataDir = tempDir();
  let server = await startServer({ dataDir });
  const a = new PartySocket({ host: server.host, party: "chat", room: "lobby", id: "alice", WebSocket: WS });
  assert.deepEqual(JSON.parse(await nextMessage(a)), { type: "history", messages: [] });
  for (const text of ["first", "second"]) {
    const echoed = nextMessage(a);
    a.send(JSON.stringify({ type: "message", text }));
    await echoed;
  }
  a.close();
  await server.stop();

  server = await startServer({ dataDir });
  const b = new PartySocket({ host: server.host, party: "chat", room: "lobby", id: "bob", WebSocket: WS });
  const history = JSON.parse(await nextMessage(b));
  assert.equal(history.type, "history");
  assert.deepEqual(history.messages.map((m) => [m.id, m.from, m.text]), [[1, "alice", "first"], [2, "alice", "second"]]);
  const next = nextMessage(b);
  b.send(JSON.stringify({ type: "message", text: "third" }));
  assert.equal(JSON.parse(await next).id, 3);
  const res = await fetch(`http://${server.host}/parties/chat/lobby`);
  assert.equal((await res.json()).messages.length, 3);
  b.close();
  await server.stop();
  server.cleanup();
});

test("a hibernated room wakes with its connections, tags and state", async () => {
  const server = await startServer({ args: ["--hibernate-after-ms", "300"] });
  const host = server.host;
  const ann = new PartySocket({ host, party: "presence", room: "p", id: "ann", query: { name: "Ann" }, WebSocket: WS });
  await nextMessage(ann);
  const ben = new PartySocket({ host, party: "presence", room: "p", id: "ben", query: { name: "Ben" }, WebSocket: WS });
  await nextMessage(ben);
  const red = new PartySocket({ host, room: "tags", id: "red", query: { tags: "red,warm" }, WebSocket: WS });
  const blue = new PartySocket({ host, room: "tags", id: "blue", query: { tags: "blue" }, WebSocket: WS });
  await Promise.all([opened(red), opened(blue)]);
  await sleep(100);

  // Idle past the hibernation delay: no room is in memory, both still hold connections.
  let active;
  for (let i = 0; i < 40 && active !== 0; i++) {
    await sleep(100);
    active = await metric(host, "conclave_rooms_active");
  }
  assert.equal(active, 0, "rooms should have hibernated");
  assert.equal(await metric(host, "conclave_rooms_hibernated"), 2);

  const update = nextMessage(ann, 5000, (d) => d.includes('"busy"'));
  ben.send(JSON.stringify({ type: "status", status: "busy" }));
  assert.deepEqual(JSON.parse(await update), {
    type: "presence",
    users: { ann: { name: "Ann", status: "online" }, ben: { name: "Ben", status: "busy" } },
  });
  const info = await (await fetch(`http://${host}/parties/main/tags?tag=red`)).json();
  assert.deepEqual(info, { party: "main", room: "tags", connections: 2, tagged: 1 });
  const got = nextMessage(blue);
  red.send("still here");
  assert.equal(await got, "still here");
  for (const s of [ann, ben, red, blue]) s.close();
  await server.stop();
  server.cleanup();
});

test("an alarm set before a restart fires after it", async () => {
  const dataDir = tempDir();
  let server = await startServer({ bin: "custom-party", dataDir });
  const s = new PartySocket({ host: server.host, party: "reminders", room: "r", id: "me", WebSocket: WS });
  const scheduled = nextMessage(s);
  s.send(JSON.stringify({ in_ms: 1500, text: "stand up" }));
  assert.equal(JSON.parse(await scheduled).type, "scheduled");
  s.close();
  await server.stop();
  await sleep(1700); // due while no process runs

  server = await startServer({ bin: "custom-party", dataDir });
  let state;
  for (let i = 0; i < 50; i++) {
    state = await (await fetch(`http://${server.host}/parties/reminders/r`)).json();
    if (state.fired.length) break;
    await sleep(100);
  }
  assert.deepEqual(state.fired.map((r) => r.text), ["stand up"]);
  assert.deepEqual(state.pending, []);
  await server.stop();
  server.cleanup();
});
