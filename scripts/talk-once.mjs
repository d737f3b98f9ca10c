// Resident memory per connection of clients that each send one message as they open, then
// stay connected and quiet (docs/benchmarks.md, "A client that talked, then fell quiet").
//
//   node scripts/talk-once.mjs PORT CONNECTIONS ROOMS SERVER_PID [HOLD_MS]
//
// Opens CONNECTIONS sockets to ws://127.0.0.1:PORT/parties/main/talk-N over ROOMS rooms,
// 200 handshakes at a time from 127.0.0.1..8, each sending one text message once open;
// holds them HOLD_MS (10,000 by default) and prints the server's RSS growth per connection.
// Needs `npm ci` in tests/compat (for `ws`).
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";
import fs from "node:fs";

const [port, connections, rooms, pid] = process.argv.slice(2, 6).map(Number);
const holdMs = Number(process.argv[6] ?? 10000);
if (!port || !connections || !rooms || !pid) {
  console.error("usage: node scripts/talk-once.mjs PORT CONNECTIONS ROOMS SERVER_PID [HOLD_MS]");
  process.exit(2);
}
const rss = () =>
  Number(fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) * 1024;

const before = rss();
const sockets = [];
let started = 0;
let open = 0;
await new Promise((resolve) => {
  const next = () => {
    while (started < connections && started - open < 200) {
      const i = started++;
      const ws = new WebSocket(`ws://127.0.0.1:${port}/parties/main/talk-${i % rooms}`, {
        localAddress: `127.0.0.${1 + (i % 8)}`,
      });
      ws.on("open", () => {
        open++;
        ws.send(`hello from ${i}`);
        if (open === connections) resolve();
        else next();
      });
      ws.on("error", (e) => {
        console.error(`socket ${i}: ${e.message}`);
        process.exit(1);
      });
      ws.on("message", () => {});
      sockets.push(ws);
    }
  };
  next();
});
await new Promise((r) => setTimeout(r, holdMs));
console.log(`server RSS per connection: ${Math.round((rss() - before) / connections)} bytes`);
process.exit(0);
