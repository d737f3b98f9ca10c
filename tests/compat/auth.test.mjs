// JWT checks before the upgrade, configured per party in TOML.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PartySocket } from "partysocket";
import WS from "ws";
import jwt from "jsonwebtoken";
import { startServer, tempDir, writeConfig, rawConnect, nextMessage, opened } from "./harness.mjs";

const SECRET = "compat-secret";
let server;

before(async () => {
  const dir = tempDir();
  const config = writeConfig(dir, `[parties.secure]\nkind = "relay"\n[parties.secure.auth]\nalgorithm = "HS256"\nsecret = "${SECRET}"\n`);
  server = await startServer({ dataDir: dir, args: ["--config", config] });
});
after(async () => {
  await server.stop();
  server.cleanup();
});

const url = (room, q = "") => `ws://${server.host}/parties/secure/${room}${q}`;

test("no token or a bad token is 401, a token for another room is 403", async () => {
  assert.equal((await rawConnect(url("r1"))).status, 401);
  const forged = jwt.sign({ sub: "u" }, "wrong-secret");
  assert.equal((await rawConnect(url("r1", `?token=${forged}`))).status, 401);
  const expired = jwt.sign({ sub: "u", exp: Math.floor(Date.now() / 1000) - 3600 }, SECRET);
  assert.equal((await rawConnect(url("r1", `?token=${expired}`))).status, 401);
  const noExp = jwt.sign({ sub: "u", room: "r1" }, SECRET);
  assert.equal((await rawConnect(url("r1", `?token=${noExp}`))).status, 401);
  const otherRoom = jwt.sign({ sub: "u", room: "r2", exp: Math.floor(Date.now() / 1000) + 60 }, SECRET);
  assert.equal((await rawConnect(url("r1", `?token=${otherRoom}`))).status, 403);
  const res = await fetch(`http://${server.host}/parties/secure/r1`);
  assert.equal(res.status, 401);
  // Parties without auth stay open.
  assert.equal((await rawConnect(`ws://${server.host}/parties/main/r1`)).status, 101);
});

test("a valid token is accepted from ?token= and from Authorization: Bearer", async () => {
  const token = jwt.sign({ sub: "u", room: "r1", exp: Math.floor(Date.now() / 1000) + 60 }, SECRET);
  const a = new PartySocket({ host: server.host, party: "secure", room: "r1", id: "a", query: { token }, WebSocket: WS });
  await opened(a);
  const viaHeader = await new Promise((ok) => {
    const ws = new WS(url("r1", "?_pk=b"), { headers: { Authorization: `Bearer ${token}` } });
    ws.on("open", () => ok(ws));
    ws.on("unexpected-response", (_q, res) => ok(res.statusCode));
  });
  assert.ok(viaHeader instanceof WS, `header auth refused: ${viaHeader}`);
  const got = nextMessage(a);
  viaHeader.send("authorized");
  assert.equal(await got, "authorized");
  a.close();
  viaHeader.close();
});
