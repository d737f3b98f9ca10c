// How many messages a room gets through when each message's handler awaits an outside
// HTTP service (docs/benchmarks.md, "a handler that awaits"). The service (started here,
// on UPSTREAM_PORT) answers after DELAY ms. CLIENTS clients in one room of
// ws://127.0.0.1:PORT/parties/main/ send MESSAGES messages between them at once; the
// room (scripts/awaiting-handler, which fetches the URL each message is and broadcasts
// the answer) must be allowed to fetch 127.0.0.1:UPSTREAM_PORT. Prints the time until
// the first client has every answer, and the latency percentiles (ms).
//
//   conclave dev --port 18999 --project scripts/awaiting-handler \
//     --js-fetch-allow 127.0.0.1:18997 --data-dir "$(mktemp -d)" &
//   node scripts/awaiting-handler.mjs 18999 18997 [MESSAGES=200] [CLIENTS=10] [DELAY=50]
//
// Needs `npm ci` in tests/compat (for `ws`).
import { createServer } from "node:http";
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";

const [port, upstreamPort] = process.argv.slice(2, 4).map(Number);
const messages = Number(process.argv[4] ?? 200);
const clients = Number(process.argv[5] ?? 10);
const delay = Number(process.argv[6] ?? 50);
if (!port || !upstreamPort) {
  console.error("usage: node scripts/awaiting-handler.mjs PORT UPSTREAM_PORT [MESSAGES] [CLIENTS] [DELAY_MS]");
  process.exit(2);
}

const upstream = createServer((req, res) => {
  setTimeout(() => res.end(req.url.slice(1)), delay);
});
await new Promise((ok) => upstream.listen(upstreamPort, "127.0.0.1", ok));

const url = `ws://127.0.0.1:${port}/parties/main/awaiting-${Date.now()}`;
const sockets = Array.from({ length: clients }, () => new WebSocket(url));
await Promise.all(sockets.map((s) => new Promise((open) => s.on("open", open))));

const sent = new Map();
const latencies = [];
const done = new Promise((ok) => {
  sockets[0].on("message", (data) => {
    const id = data.toString();
    latencies.push(performance.now() - sent.get(id));
    if (latencies.length === messages) ok();
  });
});
const started = performance.now();
for (let i = 0; i < messages; i++) {
  const id = `m${i}`;
  sent.set(id, performance.now());
  sockets[i % clients].send(`http://127.0.0.1:${upstreamPort}/${id}`);
}
const timeout = setTimeout(() => {
  console.error(`only ${latencies.length} of ${messages} answers in 120 s`);
  process.exit(1);
}, 120_000);
await done;
clearTimeout(timeout);
const total = performance.now() - started;
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))].toFixed(1);
console.log(
  `${messages} messages from ${clients} clients, service delay ${delay} ms: all answered in ${total.toFixed(0)} ms ` +
    `(${((messages * 1000) / total).toFixed(0)} messages/s); latency p50 ${at(0.5)} p90 ${at(0.9)} p99 ${at(0.99)} max ${at(1)} ms`,
);
for (const s of sockets) s.close();
upstream.close();
