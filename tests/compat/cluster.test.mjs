// PartySocket clients on different gateways of one cluster (two nodes on one PostgreSQL,
// two gateways, static ring) share rooms.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { PartySocket } from "partysocket";
import WS from "ws";
import { startPostgres, startRole, tempDir, nextMessage, opened } from "./harness.mjs";

let gateways = [];
let nodes = [];
let postgres;
const dir = tempDir();
const nodeArgs = (id, relay = "127.0.0.1:0", http = "127.0.0.1:0") =>
  ["node", "--id", id, "--nodes", "a,b", "--relay-listen", relay, "--http-listen", http,
   "--data-dir", `${dir}/${id}`, "--postgres-url", postgres.url];

before(async () => {
  postgres = await startPostgres();
  for (const id of ["a", "b"]) nodes.push(await startRole(nodeArgs(id), 2));
  const list = `a=http://${nodes[0].addrs[0]},b=http://${nodes[1].addrs[0]}`;
  for (let i = 0; i < 2; i++) gateways.push(await startRole(["gateway", "--port", "0", "--nodes", list]));
});

after(async () => {
  for (const p of [...gateways, ...nodes]) await p.stop();
  await postgres?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const sock = (g, opts) => new PartySocket({ host: gateways[g].addrs[0], WebSocket: WS, ...opts });

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
  const res = await PartySocket.fetch({ host: gateways[0].addrs[0], party: "chat", room: "cluster-lobby" }, {});
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
  nodes = [await startRole(nodeArgs("a", ...nodes[0].addrs), 2), await startRole(nodeArgs("b", ...nodes[1].addrs), 2)];
  assert.equal(JSON.parse(await reply).value, 2);
  assert.equal(closes, 0, "the client socket was closed");
  assert.equal(opens, 1, "PartySocket reconnected");
  s.close();
});
