// Committed steps per second on one counter room: CLIENTS sockets each send "incr" and wait
// for its reply, again and again, for SECS seconds; prints replies/s. Every reply is a step
// whose write committed (and, since issue 11, whose ledger records committed with it).
//
//   node scripts/commit-rate.mjs ws://127.0.0.1:1999/parties/counter/ROOM [CLIENTS] [SECS]
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";

const [url, clients = "8", secs = "10"] = process.argv.slice(2);
let replies = 0;
let measuring = false;
const sockets = [];
for (let i = 0; i < Number(clients); i++) {
  const ws = new WebSocket(`${url}?_pk=rate${i}`);
  ws.on("message", () => {
    if (measuring) replies++;
    ws.send("incr");
  });
  ws.on("open", () => ws.send("incr"));
  ws.on("error", (e) => {
    console.error(e.message);
    process.exit(1);
  });
  sockets.push(ws);
}
await new Promise((r) => setTimeout(r, 2000)); // warm-up
measuring = true;
await new Promise((r) => setTimeout(r, Number(secs) * 1000));
measuring = false;
console.log(JSON.stringify({ clients: Number(clients), secs: Number(secs), replies_per_sec: replies / Number(secs) }));
for (const ws of sockets) ws.close();
process.exit(0);
