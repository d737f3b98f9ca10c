// The web globals (node/src/js/web.js) and the storage codec (node/src/js/codec.js) that
// the QuickJS party runtime evaluates before a user's bundle. They run here in a bare
// node:vm context (only V8's own globals) with a JS stand-in for the Rust `__native`, so
// every URL, Headers, TextDecoder… under test is ours, never Node's. Node's own
// implementations serve as the reference where they exist.
import { test } from "node:test";
import assert from "node:assert/strict";
import vm from "node:vm";
import { readFileSync } from "node:fs";
import nodeCrypto from "node:crypto";

const source = (name) => readFileSync(new URL(`../../node/src/js/${name}`, import.meta.url), "utf8");
const STREAMS_JS = source("streams.js");
const WEB_JS = source("web.js");
const CODEC_JS = source("codec.js");

const OUR_GLOBALS = [
  "console", "performance", "queueMicrotask", "structuredClone", "TextEncoder", "TextDecoder",
  "atob", "btoa", "crypto", "URL", "URLSearchParams", "Headers", "Request", "Response", "Event",
  "EventTarget", "MessageEvent", "CloseEvent", "ErrorEvent", "AbortController", "AbortSignal",
  "DOMException", "Blob", "__bodyBytes", "__bodyReady", "__codec", "__brands",
  "ReadableStream", "ReadableStreamDefaultReader", "ReadableStreamDefaultController", "WritableStream",
  "WritableStreamDefaultWriter", "WritableStreamDefaultController", "TransformStream",
  "TransformStreamDefaultController", "ByteLengthQueuingStrategy", "CountQueuingStrategy",
  "TextEncoderStream", "TextDecoderStream",
];

// The natives as Rust defines them, on node:crypto and Node's encoders. Buffers cross
// into the context as copies made there, so the code under test only sees its own realm.
// Like rquickjs, the string arguments must be well-formed (no lone surrogates).
const NATIVE_STUB = `(host) => {
  const copy = (bytes) => { const out = new Uint8Array(bytes.length); out.set(bytes); return out.buffer; };
  const buffer = (b) => { if (!(b instanceof ArrayBuffer)) throw new TypeError("expected an ArrayBuffer"); return b; };
  globalThis.__native = {
    log: (level, text) => host.log(level, text),
    now: () => host.now(),
    randomBytes: (n) => copy(host.randomBytes(n)),
    digest: (algorithm, bytes) => copy(host.digest(algorithm, buffer(bytes))),
    utf8Encode: (s) => copy(host.utf8Encode(s)),
    utf8Decode: (bytes, fatal) => {
      try { return host.utf8Decode(buffer(bytes), fatal); } catch (e) { throw new TypeError(e.message); }
    },
  };
}`;

// `preset` runs first, standing in for globals the engine already has.
function makeRealm(preset = "") {
  const logs = [];
  const started = performance.now();
  const host = {
    log: (level, text) => {
      assert.ok(["debug", "info", "warn", "error"].includes(level), level);
      assert.ok(text.isWellFormed(), "log text must be well-formed");
      logs.push([level, text]);
    },
    now: () => performance.now() - started,
    randomBytes: (n) => {
      assert.ok(n <= 65536);
      return nodeCrypto.randomBytes(n);
    },
    digest: (algorithm, bytes) => {
      assert.ok(["SHA-1", "SHA-256", "SHA-384", "SHA-512"].includes(algorithm), algorithm);
      return nodeCrypto.createHash(algorithm.replace("-", "").toLowerCase()).update(new Uint8Array(bytes)).digest();
    },
    utf8Encode: (s) => {
      assert.ok(s.isWellFormed(), "utf8Encode input must be well-formed");
      return new TextEncoder().encode(s);
    },
    utf8Decode: (bytes, fatal) => new TextDecoder("utf-8", { fatal, ignoreBOM: true }).decode(bytes),
  };
  const context = vm.createContext({});
  vm.runInContext("delete globalThis.console", context); // V8's inspector console, not ours
  const before = OUR_GLOBALS.filter((name) => vm.runInContext(`typeof ${name}`, context) !== "undefined");
  vm.runInContext(NATIVE_STUB, context)(host);
  vm.runInContext(preset, context);
  vm.runInContext(STREAMS_JS, context, { filename: "streams.js" });
  vm.runInContext(WEB_JS, context, { filename: "web.js" });
  vm.runInContext(CODEC_JS, context, { filename: "codec.js" });
  const run = (fn, ...args) => vm.runInContext(`(${fn})`, context)(...args);
  return { g: context, logs, run, before };
}

const { g, logs, run, before } = makeRealm();
const inner = run(() => ({ Object, Error })); // the context's own built-ins

const takeLogs = () => logs.splice(0);
const plain = (v) => JSON.parse(JSON.stringify(v));

function throwsNamed(fn, name, message = undefined) {
  assert.throws(fn, (e) => {
    assert.equal(e?.name, name, `expected ${name}, got ${e?.name}: ${e?.message}`);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
}

async function rejectsNamed(promise, name) {
  await assert.rejects(promise, (e) => {
    assert.equal(e?.name, name, `expected ${name}, got ${e?.name}: ${e?.message}`);
    return true;
  });
}

// Deep equality across realms: same kinds, constructor names, contents and the same
// reference topology (a cycle or shared object in `a` is one in `b` too).
function deepSame(a, b, pairs = new Map()) {
  if (typeof a !== typeof b) return false;
  if (typeof a !== "object" || a === null || b === null) return Object.is(a, b);
  if (pairs.has(a)) return pairs.get(a) === b;
  pairs.set(a, b);
  const tag = Object.prototype.toString.call(a);
  if (tag !== Object.prototype.toString.call(b)) return false;
  if (Object.getPrototypeOf(a)?.constructor?.name !== Object.getPrototypeOf(b)?.constructor?.name) return false;
  switch (tag) {
    case "[object Date]": return Object.is(a.getTime(), b.getTime());
    case "[object RegExp]": return a.source === b.source && a.flags === b.flags;
    case "[object Map]": case "[object Set]": return deepSame([...a], [...b], pairs);
    case "[object ArrayBuffer]": return Buffer.from(a).equals(Buffer.from(b));
    case "[object Number]": case "[object String]": case "[object Boolean]": case "[object BigInt]":
      return Object.is(a.valueOf(), b.valueOf());
    case "[object Error]":
      if (a.name !== b.name || a.message !== b.message || !deepSame(a.cause, b.cause, pairs)) return false;
  }
  if (ArrayBuffer.isView(a)) {
    return a.byteOffset === b.byteOffset && a.byteLength === b.byteLength && deepSame(a.buffer, b.buffer, pairs);
  }
  if (Array.isArray(a) && a.length !== b.length) return false;
  const [ka, kb] = [Object.keys(a), Object.keys(b)];
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && deepSame(a[k], b[k], pairs));
}

function assertSame(actual, expected) {
  assert.ok(deepSame(actual, expected), `not the same:\n${g.__codec.encode(actual)}\n${g.__codec.encode(expected)}`);
}

// ------------------------------------------------------------------ realm

test("the context starts without any web global, and ends with ours", () => {
  assert.deepEqual(before, []);
  for (const name of OUR_GLOBALS) assert.notEqual(g[name], undefined, name);
  assert.notEqual(g.URL, URL);
  assert.notEqual(g.Headers, Headers);
  assert.equal(Object.prototype.toString.call(new g.Headers()), "[object Headers]");
  assert.equal(Object.keys(g).includes("URL"), false, "globals are not enumerable");
});

test("globals the engine already has are kept, and web.js uses its DOMException", () => {
  const preset = `
    globalThis.queueMicrotask = function engineQueueMicrotask() {};
    globalThis.performance = { now: () => 42 };
    globalThis.DOMException = class DOMException extends Error {
      constructor(message, name) { super(message); this.name = name; this.fromEngine = true; }
    };`;
  const { run: runPreset } = makeRealm(preset);
  const out = runPreset(() => {
    let error;
    try { btoa("€"); } catch (e) { error = e; }
    return [queueMicrotask.name, performance.now(), error.name, error.fromEngine, typeof URL];
  });
  assert.deepEqual([...out], ["engineQueueMicrotask", 42, "InvalidCharacterError", true, "function"]);
});

test("codec.js needs web.js first, and shares its value classifier through a hidden __brands", () => {
  assert.throws(() => vm.runInContext(CODEC_JS, vm.createContext({})), /__brands is missing; evaluate web\.js first/);
  const brands = Object.getOwnPropertyDescriptor(g, "__brands");
  assert.deepEqual([brands.enumerable, brands.writable, brands.configurable], [false, false, false]);
  const tables = [brands.value, ...Object.values(brands.value).filter((v) => typeof v === "object")];
  assert.ok(tables.every((t) => Object.isFrozen(t)), "__brands and its tables are frozen");
  const out = run(() => {
    let error;
    try { __codec.encode({ f() {} }); } catch (e) { error = e; }
    return [error instanceof DOMException, error.name, __codec.decode(__codec.encode([1n, new Map([[1, 2]])]))[1].get(1)];
  });
  assert.deepEqual([...out], [true, "DataCloneError", 2]);
});

// ---------------------------------------------------------------- console

test("console formats like util.format", () => {
  takeLogs();
  run(() => {
    console.log("%s is %d years and %i%%", "Bob", 42.5, 42.9);
    console.log("%f %j %o %O %c|", "1.5", { a: [1] }, [1], { b: 2 }, "color: red");
    console.log("%s %d", "only one");
    console.log("%j", (() => { const o = {}; o.o = o; return o; })());
    console.log("a", 1, "b", null, undefined, -0, 5n, Symbol("s"), "%s");
    console.log("100%");
    console.log("lone \ud800");
    console.log();
  });
  assert.deepEqual(takeLogs().map(([, t]) => t), [
    "Bob is 42.5 years and 42%",
    "1.5 {\"a\":[1]} [ 1 ] { b: 2 } |",
    "only one %d",
    "[Circular]",
    "a 1 b null undefined -0 5n Symbol(s) %s",
    "100%",
    "lone \ufffd",
    "",
  ]);
});

test("console inspects values compactly and safely", () => {
  takeLogs();
  run(() => {
    class Point { constructor() { this.x = 1; } }
    const cyclic = { name: "c" };
    cyclic.self = cyclic;
    const shared = [1];
    const values = [
      { a: 1, "b-c": "it's", nested: { deep: { deeper: { deepest: 1 } } } },
      cyclic,
      { one: shared, two: shared },
      new Map([["k", { v: 1 }]]),
      new Set([1, "two"]),
      new Uint8Array([1, 2, 3]),
      new ArrayBuffer(4),
      [1, , 3],
      Object.assign(Object.create(null), { z: 1 }),
      new Point(),
      { [Symbol("sym")]: 1, get g() { return 1; } },
      [function named() {}, () => {}, class K {}],
      new Date(0),
      /re/g,
      Object(1),
      Array.from({ length: 102 }, (_, i) => i),
    ];
    for (const v of values) console.log(v);
    console.log(new TypeError("boom"));
    console.log({ error: new RangeError("inner") });
  });
  const lines = takeLogs().map(([, t]) => t);
  assert.deepEqual(lines.slice(0, 15), [
    "{ a: 1, 'b-c': 'it\\'s', nested: { deep: { deeper: [Object] } } }",
    "{ name: 'c', self: [Circular] }",
    "{ one: [ 1 ], two: [ 1 ] }",
    "Map(1) { 'k' => { v: 1 } }",
    "Set(2) { 1, 'two' }",
    "Uint8Array(3) [ 1, 2, 3 ]",
    "ArrayBuffer { byteLength: 4 }",
    "[ 1, <empty item>, 3 ]",
    "[Object: null prototype] { z: 1 }",
    "Point { x: 1 }",
    "{ g: [Getter], [Symbol(sym)]: 1 }",
    "[ [Function: named], [Function (anonymous)], [class K] ]",
    "1970-01-01T00:00:00.000Z",
    "/re/g",
    "[Number: 1]",
  ]);
  assert.match(lines[15], /^\[ 0, 1, .* 99, \.\.\. 2 more items \]$/);
  assert.match(lines[16], /^TypeError: boom\n\s+at /);
  assert.equal(lines[17], "{ error: [RangeError: inner] }");
});

test("console methods map to levels; groups indent; count, assert, time, trace", () => {
  takeLogs();
  run(() => {
    console.debug("d");
    console.info("i");
    console.warn("w");
    console.error("e");
    console.group("g");
    console.log("inside\nlines");
    console.groupEnd();
    console.count();
    console.count();
    console.count("x");
    console.assert(true, "never");
    console.assert(false, "failed %d", 1);
    console.time("t");
    console.timeEnd("t");
    console.trace("here");
    console.dir({ a: { b: { c: {} } } }, { depth: 0 });
  });
  const out = takeLogs();
  assert.deepEqual(out.slice(0, 10), [
    ["debug", "d"], ["info", "i"], ["warn", "w"], ["error", "e"], ["info", "g"],
    ["info", "  inside\n  lines"], ["info", "default: 1"], ["info", "default: 2"], ["info", "x: 1"],
    ["error", "Assertion failed: failed 1"],
  ]);
  assert.match(out[10][1], /^t: \d+\.\d{3}ms$/);
  assert.match(out[11][1], /^Trace: here\n\s+at /);
  assert.deepEqual(out[12], ["info", "{ a: [Object] }"]);
});

// ---------------------------------------------- performance, queueMicrotask

test("performance.now is monotonic; queueMicrotask runs callbacks in order and reports throws", async () => {
  const [a, b] = run(() => [performance.now(), performance.now()]);
  assert.ok(typeof a === "number" && b >= a);
  assert.ok(Math.abs(g.performance.timeOrigin + b - Date.now()) < 1000);
  takeLogs();
  const order = run(() => {
    const order = [];
    queueMicrotask(() => order.push(1));
    queueMicrotask(() => { throw new Error("in microtask"); });
    queueMicrotask(() => order.push(2));
    order.push(0);
    return order;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual([...order], [0, 1, 2]);
  const [[level, text]] = takeLogs();
  assert.equal(level, "error");
  assert.match(text, /^Uncaught Error: in microtask/);
  throwsNamed(() => g.queueMicrotask(1), "TypeError");
});

// --------------------------------------------------------- structuredClone

const makeClonable = () => {
  const shared = { s: 1 };
  const cyclic = { name: "root", list: [shared, shared] };
  cyclic.self = cyclic;
  const buffer = new ArrayBuffer(16);
  new Uint8Array(buffer).set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
  const sparse = [1, , 3];
  sparse.extra = "x";
  const error = new RangeError("bad range", { cause: shared });
  class Thing { constructor() { this.own = 1; } method() {} }
  return {
    cyclic, sparse, error,
    values: [undefined, null, true, 0, -0, NaN, Infinity, -Infinity, 1.5, "str", 10n ** 30n, -1n],
    dates: [new Date(0), new Date(NaN)],
    regexps: [/a+b/gi, /x/suy],
    map: new Map([[shared, cyclic], ["k", [1, 2]], [NaN, undefined]]),
    set: new Set([shared, 1, "1"]),
    views: [
      new Uint8Array(buffer, 1, 4), new Int16Array(buffer, 2, 3), new Float64Array(buffer, 8, 1),
      new DataView(buffer, 3, 5), new BigInt64Array(2), new Uint8ClampedArray([300]),
      new Int8Array([-1]), new Uint16Array([65535]), new Int32Array([-2]), new Uint32Array([4e9]),
      new Float32Array([0.5]), new BigUint64Array([2n ** 64n - 1n]),
    ],
    buffer,
    boxed: [Object(1), Object("s"), Object(false), Object(5n)],
    errors: [new TypeError("t"), new Error(), Object.assign(new Error("renamed"), { name: "Custom" })],
    proto: JSON.parse('{"__proto__": {"polluted": true}}'),
    thing: new Thing(),
  };
};

test("structuredClone copies every supported kind, keeping cycles and shared references", () => {
  const [original, copy] = run((make) => {
    const original = eval(`(${make})`)();
    return [original, structuredClone(original)];
  }, String(makeClonable));
  assert.notEqual(copy, original);
  const expected = run((o) => {
    const e = { ...o, thing: { own: 1 } };
    e.errors = [o.errors[0], o.errors[1], new Error("renamed")];
    return e;
  }, original);
  assertSame(copy, expected);
  assert.equal(copy.cyclic.self, copy.cyclic);
  assert.equal(copy.cyclic.list[0], copy.cyclic.list[1]);
  assert.equal(copy.views[0].buffer, copy.buffer, "views keep sharing their buffer");
  assert.equal(copy.map.get(copy.cyclic.list[0]), copy.cyclic);
  assert.equal(copy.error.cause, copy.cyclic.list[0]);
  assert.equal(typeof copy.error.stack, "string");
  assert.equal(Object.getPrototypeOf(copy.proto), inner.Object.prototype);
  assert.deepEqual(Object.keys(copy.proto), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(copy.thing), inner.Object.prototype);
  assert.ok(!(1 in copy.sparse) && copy.sparse.extra === "x");
});

test("structuredClone throws DataCloneError on functions, symbols and unclonable built-ins", () => {
  const cases = run(() => [
    () => 1, Symbol("s"), { nested: [function f() {}] }, Promise.resolve(), new WeakMap(), new WeakSet(),
    Object(Symbol("boxed")),
  ]);
  for (const value of cases) {
    throwsNamed(() => g.structuredClone(value), "DataCloneError");
  }
  const error = run(() => { try { structuredClone(() => 1); } catch (e) { return e; } });
  assert.ok(error instanceof g.DOMException && error.code === 25);
  throwsNamed(() => g.structuredClone(), "TypeError");
});

test("subclasses of built-ins clone as the built-in; mere heirs of a prototype as plain objects", () => {
  const out = run(() => {
    class MyMap extends Map {}
    class MyError extends TypeError {}
    const values = [new MyMap([[1, 2]]), new MyError("sub"), Object.create(Map.prototype), Object.assign(Object.create(Date.prototype), { x: 1 })];
    const describe = (v) => `${Object.prototype.toString.call(v)} ${v.constructor.name} ${v instanceof Map ? v.get(1) : JSON.stringify(v)}`;
    return values.map((v) => [describe(structuredClone(v)), describe(__codec.decode(__codec.encode(v)))]);
  });
  assert.deepEqual(plain(out), [
    ["[object Map] Map 2", "[object Map] Map 2"],
    ["[object Error] TypeError {}", "[object Error] TypeError {}"],
    ["[object Object] Object {}", "[object Object] Object {}"],
    ['[object Object] Object {"x":1}', '[object Object] Object {"x":1}'],
  ]);
});

// ----------------------------------------------------- TextEncoder/Decoder

test("Blob holds its parts' bytes, slices them and reads them back, as Node's Blob does", async () => {
  const parts = () => ["héllo ", new Uint8Array([1, 2, 3]), new Uint16Array([0x4142]).buffer, 42];
  const ours = new g.Blob(parts(), { type: "Text/Plain" });
  const node = new Blob(parts(), { type: "Text/Plain" });
  assert.deepEqual([ours.size, ours.type], [node.size, node.type]);
  const bytes = async (b) => [...new Uint8Array(await b.arrayBuffer())];
  assert.deepEqual(await bytes(ours), await bytes(node));
  for (const [start, end] of [[1], [2, 5], [-4], [-4, -1], [5, 2], [0, 100], [undefined, 3]]) {
    assert.deepEqual(await bytes(ours.slice(start, end)), await bytes(node.slice(start, end)), `slice(${start}, ${end})`);
  }
  assert.equal(ours.slice(0, 1, "X/Y").type, "x/y");
  assert.equal(await new g.Blob([ours, "!"]).text(), await new Blob([node, "!"]).text());
  assert.deepEqual([...(await ours.slice(0, 2).bytes())], [0x68, 0xc3]);
  assert.equal(new g.Blob([], { type: "bad\u00e9" }).type, "");
  assert.equal(new g.Blob().size, 0);
  throwsNamed(() => new g.Blob("not a sequence"), "TypeError");
  const streamed = [];
  for await (const chunk of ours.stream()) streamed.push(Buffer.from(chunk).toString());
  assert.deepEqual(streamed, [Buffer.from(await ours.arrayBuffer()).toString()]);
  assert.equal(Object.prototype.toString.call(ours), "[object Blob]");
  // [Clamp] indices: halves to even, NaN is 0; text() drops a BOM.
  // (Node 20's own Blob aborts the process on these, so the bytes are spelled out.)
  const all = await bytes(ours);
  assert.deepEqual(await bytes(ours.slice(1.5, 4.5)), all.slice(2, 4));
  assert.deepEqual(await bytes(ours.slice(2.5, 3.5)), all.slice(2, 4));
  assert.deepEqual(await bytes(ours.slice(NaN, 2)), all.slice(0, 2));
  assert.deepEqual(await bytes(ours.slice(-1.5)), all.slice(-2));
  assert.equal(await new g.Blob([new Uint8Array([0xef, 0xbb, 0xbf, 0x61])]).text(), "a");
  // As a body: its bytes and its type; blob() reads one back.
  const res = new g.Response(new g.Blob([new Uint8Array([1, 2, 255])], { type: "image/png" }));
  assert.equal(res.headers.get("content-type"), "image/png");
  const back = await res.blob();
  assert.deepEqual([back.type, [...new Uint8Array(await back.arrayBuffer())]], ["image/png", [1, 2, 255]]);
  // Its bytes are private: a clone or a stored copy would be empty, so both refuse it.
  throwsNamed(() => g.structuredClone(ours), "DataCloneError");
  throwsNamed(() => g.__codec.encode(ours), "DataCloneError");
});

test("TextEncoder encodes UTF-8, lone surrogates as U+FFFD, and encodeInto whole characters only", () => {
  const text = "héllo € 😀 \ud800!";
  const ours = run((t) => Array.from(new TextEncoder().encode(t)), text);
  assert.deepEqual([...ours], [...new TextEncoder().encode(text)]);
  assert.equal(new g.TextEncoder().encoding, "utf-8");
  const results = run(() => {
    const out = [];
    for (const size of [0, 1, 2, 3, 5, 6, 20]) {
      const dest = new Uint8Array(size);
      const { read, written } = new TextEncoder().encodeInto("a€😀\udc00", dest);
      out.push([size, read, written, Array.from(dest.subarray(0, written))]);
    }
    return out;
  });
  assert.deepEqual(plain(results), [
    [0, 0, 0, []],
    [1, 1, 1, [0x61]],
    [2, 1, 1, [0x61]],
    [3, 1, 1, [0x61]],
    [5, 2, 4, [0x61, 0xe2, 0x82, 0xac]],
    [6, 2, 4, [0x61, 0xe2, 0x82, 0xac]],
    [20, 5, 11, [0x61, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xef, 0xbf, 0xbd]],
  ]);
  throwsNamed(() => new g.TextEncoder().encodeInto("a", []), "TypeError");
});

test("TextDecoder decodes buffers and views, handles BOM, fatal, labels and streaming", () => {
  const out = run(() => {
    const bytes = new TextEncoder().encode("\ufeffhé€😀");
    const d = new TextDecoder();
    const chunks = [bytes.subarray(0, 2), bytes.subarray(2, 5), bytes.subarray(5, 9), bytes.subarray(9)];
    const streamed = chunks.map((c) => d.decode(c, { stream: true })).join("") + d.decode();
    const padded = new Uint8Array([0, 0x68, 0x69, 0]);
    return {
      buffer: d.decode(bytes.buffer),
      view: d.decode(new DataView(padded.buffer, 1, 2)),
      typed: d.decode(new Uint16Array(padded.buffer, 0, 2)),
      keepBOM: new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes),
      streamed,
      lossy: d.decode(new Uint8Array([0x61, 0xff, 0xe2, 0x82])),
      empty: d.decode(),
      label: [new TextDecoder(" UTF8 ").encoding, new TextDecoder("unicode-1-1-utf-8").encoding],
      flags: [d.fatal, d.ignoreBOM, new TextDecoder("utf-8", { fatal: true }).fatal],
      unfinished: d.decode(new Uint8Array([0xf0, 0x9f]), { stream: true }) + "|" + d.decode(),
    };
  });
  assert.deepEqual(plain(out), {
    buffer: "hé€😀",
    view: "hi",
    typed: "\0hi\0",
    keepBOM: "\ufeffhé€😀",
    streamed: "hé€😀",
    lossy: "a\ufffd\ufffd",
    empty: "",
    label: ["utf-8", "utf-8"],
    flags: [false, false, true],
    unfinished: "|\ufffd",
  });
  const fatal = new g.TextDecoder("utf-8", { fatal: true });
  throwsNamed(() => fatal.decode(new Uint8Array([0xc3])), "TypeError");
  throwsNamed(() => new g.TextDecoder("latin1"), "RangeError");
  throwsNamed(() => new g.TextDecoder().decode("not bytes"), "TypeError");
});

// ---------------------------------------------------------------- base64

test("btoa and atob match Node's, with InvalidCharacterError DOMExceptions", () => {
  const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
  for (let n = 0; n <= 6; n++) {
    assert.equal(g.btoa(all.slice(100, 100 + n)), btoa(all.slice(100, 100 + n)));
  }
  assert.equal(g.btoa(all), btoa(all));
  assert.equal(g.atob(g.btoa(all)), all);
  const inputs = ["", "YQ", "YQ=", "YQ==", "YWI", "YWJj", " Y W\nJ j\t", "YQ===", "Y", "YQ=a", "*abc", "YWJj=", "YR==", "ab=c", "a==="];
  for (const input of inputs) {
    let expected;
    try {
      expected = atob(input);
    } catch {
      expected = "InvalidCharacterError";
    }
    let actual;
    try {
      actual = g.atob(input);
    } catch (e) {
      actual = e.name;
      assert.ok(e instanceof g.DOMException && e.code === 5);
    }
    assert.equal(actual, expected, `atob(${JSON.stringify(input)})`);
  }
  throwsNamed(() => g.btoa("€"), "InvalidCharacterError");
  throwsNamed(() => g.atob(), "TypeError");
});

// ---------------------------------------------------------------- crypto

test("crypto.randomUUID, getRandomValues and subtle.digest", async () => {
  const uuids = new Set(Array.from({ length: 50 }, () => g.crypto.randomUUID()));
  assert.equal(uuids.size, 50);
  for (const id of uuids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const filled = run(() => {
    const a = new Uint32Array(64);
    return [crypto.getRandomValues(a) === a, a.some((x) => x !== 0), crypto.getRandomValues(new BigInt64Array(2)).length];
  });
  assert.deepEqual([...filled], [true, true, 2]);
  assert.equal(g.crypto.getRandomValues(new Uint8Array(65536)).length, 65536);
  throwsNamed(() => g.crypto.getRandomValues(new Uint8Array(65537)), "QuotaExceededError");
  throwsNamed(() => g.crypto.getRandomValues(new Float32Array(2)), "TypeMismatchError");
  throwsNamed(() => g.crypto.getRandomValues(new DataView(new ArrayBuffer(2))), "TypeMismatchError");
  throwsNamed(() => g.crypto.getRandomValues([1, 2]), "TypeError");

  const hex = (buffer) => Buffer.from(buffer).toString("hex");
  const sha = (alg, s) => nodeCrypto.createHash(alg).update(s).digest("hex");
  assert.equal(hex(await g.crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc"))), sha("sha256", "abc"));
  assert.equal(hex(await g.crypto.subtle.digest({ name: "sha-1" }, new Uint8Array([0x61]).buffer)), sha("sha1", "a"));
  const view = new Uint8Array([0, 0x61, 0x62, 0]).subarray(1, 3);
  assert.equal(hex(await g.crypto.subtle.digest("Sha-512", view)), sha("sha512", "ab"));
  assert.equal(hex(await g.crypto.subtle.digest("SHA-384", new ArrayBuffer(0))), sha("sha384", ""));
  await rejectsNamed(g.crypto.subtle.digest("MD5", new ArrayBuffer(1)), "NotSupportedError");
  await rejectsNamed(g.crypto.subtle.digest("SHA-256", "text"), "TypeError");
});

// -------------------------------------------------------------------- URL

const URL_PARTS = ["href", "origin", "protocol", "username", "password", "host", "hostname", "port", "pathname", "search", "hash"];
const URL_CASES = [
  ["http://example.com"],
  ["HTTP://EXAMPLE.COM:80/A/B?Q=1#F"],
  ["https://user:pass@example.com:8443/path/to?x=1&y=2#frag"],
  ["https://example.com:443/"],
  ["ws://localhost:1999/parties/main/room?_pk=abc"],
  ["wss://host.example:443/a"],
  ["ws://h:80"],
  ["http://a/b/c/./../../g"],
  ["http://a/b/c/%2e%2E/d/%2e"],
  ["http://a/b/c/.."],
  ["http://a/ b/\"<>`{}|/é?q= \"<>'`#f \"<>`"],
  ["http://a/^a^/?^#^"],
  ["http://GOO\u200b\u2060\ufeffgoo.com/"],
  ["https://a%C2%ADb/"],
  ["http://a:b:c@d/"],
  ["http://u@s@h/"],
  ["http://user:p%61ss@h/"],
  ["http://[::1]:1999/x"],
  ["http://[1:0:0:0:0:0:0:0]/"],
  ["http://[0:0:1:0:0:0:1:0]/"],
  ["http://[::ffff:1.2.3.4]/"],
  ["http://[1:2:3:4:5:6:7:8]/"],
  ["http://[1::2:3]/"],
  ["http://[::]/"],
  ["http://[:1]/"],
  ["http://[1:2:3:4:5:6:7:8:9]/"],
  ["http://[1::2::3]/"],
  ["http://[::1.2.3.256]/"],
  ["http://[::1.2.3]/"],
  ["http://[g::]/"],
  ["http://0x7f.1/"],
  ["http://192.168.0.1/"],
  ["http://0300.0250.1/"],
  ["http://4294967295/"],
  ["http://4294967296/"],
  ["http://1.2.3.4.5/"],
  ["http://09/"],
  ["http://foo.0x4/"],
  ["http://example.com./"],
  ["http://%41.com/"],
  ["http://a%2Fb/"],
  ["http://münchen.de/"],
  ["http://xn--mnchen-3ya.de/"],
  ["http://a b/"],
  ["http://a<b/"],
  ["http://:80/"],
  ["http://user@/"],
  ["http:///x"],
  ["http://"],
  ["http://a:65535/"],
  ["http://a:65536/"],
  ["http://a:/"],
  ["http://a:8x/"],
  ["http://a:0080/"],
  ["  http://a/\t\nb  "],
  ["https://a\\b\\c"],
  ["mailto:someone@example.com"],
  ["javascript:alert(1)"],
  ["data:text/plain,hi there"],
  ["sc://ñ/p?q#f"],
  ["sc://a:1/"],
  ["sc://@/"],
  ["sc://:/"],
  ["sc:/a/../b"],
  ["sc://h"],
  ["sc://h/"],
  ["sc:"],
  ["non-spec:/.//p"],
  ["non-spec:/..//p"],
  ["blob:https://a.com:8443/uuid"],
  ["blob:foo://a/uuid"],
  ["ftp://a/"],
  ["file:///tmp/x.txt"],
  ["file://localhost/etc"],
  ["file://host/share"],
  ["file:x"],
  ["a:b"],
  ["1http://a/"],
  ["//x/y", "https://a/b"],
  ["\\\\x\\y", "https://a/b"],
  ["?q", "http://a/b?c#d"],
  ["#f", "http://a/b?c#d"],
  ["", "http://a/b?c#d"],
  ["g", "http://a/b/c/d;p?q"],
  ["./g", "http://a/b/c/d;p?q"],
  ["g/", "http://a/b/c/d;p?q"],
  ["/g", "http://a/b/c/d;p?q"],
  ["?y", "http://a/b/c/d;p?q"],
  ["g?y#s", "http://a/b/c/d;p?q"],
  ["..", "http://a/b/c/d;p?q"],
  ["../../../../g", "http://a/b/c/d;p?q"],
  ["http:foo", "http://a/b/c"],
  ["http:/foo", "http://a/b/c"],
  ["https:foo", "http://a/b/c"],
  ["x", "sc://h/a/b"],
  ["//h2/x", "sc://h/a/b"],
  ["#frag", "mailto:a@b"],
  ["x", "mailto:a@b"],
  ["x", "file:///a/b"],
  ["/x", "file://h/a/b"],
  ["?q", "file:///a/b"],
  ["/parties/main/room", "http://localhost:1999"],
  ["relative"],
  ["https://a/", "not a base"],
];

function urlParts(make) {
  try {
    const url = make();
    return Object.fromEntries(URL_PARTS.map((k) => [k, url[k]]));
  } catch (e) {
    return e.name === "TypeError" ? "Invalid URL" : `${e.name}: ${e.message}`;
  }
}

test("URL parses like Node's on a list of absolute and relative inputs", () => {
  for (const [input, base] of URL_CASES) {
    const expected = urlParts(() => new URL(input, base));
    const actual = urlParts(() => new g.URL(input, base));
    assert.deepEqual(actual, expected, `new URL(${JSON.stringify(input)}, ${JSON.stringify(base)})`);
    assert.equal(g.URL.canParse(input, base), URL.canParse(input, base));
  }
});

test("URL errors, statics and serialisation", () => {
  throwsNamed(() => new g.URL("nope"), "TypeError", /^Invalid URL$/);
  throwsNamed(() => new g.URL("/x", "nope"), "TypeError", /^Invalid URL$/);
  throwsNamed(() => new g.URL(), "TypeError");
  const url = new g.URL("/p?a=1", new g.URL("https://h/"));
  assert.equal(String(url), "https://h/p?a=1");
  assert.equal(JSON.stringify({ url }), '{"url":"https://h/p?a=1"}');
  assert.equal(g.URL.parse("nope"), null);
  assert.equal(g.URL.parse("x", "http://h/").href, "http://h/x");
  assert.equal(Object.prototype.toString.call(url), "[object URL]");
});

const SETTER_CASES = [
  ["http://h/p?q#f", "protocol", "https"],
  ["http://h/p", "protocol", "wss:x"],
  ["http://h/p", "protocol", "sc"],
  ["http://h:443/p", "protocol", "https"],
  ["sc://h/p", "protocol", "http"],
  ["sc://h/p", "protocol", "other"],
  ["http://h/p", "protocol", "1x"],
  ["http://h/", "username", "us er@:"],
  ["http://h/", "password", "p:w"],
  ["mailto:x", "username", "u"],
  ["http://u:p@h/", "username", ""],
  ["http://h:81/p", "host", "other:82"],
  ["http://h:81/p", "host", "other"],
  ["http://h/p", "host", "x:8x"],
  ["http://h/p", "host", "x:99999"],
  ["http://h/p", "host", ""],
  ["http://h/p", "host", "a b"],
  ["http://h/p", "host", "[::1]:5"],
  ["http://h/p", "host", "NEW.example/ignored"],
  ["http://h/p", "hostname", "x:1"],
  ["http://h:81/p", "hostname", "Other"],
  ["sc://h/p", "host", ""],
  ["sc://h:1/p", "host", ""],
  ["mailto:x", "host", "h"],
  ["http://h/p", "port", "8080"],
  ["http://h:8080/p", "port", ""],
  ["http://h/p", "port", "80"],
  ["http://h/p", "port", "12ab"],
  ["http://h/p", "port", "ab"],
  ["http://h/p", "port", "70000"],
  ["http://h/p", "pathname", "/a/../b c?#"],
  ["http://h/p", "pathname", "no-slash"],
  ["sc://h/p", "pathname", "x"],
  ["mailto:x", "pathname", "y"],
  ["http://h/p?q", "search", "?a=1 2&b"],
  ["http://h/p?q", "search", ""],
  ["http://h/p?q", "search", "?"],
  ["http://h/p#f", "hash", "#x y"],
  ["http://h/p#f", "hash", ""],
  ["http://h/p#f", "hash", "#"],
  ["http://h/p", "href", "https://other/x?y#z"],
  ["foo:/some/path", "pathname", ""],
  ["sc:space ?query", "search", ""],
  ["sc:space    #fragment", "hash", ""],
  ["http://h/a", "pathname", "/x^y|z"],
];

test("URL setters behave like Node's", () => {
  for (const [start, key, value] of SETTER_CASES) {
    const expected = urlParts(() => Object.assign(new URL(start), { [key]: value }));
    const actual = urlParts(() => Object.assign(new g.URL(start), { [key]: value }));
    assert.deepEqual(actual, expected, `${start} .${key} = ${JSON.stringify(value)}`);
  }
  throwsNamed(() => {
    new g.URL("http://h/").href = "nope";
  }, "TypeError");
});

test("URL.searchParams is live in both directions", () => {
  const url = new g.URL("https://h/p?a=1&b=2#f");
  const params = url.searchParams;
  params.append("c", "3 4");
  assert.equal(url.href, "https://h/p?a=1&b=2&c=3+4#f");
  params.delete("a");
  params.delete("b");
  params.delete("c");
  assert.equal(url.href, "https://h/p#f");
  url.search = "?x=é&y";
  assert.equal(params.get("x"), "é");
  assert.equal(params.toString(), "x=%C3%A9&y=");
  url.href = "http://o/?z=1";
  assert.equal(params.get("z"), "1");
  assert.equal(url.searchParams, params);
  params.sort();
  assert.equal(url.search, "?z=1");
});

// --------------------------------------------------------- URLSearchParams

test("URLSearchParams parses and serialises like Node's", () => {
  const inputs = [
    "", "?", "a=1&b=2", "?a=1", "a", "a=", "=b", "&&a=1&&", "a=1=2", "a+b=c+d", "%20=%2B", "a=%zz&b=%4",
    "é=ü", "%C3%A9=%E2%82%AC", "%FF=%C3", "a=1;b=2", "q=!'()*~-._", "x=\ud800",
  ];
  for (const input of inputs) {
    const expected = new URLSearchParams(input);
    const actual = new g.URLSearchParams(input);
    assert.deepEqual(plain([...actual]), [...expected], `entries of ${JSON.stringify(input)}`);
    assert.equal(actual.toString(), expected.toString(), `toString of ${JSON.stringify(input)}`);
  }
  const strange = "a b&c=d+e&€=✓&~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./";
  assert.equal(new g.URLSearchParams({ s: strange }).toString(), new URLSearchParams({ s: strange }).toString());
});

test("URLSearchParams methods", () => {
  const p = new g.URLSearchParams([["b", "2"], ["a", "1"], ["b", "3"]]);
  assert.equal(p.size, 3);
  assert.equal(p.get("b"), "2");
  assert.equal(p.get("zz"), null);
  assert.deepEqual([...p.getAll("b")], ["2", "3"]);
  assert.equal(p.has("a"), true);
  assert.equal(p.has("b", "3"), true);
  assert.equal(p.has("b", "4"), false);
  p.append("c", 5);
  p.set("b", "x");
  assert.equal(p.toString(), "b=x&a=1&c=5");
  p.append("a", "0");
  p.delete("a", "1");
  assert.equal(p.toString(), "b=x&c=5&a=0");
  p.sort();
  assert.deepEqual(plain([...p.keys()]), ["a", "b", "c"]);
  assert.deepEqual(plain([...p.values()]), ["0", "x", "5"]);
  assert.deepEqual(plain([...p.entries()]), [["a", "0"], ["b", "x"], ["c", "5"]]);
  const seen = [];
  p.forEach(function (value, key, self) {
    seen.push([key, value, self === p, this.tag]);
  }, { tag: "t" });
  assert.deepEqual(seen, [["a", "0", true, "t"], ["b", "x", true, "t"], ["c", "5", true, "t"]]);
  assert.equal(new g.URLSearchParams({ x: 1, y: "two" }).toString(), "x=1&y=two");
  assert.equal(new g.URLSearchParams(p).toString(), "a=0&b=x&c=5");
  assert.equal(new g.URLSearchParams(new Map([["m", "v"]])).toString(), "m=v");
  const sorted = new g.URLSearchParams("z=1&a=2&z=0&\uFFFD=3&\u00e9=4");
  sorted.sort();
  assert.equal(sorted.toString(), "a=2&z=1&z=0&%C3%A9=4&%EF%BF%BD=3");
  throwsNamed(() => new g.URLSearchParams([["only-one"]]), "TypeError");
  throwsNamed(() => new g.URLSearchParams([["a", "b", "c"]]), "TypeError");
});

// ---------------------------------------------------------------- Headers

test("Headers are case-insensitive, combine values and iterate sorted", () => {
  const h = new g.Headers({ "Content-Type": "text/plain", "X-B": " padded\t" });
  h.append("x-a", "1");
  h.append("X-A", "2");
  h.append("Set-Cookie", "a=1");
  h.append("set-cookie", "b=2");
  assert.equal(h.get("CONTENT-type"), "text/plain");
  assert.equal(h.get("x-a"), "1, 2");
  assert.equal(h.get("x-b"), "padded");
  assert.equal(h.get("missing"), null);
  assert.equal(h.get("set-cookie"), "a=1, b=2");
  assert.deepEqual([...h.getSetCookie()], ["a=1", "b=2"]);
  assert.deepEqual(plain([...h]), [
    ["content-type", "text/plain"], ["set-cookie", "a=1"], ["set-cookie", "b=2"], ["x-a", "1, 2"], ["x-b", "padded"],
  ]);
  assert.deepEqual(plain([...h.keys()]), ["content-type", "set-cookie", "set-cookie", "x-a", "x-b"]);
  h.set("X-A", "3");
  h.delete("content-type");
  assert.equal(h.has("Content-Type"), false);
  const seen = [];
  h.forEach((value, name, self) => seen.push(`${name}=${value}:${self === h}`));
  assert.deepEqual(seen, ["set-cookie=a=1:true", "set-cookie=b=2:true", "x-a=3:true", "x-b=padded:true"]);
  assert.deepEqual(plain([...new g.Headers(h)]), plain([...h]));
  assert.deepEqual(plain([...new g.Headers([["a", "1"], ["A", "2"]])]), [["a", "1, 2"]]);
  throwsNamed(() => new g.Headers({ "bad name": "x" }), "TypeError");
  throwsNamed(() => new g.Headers({ a: "x\ny" }), "TypeError");
  throwsNamed(() => new g.Headers({ a: "€" }), "TypeError");
  throwsNamed(() => new g.Headers([["a"]]), "TypeError");
  throwsNamed(() => new g.Headers("a: b"), "TypeError");
});

// ----------------------------------------------------- Request, Response

const bytesText = (u8) => (u8 === null ? null : Buffer.from(u8).toString());

test("Request: url, method, headers, bodies, clone and construction from a Request", async () => {
  const r = new g.Request("https://H.example/a/../b?x#f", { method: "post", body: "hi", headers: { "X-A": "1" } });
  assert.equal(r.url, "https://h.example/b?x#f");
  assert.equal(r.method, "POST");
  assert.equal(r.headers.get("content-type"), "text/plain;charset=UTF-8");
  assert.equal(r.bodyUsed, false);
  assert.equal(bytesText(g.__bodyBytes(r)), "hi");
  const copy = r.clone();
  assert.equal(await r.text(), "hi");
  assert.equal(r.bodyUsed, true);
  await rejectsNamed(r.text(), "TypeError");
  throwsNamed(() => r.clone(), "TypeError");
  assert.deepEqual(plain(await copy.json().catch(() => "not json")), "not json");

  assert.equal(new g.Request("http://h/", { method: "patch" }).method, "patch");
  assert.equal(new g.Request("http://h/", { method: "delete" }).method, "DELETE");
  assert.equal(new g.Request("http://h/").method, "GET");
  assert.equal(g.__bodyBytes(new g.Request("http://h/")), null);
  assert.equal(new g.Request("http://h/").body, null);
  throwsNamed(() => new g.Request("http://h/", { method: "CONNECT" }), "TypeError");
  throwsNamed(() => new g.Request("http://h/", { method: "bad method" }), "TypeError");
  throwsNamed(() => new g.Request("http://h/", { body: "x" }), "TypeError");
  throwsNamed(() => new g.Request("/relative"), "TypeError");

  const form = new g.Request("http://h/", { method: "PUT", body: new g.URLSearchParams({ a: "1 2" }) });
  assert.equal(form.headers.get("content-type"), "application/x-www-form-urlencoded;charset=UTF-8");
  assert.equal(await form.text(), "a=1+2");
  const binary = new g.Request("http://h/", { method: "POST", body: new Uint8Array([1, 2, 3]).subarray(1) });
  assert.equal(binary.headers.has("content-type"), false);
  assert.deepEqual([...new Uint8Array(await binary.arrayBuffer())], [2, 3]);
  const json = new g.Request("http://h/", { method: "POST", body: new TextEncoder().encode('{"a":[1]}').buffer });
  assert.deepEqual(plain(await json.json()), { a: [1] });

  const original = new g.Request("http://h/x", { method: "POST", body: "data", headers: { a: "1" } });
  const derived = new g.Request(original, { headers: { b: "2" } });
  assert.equal(derived.url, "http://h/x");
  assert.equal(derived.method, "POST");
  assert.deepEqual(plain([...derived.headers]), [["b", "2"]]);
  assert.equal(original.bodyUsed, true, "the body moved to the new Request");
  assert.equal(await derived.text(), "data");
  throwsNamed(() => new g.Request(original), "TypeError");
  const signal = new g.AbortController().signal;
  assert.equal(new g.Request("http://h/", { signal }).signal, signal);
});

test("Response: defaults, statics, validation, clone and body reading", async () => {
  const r = new g.Response("hello", { status: 201, statusText: "Created", headers: [["X-A", "1"]] });
  assert.deepEqual([r.status, r.statusText, r.ok, r.type, r.url, r.redirected], [201, "Created", true, "default", "", false]);
  assert.equal(r.headers.get("content-type"), "text/plain;charset=UTF-8");
  assert.equal(bytesText(g.__bodyBytes(r)), "hello");
  const empty = new g.Response();
  assert.deepEqual([empty.status, empty.ok, empty.body, empty.headers.has("content-type")], [200, true, null, false]);
  assert.equal(await empty.text(), "");
  assert.equal(empty.bodyUsed, false);
  assert.equal(g.__bodyBytes(empty), null);
  assert.equal(new g.Response(null, { status: 404 }).ok, false);
  assert.equal(new g.Response(null, { status: 204 }).status, 204);
  throwsNamed(() => new g.Response("x", { status: 204 }), "TypeError");
  throwsNamed(() => new g.Response("x", { status: 199 }), "RangeError");
  throwsNamed(() => new g.Response("x", { status: 600 }), "RangeError");
  throwsNamed(() => new g.Response("x", { statusText: "a\nb" }), "TypeError");

  const json = g.Response.json({ a: [1, "é"] }, { status: 202, headers: { "x-b": "2" } });
  assert.equal(json.status, 202);
  assert.equal(json.headers.get("content-type"), "application/json");
  assert.equal(json.headers.get("x-b"), "2");
  assert.deepEqual(plain(await json.json()), { a: [1, "é"] });
  assert.equal(g.Response.json(1, { headers: { "Content-Type": "application/x+json" } }).headers.get("content-type"), "application/x+json");
  throwsNamed(() => g.Response.json(undefined), "TypeError");

  const redirect = g.Response.redirect("https://h/a b", 307);
  assert.deepEqual([redirect.status, redirect.headers.get("location")], [307, "https://h/a%20b"]);
  assert.equal(g.Response.redirect("https://h/").status, 302);
  throwsNamed(() => g.Response.redirect("https://h/", 200), "RangeError");
  throwsNamed(() => g.Response.redirect("/relative"), "TypeError");
  const error = g.Response.error();
  assert.deepEqual([error.status, error.type, error.ok], [0, "error", false]);
  assert.equal(error.clone().status, 0);

  const original = new g.Response(new Uint8Array([0xef, 0xbb, 0xbf, 0x68, 0x69]), { status: 203 });
  const clone = original.clone();
  assert.equal(await original.text(), "hi", "a BOM is stripped by text()");
  assert.equal(clone.status, 203);
  assert.deepEqual([...(await clone.bytes())], [0xef, 0xbb, 0xbf, 0x68, 0x69]);
  await rejectsNamed(clone.arrayBuffer(), "TypeError");
});

test("a body's stand-in stream reads once, and moves into a new Response", async () => {
  const r = new g.Response("chunk");
  const reader = r.body.getReader();
  assert.equal(r.body.locked, true);
  throwsNamed(() => r.body.getReader(), "TypeError");
  const first = await reader.read();
  assert.equal(Buffer.from(first.value).toString(), "chunk");
  assert.equal(first.done, false);
  assert.equal((await reader.read()).done, true);
  assert.equal(r.bodyUsed, true);

  const chunks = [];
  for await (const chunk of new g.Response("iterated").body) chunks.push(Buffer.from(chunk).toString());
  assert.deepEqual(chunks, ["iterated"]);

  const source = new g.Response("moved", { headers: { "x-a": "1" } });
  const wrapped = new g.Response(source.body, source);
  assert.equal(source.bodyUsed, true);
  assert.equal(wrapped.headers.get("x-a"), "1");
  assert.equal(await wrapped.text(), "moved");
  // Not a ReadableStream of ours: a string, as Node has it.
  assert.equal(await new g.Response({ getReader() {} }).text(), "[object Object]");
  assert.equal(await new g.Response(42).text(), "42");
});

// What the streams do, as a log: run with Node's streams and with ours, the logs must
// match. It runs where `globalThis` is the realm under test.
async function streamScenario() {
  const log = [];
  const ticks = async (n = 20) => {
    for (let i = 0; i < n; i++) await null;
  };
  // The messages of the streams' own errors differ from Node's; a source's or a sink's
  // are theirs.
  const caught = async (promise, withMessage = false) => {
    try {
      return ["ok", await promise];
    } catch (e) {
      return withMessage ? ["threw", e.name, e.message] : ["threw", e.name];
    }
  };

  // A pulled source fills its queue to the high-water mark before anyone reads.
  let pulls = 0;
  const pulled = new ReadableStream({
    start(c) { log.push(["start desiredSize", c.desiredSize]); },
    pull(c) {
      pulls++;
      if (pulls <= 3) c.enqueue(pulls);
      else c.close();
    },
  }, { highWaterMark: 2 });
  await ticks();
  log.push(["pulls before reading", pulls, pulled.locked]);
  const reader = pulled.getReader();
  log.push(["locked", pulled.locked]);
  for (;;) {
    const { value, done } = await reader.read();
    log.push(["read", value ?? null, done]);
    if (done) break;
  }
  log.push(["closed", await reader.closed ?? null]);
  reader.releaseLock();
  log.push(["after release", pulled.locked, (await caught(reader.read()))[0]]);

  // An error reaches pending and later reads, after what was queued before it? No: the
  // queue is dropped.
  const failing = new ReadableStream({ start(c) { c.enqueue("a"); c.error(new TypeError("boom")); } });
  const fr = failing.getReader();
  log.push(["errored read", await caught(fr.read(), true)]);
  log.push(["errored closed", await caught(fr.closed, true)]);

  // A cancel reaches the source with its reason; reads end.
  let cancelled;
  const cancellable = new ReadableStream({ pull() {}, cancel(reason) { cancelled = reason; } });
  const cr = cancellable.getReader();
  const pending = cr.read();
  await cr.cancel("enough");
  log.push(["cancelled", cancelled, await pending]);

  // from(), pipeThrough a TransformStream, pipeTo a WritableStream.
  const out = [];
  await ReadableStream.from(["a", "b", "c"])
    .pipeThrough(new TransformStream({
      transform(chunk, c) { c.enqueue(chunk.toUpperCase()); },
      flush(c) { c.enqueue("!"); },
    }))
    .pipeTo(new WritableStream({ write(chunk) { out.push(chunk); }, close() { out.push("closed"); } }));
  log.push(["piped", out]);

  // A sink that fails: the pipe rejects and cancels the source.
  let sourceCancel;
  const failed = await caught(new ReadableStream({
    pull(c) { c.enqueue("x"); },
    cancel(reason) { sourceCancel = reason.message; },
  }).pipeTo(new WritableStream({ write() { throw new RangeError("sink down"); } })), true);
  log.push(["pipe to failing sink", failed, sourceCancel]);

  // A source that fails: the pipe rejects and aborts the sink.
  let sinkAbort;
  const failedSource = await caught(new ReadableStream({
    start(c) { c.error(new RangeError("source down")); },
  }).pipeTo(new WritableStream({ abort(reason) { sinkAbort = reason.message; } })), true);
  log.push(["pipe from failing source", failedSource, sinkAbort]);

  // A writer's backpressure: desiredSize and ready follow the queue.
  const written = [];
  let release;
  const slow = new WritableStream({
    write(chunk) {
      written.push(chunk);
      return new Promise((r) => { release = r; });
    },
  }, new CountQueuingStrategy({ highWaterMark: 2 }));
  const writer = slow.getWriter();
  log.push(["desiredSize", writer.desiredSize]);
  const w1 = writer.write(1);
  const w2 = writer.write(2);
  log.push(["desiredSize after two", writer.desiredSize]);
  await ticks();
  log.push(["written", written.slice()]);
  release();
  await w1;
  await ticks();
  release();
  await w2;
  log.push(["written all", written.slice(), writer.desiredSize]);
  await writer.close();
  log.push(["writer closed", await writer.closed ?? null]);

  // Text streams, with a character split across chunks.
  const bytes = new TextEncoder().encode("h€llo");
  const decoded = [];
  await new ReadableStream({
    start(c) {
      c.enqueue(bytes.slice(0, 2));
      c.enqueue(bytes.slice(2));
      c.close();
    },
  }).pipeThrough(new TextDecoderStream()).pipeTo(new WritableStream({ write(t) { decoded.push(t); } }));
  log.push(["decoded", decoded]);
  const encoded = [];
  await ReadableStream.from(["a\ud83d", "\ude00b"]).pipeThrough(new TextEncoderStream())
    .pipeTo(new WritableStream({ write(b) { encoded.push(Array.from(b)); } }));
  log.push(["encoded", encoded]);

  // tee: both branches read everything.
  const [left, right] = ReadableStream.from([1, 2]).tee();
  const readAll = async (s) => {
    const got = [];
    for await (const v of s) got.push(v);
    return got;
  };
  log.push(["tee", await readAll(left), await readAll(right)]);

  // Async iteration: breaking out cancels the stream.
  let iterCancel = null;
  const endless = new ReadableStream({
    pull(c) { c.enqueue("tick"); },
    cancel() { iterCancel = "cancelled"; },
  });
  for await (const v of endless) {
    log.push(["iterated", v]);
    break;
  }
  log.push(["after break", iterCancel, endless.locked]);

  // Bodies: a stream as a Response's body, read whole; .body of a text body.
  const streamed = new Response(ReadableStream.from([new TextEncoder().encode("str"), new TextEncoder().encode("eam")]));
  log.push(["stream body", streamed.bodyUsed, await streamed.text(), streamed.bodyUsed]);
  const cloned = new Response(ReadableStream.from([new TextEncoder().encode("twice")]));
  const copy = cloned.clone();
  log.push(["cloned", await cloned.text(), await copy.text()]);
  const body = new Response("held").body;
  log.push(["body is a stream", body instanceof ReadableStream]);
  log.push(["used twice", await caught(streamed.text())]);
  return JSON.stringify(log);
}

// Where streams fail or wait: each step must settle as Node's does, not hang.
async function streamFaultScenario() {
  const log = [];
  const ticks = async (n = 20) => {
    for (let i = 0; i < n; i++) await null;
  };
  const outcome = async (promise) => {
    const settled = await Promise.race([
      promise.then((v) => ["ok", v ?? null], (e) => ["threw", e?.message ?? String(e)]),
      ticks(200).then(() => ["pending"]),
    ]);
    return settled;
  };

  // A transform that throws errors its readable side: a reader hears of it.
  const throwing = new TransformStream({ transform() { throw new RangeError("bad chunk"); } });
  const tw = throwing.writable.getWriter();
  const tr = throwing.readable.getReader();
  const read = tr.read();
  log.push(["transform threw: write", await outcome(tw.write("x"))]);
  log.push(["transform threw: read", await outcome(read)]);

  // Two reads waiting on a transform's readable side: two writes reach both.
  const identity = new TransformStream();
  const ir = identity.readable.getReader();
  const iw = identity.writable.getWriter();
  const r1 = ir.read();
  const r2 = ir.read();
  await ticks();
  const w1 = iw.write("a");
  const w2 = iw.write("b");
  log.push(["two reads", await outcome(r1), await outcome(r2), await outcome(w1), await outcome(w2)]);

  // terminate() inside transform: the write resolves, the readable side closes.
  const ending = new TransformStream({ transform(chunk, c) { c.enqueue(chunk); c.terminate(); } });
  const er = ending.readable.getReader();
  const ew = ending.writable.getWriter();
  const ended = ew.write("last");
  log.push(["terminated", await outcome(ended), await outcome(er.read()), await outcome(er.read())]);

  // A destination that errors while the source is idle: the pipe ends, the source is
  // cancelled.
  let idleCancel = null;
  let sinkController;
  const idle = new ReadableStream({ cancel(reason) { idleCancel = reason?.message ?? String(reason); } });
  const toFailing = idle.pipeTo(new WritableStream({ start(c) { sinkController = c; } }));
  await ticks();
  sinkController.error(new RangeError("sink gone"));
  log.push(["dest errored, source idle", await outcome(toFailing), idleCancel]);

  // A source that errors while the destination holds it back: the pipe ends, the
  // destination is aborted.
  let stuckAbort = null;
  let sourceController;
  const stuckSource = new ReadableStream({ start(c) { sourceController = c; c.enqueue(1); } });
  const stuck = stuckSource.pipeTo(new WritableStream({
    write() { return new Promise(() => {}); },
    abort(reason) { stuckAbort = reason?.message ?? String(reason); },
  }, { highWaterMark: 1 }));
  await ticks();
  sourceController.enqueue(2);
  await ticks();
  sourceController.error(new RangeError("source gone"));
  log.push(["source errored, dest stuck", await outcome(stuck), stuckAbort]);

  // A destination already closed: the source is cancelled, the pipe rejects.
  const closedSink = new WritableStream();
  await closedSink.close();
  let closedCancel = null;
  const intoClosed = new ReadableStream({
    pull(c) { c.enqueue("more"); },
    cancel() { closedCancel = "cancelled"; },
  }).pipeTo(closedSink);
  log.push(["into a closed destination", (await outcome(intoClosed))[0], closedCancel]);

  // An async iterator past its end keeps answering done.
  const it = ReadableStream.from(["only"])[Symbol.asyncIterator]();
  log.push(["iterator", await it.next(), await it.next(), await it.next(), await it.return("r")]);
  return JSON.stringify(log);
}

test("streams fail and end as Node's do: throwing transforms, pending reads, terminate, pipes whose other side fails or closed", async () => {
  const ours = await run(streamFaultScenario);
  const node = await streamFaultScenario();
  assert.deepEqual(JSON.parse(ours), JSON.parse(node));
});

test("streams behave as Node's: pull and backpressure, errors, cancel, pipes, transforms, text streams, tee, iteration, bodies", async () => {
  const ours = await run(streamScenario);
  const node = await streamScenario();
  assert.deepEqual(JSON.parse(ours), JSON.parse(node));
});

test("a stream body is collected for the runtime by __bodyReady; a request takes one", async () => {
  const got = await run(async () => {
    const resp = new Response(new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("a"));
        c.enqueue("b");
        c.close();
      },
    }));
    let early;
    try { __bodyBytes(resp); } catch (e) { early = e.name; }
    await __bodyReady(resp);
    const bytes = Array.from(__bodyBytes(resp));
    const req = new Request("http://h/", { method: "POST", body: ReadableStream.from(["x", "y"]) });
    const bad = new Response(ReadableStream.from([{}]));
    let badError;
    try { await bad.text(); } catch (e) { badError = e.name; }
    return JSON.stringify([early, bytes, resp.bodyUsed, await req.text(), badError, __bodyReady(new Response("plain"))]);
  });
  assert.deepEqual(JSON.parse(got), ["TypeError", [97, 98], false, "xy", "TypeError", null]);
});

// ----------------------------------------------------------------- events

test("EventTarget: listeners, once, dedupe, handleEvent, stopImmediatePropagation, errors", () => {
  takeLogs();
  const result = run(() => {
    const target = new EventTarget();
    const calls = [];
    const listener = (e) => calls.push(`fn:${e.type}:${e.target === target}:${e.eventPhase}`);
    target.addEventListener("ping", listener);
    target.addEventListener("ping", listener); // ignored: same callback and capture
    target.addEventListener("ping", { handleEvent(e) { calls.push(`obj:${this.handleEvent !== undefined}`); } });
    target.addEventListener("ping", () => calls.push("once"), { once: true });
    target.addEventListener("ping", () => { throw new Error("listener failed"); });
    target.addEventListener("ping", () => calls.push("after-error"));
    target.dispatchEvent(new Event("ping"));
    target.dispatchEvent(new Event("ping"));
    target.removeEventListener("ping", listener);
    target.addEventListener("stop", (e) => { calls.push("s1"); e.stopImmediatePropagation(); });
    target.addEventListener("stop", () => calls.push("s2"));
    target.dispatchEvent(new Event("stop"));
    target.addEventListener("cancel", (e) => e.preventDefault());
    const notCancelable = target.dispatchEvent(new Event("cancel"));
    const cancelable = new Event("cancel", { cancelable: true });
    const dispatched = target.dispatchEvent(cancelable);
    target.addEventListener("passive", (e) => e.preventDefault(), { passive: true });
    const passive = target.dispatchEvent(new Event("passive", { cancelable: true }));
    const controller = new AbortController();
    target.addEventListener("sig", () => calls.push("sig"), { signal: controller.signal });
    target.dispatchEvent(new Event("sig"));
    controller.abort();
    target.dispatchEvent(new Event("sig"));
    return { calls, notCancelable, dispatched, prevented: cancelable.defaultPrevented, passive,
      after: [cancelable.eventPhase, cancelable.currentTarget, cancelable.target === target] };
  });
  assert.deepEqual(plain(result), {
    calls: ["fn:ping:true:2", "obj:true", "once", "after-error", "fn:ping:true:2", "obj:true", "after-error", "s1", "sig"],
    notCancelable: true, dispatched: false, prevented: true, passive: true, after: [0, null, true],
  });
  const errors = takeLogs();
  assert.equal(errors.length, 2);
  assert.match(errors[0][1], /^Uncaught Error: listener failed/);
  throwsNamed(() => new g.EventTarget().dispatchEvent({ type: "x" }), "TypeError");
  throwsNamed(() => new g.Event(), "TypeError");
});

test("MessageEvent, CloseEvent and ErrorEvent carry their fields", () => {
  const m = new g.MessageEvent("message", { data: { a: 1 } });
  assert.deepEqual([m.type, m.data.a, m.origin, m.lastEventId, m.source, m.ports.length], ["message", 1, "", "", null, 0]);
  assert.equal(new g.MessageEvent("message").data, null);
  const c = new g.CloseEvent("close", { code: 1000, reason: "bye", wasClean: true });
  assert.deepEqual([c.code, c.reason, c.wasClean], [1000, "bye", true]);
  assert.deepEqual([new g.CloseEvent("close").code, new g.CloseEvent("close").wasClean], [0, false]);
  const err = new Error("x");
  const e = new g.ErrorEvent("error", { error: err, message: "x" });
  assert.deepEqual([e.error, e.message, e.filename, e.lineno], [err, "x", "", 0]);
  assert.ok(m instanceof g.Event && c instanceof g.Event && e instanceof g.Event);
  assert.equal(g.Event.AT_TARGET, 2);
});

test("AbortController and AbortSignal", () => {
  const out = run(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const events = [];
    signal.addEventListener("abort", (e) => events.push(e.type));
    const before = signal.aborted;
    controller.abort();
    controller.abort("again");
    let thrown;
    try { signal.throwIfAborted(); } catch (e) { thrown = e; }
    const custom = new AbortController();
    custom.abort("why");
    const any = AbortSignal.any([new AbortController().signal, custom.signal]);
    const pending = new AbortController();
    const later = AbortSignal.any([pending.signal]);
    pending.abort(7);
    let illegal;
    try { new AbortSignal(); } catch (e) { illegal = e.name; }
    return {
      before, after: signal.aborted, events, reason: [signal.reason.name, signal.reason.code, thrown === signal.reason],
      custom: custom.signal.reason, any: any.reason, later: [later.aborted, later.reason],
      statics: [AbortSignal.abort().aborted, AbortSignal.abort(1).reason], illegal,
    };
  });
  assert.deepEqual(plain(out), {
    before: false, after: true, events: ["abort"], reason: ["AbortError", 20, true], custom: "why", any: "why",
    later: [true, 7], statics: [true, 1], illegal: "TypeError",
  });
  throwsNamed(() => g.AbortSignal.timeout(10), "NotSupportedError");
});

test("DOMException has a name, a message and the legacy code", () => {
  const e = new g.DOMException("msg", "NotFoundError");
  assert.deepEqual([e.name, e.message, e.code, e instanceof inner.Error], ["NotFoundError", "msg", 8, true]);
  assert.deepEqual([new g.DOMException().name, new g.DOMException().code], ["Error", 0]);
  assert.equal(String(new g.DOMException("m", "SyntaxError")), "SyntaxError: m");
});

// ------------------------------------------------------------------ codec

const { encode, decode } = g.__codec;

test("codec: plain JSON values are stored as their JSON text", () => {
  const values = [
    null, true, 0, -12.5, 1e300, "", "é\u2028\ud800", [], {}, [1, [2, [3]]],
    { a: { b: [null, false, "x"] }, "": 1, "~": 2, "~x": 3 }, { "~only": { y: 1 } },
  ].map((v) => run((x) => JSON.parse(JSON.stringify(x)), v));
  for (const value of values.slice(0, 11)) {
    assert.equal(encode(value), JSON.stringify(value));
    assertSame(decode(encode(value)), value);
  }
  assert.match(encode(values[11]), /^~1:/, "an object whose only key starts with ~ is escaped");
  assertSame(decode(encode(values[11])), values[11]);
  const protoKey = run(() => JSON.parse('{"__proto__": {"x": 1}}'));
  assert.equal(encode(protoKey), '{"__proto__":{"x":1}}');
  const back = decode(encode(protoKey));
  assert.equal(Object.getPrototypeOf(back), inner.Object.prototype);
  assert.deepEqual(Object.keys(back), ["__proto__"]);
});

test("codec: every structured-clone kind round-trips, with cycles and shared references", () => {
  const original = run((make) => eval(`(${make})`)(), String(makeClonable));
  const text = encode(original);
  assert.match(text, /^~1:/);
  const back = decode(text);
  const expected = run((o) => {
    const e = { ...o, thing: { own: 1 } };
    e.errors = [o.errors[0], o.errors[1], new Error("renamed")];
    return e;
  }, original);
  assertSame(back, expected);
  assert.equal(back.cyclic.self, back.cyclic);
  assert.equal(back.views[0].buffer, back.buffer);
  assert.equal(back.views[3].buffer, back.buffer);
  assert.equal(back.map.get(back.cyclic.list[0]), back.cyclic);
  assert.equal(back.error.cause, back.cyclic.list[0]);
  assert.equal(back.error.stack, original.error.stack);
  assert.equal(typeof back.values[10], "bigint");
  for (const top of run(() => [undefined, NaN, -0, Infinity, 5n, new Date(1), [undefined], { u: undefined }])) {
    assertSame(decode(encode(top)), top);
  }
  assert.equal(encode(undefined), '~1:{"~u":0}');
  assert.equal(encode(-0), '~1:{"~n":"-0"}');
});

test("codec: unclonable values throw DataCloneError", () => {
  for (const value of run(() => [() => 1, Symbol("s"), { a: [Promise.resolve()] }, new WeakMap(), Object(Symbol())])) {
    throwsNamed(() => encode(value), "DataCloneError");
  }
});

test("codec: malformed tagged text is a SyntaxError; non-strings a TypeError", () => {
  for (const text of ['~2:{"~u":0}', '~1:{"~zz":1}', '~1:{"~r":3}', '~1:{"~V":["NoSuchArray",{"~B":""},0,0]}', "~1:{", "{bad json"]) {
    throwsNamed(() => decode(text), "SyntaxError");
  }
  throwsNamed(() => decode(undefined), "TypeError");
});

// A small seeded generator (mulberry32) so a failure can be replayed.
function random(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// False for what the codec must tag: -0, and objects whose only key starts with "~".
function isPlainJSON(v) {
  if (typeof v !== "object" || v === null) return !Object.is(v, -0);
  const keys = Object.keys(v);
  if (!Array.isArray(v) && keys.length === 1 && keys[0].startsWith("~")) return false;
  return keys.every((k) => isPlainJSON(v[k]));
}

function randomJSON(rand, depth = 0) {
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const strings = ["", "a", "~", "~x", "__proto__", "é", "\u2028", "\ud83d\ude00", "\\\"", "\u0000\u001f", "constructor", "0", "10", "-1"];
  const kind = depth > 3 ? pick(["s", "n", "l"]) : pick(["s", "n", "l", "a", "o", "o"]);
  if (kind === "s") return pick(strings);
  if (kind === "n") return pick([0, -0, 1, -1.5, 1e21, 5e-324, 2 ** 53, Math.floor(rand() * 1e6)]);
  if (kind === "l") return pick([null, true, false]);
  const n = Math.floor(rand() * 4);
  if (kind === "a") return Array.from({ length: n }, () => randomJSON(rand, depth + 1));
  const out = {};
  for (let i = 0; i < n; i++) {
    Object.defineProperty(out, pick(strings), { value: randomJSON(rand, depth + 1), enumerable: true, configurable: true, writable: true });
  }
  return out;
}

test("codec: any JSON text decodes to JSON.parse's value, and re-encodes to the same JSON", () => {
  const rand = random(42);
  for (let i = 0; i < 400; i++) {
    const value = randomJSON(rand);
    const text = JSON.stringify(value, null, i % 3 === 0 ? 2 : undefined);
    const spaced = i % 5 === 0 ? ` \n${text}\t ` : text;
    const expected = JSON.parse(spaced);
    const decoded = decode(spaced);
    assert.ok(deepSame(decoded, expected), `decode(${spaced})`);
    const encoded = encode(decoded);
    if (isPlainJSON(expected)) assert.equal(encoded, JSON.stringify(expected), `encode(decode(${text}))`);
    else assert.ok(encoded.startsWith("~1:") && deepSame(decode(encoded), expected), `tagged ${encoded}`);
  }
});

test("codec and structuredClone agree on random structured values", () => {
  const generate = (seed, rounds) => {
    let s = seed;
    const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
    const pick = (list) => list[Math.floor(rand() * list.length)];
    const pool = [];
    const leaf = () => pick([undefined, null, -0, NaN, 1.5, "s", "~", 7n, true, new Date(3), /x/g, Object(2)]);
    const containers = {
      array: () => [],
      object: () => ({}),
      map: () => new Map(),
      set: () => new Set(),
    };
    // Containers join the pool before their children are made, so cycles occur too.
    const fill = (out, depth, n) => {
      for (let i = 0; i < n; i++) {
        const child = value(depth + 1);
        if (out instanceof Map) out.set(value(depth + 1), child);
        else if (out instanceof Set) out.add(child);
        else if (Array.isArray(out)) out[i * 2] = child; // holes at odd indices
        else Object.defineProperty(out, pick(["a", "~c", "__proto__", "1"]), { value: child, enumerable: true, writable: true, configurable: true });
      }
      return out;
    };
    const value = (depth) => {
      if (pool.length && rand() < 0.15) return pick(pool);
      if (depth > 3 || rand() < 0.3) return leaf();
      const kind = pick(["array", "object", "map", "set", "view", "error"]);
      let out;
      if (kind === "view") {
        const buffer = pool.find((p) => p instanceof ArrayBuffer) ?? new ArrayBuffer(8);
        out = new (pick([Uint8Array, Int16Array, DataView, Float32Array]))(buffer, 0, 2);
        pool.push(buffer);
      } else if (kind === "error") {
        out = new TypeError("e", { cause: value(depth + 1) });
      } else {
        out = containers[kind]();
        pool.push(out);
        return fill(out, depth, Math.floor(rand() * 3));
      }
      pool.push(out);
      return out;
    };
    return Array.from({ length: rounds }, () => {
      pool.length = 0;
      const root = { root: value(0) };
      if (rand() < 0.3) root.self = root;
      return root;
    });
  };
  for (const value of run(generate, 7, 150)) {
    const viaCodec = decode(encode(value));
    assertSame(viaCodec, value);
    assertSame(g.structuredClone(value), value);
  }
});
