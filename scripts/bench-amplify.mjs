// Memory amplification (issue 16): MEMBERS sockets in one relay room that never read,
// then COUNT broadcasts of MB megabytes (HTTP POST to the room); prints the server's RSS
// before and its peak over the next 5 s, and how many sockets are still open.
//
//   node scripts/bench-amplify.mjs HOST SERVER_PID [MEMBERS] [MB] [COUNT]
//
// Run the server with rate limits lifted (conclave dev --messages-per-second 1000000
// --message-burst 1000000) and the open-files limit raised (ulimit -n 20000).
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";
import { readFileSync } from "node:fs";
const [host, pid, members = "2000", mb = "1", count = "5"] = process.argv.slice(2);
const rss = () => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) * 1024;
const sockets = [];
for (let i = 0; i < Number(members); i++) {
  const ws = new WebSocket(`ws://${host}/parties/main/amp?_pk=m${i}`);
  await new Promise((r, j) => { ws.on("open", r); ws.on("error", j); });
  ws._socket.pause(); // never reads again
  sockets.push(ws);
}
const before = rss();
const body = Buffer.alloc(Number(mb) * 1024 * 1024, 97);
for (let i = 0; i < Number(count); i++) {
  const res = await fetch(`http://${host}/parties/main/amp`, { method: "POST", body });
  await res.text();
}
let peak = before;
for (let t = 0; t < 20; t++) { await new Promise((r) => setTimeout(r, 250)); peak = Math.max(peak, rss()); }
const open = sockets.filter((s) => s.readyState === 1).length;
console.log(JSON.stringify({ members: Number(members), rss_before_mb: +(before / 1048576).toFixed(1), rss_peak_mb: +(peak / 1048576).toFixed(1), open_after: open }));
process.exit(0);
