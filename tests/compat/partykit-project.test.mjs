// The built-in parties (node/src/parties, and examples/custom-party's `reminders`) and their
// TypeScript twins in tests/compat/partykit-project, written against `partykit/server`,
// answer the same on the wire: the same messages (byte for byte where no clock or id is
// in them), HTTP statuses, content types and bodies, the same storage semantics.
//
// By default the twins run on Conclave's JavaScript runtime (`conclave dev --project`).
// COMPAT_AGAINST=builtins runs the same checks against the Rust parties (the
// `custom-party` binary: the built-ins plus `reminders`), and COMPAT_AGAINST=partykit
// against PartyKit's own dev server on the same project.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, startProject, startPartykit, partyClient, tempDir, sleep } from "./harness.mjs";

const project = resolve(dirname(fileURLToPath(import.meta.url)), "partykit-project");
const against = process.env.COMPAT_AGAINST ?? "conclave";
const onPartykit = against === "partykit";

/** A server for these checks; `dataDir` (kept across a restart) and extra `args`. */
function start({ dataDir = tempDir(), args = [] } = {}) {
  if (onPartykit) return startPartykit(project, { persist: dataDir });
  if (against === "builtins") return startServer({ bin: "custom-party", dataDir, args });
  return startProject(project, { dataDir, args });
}

let server;
const sockets = [];

before(async () => {
  server = await start();
});
after(async () => {
  for (const s of sockets) s.close();
  await server?.stop();
  server?.cleanup();
});

/** A PartySocket on `host` whose messages are queued in arrival order (`partyClient`). */
function client(opts, host = server.host) {
  const c = partyClient({ host, ...opts });
  sockets.push(c.socket);
  return c;
}

async function bytes(data) {
  if (data instanceof Blob) return [...new Uint8Array(await data.arrayBuffer())];
  if (data instanceof ArrayBuffer) return [...new Uint8Array(data)];
  return [...new Uint8Array(data.buffer, data.byteOffset, data.byteLength)];
}

const url = (path, host = server.host) => `http://${host}/parties/${path}`;

/** Status, content type and body text of an HTTP answer. */
async function answer(path, init) {
  const res = await fetch(url(path), init);
  return [res.status, res.headers.get("content-type"), await res.text()];
}

const JSON_TYPE = "application/json";
const TEXT_TYPE = "text/plain; charset=utf-8";

// ---------------------------------------------------------------------------------------
// relay (`main`)

test("relay: every message goes to every other connection, text as text, binary as binary", async () => {
  const [a, b, c] = ["a", "b", "c"].map((id) => client({ room: "fanout", id }));
  await Promise.all([a, b, c].map((s) => new Promise((ok) => s.socket.addEventListener("open", ok, { once: true }))));
  a.send("text hello");
  a.send(new Uint8Array([1, 2, 3]));
  for (const s of [b, c]) assert.equal(await s.next(), "text hello");
  for (const s of [b, c]) {
    const bin = await s.next();
    assert.notEqual(typeof bin, "string");
    assert.deepEqual(await bytes(bin), [1, 2, 3]);
  }
  b.send("from b");
  // `a` did not get its own two messages back (they would have come first), nor `b` its own.
  assert.equal(await a.next(), "from b");
  assert.equal(await c.next(), "from b");
  c.send("from c");
  assert.equal(await b.next(), "from c");
});

test("relay: GET describes the room (and ?tag= counts), POST broadcasts, other methods are 405", async () => {
  const one = client({ room: "http-room", id: "one", query: { tags: "red,,warm" } });
  const two = client({ room: "http-room", id: "two", query: { tags: "blue" } });
  await Promise.all([one, two].map((s) => new Promise((ok) => s.socket.addEventListener("open", ok, { once: true }))));
  assert.deepEqual(await answer("main/http-room"), [200, JSON_TYPE, '{"connections":2,"party":"main","room":"http-room"}']);
  assert.deepEqual(await answer("main/http-room?tag=red"), [200, JSON_TYPE, '{"connections":2,"party":"main","room":"http-room","tagged":1}']);
  const tagged = async (tag) => JSON.parse((await answer(`main/http-room?tag=${tag}`))[2]).tagged;
  for (const [tag, n] of [["warm", 1], ["blue", 1], ["one", 1], ["green", 0], ["", 0]]) {
    assert.equal(await tagged(tag), n, `tag "${tag}"`); // the id is a tag too; "" is none
  }

  assert.deepEqual(await answer("main/http-room/sub/path", { method: "POST", body: "posted" }), [200, TEXT_TYPE, "OK"]);
  for (const s of [one, two]) assert.equal(await s.next(), "posted");
  await answer("main/http-room", { method: "POST", body: new Uint8Array([0xff, 0x00, 0x80]) }); // not UTF-8
  for (const s of [one, two]) assert.deepEqual(await bytes(await s.next()), [0xff, 0x00, 0x80]);
  // A byte order mark stays in the text.
  await answer("main/http-room", { method: "POST", body: new Uint8Array([0xef, 0xbb, 0xbf, 0x68, 0x69]) });
  for (const s of [one, two]) assert.equal(await s.next(), "\ufeffhi");
  assert.deepEqual(await answer("main/http-room", { method: "PUT" }), [405, TEXT_TYPE, "Method not allowed"]);
  // The legacy path serves the same party.
  assert.deepEqual(JSON.parse((await fetch(`http://${server.host}/party/http-room`).then((r) => r.text()))), {
    connections: 2,
    party: "main",
    room: "http-room",
  });
});

// ---------------------------------------------------------------------------------------
// chat

test("chat: history first, then messages with id, from and ts to everyone; GET lists them", async () => {
  const alice = client({ party: "chat", room: "lobby-1", id: "alice" });
  assert.equal(await alice.next(), '{"messages":[],"type":"history"}');
  const bob = client({ party: "chat", room: "lobby-1", id: "bob" });
  assert.equal(await bob.next(), '{"messages":[],"type":"history"}');
  const before = Date.now();
  alice.send(JSON.stringify({ type: "message", text: "hello" }));
  const raw = await alice.next();
  assert.equal(await bob.next(), raw);
  const m = JSON.parse(raw);
  assert.deepEqual(Object.keys(m), ["from", "id", "text", "ts", "type"]);
  assert.deepEqual([m.from, m.id, m.text, m.type], ["alice", 1, "hello", "message"]);
  assert.ok(m.ts >= before - 1000 && m.ts <= Date.now() + 1000, `ts ${m.ts}`);
  bob.send(JSON.stringify({ type: "message", text: "😀".repeat(4096) })); // characters, not UTF-16 units
  assert.equal(JSON.parse(await bob.next()).id, 2);
  assert.equal(JSON.parse(await alice.next()).id, 2);

  const carol = client({ party: "chat", room: "lobby-1", id: "carol" });
  const history = JSON.parse(await carol.next());
  assert.equal(history.type, "history");
  assert.deepEqual(history.messages.map((x) => [x.id, x.from]), [[1, "alice"], [2, "bob"]]);
  assert.deepEqual(history.messages[0], m);
  assert.deepEqual(await answer("chat/lobby-1", { method: "DELETE" }), [405, TEXT_TYPE, "Method not allowed"]);
  const [status, type, body] = await answer("chat/lobby-1");
  assert.deepEqual([status, type], [200, JSON_TYPE]);
  assert.deepEqual(JSON.parse(body), { messages: history.messages });
});

test("chat: mistakes are answered with an error to the sender only", async () => {
  const s = client({ party: "chat", room: "errors-1", id: "e" });
  await s.next(); // history
  const error = (e) => JSON.stringify({ error: e, type: "error" });
  const cases = [
    [JSON.stringify({ type: "nope" }), error('unknown message type "nope"')],
    [JSON.stringify({ type: "message", text: "" }), error("text must be 1 to 4096 characters, got 0")],
    [JSON.stringify({ type: "message" }), error("text must be 1 to 4096 characters, got 0")],
    [JSON.stringify({ type: "message", text: "x".repeat(4097) }), error("text must be 1 to 4096 characters, got 4097")],
    [new Uint8Array([1]), error("binary messages are not supported")],
  ];
  for (const [sent, expected] of cases) {
    s.send(sent);
    assert.equal(await s.next(), expected);
  }
  // The wording after "invalid JSON: " is the parser's own (serde_json's in Rust).
  for (const sent of ["not json", JSON.stringify({ text: "no type" }), JSON.stringify({ type: "message", text: 5 }), "7"]) {
    s.send(sent);
    const reply = JSON.parse(await s.next());
    assert.equal(reply.type, "error", sent);
    assert.match(reply.error, /^invalid JSON: /, sent);
  }
  assert.deepEqual(JSON.parse((await answer("chat/errors-1"))[2]), { messages: [] });
});

test("chat: history survives a restart and ids go on from it", async () => {
  const dataDir = tempDir();
  let own = await start({ dataDir });
  try {
    const a = client({ party: "chat", room: "restart", id: "alice" }, own.host);
    assert.deepEqual(await a.json(), { type: "history", messages: [] });
    for (const text of ["first", "second"]) {
      a.send(JSON.stringify({ type: "message", text }));
      await a.next();
    }
    a.close();
    await own.stop();
    own = await start({ dataDir });
    const b = client({ party: "chat", room: "restart", id: "bob" }, own.host);
    const history = await b.json();
    assert.deepEqual(history.messages.map((m) => [m.id, m.from, m.text]), [[1, "alice", "first"], [2, "alice", "second"]]);
    b.send(JSON.stringify({ type: "message", text: "third" }));
    assert.equal((await b.json()).id, 3);
    b.close();
  } finally {
    await own.stop();
    own.cleanup();
  }
});

// ---------------------------------------------------------------------------------------
// presence

test("presence: joins, status changes and leaves go to everyone; names from ?name=", async () => {
  const users = (u) => JSON.stringify({ type: "presence", users: u });
  const ann = client({ party: "presence", room: "p-1", id: "ann", query: { name: "Ann" } });
  assert.equal(await ann.next(), users({ ann: { name: "Ann", status: "online" } }));
  const ben = client({ party: "presence", room: "p-1", id: "ben" }); // no name: the id
  const both = users({ ann: { name: "Ann", status: "online" }, ben: { name: "ben", status: "online" } });
  assert.equal(await ann.next(), both);
  assert.equal(await ben.next(), both);
  ben.send(JSON.stringify({ type: "status", status: "busy" }));
  const busy = users({ ann: { name: "Ann", status: "online" }, ben: { name: "ben", status: "busy" } });
  assert.equal(await ann.next(), busy);
  assert.equal(await ben.next(), busy);
  ben.send(JSON.stringify({ type: "status" }));
  assert.equal(await ben.next(), JSON.stringify({ error: 'expected {"type":"status","status":"…"}', type: "error" }));
  ben.send("not json");
  assert.equal(JSON.parse(await ben.next()).type, "error");
  // (Not much longer: PartyKit keeps the uri and the state in one 2 KiB socket attachment.)
  const long = client({ party: "presence", room: "p-1", id: "cy", query: { name: "n".repeat(250) + "é".repeat(50) } });
  const three = JSON.parse(await long.next());
  assert.equal(three.users.cy.name, "n".repeat(250) + "é".repeat(6)); // clipped to 256 characters
  await ann.next();
  await ben.next();
  long.close();
  assert.equal(await ann.next(), busy);
  ben.close();
  assert.equal(await ann.next(), users({ ann: { name: "Ann", status: "online" } }));
  assert.deepEqual(await answer("presence/p-1"), [404, TEXT_TYPE, "This party does not handle HTTP requests"]);
});

test("presence and relay tags: a hibernated room wakes with its connections, tags and state", { skip: onPartykit && "partykit dev decides itself when to evict" }, async () => {
  const own = await start({ args: ["--hibernate-after-ms", "300"] });
  try {
    const ann = client({ party: "presence", room: "p", id: "ann", query: { name: "Ann" } }, own.host);
    await ann.next();
    const ben = client({ party: "presence", room: "p", id: "ben", query: { name: "Ben" } }, own.host);
    await ben.next();
    await ann.next();
    const red = client({ room: "tags", id: "red", query: { tags: "red,warm" } }, own.host);
    const blue = client({ room: "tags", id: "blue", query: { tags: "blue" } }, own.host);
    await Promise.all([red, blue].map((s) => new Promise((ok) => s.socket.addEventListener("open", ok, { once: true }))));
    let hibernated;
    for (let i = 0; i < 80 && hibernated !== 2; i++) {
      await sleep(50);
      const text = await (await fetch(`http://${own.host}/metrics`)).text();
      hibernated = Number(text.split("\n").find((l) => l.startsWith("conclave_rooms_hibernated "))?.split(" ")[1]);
    }
    assert.equal(hibernated, 2, "both rooms should have hibernated");
    ben.send(JSON.stringify({ type: "status", status: "busy" }));
    assert.deepEqual(await ann.json(), {
      type: "presence",
      users: { ann: { name: "Ann", status: "online" }, ben: { name: "Ben", status: "busy" } },
    });
    const info = await (await fetch(url("main/tags?tag=red", own.host))).json();
    assert.deepEqual(info, { party: "main", room: "tags", connections: 2, tagged: 1 });
    red.send("still here");
    assert.equal(await blue.next(), "still here");
  } finally {
    await own.stop();
    own.cleanup();
  }
});

// ---------------------------------------------------------------------------------------
// counter

test("counter: incr and get answer the durable value; anything else is an error; GET reads it", async () => {
  const s = client({ party: "counter", room: "c-1", id: "x" });
  s.send("incr");
  assert.equal(await s.next(), '{"type":"count","value":1}');
  s.send("incr");
  assert.equal(await s.next(), '{"type":"count","value":2}');
  s.send("get");
  assert.equal(await s.next(), '{"type":"count","value":2}');
  s.send("nope");
  assert.equal(await s.next(), '{"error":"send \\"incr\\" or \\"get\\"","type":"error"}');
  s.send(new TextEncoder().encode("incr")); // binary is not the text "incr"
  assert.equal(JSON.parse(await s.next()).type, "error");
  assert.deepEqual(await answer("counter/c-1", { method: "POST" }), [405, TEXT_TYPE, "Method not allowed"]);
  assert.deepEqual(await answer("counter/c-1"), [200, JSON_TYPE, '{"value":2}']);
  assert.deepEqual(await answer("counter/never-used"), [200, JSON_TYPE, '{"value":0}']);
});

// ---------------------------------------------------------------------------------------
// reminders (alarms)

test("reminders: the alarm fires onAlarm, which tells everyone and records the reminder", async () => {
  const s = client({ party: "reminders", room: "r-1", id: "me" });
  s.send(JSON.stringify({ in_ms: 200, text: "stand up" }));
  const scheduled = await s.json();
  assert.deepEqual(Object.keys(scheduled), ["at", "type"]);
  assert.equal(scheduled.type, "scheduled");
  assert.equal(await s.next(4000), '{"text":"stand up","type":"reminder"}');
  const [status, type, body] = await answer("reminders/r-1");
  assert.deepEqual([status, type], [200, JSON_TYPE]);
  assert.equal(body, `{"fired":[{"at":${scheduled.at},"text":"stand up"}],"pending":[]}`);
  s.send(JSON.stringify({ in_ms: 1.5, text: "x" }));
  assert.equal(await s.next(), '{"error":"send {\\"in_ms\\":N,\\"text\\":\\"…\\"}","type":"error"}');
});

test("reminders: an alarm due while the server was down fires after the restart", { skip: onPartykit && "partykit dev forgets alarms when it restarts" }, async () => {
  const dataDir = tempDir();
  let own = await start({ dataDir });
  try {
    const s = client({ party: "reminders", room: "r", id: "me" }, own.host);
    s.send(JSON.stringify({ in_ms: 500, text: "stand up" }));
    assert.equal((await s.json()).type, "scheduled");
    s.close();
    await own.stop();
    await sleep(600); // due while no process runs
    own = await start({ dataDir });
    let state;
    for (let i = 0; i < 50; i++) {
      state = await (await fetch(url("reminders/r", own.host))).json();
      if (state.fired.length) break;
      await sleep(50);
    }
    assert.deepEqual(state.fired.map((r) => r.text), ["stand up"]);
    assert.deepEqual(state.pending, []);
  } finally {
    await own.stop();
    own.cleanup();
  }
});
