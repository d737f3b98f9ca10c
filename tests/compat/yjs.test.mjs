// Yjs documents with the real y-partykit (and y-partyserver) providers against the
// built-in `yjs` party kind:
// convergence, late joiners with nobody else online, awareness that clears on close, a
// document that survives a restart of conclave dev, a 5 MB document, read-only
// connections, custom messages, snapshot mode, the HTTP callback, hibernation; and
// examples/custom-party's `notes`, built on the yjs party's Rust API.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import YProvider from "y-partyserver/provider";
import WS from "ws";
import { startServer, tempDir, sleep } from "./harness.mjs";

function provider(host, room, doc = new Y.Doc(), options = {}) {
  const p = new YPartyKitProvider(host, room, doc, { party: "yjs", WebSocketPolyfill: WS, ...options });
  return { p, doc };
}

function partyserverProvider(host, room, options = {}) {
  const doc = new Y.Doc();
  return { p: new YProvider(host, room, doc, { party: "yjs", WebSocketPolyfill: WS, ...options }), doc };
}

async function hibernatedRooms(host) {
  const text = await (await fetch(`http://${host}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("conclave_rooms_hibernated "));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

/** `conclave dev` with TOML `config` as its config file. */
async function startWithConfig(config, opts = {}) {
  const dir = tempDir();
  const file = join(dir, "conclave.toml");
  writeFileSync(file, config);
  return startServer({ ...opts, args: ["--config", file, ...(opts.args ?? [])] });
}

/** Ends a client: the provider, and the document (whose awareness keeps a timer). */
function done({ p, doc }) {
  p.destroy();
  doc.destroy();
}

function synced({ p }) {
  return new Promise((resolve, reject) => {
    if (p.synced) return resolve();
    const t = setTimeout(() => reject(new Error("not synced in time")), 5000);
    p.on("synced", (s) => {
      if (s) {
        clearTimeout(t);
        resolve();
      }
    });
  });
}

async function until(check, what, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(20);
  }
  assert.fail(`${what} not within ${ms} ms`);
}

test("two y-partykit clients converge after concurrent edits; a late joiner alone gets the whole document", async () => {
  const server = await startServer();
  const a = provider(server.host, "doc1");
  const b = provider(server.host, "doc1");
  await Promise.all([synced(a), synced(b)]);
  const ta = a.doc.getText("t");
  const tb = b.doc.getText("t");
  // Concurrent edits: both sides write before seeing each other.
  ta.insert(0, "hello ");
  tb.insert(0, "world ");
  a.doc.getMap("m").set("k", 1);
  tb.delete(0, 1);
  await until(() => ta.toString() === tb.toString() && b.doc.getMap("m").get("k") === 1, "convergence");
  const final = ta.toString();
  assert.equal(final.length, "hello world ".length - 1);
  done(a);
  done(b);
  await sleep(100);

  const late = provider(server.host, "doc1");
  await synced(late);
  await until(() => late.doc.getText("t").toString() === final, "the late joiner's copy");
  assert.equal(late.doc.getMap("m").get("k"), 1);
  done(late);
  await server.stop();
  server.cleanup();
});

test("awareness reaches the others and clears when a client leaves", async () => {
  const server = await startServer();
  const a = provider(server.host, "aware");
  const b = provider(server.host, "aware");
  await Promise.all([synced(a), synced(b)]);
  a.p.awareness.setLocalStateField("user", { name: "alice" });
  const aliceId = a.doc.clientID;
  await until(() => b.p.awareness.getStates().get(aliceId)?.user?.name === "alice", "alice's presence at b");
  done(a);
  await until(() => !b.p.awareness.getStates().has(aliceId), "alice's presence cleared at b");
  done(b);
  await server.stop();
  server.cleanup();
});

test("a document survives a restart of conclave dev, and offline edits merge on reconnect", async () => {
  const dataDir = tempDir();
  let server = await startServer({ dataDir });
  const a = provider(server.host, "kept");
  await synced(a);
  const text = a.doc.getText("t");
  for (let i = 0; i < 600; i++) text.insert(text.length, `${i % 10}`); // past a compaction
  const b = provider(server.host, "kept");
  await synced(b);
  await until(() => b.doc.getText("t").length === 600, "b's copy");
  done(b);
  done(a);
  await server.stop();

  server = await startServer({ dataDir });
  const c = provider(server.host, "kept");
  await synced(c);
  await until(() => c.doc.getText("t").length === 600, "the copy after a restart");
  // An edit made offline (in a doc that was synced before) merges when it reconnects.
  const offline = new Y.Doc();
  Y.applyUpdate(offline, Y.encodeStateAsUpdate(c.doc));
  offline.getText("t").insert(0, "offline:");
  const d = provider(server.host, "kept", offline);
  await synced(d);
  await until(() => c.doc.getText("t").toString().startsWith("offline:"), "the offline edit at c");
  done(c);
  done(d);
  await server.stop();
  server.cleanup();
});

test("a 5 MB document: its edit arrives in y-partykit's batches, reaches the other client, and syncs to a late joiner", async () => {
  const server = await startServer();
  const a = provider(server.host, "big");
  const b = provider(server.host, "big");
  await Promise.all([synced(a), synced(b)]);
  const big = "x".repeat(5 * 1000 * 1000);
  a.doc.getText("t").insert(0, big); // one update over 1 MB: sent as a batch
  await until(() => b.doc.getText("t").length === big.length, "b getting the 5 MB edit", 30000);
  done(a);
  done(b);
  // The late joiner's sync step 2 is one 5 MB message, over the 4 MiB send queue.
  const late = provider(server.host, "big");
  await synced(late);
  await until(() => late.doc.getText("t").length === big.length, "the late joiner's 5 MB copy", 30000);
  done(late);
  await server.stop();
  server.cleanup();
});

test("a y-partyserver client and a y-partykit client edit one document", async () => {
  const server = await startServer();
  const kit = provider(server.host, "mixed");
  const doc = new Y.Doc();
  const ps = { p: new YProvider(server.host, "mixed", doc, { party: "yjs", WebSocketPolyfill: WS }), doc };
  await Promise.all([synced(kit), synced(ps)]);
  kit.doc.getText("t").insert(0, "from y-partykit ");
  ps.doc.getText("t").insert(0, "from y-partyserver ");
  await until(
    () => kit.doc.getText("t").toString() === ps.doc.getText("t").toString() && kit.doc.getText("t").length > 30,
    "the two providers converging",
  );
  ps.p.awareness.setLocalStateField("user", "ps");
  await until(() => kit.p.awareness.getStates().get(doc.clientID)?.user === "ps", "y-partyserver's presence at y-partykit");
  done(kit);
  done(ps);
  await server.stop();
  server.cleanup();
});

test("a read-only party's clients get the document but their edits are not applied", async () => {
  // The writable and the read-only party share one data directory; each has its own rooms,
  // so the read-only room starts empty and must stay empty.
  const server = await startWithConfig(`
[parties.view]
kind = "yjs"
[parties.view.yjs]
read_only = true
`);
  const reader = provider(server.host, "ro", new Y.Doc(), { party: "view" });
  const other = provider(server.host, "ro", new Y.Doc(), { party: "view" });
  await Promise.all([synced(reader), synced(other)]);
  reader.doc.getText("t").insert(0, "not allowed");
  other.p.awareness.setLocalStateField("user", "other");
  // Awareness still flows; the edit does not.
  await until(() => reader.p.awareness.getStates().get(other.doc.clientID)?.user === "other", "awareness at the reader");
  await sleep(300);
  assert.equal(other.doc.getText("t").toString(), "");
  done(reader);
  done(other);
  await sleep(100);
  const late = provider(server.host, "ro", new Y.Doc(), { party: "view" });
  await synced(late);
  await sleep(200);
  assert.equal(late.doc.getText("t").toString(), "", "the read-only edit was stored");
  done(late);
  await server.stop();
  server.cleanup();
});

test("snapshot mode: the document is kept across a restart after the room empties", async () => {
  const config = `
[parties.snap]
kind = "yjs"
[parties.snap.yjs]
persist = "snapshot"
`;
  const dataDir = tempDir();
  let server = await startWithConfig(config, { dataDir });
  const a = provider(server.host, "s", new Y.Doc(), { party: "snap" });
  await synced(a);
  for (let i = 0; i < 50; i++) a.doc.getText("t").insert(0, `${i % 10}`);
  await sleep(300);
  done(a);
  await sleep(300);
  await server.stop();
  server = await startWithConfig(config, { dataDir });
  const b = provider(server.host, "s", new Y.Doc(), { party: "snap" });
  await synced(b);
  await until(() => b.doc.getText("t").length === 50, "the document after a restart");
  done(b);
  await server.stop();
  server.cleanup();
});

test("the HTTP callback gets the named shared types after edits pause (debounced)", async () => {
  const posts = [];
  const sink = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      posts.push({ type: req.headers["content-type"], token: req.headers["x-token"], body: JSON.parse(body) });
      res.end("ok");
    });
  });
  await new Promise((r) => sink.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${sink.address().port}/docs`;
  const server = await startWithConfig(`
[parties.cb]
kind = "yjs"
[parties.cb.yjs.callback]
url = "${url}"
debounceWait = 300
debounceMaxWait = 1000
objects = { t = "Text", m = "Map" }
headers = { x-token = "secret" }
`);
  const a = provider(server.host, "room-cb", new Y.Doc(), { party: "cb" });
  await synced(a);
  for (let i = 0; i < 5; i++) {
    a.doc.getText("t").insert(a.doc.getText("t").length, `${i}`);
    await sleep(50);
  }
  a.doc.getMap("m").set("k", "v");
  await until(() => posts.length >= 1, "the callback", 5000);
  await sleep(600);
  // Six edits within the debounce window: one POST.
  assert.equal(posts.length, 1);
  const [post] = posts;
  assert.equal(post.type, "application/json");
  assert.equal(post.token, "secret");
  assert.deepEqual(post.body, {
    room: "room-cb",
    data: { t: { type: "Text", content: "01234" }, m: { type: "Map", content: { k: "v" } } },
  });
  done(a);
  await server.stop();
  server.cleanup();
  sink.close();
});

test("a hibernated document reloads on the next edit, and nothing is lost", async () => {
  const server = await startServer({ args: ["--hibernate-after-ms", "200"] });
  // y-partyserver clients without awareness renewals: the room can go idle.
  const a = partyserverProvider(server.host, "sleepy");
  const b = partyserverProvider(server.host, "sleepy");
  a.p.awareness.setLocalState(null);
  b.p.awareness.setLocalState(null);
  await Promise.all([synced(a), synced(b)]);
  a.doc.getText("t").insert(0, "before ");
  await until(() => b.doc.getText("t").toString() === "before ", "b before hibernation");
  // Past hibernate-after, the room's instance (and its document) leaves memory.
  await until(async () => (await hibernatedRooms(server.host)) >= 1, "the room hibernating", 5000);
  b.doc.getText("t").insert(7, "after");
  await until(() => a.doc.getText("t").toString() === "before after", "a after hibernation");
  done(a);
  done(b);
  const late = provider(server.host, "sleepy");
  await synced(late);
  await until(() => late.doc.getText("t").toString() === "before after", "the late joiner");
  done(late);
  await server.stop();
  server.cleanup();
});

test("notes (examples/custom-party): seeded, read-only by ?view=1, custom messages, edits over HTTP", async () => {
  const server = await startServer({ bin: "custom-party" });
  const writer = partyserverProvider(server.host, "n1", { party: "notes" });
  const viewer = partyserverProvider(server.host, "n1", { party: "notes", params: { view: "1" } });
  await Promise.all([synced(writer), synced(viewer)]);
  await until(() => writer.doc.getText("t").toString() === "Notes\n", "the seeded title");
  writer.doc.getText("t").insert(6, "from the writer\n");
  viewer.doc.getText("t").insert(0, "from the viewer\n");
  await until(() => viewer.doc.getText("t").toString().includes("from the writer"), "the writer's edit at the viewer");
  await sleep(300);
  assert.ok(!writer.doc.getText("t").toString().includes("from the viewer"), "the viewer's edit was applied");

  const got = [];
  viewer.p.on("custom-message", (m) => got.push(m));
  writer.p.sendMessage("length");
  writer.p.sendMessage("shout:hello");
  const writerGot = [];
  writer.p.on("custom-message", (m) => writerGot.push(m));
  await until(() => got.includes("shout:hello"), "the shout at the viewer");
  await until(() => writerGot.includes(`length:${"Notes\nfrom the writer\n".length}`), "the length at the writer");
  assert.ok(!writerGot.includes("shout:hello"), "the shout came back to its sender");

  const res = await fetch(`http://${server.host}/parties/notes/n1`, { method: "POST", body: "by HTTP\n" });
  assert.equal(await res.text(), "Notes\nfrom the writer\nby HTTP\n");
  await until(() => viewer.doc.getText("t").toString().endsWith("by HTTP\n"), "the HTTP edit at the viewer");
  done(writer);
  done(viewer);
  await server.stop();
  server.cleanup();
});
