// Yjs rooms under load, with the real y-partykit provider (tests/compat/node_modules):
//
//   node scripts/bench-yjs.mjs editors HOST [EDITORS] [RATE] [SECS]
//     EDITORS clients in one room (party `yjs`), each inserting one character RATE times a
//     second for SECS seconds; prints the updates applied per second as one observer sees
//     them, the deliveries per second (updates × clients), and whether every copy converged.
//   node scripts/bench-yjs.mjs raw-editors HOST [EDITORS] [RATE] [SECS] [SERVER_PIDS]
//     as `editors`, but the editors are bare WebSockets sending y-websocket updates from
//     their own documents and only counting what comes back (one observer, a real
//     provider, applies everything): 51 Yjs documents in one Node process saturate its
//     core long before a server does. With SERVER_PIDS (comma-separated) it also prints
//     the server's CPU seconds per 1,000 updates applied.
//   node scripts/bench-yjs.mjs late-joiner HOST [MB] [WAIT_MS]
//     one client writes an MB-megabyte document, everyone leaves, and WAIT_MS later (0: at
//     once, the document still in memory; past the server's idle timeout: loaded from
//     storage) a new client syncs it alone; prints the milliseconds from the new client's
//     start to its synced copy.
//   node scripts/bench-yjs.mjs documents HOST [ROOMS] [KB] SERVER_PID
//     opens ROOMS rooms, each with a KB-kilobyte document and one client; prints the
//     server's RSS growth per open document.
//
// Run the server with rate limits lifted: conclave dev --messages-per-second 1000000
// --message-burst 1000000 (and a --send-queue-bytes above the largest document).
import * as Y from "../tests/compat/node_modules/yjs/dist/yjs.mjs";
import YPartyKitProvider from "../tests/compat/node_modules/y-partykit/dist/provider.mjs";
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";
import * as encoding from "../tests/compat/node_modules/lib0/encoding.js";
import { readFileSync } from "node:fs";

const [mode, host, ...rest] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function client(room) {
  const doc = new Y.Doc();
  const p = new YPartyKitProvider(host, room, doc, { party: "yjs", WebSocketPolyfill: WebSocket });
  const synced = new Promise((ok) => (p.synced ? ok() : p.on("synced", (s) => s && ok())));
  return { doc, p, synced, text: doc.getText("t") };
}

function close(...clients) {
  for (const c of clients) {
    c.p.destroy();
    c.doc.destroy();
  }
}

async function until(check, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(10);
  }
  return false;
}

/** User + system CPU seconds of the processes `pids` (comma-separated), 0 without any. */
function serverCpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids.split(",").filter(Boolean)) {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
  }
  return ticks / 100;
}

/** Each client types one character RATE times a second for SECS seconds, on schedule. */
async function type(clients, rate, secs) {
  const ticks = rate * secs;
  const started = Date.now();
  for (let t = 0; t < ticks; t++) {
    for (const c of clients) c.text.insert(c.text.length, "x");
    await sleep(Math.max(0, started + ((t + 1) * 1000) / rate - Date.now()));
  }
  return { started, sent: ticks * clients.length };
}

function rssBytes(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line.split(/\s+/)[1]) * 1024;
}

if (mode === "editors") {
  const [editors = "50", rate = "10", secs = "10"] = rest.map(String);
  const room = `bench-${Date.now()}`;
  const clients = Array.from({ length: Number(editors) }, () => client(room));
  const observer = client(room);
  await Promise.all([...clients, observer].map((c) => c.synced));
  let seen = 0;
  observer.doc.on("update", () => seen++);
  const { started, sent } = await type(clients, Number(rate), Number(secs));
  const converged = await until(() => observer.text.length === sent && clients.every((c) => c.text.length === sent), 60000);
  const elapsed = (Date.now() - started) / 1000;
  console.log(JSON.stringify({
    editors: clients.length, offered_updates_per_sec: sent / Number(secs), updates_seen_by_observer: seen,
    applied_updates_per_sec: seen / elapsed, deliveries_per_sec: (seen * (clients.length + 1)) / elapsed,
    seconds_until_converged: elapsed, converged,
  }));
  close(...clients, observer);
} else if (mode === "raw-editors") {
  const [editors = "50", rate = "10", secs = "10", pids = ""] = rest.map(String);
  const room = `raw-${Date.now()}`;
  const observer = client(room);
  await observer.synced;
  let received = 0;
  const clients = await Promise.all(Array.from({ length: Number(editors) }, () => new Promise((ok, fail) => {
    const ws = new WebSocket(`ws://${host}/parties/yjs/${room}`);
    const doc = new Y.Doc();
    const text = doc.getText("t");
    doc.on("update", (update) => {
      const e = encoding.createEncoder();
      encoding.writeVarUint(e, 0); // sync
      encoding.writeVarUint(e, 2); // update
      encoding.writeVarUint8Array(e, update);
      ws.send(encoding.toUint8Array(e));
    });
    ws.on("message", () => received++);
    ws.on("open", () => ok({ ws, text }));
    ws.on("error", fail);
  })));
  const cpuBefore = serverCpuSeconds(pids);
  const { started, sent } = await type(clients, Number(rate), Number(secs));
  const converged = await until(() => observer.text.length === sent, 120000);
  const elapsed = (Date.now() - started) / 1000;
  const cpu = serverCpuSeconds(pids) - cpuBefore;
  console.log(JSON.stringify({
    editors: clients.length, offered_updates_per_sec: sent / Number(secs), applied_updates_per_sec: sent / elapsed,
    frames_received_by_editors: received, seconds_until_converged: elapsed, converged,
    ...(pids ? { server_cpu_seconds_per_1000_updates: (cpu * 1000) / sent } : {}),
  }));
  for (const c of clients) c.ws.close();
  close(observer);
} else if (mode === "late-joiner") {
  const [mb = "5", waitMs = "0"] = rest;
  const room = `late-${Date.now()}`;
  const writer = client(room);
  await writer.synced;
  const size = Math.round(Number(mb) * 1024 * 1024);
  writer.text.insert(0, "x".repeat(size));
  const stored = client(room);
  if (!(await until(() => stored.text.length === size, 120000))) throw new Error("the document never arrived");
  close(writer, stored);
  await sleep(Number(waitMs));
  const started = Date.now();
  const late = client(room);
  const ok = await until(() => late.text.length === size, 120000);
  console.log(JSON.stringify({ document_mb: Number(mb), waited_ms: Number(waitMs), late_joiner_sync_ms: Date.now() - started, ok }));
  close(late);
} else if (mode === "documents") {
  const [rooms = "100", kb = "1", pid] = rest;
  const before = rssBytes(pid);
  const clients = [];
  for (let i = 0; i < Number(rooms); i++) {
    const c = client(`docs-${kb}-${i}-${Date.now()}`);
    await c.synced;
    c.text.insert(0, "x".repeat(Number(kb) * 1024));
    clients.push(c);
  }
  await sleep(2000);
  const after = rssBytes(pid);
  console.log(JSON.stringify({ rooms: Number(rooms), document_kb: Number(kb), server_rss_bytes_per_document: (after - before) / Number(rooms) }));
  close(...clients);
} else {
  console.error("modes: editors, late-joiner, documents (see the top of this file)");
  process.exit(2);
}
process.exit(0);
