// The web globals a party uses, each checked inside a handler. GET (or any message) → one
// JSON report, a key per check; a check that throws reports {"error": "…"} instead.
import type * as Party from "partykit/server";

const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

const checks: Record<string, () => unknown> = {
  encoded: () => [...new TextEncoder().encode("héllo €")],
  decoded: () => new TextDecoder().decode(new Uint8Array([104, 195, 169, 226, 130, 172])),
  fatalDecode: () => {
    try {
      new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(new Uint8Array([0xff, 0xfe]));
      return "no error";
    } catch (e) {
      return (e as Error).name;
    }
  },

  uuid: () => crypto.randomUUID(),
  random: () => {
    const random = crypto.getRandomValues(new Uint8Array(32));
    return { length: random.length, distinct: new Set(random).size };
  },
  sha256: async () => hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc"))),

  btoa: () => btoa("hello, world"),
  atob: () => atob("aGVsbG8sIHdvcmxk"),

  structuredClone: () => {
    const original = { when: new Date(5), map: new Map([["k", [1, 2]]]) };
    const cloned = structuredClone(original);
    return {
      date: cloned.when instanceof Date && cloned.when.getTime() === 5,
      map: cloned.map instanceof Map && cloned.map.get("k")?.join(),
      copied: cloned !== original && cloned.map.get("k") !== original.map.get("k"),
    };
  },

  order: async () => {
    const order: string[] = [];
    setTimeout(() => order.push("timeout"), 0);
    queueMicrotask(() => order.push("microtask"));
    Promise.resolve().then(() => order.push("then"));
    order.push("sync");
    const cancelled = setTimeout(() => order.push("cancelled timer ran"), 1);
    clearTimeout(cancelled);
    await new Promise((resolve) => setTimeout(resolve, 20));
    return order;
  },
  timerWaited: async () => {
    const d0 = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 30));
    return Date.now() - d0 >= 25;
  },
  performance: async () => {
    const t0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 30));
    const waited = performance.now() - t0;
    return { type: typeof t0, waited: waited >= 25 };
  },
  interval: async () => {
    let ticks = 0;
    await new Promise<void>((resolve) => {
      const id = setInterval(() => {
        if (++ticks === 3) {
          clearInterval(id);
          resolve();
        }
      }, 5);
    });
    return ticks;
  },
  now: () => Date.now(),

  console: () => {
    console.log("globals: console.log works", { nested: [1, 2] });
    console.info("globals: console.info");
    console.warn("globals: console.warn");
    console.error("globals: console.error");
    console.debug("globals: console.debug");
    return "ok";
  },

  url: () => {
    const url = new URL("/a/b?x=1&y=2#frag", "https://example.com:8443");
    url.searchParams.append("z", "three words");
    url.searchParams.delete("y");
    return { href: url.href, host: url.host, pathname: url.pathname, hash: url.hash, x: url.searchParams.get("x") };
  },
  searchParams: () => {
    const params = new URLSearchParams({ b: "2", a: "1 & 2" });
    params.sort();
    return params.toString();
  },
  headers: () => {
    const headers = new Headers([["X-One", "1"]]);
    headers.set("content-type", "application/json");
    headers.append("x-one", "uno");
    return { entries: [...headers], one: headers.get("X-ONE"), missing: headers.get("nope") };
  },
  response: async () => {
    const res = new Response("body text", { status: 202, headers: { "x-r": "r" } });
    return { status: res.status, ok: res.ok, header: res.headers.get("x-r"), text: await res.text() };
  },
  webSocket: () => ({
    states: [WebSocket.CONNECTING, WebSocket.OPEN, WebSocket.CLOSING, WebSocket.CLOSED],
    opens: (() => {
      try {
        new WebSocket("ws://127.0.0.1:9/");
        return "opened";
      } catch {
        return "threw";
      }
    })(),
  }),
  // PartyKit injects a `process` whose env holds the project's .env.
  processEnv: () => process.env.GREETING,
  request: async () => {
    const req = new Request("https://example.com/p", { method: "POST", body: JSON.stringify({ q: 1 }) });
    return { method: req.method, url: req.url, json: await req.json() };
  },
};

async function report() {
  const out: Record<string, unknown> = {};
  for (const [name, check] of Object.entries(checks)) {
    try {
      out[name] = await check();
    } catch (e) {
      out[name] = { error: String(e) };
    }
  }
  return out;
}

export default class Globals implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest() {
    return Response.json(await report());
  }

  async onMessage(_message: string | ArrayBuffer | ArrayBufferView, sender: Party.Connection) {
    const connection = { isWebSocket: sender instanceof WebSocket, open: sender.readyState === WebSocket.OPEN };
    sender.send(JSON.stringify({ ...(await report()), connection }));
  }
}
