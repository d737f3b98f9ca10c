// A rolling update of a cluster serving a PartyKit project: two nodes on one PostgreSQL
// run bundle v1; each is drained (SIGTERM) and started again with bundle v2, one at a
// time. A PartySocket client stays connected throughout, its room's storage carries over,
// and once its node runs v2 the room answers with the new code.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { PartySocket } from "partysocket";
import WS from "ws";
import { freeAddr, startPostgres, startRole, tempDir, nextMessage, opened, runConclave } from "./harness.mjs";

const dir = tempDir();
after(() => rmSync(dir, { recursive: true, force: true }));

/** Builds the project at version `v` into a bundle file; returns its path and version. */
function bundle(v) {
  const project = join(dir, `project-${v}`);
  mkdirSync(join(project, "src"), { recursive: true });
  writeFileSync(join(project, "partykit.json"), JSON.stringify({ name: "rolling", main: "src/server.ts" }));
  writeFileSync(
    join(project, "src/server.ts"),
    `import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    const n = ((await this.room.storage.get<number>("n")) ?? 0) + 1;
    await this.room.storage.put("n", n);
    sender.send(JSON.stringify({ version: "${v}", n }));
  }
}`,
  );
  const file = join(dir, `${v}.bundle.json`);
  process.env.CONCLAVE_ESBUILD ??= new URL("node_modules/.bin/esbuild", import.meta.url).pathname;
  const out = runConclave(["build", "--project", project, "--out", file]);
  return { file, version: out.match(/version ([0-9a-f]{12})/)[1] };
}

test("nodes restarted one at a time on a new bundle: the socket stays open, rooms move to the new code with their storage", async () => {
  const v1 = bundle("v1");
  const v2 = bundle("v2");
  assert.notEqual(v1.version, v2.version);
  const postgres = await startPostgres();
  const addrs = { a: [await freeAddr(), await freeAddr()], b: [await freeAddr(), await freeAddr()] };
  const node = (id, b) => {
    const [relay, http] = addrs[id];
    return startRole(["node", "--id", id, "--nodes", "a,b", "--relay-listen", relay, "--http-listen", http,
      "--data-dir", join(dir, id), "--postgres-url", postgres.url, "--bundle", b.file], http);
  };
  const nodes = { a: await node("a", v1), b: await node("b", v1) };
  const host = await freeAddr();
  const gateway = await startRole(["gateway", "--port", host.split(":")[1], "--ops-listen", "127.0.0.1:0", "--nodes",
    `a=http://${addrs.a[0]},b=http://${addrs.b[0]}`], host);
  const socket = new PartySocket({ host, room: "rolling-room", id: "steady", WebSocket: WS });
  let closes = 0;
  socket.addEventListener("close", () => closes++);
  try {
    await opened(socket);
    const ask = async () => {
      const reply = nextMessage(socket, 20000);
      socket.send("next");
      return JSON.parse(await reply);
    };
    assert.deepEqual(await ask(), { version: "v1", n: 1 });
    for (const id of ["a", "b"]) {
      await nodes[id].stop(); // SIGTERM: drain
      nodes[id] = await node(id, v2);
    }
    const metrics = await (await fetch(`http://${addrs.a[1]}/metrics`)).text();
    assert.match(metrics, new RegExp(`conclave_js_bundle\\{project="rolling",version="${v2.version}"\\} 1`));
    assert.deepEqual(await ask(), { version: "v2", n: 2 });
    assert.equal(closes, 0, "the client's socket was closed");
  } finally {
    socket.close();
    await gateway.stop();
    for (const n of Object.values(nodes)) await n.stop();
    await postgres.stop();
  }
});
