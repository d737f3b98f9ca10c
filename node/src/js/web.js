// Web platform globals for PartyKit servers running on QuickJS-ng.
//
// Evaluated once per JS context, before codec.js and the user's bundle, after Rust has
// defined `globalThis.__native` (log, now, randomBytes, digest, utf8Encode, utf8Decode).
// A global is defined only when the engine lacks it, so QuickJS-ng's own performance,
// queueMicrotask, DOMException, atob and btoa are kept where the context has them.
//
// And `globalThis.__markFetched(response, url, redirected)`, for the runtime's fetch: sets
// what `url` and `redirected` read.
//
// Also defines `globalThis.__bodyBytes(requestOrResponse)` for the runtime: the body's
// bytes as a Uint8Array (UTF-8 of a string body; otherwise the internal array, not a
// copy, so do not modify it), or null without a body. It does not mark the body used.
//
// And, for codec.js, a hidden `globalThis.__brands`: the value classifier and the tables
// structuredClone goes by (see the end of this file).
//
// Streams come from streams.js, evaluated before this file: a body may be a ReadableStream,
// collected whole when it is read (or, for the runtime, by `__bodyReady`).
//
// Not implemented: fetch, File, FormData, Request/Response formData(), crypto.subtle other than digest (crypto.js, evaluated next, adds the rest),
// TextDecoder encodings other than UTF-8, structuredClone's
// `transfer`, Headers guards (no immutable headers), event capture/bubbling and
// `on<type>` handler properties, AbortSignal.timeout without a global setTimeout.
// URL: full UTS #46 (non-ASCII hosts get NFKC + lower case + Punycode; "xn--" labels are
// not validated), Windows drive letters in file: URLs, URL.createObjectURL.
(() => {
"use strict";

const native = globalThis.__native;

// Strings reach Rust well-formed: rquickjs cannot turn a lone surrogate into a Rust String.
const log = (level, text) => native.log(level, text.toWellFormed());

// Defines a global unless the engine already has one; returns the global's value.
function define(name, value) {
  if (!(name in globalThis)) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true });
  }
  return globalThis[name];
}

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

// ---------------------------------------------------------------- DOMException

const DOM_CODES = {
  IndexSizeError: 1, HierarchyRequestError: 3, WrongDocumentError: 4, InvalidCharacterError: 5,
  NoModificationAllowedError: 7, NotFoundError: 8, NotSupportedError: 9, InUseAttributeError: 10,
  InvalidStateError: 11, SyntaxError: 12, InvalidModificationError: 13, NamespaceError: 14,
  InvalidAccessError: 15, TypeMismatchError: 17, SecurityError: 18, NetworkError: 19, AbortError: 20,
  URLMismatchError: 21, QuotaExceededError: 22, TimeoutError: 23, InvalidNodeTypeError: 24,
  DataCloneError: 25,
};

const DOMEx = define("DOMException", class DOMException extends Error {
  #name;
  constructor(message = "", name = "Error") {
    super(String(message));
    this.#name = String(name);
  }
  get name() { return this.#name; }
  get code() { return Object.hasOwn(DOM_CODES, this.#name) ? DOM_CODES[this.#name] : 0; }
});

// ------------------------------------------------------------- value brands

const getter = (proto, key) => Object.getOwnPropertyDescriptor(proto, key).get;
const TYPED_ARRAY_PROTOTYPE = Object.getPrototypeOf(Int8Array.prototype);
const typedArrayTag = getter(TYPED_ARRAY_PROTOTYPE, Symbol.toStringTag);
const isError = Error.isError ?? ((v) => v instanceof Error);

// Built-ins by prototype, each with a method that throws unless given a real one.
const BRANDS = new Map([
  [ArrayBuffer.prototype, ["ArrayBuffer", getter(ArrayBuffer.prototype, "byteLength")]],
  [DataView.prototype, ["DataView", getter(DataView.prototype, "byteLength")]],
  [Map.prototype, ["Map", getter(Map.prototype, "size")]],
  [Set.prototype, ["Set", getter(Set.prototype, "size")]],
  [Date.prototype, ["Date", Date.prototype.getTime]],
  [RegExp.prototype, ["RegExp", getter(RegExp.prototype, "source")]],
  [Boolean.prototype, ["Boolean", Boolean.prototype.valueOf]],
  [Number.prototype, ["Number", Number.prototype.valueOf]],
  [String.prototype, ["String", String.prototype.valueOf]],
  [BigInt.prototype, ["BigInt", BigInt.prototype.valueOf]],
  [Symbol.prototype, ["Symbol", Symbol.prototype.valueOf]],
]);
const BRAND = Object.freeze(Object.fromEntries(BRANDS.values()));

function hasBrand(check, v) {
  try {
    check.call(v);
    return true;
  } catch {
    return false;
  }
}

// "Array", a typed array's name, "Error", a BRANDS kind, or "Object" (plain objects,
// class instances, and objects merely inheriting from a built-in's prototype).
function builtinKind(v) {
  if (Array.isArray(v)) return "Array";
  for (let p = Object.getPrototypeOf(v); p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    if (p === TYPED_ARRAY_PROTOTYPE) return typedArrayTag.call(v) ?? "Object";
    if (p === Error.prototype) return isError(v) ? "Error" : "Object";
    const brand = BRANDS.get(p);
    if (brand) return hasBrand(brand[1], v) ? brand[0] : "Object";
  }
  return "Object";
}

const isArrayBuffer = (v) => typeof v === "object" && v !== null && hasBrand(BRAND.ArrayBuffer, v);

// ------------------------------------------------------------------- console

const MAX_ITEMS = 100;

function inspect(value, options = {}) {
  return show(value, options?.depth ?? 2, new Set(), true);
}

function show(v, depth, seen, top = false) {
  switch (typeof v) {
    case "string": return quote(v);
    case "bigint": return `${v}n`;
    case "number": return Object.is(v, -0) ? "-0" : String(v);
    case "function": return functionLabel(v);
    case "object": if (v !== null) return showObject(v, depth, seen, top);
  }
  return String(v);
}

function quote(s) {
  const body = JSON.stringify(s).slice(1, -1).replace(/\\"/g, '"').replace(/'/g, "\\'");
  return `'${body}'`;
}

function functionLabel(f) {
  const isClass = /^class\b/.test(Function.prototype.toString.call(f));
  const name = f.name ? `${isClass ? "" : ":"} ${f.name}` : " (anonymous)";
  return `[${isClass ? "class" : "Function"}${name}]`;
}

function showObject(v, depth, seen, top) {
  if (seen.has(v)) return "[Circular]";
  if (typeof v[INSPECT] === "function") {
    const custom = v[INSPECT](depth, { depth }, inspect);
    if (custom !== v) return typeof custom === "string" ? custom : show(custom, depth, seen);
  }
  const kind = builtinKind(v);
  const simple = showSimple(v, kind, top);
  if (simple !== undefined) return simple;
  if (depth < 0) return `[${kind === "Object" ? className(v) || "Object" : kind}]`;
  seen.add(v);
  try {
    return showContainer(v, kind, depth, seen);
  } finally {
    seen.delete(v);
  }
}

function showSimple(v, kind, top) {
  switch (kind) {
    case "Error": return top ? errorText(v) : `[${errorHeader(v)}]`;
    case "Date": return Number.isNaN(BRAND.Date.call(v)) ? "Invalid Date" : Date.prototype.toISOString.call(v);
    case "RegExp": return `/${v.source}/${v.flags}`;
    case "Boolean": case "Number": case "String": case "BigInt": case "Symbol":
      return `[${kind}: ${show(BRAND[kind].call(v), 0, new Set())}]`;
  }
  return undefined;
}

function errorHeader(e) {
  try {
    return String(e);
  } catch {
    return "Error";
  }
}

// The header plus the stack; QuickJS stacks hold only the frames, V8's start with the header.
function errorText(e) {
  const header = errorHeader(e);
  const stack = typeof e.stack === "string" ? e.stack.trimEnd() : "";
  if (stack.startsWith(header)) return stack;
  return stack ? `${header}\n${stack}` : header;
}

function className(v) {
  const proto = Object.getPrototypeOf(v);
  if (proto === null) return "[Object: null prototype]";
  const ctor = proto.constructor;
  return typeof ctor === "function" && ctor.name !== "Object" ? ctor.name : "";
}

function showContainer(v, kind, depth, seen) {
  const item = (x) => show(x, depth - 1, seen);
  let prefix = "";
  let items;
  let brackets = "{}";
  if (kind === "Array") {
    brackets = "[]";
    items = capped(v.length, (i) => (i in v ? item(v[i]) : "<empty item>"));
  } else if (kind === "Map") {
    prefix = `Map(${v.size}) `;
    const entries = [...Map.prototype.entries.call(v)];
    items = capped(entries.length, (i) => `${item(entries[i][0])} => ${item(entries[i][1])}`);
  } else if (kind === "Set") {
    prefix = `Set(${v.size}) `;
    const values = [...Set.prototype.values.call(v)];
    items = capped(values.length, (i) => item(values[i]));
  } else if (kind === "ArrayBuffer" || kind === "DataView") {
    prefix = `${kind} `;
    items = [`byteLength: ${v.byteLength}`];
  } else if (kind === "Object") {
    prefix = className(v);
    prefix &&= `${prefix} `;
    items = [];
  } else {
    prefix = `${kind}(${v.length}) `;
    brackets = "[]";
    items = capped(v.length, (i) => item(v[i]));
  }
  items.push(...propertyItems(v, kind !== "Object", item));
  const [open, close] = brackets;
  return items.length ? `${prefix}${open} ${items.join(", ")} ${close}` : `${prefix}${open}${close}`;
}

function capped(count, render) {
  const items = [];
  for (let i = 0; i < Math.min(count, MAX_ITEMS); i++) items.push(render(i));
  if (count > MAX_ITEMS) items.push(`... ${count - MAX_ITEMS} more items`);
  return items;
}

// Own enumerable properties (array indices excluded when `indexed`), getters unevaluated.
function propertyItems(v, indexed, item) {
  const items = [];
  for (const key of Reflect.ownKeys(v)) {
    const desc = Object.getOwnPropertyDescriptor(v, key);
    if (!desc?.enumerable || (indexed && /^(0|[1-9]\d*)$/.test(key))) continue;
    const label = typeof key === "symbol" ? `[${String(key)}]`
      : /^[A-Za-z_$][\w$]*$/.test(key) ? key : quote(key);
    items.push(`${label}: ${"value" in desc ? item(desc.value) : accessorLabel(desc)}`);
  }
  return items;
}

const accessorLabel = (d) => (d.get && d.set ? "[Getter/Setter]" : d.get ? "[Getter]" : "[Setter]");

// util.format: %s %d %i %f %j %o %O %c %% in a leading string, the rest appended.
function format(args) {
  const parts = [];
  let next = 0;
  if (typeof args[0] === "string") {
    next = 1;
    parts.push(args.length === 1 ? args[0] : args[0].replace(/%([sdifjoOc%])/g, (match, f) => {
      if (f === "%") return "%";
      return next < args.length ? directive(f, args[next++]) : match;
    }));
  }
  for (; next < args.length; next++) {
    parts.push(typeof args[next] === "string" ? args[next] : inspect(args[next]));
  }
  return parts.join(" ");
}

const formatNumber = (n) => (Object.is(n, -0) ? "-0" : String(n));

function directive(f, arg) {
  const isSymbol = typeof arg === "symbol";
  switch (f) {
    case "s": return typeof arg === "string" ? arg : inspect(arg, { depth: 0 });
    case "d": return typeof arg === "bigint" ? `${arg}n` : isSymbol ? "NaN" : formatNumber(Number(arg));
    case "i": return typeof arg === "bigint" ? `${arg}n` : isSymbol ? "NaN" : formatNumber(parseInt(arg));
    case "f": return isSymbol ? "NaN" : formatNumber(parseFloat(arg));
    case "j": return jsonDirective(arg);
    case "o": return inspect(arg, { depth: 4 });
    case "O": return inspect(arg);
  }
  return ""; // %c: CSS, ignored
}

function jsonDirective(arg) {
  try {
    return JSON.stringify(arg) ?? "undefined";
  } catch (e) {
    return /circular/i.test(e?.message) ? "[Circular]" : `[${errorHeader(e)}]`;
  }
}

function reportException(e) {
  log("error", `Uncaught ${inspect(e)}`);
}

function makeConsole() {
  let indent = "";
  const counts = new Map();
  const timers = new Map();
  const emit = (level, text) => log(level, indent ? text.replace(/^/gm, indent) : text);
  const writer = (level) => (...args) => emit(level, format(args));
  const withLabel = (prefix, args) => (args.length ? `${prefix}: ${format(args)}` : prefix);
  const elapsed = (label, args, end) => {
    const start = timers.get(String(label));
    if (start === undefined) {
      emit("warn", `No such label '${label}'`);
      return;
    }
    if (end) timers.delete(String(label));
    emit("info", withLabel(`${label}: ${(native.now() - start).toFixed(3)}ms`, args));
  };
  const group = (...args) => {
    if (args.length) emit("info", format(args));
    indent += "  ";
  };
  return {
    log: writer("info"),
    info: writer("info"),
    debug: writer("debug"),
    warn: writer("warn"),
    error: writer("error"),
    table: writer("info"),
    trace: (...args) => emit("info", `${withLabel("Trace", args)}\n${callerStack()}`),
    dir: (value, options) => emit("info", inspect(value, options ?? {})),
    assert: (ok, ...args) => {
      if (!ok) emit("error", withLabel("Assertion failed", args));
    },
    count: (label = "default") => {
      const n = (counts.get(String(label)) ?? 0) + 1;
      counts.set(String(label), n);
      emit("info", `${label}: ${n}`);
    },
    countReset: (label = "default") => void counts.delete(String(label)),
    time: (label = "default") => void timers.set(String(label), native.now()),
    timeLog: (label = "default", ...args) => elapsed(label, args, false),
    timeEnd: (label = "default") => elapsed(label, [], true),
    group,
    groupCollapsed: group,
    groupEnd: () => void (indent = indent.slice(2)),
  };
}

// Stack frames of console.trace's caller (the frames of trace itself dropped).
function callerStack() {
  const frames = String(new Error().stack).split("\n").filter((line) => /^\s+at /.test(line));
  return frames.slice(2).join("\n");
}

// ------------------------------------------------------------ structuredClone

// Frozen, like BRAND, as codec.js shares them through `__brands`.
const ERROR_TYPES = Object.freeze({
  __proto__: null, Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
});
// Frozen once Blob (defined below) has joined it: a Blob's bytes are private, so a clone or
// a stored copy would be an empty object, where workerd's storage refuses it.
const UNCLONABLE = [
  Promise, WeakMap, WeakSet, globalThis.WeakRef, globalThis.FinalizationRegistry,
  globalThis.SharedArrayBuffer,
].filter(Boolean);
const VIEW_TYPES = Object.freeze(Object.fromEntries([
  "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
  "Uint32Array", "Float16Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
  "DataView",
].filter((name) => typeof globalThis[name] === "function").map((name) => [name, globalThis[name]])));

function dataCloneError(v) {
  const what = typeof v === "function" ? `function ${v.name}`
    : typeof v === "symbol" ? v.toString() : Object.prototype.toString.call(v);
  return new DOMEx(`${what} could not be cloned.`, "DataCloneError");
}

function structuredClone(value, options = undefined) {
  if (arguments.length === 0) throw new TypeError("structuredClone: 1 argument required");
  return cloneValue(value, new Map());
}

// memo maps each source object to its copy, which keeps cycles and shared references.
function cloneValue(v, memo) {
  if (typeof v === "function" || typeof v === "symbol") throw dataCloneError(v);
  if (typeof v !== "object" || v === null) return v;
  return memo.get(v) ?? cloneObject(v, builtinKind(v), memo);
}

function cloneObject(v, kind, memo) {
  const remember = (copy) => (memo.set(v, copy), copy);
  switch (kind) {
    case "Object":
      if (UNCLONABLE.some((C) => v instanceof C)) throw dataCloneError(v);
      return copyProperties(v, remember({}), memo);
    case "Array": return copyProperties(v, remember(new Array(v.length)), memo);
    case "Date": return remember(new Date(BRAND.Date.call(v)));
    case "RegExp": return remember(new RegExp(v.source, v.flags));
    case "ArrayBuffer": return remember(ArrayBuffer.prototype.slice.call(v, 0));
    case "Map": return cloneMap(v, remember(new Map()), memo);
    case "Set": return cloneSet(v, remember(new Set()), memo);
    case "Error": return cloneError(v, remember, memo);
    case "Symbol": throw dataCloneError(v);
    case "Boolean": case "Number": case "String": case "BigInt":
      return remember(Object(BRAND[kind].call(v)));
  }
  const buffer = cloneValue(v.buffer, memo); // typed arrays and DataView
  const length = kind === "DataView" ? v.byteLength : v.length;
  return remember(new VIEW_TYPES[kind](buffer, v.byteOffset, length));
}

function setOwn(target, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    target[key] = value;
  }
}

function copyProperties(source, target, memo) {
  for (const key of Object.keys(source)) setOwn(target, key, cloneValue(source[key], memo));
  return target;
}

function cloneMap(source, target, memo) {
  for (const [k, v] of Map.prototype.entries.call(source)) {
    target.set(cloneValue(k, memo), cloneValue(v, memo));
  }
  return target;
}

function cloneSet(source, target, memo) {
  for (const v of Set.prototype.values.call(source)) target.add(cloneValue(v, memo));
  return target;
}

const defineHidden = (target, key, value) =>
  Object.defineProperty(target, key, { value, writable: true, configurable: true });

function cloneError(source, remember, memo) {
  const name = source.name in ERROR_TYPES ? source.name : "Error";
  const message = Object.hasOwn(source, "message") ? String(source.message) : undefined;
  const copy = remember(new ERROR_TYPES[name](message));
  if (typeof source.stack === "string") defineHidden(copy, "stack", source.stack);
  if (Object.hasOwn(source, "cause")) defineHidden(copy, "cause", cloneValue(source.cause, memo));
  return copy;
}

// ------------------------------------------------------------------ encoding

const utf8Bytes = (s) => new Uint8Array(native.utf8Encode(String(s).toWellFormed()));

// A Uint8Array over a BufferSource's bytes (no copy).
function bytesOf(data) {
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (isArrayBuffer(data)) return new Uint8Array(data);
  throw new TypeError("Expected an ArrayBuffer or an ArrayBufferView");
}

// An ArrayBuffer holding exactly these bytes, copied unless the view covers its buffer.
function exactBuffer(bytes) {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  return whole && isArrayBuffer(bytes.buffer) ? bytes.buffer : bytes.slice().buffer;
}

const decodeUtf8 = (bytes, fatal = false) => native.utf8Decode(exactBuffer(bytes), fatal);
const hasBOM = (b) => b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf;
const decodeUtf8Text = (bytes) => decodeUtf8(hasBOM(bytes) ? bytes.subarray(3) : bytes);

// ----------------------------------------------------------------------- Blob

// Bytes held in memory: what Node.js polyfills (unenv's buffer, whose File extends Blob)
// and body helpers expect to find.
let blobBytes; // (blob) → its bytes, not a copy

/** `chunks` (byte arrays) one after another, in a new array. */
function joinBytes(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

class Blob {
  #bytes;
  #type;

  static {
    blobBytes = (blob) => blob.#bytes;
  }

  constructor(blobParts = undefined, options = undefined) {
    const parts = blobParts === undefined ? [] : blobParts;
    if (parts === null || typeof parts !== "object" || typeof parts[Symbol.iterator] !== "function") {
      throw new TypeError("Blob: blobParts must be a sequence");
    }
    const chunks = [];
    for (const part of parts) {
      if (part instanceof Blob) chunks.push(part.#bytes);
      else if (ArrayBuffer.isView(part) || isArrayBuffer(part)) chunks.push(bytesOf(part).slice());
      else chunks.push(utf8Bytes(part));
    }
    this.#bytes = joinBytes(chunks);
    this.#type = blobType(options?.type);
  }

  get size() { return this.#bytes.length; }
  get type() { return this.#type; }

  slice(start = 0, end = this.#bytes.length, contentType = "") {
    const size = this.#bytes.length;
    const clamp = (i) => (i < 0 ? Math.max(size + i, 0) : Math.min(i, size));
    const from = clamp(clampedInteger(start));
    const to = clamp(clampedInteger(end));
    const blob = new Blob([], { type: contentType });
    blob.#bytes = this.#bytes.slice(from, Math.max(from, to));
    return blob;
  }

  async arrayBuffer() { return this.#bytes.slice().buffer; }
  async bytes() { return this.#bytes.slice(); }
  async text() { return decodeUtf8Text(this.#bytes); }
  stream() { return bytesStream(() => this.#bytes.slice()); }
  [INSPECT]() { return `Blob { size: ${this.size}, type: '${this.type}' }`; }
}

UNCLONABLE.push(Blob);
Object.freeze(UNCLONABLE);

// WebIDL's [Clamp] long long: NaN is 0, halves round to even.
function clampedInteger(value) {
  const n = Number(value);
  if (Number.isNaN(n)) return 0;
  const x = Math.min(Math.max(n, -Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
  const floor = Math.floor(x);
  const diff = x - floor;
  const rounded = diff < 0.5 ? floor : diff > 0.5 ? floor + 1 : floor % 2 === 0 ? floor : floor + 1;
  return rounded === 0 ? 0 : rounded;
}

// A type of printable ASCII, lower-cased; anything else is no type.
function blobType(type) {
  if (type === undefined) return "";
  const t = String(type);
  return /^[\x20-\x7e]*$/.test(t) ? t.toLowerCase() : "";
}

class TextEncoder {
  get encoding() { return "utf-8"; }

  encode(input = "") {
    return utf8Bytes(input);
  }

  encodeInto(source, destination) {
    if (typedArrayTag.call(destination) !== "Uint8Array") {
      throw new TypeError("encodeInto: destination must be a Uint8Array");
    }
    return encodeInto(String(source), destination);
  }
}

// Writes whole characters only; `read` counts UTF-16 code units.
function encodeInto(s, dest) {
  let read = 0;
  let written = 0;
  while (read < s.length) {
    const cp = s.codePointAt(read);
    const c = cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp; // lone surrogate
    const n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (written + n > dest.length) break;
    writeUtf8(dest, written, c, n);
    written += n;
    read += cp > 0xffff ? 2 : 1;
  }
  return { read, written };
}

function writeUtf8(dest, at, c, n) {
  for (let i = n - 1; i > 0; i--) {
    dest[at + i] = 0x80 | (c & 0x3f);
    c >>= 6;
  }
  dest[at] = [0, 0, 0xc0, 0xe0, 0xf0][n] | c;
}

const UTF8_LABELS = new Set([
  "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8",
]);

class TextDecoder {
  #fatal;
  #ignoreBOM;
  #pending = null; // bytes of a character split across stream chunks
  #started = false; // the stream's first bytes (and so any BOM) are behind us

  constructor(label = "utf-8", options = undefined) {
    if (!UTF8_LABELS.has(String(label).trim().toLowerCase())) {
      throw new RangeError(`The "${label}" encoding is not supported`);
    }
    this.#fatal = Boolean(options?.fatal);
    this.#ignoreBOM = Boolean(options?.ignoreBOM);
  }

  get encoding() { return "utf-8"; }
  get fatal() { return this.#fatal; }
  get ignoreBOM() { return this.#ignoreBOM; }

  decode(input = undefined, options = undefined) {
    let bytes = input === undefined ? new Uint8Array(0) : bytesOf(input);
    if (this.#pending) {
      bytes = concatBytes(this.#pending, bytes);
      this.#pending = null;
    }
    const stream = Boolean(options?.stream);
    if (stream) {
      const cut = unfinishedTail(bytes);
      if (cut < bytes.length) this.#pending = bytes.slice(cut);
      bytes = bytes.subarray(0, cut);
    }
    if (!this.#started && bytes.length > 0) {
      this.#started = true;
      if (!this.#ignoreBOM && hasBOM(bytes)) bytes = bytes.subarray(3);
    }
    if (!stream) this.#started = false;
    return decodeUtf8(bytes, this.#fatal);
  }
}

function concatBytes(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// Where an incomplete UTF-8 sequence at the end of `bytes` starts (bytes.length if none).
function unfinishedTail(bytes) {
  for (let i = bytes.length - 1; i >= Math.max(0, bytes.length - 3); i--) {
    const b = bytes[i];
    if ((b & 0xc0) === 0x80) continue;
    const needed = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return bytes.length - i < needed ? i : bytes.length;
  }
  return bytes.length;
}

// -------------------------------------------------------------------- base64

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const invalidCharacter = (what) => new DOMEx(`${what}: invalid character`, "InvalidCharacterError");

function requireArgument(args, name) {
  if (args.length === 0) throw new TypeError(`${name}: 1 argument required`);
}

function btoa(data) {
  requireArgument(arguments, "btoa");
  const s = String(data);
  if (/[^\0-\xff]/.test(s)) throw invalidCharacter("btoa");
  let out = "";
  for (let i = 0; i < s.length; i += 3) {
    const n = (s.charCodeAt(i) << 16) | (s.charCodeAt(i + 1) << 8) | s.charCodeAt(i + 2);
    out += BASE64[n >> 18] + BASE64[(n >> 12) & 63];
    out += i + 1 < s.length ? BASE64[(n >> 6) & 63] : "=";
    out += i + 2 < s.length ? BASE64[n & 63] : "=";
  }
  return out;
}

// The spec's forgiving-base64 decode.
function atob(data) {
  requireArgument(arguments, "atob");
  let s = String(data).replace(/[\t\n\f\r ]/g, "");
  if (s.length % 4 === 0) s = s.replace(/==?$/, "");
  if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) throw invalidCharacter("atob");
  let out = "";
  for (let i = 0; i < s.length; i += 4) {
    const chunk = s.slice(i, i + 4);
    let n = 0;
    for (let j = 0; j < 4; j++) n = (n << 6) | (j < chunk.length ? BASE64.indexOf(chunk[j]) : 0);
    out += String.fromCharCode(n >>> 16, (n >> 8) & 255, n & 255).slice(0, chunk.length - 1);
  }
  return out;
}

// -------------------------------------------------------------------- crypto

const INTEGER_ARRAYS = new Set([
  "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
  "Uint32Array", "BigInt64Array", "BigUint64Array",
]);
const DIGESTS = ["SHA-1", "SHA-256", "SHA-384", "SHA-512"];

function getRandomValues(array) {
  if (!ArrayBuffer.isView(array)) throw new TypeError("getRandomValues: expected an integer typed array");
  const kind = typedArrayTag.call(array) ?? "DataView";
  if (!INTEGER_ARRAYS.has(kind)) {
    throw new DOMEx(`getRandomValues: ${kind} is not an integer array`, "TypeMismatchError");
  }
  if (array.byteLength > 65536) {
    throw new DOMEx(`getRandomValues: ${array.byteLength} bytes exceeds 65536`, "QuotaExceededError");
  }
  bytesOf(array).set(new Uint8Array(native.randomBytes(array.byteLength)));
  return array;
}

function randomUUID() {
  const b = new Uint8Array(native.randomBytes(16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function digestName(algorithm) {
  const name = String(typeof algorithm === "object" && algorithm !== null ? algorithm.name : algorithm);
  const found = DIGESTS.find((d) => d === name.toUpperCase());
  if (!found) throw new DOMEx(`Unrecognized algorithm name: ${name}`, "NotSupportedError");
  return found;
}

const subtle = {
  digest(algorithm, data) {
    return new Promise((resolve) => {
      const name = digestName(algorithm);
      resolve(native.digest(name, bytesOf(data).slice().buffer));
    });
  },
};

const crypto = { getRandomValues, randomUUID, subtle };

// ------------------------------------------------------------ percent-coding

// Percent-encode sets of the URL standard, as predicates over ASCII code points
// (code points above U+007E are always encoded).
const encodeSet = (chars, base) => (c) => base(c) || chars.includes(String.fromCharCode(c));
const C0_SET = (c) => c < 0x20 || c === 0x7f;
const FRAGMENT_SET = encodeSet(' "<>`', C0_SET);
const QUERY_SET = encodeSet(' "#<>', C0_SET);
const SPECIAL_QUERY_SET = encodeSet("'", QUERY_SET);
const PATH_SET = encodeSet("?`{}", QUERY_SET);
const USERINFO_SET = encodeSet("/:;=@[\\]^|", PATH_SET);
const FORM_SET = (c) => !/[A-Za-z0-9*\-._]/.test(String.fromCharCode(c));

function percentEncode(s, inSet) {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c > 0x7e) out += encodeNonAscii(ch);
    else out += inSet(c) ? `%${c.toString(16).toUpperCase().padStart(2, "0")}` : ch;
  }
  return out;
}

function encodeNonAscii(ch) {
  try {
    return encodeURIComponent(ch);
  } catch {
    return "%EF%BF%BD"; // a lone surrogate becomes U+FFFD
  }
}

const isHexByte = (b) => (b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x66);

// Percent-decodes the UTF-8 of `s`, then decodes it as UTF-8 (invalid bytes → U+FFFD).
function percentDecode(s) {
  if (!s.includes("%")) return s;
  const bytes = utf8Bytes(s);
  const out = new Uint8Array(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x25 && isHexByte(bytes[i + 1]) && isHexByte(bytes[i + 2])) {
      out[n++] = parseInt(String.fromCharCode(bytes[i + 1], bytes[i + 2]), 16);
      i += 2;
    } else {
      out[n++] = bytes[i];
    }
  }
  return decodeUtf8(out.subarray(0, n));
}

// -------------------------------------------------------------------- hosts

const FORBIDDEN_HOST = /[\0\t\n\r #/:<>?@[\\\]^|]/;
const FORBIDDEN_DOMAIN = /[\0-\x20#%/:<>?@[\\\]^|\x7f]/;

function parseHost(s, special) {
  if (s.startsWith("[")) {
    const pieces = s.endsWith("]") ? parseIPv6(s.slice(1, -1)) : null;
    return pieces && `[${serializeIPv6(pieces)}]`;
  }
  if (!special) return FORBIDDEN_HOST.test(s) ? null : percentEncode(s, C0_SET);
  const domain = domainToASCII(percentDecode(s));
  if (domain === "" || FORBIDDEN_DOMAIN.test(domain)) return null;
  return endsInNumber(domain) ? parseIPv4(domain) : domain;
}

// ASCII domains are lower-cased; others get an approximation of UTS #46 (NFKC, lower
// case, ideographic dots, ignored code points dropped) before Punycode.
function domainToASCII(domain) {
  if (/^[\0-\x7f]*$/.test(domain)) return domain.toLowerCase();
  const mapped = domain.normalize("NFKC").toLowerCase().replace(/[\u3002\uff0e\uff61]/g, ".")
    .replace(/[\u00ad\u034f\u180b-\u180d\u200b\u2060\ufe00-\ufe0f\ufeff]/g, "");
  if (/[\ufffd\ufdd0-\ufdef\ufffe\uffff]/.test(mapped)) return "";
  const labels = mapped.split(".");
  return labels.map((l) => (/^[\0-\x7f]*$/.test(l) ? l : `xn--${punycode(l)}`)).join(".");
}

// RFC 3492 encoding of one label.
function punycode(label) {
  const points = Array.from(label, (ch) => ch.codePointAt(0));
  let out = points.filter((c) => c < 0x80).map((c) => String.fromCharCode(c)).join("");
  const basic = out.length;
  if (basic) out += "-";
  let n = 0x80;
  let delta = 0;
  let bias = 72;
  for (let handled = basic; handled < points.length; n++, delta++) {
    const next = Math.min(...points.filter((c) => c >= n));
    delta += (next - n) * (handled + 1);
    n = next;
    for (const c of points) {
      if (c < n) delta++;
      if (c !== n) continue;
      out += punycodeNumber(delta, bias);
      bias = punycodeBias(delta, handled + 1, handled === basic);
      delta = 0;
      handled++;
    }
  }
  return out;
}

function punycodeNumber(q, bias) {
  const digit = (d) => String.fromCharCode(d < 26 ? 97 + d : 22 + d);
  let out = "";
  for (let k = 36; ; k += 36) {
    const t = k <= bias ? 1 : k >= bias + 26 ? 26 : k - bias;
    if (q < t) return out + digit(q);
    out += digit(t + ((q - t) % (36 - t)));
    q = Math.floor((q - t) / (36 - t));
  }
}

function punycodeBias(delta, points, first) {
  delta = first ? Math.floor(delta / 700) : delta >> 1;
  delta += Math.floor(delta / points);
  let k = 0;
  for (; delta > 455; k += 36) delta = Math.floor(delta / 35);
  return k + Math.floor((36 * delta) / (delta + 38));
}

function endsInNumber(domain) {
  const parts = domain.split(".");
  if (parts.at(-1) === "" && parts.length > 1) parts.pop();
  const last = parts.at(-1);
  return /^\d+$/.test(last) || ipv4Number(last) !== null;
}

// One part of an IPv4 address: decimal, 0x-hex or 0-octal; null when invalid.
function ipv4Number(s) {
  if (s === "") return null;
  let radix = 10;
  if (/^0x/i.test(s)) {
    radix = 16;
    s = s.slice(2);
  } else if (s.length > 1 && s[0] === "0") {
    radix = 8;
    s = s.slice(1);
  }
  if (s === "") return 0;
  const digits = radix === 16 ? /^[0-9a-f]+$/i : radix === 8 ? /^[0-7]+$/ : /^\d+$/;
  return digits.test(s) ? parseInt(s, radix) : null;
}

function parseIPv4(domain) {
  const parts = domain.split(".");
  if (parts.at(-1) === "") parts.pop();
  if (parts.length > 4) return null;
  const numbers = parts.map(ipv4Number);
  if (numbers.includes(null)) return null;
  const last = numbers.pop();
  if (numbers.some((n) => n > 255) || last >= 256 ** (4 - numbers.length)) return null;
  const address = numbers.reduce((sum, n, i) => sum + n * 256 ** (3 - i), last);
  return [3, 2, 1, 0].map((i) => Math.floor(address / 256 ** i) % 256).join(".");
}

const isHex = (ch) => ch !== undefined && /^[0-9a-f]$/i.test(ch);
const EMBEDDED_IPV4 = /^((0|[1-9]\d{0,2})\.){3}(0|[1-9]\d{0,2})$/;

// The URL standard's IPv6 parser; returns eight 16-bit pieces or null.
function parseIPv6(s) {
  const pieces = [0, 0, 0, 0, 0, 0, 0, 0];
  let piece = 0;
  let compress = null;
  let i = 0;
  if (s[0] === ":") {
    if (s[1] !== ":") return null;
    i = 2;
    compress = piece = 1;
  }
  while (i < s.length) {
    if (piece === 8) return null;
    if (s[i] === ":") {
      if (compress !== null) return null;
      i++;
      compress = ++piece;
      continue;
    }
    const start = i;
    while (i - start < 4 && isHex(s[i])) i++;
    if (s[i] === ".") {
      const v4 = i > start && piece <= 6 ? embeddedIPv4(s.slice(start)) : null;
      if (v4 === null) return null;
      pieces[piece++] = v4[0] * 256 + v4[1];
      pieces[piece++] = v4[2] * 256 + v4[3];
      break;
    }
    const value = i > start ? parseInt(s.slice(start, i), 16) : 0;
    if (s[i] === ":") {
      if (++i === s.length) return null;
    } else if (i < s.length) {
      return null;
    }
    pieces[piece++] = value;
  }
  if (compress === null) return piece === 8 ? pieces : null;
  const tail = pieces.slice(compress, piece);
  pieces.fill(0, compress);
  pieces.splice(8 - tail.length, tail.length, ...tail);
  return pieces;
}

function embeddedIPv4(s) {
  if (!EMBEDDED_IPV4.test(s)) return null;
  const bytes = s.split(".").map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

// Lower-case hex pieces with the first longest run of two or more zeros as "::".
function serializeIPv6(pieces) {
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && pieces[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
  }
  const hex = (list) => list.map((p) => p.toString(16)).join(":");
  if (best < 0) return hex(pieces);
  return `${hex(pieces.slice(0, best))}::${hex(pieces.slice(best + bestLength))}`;
}

// ---------------------------------------------------------------- URL parser

// A parsed URL: { scheme, username, password, host (string|null), port (number|null),
// path (array of segments, or a string for an opaque path), query, fragment (string|null) }.

const SPECIAL_PORTS = new Map([
  ["ftp", 21], ["file", null], ["http", 80], ["https", 443], ["ws", 80], ["wss", 443],
]);
const isSpecial = (scheme) => SPECIAL_PORTS.has(scheme);
const SCHEME = /^([a-zA-Z][a-zA-Z0-9+\-.]*):/;
const stripTabs = (s) => s.replace(/[\t\n\r]/g, "");

const newRecord = (scheme) => ({
  scheme, username: "", password: "", host: null, port: null, path: [], query: null, fragment: null,
});

function parseURL(input, base) {
  input = stripTabs(input.replace(/^[\0-\x20]+|[\0-\x20]+$/g, ""));
  const match = SCHEME.exec(input);
  if (!match) return base ? parseRelative(input, base) : null;
  const scheme = match[1].toLowerCase();
  const rest = input.slice(match[0].length);
  if (scheme === "file") return parseFile(rest, base?.scheme === "file" ? base : null);
  if (!isSpecial(scheme)) return parseNonSpecial(scheme, rest);
  if (base?.scheme === scheme) return parseRelative(rest, base);
  return parseAuthority(newRecord(scheme), rest.replace(/^[/\\]*/, ""));
}

// Splits off "?query" and "#fragment" (null when absent).
function splitTail(s) {
  let query = null;
  let fragment = null;
  const hash = s.indexOf("#");
  if (hash >= 0) [s, fragment] = [s.slice(0, hash), s.slice(hash + 1)];
  const question = s.indexOf("?");
  if (question >= 0) [s, query] = [s.slice(0, question), s.slice(question + 1)];
  return [s, query, fragment];
}

function setTail(url, query, fragment) {
  if (query !== null) url.query = encodeQuery(query, url.scheme);
  if (fragment !== null) url.fragment = percentEncode(fragment, FRAGMENT_SET);
  return url;
}

const encodeQuery = (q, scheme) => percentEncode(q, isSpecial(scheme) ? SPECIAL_QUERY_SET : QUERY_SET);

// `s` starts right after the "//" (or the slashes of a special URL).
function parseAuthority(url, s) {
  const [rest, query, fragment] = splitTail(s);
  const end = rest.search(isSpecial(url.scheme) ? /[/\\]/ : /\//);
  if (!setAuthority(url, end < 0 ? rest : rest.slice(0, end))) return null;
  setPath(url, end < 0 ? "" : rest.slice(end));
  return setTail(url, query, fragment);
}

function setAuthority(url, authority) {
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(":");
    url.username = percentEncode(colon < 0 ? userinfo : userinfo.slice(0, colon), USERINFO_SET);
    url.password = colon < 0 ? "" : percentEncode(userinfo.slice(colon + 1), USERINFO_SET);
    authority = authority.slice(at + 1);
  }
  const special = isSpecial(url.scheme);
  const [hostText, portText] = splitHostPort(authority);
  if (hostText === "" && (special || at >= 0 || portText !== null)) return false;
  const host = parseHost(hostText, special);
  const port = portText === null ? null : parsePort(portText);
  if (host === null || port === undefined) return false;
  url.host = host;
  url.port = port === SPECIAL_PORTS.get(url.scheme) ? null : port;
  return true;
}

// Splits at the first ":" outside brackets; the port part is null without one.
function splitHostPort(s) {
  let inBrackets = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "[") inBrackets = true;
    else if (s[i] === "]") inBrackets = false;
    else if (s[i] === ":" && !inBrackets) return [s.slice(0, i), s.slice(i + 1)];
  }
  return [s, null];
}

// A port number, null for "", undefined when invalid.
function parsePort(s) {
  if (s === "") return null;
  if (!/^\d+$/.test(s) || Number(s) > 65535) return undefined;
  return Number(s);
}

// The path start state: `s` is everything up to "?" or "#".
function setPath(url, s) {
  const special = isSpecial(url.scheme);
  url.path = [];
  if (special ? /^[/\\]/.test(s) : s.startsWith("/")) s = s.slice(1);
  else if (!special && s === "") return;
  appendSegments(url, s);
}

const SINGLE_DOT = /^(\.|%2e)$/i;
const DOUBLE_DOT = /^(\.|%2e){2}$/i;

function appendSegments(url, s) {
  const segments = s.split(isSpecial(url.scheme) ? /[/\\]/ : "/");
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (DOUBLE_DOT.test(segment)) {
      url.path.pop();
      if (last) url.path.push("");
    } else if (SINGLE_DOT.test(segment)) {
      if (last) url.path.push("");
    } else {
      url.path.push(percentEncode(segment, PATH_SET));
    }
  });
}

function parseNonSpecial(scheme, rest) {
  const url = newRecord(scheme);
  if (rest.startsWith("//")) return parseAuthority(url, rest.slice(2));
  const [path, query, fragment] = splitTail(rest);
  if (path.startsWith("/")) setPath(url, path);
  else url.path = percentEncode(path, C0_SET);
  return setTail(url, query, fragment);
}

function parseRelative(input, base) {
  if (typeof base.path === "string") {
    if (!input.startsWith("#")) return null;
    return setTail({ ...base, fragment: null }, null, input.slice(1));
  }
  if (base.scheme === "file") return parseFile(input, base);
  const slash = isSpecial(base.scheme) ? /^[/\\]/ : /^\//;
  const url = newRecord(base.scheme);
  if (slash.test(input) && slash.test(input.slice(1))) {
    return parseAuthority(url, isSpecial(base.scheme) ? input.replace(/^[/\\]+/, "") : input.slice(2));
  }
  const [path, query, fragment] = splitTail(input);
  Object.assign(url, { username: base.username, password: base.password, host: base.host, port: base.port });
  if (slash.test(path)) setPath(url, path);
  else mergePath(url, base, path, query);
  return setTail(url, query, fragment);
}

// A path relative to the base's: replaces its last segment, or keeps path and query when empty.
function mergePath(url, base, path, query) {
  url.path = base.path.slice();
  if (path !== "") {
    url.path.pop();
    appendSegments(url, path);
  } else if (query === null) {
    url.query = base.query;
  }
}

// file: URLs, simplified: no Windows drive letters.
function parseFile(input, base) {
  const url = newRecord("file");
  url.host = "";
  const [path, query, fragment] = splitTail(input);
  if (/^[/\\]{2}/.test(path)) {
    const rest = path.slice(2);
    const end = rest.search(/[/\\]/);
    const hostText = end < 0 ? rest : rest.slice(0, end);
    const host = hostText === "" ? "" : parseHost(hostText, true);
    if (host === null) return null;
    url.host = host === "localhost" ? "" : host;
    setPath(url, end < 0 ? "" : rest.slice(end));
  } else if (base) {
    url.host = base.host;
    if (/^[/\\]/.test(path)) setPath(url, path);
    else mergePath(url, base, path, query);
  } else {
    setPath(url, path);
  }
  return setTail(url, query, fragment);
}

const pathText = (url) => (typeof url.path === "string" ? url.path : url.path.map((s) => `/${s}`).join(""));

function serializeURL(url) {
  let out = `${url.scheme}:`;
  if (url.host !== null) {
    out += "//";
    if (url.username || url.password) out += `${url.username}${url.password && `:${url.password}`}@`;
    out += url.host + (url.port === null ? "" : `:${url.port}`);
  } else if (typeof url.path !== "string" && url.path.length > 1 && url.path[0] === "") {
    out += "/."; // keeps a path starting with "//" from reading as an authority
  }
  out += pathText(url);
  if (url.query !== null) out += `?${url.query}`;
  if (url.fragment !== null) out += `#${url.fragment}`;
  return out;
}

const TUPLE_ORIGINS = new Set(["ftp", "http", "https", "ws", "wss"]);

function serializeOrigin(url) {
  if (url.scheme === "blob") {
    const inner = parseURL(pathText(url), null);
    return inner && /^https?$/.test(inner.scheme) ? serializeOrigin(inner) : "null";
  }
  if (!TUPLE_ORIGINS.has(url.scheme)) return "null";
  return `${url.scheme}://${url.host}${url.port === null ? "" : `:${url.port}`}`;
}

function parseOrThrow(input, base = undefined) {
  const baseRecord = base === undefined ? null : parseURL(String(base), null);
  const url = base === undefined || baseRecord ? parseURL(String(input), baseRecord) : null;
  if (!url) throw new TypeError("Invalid URL");
  return url;
}

// ------------------------------------------------------------------------ URL

let linkParams; // (query, onUpdate) → a URLSearchParams reporting its changes to a URL
let resetParams; // (params, query) → replaces a linked URLSearchParams' list

// An opaque path's trailing spaces go once neither a query nor a fragment follows them.
function stripOpaqueSpaces(u) {
  if (typeof u.path === "string" && u.query === null && u.fragment === null) u.path = u.path.replace(/ +$/, "");
}

const cannotHaveCredentials = (u) => u.host === null || u.host === "" || u.scheme === "file";

class URL {
  #u;
  #params;

  constructor(url, base = undefined) {
    if (arguments.length === 0) throw new TypeError("URL: 1 argument required");
    this.#u = parseOrThrow(url, base);
    this.#params = linkParams(this.#u.query ?? "", (q) => {
      this.#u.query = q === "" ? null : q;
      stripOpaqueSpaces(this.#u);
    });
  }

  static canParse(url, base = undefined) {
    try {
      parseOrThrow(url, base);
      return true;
    } catch {
      return false;
    }
  }

  static parse(url, base = undefined) {
    return URL.canParse(url, base) ? new URL(url, base) : null;
  }

  get href() { return serializeURL(this.#u); }
  set href(value) {
    this.#u = parseOrThrow(value);
    resetParams(this.#params, this.#u.query ?? "");
  }

  get origin() { return serializeOrigin(this.#u); }

  get protocol() { return `${this.#u.scheme}:`; }
  set protocol(value) {
    const match = /^[a-zA-Z][a-zA-Z0-9+\-.]*(?=:|$)/.exec(stripTabs(String(value)));
    const u = this.#u;
    const scheme = match?.[0].toLowerCase();
    if (!scheme || isSpecial(u.scheme) !== isSpecial(scheme)) return;
    if (scheme === "file" && (u.username || u.password || u.port !== null)) return;
    if (u.scheme === "file" && u.host === "") return;
    u.scheme = scheme;
    if (u.port === SPECIAL_PORTS.get(scheme)) u.port = null;
  }

  get username() { return this.#u.username; }
  set username(value) {
    if (!cannotHaveCredentials(this.#u)) this.#u.username = percentEncode(String(value), USERINFO_SET);
  }

  get password() { return this.#u.password; }
  set password(value) {
    if (!cannotHaveCredentials(this.#u)) this.#u.password = percentEncode(String(value), USERINFO_SET);
  }

  get host() {
    const { host, port } = this.#u;
    return host === null ? "" : port === null ? host : `${host}:${port}`;
  }
  set host(value) { this.#setHost(String(value), true); }

  get hostname() { return this.#u.host ?? ""; }
  set hostname(value) { this.#setHost(String(value), false); }

  #setHost(value, withPort) {
    const u = this.#u;
    const special = isSpecial(u.scheme);
    if (typeof u.path === "string") return;
    const s = stripTabs(value).split(special ? /[/\\?#]/ : /[/?#]/)[0];
    const [hostText, portText] = u.scheme === "file" ? [s, null] : splitHostPort(s);
    if (portText !== null && !withPort) return;
    const emptyAllowed = u.scheme === "file"
      || (!special && portText === null && !u.username && !u.password && u.port === null);
    if (hostText === "" && !emptyAllowed) return;
    const host = hostText === "" ? "" : parseHost(hostText, special);
    if (host === null) return;
    u.host = u.scheme === "file" && host === "localhost" ? "" : host;
    if (portText) this.#setPort(portText);
  }

  get port() { return this.#u.port === null ? "" : String(this.#u.port); }
  set port(value) {
    if (cannotHaveCredentials(this.#u)) return;
    const s = stripTabs(String(value));
    if (s === "") this.#u.port = null;
    else this.#setPort(s);
  }

  // Leading digits only, as the spec's port state with a state override.
  #setPort(s) {
    const digits = /^\d*/.exec(s)[0];
    if (digits === "" || Number(digits) > 65535) return;
    const port = Number(digits);
    this.#u.port = port === SPECIAL_PORTS.get(this.#u.scheme) ? null : port;
  }

  get pathname() { return pathText(this.#u); }
  set pathname(value) {
    const u = this.#u;
    if (typeof u.path === "string") return;
    setPath(u, stripTabs(String(value)));
    if (u.host === null && u.path.length === 0) u.path = [""]; // the path start state's override rule
  }

  get search() { return this.#u.query ? `?${this.#u.query}` : ""; }
  set search(value) {
    const s = String(value);
    const input = stripTabs(s.replace(/^\?/, ""));
    this.#u.query = s === "" ? null : encodeQuery(input, this.#u.scheme);
    stripOpaqueSpaces(this.#u);
    resetParams(this.#params, input);
  }

  get searchParams() { return this.#params; }

  get hash() { return this.#u.fragment ? `#${this.#u.fragment}` : ""; }
  set hash(value) {
    const s = String(value);
    this.#u.fragment = s === "" ? null : percentEncode(stripTabs(s.replace(/^#/, "")), FRAGMENT_SET);
    stripOpaqueSpaces(this.#u);
  }

  toString() { return this.href; }
  toJSON() { return this.href; }
  [INSPECT]() { return `URL ${inspect({ href: this.href })}`; }
}

// ------------------------------------------------------------ URLSearchParams

// Pairs from an iterable of pairs or from a record's own enumerable properties.
function pairsOf(init) {
  if (typeof init !== "object" && typeof init !== "function") throw new TypeError("Expected an object");
  if (typeof init[Symbol.iterator] !== "function") return Object.keys(init).map((k) => [k, init[k]]);
  return Array.from(init, (pair) => {
    const items = [...pair];
    if (items.length !== 2) throw new TypeError("Each pair must have exactly two items");
    return items;
  });
}

const usv = (s) => String(s).toWellFormed();
const formEncode = (s) => percentEncode(s, FORM_SET).replace(/%20/g, "+"); // a literal "%" is "%25"
const formDecode = (s) => percentDecode(s.replace(/\+/g, " "));

function parseForm(s) {
  const list = [];
  for (const part of s.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const [name, value] = eq < 0 ? [part, ""] : [part.slice(0, eq), part.slice(eq + 1)];
    list.push([formDecode(name), formDecode(value)]);
  }
  return list;
}

class URLSearchParams {
  #list = [];
  #onUpdate = null;

  constructor(init = "") {
    if (typeof init === "object" && init !== null) {
      this.#list = pairsOf(init).map(([k, v]) => [usv(k), usv(v)]);
    } else {
      const s = usv(init);
      this.#list = parseForm(s.startsWith("?") ? s.slice(1) : s);
    }
  }

  static {
    linkParams = (query, onUpdate) => {
      const params = new URLSearchParams(query);
      params.#onUpdate = onUpdate;
      return params;
    };
    resetParams = (params, query) => {
      params.#list = parseForm(query);
    };
  }

  #update() {
    this.#onUpdate?.(this.toString());
  }

  get size() { return this.#list.length; }

  append(name, value) {
    this.#list.push([usv(name), usv(value)]);
    this.#update();
  }

  delete(name, value = undefined) {
    const [n, v] = [usv(name), value === undefined ? undefined : usv(value)];
    this.#list = this.#list.filter(([k, x]) => k !== n || (v !== undefined && x !== v));
    this.#update();
  }

  get(name) {
    const n = usv(name);
    return this.#list.find(([k]) => k === n)?.[1] ?? null;
  }

  getAll(name) {
    const n = usv(name);
    return this.#list.filter(([k]) => k === n).map(([, v]) => v);
  }

  has(name, value = undefined) {
    const [n, v] = [usv(name), value === undefined ? undefined : usv(value)];
    return this.#list.some(([k, x]) => k === n && (v === undefined || x === v));
  }

  set(name, value) {
    const [n, v] = [usv(name), usv(value)];
    const i = this.#list.findIndex(([k]) => k === n);
    if (i < 0) this.#list.push([n, v]);
    else this.#list = this.#list.filter(([k], j) => k !== n || j === i).map((p, j) => (j === i ? [n, v] : p));
    this.#update();
  }

  sort() {
    this.#list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)); // stable, by UTF-16 code units
    this.#update();
  }

  forEach(callback, thisArg = undefined) {
    for (let i = 0; i < this.#list.length; i++) {
      callback.call(thisArg, this.#list[i][1], this.#list[i][0], this);
    }
  }

  *entries() {
    for (let i = 0; i < this.#list.length; i++) yield [...this.#list[i]];
  }

  *keys() {
    for (const [k] of this.entries()) yield k;
  }

  *values() {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator]() { return this.entries(); }

  toString() {
    return this.#list.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join("&");
  }

  [INSPECT]() {
    const items = this.#list.map(([k, v]) => `${quote(k)} => ${quote(v)}`);
    return `URLSearchParams {${items.length ? ` ${items.join(", ")} ` : ""}}`;
  }
}

// -------------------------------------------------------------------- Headers

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function headerName(name) {
  const s = String(name);
  if (!TOKEN.test(s)) throw new TypeError(`Invalid header name: "${s}"`);
  return s.toLowerCase();
}

function headerValue(value) {
  const s = String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
  if (/[\0\r\n]|[^\0-\xff]/.test(s)) throw new TypeError(`Invalid header value: "${s}"`);
  return s;
}

class Headers {
  #map = new Map(); // lower-cased name → values in the order added

  constructor(init = undefined) {
    if (init === undefined || init === null) return;
    for (const [name, value] of pairsOf(init)) this.append(name, value);
  }

  append(name, value) {
    const [n, v] = [headerName(name), headerValue(value)];
    const values = this.#map.get(n);
    if (values) values.push(v);
    else this.#map.set(n, [v]);
  }

  delete(name) { this.#map.delete(headerName(name)); }
  get(name) { return this.#map.get(headerName(name))?.join(", ") ?? null; }
  getSetCookie() { return [...(this.#map.get("set-cookie") ?? [])]; }
  has(name) { return this.#map.has(headerName(name)); }
  set(name, value) { this.#map.set(headerName(name), [headerValue(value)]); }

  // Sorted by name; values joined with ", " except set-cookie, which comes one by one.
  *entries() {
    for (const name of [...this.#map.keys()].sort()) {
      const values = this.#map.get(name);
      if (!values) continue; // deleted while iterating
      if (name === "set-cookie") yield* values.map((v) => [name, v]);
      else yield [name, values.join(", ")];
    }
  }

  *keys() {
    for (const [name] of this.entries()) yield name;
  }

  *values() {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator]() { return this.entries(); }

  forEach(callback, thisArg = undefined) {
    for (const [name, value] of this.entries()) callback.call(thisArg, value, name, this);
  }

  [INSPECT]() { return `Headers ${inspect(Object.fromEntries(this.entries()))}`; }
}

// ---------------------------------------------------------- Request, Response

let bodyData; // (body owner) → null | string | Uint8Array (null while its body is a stream)
let bodySource; // (body owner) → the ReadableStream given as its body, until it is read
let setBody; // (body owner, headers, extracted body) → void
let takeBody; // (body owner) → its data, marking it used (TypeError when already used)
let moveBody; // (body owner) → its body as extracted, marking it used
let cloneBody; // (body owner, copy) → void: the copy gets the same body
let bodyReady; // (body owner) → null, or a promise that its stream body has been read
const streamDisturbed = globalThis.__streams.disturbed;
delete globalThis.__streams;
// What `.body` of a body held in memory gives: its owner, so that passing it as another
// Request's or Response's body moves the bytes over rather than streaming them.
const bodyStreamOwners = new WeakMap();

// The largest stream body collected whole (a response's body crosses to the gateway
// whole).
const MAX_STREAM_BODY_BYTES = 32 * 1024 * 1024;

/** A stream of the bytes `take` gives when first read, in one chunk. */
function bytesStream(take) {
  return new ReadableStream({
    pull(c) {
      const bytes = take();
      if (bytes.length > 0) c.enqueue(bytes);
      c.close();
    },
  }, { highWaterMark: 0 });
}

/** Reads `stream` to its end: its chunks' bytes, as one array. Given up (the stream
 * cancelled) when a chunk comes after `limitMs`. */
async function collectStream(stream, limitMs = Infinity) {
  const reader = stream.getReader();
  const deadline = native.now() + limitMs;
  const chunks = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (native.now() > deadline) {
      await reader.cancel();
      throw new TypeError(`A stream body did not end within ${limitMs} ms`);
    }
    let bytes;
    if (value instanceof Uint8Array) bytes = value;
    else if (ArrayBuffer.isView(value) || isArrayBuffer(value)) bytes = bytesOf(value);
    else if (typeof value === "string") bytes = utf8Bytes(value);
    else {
      await reader.cancel();
      throw new TypeError("A body stream's chunks must be Uint8Array, ArrayBuffer or string");
    }
    size += bytes.length;
    if (size > MAX_STREAM_BODY_BYTES) {
      await reader.cancel();
      throw new TypeError(`A stream body is larger than ${MAX_STREAM_BODY_BYTES} bytes`);
    }
    chunks.push(bytes);
  }
  return chunks.length === 1 ? chunks[0] : joinBytes(chunks);
}

// The spec's Body mixin, as a hidden base class of Request and Response.
class Body {
  #data = null;
  #source = null;
  #used = false;
  #stream = null;

  static {
    bodyData = (owner) => owner.#data;
    bodySource = (owner) => owner.#source;
    setBody = (owner, headers, { data, source, type }) => {
      if (type && !headers.has("content-type")) headers.set("content-type", type);
      owner.#data = data;
      owner.#source = source ?? null;
    };
    takeBody = (owner) => {
      if (owner.bodyUsed) throw new TypeError("Body has already been used");
      if (owner.#source !== null) throw new TypeError("A stream body is read asynchronously");
      if (owner.#data !== null) owner.#used = true;
      return owner.#data;
    };
    moveBody = (owner) => {
      if (owner.bodyUsed) throw new TypeError("Body has already been used");
      const moved = { data: owner.#data, source: owner.#source, type: null };
      if (owner.#data !== null || owner.#source !== null) owner.#used = true;
      return moved;
    };
    cloneBody = (owner, copy) => {
      if (owner.bodyUsed) throw new TypeError("Cannot clone a used body");
      if (owner.#source !== null) {
        const [mine, theirs] = owner.#source.tee();
        owner.#source = mine;
        copy.#source = theirs;
      } else {
        copy.#data = owner.#data;
      }
    };
    bodyReady = (owner, limitMs = Infinity) => {
      const source = owner.#source;
      if (source === null) return null;
      if (source.locked || streamDisturbed(source)) {
        return Promise.reject(new TypeError("The body's stream is locked or was read"));
      }
      return collectStream(source, limitMs).then((bytes) => {
        owner.#source = null;
        owner.#data = bytes;
      });
    };
  }

  get body() {
    if (this.#source !== null) return this.#source;
    if (this.#data === null) return null;
    if (this.#stream === null) {
      this.#stream = bytesStream(() => toBytes(takeBody(this)));
      bodyStreamOwners.set(this.#stream, this);
    }
    return this.#stream;
  }

  get bodyUsed() {
    return this.#used || (this.#source !== null && streamDisturbed(this.#source));
  }

  /** The body's data, marking it used; a stream body is read to its end. */
  async #take() {
    if (this.#source === null) return takeBody(this);
    if (this.bodyUsed) throw new TypeError("Body has already been used");
    if (this.#source.locked) throw new TypeError("The body's stream is locked");
    this.#used = true;
    return collectStream(this.#source);
  }

  async arrayBuffer() { return toBytes(await this.#take()).slice().buffer; }
  async bytes() { return toBytes(await this.#take()).slice(); }
  async blob() { return new Blob([toBytes(await this.#take())], { type: this.headers.get("content-type") ?? "" }); }
  async json() { return JSON.parse(await this.text()); }

  async text() {
    const data = await this.#take();
    return typeof data === "string" ? data : decodeUtf8Text(data ?? new Uint8Array(0));
  }
}

const toBytes = (data) => (data === null ? new Uint8Array(0) : typeof data === "string" ? utf8Bytes(data) : data);

const TEXT_TYPE = "text/plain;charset=UTF-8";

// A body init → { data: null | string | Uint8Array (a private copy), type }.
function extractBody(body) {
  if (body === undefined || body === null) return { data: null, type: null };
  if (typeof body === "string") return { data: body, type: TEXT_TYPE };
  if (body instanceof URLSearchParams) {
    return { data: body.toString(), type: "application/x-www-form-urlencoded;charset=UTF-8" };
  }
  if (body instanceof ReadableStream) {
    if (body.locked || streamDisturbed(body)) throw new TypeError("The body's stream is locked or was read");
    const owner = bodyStreamOwners.get(body);
    if (owner !== undefined) return moveBody(owner);
    return { data: null, source: body, type: null };
  }
  if (body instanceof Blob) return { data: blobBytes(body).slice(), type: body.type || null };
  if (ArrayBuffer.isView(body) || isArrayBuffer(body)) return { data: bytesOf(body).slice(), type: null };
  return { data: String(body), type: TEXT_TYPE };
}

/** The body's bytes for the runtime, without marking it used: null without a body. A
 * stream body must be read first (`__bodyReady`). */
function bodyBytes(owner) {
  if (bodySource(owner) !== null) throw new TypeError("A stream body must be read first (__bodyReady)");
  const data = bodyData(owner);
  return data === null ? null : toBytes(data);
}

const hasBody = (owner) => bodyData(owner) !== null || bodySource(owner) !== null;

const NORMALIZED_METHODS = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]);
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

function normalizeMethod(method) {
  const s = String(method);
  const upper = s.toUpperCase();
  if (!TOKEN.test(s) || FORBIDDEN_METHODS.has(upper)) throw new TypeError(`Invalid method: "${s}"`);
  return NORMALIZED_METHODS.has(upper) ? upper : s;
}

class Request extends Body {
  #url;
  #method;
  #headers;
  #signal;
  #redirect;
  #cf;

  constructor(input, init = undefined) {
    super();
    init ??= {};
    const from = input instanceof Request ? input : null;
    this.#url = from ? from.url : serializeURL(parseOrThrow(input));
    this.#method = init.method === undefined ? from?.method ?? "GET" : normalizeMethod(init.method);
    this.#headers = new Headers(init.headers === undefined ? from?.headers : init.headers);
    this.#signal = init.signal ?? from?.signal ?? new AbortController().signal;
    this.#redirect = init.redirect ?? from?.redirect ?? "follow";
    this.#cf = init.cf ?? from?.cf;
    // The init's body, or else the input's (a null init body too, as the spec has it).
    const given = (init.body ?? null) !== null;
    const inherited = !given && from !== null && hasBody(from);
    if (inherited && from.bodyUsed) throw new TypeError("Cannot construct a Request from a used Request");
    if ((given || (from !== null && hasBody(from))) && (this.#method === "GET" || this.#method === "HEAD")) {
      throw new TypeError("Request with GET/HEAD method cannot have body");
    }
    const body = inherited ? moveBody(from) : extractBody(init.body);
    setBody(this, this.#headers, body);
  }

  get url() { return this.#url; }
  get method() { return this.#method; }
  get headers() { return this.#headers; }
  get signal() { return this.#signal; }
  get redirect() { return this.#redirect; }
  get cf() { return this.#cf; }

  clone() {
    if (this.bodyUsed) throw new TypeError("Cannot clone a used Request");
    const { url, method, headers, signal, redirect, cf } = this;
    const copy = new Request(url, { method, headers, signal, redirect, cf });
    cloneBody(this, copy);
    return copy;
  }

  [INSPECT]() {
    return `Request ${inspect({ method: this.#method, url: this.#url, headers: this.#headers })}`;
  }
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

let markFetched; // (response, url, redirected): what fetch got, from where

class Response extends Body {
  #status;
  #statusText;
  #headers;
  #type = "default";
  #url = "";
  #redirected = false;

  static {
    markFetched = (response, url, redirected) => {
      response.#url = String(url);
      response.#redirected = Boolean(redirected);
      response.#type = "basic";
      return response;
    };
  }

  constructor(body = null, init = undefined) {
    super();
    init ??= {};
    const status = init.status === undefined ? 200 : Math.trunc(Number(init.status));
    if (!(status >= 200 && status <= 599)) throw new RangeError(`Invalid status: ${init.status}`);
    const statusText = init.statusText === undefined ? "" : String(init.statusText);
    if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(statusText)) throw new TypeError("Invalid statusText");
    this.#status = status;
    this.#statusText = statusText;
    this.#headers = new Headers(init.headers);
    const extracted = extractBody(body);
    if ((extracted.data !== null || extracted.source) && NULL_BODY_STATUSES.has(status)) {
      throw new TypeError(`Response with status ${status} cannot have a body`);
    }
    setBody(this, this.#headers, extracted);
  }

  static error() {
    const response = new Response();
    response.#status = 0;
    response.#type = "error";
    return response;
  }

  static redirect(url, status = 302) {
    const location = serializeURL(parseOrThrow(url));
    if (!REDIRECT_STATUSES.has(Number(status))) throw new RangeError(`Invalid redirect status: ${status}`);
    return new Response(null, { status, headers: { location } });
  }

  static json(data, init = undefined) {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError("Value is not JSON serializable");
    const headers = new Headers(init?.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(text, { ...init, headers });
  }

  get status() { return this.#status; }
  get statusText() { return this.#statusText; }
  get ok() { return this.#status >= 200 && this.#status <= 299; }
  get headers() { return this.#headers; }
  get type() { return this.#type; }
  get url() { return this.#url; }
  get redirected() { return this.#redirected; }

  clone() {
    if (this.bodyUsed) throw new TypeError("Cannot clone a used Response");
    const copy = new Response(null, { headers: this.#headers });
    copy.#status = this.#status;
    copy.#statusText = this.#statusText;
    copy.#type = this.#type;
    copy.#url = this.#url;
    copy.#redirected = this.#redirected;
    cloneBody(this, copy);
    return copy;
  }

  [INSPECT]() {
    const { status, statusText, headers } = this;
    return `Response ${inspect({ status, statusText, headers })}`;
  }
}

// --------------------------------------------------------------------- events

let eventState; // (event) → its internal state, for EventTarget

class Event {
  #s;

  constructor(type, init = undefined) {
    if (arguments.length === 0) throw new TypeError("Event: 1 argument required");
    this.#s = {
      type: String(type),
      bubbles: Boolean(init?.bubbles),
      cancelable: Boolean(init?.cancelable),
      composed: Boolean(init?.composed),
      target: null,
      currentTarget: null,
      phase: 0,
      canceled: false,
      stop: false,
      stopNow: false,
      passive: false,
      dispatching: false,
      timeStamp: native.now(),
    };
  }

  static {
    eventState = (event) => event.#s;
  }

  get type() { return this.#s.type; }
  get target() { return this.#s.target; }
  get currentTarget() { return this.#s.currentTarget; }
  get eventPhase() { return this.#s.phase; }
  get bubbles() { return this.#s.bubbles; }
  get cancelable() { return this.#s.cancelable; }
  get composed() { return this.#s.composed; }
  get defaultPrevented() { return this.#s.canceled; }
  get isTrusted() { return false; }
  get timeStamp() { return this.#s.timeStamp; }

  composedPath() { return this.#s.currentTarget ? [this.#s.currentTarget] : []; }

  preventDefault() {
    if (this.#s.cancelable && !this.#s.passive) this.#s.canceled = true;
  }

  stopPropagation() { this.#s.stop = true; }

  stopImmediatePropagation() {
    this.#s.stop = true;
    this.#s.stopNow = true;
  }
}

for (const [name, value] of Object.entries({ NONE: 0, CAPTURING_PHASE: 1, AT_TARGET: 2, BUBBLING_PHASE: 3 })) {
  Object.defineProperty(Event, name, { value, enumerable: true });
  Object.defineProperty(Event.prototype, name, { value, enumerable: true });
}

class MessageEvent extends Event {
  #init;

  constructor(type, init = undefined) {
    super(type, init);
    this.#init = {
      data: init?.data ?? null,
      origin: String(init?.origin ?? ""),
      lastEventId: String(init?.lastEventId ?? ""),
      source: init?.source ?? null,
      ports: [...(init?.ports ?? [])],
    };
  }

  get data() { return this.#init.data; }
  get origin() { return this.#init.origin; }
  get lastEventId() { return this.#init.lastEventId; }
  get source() { return this.#init.source; }
  get ports() { return this.#init.ports; }
}

class CloseEvent extends Event {
  #init;

  constructor(type, init = undefined) {
    super(type, init);
    this.#init = {
      code: Number(init?.code ?? 0) & 0xffff,
      reason: String(init?.reason ?? ""),
      wasClean: Boolean(init?.wasClean),
    };
  }

  get code() { return this.#init.code; }
  get reason() { return this.#init.reason; }
  get wasClean() { return this.#init.wasClean; }
}

class ErrorEvent extends Event {
  #init;

  constructor(type, init = undefined) {
    super(type, init);
    this.#init = {
      message: String(init?.message ?? ""),
      filename: String(init?.filename ?? ""),
      lineno: Number(init?.lineno ?? 0),
      colno: Number(init?.colno ?? 0),
      error: init?.error ?? null,
    };
  }

  get message() { return this.#init.message; }
  get filename() { return this.#init.filename; }
  get lineno() { return this.#init.lineno; }
  get colno() { return this.#init.colno; }
  get error() { return this.#init.error; }
}

function listenerOptions(options) {
  if (typeof options !== "object" || options === null) return { capture: Boolean(options) };
  const { capture, once, passive, signal } = options;
  return { capture: Boolean(capture), once: Boolean(once), passive: Boolean(passive), signal };
}

// Listeners run at the target only: there is no tree to capture or bubble through.
class EventTarget {
  #listeners = new Map(); // type → [{ callback, capture, once, passive, removed }]

  addEventListener(type, callback, options = undefined) {
    const { capture, once, passive, signal } = listenerOptions(options);
    if (callback === null || callback === undefined || signal?.aborted) return;
    const t = String(type);
    const list = this.#listeners.get(t) ?? [];
    if (list.some((l) => l.callback === callback && l.capture === capture)) return;
    list.push({ callback, capture, once, passive, removed: false });
    this.#listeners.set(t, list);
    signal?.addEventListener("abort", () => this.removeEventListener(t, callback, { capture }));
  }

  removeEventListener(type, callback, options = undefined) {
    const { capture } = listenerOptions(options);
    const list = this.#listeners.get(String(type)) ?? [];
    const i = list.findIndex((l) => l.callback === callback && l.capture === capture);
    if (i >= 0) list.splice(i, 1)[0].removed = true;
  }

  dispatchEvent(event) {
    if (!(event instanceof Event)) throw new TypeError("dispatchEvent: expected an Event");
    const s = eventState(event);
    if (s.dispatching) throw new DOMEx("The event is already being dispatched", "InvalidStateError");
    Object.assign(s, { dispatching: true, target: this, currentTarget: this, phase: 2 });
    try {
      this.#invoke(event, s);
    } finally {
      Object.assign(s, { dispatching: false, currentTarget: null, phase: 0, stop: false, stopNow: false });
    }
    return !s.canceled;
  }

  // Runs a snapshot of the listeners; a listener's exception is reported, not thrown.
  #invoke(event, s) {
    for (const l of [...(this.#listeners.get(s.type) ?? [])]) {
      if (l.removed) continue;
      if (l.once) this.removeEventListener(s.type, l.callback, { capture: l.capture });
      s.passive = l.passive;
      try {
        if (typeof l.callback === "function") l.callback.call(this, event);
        else l.callback.handleEvent(event);
      } catch (e) {
        reportException(e);
      }
      s.passive = false;
      if (s.stopNow) break;
    }
  }
}

// -------------------------------------------------------------- AbortSignal

const SIGNAL_KEY = Symbol("AbortSignal");
let newSignal; // () → a fresh AbortSignal
let abortSignal; // (signal, reason) → void

class AbortSignal extends EventTarget {
  #aborted = false;
  #reason = undefined;

  constructor(key) {
    if (key !== SIGNAL_KEY) throw new TypeError("Illegal constructor");
    super();
  }

  static {
    newSignal = () => new AbortSignal(SIGNAL_KEY);
    abortSignal = (signal, reason) => signal.#abort(reason);
  }

  get aborted() { return this.#aborted; }
  get reason() { return this.#reason; }

  throwIfAborted() {
    if (this.#aborted) throw this.#reason;
  }

  #abort(reason) {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason === undefined ? new DOMEx("This operation was aborted", "AbortError") : reason;
    this.dispatchEvent(new Event("abort"));
  }

  static abort(reason = undefined) {
    const signal = newSignal();
    signal.#abort(reason);
    return signal;
  }

  // Needs the runtime's setTimeout.
  static timeout(ms) {
    if (typeof globalThis.setTimeout !== "function") {
      throw new DOMEx("AbortSignal.timeout needs setTimeout", "NotSupportedError");
    }
    const signal = newSignal();
    const reason = () => new DOMEx("The operation timed out", "TimeoutError");
    globalThis.setTimeout(() => signal.#abort(reason()), Number(ms));
    return signal;
  }

  static any(signals) {
    const signal = newSignal();
    const sources = [...signals];
    const aborted = sources.find((s) => s.aborted);
    if (aborted) signal.#abort(aborted.reason);
    else for (const s of sources) s.addEventListener("abort", () => signal.#abort(s.reason), { once: true });
    return signal;
  }
}

class AbortController {
  #signal = newSignal();

  get signal() { return this.#signal; }

  abort(reason = undefined) {
    abortSignal(this.#signal, reason);
  }
}

// -------------------------------------------------------------------- globals

function queueMicrotask(callback) {
  if (typeof callback !== "function") throw new TypeError("queueMicrotask: callback must be a function");
  Promise.resolve().then(() => {
    try {
      callback();
    } catch (e) {
      reportException(e);
    }
  });
}

const performance = { timeOrigin: Date.now() - native.now(), now: () => native.now() };

const classes = {
  Blob, TextEncoder, TextDecoder, URL, URLSearchParams, Headers, Request, Response, Event, EventTarget,
  MessageEvent, CloseEvent, ErrorEvent, AbortController, AbortSignal,
};
for (const [name, cls] of Object.entries(classes)) {
  Object.defineProperty(cls.prototype, Symbol.toStringTag, { value: name, configurable: true });
  define(name, cls);
}
const functions = { console: makeConsole(), performance, queueMicrotask, structuredClone, atob, btoa, crypto };
for (const [name, value] of Object.entries(functions)) define(name, value);
define("__bodyBytes", bodyBytes);
define("__bodyReady", (owner, limitMs) => bodyReady(owner, limitMs ?? Infinity));
define("__markFetched", (response, url, redirected) => markFetched(response, url, redirected));

// For codec.js, evaluated next in this context, so that storage judges values as
// structuredClone does. Not enumerable, not writable, not configurable; its tables frozen.
Object.defineProperty(globalThis, "__brands", {
  value: Object.freeze({ builtinKind, BRAND, VIEW_TYPES, ERROR_TYPES, UNCLONABLE, dataCloneError, setOwn }),
});
})();
