// Starts real Conclave processes for the compatibility suite: on free ports the harness
// picks, ready once their /readyz answers, each with a temporary data dir, stopped after
// each test file.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { PartySocket } from "partysocket";
import WS from "ws";

const here = dirname(fileURLToPath(import.meta.url));
const binDir = process.env.CONCLAVE_BIN_DIR ?? resolve(here, "../../target/debug");

/** Every directory `tempDir` made; removed when the test file's process exits, whether or
 * not its test cleaned up (a failed or interrupted test would otherwise leave it behind). */
const madeDirs = new Set();
process.on("exit", () => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "conclave-compat-"));
  madeDirs.add(dir);
  return dir;
}

export function writeConfig(dir, toml) {
  const path = join(dir, "conclave.toml");
  writeFileSync(path, toml);
  return path;
}

/** Sends `signal` and waits for the exit; a process still running 10 s later is killed
 * and the test fails (a server that does not stop is a bug, and must not hang CI). */
async function stopProcess(proc, signal) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((ok) => proc.on("exit", () => ok(true)));
  proc.kill(signal);
  let timer;
  const late = new Promise((ok) => (timer = setTimeout(() => ok(false), 10000)));
  const inTime = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (!inTime) {
    proc.kill("SIGKILL");
    throw new Error(`process ${proc.pid} did not exit within 10 s of ${signal}`);
  }
}

/** Spawns `bin args` with logs at warn level; stderr is kept for error messages. */
function spawnRole(bin, args) {
  const proc = spawn(join(binDir, bin), args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  proc.stderrText = "";
  proc.stderr.on("data", (d) => (proc.stderrText += d));
  return proc;
}

/** Resolves once `GET http://ADDR/readyz` answers 200; rejects if the process exits first
 * or after 20 s. Roles start on addresses the test chose, so nothing is read from stdout. */
async function untilReady(proc, addr, what) {
  const deadline = Date.now() + 20000;
  let last = "nothing listening";
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}): ${proc.stderrText}`);
    }
    try {
      const res = await fetch(`http://${addr}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (e) {
      last = String(e); // not listening yet
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  // Not left running: a test that failed here has no handle to stop it with.
  proc.kill("SIGKILL");
  throw new Error(`${what} was not ready in 20 s (last: ${last}): ${proc.stderrText}`);
}

/** A free loopback address, `127.0.0.1:PORT`. */
export async function freeAddr() {
  return `127.0.0.1:${await freePort()}`;
}

/** Starts `conclave dev` (or `dev` of another binary built on `conclave::Conclave`) on a
 * free port and waits until it is ready. */
export async function startServer({ bin = "conclave", args = [], dataDir = tempDir() } = {}) {
  const host = await freeAddr();
  const port = host.split(":")[1];
  const proc = spawnRole(bin, ["dev", "--port", port, "--data-dir", dataDir, ...args]);
  await untilReady(proc, host, `${bin} dev`);
  return {
    host,
    dataDir,
    proc,
    stderr: () => proc.stderrText,
    async stop() {
      await stopProcess(proc, "SIGINT");
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts `conclave dev --project DIR`: the PartyKit project in DIR (its `partykit.json`,
 * sources bundled with esbuild) served by Conclave's JavaScript runtime. `opts` as for
 * `startServer`; `opts.args` go after `--project DIR`. */
export async function startProject(dir, opts = {}) {
  return startServer({ ...opts, args: ["--project", resolve(dir), ...(opts.args ?? [])] });
}

/** Runs `conclave ARGS` to its end (e.g. `build`); throws with its stderr if it fails. */
export function runConclave(args) {
  const out = spawnSync(join(binDir, "conclave"), args, { encoding: "utf8", env: { ...process.env, RUST_LOG: "warn" } });
  if (out.status !== 0) throw new Error(`conclave ${args[0]} failed (${out.status}): ${out.stderr}`);
  return out.stdout;
}

/** npm partykit's CLI, the reference implementation (scripts/partykit-relay installs it). */
const partykitBin =
  process.env.PARTYKIT_BIN ?? resolve(here, "../../scripts/partykit-relay/node_modules/partykit/dist/bin.mjs");

/** Starts PartyKit's own dev server (`partykit dev`) on the project in DIR, on a free port,
 * with the same shape of handle as `startServer`, so a test can check its expectations
 * against the reference. `persist`: a directory for its state (kept across a restart),
 * else nothing is persisted. Its workerd child runs in the same process group, and `stop`
 * ends the group. */
export async function startPartykit(dir, { persist } = {}) {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const args = [partykitBin, "dev", "--port", String(port), "--no-hotkeys", "--disable-request-cf-fetch"];
  args.push("--persist", persist ?? "false");
  const proc = spawn(process.execPath, args, {
    cwd: resolve(dir),
    detached: true, // its own process group: workerd and esbuild go with it
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_UPDATE_NOTIFIER: "1", CI: "1" },
  });
  proc.stderrText = "";
  proc.stdout.on("data", (d) => (proc.stderrText += d));
  proc.stderr.on("data", (d) => (proc.stderrText += d));
  const group = (signal) => {
    try {
      process.kill(-proc.pid, signal);
    } catch {
      // already gone
    }
  };
  const deadline = Date.now() + 30000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`partykit dev exited (${proc.exitCode ?? proc.signalCode}): ${proc.stderrText}`);
    }
    if (Date.now() > deadline) {
      group("SIGKILL");
      throw new Error(`partykit dev was not ready in 30 s: ${proc.stderrText}`);
    }
    if (proc.stderrText.includes("Ready on")) {
      try {
        await fetch(`http://${host}/`); // any answer: workerd listens (no room is touched)
        break;
      } catch {
        // not listening yet
      }
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  return {
    host,
    dataDir: persist,
    proc,
    stderr: () => proc.stderrText,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return group("SIGKILL");
      const exited = new Promise((ok) => proc.on("exit", ok));
      group("SIGTERM");
      const timer = setTimeout(() => group("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
      group("SIGKILL"); // a workerd that outlived its parent
    },
    cleanup() {},
  };
}

/** Starts any `conclave` role with `args` (on addresses the caller chose); resolves once
 * its HTTP address `readyAddr` says it is ready. */
export async function startRole(args, readyAddr) {
  const proc = spawnRole("conclave", args);
  await untilReady(proc, readyAddr, args[0]);
  return {
    async stop() {
      await stopProcess(proc, "SIGTERM");
    },
    /** kill -9, without waiting for anything. */
    async kill() {
      const gone = new Promise((ok) => (proc.exitCode !== null || proc.signalCode !== null ? ok() : proc.once("exit", ok)));
      proc.kill("SIGKILL");
      await gone;
    },
  };
}

/** A loopback port nothing listens on now, below the kernel's ephemeral range: outgoing
 * connections and `listen(0)` take their ports from that range, so none of them can take
 * this one before the process the test starts next binds it (tests/common/net.rs does the
 * same). Each test file starts at a random place and counts up. */
async function freePort() {
  const low = 10000;
  const span = ephemeralStart() - low;
  if (span <= 0) return listensOn(0);
  nextPort ??= Math.floor(Math.random() * span);
  for (let tried = 0; tried < span; tried++) {
    const port = low + (nextPort++ % span);
    if ((await listensOn(port)) !== null) return port;
  }
  throw new Error(`no free loopback port in ${low}..${low + span}`);
}

let nextPort;

function ephemeralStart() {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

/** Listens on `port` (0: any) and lets go; the port, or null if it was taken. */
function listensOn(port) {
  return new Promise((ok) => {
    const s = createServer();
    s.once("error", () => ok(null));
    s.listen(port, "127.0.0.1", () => {
      const bound = s.address().port;
      s.close(() => ok(bound));
    });
  });
}

/** A throwaway PostgreSQL server (scripts/lib/postgres.sh) on a free port: the nodes of a
 * cluster share one store. */
export async function startPostgres() {
  const dir = tempDir();
  const port = await freePort();
  const script = resolve(here, "../../scripts/lib/postgres.sh");
  const start = `set -e; source "${script}"; start_postgres "$0/pg" "$1"; echo "$PG $PG_PID"`;
  const proc = spawn("bash", ["-c", start, dir, String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise((ok, fail) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) ok(out.trim());
    });
    proc.on("exit", (code) => code && fail(new Error(`PostgreSQL did not start (exit ${code})`)));
  });
  const [url, pid] = line.split(" ");
  return {
    url,
    /** Fast shutdown (SIGINT), waiting up to 10 s for the server to go, then its files. */
    async stop() {
      const alive = () => {
        try {
          process.kill(Number(pid), 0);
          return true;
        } catch {
          return false;
        }
      };
      if (alive()) process.kill(Number(pid), "SIGINT");
      for (let i = 0; i < 100 && alive(); i++) await new Promise((ok) => setTimeout(ok, 100));
      if (alive()) process.kill(Number(pid), "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A socket's messages in arrival order, however many arrive at once: `next(ms)` takes the
 * oldest (waiting up to `ms`), `json(ms)` parses it. `subscribe(push)` hands `push` each message. */
export function inbox(subscribe) {
  const queue = [];
  const waiters = [];
  subscribe((m) => {
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  return {
    next(ms = 3000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((ok, fail) => {
        const w = (m) => (clearTimeout(timer), ok(m));
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          fail(new Error(`no message in ${ms} ms`));
        }, ms);
        waiters.push(w);
      });
    },
    async json(ms) {
      return JSON.parse(await this.next(ms));
    },
  };
}

/** A PartySocket (the npm client on `ws`; `opts` as its constructor takes them) whose
 * messages are queued by `inbox`: text arrives as strings, binary as bytes. */
export function partyClient(opts) {
  const socket = new PartySocket({ WebSocket: WS, ...opts });
  return Object.assign(inbox((push) => socket.addEventListener("message", (e) => push(e.data))), {
    socket,
    send: (m) => socket.send(m),
    close: () => socket.close(),
  });
}

/** Resolves with the next message event's data, or rejects after `ms`. */
export function nextMessage(socket, ms = 5000, filter = () => true) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      socket.removeEventListener("message", on);
      fail(new Error("no message in time"));
    }, ms);
    function on(e) {
      if (!filter(e.data)) return;
      clearTimeout(timer);
      socket.removeEventListener("message", on);
      ok(e.data);
    }
    socket.addEventListener("message", on);
  });
}

/** Collects messages for `ms` milliseconds. */
export function collect(socket, ms) {
  const got = [];
  const on = (e) => got.push(e.data);
  socket.addEventListener("message", on);
  return new Promise((ok) =>
    setTimeout(() => {
      socket.removeEventListener("message", on);
      ok(got);
    }, ms),
  );
}

export function opened(socket, ms = 5000) {
  if (socket.readyState === 1) return Promise.resolve();
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("socket did not open")), ms);
    socket.addEventListener("open", () => (clearTimeout(timer), ok()), { once: true });
  });
}

/** A raw `ws` connection: resolves with {status} when the handshake is refused. */
export function rawConnect(url, protocols) {
  return new Promise((ok) => {
    const ws = new WS(url, protocols);
    ws.on("open", () => ok({ ws, status: 101 }));
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode, body }));
    });
    ws.on("error", () => {});
  });
}

export function closed(ws) {
  return new Promise((ok) => ws.on("close", (code, reason) => ok({ code, reason: reason.toString() })));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The bytes of a binary message, whatever type the client delivered it as. */
export async function bytesOf(data) {
  if (data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
