// PartySocket clients on different gateways of one cluster (two nodes on one PostgreSQL,
// two gateways, static ring) share rooms. With COMPAT_CLUSTER_PARTIES=project (see
// cluster-project.test.mjs) the nodes serve the TypeScript twins of the built-in parties
// (partykit-project, bundled once with `conclave build`) instead of the Rust ones.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { PartySocket } from "partysocket";
import WS from "ws";
import { fileURLToPath } from "node:url";
import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import { freeAddr, startPostgres, startRole, tempDir, nextMessage, opened, runConclave, sleep } from "./harness.mjs";

let gateways = [];
let nodes = [];
let postgres;
const dir = tempDir();
/** Each node's relay and HTTP address, chosen once: a restarted node comes back on them. */
const addrs = {};
/** What every node serves besides the built-ins: nothing, or the bundled project. */
let partyArgs = [];
const startNode = (id) => {
  const [relay, http] = addrs[id];
  const args = ["node", "--id", id, "--nodes", "a,b", "--relay-listen", relay, "--http-listen", http,
    "--data-dir", `${dir}/${id}`, "--postgres-url", postgres.url, ...partyArgs];
  return startRole(args, http);
};

before(async () => {
  if (process.env.COMPAT_CLUSTER_PARTIES === "project") {
    const project = fileURLToPath(new URL("partykit-project", import.meta.url));
    const bundle = `${dir}/app.bundle.json`;
    assert.match(runConclave(["build", "--project", project, "--out", bundle]), /version [0-9a-f]{12}/);
    partyArgs = ["--bundle", bundle];
  }
  postgres = await startPostgres();
  for (const id of ["a", "b"]) {
    addrs[id] = [await freeAddr(), await freeAddr()];
    nodes.push(await startNode(id));
  }
  const list = `a=http://${addrs.a[0]},b=http://${addrs.b[0]}`;
  for (let i = 0; i < 2; i++) {
    const host = await freeAddr();
    const role = await startRole(["gateway", "--port", host.split(":")[1], "--ops-listen", "127.0.0.1:0", "--nodes", list], host);
    gateways.push({ ...role, host });
  }
  if (partyArgs.length) {
    // Only the project has `reminders`: the nodes serve the bundle, not just the built-ins.
    const res = await fetch(`http://${gateways[0].host}/parties/reminders/probe`);
    assert.equal(res.status, 200, await res.text());
  }
});

after(async () => {
  for (const p of [...gateways, ...nodes]) await p.stop();
  await postgres?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const sock = (g, opts) => new PartySocket({ host: gateways[g].host, WebSocket: WS, ...opts });

test("relay between clients on different gateways", async () => {
  for (const room of ["cross-1", "cross-2", "cross-3", "cross-4"]) {
    const a = sock(0, { room, id: "a" });
    const b = sock(1, { room, id: "b" });
    await Promise.all([opened(a), opened(b)]);
    const got = nextMessage(b);
    a.send(`hello ${room}`);
    assert.equal(await got, `hello ${room}`);
    const back = nextMessage(a);
    b.send("and back");
    assert.equal(await back, "and back");
    a.close();
    b.close();
  }
});

test("requests outside /parties/ reach a node through either gateway: the project's onFetch answers, the built-ins 404", async () => {
  for (const gw of gateways) {
    const res = await fetch(`http://${gw.host}/outside/x?y=1`);
    if (process.env.COMPAT_CLUSTER_PARTIES === "project") {
      assert.deepEqual([res.status, await res.text()], [200, "outside /outside/x?y=1"]);
      // The project's static files (serve) travel in the bundle: every node answers them
      // (paths spread over the nodes, see below).
      const page = await fetch(`http://${gw.host}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /served by every node of the cluster/);
      for (const f of ["a", "b", "c", "d", "e", "f"]) {
        const file = await fetch(`http://${gw.host}/${f}.txt`);
        assert.deepEqual([file.status, await file.text()], [200, `file ${f}\n`]);
      }
    } else {
      assert.deepEqual([res.status, await res.text()], [404, "Not found: use /parties/:party/:room"]);
    }
  }
});

test("every node answered some of the project's static files", { skip: process.env.COMPAT_CLUSTER_PARTIES !== "project" && "the files are in the project only" }, async () => {
  for (const id of ["a", "b"]) {
    const metrics = await (await fetch(`http://${addrs[id][1]}/metrics`)).text();
    const served = Number(metrics.match(/^conclave_static_files_served_total(?:\{[^}]*\})? (\d+)/m)?.[1] ?? 0);
    assert.ok(served > 0, `node ${id} served no static file`);
  }
});

test("a room asked from another node answers (lobby.parties through a gateway to its owner)", { skip: process.env.COMPAT_CLUSTER_PARTIES !== "project" && "the asking onFetch is in the project only" }, async () => {
  // Eight counter rooms over two nodes, asked from whichever node each path lands on:
  // about half live on the other one.
  for (let k = 0; k < 8; k++) {
    const res = await fetch(`http://${gateways[k % 2].host}/outside/ask/cross-${k}`);
    assert.deepEqual([res.status, await res.text()], [200, '200 {"value":0}'], `room cross-${k}`);
    // The party's onBeforeRequest guards clients' requests, not other rooms', wherever the
    // room lives (as on its own node).
    const denied = await fetch(`http://${gateways[k % 2].host}/parties/counter/cross-${k}?deny=1`);
    assert.equal(denied.status, 403);
    const asked = await fetch(`http://${gateways[k % 2].host}/outside/ask/cross-${k}?deny=1`);
    assert.equal(await asked.text(), '200 {"value":0}', `room cross-${k}, asked with ?deny=1`);
  }
});

test("chat between clients on different gateways", async () => {
  const a = sock(0, { party: "chat", room: "cluster-lobby", id: "ann" });
  const b = sock(1, { party: "chat", room: "cluster-lobby", id: "ben" });
  await Promise.all([nextMessage(a), nextMessage(b)]); // histories
  const seenByA = nextMessage(a);
  const seenByB = nextMessage(b);
  b.send(JSON.stringify({ type: "message", text: "hi from gateway 1" }));
  const [ma, mb] = (await Promise.all([seenByA, seenByB])).map((m) => JSON.parse(m));
  assert.deepEqual(ma, mb);
  assert.equal(ma.from, "ben");
  assert.equal(ma.text, "hi from gateway 1");
  const res = await PartySocket.fetch({ host: gateways[0].host, party: "chat", room: "cluster-lobby" }, {});
  assert.equal((await res.json()).messages.length, 1);
  a.close();
  b.close();
});

test("a PartySocket stays open while every node is killed and restarted", async () => {
  const s = sock(0, { party: "counter", room: "survivor", id: "steady" });
  let opens = 0;
  let closes = 0;
  s.addEventListener("open", () => opens++);
  s.addEventListener("close", () => closes++);
  await opened(s);
  let reply = nextMessage(s);
  s.send("incr");
  assert.equal(JSON.parse(await reply).value, 1);

  for (const n of nodes) await n.kill();
  // Sent while no node is up: the gateway holds the frame and replays it to the room's
  // node once it is back.
  reply = nextMessage(s, 20000);
  s.send("incr");
  nodes = [await startNode("a"), await startNode("b")];
  assert.equal(JSON.parse(await reply).value, 2);
  assert.equal(closes, 0, "the client socket was closed");
  assert.equal(opens, 1, "PartySocket reconnected");
  s.close();
});

test("a party that keeps its players in memory knows each of them once after every node is killed", { skip: process.env.COMPAT_CLUSTER_PARTIES !== "project" && "the players party is in the project only" }, async () => {
  const a = sock(0, { party: "players", room: "table", id: "ann", query: { name: "Ann" } });
  const b = sock(1, { party: "players", room: "table", id: "ben", query: { name: "Ben" } });
  let closes = 0;
  for (const s of [a, b]) s.addEventListener("close", () => closes++);
  await Promise.all([opened(a), opened(b)]);
  const players = async (s) => {
    const reply = nextMessage(s, 20000);
    s.send("who");
    return reply;
  };
  assert.equal(await players(a), "players ann=Ann,ben=Ben");

  for (const n of nodes) await n.kill();
  nodes = [await startNode("a"), await startNode("b")];
  // Each socket is back in the room once its gateway sends for it.
  await players(a);
  await players(b);
  assert.equal(await players(a), "players ann=Ann,ben=Ben", "the new instance does not know each socket once");
  assert.equal(closes, 0, "a client socket was closed");
  a.close();
  b.close();
});

/** A y-partykit client of `room` in party `yjs` through gateway `g`. */
function yjsClient(g, room) {
  const doc = new Y.Doc();
  const p = new YPartyKitProvider(gateways[g].host, room, doc, { party: "yjs", WebSocketPolyfill: WS });
  return { p, doc, text: doc.getText("t") };
}

/** Ends clients: the providers, and the documents (whose awareness keeps a timer that
 * would keep the process up). */
function endYjs(...clients) {
  for (const x of clients) {
    x.p.destroy();
    x.doc.destroy();
  }
}

async function until(check, what, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return;
    await sleep(25);
  }
  assert.fail(`${what} not within ${ms} ms`);
}

test("a Yjs document is shared across gateways and survives kill -9 of every node", async (t) => {
  const yjs = (g) => {
    const client = yjsClient(g, "shared-doc");
    t.after(() => endYjs(client));
    return client;
  };
  const a = yjs(0);
  const b = yjs(1);
  a.text.insert(0, "before ");
  await until(() => b.text.toString() === "before ", "b seeing a's edit");

  for (const n of nodes) await n.kill();
  nodes = [await startNode("a"), await startNode("b")];
  const c = yjs(1);
  await until(() => c.text.toString() === "before ", "a new client after the kill getting the document");
  a.text.insert(a.text.length, "after");
  await until(() => [b, c].every((x) => x.text.toString() === "before after"), "every client after the kill");
});

test("a Yjs document keeps every edit through a rolling restart of the nodes", async (t) => {
  const yjs = (g) => {
    const client = yjsClient(g, "rolling-doc");
    t.after(() => endYjs(client));
    return client;
  };
  const a = yjs(0);
  const b = yjs(1);
  let expected = "";
  for (const [i, id] of ["a", "b"].entries()) {
    // Edits made while a node restarts reach the room once it is back.
    await nodes[i].stop();
    a.text.insert(a.text.length, `edit-${id} `);
    expected += `edit-${id} `;
    nodes[i] = await startNode(id);
    await until(() => b.text.toString() === expected, `b seeing every edit after restarting ${id}`);
  }
  const late = yjs(1);
  await until(() => late.text.toString() === expected, "a late joiner after the rolling restart");
});
