// The JavaScript runtime's isolation and project handling, on small projects written into
// temporary directories: a handler that throws, one that never returns, one that eats
// memory, a bundle that does not load, and a reload on file change in `conclave dev`.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync, rmSync, readFileSync, symlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import WS from "ws";
import { startProject, startServer, tempDir, closed, sleep } from "./harness.mjs";

// The projects live in temporary directories, with no node_modules above them.
process.env.CONCLAVE_ESBUILD ??= fileURLToPath(new URL("node_modules/.bin/esbuild", import.meta.url));

const dirs = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A project in a temporary directory: `files` maps paths to their text. */
function project(files) {
  const dir = tempDir();
  dirs.push(dir);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const manifest = JSON.stringify({ name: "runtime-test", main: "src/server.ts" });

/** A raw socket that records every message and its close; `query` goes after its id. */
function connect(host, room, id, query = "") {
  return new Promise((ok, fail) => {
    const ws = new WS(`ws://${host}/parties/main/${room}?_pk=${id}${query}`);
    ws.got = [];
    ws.on("message", (d) => ws.got.push(d.toString()));
    ws.on("open", () => ok(ws));
    ws.on("error", fail);
  });
}

/** Waits until `ws` has got a message equal to `text`. */
async function received(ws, text, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!ws.got.includes(text)) {
    if (Date.now() > deadline) throw new Error(`no ${JSON.stringify(text)} in time; got ${JSON.stringify(ws.got)}`);
    await sleep(5);
  }
}

/** The next message `ws` gets (after those already seen), within `ms`. */
async function reply(ws, ms = 3000) {
  const seen = ws.got.length;
  const deadline = Date.now() + ms;
  while (ws.got.length === seen) {
    if (Date.now() > deadline) throw new Error("no reply in time");
    await sleep(5);
  }
  return ws.got[seen];
}

/** Runs `body(server)` against `conclave dev` on a project whose one party is `source`,
 * started with `args`, and stops the server after. */
async function withServer(source, args, body) {
  const server = await startProject(project({ "partykit.json": manifest, "src/server.ts": source }), { args });
  try {
    await body(server);
  } finally {
    await server.stop();
    server.cleanup();
  }
}

/** An HTTP server on a free loopback port answering with `handler`: its `host:port` as
 * `target`, and `close`. */
async function upstreamServer(handler, tls) {
  const server = tls ? createHttpsServer(tls, handler) : createServer(handler);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { target: `127.0.0.1:${server.address().port}`, port: server.address().port, close: () => server.close() };
}

const isolated = `
import type * as Party from "partykit/server";
let starts = 0;
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  onMessage(message: string, sender: Party.Connection) {
    if (message === "loop") { for (;;) {} }
    if (message === "throw") throw new Error("it broke");
    if (message === "hog") { const keep = []; for (;;) keep.push(new Array(100000).fill(keep.length)); }
    sender.send("pong starts=" + starts);
  }
  onError(conn: Party.Connection, error: Error) {
    this.room.broadcast("onError " + conn.id + ": " + error.message);
  }
}
`;

test("a handler that throws: the error is logged, the connection stays open and onError does not run, as on PartyKit", async () => {
  await withServer(isolated, [], async (server) => {
    const a = await connect(server.host, "r", "a");
    const b = await connect(server.host, "r", "b");
    b.send("throw");
    b.send("ping");
    assert.match(await reply(b), /^pong/);
    a.send("ping");
    assert.match(await reply(a), /^pong/);
    assert.ok(!a.got.some((m) => String(m).startsWith("onError")), "onError ran for a handler's throw");
    a.close();
    b.close();
  });
});

test("an endless handler is interrupted after its CPU budget; the room starts afresh and other rooms answer meanwhile", async () => {
  await withServer(isolated, ["--js-cpu-budget-ms", "300", "--js-workers", "2"], async (server) => {
    const looper = await connect(server.host, "looping", "l");
    looper.send("ping");
    assert.equal(await reply(looper), "pong starts=1");
    // Rooms are spread over the two threads: this one is on the other.
    const other = await connect(server.host, "other", "o");
    other.send("ping");
    await reply(other);
    looper.send("loop");
    await sleep(50);
    const started = Date.now();
    other.send("ping");
    await reply(other);
    assert.ok(Date.now() - started < 200, `the other room answered in ${Date.now() - started} ms`);
    // The looping room's instance was dropped: the next event starts a new one.
    looper.send("ping");
    assert.equal(await reply(looper, 5000), "pong starts=2");
    assert.equal(looper.readyState, WS.OPEN);
    looper.close();
    other.close();
  });
});

test("a handler that holds its room waiting on what never comes is dropped with its instance after the wait limit", async () => {
  const source = `
import type * as Party from "partykit/server";
let starts = 0;
const never = () => new Promise<void>(() => {});
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  async onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    if (new URL(ctx.request.url).searchParams.has("hang")) await never();
  }
  async onMessage(message: string, sender: Party.Connection) {
    if (message === "wait") { await never(); sender.send("never"); }
    if (message === "block") await this.room.blockConcurrencyWhile(never);
    sender.send(message + " starts=" + starts);
  }
  async onRequest(req: Party.Request) {
    const params = new URL(req.url).searchParams;
    if (params.has("hang")) await never();
    if (params.has("slow")) {
      await new Promise((r) => setTimeout(r, 1000));
      return new Response("slow answer");
    }
    if (params.has("spin")) {
      await new Promise((r) => setTimeout(r, 20));
      for (;;) {}
    }
    return new Response("answer starts=" + starts);
  }
}`;
  // One worker: \`starts\` counts the instances of the room.
  const args = ["--js-wait-limit-ms", "500", "--js-cpu-budget-ms", "200", "--js-workers", "1", "--room-answer-timeout-ms", "3000"];
  await withServer(source, args, async (server) => {
    const a = await connect(server.host, "w", "a");
    // An onMessage that waits on something else does not hold its room.
    a.send("wait");
    a.send("ping");
    assert.equal(await reply(a), "ping starts=1");
    // Nor does an onRequest, which may take longer than the wait limit to answer; its
    // requester hears 504 after the room's answer time, and the instance goes on.
    assert.equal(await (await fetch(`http://${server.host}/parties/main/w?slow`)).text(), "slow answer");
    let started = Date.now();
    const hung = await fetch(`http://${server.host}/parties/main/w?hang`);
    const waited = Date.now() - started;
    assert.equal(hung.status, 504);
    assert.equal(await hung.text(), "The room did not answer in time");
    assert.ok(waited >= 2900 && waited < 8000, `answered after ${waited} ms`);
    assert.equal(await (await fetch(`http://${server.host}/parties/main/w`)).text(), "answer starts=1");
    // One whose later step fails (here over its CPU budget) is answered 500 then, not
    // left waiting; a new instance answers the next.
    const spun = await fetch(`http://${server.host}/parties/main/w?spin`);
    assert.equal(spun.status, 500);
    assert.equal(await spun.text(), "The room failed to handle the request");
    assert.equal(await (await fetch(`http://${server.host}/parties/main/w`)).text(), "answer starts=2");
    // A blockConcurrencyWhile holds the room: the events behind it run in the next
    // instance.
    a.send("block");
    a.send("after");
    assert.equal(await reply(a, 5000), "after starts=3");
    // And an onConnect: the socket is closed with 1011, and the room goes on.
    const h = new WS(`ws://${server.host}/parties/main/w?_pk=h&hang`);
    const outcome = await new Promise((ok) => {
      h.on("unexpected-response", (_req, res) => ok(`refused ${res.statusCode}`));
      h.on("close", (code, reason) => ok(`closed ${code} ${reason}`));
      h.on("error", () => {});
    });
    assert.match(outcome, /^closed 1011 onConnect held the room longer than 500 ms/);
    a.send("ping");
    assert.equal(await reply(a, 5000), "ping starts=4");
    assert.equal(a.readyState, WS.OPEN);
    a.close();
  });
});

test("a hibernating room whose handler waits on a fetch keeps its instance until the fetch is back", async () => {
  const source = `
import type * as Party from "partykit/server";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default class Server implements Party.Server {
  static options = { hibernate: true };
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    const res = await this.room.context.parties.main.get(this.room.id + "-slow").fetch({ method: "POST" });
    sender.send("fetched " + (await res.text()));
  }
  async onRequest() {
    await sleep(1200);
    return new Response("slowly");
  }
}`;
  // The room would hibernate four times over while the fetch is out.
  await withServer(source, ["--hibernate-after-ms", "300"], async (server) => {
    const a = await connect(server.host, "h", "a");
    a.send("go");
    assert.equal(await reply(a, 5000), "fetched slowly");
    assert.doesNotMatch(server.stderr(), /failed after its event/);
    a.close();
  });
});

test("a hibernating room with sockets hibernates once the answer its onRequest gave after its event is out, or its timers fired", async () => {
  const source = `
import type * as Party from "partykit/server";
let starts = 0;
export default class Server implements Party.Server {
  static options = { hibernate: true };
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  onMessage(message: string, sender: Party.Connection) {
    if (message === "timer") {
      setTimeout(() => sender.send("fired starts=" + starts), 1000);
      return;
    }
    sender.send("starts=" + starts);
  }
  async onRequest() {
    await new Promise((r) => setTimeout(r, 100));
    return new Response("later");
  }
}`;
  await withServer(source, ["--hibernate-after-ms", "300", "--js-workers", "1"], async (server) => {
    const a = await connect(server.host, "q", "a");
    a.send("ping");
    assert.equal(await reply(a), "starts=1");
    assert.equal(await (await fetch(`http://${server.host}/parties/main/q`)).text(), "later");
    // Idle well past --hibernate-after-ms: the instance went, and the message wakes a new one.
    await sleep(1200);
    a.send("ping");
    assert.equal(await reply(a), "starts=2");
    // A timer set keeps the instance past --hibernate-after-ms, as a Durable Object with
    // timers set is not hibernated; once it fired, the room hibernates again.
    a.send("timer");
    assert.equal(await reply(a, 5000), "fired starts=2");
    await sleep(1200);
    a.send("ping");
    assert.equal(await reply(a), "starts=3");
    a.close();
  });
});

test("streams: a library's TransformStream subclass loads; a streamed response, produced on timers, is answered whole", async () => {
  const source = `
import type * as Party from "partykit/server";
// As libraries do at load (eventsource-parser's stream, for one).
class Upper extends TransformStream<string, string> {
  constructor() {
    super({ transform(chunk, c) { c.enqueue(chunk.toUpperCase()); } });
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onRequest(req: Party.Request) {
    if (req.method === "POST") {
      const parts: string[] = [];
      for await (const chunk of req.body!.pipeThrough(new TextDecoderStream())) parts.push(chunk);
      return new Response(parts.join("") + " " + req.bodyUsed);
    }
    const words = new ReadableStream<Uint8Array>({
      async start(c) {
        for (const w of ["one ", "two ", "three"]) {
          await sleep(20);
          c.enqueue(new TextEncoder().encode(w));
        }
        c.close();
      },
    });
    const body = words.pipeThrough(new TextDecoderStream()).pipeThrough(new Upper()).pipeThrough(new TextEncoderStream());
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }
  onMessage(message: string, sender: Party.Connection) {
    sender.send("pong");
  }
}`;
  await withServer(source, [], async (server) => {
    const res = await fetch(`http://${server.host}/parties/main/s`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    assert.equal(await res.text(), "ONE TWO THREE");
    const posted = await fetch(`http://${server.host}/parties/main/s`, { method: "POST", body: "sent up" });
    assert.equal(await posted.text(), "sent up true");
  });
});

test("a socket replaced by a newer one with its id is closed, even when onClose throws", async () => {
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onClose() { throw new Error("onClose broke"); }
  onMessage(message: string, sender: Party.Connection) { sender.send("pong"); }
}`;
  await withServer(source, [], async (server) => {
    const old = await connect(server.host, "r", "same");
    const closed = new Promise((ok) => old.on("close", (code, reason) => ok(`${code} ${reason}`)));
    const fresh = await connect(server.host, "r", "same");
    const outcome = await Promise.race([closed, sleep(3000).then(() => "still open")]);
    assert.equal(outcome, "1000 Replaced by a newer connection with the same id");
    fresh.send("ping");
    assert.equal(await reply(fresh), "pong");
    fresh.close();
  });
});

test("a stream body that does not end is given up after the room's answer time: its requester hears 504, its source is cancelled", async () => {
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string, sender: Party.Connection) { sender.send("pong"); }
  async onRequest() {
    let timer: ReturnType<typeof setInterval>;
    const body = new ReadableStream<Uint8Array>({
      start(c) { timer = setInterval(() => c.enqueue(new TextEncoder().encode("tick\\n")), 100); },
      cancel: () => {
        clearInterval(timer);
        this.room.broadcast("stream cancelled");
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }
}`;
  await withServer(source, ["--room-answer-timeout-ms", "500"], async (server) => {
    const ws = await connect(server.host, "e", "a");
    const res = await fetch(`http://${server.host}/parties/main/e`);
    assert.equal(res.status, 504);
    await res.text();
    await received(ws, "stream cancelled", 3000);
    ws.send("ping");
    assert.equal(await reply(ws), "pong");
    ws.close();
  });
});

test("a handler that exhausts the memory cap is reset like one over budget", async () => {
  await withServer(isolated, ["--js-memory-mb", "64", "--js-cpu-budget-ms", "5000"], async (server) => {
    const ws = await connect(server.host, "hungry", "h");
    ws.send("hog");
    await sleep(200);
    ws.send("ping");
    assert.match(await reply(ws, 10000), /^pong/);
    assert.match(server.stderr(), /out of memory/);
    ws.close();
  });
});

test("a party that does not hibernate hears onConnect again for its sockets when its instance starts afresh", async () => {
  const source = `
import type * as Party from "partykit/server";
let starts = 0;
export default class Server implements Party.Server {
  players = new Map<string, string>();
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    this.players.set(conn.id, new URL(ctx.request.url).searchParams.get("name") ?? "?");
    conn.send("welcome " + starts);
  }
  onMessage(message: string, sender: Party.Connection) {
    if (message === "loop") { for (;;) {} }
    const known = [...this.players].map(([id, name]) => id + "=" + name).sort().join(",");
    sender.send("players " + known + " starts=" + starts);
  }
}`;
  // One worker: `starts` counts the instances of the room.
  await withServer(source, ["--js-cpu-budget-ms", "300", "--js-workers", "1"], async (server) => {
    const open = (id) => connect(server.host, "kept", id, `&name=${id.toUpperCase()}`);
    const a = await open("a");
    const b = await open("b");
    await received(a, "welcome 1");
    a.send("who");
    await received(a, "players a=A,b=B starts=1");
    a.send("loop"); // over the budget: the instance is dropped
    await sleep(500);
    a.send("who");
    // The new instance knows both sockets, each once, from the URL each connected with.
    await received(a, "players a=A,b=B starts=2", 5000);
    await received(b, "welcome 2");
    assert.equal(a.got.filter((m) => m === "welcome 2").length, 1, `a was greeted twice: ${a.got}`);
    assert.equal(a.readyState, WS.OPEN);
    a.close();
    b.close();
  });
});

test("a socket whose onConnect breaks the new instance is closed, and the next instance greets the others", async () => {
  const source = `
import type * as Party from "partykit/server";
let starts = 0;
export default class Server implements Party.Server {
  players = new Set<string>();
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  onConnect(conn: Party.Connection) {
    if (conn.id === "bad" && starts > 1) { for (;;) {} }
    this.players.add(conn.id);
  }
  onMessage(message: string, sender: Party.Connection) {
    if (message === "loop") { for (;;) {} }
    sender.send("players " + [...this.players].sort().join(",") + " starts=" + starts);
  }
}`;
  // One worker: `starts` counts the instances of the room.
  await withServer(source, ["--js-cpu-budget-ms", "300", "--js-workers", "1"], async (server) => {
    const a = await connect(server.host, "r", "a");
    const bad = await connect(server.host, "r", "bad");
    const badClosed = closed(bad);
    a.send("who");
    await received(a, "players a,bad starts=1");
    a.send("loop"); // the instance goes; the next one's greeting of "bad" loops too
    await sleep(400);
    a.send("who");
    await received(a, "players a starts=3", 5000);
    assert.equal((await badClosed).code, 1011);
    assert.equal(a.readyState, WS.OPEN);
    a.close();
  });
});

test("a bundle that does not load is refused at start, naming the error", async () => {
  const dir = project({
    "partykit.json": manifest,
    "src/server.ts": `throw new Error("top-level failure"); export default class {}`,
  });
  await assert.rejects(startProject(dir), /top-level failure/);
  const noExport = project({ "partykit.json": manifest, "src/server.ts": `export const x = 1;` });
  await assert.rejects(startProject(noExport), /export default a class/);
  const syntax = project({ "partykit.json": manifest, "src/server.ts": `export default class {` });
  await assert.rejects(startProject(syntax), /esbuild failed/);
  // Without unenv in its node_modules, a project's Node.js built-ins do not bundle, and
  // the error says where they come from.
  const node = project({ "partykit.json": manifest, "src/server.ts": `import { Buffer } from "node:buffer"; export default { onRequest() { return new Response(Buffer.from("x").toString("hex")); } };` });
  await assert.rejects(startProject(node), /node:buffer[\s\S]*npm install --save-dev partykit/);
});

test("a dependency's `partykit` export condition is the one bundled, as PartyKit's build picks it", async () => {
  const dir = project({
    "partykit.json": manifest,
    "node_modules/dual/package.json": JSON.stringify({
      name: "dual",
      exports: { ".": { partykit: "./partykit.js", workerd: "./workerd.js", default: "./default.js" } },
    }),
    "node_modules/dual/partykit.js": `export const built = "partykit";`,
    "node_modules/dual/workerd.js": `export const built = "workerd";`,
    "node_modules/dual/default.js": `export const built = "default";`,
    "src/server.ts": `import { built } from "dual"; export default { onRequest() { return new Response(built); } };`,
  });
  const server = await startProject(dir);
  try {
    assert.equal(await (await fetch(`http://${server.host}/parties/main/x`)).text(), "partykit");
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("partykit.json's build.alias reaches esbuild, over a built-in's alias too", async () => {
  const dir = project({
    "partykit.json": JSON.stringify({
      name: "aliased",
      main: "src/server.ts",
      build: { alias: { "greeting-lib": "./src/greeting.ts", "node:events": "./src/events.ts" } },
    }),
    "src/greeting.ts": `export const greeting = "hello from an alias";`,
    "src/events.ts": `export const which = "the project's events";`,
    "src/server.ts": `import { greeting } from "greeting-lib"; import { which } from "node:events";
export default { onRequest() { return new Response(greeting + ", " + which); } };`,
  });
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(fileURLToPath(new URL("node_modules/unenv", import.meta.url)), join(dir, "node_modules/unenv"));
  const server = await startProject(dir);
  try {
    assert.equal(await (await fetch(`http://${server.host}/parties/main/x`)).text(), "hello from an alias, the project's events");
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("Node.js built-ins bundle as unenv's modules; an installed npm package of a built-in's name stays that package", async () => {
  const dir = project({
    "partykit.json": manifest,
    ".env": "GREETING=hi\n",
    // A project's own polyfill of a built-in (readable-stream brings this one).
    "node_modules/string_decoder/package.json": JSON.stringify({ name: "string_decoder", main: "index.js" }),
    "node_modules/string_decoder/index.js": `exports.StringDecoder = class { write() { return "npm's decoder"; } };`,
    "src/server.ts": `
import { StringDecoder } from "string_decoder";
import { env } from "node:process";
import posixPath from "node:path/posix";
import { Buffer } from "node:buffer";
import repl from "node:repl";
const required = require("buffer");
export default {
  onRequest() {
    return Response.json({
      decoder: new StringDecoder().write(),
      env: env.GREETING,
      posix: posixPath.join("a", "b"),
      oneBuffer: required.Buffer === Buffer,
      // unenv has no repl: its mock stands in (PartyKit's build does the same).
      repl: typeof repl,
    });
  },
};`,
  });
  // The project finds the unenv that tests/compat installed, as a PartyKit project finds
  // the one partykit brings.
  symlinkSync(fileURLToPath(new URL("node_modules/unenv", import.meta.url)), join(dir, "node_modules/unenv"));
  const server = await startProject(dir);
  try {
    assert.deepEqual(await (await fetch(`http://${server.host}/parties/main/x`)).json(), {
      decoder: "npm's decoder",
      env: "hi",
      posix: "a/b",
      oneBuffer: true,
      repl: "function",
    });
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("conclave dev rebuilds on a file change: rooms run the new code, sockets stay open; a broken change keeps the old code", async () => {
  const source = (v) => `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string, sender: Party.Connection) { sender.send("${v}"); }
}`;
  const dir = project({ "partykit.json": manifest, "src/server.ts": source("one") });
  const server = await startProject(dir);
  try {
    const ws = await connect(server.host, "r", "x");
    ws.send("?");
    assert.equal(await reply(ws), "one");
    writeFileSync(join(dir, "src/server.ts"), source("two"));
    let got = "one";
    for (let i = 0; i < 100 && got !== "two"; i++) {
      await sleep(100);
      ws.send("?");
      got = await reply(ws);
    }
    assert.equal(got, "two");
    writeFileSync(join(dir, "src/server.ts"), "export default class {");
    await sleep(1500);
    ws.send("?");
    assert.equal(await reply(ws), "two");
    assert.match(server.stderr(), /rebuild failed/);
    assert.equal(ws.readyState, WS.OPEN);
    ws.close();
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("a room its timers drive runs the new code after a rebuild, with no client event", async () => {
  const source = (v) => `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onStart() { setInterval(() => this.room.broadcast("${v}"), 50); }
}`;
  const dir = project({ "partykit.json": manifest, "src/server.ts": source("one") });
  const server = await startProject(dir);
  try {
    const ws = await connect(server.host, "r", "x");
    await received(ws, "one");
    writeFileSync(join(dir, "src/server.ts"), source("two"));
    await received(ws, "two", 15000);
    assert.equal(ws.readyState, WS.OPEN);
    ws.close();
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("conclave dev serves the project's static files again after a change, and does not rebuild for what its client build wrote", async () => {
  const site = JSON.stringify({ name: "site-test", main: "src/server.ts", serve: { path: "public", build: "src/client.ts" } });
  const dir = project({
    "partykit.json": site,
    "src/server.ts": "export default class { constructor(room) {} }",
    "src/client.ts": 'console.log("client one");',
    "public/index.html": "page one",
  });
  const server = await startProject(dir);
  const get = async (path) => (await fetch(`http://${server.host}${path}`)).text();
  const until = async (path, text) => {
    let got;
    for (let i = 0; i < 100 && got !== text; i++) {
      got = await get(path);
      if (got !== text) await sleep(100);
    }
    assert.equal(got, text, path);
  };
  try {
    assert.equal(await get("/"), "page one");
    assert.match(await get("/dist/client.js"), /client one/);
    writeFileSync(join(dir, "public/index.html"), "page two");
    await until("/", "page two");
    writeFileSync(join(dir, "src/client.ts"), 'console.log("client two");');
    for (let i = 0; i < 100 && !(await get("/dist/client.js")).includes("client two"); i++) await sleep(100);
    assert.match(await get("/dist/client.js"), /client two/);
    // The build's own output is no change: no build runs again (each would rewrite it).
    const written = () => statSync(join(dir, "public/dist/client.js")).mtimeMs;
    await sleep(1500);
    const before = written();
    await sleep(2000);
    assert.equal(written(), before, "dist/client.js was written again with nothing changed");
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("crons run the main party's onCron on their schedule, each tick once; a failing tick does not stop the next", async () => {
  // Every second (a sixth field in front, for seconds: Conclave's, not Cloudflare's).
  const crons = { fast: "* * * * * *", yearly: "0 0 1 1 *" };
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onRequest(req: Party.Request) {
    const runs = (await this.room.storage.get<unknown[]>("runs")) ?? [];
    if (req.method === "POST") { runs.push(await req.json()); await this.room.storage.put("runs", runs); }
    return Response.json(runs);
  }
  static async onCron(cron: Party.Cron, lobby: Party.CronLobby) {
    if ((cron.scheduledTime / 1000) % 3 === 0) throw new Error("every third second fails");
    await lobby.parties.main.get("log").fetch({ method: "POST", body: JSON.stringify({ name: cron.name, cron: cron.cron, at: cron.scheduledTime }) });
  }
}`;
  const dir = project({ "partykit.json": JSON.stringify({ name: "cron-test", main: "src/server.ts", crons }), "src/server.ts": source });
  const server = await startProject(dir);
  try {
    let runs = [];
    // Four ticks that did not fail span a failing one.
    for (let i = 0; i < 150 && runs.length < 4; i++) {
      await sleep(100);
      runs = await (await fetch(`http://${server.host}/parties/main/log`)).json();
    }
    assert.ok(runs.length >= 4, JSON.stringify(runs));
    for (const run of runs) {
      assert.equal(run.name, "fast");
      assert.equal(run.cron, "* * * * * *");
      assert.equal(run.at % 1000, 0, "scheduledTime is the tick's own time");
    }
    // One tick each second, none twice, none missed but those that threw.
    for (let i = 1; i < runs.length; i++) {
      const failedBetween = (runs[i - 1].at / 1000 + 1) % 3 === 0;
      assert.equal(runs[i].at - runs[i - 1].at, failedBetween ? 2000 : 1000, JSON.stringify(runs));
    }
    assert.match(server.stderr(), /onCron failed.*every third second fails/);
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("build.command runs before the bundle, and in conclave dev again when what it watches changes", async () => {
  // Code generation, as projects use it: data/word.txt becomes gen/word.ts.
  const make = `import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
mkdirSync("gen", { recursive: true });
writeFileSync("gen/word.ts", "export const word = " + JSON.stringify(readFileSync("data/word.txt", "utf8").trim()) + ";\\n");`;
  const source = `
import type * as Party from "partykit/server";
import { word } from "../gen/word";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onRequest() { return new Response(word); }
}`;
  const manifest = { name: "command-test", main: "src/server.ts", build: { command: "node make.mjs", watch: "data" } };
  const dir = project({
    "partykit.json": JSON.stringify(manifest),
    "make.mjs": make,
    "data/word.txt": "one",
    "src/server.ts": source,
  });
  const server = await startProject(dir);
  try {
    const word = async () => (await fetch(`http://${server.host}/parties/main/r`)).text();
    assert.equal(await word(), "one");
    writeFileSync(join(dir, "data/word.txt"), "two");
    let got;
    for (let i = 0; i < 100 && (got = await word()) !== "two"; i++) await sleep(100);
    assert.equal(got, "two");
  } finally {
    await server.stop();
    server.cleanup();
  }
});

test("a build.command that fails stops conclave dev from starting, naming it", async () => {
  const manifest = { name: "command-fails", main: "src/server.ts", build: { command: "exit 7" } };
  const dir = project({ "partykit.json": JSON.stringify(manifest), "src/server.ts": "export default class {}" });
  await assert.rejects(startProject(dir), /build\.command "exit 7" failed/);
});

test("a socket whose getConnectionTags costs the instance its CPU budget joins through a fresh instance, which tags it", async () => {
  const source = `
import type * as Party from "partykit/server";
let starts = 0;
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onStart() { starts++; }
  getConnectionTags(conn: Party.Connection) {
    if (conn.id === "hog" && starts === 1) { for (;;) {} }
    return ["t"];
  }
  onConnect(conn: Party.Connection) { conn.send("welcome " + conn.id + " tags=" + conn.tags.join("+") + " starts=" + starts); }
}`;
  // One worker: `starts` counts the instances of the room.
  await withServer(source, ["--js-cpu-budget-ms", "300", "--js-workers", "1"], async (server) => {
    const other = await connect(server.host, "r", "other");
    await received(other, "welcome other tags=other+t starts=1");
    const hog = await connect(server.host, "r", "hog");
    await received(hog, "welcome hog tags=hog+t starts=2", 5000);
    // The fresh instance greeted the socket it inherited.
    await received(other, "welcome other tags=other+t starts=2");
    assert.equal(hog.readyState, WS.OPEN);
    hog.close();
    other.close();
  });
});

test("the project's parties sit next to the built-ins with their env, cannot reach the natives, and a plain `conclave dev` has no JavaScript", async () => {
  const dir = project({
    "partykit.json": JSON.stringify({ main: "src/server.ts", parties: { chat: "src/server.ts" }, vars: { A: "from vars", B: "b" } }),
    ".env": "A=from dotenv\n",
    "src/server.ts": `export default { onRequest(req: Request, room: any) { return Response.json({ env: room.env, name: room.name, natives: typeof (globalThis as any).__native }); } };`,
  });
  const server = await startProject(dir);
  try {
    const res = await fetch(`http://${server.host}/parties/chat/x`);
    // The runtime's natives are not within reach of the party's code.
    assert.deepEqual(await res.json(), { env: { A: "from dotenv", B: "b" }, name: "chat", natives: "undefined" });
    const counter = await fetch(`http://${server.host}/parties/counter/x`);
    assert.deepEqual(await counter.json(), { value: 0 });
    // Without a static onFetch, a request outside /parties/ is a 404.
    const outside = await fetch(`http://${server.host}/elsewhere`);
    assert.deepEqual([outside.status, await outside.text()], [404, "Not found: use /parties/:party/:room"]);
  } finally {
    await server.stop();
    server.cleanup();
  }
  const plain = await startServer();
  try {
    const res = await fetch(`http://${plain.host}/parties/chat/x`);
    assert.deepEqual(Object.keys(await res.json()), ["messages"]);
    assert.equal((await fetch(`http://${plain.host}/elsewhere`)).status, 404);
  } finally {
    await plain.stop();
    plain.cleanup();
  }
});

test("a fetch a handler does not await goes on with the room when it settles after the handler", async () => {
  // The upstream answers only after the handler has long returned.
  const upstream = await upstreamServer((req, res) => setTimeout(() => res.end("late news"), 300));
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string) {
    fetch("http://${upstream.target}/")
      .then((res) => res.text())
      .then(async (text) => {
        await this.room.storage.put("news", text);
        this.room.broadcast("fetched " + text + ", stored " + (await this.room.storage.get("news")));
      });
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("go");
      await received(ws, "fetched late news, stored late news", 5000);
      ws.close();
    });
  } finally {
    upstream.close();
  }
});

test("a fetched body is read as it arrives, so a party relays a streamed answer chunk by chunk", async () => {
  // The upstream writes its second part only once the client has the first: a body read
  // whole before it is given would never be relayed.
  let goOn;
  const clientHasFirst = new Promise((ok) => (goOn = ok));
  const upstream = await upstreamServer(async (req, res) => {
    if (req.url === "/big") {
      res.end("x".repeat(3 * 1024 * 1024));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write("data: first\n\n");
    await clientHasFirst;
    res.write("data: second\n\n");
    res.end();
  });
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    if (message === "big") {
      const text = await (await fetch("http://${upstream.target}/big")).text();
      sender.send("big " + text.length);
      return;
    }
    const res = await fetch("http://${upstream.target}/events");
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) sender.send("chunk " + decoder.decode(chunk, { stream: true }).trim());
    sender.send("end");
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("go");
      await received(ws, "chunk data: first", 5000);
      goOn();
      await received(ws, "chunk data: second", 5000);
      await received(ws, "end", 5000);
      // A body of many reads comes whole to text().
      ws.send("big");
      await received(ws, `big ${3 * 1024 * 1024}`, 10000);
      ws.close();
    });
  } finally {
    goOn();
    upstream.close();
  }
});

test("a small body the party never reads is read ahead, so its connection is used again; bytes before a broken body are given before its error", async () => {
  const sockets = new Set();
  const upstream = await upstreamServer((req, res) => {
    sockets.add(req.socket);
    if (req.url === "/broken") {
      res.writeHead(200);
      res.write("partial");
      setTimeout(() => res.destroy(), 200);
      return;
    }
    // The body comes in three parts, after the head: not with it.
    res.write("small");
    setTimeout(() => res.write(" ans"), 10);
    setTimeout(() => res.end("wer"), 20);
  });
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    const base = "http://${upstream.target}";
    if (message === "ignore") {
      for (let i = 0; i < 5; i++) {
        await fetch(base + "/hook");
        await new Promise((ok) => setTimeout(ok, 500));
      }
      sender.send("sent 5");
      return;
    }
    const reader = (await fetch(base + "/broken")).body!.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        sender.send("got " + decoder.decode(value));
      }
      sender.send("ended");
    } catch (e) {
      sender.send((e as Error).name);
    }
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("ignore");
      assert.equal(await reply(ws, 5000), "sent 5");
      assert.equal(sockets.size, 1, "each unread answer gave its connection back for the next");
      ws.send("broken");
      assert.equal(await reply(ws, 5000), "got partial");
      assert.equal(await reply(ws, 5000), "TypeError");
      ws.close();
    });
  } finally {
    upstream.close();
  }
});

test("an AbortSignal stops a fetch waiting for its answer or reading its body, and so does cancelling the body", async () => {
  // Each request names itself; the upstream records when the party let go of it.
  const closedEarly = [];
  const asked = [];
  const upstream = await upstreamServer((req, res) => {
    asked.push(req.url);
    res.on("close", () => { if (!res.writableEnded) closedEarly.push(req.url); });
    if (req.url === "/silent") return; // never answers
    res.writeHead(200);
    res.write("part one");
    // and never ends
  });
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    const base = "http://${upstream.target}";
    try {
      if (message === "timeout") {
        await fetch(base + "/silent", { signal: AbortSignal.timeout(200) });
      } else if (message === "already") {
        await fetch(base + "/never-sent", { signal: AbortSignal.abort() });
      } else if (message === "body") {
        const controller = new AbortController();
        const res = await fetch(base + "/body", { signal: controller.signal });
        const reader = res.body!.getReader();
        const first = new TextDecoder().decode((await reader.read()).value);
        sender.send("read " + first);
        setTimeout(() => controller.abort(), 100);
        await reader.read();
      } else if (message === "many") {
        // Past 256 fetches waiting for their answer, the next is refused.
        const controller = new AbortController();
        const waiting = [];
        for (let i = 0; i < 256; i++) waiting.push(fetch(base + "/silent", { signal: controller.signal }).catch(() => {}));
        await new Promise((ok) => setTimeout(ok, 100));
        try {
          await fetch(base + "/silent");
        } finally {
          controller.abort();
          await Promise.all(waiting);
        }
      } else if (message === "cancel") {
        const res = await fetch(base + "/cancel");
        await res.body!.cancel();
        sender.send("cancelled");
        return;
      }
      sender.send("not stopped");
    } catch (e) {
      sender.send((e as Error).name + ": " + (e as Error).message);
    }
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("timeout");
      assert.equal(await reply(ws, 5000), "TimeoutError: The operation timed out");
      ws.send("already");
      assert.equal(await reply(ws, 5000), "AbortError: This operation was aborted");
      ws.send("body");
      assert.equal(await reply(ws, 5000), "read part one");
      assert.equal(await reply(ws, 5000), "AbortError: This operation was aborted");
      ws.send("cancel");
      assert.equal(await reply(ws, 5000), "cancelled");
      // The party let go of each request it stopped; the one aborted before it began was
      // never sent.
      const deadline = Date.now() + 5000;
      while (closedEarly.length < 3 && Date.now() < deadline) await sleep(50);
      assert.deepEqual(closedEarly.sort(), ["/body", "/cancel", "/silent"]);
      assert.deepEqual(asked.sort(), ["/body", "/cancel", "/silent"]);
      ws.send("many");
      assert.equal(await reply(ws, 10000), "TypeError: fetch: this room has 256 fetches waiting for their answer");
      ws.close();
    });
  } finally {
    upstream.close();
  }
});

test("a fetch waits for the writes made before it, as a Durable Object's output gate holds it, and is not sent when they are discarded", async () => {
  const hits = [];
  const upstream = await upstreamServer((req, res) => {
    hits.push(req.url);
    res.end("ok");
  });
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    if (message === "write, fetch, throw") {
      this.room.storage.put("k", "discarded");
      fetch("http://${upstream.target}/discarded").catch(() => {});
      throw new Error("after the fetch");
    }
    if (message === "write, fetch") {
      this.room.storage.put("k", "kept");
      const res = await fetch("http://${upstream.target}/kept");
      sender.send("fetched " + (await res.text()) + ", stored " + (await this.room.storage.get("k")));
    }
    if (message === "write, fetch, block on it") {
      this.room.storage.put("b", 1);
      const pending = fetch("http://${upstream.target}/blocked");
      // The request is made (held behind the write) before the block begins.
      for (let i = 0; i < 5; i++) await null;
      // The block holds the event to its end, so the fetch goes without waiting on it.
      const res = await this.room.blockConcurrencyWhile(() => pending);
      sender.send("block got " + (await res.text()));
    }
    if (message === "fetch the room") {
      await this.room.storage.put("n", 1);
      const res = await this.room.context.parties.main.get(this.room.id + "-other").fetch({ method: "POST" });
      sender.send("room said " + (await res.text()));
    }
  }
  async onRequest() {
    return new Response("hello");
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("write, fetch, throw");
      ws.send("write, fetch");
      assert.equal(await reply(ws, 5000), "fetched ok, stored kept");
      assert.deepEqual(hits, ["/kept"]);
      ws.send("fetch the room");
      assert.equal(await reply(ws, 5000), "room said hello");
      ws.send("write, fetch, block on it");
      assert.equal(await reply(ws, 5000), "block got ok");
      ws.close();
    });
  } finally {
    upstream.close();
  }
});

test("a transaction whose body awaits a fetch holds its event to its end, and rolls back whole", async () => {
  const upstream = await upstreamServer((req, res) => setTimeout(() => res.end("late"), 300));
  const source = `
import type * as Party from "partykit/server";
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string) {
    // Not awaited: the event still lasts until the transaction is done.
    this.room.storage
      .transaction(async (txn) => {
        await txn.put("k", "in the transaction");
        await fetch("http://${upstream.target}/");
        txn.rollback();
      })
      .then(() => this.room.broadcast("rolled back"), (e) => this.room.broadcast("refused: " + e.message));
  }
  async onRequest() {
    return new Response(String(await this.room.storage.get("k")));
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", upstream.target], async (server) => {
      const ws = await connect(server.host, "r", "a");
      ws.send("go");
      assert.equal(await reply(ws, 5000), "rolled back");
      assert.equal(await (await fetch(`http://${server.host}/parties/main/r`)).text(), "undefined");
      ws.close();
    });
  } finally {
    upstream.close();
  }
});

test("a handler that fails with a transaction of its still open: the transaction ends in its event, and goes with it", async () => {
  const source = `
import type * as Party from "partykit/server";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  async onMessage(message: string, sender: Party.Connection) {
    if (message === "read") {
      sender.send([await this.room.storage.get("a"), await this.room.storage.get("b")].join(","));
      return;
    }
    void this.room.storage.transaction(async (txn) => {
      await txn.put("a", 1);
      await sleep(100);
      await txn.put("b", 2);
    });
    throw new Error("failed with a transaction open");
  }
}`;
  await withServer(source, [], async (server) => {
    const ws = await connect(server.host, "r", "a");
    ws.send("go");
    await sleep(300);
    ws.send("read");
    // Unlike PartyKit, a failed handler's writes are discarded: all of the transaction's.
    assert.equal(await reply(ws), ",");
    ws.close();
  });
});

test("a handler that throws at once while its blockConcurrencyWhile runs: the room stays held until the block ends", async () => {
  const source = `
import type * as Party from "partykit/server";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string, sender: Party.Connection) {
    if (message === "ping") return sender.send("pong");
    this.room.blockConcurrencyWhile(() => sleep(300));
    JSON.parse("{"); // throws before the handler returns
  }
}`;
  await withServer(source, [], async (server) => {
    const ws = await connect(server.host, "r", "a");
    ws.send("go");
    const sent = Date.now();
    ws.send("ping");
    assert.equal(await reply(ws), "pong");
    const waited = Date.now() - sent;
    assert.ok(waited >= 250, `pong after ${waited} ms, inside the block`);
    ws.close();
  });
});

test("fetch reaches the hosts the node allows, and no other", async () => {
  const upstream = await upstreamServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      if (req.url === "/moved") {
        res.writeHead(302, { location: "/hook?from=moved" });
        return res.end();
      }
      if (req.url === "/moved-away") {
        res.writeHead(307, { location: `http://127.0.0.2:${upstream.port}/` });
        return res.end();
      }
      res.writeHead(201, { "content-type": "application/json", "x-upstream": "yes" });
      res.end(JSON.stringify({ method: req.method, path: req.url, body, auth: req.headers.authorization ?? null, host: req.headers.host }));
    });
  });
  const { target } = upstream;
  const source = `
export default class Server {
  async onRequest(req: Request) {
    const to = new URL(req.url).searchParams.get("to")!;
    try {
      // A Host of the party's own is not sent: a proxy routing by it would reach another site.
      const redirect = new URL(req.url).searchParams.get("redirect") ?? "follow";
      const res = await fetch(to, { method: "POST", body: "ping", redirect, headers: { authorization: "Bearer t", host: "admin.internal" } });
      const json = res.status === 302 ? null : await res.json();
      return Response.json({ status: res.status, upstream: res.headers.get("x-upstream"), json, url: res.url, redirected: res.redirected });
    } catch (e) {
      return Response.json({ error: (e as Error).message });
    }
  }
}`;
  try {
    await withServer(source, ["--js-fetch-allow", target], async (server) => {
      const ask = async (to) => (await fetch(`http://${server.host}/parties/main/f?to=${encodeURIComponent(to)}`)).json();
      assert.deepEqual(await ask(`http://${target}/hook?a=1`), {
        status: 201,
        upstream: "yes",
        json: { method: "POST", path: "/hook?a=1", body: "ping", auth: "Bearer t", host: target },
        url: `http://${target}/hook?a=1`,
        redirected: false,
      });
      // A 302 is followed as fetch follows it: a POST becomes a GET without its body.
      assert.deepEqual(await ask(`http://${target}/moved`), {
        status: 201,
        upstream: "yes",
        json: { method: "GET", path: "/hook?from=moved", body: "", auth: "Bearer t", host: target },
        url: `http://${target}/hook?from=moved`,
        redirected: true,
      });
      const manual = await (await fetch(`http://${server.host}/parties/main/f?redirect=manual&to=${encodeURIComponent(`http://${target}/moved`)}`)).json();
      assert.deepEqual([manual.status, manual.redirected], [302, false]);
      // Each hop is allowed or refused on its own.
      const away = await ask(`http://${target}/moved-away`);
      assert.match(away.error, /127\.0\.0\.2.* is not allowed/);
      const refused = await ask(`http://127.0.0.2:${upstream.port}/`);
      assert.match(refused.error, /is not allowed .*--js-fetch-allow/);
      const ftp = await ask("ftp://example.invalid/");
      assert.match(ftp.error, /only http:\/\/ and https:\/\//);
    });
  } finally {
    upstream.close();
  }
});

// A certificate for 127.0.0.1 signed by a test CA whose key was thrown away (fixtures/tls).
const fixture = (name) => fileURLToPath(new URL(`fixtures/tls/${name}`, import.meta.url));

test("fetch over https trusts the system's certificate authorities and --js-fetch-ca's, and no other", async () => {
  const tls = { key: readFileSync(fixture("server.key")), cert: readFileSync(fixture("server.pem")) };
  const upstream = await upstreamServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`secure ${req.method} ${req.url}`);
  }, tls);
  const { target } = upstream;
  const source = `
export default class Server {
  async onRequest(req: Request) {
    try {
      const res = await fetch(new URL(req.url).searchParams.get("to")!);
      return new Response(await res.text());
    } catch (e) {
      return new Response("error: " + (e as Error).message);
    }
  }
}`;
  const ask = async (server, to) => (await fetch(`http://${server.host}/parties/main/f?to=${encodeURIComponent(to)}`)).text();
  try {
    await withServer(source, ["--js-fetch-allow", target, "--js-fetch-ca", fixture("ca.pem")], async (server) => {
      assert.equal(await ask(server, `https://${target}/hook?a=1`), "secure GET /hook?a=1");
    });
    // Without the test CA, the upstream's certificate is refused, saying why.
    await withServer(source, ["--js-fetch-allow", target], async (server) => {
      assert.match(await ask(server, `https://${target}/`), /^error: fetch failed: .*(UnknownIssuer|unknown issuer)/i);
    });
  } finally {
    upstream.close();
  }
  // A CA file without a certificate stops the start.
  const empty = join(tempDir(), "empty.pem");
  writeFileSync(empty, "");
  await assert.rejects(
    startProject(project({ "partykit.json": manifest, "src/server.ts": source }), { args: ["--js-fetch-ca", empty] }),
    /holds no certificate/,
  );
});
