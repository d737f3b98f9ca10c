// Yjs documents with the real y-partykit (and y-partyserver) providers against the
// built-in `yjs` party kind:
// convergence, late joiners with nobody else online, awareness that clears on close, and
// a document that survives a restart of conclave dev.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import YProvider from "y-partyserver/provider";
import WS from "ws";
import { startServer, tempDir, sleep } from "./harness.mjs";

function provider(host, room, doc = new Y.Doc()) {
  const p = new YPartyKitProvider(host, room, doc, { party: "yjs", WebSocketPolyfill: WS });
  return { p, doc };
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
    if (check()) return;
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

test("a 2 MB edit arrives in y-partykit's batches and reaches the other client and a late joiner", async () => {
  const server = await startServer();
  const a = provider(server.host, "big");
  const b = provider(server.host, "big");
  await Promise.all([synced(a), synced(b)]);
  const big = "x".repeat(2 * 1024 * 1024);
  a.doc.getText("t").insert(0, big); // one update over 1 MB: sent as a batch
  await until(() => b.doc.getText("t").length === big.length, "b getting the 2 MB edit", 20000);
  done(a);
  done(b);
  const late = provider(server.host, "big");
  await synced(late);
  await until(() => late.doc.getText("t").length === big.length, "the late joiner's 2 MB copy", 20000);
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
