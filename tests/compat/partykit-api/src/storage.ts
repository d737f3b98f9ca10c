// Storage round trips, by HTTP (each test uses its own room):
// POST /values stores one value of each structured-clone type; GET /values reads them back
// and describes each (typeof, instanceof, contents) as JSON.
// POST /ops runs get/put/delete/list/deleteAll and reports every result.
// POST /txn runs transactions: one that throws (rolled back), one that calls rollback(),
// one that commits and returns a value.
// POST /copy checks that a stored value is a copy (mutating the object after put changes
// nothing stored). POST /more: shared and cyclic references, class instances, RegExp,
// Error. POST /limits: what put/get refuse, by error name.
import type * as Party from "partykit/server";

function samples(): Record<string, unknown> {
  return {
    object: { a: 1, b: "two" },
    array: [1, "two", { three: 3 }],
    nested: { list: [{ deep: [1, 2, { deeper: true }] }], when: new Date(0), tags: new Set(["x"]) },
    map: new Map<unknown, unknown>([["a", 1], [2, "b"], [true, [3]]]),
    set: new Set<unknown>([1, "two", 3]),
    date: new Date(1700000000123),
    bytes: new Uint8Array([0, 1, 254, 255]),
    buffer: new Uint8Array([9, 8, 7]).buffer,
    floats: new Float64Array([1.5, -2]),
    bigint: 12345678901234567890n,
    string: "héllo 😀",
    empty: "",
    number: 3.5,
    negativeZero: -0,
    nan: NaN,
    infinity: -Infinity,
    yes: true,
    no: false,
    nothing: null,
    undefinedInObject: { u: undefined, d: 1 },
  };
}

/** A JSON description of a value: its type, its class (by instanceof), its contents. */
function describe(v: unknown): unknown {
  if (v === undefined) return { undefined: true };
  if (v === null) return null;
  if (typeof v === "bigint") return { bigint: v.toString() };
  if (typeof v === "number") {
    if (Number.isNaN(v)) return { number: "NaN" };
    if (!Number.isFinite(v)) return { number: String(v) };
    if (Object.is(v, -0)) return { number: "-0" };
    return v;
  }
  if (typeof v !== "object") return v; // string, boolean
  if (v instanceof Date) return { Date: v.getTime() };
  if (v instanceof Map) return { Map: [...v].map(([k, x]) => [describe(k), describe(x)]) };
  if (v instanceof Set) return { Set: [...v].map(describe) };
  if (v instanceof Uint8Array) return { Uint8Array: [...v] };
  if (v instanceof Float64Array) return { Float64Array: [...v] };
  if (v instanceof ArrayBuffer) return { ArrayBuffer: [...new Uint8Array(v)] };
  if (Array.isArray(v)) return v.map(describe);
  return { Object: Object.entries(v).map(([k, x]) => [k, describe(x)]) };
}

async function values(storage: Party.Storage, method: string) {
  if (method === "POST") {
    await storage.put(samples());
    return { stored: Object.keys(samples()).length };
  }
  const got = await storage.get(Object.keys(samples()));
  return Object.fromEntries([...got].map(([k, v]) => [k, { typeof: typeof v, value: describe(v) }]));
}

const entries = (m: Map<string, unknown>) => [...m];

async function ops(storage: Party.Storage) {
  const out: Record<string, unknown> = {};
  await storage.put("a", 1);
  await storage.put({ b: 2, c: 3, "d:1": 4, "d:2": 5, "d:3": 6, Z: 0, "é": 7 });
  out.getOne = await storage.get("a");
  out.getMissing = describe(await storage.get("missing"));
  out.getMany = entries(await storage.get(["d:1", "b", "missing", "a"]));
  out.listAll = entries(await storage.list());
  out.listPrefix = entries(await storage.list({ prefix: "d:" }));
  out.listRange = entries(await storage.list({ start: "b", end: "d:2" }));
  out.listStartAfter = entries(await storage.list({ startAfter: "c", limit: 2 }));
  out.listReverse = entries(await storage.list({ reverse: true, limit: 2 }));
  out.listPrefixReverse = entries(await storage.list({ prefix: "d:", reverse: true, limit: 2 }));
  out.deleteOne = await storage.delete("a");
  out.deleteAgain = await storage.delete("a");
  out.deleteMany = await storage.delete(["b", "c", "nope"]);
  out.afterDeletes = [...(await storage.list()).keys()];
  await storage.deleteAll();
  out.afterDeleteAll = [...(await storage.list()).keys()];
  return out;
}

async function txn(storage: Party.Storage) {
  const out: Record<string, unknown> = {};
  await storage.put("x", 1);
  try {
    await storage.transaction(async (t) => {
      await t.put("x", 2);
      await t.put("y", 1);
      out.insideSeesOwnWrite = await t.get("x");
      throw new Error("changed my mind");
    });
  } catch (e) {
    out.thrown = (e as Error).message;
  }
  out.afterThrow = [await storage.get("x"), describe(await storage.get("y"))];
  await storage.transaction(async (t) => {
    await t.put("x", 3);
    t.rollback();
  });
  out.afterRollback = await storage.get("x");
  out.returned = await storage.transaction(async (t) => {
    const x = (await t.get<number>("x")) ?? 0;
    await t.put("x", x + 10);
    await t.delete("y");
    return "committed";
  });
  out.afterCommit = await storage.get("x");
  return out;
}

async function copy(storage: Party.Storage) {
  const doc = { n: 1, list: [1] };
  await storage.put("doc", doc);
  doc.n = 2; // after the put: not stored
  doc.list.push(2);
  const first = (await storage.get<typeof doc>("doc"))!;
  const firstRead = JSON.stringify(first);
  first.n = 3; // a value read is a copy too
  const second = await storage.get<typeof doc>("doc");
  return { first: JSON.parse(firstRead), second, same: first === second };
}

class Point {
  constructor(
    public x: number,
    public y: number,
  ) {}
  norm() {
    return Math.hypot(this.x, this.y);
  }
}

async function more(storage: Party.Storage) {
  const inner = { z: 1 };
  const cyclic: Record<string, unknown> = { name: "loop" };
  cyclic.self = cyclic;
  await storage.put({ shared: { a: inner, b: inner }, cyclic, point: new Point(3, 4), re: /ab+c/gi, err: new RangeError("out of range") });
  const shared = await storage.get<{ a: object; b: object }>("shared");
  const loop = await storage.get<Record<string, unknown>>("cyclic");
  const point = await storage.get<Record<string, unknown>>("point");
  const re = await storage.get<RegExp>("re");
  const err = await storage.get<Error>("err");
  return {
    sharedStaysShared: shared!.a === shared!.b,
    cyclicStaysCyclic: loop!.self === loop,
    classInstance: { isPoint: point instanceof Point, isObject: point!.constructor === Object, entries: Object.entries(point!) },
    regexp: { isRegExp: re instanceof RegExp, source: re!.source, flags: re!.flags },
    error: { isError: err instanceof Error, name: err!.name, message: err!.message },
  };
}

async function limits(storage: Party.Storage) {
  const refused = async (f: () => Promise<unknown>) => {
    try {
      await f();
      return "accepted";
    } catch (e) {
      return (e as Error).name;
    }
  };
  return {
    value100KiB: await refused(() => storage.put("ok", "x".repeat(100 * 1024))),
    value200KiB: await refused(() => storage.put("big", "x".repeat(200 * 1024))),
    key3000Bytes: await refused(() => storage.put("k".repeat(3000), 1)),
    get129Keys: await refused(() => storage.get(Array.from({ length: 129 }, (_, i) => `k${i}`))),
    put129Entries: await refused(() => storage.put(Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`k${i}`, i])))),
    undefinedValue: await refused(() => storage.put("u", undefined)),
    functionValue: await refused(() => storage.put("f", { f: () => 1 })),
    symbolValue: await refused(() => storage.put("s", Symbol("s"))),
    bigStored: (await storage.get("big")) !== undefined,
  };
}

export default class Storage implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request) {
    const what = new URL(req.url).pathname.split("/").pop();
    const storage = this.room.storage;
    if (what === "values") return Response.json(await values(storage, req.method));
    if (what === "ops") return Response.json(await ops(storage));
    if (what === "txn") return Response.json(await txn(storage));
    if (what === "copy") return Response.json(await copy(storage));
    if (what === "more") return Response.json(await more(storage));
    if (what === "limits") return Response.json(await limits(storage));
    return new Response("unknown", { status: 404 });
  }
}
