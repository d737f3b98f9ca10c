// Durable Object storage values: `globalThis.__codec = { encode(value) → string,
// decode(string) → value }` with structured-clone semantics.
//
// A plain JSON value (objects, arrays, strings, finite numbers other than -0, booleans,
// null, no object reached twice) is stored as its ordinary JSON text, so Rust parties
// and JS servers read each other's values; and any JSON text decodes to JSON.parse's
// value. Everything else is "~1:" (format version 1; not a possible start of JSON)
// followed by JSON in which:
//
//   null, booleans, strings, numbers      themselves
//   [a, b, …]                              an Array
//   {"k": v, …}                            a plain object, unless it has exactly one key
//                                          and that key starts with "~", in which case it
//                                          is one of these tagged nodes:
//   {"~u":0}                               undefined
//   {"~n":"NaN"|"Infinity"|"-Infinity"|"-0"}
//   {"~b":"-12"}                           a BigInt
//   {"~r":id}                              the object numbered id (shared or cyclic)
//   {"~o":{…}}                             a plain object whose only key starts with "~"
//   {"~a":[length, {"index or key": v}]}   an Array with holes or non-index properties
//   {"~D":time}                            a Date (time is a number node)
//   {"~R":[source, flags]}                 a RegExp
//   {"~M":[k1, v1, k2, v2, …]}             a Map
//   {"~S":[v1, v2, …]}                     a Set
//   {"~B":"base64"}                        an ArrayBuffer
//   {"~V":[type, buffer, byteOffset, length]}  a typed array or DataView (length in
//                                          elements, bytes for DataView) over a buffer node
//   {"~P":primitive}                       a Boolean, Number, String or BigInt object
//   {"~E":[name, message|null, stack|null(, cause)]}  an Error
//
// Objects are numbered from 0 in the order they are first met, depth-first with keys in
// order: every plain object and array, and every tagged node except u, n, b and r.
//
// As with structuredClone, class instances are stored as plain objects (own enumerable
// string-keyed properties), and functions, symbols, promises, weak collections and
// SharedArrayBuffer throw a DataCloneError.
(() => {
"use strict";

const PREFIX = "~1:";

// The value classifier and clone tables from web.js, evaluated before this file in the
// same context, so that storage judges values exactly as structuredClone does.
const brands = globalThis.__brands;
if (brands === undefined) throw new Error("codec.js: globalThis.__brands is missing; evaluate web.js first");
const { builtinKind, BRAND, VIEW_TYPES, ERROR_TYPES, UNCLONABLE, dataCloneError, setOwn } = brands;

// --------------------------------------------------------------------- base64

// QuickJS-ng has Uint8Array.prototype.toBase64 and Uint8Array.fromBase64 natively, far
// faster than JavaScript; the JavaScript versions serve engines without them.
const nativeToBase64 = Uint8Array.prototype.toBase64;
const nativeFromBase64 = Uint8Array.fromBase64;
const toBase64 = nativeToBase64 ? (bytes) => nativeToBase64.call(bytes) : base64Encode;
const fromBase64 = nativeFromBase64 ? (text) => nativeFromBase64.call(Uint8Array, text) : base64Decode;

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function base64Encode(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += BASE64[n >> 18] + BASE64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? BASE64[(n >> 6) & 63] : "=";
    out += i + 2 < bytes.length ? BASE64[n & 63] : "=";
  }
  return out;
}

function base64Decode(text) {
  const digits = text.replace(/=+$/, "");
  const bytes = new Uint8Array(Math.floor((digits.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let n = 0;
  for (const ch of digits) {
    const digit = BASE64.indexOf(ch);
    if (digit < 0) throw new SyntaxError("codec: invalid base64");
    value = ((value << 6) | digit) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[n++] = (value >> bits) & 0xff;
    }
  }
  return bytes;
}

// --------------------------------------------------------------------- encode

function encode(value) {
  const state = { ids: new Map(), tagged: false };
  const json = JSON.stringify(node(value, state));
  return state.tagged ? PREFIX + json : json;
}

function tag(state, name, payload) {
  state.tagged = true;
  return { [`~${name}`]: payload };
}

function node(v, state) {
  switch (typeof v) {
    case "string": case "boolean": return v;
    case "number": return Number.isFinite(v) && !Object.is(v, -0) ? v : numberTag(v, state);
    case "bigint": return tag(state, "b", String(v));
    case "undefined": return tag(state, "u", 0);
    case "object": return v === null ? null : objectNode(v, state);
  }
  throw dataCloneError(v); // function, symbol
}

const numberTag = (v, state) => tag(state, "n", Object.is(v, -0) ? "-0" : String(v));

function objectNode(v, state) {
  const id = state.ids.get(v);
  if (id !== undefined) return tag(state, "r", id);
  state.ids.set(v, state.ids.size);
  const kind = builtinKind(v);
  switch (kind) {
    case "Object":
      if (UNCLONABLE.some((C) => v instanceof C)) throw dataCloneError(v);
      return objectFields(v, state);
    case "Array": return arrayNode(v, state);
    case "Date": return tag(state, "D", node(BRAND.Date.call(v), state));
    case "RegExp": return tag(state, "R", [v.source, v.flags]);
    case "Map": return tag(state, "M", [...Map.prototype.entries.call(v)].flat().map((x) => node(x, state)));
    case "Set": return tag(state, "S", [...Set.prototype.values.call(v)].map((x) => node(x, state)));
    case "ArrayBuffer": return tag(state, "B", toBase64(new Uint8Array(v)));
    case "Error": return errorNode(v, state);
    case "Symbol": throw dataCloneError(v);
    case "Boolean": case "Number": case "String": case "BigInt":
      return tag(state, "P", node(BRAND[kind].call(v), state));
  }
  const length = kind === "DataView" ? v.byteLength : v.length; // typed arrays and DataView
  return tag(state, "V", [kind, node(v.buffer, state), v.byteOffset, length]);
}

// Own enumerable properties into a null-prototype object, where "__proto__" is an ordinary key.
function fields(v, state) {
  const out = Object.create(null);
  for (const key of Object.keys(v)) out[key] = node(v[key], state);
  return out;
}

function objectFields(v, state) {
  const keys = Object.keys(v);
  const out = fields(v, state);
  return keys.length === 1 && keys[0].startsWith("~") ? tag(state, "o", out) : out;
}

// Dense arrays with only index keys are JSON arrays; Object.keys lists indices first.
function arrayNode(v, state) {
  const keys = Object.keys(v);
  if (keys.length !== v.length || (v.length > 0 && keys[v.length - 1] !== String(v.length - 1))) {
    return tag(state, "a", [v.length, fields(v, state)]);
  }
  const out = [];
  for (let i = 0; i < v.length; i++) out.push(node(v[i], state));
  return out;
}

function errorNode(v, state) {
  const name = v.name in ERROR_TYPES ? v.name : "Error";
  const message = Object.hasOwn(v, "message") ? String(v.message) : null;
  const stack = typeof v.stack === "string" ? v.stack : null;
  const payload = [name, message, stack];
  if (Object.hasOwn(v, "cause")) payload.push(node(v.cause, state));
  return tag(state, "E", payload);
}

// --------------------------------------------------------------------- decode

function decode(text) {
  if (typeof text !== "string") throw new TypeError("codec: expected a string");
  if (!text.startsWith("~")) return JSON.parse(text);
  if (!text.startsWith(PREFIX)) throw new SyntaxError("codec: unknown format version");
  return revive(JSON.parse(text.slice(PREFIX.length)), []);
}

// `objects` holds the decoded objects by number, for "~r" references.
function revive(n, objects) {
  if (typeof n !== "object" || n === null) return n;
  if (Array.isArray(n)) {
    const out = register(objects, new Array(n.length));
    for (let i = 0; i < n.length; i++) out[i] = revive(n[i], objects);
    return out;
  }
  const keys = Object.keys(n);
  if (keys.length === 1 && keys[0].startsWith("~")) return reviveTag(keys[0].slice(1), n[keys[0]], objects);
  return reviveFields(register(objects, {}), n, objects);
}

function register(objects, value) {
  objects.push(value);
  return value;
}

function reviveFields(target, source, objects) {
  for (const key of Object.keys(source)) setOwn(target, key, revive(source[key], objects));
  return target;
}

function reviveTag(name, p, objects) {
  switch (name) {
    case "u": return undefined;
    case "n": return Number(p);
    case "b": return BigInt(p);
    case "r": return reference(p, objects);
    case "o": return reviveFields(register(objects, {}), p, objects);
    case "a": return reviveFields(register(objects, new Array(p[0])), p[1], objects);
    case "D": return register(objects, new Date(revive(p, objects)));
    case "R": return register(objects, new RegExp(p[0], p[1]));
    case "M": return reviveMap(register(objects, new Map()), p, objects);
    case "S": return reviveSet(register(objects, new Set()), p, objects);
    case "B": return register(objects, fromBase64(p).buffer);
    case "V": return reviveView(p, objects);
    case "P": return register(objects, Object(revive(p, objects)));
    case "E": return reviveError(p, objects);
  }
  throw new SyntaxError(`codec: unknown tag "~${name}"`);
}

function reference(id, objects) {
  if (!Number.isInteger(id) || id < 0 || id >= objects.length) {
    throw new SyntaxError(`codec: bad reference ${id}`);
  }
  return objects[id];
}

function reviveMap(map, p, objects) {
  for (let i = 0; i < p.length; i += 2) map.set(revive(p[i], objects), revive(p[i + 1], objects));
  return map;
}

function reviveSet(set, p, objects) {
  for (const item of p) set.add(revive(item, objects));
  return set;
}

// The view is numbered before its buffer, as in encode.
function reviveView([type, buffer, byteOffset, length], objects) {
  const View = VIEW_TYPES[type];
  if (!View) throw new SyntaxError(`codec: unknown view type ${type}`);
  const id = objects.push(null) - 1;
  objects[id] = new View(revive(buffer, objects), byteOffset, length);
  return objects[id];
}

function reviveError([name, message, stack, ...cause], objects) {
  const ErrorType = ERROR_TYPES[name] ?? Error;
  const error = register(objects, new ErrorType(message ?? undefined));
  const hidden = (key, value) => Object.defineProperty(error, key, { value, writable: true, configurable: true });
  if (stack !== null) hidden("stack", stack);
  if (cause.length) hidden("cause", revive(cause[0], objects));
  return error;
}

Object.defineProperty(globalThis, "__codec", {
  value: Object.freeze({ encode, decode }),
  configurable: true,
});
})();
