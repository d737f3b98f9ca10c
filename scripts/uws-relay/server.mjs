// The fastest peer for scripts/bench-side-by-side.sh: uWebSockets.js relaying like
// Conclave's built-in `main` party (each message goes to every other socket of its room),
// on the same URLs (`/parties/:party/:room`), with the same limits where uWS has them.
//
//   node scripts/uws-relay/server.mjs PORT
import uWS from "@trufflesuite/uws-js-unofficial";

const port = Number(process.argv[2] ?? 21995);

uWS
  .App()
  .ws("/parties/:party/:room", {
    compression: uWS.DISABLED,
    maxPayloadLength: 1024 * 1024,
    maxBackpressure: 4 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    idleTimeout: 30,
    upgrade: (res, req, context) => {
      const protocol = req.getHeader("sec-websocket-protocol").split(",")[0].trim();
      res.upgrade(
        { topic: `${req.getParameter(0)}/${req.getParameter(1)}` },
        req.getHeader("sec-websocket-key"),
        protocol,
        req.getHeader("sec-websocket-extensions"),
        context,
      );
    },
    open: (ws) => ws.subscribe(ws.getUserData().topic),
    // `publish` from a socket reaches every subscriber but that socket.
    message: (ws, message, isBinary) => ws.publish(ws.getUserData().topic, message, isBinary),
  })
  .get("/healthz", (res) => res.end("ok"))
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uws-relay: cannot listen on ${port}`);
      process.exit(1);
    }
    console.log(`uws-relay: listening on 127.0.0.1:${port}`);
  });
