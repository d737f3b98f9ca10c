// PartySocket against the relay party: URL shapes, ids, queued sends, fetch.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PartySocket } from "partysocket";
import LegacyPartySocket from "partysocket-legacy";
import WS from "ws";
import { startServer, nextMessage, collect, opened, rawConnect, closed, sleep, bytesOf } from "./harness.mjs";

let server;
const sockets = [];
function ps(opts) {
  const s = new PartySocket({ host: server.host, WebSocket: WS, ...opts });
  sockets.push(s);
  return s;
}

before(async () => {
  server = await startServer({ args: ["--max-frame-bytes", "4096"] });
});
after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
  server.cleanup();
});

test("partysocket 1.x (/parties/main/:room) and 0.0.x (/party/:room) share a room", async () => {
  const modern = ps({ room: "shapes", id: "modern" });
  const Legacy = LegacyPartySocket.default ?? LegacyPartySocket;
  const legacy = new Legacy({ host: server.host, room: "shapes", id: "legacy", WebSocket: WS });
  sockets.push(legacy);
  await Promise.all([opened(modern), opened(legacy)]);
  assert.match(modern.url, /\/parties\/main\/shapes\?_pk=modern/);
  assert.match(legacy.url, /\/party\/shapes\?_pk=legacy/);
  const got = nextMessage(modern);
  legacy.send("from legacy");
  assert.equal(await got, "from legacy");
  const back = nextMessage(legacy);
  modern.send("from modern");
  assert.equal(await back, "from modern");
});

test("_pk becomes the connection id", async () => {
  const s = ps({ room: "ids", party: "chat", id: "user-123" });
  await nextMessage(s); // history
  const echoed = nextMessage(s);
  s.send(JSON.stringify({ type: "message", text: "who am i" }));
  assert.equal(JSON.parse(await echoed).from, "user-123");
});

test("messages sent before open arrive", async () => {
  const listener = ps({ room: "early", id: "listener" });
  await opened(listener);
  const got = collect(listener, 1000);
  const sender = ps({ room: "early", id: "sender" });
  sender.send("one");
  sender.send("two");
  assert.deepEqual(await got, ["one", "two"]);
});

test("relay sends to everyone but the sender, text as text and binary as binary", async () => {
  const [a, b, c] = ["a", "b", "c"].map((id) => ps({ room: "fanout", id }));
  await Promise.all([a, b, c].map((s) => opened(s)));
  const [ga, gb, gc] = [a, b, c].map((s) => collect(s, 800));
  a.send("text hello");
  a.send(new Uint8Array([1, 2, 3]));
  const [ra, rb, rc] = await Promise.all([ga, gb, gc]);
  assert.deepEqual(ra, []);
  for (const r of [rb, rc]) {
    assert.equal(r.length, 2);
    assert.equal(r[0], "text hello");
    assert.notEqual(typeof r[1], "string");
    assert.deepEqual([...(await bytesOf(r[1]))], [1, 2, 3]);
  }
});

test("PartySocket.fetch GET describes the room, POST broadcasts the body", async () => {
  const a = ps({ room: "http-room", id: "a" });
  await opened(a);
  const res = await PartySocket.fetch({ host: server.host, room: "http-room" }, {});
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { party: "main", room: "http-room", connections: 1 });
  const got = nextMessage(a);
  const post = await PartySocket.fetch({ host: server.host, room: "http-room", path: "sub/path" }, { method: "POST", body: "posted" });
  assert.equal(post.status, 200);
  assert.equal(await got, "posted");
});

test("an unknown party is a 404 for sockets and requests", async () => {
  const r = await rawConnect(`ws://${server.host}/parties/nope/room`);
  assert.equal(r.status, 404);
  assert.equal(r.body, "Party nope not found");
  const res = await fetch(`http://${server.host}/parties/nope/room`);
  assert.equal(res.status, 404);
  assert.equal(await res.text(), "Party nope not found");
});

test("an oversized frame closes the socket with 1009", async () => {
  const { ws } = await rawConnect(`ws://${server.host}/parties/main/big?_pk=big`);
  const c = closed(ws);
  ws.send("x".repeat(10000));
  assert.equal((await c).code, 1009);
  // The server keeps serving.
  const { status } = await rawConnect(`ws://${server.host}/parties/main/big?_pk=after`);
  assert.equal(status, 101);
});

test("the first offered subprotocol is echoed", async () => {
  const { ws, status } = await rawConnect(`ws://${server.host}/parties/main/proto`, ["proto-a", "proto-b"]);
  assert.equal(status, 101);
  assert.equal(ws.protocol, "proto-a");
  ws.close();
  const s = ps({ room: "proto", id: "p", protocols: ["chat-v1"] });
  await opened(s);
  assert.equal(s.protocol, "chat-v1");
  await sleep(10);
});
