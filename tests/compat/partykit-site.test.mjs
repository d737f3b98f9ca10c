// A PartyKit project's site (tests/compat/partykit-site): the static files `serve` names in
// partykit.json, the client code `serve.build` builds into them, the single-page-app
// fallback, the 404 page, and `assets.fetch` in rooms and in onFetch.
//
// The expectations are PartyKit's: `COMPAT_AGAINST=partykit node --test
// partykit-site.test.mjs` runs them against PartyKit's dev server. Where Conclave differs on
// purpose, the test says so ("Conclave:").
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { resolve, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startProject, startPartykit } from "./harness.mjs";

const project = resolve(dirname(fileURLToPath(import.meta.url)), "partykit-site");
const onPartykit = process.env.COMPAT_AGAINST === "partykit";

let server;
before(async () => {
  server = onPartykit ? await startPartykit(project) : await startProject(project);
});
after(async () => {
  await server?.stop();
  server?.cleanup();
});

const get = (path, init) => fetch(`http://${server.host}${path}`, init);
const file = (path) => readFileSync(join(project, "public", path));

/** A GET of `path` as a browser's page navigation sends it (fetch would send its own
 * `Sec-Fetch-Mode`): {status, body}. */
function navigate(path) {
  return new Promise((ok, fail) => {
    const [hostname, port] = server.host.split(":");
    const req = http.get({ hostname, port, path, headers: { "sec-fetch-mode": "navigate" } }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode, body }));
    });
    req.on("error", fail);
  });
}

test("the served directory's files answer their paths, with their content types", async () => {
  const home = await get("/");
  assert.equal(home.status, 200);
  assert.match(home.headers.get("content-type"), /^text\/html/);
  assert.equal(await home.text(), file("index.html").toString());
  assert.equal(await (await get("/index.html")).text(), file("index.html").toString());
  // A path ending in / is its directory's index.html.
  assert.equal(await (await get("/docs/")).text(), file("docs/index.html").toString());
  const logo = await get("/logo.png");
  assert.equal(logo.status, 200);
  assert.equal(logo.headers.get("content-type"), "image/png");
  assert.deepEqual(Buffer.from(await logo.arrayBuffer()), file("logo.png"));
  const data = await get("/data.json?v=3");
  assert.match(data.headers.get("content-type"), /^application\/json/);
  assert.deepEqual(await data.json(), { answer: 42 });
  const head = await get("/logo.png", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-type"), "image/png");
  assert.equal(head.headers.get("content-length"), String(file("logo.png").length));
  assert.equal(await head.text(), "");
});

test("serve.build's client code is served from dist, with PARTYKIT_HOST defined", async () => {
  const client = await get("/dist/client.js");
  assert.equal(client.status, 200);
  assert.match(client.headers.get("content-type"), /javascript/);
  const code = await client.text();
  assert.match(code, /the site's client, for/);
  assert.doesNotMatch(code, /PARTYKIT_HOST/);
  if (onPartykit) {
    assert.match(code, /127\.0\.0\.1:\d+/);
  } else {
    // Conclave: the host that served the page, whichever gateway or address that was.
    assert.match(code, /location\.host/);
  }
  assert.equal((await get("/dist/client.js.map")).status, 200, "a source map beside it");
});

test("what no file answers goes to onFetch, then to the 404 page", async () => {
  const hello = await get("/api/hello", { method: "POST", body: "x" });
  assert.deepEqual([hello.status, await hello.text()], [200, "hello from onFetch, POST"]);
  // onFetch answers nothing: the site's 404.html, with status 404.
  for (const path of ["/no/such/page", "/.secret", "/docs"]) {
    const missing = await get(path);
    assert.equal(missing.status, 404, path);
    assert.equal(await missing.text(), file("404.html").toString(), path);
  }
  // Only GET and HEAD are answered by files.
  const posted = await get("/index.html", { method: "POST", body: "x" });
  assert.equal(posted.status, 404);
});

test("a single-page app's page navigations to paths with no file get index.html", async () => {
  const page = await navigate("/rooms/some-room");
  assert.deepEqual(page, { status: 200, body: file("index.html").toString() });
  // A script's request for the same path is no navigation: the 404 page.
  assert.equal((await get("/rooms/some-room")).status, 404);
});

test("assets.fetch reads the files in onFetch and in a room", async () => {
  const outside = await (await get("/api/asset")).json();
  assert.equal(outside.status, 200);
  assert.match(outside.type, /^application\/json/);
  assert.equal(outside.text, file("data.json").toString());
  assert.equal(outside.missing, null);
  const room = await get("/parties/main/lobby");
  assert.equal(await room.text(), `room lobby read ${file("data.json").toString()}`);
});

test("Conclave: an unchanged file is answered 304 to its ETag", { skip: onPartykit && "partykit dev sends no ETag" }, async () => {
  const first = await get("/logo.png");
  const etag = first.headers.get("etag");
  assert.ok(etag, "an ETag");
  assert.equal(first.headers.get("cache-control"), "no-cache");
  const again = await get("/logo.png", { headers: { "if-none-match": etag } });
  assert.equal(again.status, 304);
  assert.equal(await again.text(), "");
});

test("/__scheduled__?cron=NAME runs the main party's onCron in the dev server", async () => {
  const before = Date.now();
  const ran = await get("/__scheduled__?cron=tidy");
  assert.deepEqual([ran.status, await ran.text()], [200, "ran cron tidy: 0 3 * * *"]);
  // (Not a tick of the schedule itself, should the test run at 03:00 UTC: those fall on
  // whole minutes.)
  const runs = (await (await get("/parties/main/cron-log")).json()).filter((r) => r.scheduledTime % 60000 !== 0);
  assert.equal(runs.length, 1);
  assert.deepEqual({ ...runs[0], scheduledTime: 0 }, { name: "tidy", cron: "0 3 * * *", scheduledTime: 0, env: "object" });
  assert.ok(runs[0].scheduledTime >= before - 1000 && runs[0].scheduledTime <= Date.now() + 1000, `${runs[0].scheduledTime}`);
});
