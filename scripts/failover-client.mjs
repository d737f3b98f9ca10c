// A client held open across failovers, for scripts/bench-failover.sh. For every "go" line
// on stdin it sends "incr" to its counter room and prints the wall-clock time (ms since
// the epoch) of the reply. It exits non-zero if its socket ever closes.
import WebSocket from "../tests/compat/node_modules/ws/wrapper.mjs";
import readline from "node:readline";

const ws = new WebSocket(process.argv[2]);
ws.on("close", (code) => {
  console.error(`failover client: socket closed with ${code}`);
  process.exit(1);
});
ws.on("error", (e) => {
  console.error(`failover client: ${e.message}`);
  process.exit(1);
});
ws.on("message", () => console.log(Date.now()));
ws.on("open", () => {
  console.log("open");
  readline.createInterface({ input: process.stdin }).on("line", () => ws.send("incr"));
});
