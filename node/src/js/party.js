// The PartyKit server API (`partykit/server`) over Conclave's room runtime.
//
// Evaluated once per party and worker, after web.js and codec.js and before the user's
// bundle. Rust drives it through `globalThis.__conclave` (prepare, load, create, dispatch,
// destroy, fireTimer, detach); everything that touches the room goes through `__native`,
// which acts on the room whose event is running. One server instance per room; a room's
// events run one at a time, but a handler that waits on a timer or a fetch may go on in
// later events (worker.rs, `drive`).
(() => {
  "use strict";
  const N = globalThis.__native;
  const codec = globalThis.__codec;
  const instances = new Map();
  let definition = null;
  let isClass = false;
  let partyName = "";
  let partyEnv = {};
  // How long a stream body may take to end before it is given up (the room's answer
  // limit, --room-answer-timeout-ms): past it no one waits for the answer it is part of.
  let streamBodyLimitMs = 100000;

  // ---- values crossing into Rust -------------------------------------------------------

  /** A message as the room sends it: a string, or an ArrayBuffer for binary. */
  function wireData(data) {
    // A lone surrogate cannot cross into Rust; browsers send U+FFFD for it too.
    if (typeof data === "string") return data.isWellFormed() ? data : data.toWellFormed();
    if (data instanceof ArrayBuffer) return data;
    if (ArrayBuffer.isView(data)) {
      return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    }
    throw new TypeError("A message must be a string, an ArrayBuffer or an ArrayBufferView");
  }

  function headerPairs(headers) {
    const out = [];
    for (const [k, v] of headers) out.push(k, v);
    return out;
  }

  function makeRequest(method, url, headers, body) {
    const init = { method, headers: pairsToHeaders(headers) };
    if (body !== null && body !== undefined && method !== "GET" && method !== "HEAD") {
      init.body = new Uint8Array(body);
    }
    init.cf = cfOf(init.headers);
    return new Request(url, init);
  }

  /** `request.cf` as PartyKit gives it (Cloudflare's request properties): there is no
   * edge here, so only what a Cloudflare proxy in front may have said in its headers.
   * Always an object, so that `request.cf.country` reads as undefined, not a TypeError. */
  function cfOf(headers) {
    const cf = {};
    const country = headers.get("cf-ipcountry");
    if (country) cf.country = country;
    return cf;
  }

  function pairsToHeaders(flat) {
    const h = new Headers();
    for (let i = 0; i + 1 < flat.length; i += 2) h.append(flat[i], flat[i + 1]);
    return h;
  }

  /** The bytes of a Request's or Response's body (a stream body read whole first), or
   * null. */
  async function bodyOf(owner) {
    const reading = globalThis.__bodyReady(owner, streamBodyLimitMs);
    if (reading !== null) await reading;
    const body = globalThis.__bodyBytes(owner);
    return body === null ? null : copyBuffer(body);
  }

  /** A Response as Rust takes it: ["", "", status, flat headers, body bytes or null]. */
  async function responseParts(resp, what) {
    if (!(resp instanceof Response)) {
      throw new TypeError(`${what} must return a Response, got ${describe(resp)}`);
    }
    return ["", "", resp.status, headerPairs(resp.headers), await bodyOf(resp)];
  }

  /** A Request as Rust takes it: [method, url, 0, flat headers, body bytes or null]. */
  async function requestParts(req) {
    return [req.method, req.url, 0, headerPairs(req.headers), await bodyOf(req)];
  }

  /** What a static check returned: go on (as returned) or answer in the room's place. */
  async function checked(result, what) {
    if (result === undefined || result === null) return null;
    if (result instanceof Request) return requestParts(result);
    return responseParts(result, what);
  }

  function copyBuffer(view) {
    return view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
  }

  function describe(v) {
    if (v === null) return "null";
    if (typeof v === "object") return v.constructor ? v.constructor.name : "object";
    return typeof v;
  }

  // ---- connections ---------------------------------------------------------------------

  const OPEN = 1;
  const MADE_HERE = Symbol("a connection");

  /** `WebSocket` as the Workers runtime has it, for its ready-state constants
   * (`conn.readyState === WebSocket.OPEN`) and `conn instanceof WebSocket`. Opening a
   * WebSocket to elsewhere is not supported. */
  class WebSocket extends EventTarget {
    constructor(token) {
      if (token !== MADE_HERE) {
        throw new Error("new WebSocket(…) is not supported: a party cannot open WebSockets to elsewhere");
      }
      super();
    }
  }
  for (const [name, value] of [["CONNECTING", 0], ["OPEN", 1], ["CLOSING", 2], ["CLOSED", 3]]) {
    for (const on of [WebSocket, WebSocket.prototype]) {
      Object.defineProperty(on, name, { value, enumerable: true });
      Object.defineProperty(on, `READY_STATE_${name}`, { value, enumerable: true });
    }
  }
  globalThis.WebSocket = WebSocket;

  /** One client connection. The same object for the whole life of the instance, so
   * servers may keep connections in their own maps. */
  class Connection extends WebSocket {
    #inst;
    #key;
    #listening = false;
    #departed = null;
    constructor(inst, key, id, uri, tags) {
      super(MADE_HERE);
      this.#inst = inst;
      this.#key = key;
      this.id = id;
      this.uri = uri;
      this.tags = tags;
      this.readyState = OPEN;
    }
    get socket() {
      return this;
    }
    get url() {
      return this.uri;
    }
    get state() {
      return this.#stored().state ?? null;
    }
    setState(state) {
      const next = typeof state === "function" ? state(this.state) : state;
      this.#store({ ...this.#stored(), state: next });
      return next;
    }
    serializeAttachment(attachment) {
      this.#store({ ...this.#stored(), attachment });
    }
    deserializeAttachment() {
      return this.#stored().attachment ?? null;
    }
    send(data) {
      N.send(this.#inst.handle, this.#key, wireData(data));
    }
    close(code, reason) {
      N.close(this.#inst.handle, this.#key, code ?? 1000, reason === undefined ? "" : String(reason));
    }
    addEventListener(type, listener, options) {
      this.#listening = true;
      super.addEventListener(type, listener, options);
    }
    /** Delivers the event `make` builds to listeners added with addEventListener (the
     * object API); without listeners, nothing is built. */
    _emit(make) {
      if (this.#listening) this.dispatchEvent(make());
    }
    /** The connection left the room with `stateText` stored: what the handlers of its
     * leaving read (the room's table no longer has it). */
    _left(stateText) {
      this.#departed = stateText ?? null;
    }
    #stored() {
      const text = N.getState(this.#inst.handle, this.#key) ?? this.#departed;
      return text == null ? {} : codec.decode(text);
    }
    #store(value) {
      N.setState(this.#inst.handle, this.#key, codec.encode(value));
    }
  }

  // ---- storage -------------------------------------------------------------------------

  const MAX_KEYS = 128;

  /** Storage orders keys by their UTF-8 bytes; for strings without lone surrogates that
   * is code point order, which this matches. */
  function byCodeUnits(a, b) {
    const x = [...a], y = [...b];
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const d = x[i].codePointAt(0) - y[i].codePointAt(0);
      if (d !== 0) return d;
    }
    return x.length - y.length;
  }

  function checkKeys(keys) {
    if (keys.length > MAX_KEYS) throw new RangeError(`At most ${MAX_KEYS} keys per call`);
    for (const k of keys) if (typeof k !== "string") throw new TypeError("Keys must be strings");
  }

  /** `room.storage`: the Durable Object storage API. Methods live on the prototype, so a
   * room costs one small object here. */
  class Storage {
    #inst;
    constructor(inst) {
      this.#inst = inst;
    }
    get #h() {
      return this.#inst.handle;
    }
    async get(keyOrKeys) {
      if (Array.isArray(keyOrKeys)) {
        checkKeys(keyOrKeys);
        const keys = [...new Set(keyOrKeys)].sort(byCodeUnits);
        const values = await N.storageGet(this.#h, keys);
        const out = new Map(); // in key order, as Cloudflare returns it
        keys.forEach((k, i) => {
          if (values[i] != null) out.set(k, codec.decode(values[i]));
        });
        return out;
      }
      const [v] = await N.storageGet(this.#h, [keyOrKeys]);
      return v == null ? undefined : codec.decode(v);
    }
    async put(keyOrEntries, value) {
      const flat = [];
      if (typeof keyOrEntries === "string") {
        if (value === undefined) throw new TypeError("put() needs a value");
        flat.push(keyOrEntries, codec.encode(value));
      } else {
        const entries = Object.entries(keyOrEntries);
        checkKeys(entries.map(([k]) => k));
        for (const [k, v] of entries) flat.push(k, codec.encode(v));
      }
      N.storagePut(this.#h, flat);
    }
    async delete(keyOrKeys) {
      const keys = Array.isArray(keyOrKeys) ? keyOrKeys : [keyOrKeys];
      checkKeys(keys);
      const existed = await N.storageDelete(this.#h, keys);
      return Array.isArray(keyOrKeys) ? existed : existed > 0;
    }
    async list(options = {}) {
      const flat = await N.storageList(this.#h, listOptions(options));
      const out = new Map();
      for (let i = 0; i + 1 < flat.length; i += 2) out.set(flat[i], codec.decode(flat[i + 1]));
      return out;
    }
    async deleteAll() {
      N.storageDeleteAll(this.#h);
    }
    async getAlarm() {
      return N.storageGetAlarm(this.#h);
    }
    async setAlarm(time) {
      const ms = time instanceof Date ? time.getTime() : Number(time);
      if (!Number.isFinite(ms)) throw new TypeError("setAlarm() needs a Date or a number of ms");
      N.storageSetAlarm(this.#h, ms);
    }
    async deleteAlarm() {
      N.storageSetAlarm(this.#h, null);
    }
    async transaction(body) {
      const h = this.#h;
      const save = N.storageSavepoint(h);
      let rolledBack = false;
      const txn = new Storage(this.#inst);
      txn.rollback = () => {
        rolledBack = true;
        N.storageRollback(h, save);
      };
      try {
        return await body(txn);
      } catch (e) {
        if (!rolledBack) N.storageRollback(h, save);
        throw e;
      } finally {
        N.storageForget(h, save);
      }
    }
    async sync() {}
    transactionSync() {
      throw new Error("storage.transactionSync is not supported (SQLite storage API)");
    }
    get sql() {
      throw new Error("storage.sql is not supported (SQLite storage API)");
    }
  }

  function listOptions(o) {
    const text = (v) => (v === undefined || v === null ? null : String(v));
    return [text(o.start), text(o.startAfter), text(o.end), text(o.prefix), !!o.reverse,
      o.limit === undefined || o.limit === null ? -1 : Number(o.limit)];
  }

  // ---- rooms ---------------------------------------------------------------------------

  function connectionOf(inst, row) {
    // row: [key, id, uri, tags]
    let conn = inst.conns.get(row[0]);
    if (!conn) {
      conn = new Connection(inst, row[0], row[1], row[2], row[3]);
      inst.conns.set(row[0], conn);
    } else {
      conn.tags = row[3]; // cached at getConnectionTags, before its tags were set
    }
    return conn;
  }

  /** `room.context.parties.NAME.get(id)`: a stub for another room. */
  class RoomStub {
    #inst;
    #party;
    #id;
    constructor(inst, party, id) {
      this.#inst = inst;
      this.#party = party;
      this.#id = String(id);
    }
    /** As PartyKit's stub: a path (from the room's URL) with an init, a Request, or an
     * init alone (or nothing) for the room's own URL. */
    async fetch(input, init) {
      let req;
      if (input instanceof Request && init === undefined) {
        req = input;
      } else if (input == null || (typeof input === "object" && !(input instanceof URL) && !(input instanceof Request))) {
        req = new Request(resolveUrl("", this.#party, this.#id), input ?? undefined);
      } else {
        req = new Request(resolveUrl(input, this.#party, this.#id), init);
      }
      req.signal.throwIfAborted();
      const asked = N.fetchRoom(this.#inst.handle, this.#party, this.#id,
        [req.method, req.url, headerPairs(req.headers), await bodyOf(req)]);
      // An abort rejects at once; the other room's handler goes on.
      const [status, headers, bytes] = await untilAborted(asked, req.signal);
      return new Response(status === 204 || status === 304 ? null : new Uint8Array(bytes),
        { status, headers: pairsToHeaders(headers) });
    }
    socket() {
      throw new Error("room.context.parties.<name>.get(id).socket() is not supported yet; use fetch()");
    }
    connect() {
      throw new Error("room.context.parties.<name>.get(id).connect() is not supported yet; use fetch()");
    }
  }

  /** `room.context.parties`: any party name, made when first asked for. */
  /** A connection the room's events name by key: cached since its connect (or looked
   * up, after a wake from hibernation). */
  function connectionByKey(inst, key) {
    const cached = inst.conns.get(key);
    if (cached) return cached;
    const row = N.connectionByKey(inst.handle, key);
    if (row == null) throw new Error("the connection left the room");
    return connectionOf(inst, row);
  }

  function partiesFor(inst) {
    return new Proxy({}, {
      get(_, name) {
        if (typeof name !== "string") return undefined;
        return { get: (id) => new RoomStub(inst, name, id) };
      },
    });
  }

  function resolveUrl(input, party, id) {
    const s = input instanceof URL ? input.href : String(input);
    const base = `http://conclave.internal/parties/${party}/${id}`;
    if (s === "") return new URL(base).href;
    if (s.startsWith("/")) return new URL(base + s).href;
    return new URL(s, base + "/").href;
  }

  /** `room.context.assets`, `lobby.assets`: the project's static files (`serve` in
   * partykit.json), a Response as a GET of the path gets it, or null. */
  const assets = Object.freeze({
    async fetch(path) {
      path = String(path);
      if (!path.startsWith("/")) throw new Error("Path must start with /");
      const found = N.asset(path);
      if (found === null) return null;
      const [status, headers, bytes] = found;
      return new Response(new Uint8Array(bytes), { status, headers: pairsToHeaders(headers) });
    },
  });

  /** `this.room`. Methods and rarely used parts live on the prototype or are made when
   * first used, so an idle room costs little. */
  class Room {
    #inst;
    #storage = null;
    #context = null;
    constructor(inst, id, name, env) {
      this.#inst = inst;
      this.id = id;
      this.name = name;
      this.env = env;
    }
    get internalID() {
      return `${this.name}/${this.id}`;
    }
    get storage() {
      return (this.#storage ??= new Storage(this.#inst));
    }
    get context() {
      return (this.#context ??= {
        parties: partiesFor(this.#inst), ai: undefined, vectorize: undefined, assets, bindings: {},
      });
    }
    get parties() {
      return this.context.parties;
    }
    broadcast(msg, without) {
      N.broadcast(this.#inst.handle, wireData(msg), Array.isArray(without) ? without.map(String) : []);
    }
    getConnection(id) {
      const row = N.connection(this.#inst.handle, String(id));
      return row === null || row === undefined ? undefined : connectionOf(this.#inst, row);
    }
    getConnections(tag) {
      return N.connections(this.#inst.handle, tag === undefined ? null : String(tag))
        .map((row) => connectionOf(this.#inst, row));
    }
    get connections() {
      const m = new Map();
      for (const c of this.getConnections()) m.set(c.id, c);
      return m;
    }
    /** Holds the room's other events off until `fn` is done, as a Durable Object's does:
     * the event that calls it stays open until then (Rust counts the holds; calls nest). */
    async blockConcurrencyWhile(fn) {
      const h = this.#inst.handle;
      N.hold(h, true);
      try {
        return await fn();
      } finally {
        N.hold(h, false);
      }
    }
  }

  // ---- timers --------------------------------------------------------------------------
  // A timer belongs to the room whose code set it; its callback runs within one of that
  // room's events (Rust starts one if none is in progress), so it may use the room.

  const timers = new Map();

  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== "function") throw new TypeError("a timer callback must be a function");
    const delay = Math.max(0, Number(ms) || 0);
    const id = N.setTimer(repeat ? Math.max(delay, 1) : delay, repeat);
    timers.set(id, { fn, args, repeat });
    return id;
  }

  function clearTimer(id) {
    if (timers.delete(id)) N.clearTimer(id);
  }

  globalThis.setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
  globalThis.setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
  globalThis.clearTimeout = clearTimer;
  globalThis.clearInterval = clearTimer;

  // ---- fetch -----------------------------------------------------------------------------
  // Outside HTTP, to the hosts the node allows (--js-fetch-allow); off by default.

  // Redirects are followed as fetch's `redirect: "follow"` does (each hop allowed or
  // refused on its own), or returned (`"manual"`), or refused (`"error"`).
  const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
  const MAX_REDIRECTS = 20;
  const markFetched = globalThis.__markFetched;

  globalThis.fetch = async (input, init) => {
    const req = input instanceof Request && init === undefined
      ? input
      : new Request(input instanceof URL ? input.href : input, init);
    const signal = req.signal;
    signal.throwIfAborted();
    let url = req.url;
    let method = req.method;
    let headers = headerPairs(req.headers);
    let bytes = await bodyOf(req);
    for (let hops = 0; ; hops++) {
      const [id, pending] = N.httpFetch([method, url, headers, bytes]);
      const [status, got] = await untilAborted(asTypeError(pending), signal, () => N.fetchCancel(id));
      let location;
      try {
        const answerHeaders = pairsToHeaders(got);
        location = REDIRECT_STATUSES.has(status) ? answerHeaders.get("location") : null;
        if (location === null || req.redirect === "manual") {
          const empty = status === 204 || status === 205 || status === 304 || method === "HEAD";
          const response = new Response(empty ? null : fetchedBody(id, signal), { status, headers: answerHeaders });
          if (empty) N.fetchCancel(id);
          return markFetched(response, url, hops > 0);
        }
      } catch (e) {
        N.fetchCancel(id);
        throw e;
      }
      N.fetchCancel(id);
      if (req.redirect === "error") throw new TypeError(`fetch: ${url} redirects, and redirect is "error"`);
      if (hops === MAX_REDIRECTS) throw new TypeError(`fetch: more than ${MAX_REDIRECTS} redirects`);
      const next = new URL(location, url);
      if ((status === 303 && method !== "HEAD") || ((status === 301 || status === 302) && method === "POST")) {
        method = "GET";
        bytes = null;
        headers = dropHeaders(headers, (name) => name.startsWith("content-"));
      }
      if (next.origin !== new URL(url).origin) {
        // Credentials are not sent on to another origin.
        headers = dropHeaders(headers, (name) => name === "authorization" || name === "cookie");
      }
      url = next.href;
    }
  };

  /** `promise`, or a rejection with `signal`'s reason once it aborts (then `stop` runs,
   * and what `promise` comes to is ignored). */
  function untilAborted(promise, signal, stop) {
    if (signal.aborted) {
      stop?.();
      promise.catch(() => {});
      return Promise.reject(signal.reason);
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        stop?.();
        promise.catch(() => {});
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      promise.then(
        (v) => { signal.removeEventListener("abort", onAbort); resolve(v); },
        (e) => { signal.removeEventListener("abort", onAbort); reject(e); },
      );
    });
  }

  /** A native fetch's rejection as fetch gives a network error: a TypeError. */
  function asTypeError(promise) {
    return promise.catch((e) => {
      throw new TypeError(e?.message ?? String(e), { cause: e });
    });
  }

  /** A fetched response's body as a stream read from the network as it is pulled (Rust
   * reads a little ahead). An abort of the fetch's signal errors it at its next read with
   * the signal's reason, and lets the connection go. */
  function fetchedBody(id, signal) {
    return new ReadableStream({
      async pull(controller) {
        for (;;) {
          if (signal.aborted) {
            N.fetchCancel(id);
            throw signal.reason;
          }
          const [chunk, more] = await untilAborted(asTypeError(N.fetchRead(id)), signal, () => N.fetchCancel(id));
          if (chunk.byteLength > 0) controller.enqueue(new Uint8Array(chunk));
          if (!more) {
            controller.close();
            return;
          }
          if (chunk.byteLength > 0) return;
        }
      },
      cancel() {
        N.fetchCancel(id);
      },
    }, { highWaterMark: 0 });
  }

  function dropHeaders(pairs, drop) {
    const kept = [];
    for (let i = 0; i < pairs.length; i += 2) {
      if (!drop(String(pairs[i]).toLowerCase())) kept.push(pairs[i], pairs[i + 1]);
    }
    return kept;
  }

  // ---- the two API shapes --------------------------------------------------------------

  /** The older object API, seen through the class API's methods. */
  class ObjectServer {
    constructor(room, def) {
      this.room = room;
      this.def = def;
    }
    onStart() {
      return this.def.onStart?.(this.room);
    }
    onConnect(conn, ctx) {
      return this.def.onConnect?.(conn, this.room, ctx);
    }
    onMessage(message, conn) {
      return this.def.onMessage?.(message, conn, this.room);
    }
    onClose(conn) {
      return this.def.onClose?.(conn, this.room);
    }
    onError(conn, err) {
      return this.def.onError?.(conn, err, this.room);
    }
    onRequest(req) {
      if (!this.def.onRequest) return new Response("Not implemented", { status: 500 });
      return this.def.onRequest(req, this.room);
    }
    onAlarm() {
      return this.def.onAlarm?.(this.room);
    }
  }

  /** PartyKit's rule: a class instance's `options.hibernate`; an object-API party
   * hibernates when it has onMessage or no onConnect (its listeners would be lost). */
  function hibernates(server) {
    if (server instanceof ObjectServer) {
      const def = server.def;
      return !!def.options?.hibernate || typeof def.onMessage === "function" || typeof def.onConnect !== "function";
    }
    return !!(server.options?.hibernate ?? definition.options?.hibernate);
  }

  function serverMethod(server, name) {
    const f = server[name];
    return typeof f === "function" ? f : null;
  }

  // ---- entry points for Rust -----------------------------------------------------------

  const conclave = {
    /** Before the party's bundle runs: its name and `room.env`, and the `process` PartyKit
     * gives a project's code, whose `env` holds the project's variables (as strings). */
    prepare(name, envJson, answerLimitMs) {
      partyName = name;
      streamBodyLimitMs = answerLimitMs;
      partyEnv = JSON.parse(envJson);
      const env = {};
      for (const [k, v] of Object.entries(partyEnv)) env[k] = typeof v === "string" ? v : JSON.stringify(v);
      globalThis.process = {
        env,
        argv: [],
        versions: {},
        cwd: () => "/",
        nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)),
      };
    },

    /** Takes the bundle's default export (after `prepare`); returns what the party
     * supports. */
    load(exported) {
      const def = exported?.default;
      if (typeof def === "function") {
        isClass = true;
      } else if (def && typeof def === "object") {
        isClass = false;
      } else {
        throw new TypeError("The party's module must export default a class (Party.Server) or an object (PartyKitServer)");
      }
      definition = def;
      const has = (name) => typeof (isClass ? def.prototype[name] : def[name]) === "function";
      return JSON.stringify({
        onBeforeConnect: typeof def.onBeforeConnect === "function",
        onBeforeRequest: typeof def.onBeforeRequest === "function",
        onFetch: typeof def.onFetch === "function",
        onCron: typeof def.onCron === "function",
        onRequest: isClass ? has("onRequest") : has("onRequest"),
        getConnectionTags: isClass && has("getConnectionTags"),
      });
    },

    create(handle, roomId) {
      const inst = { handle, conns: new Map(), server: null };
      const room = new Room(inst, roomId, partyName, partyEnv);
      inst.room = room;
      inst.server = isClass ? new definition(room) : new ObjectServer(room, definition);
      instances.set(handle, inst);
    },

    destroy(handle, timerIds) {
      instances.delete(handle);
      for (const id of timerIds) timers.delete(id);
    },

    fireTimer(id) {
      const t = timers.get(id);
      if (!t) return;
      if (!t.repeat) timers.delete(id);
      try {
        t.fn(...t.args);
      } catch (e) {
        console.error("a timer callback threw:", e);
      }
    },

    /** Runs one event; resolves to what Rust expects for it. `conn` is [key, id, uri, tags]. */
    /** Runs one event. A message to a handler that does not return a promise is handled
     * without one (the common case, and the hot path); everything else is async. */
    dispatch(handle, kind, conn, a, b, c, d) {
      if (kind !== "message") return conclave.dispatchAsync(handle, kind, conn, a, b, c, d);
      const inst = instances.get(handle);
      if (!inst) throw new Error(`no party instance ${handle}`);
      const s = inst.server;
      const c0 = connectionByKey(inst, conn);
      c0._emit(() => new MessageEvent("message", { data: a }));
      const f = serverMethod(s, "onMessage");
      if (!f) return null;
      const result = f.call(s, a, c0);
      if (result !== null && typeof result === "object" && typeof result.then === "function") {
        return Promise.resolve(result).then(() => null);
      }
      return null;
    },

    /** A handler that goes on after its event ended, waiting on a fetch or a timer (the
     * room took other events meanwhile, as PartyKit's does): how it ends is only logged,
     * as PartyKit logs it, but for `onRequest`, whose answer (`answer`: its id) goes to
     * its requester from the step that gives it. */
    detach(handle, promise, kind, answer) {
      if (kind === "request") {
        promise.then((parts) => N.answer(handle, answer, parts), (e) => N.answerThrown(handle, answer, e));
        return;
      }
      const name = { message: "onMessage", close: "onClose", error: "onError" }[kind] ?? kind;
      promise.then(undefined, (e) => console.error(`${name} failed after its event:`, e));
    },

    async dispatchAsync(handle, kind, conn, a, b, c, d) {
      if (kind === "beforeConnect" || kind === "beforeRequest" || kind === "fetch" || kind === "cron") {
        return conclave.check(handle, kind, a, b, c, d);
      }
      const inst = instances.get(handle);
      if (!inst) throw new Error(`no party instance ${handle}`);
      const s = inst.server;
      switch (kind) {
        case "start": {
          const f = serverMethod(s, "onStart");
          if (f) await f.call(s);
          return hibernates(s);
        }
        case "tags": {
          const f = serverMethod(s, "getConnectionTags");
          if (!f) return [];
          const ctx = { request: makeRequest("GET", a, b, null) };
          const tags = await f.call(s, connectionOf(inst, conn), ctx);
          return Array.isArray(tags) ? tags.map(String) : [];
        }
        case "connect": {
          const c0 = connectionOf(inst, conn);
          const f = serverMethod(s, "onConnect");
          if (f) await f.call(s, c0, { request: makeRequest("GET", a, b, null) });
          return null;
        }
        case "close": {
          const c0 = connectionOf(inst, conn);
          inst.conns.delete(conn[0]);
          c0.readyState = 3;
          c0._left(c);
          c0._emit(() => new CloseEvent("close", { code: a, reason: b, wasClean: true }));
          const f = serverMethod(s, "onClose");
          if (f) await f.call(s, c0);
          return null;
        }
        case "error": {
          const c0 = connectionOf(inst, conn);
          if (b) {
            inst.conns.delete(conn[0]);
            c0.readyState = 3;
            c0._left(c);
          }
          const err = new Error(a);
          c0._emit(() => new ErrorEvent("error", { error: err, message: a }));
          const f = serverMethod(s, "onError");
          if (f) await f.call(s, c0, err);
          return null;
        }
        case "request": {
          const f = serverMethod(s, "onRequest");
          if (!f) return ["", "", 500, ["content-type", "text/plain;charset=UTF-8"], copyBuffer(new TextEncoder().encode("No onRequest handler"))];
          const req = makeRequest(a, b, c, d);
          return responseParts(await f.call(s, req), "onRequest");
        }
        case "alarm": {
          const f = serverMethod(s, "onAlarm");
          if (f) await f.call(s);
          return null;
        }
        case "wake":
          return null; // due timers ran before this event
        default:
          throw new Error(`unknown event ${kind}`);
      }
    },
  };

  /** The static checks, outside any room (PartyKit runs them at the edge). */
  conclave.check = async (handle, kind, a, b, c, d) => {
    const parties = partiesFor({ handle }); // lobby.parties: rooms, reached from outside
    // The ExecutionContext: what the handler hands to waitUntil gets up to 3 s more
    // before the answer goes out (nothing of a check runs after it), not the answer's
    // whole limit.
    const waits = [];
    const ctx = {
      waitUntil(promise) { waits.push(Promise.resolve(promise).catch(() => {})); },
      passThroughOnException() {},
    };
    // A cron answers no one: what it hands to waitUntil may take the event's whole limit.
    const settle = async (result) => {
      if (waits.length > 0 && kind === "cron") {
        await Promise.all(waits);
      } else if (waits.length > 0) {
        let timer;
        const grace = new Promise((resolve) => { timer = setTimeout(resolve, WAIT_UNTIL_GRACE_MS); });
        await Promise.race([Promise.all(waits), grace]);
        clearTimeout(timer);
      }
      return result;
    };
    if (kind === "beforeConnect") {
      // a: room id, b: url, c: flat headers
      const req = makeRequest("GET", b, c, null);
      return settle(await checked(await definition.onBeforeConnect(req, makeLobby(a, parties), ctx), "onBeforeConnect"));
    }
    if (kind === "cron") {
      // a: the cron's name, b: its schedule, c: when it was due (ms since the epoch)
      const controller = { name: a, cron: b, scheduledTime: c, noRetry() {} };
      await definition.onCron(controller, makeFetchLobby(parties), ctx);
      return settle(null);
    }
    // a: room id (none for fetch), b: method, c: url, d: [flat headers, body]
    const req = makeRequest(b, c, d[0], d[1]);
    if (kind === "fetch") {
      // Nothing returned: the request goes on to the project's 404 page, as on PartyKit.
      const resp = await definition.onFetch(req, makeFetchLobby(parties), ctx);
      return settle(resp ? await responseParts(resp, "onFetch") : null);
    }
    return settle(await checked(await definition.onBeforeRequest(req, makeLobby(a, parties), ctx), "onBeforeRequest"));
  };

  /** What the static `onFetch` gets as `lobby` (PartyKit's FetchLobby). */
  function makeFetchLobby(parties) {
    return { env: partyEnv, parties, assets };
  }

  const WAIT_UNTIL_GRACE_MS = 3000;

  /** What the static checks get as `lobby`. */
  function makeLobby(roomId, parties) {
    return { id: roomId, name: partyName, env: partyEnv, parties, assets };
  }

  Object.defineProperty(globalThis, "__conclave", { value: conclave });
  // web.js and this file hold the natives now; the party's own code does not get them
  // (they take any room's handle).
  delete globalThis.__native;
})();
