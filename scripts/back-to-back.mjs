// How long the second of two broadcasts a millisecond apart takes to reach a client that
// also talks (docs/benchmarks.md, "Nagle's algorithm on client sockets").
//
//   node scripts/back-to-back.mjs PORT [SECONDS]
//
// Two clients in one room of ws://127.0.0.1:PORT/parties/main/ (a relay: each message goes
// to the others). A sends every 20 ms, so its TCP stack holds acknowledgements back to
// carry them on its own data; B sends two messages 1 ms apart every 50 ms. Prints the
// latency percentiles (ms, B's send to A's receipt) of the first and the second of each
// pair. Needs `npm ci` in tests/compat (for `ws`).
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";

const port = Number(process.argv[2]);
const secs = Number(process.argv[3] ?? 5);
if (!port) {
  console.error("usage: node scripts/back-to-back.mjs PORT [SECONDS]");
  process.exit(2);
}
const url = `ws://127.0.0.1:${port}/parties/main/back-to-back-${Date.now()}`;
const a = new WebSocket(url);
const b = new WebSocket(url);
await Promise.all([a, b].map((s) => new Promise((open) => s.on("open", open))));
const latency = { first: [], second: [] };
a.on("message", (data) => {
  const [from, which, sent] = data.toString().split(":");
  if (from === "B") latency[which].push(performance.now() - Number(sent));
});
const chat = setInterval(() => a.send(`A:chat:${performance.now()}`), 20);
const pairs = setInterval(() => {
  b.send(`B:first:${performance.now()}`);
  setTimeout(() => b.send(`B:second:${performance.now()}`), 1);
}, 50);
await new Promise((done) => setTimeout(done, secs * 1000));
clearInterval(chat);
clearInterval(pairs);
const at = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
for (const which of ["first", "second"]) {
  const sorted = latency[which].sort((x, y) => x - y);
  const figures = [0.5, 0.9, 0.99, 1].map((p) => at(sorted, p).toFixed(2));
  console.log(`${which}: n ${sorted.length}, p50 ${figures[0]}, p90 ${figures[1]}, p99 ${figures[2]}, max ${figures[3]}`);
}
process.exit(0);
