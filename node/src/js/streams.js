// Streams (the WHATWG Streams Standard), for the QuickJS party runtime: ReadableStream,
// WritableStream, TransformStream, their default readers, writers and controllers, the
// two queuing strategies, and TextEncoderStream / TextDecoderStream.
//
// Evaluated before web.js, whose Request and Response take a ReadableStream as a body
// and give one as `.body`. Libraries a party bundles define classes on these at load
// (`class … extends TransformStream`), so they must exist even where nothing streams:
// a response's body is collected whole before it leaves the room.
//
// Not implemented: byte streams' BYOB readers (a `type: "bytes"` source is read as a
// default stream of its chunks), and transferring streams. Chunk sizes, high-water marks
// and backpressure follow the spec; tests/compat/web-globals.test.mjs holds them to
// Node.js's streams.
(() => {
"use strict";

const KEY = Symbol("internal");

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

/** A promise whose rejection nobody may handle: not an unhandled rejection for that. */
function handled(promise) {
  promise.then(undefined, () => {});
  return promise;
}

/** A deferred already rejected with `e`, its rejection handled. */
function rejectedDeferred(e) {
  const d = deferred();
  d.reject(e);
  handled(d.promise);
  return d;
}

/** A promise for what calling `method` of `target` returns (or throws). */
function promiseCall(method, target, ...args) {
  if (method === undefined) return Promise.resolve(undefined);
  try {
    return Promise.resolve(method.apply(target, args));
  } catch (e) {
    return Promise.reject(e);
  }
}

function method(o, name) {
  const f = o[name];
  if (f === undefined || f === null) return undefined;
  if (typeof f !== "function") throw new TypeError(`${name} must be a function`);
  return f;
}

function highWaterMark(strategy, fallback) {
  const h = strategy?.highWaterMark;
  if (h === undefined) return fallback;
  const n = Number(h);
  if (Number.isNaN(n) || n < 0) throw new RangeError("highWaterMark must be a non-negative number");
  return n;
}

function sizeOf(strategy) {
  const size = strategy?.size;
  if (size === undefined) return () => 1;
  if (typeof size !== "function") throw new TypeError("size must be a function");
  return (chunk) => {
    const s = Number(size(chunk));
    if (!(s >= 0) || s === Infinity) throw new RangeError("a chunk's size must be a finite, non-negative number");
    return s;
  };
}

class ByteLengthQueuingStrategy {
  #highWaterMark;
  constructor(init) {
    if (init?.highWaterMark === undefined) throw new TypeError("highWaterMark is required");
    this.#highWaterMark = Number(init.highWaterMark);
  }
  get highWaterMark() { return this.#highWaterMark; }
  get size() { return byteLength; }
}
const byteLength = (chunk) => chunk.byteLength;

class CountQueuingStrategy {
  #highWaterMark;
  constructor(init) {
    if (init?.highWaterMark === undefined) throw new TypeError("highWaterMark is required");
    this.#highWaterMark = Number(init.highWaterMark);
  }
  get highWaterMark() { return this.#highWaterMark; }
  get size() { return one; }
}
const one = () => 1;

// ---- ReadableStream -------------------------------------------------------------------

// A readable stream's state `r`: state ("readable", "closed", "errored"), error, reader
// (the reader state: its stream, pending reads and `closed`), disturbed, and its
// controller's queue, strategy and source.

function shouldPull(r) {
  if (r.state !== "readable" || r.closeRequested || !r.started) return false;
  if (r.reader !== null && r.reader.reads.length > 0) return true;
  return r.highWaterMark - r.queueSize > 0;
}

function pullIfNeeded(r) {
  if (!shouldPull(r)) return;
  if (r.pulling) {
    r.pullAgain = true;
    return;
  }
  r.pulling = true;
  promiseCall(r.pull, r.source, r.controller).then(
    () => {
      r.pulling = false;
      if (r.pullAgain) {
        r.pullAgain = false;
        pullIfNeeded(r);
      }
    },
    (e) => errorReadable(r, e),
  );
}

function enqueue(r, chunk) {
  if (r.closeRequested || r.state !== "readable") throw new TypeError("The stream is closed or closing; it takes no more chunks");
  const reads = r.reader?.reads;
  if (reads && reads.length > 0) {
    reads.shift().resolve({ value: chunk, done: false });
  } else {
    let size;
    try {
      size = r.size(chunk);
    } catch (e) {
      errorReadable(r, e);
      throw e;
    }
    r.queue.push([chunk, size]);
    r.queueSize += size;
  }
  pullIfNeeded(r);
}

function requestClose(r) {
  if (r.closeRequested || r.state !== "readable") throw new TypeError("The stream is closed or closing");
  r.closeRequested = true;
  if (r.queue.length === 0) closeReadable(r);
}

function closeReadable(r) {
  if (r.state !== "readable") return;
  r.state = "closed";
  const reader = r.reader;
  if (reader === null) return;
  for (const read of reader.reads.splice(0)) read.resolve({ value: undefined, done: true });
  reader.closed.resolve(undefined);
}

function errorReadable(r, e) {
  if (r.state !== "readable") return;
  r.state = "errored";
  r.error = e;
  r.queue = [];
  r.queueSize = 0;
  const reader = r.reader;
  if (reader === null) return;
  for (const read of reader.reads.splice(0)) read.reject(e);
  reader.closed.reject(e);
  handled(reader.closed.promise);
}

function cancelReadable(r, reason) {
  r.disturbed = true;
  if (r.state === "closed") return Promise.resolve(undefined);
  if (r.state === "errored") return Promise.reject(r.error);
  closeReadable(r);
  r.queue = [];
  r.queueSize = 0;
  return promiseCall(r.cancel, r.source, reason).then(() => undefined);
}

function read(reader) {
  const r = reader.stream;
  if (r === null) return Promise.reject(new TypeError("The reader was released"));
  r.disturbed = true;
  if (r.state === "closed") return Promise.resolve({ value: undefined, done: true });
  if (r.state === "errored") return Promise.reject(r.error);
  if (r.queue.length > 0) {
    const [chunk, size] = r.queue.shift();
    r.queueSize = Math.max(0, r.queueSize - size);
    if (r.closeRequested && r.queue.length === 0) closeReadable(r);
    else pullIfNeeded(r);
    return Promise.resolve({ value: chunk, done: false });
  }
  const pending = deferred();
  reader.reads.push(pending);
  pullIfNeeded(r);
  return pending.promise;
}

function releaseReader(reader) {
  const r = reader.stream;
  if (r === null) return;
  const e = new TypeError("The reader was released");
  for (const pending of reader.reads.splice(0)) pending.reject(e);
  if (r.state === "readable") {
    reader.closed.reject(e);
    handled(reader.closed.promise);
  } else {
    reader.closed = rejectedDeferred(e);
  }
  r.reader = null;
  reader.stream = null;
}

let readableState; // (ReadableStream) → its state

class ReadableStreamDefaultController {
  #r;
  constructor(key, r) {
    if (key !== KEY) throw new TypeError("Illegal constructor");
    this.#r = r;
  }
  get desiredSize() {
    const r = this.#r;
    if (r.state === "errored") return null;
    if (r.state === "closed") return 0;
    return r.highWaterMark - r.queueSize;
  }
  enqueue(chunk) { enqueue(this.#r, chunk); }
  close() { requestClose(this.#r); }
  error(e) { errorReadable(this.#r, e); }
}

class ReadableStreamDefaultReader {
  #reader;
  constructor(stream) {
    if (!(stream instanceof ReadableStream)) throw new TypeError("ReadableStreamDefaultReader takes a ReadableStream");
    const r = readableState(stream);
    if (r.reader !== null) throw new TypeError("ReadableStream is locked");
    const closed = deferred();
    if (r.state === "closed") closed.resolve(undefined);
    if (r.state === "errored") {
      closed.reject(r.error);
      handled(closed.promise);
    }
    this.#reader = { stream: r, reads: [], closed };
    r.reader = this.#reader;
  }
  get closed() { return this.#reader.closed.promise; }
  read() { return read(this.#reader); }
  releaseLock() { releaseReader(this.#reader); }
  cancel(reason) {
    const r = this.#reader.stream;
    if (r === null) return Promise.reject(new TypeError("The reader was released"));
    return cancelReadable(r, reason);
  }
}

class ReadableStream {
  #r;

  constructor(source = undefined, strategy = undefined) {
    source ??= {};
    if (typeof source !== "object" && typeof source !== "function") throw new TypeError("The source must be an object");
    const type = source.type;
    if (type !== undefined && String(type) !== "bytes") throw new TypeError(`Invalid source type: ${String(type)}`);
    const bytes = type !== undefined;
    const r = {
      state: "readable",
      error: undefined,
      reader: null,
      disturbed: false,
      queue: [],
      queueSize: 0,
      // A byte source is queued by bytes, with no strategy of its own.
      highWaterMark: highWaterMark(strategy, bytes ? 0 : 1),
      size: bytes ? byteLength : sizeOf(strategy),
      closeRequested: false,
      started: false,
      pulling: false,
      pullAgain: false,
      source,
      pull: method(source, "pull"),
      cancel: method(source, "cancel"),
      controller: null,
    };
    const start = method(source, "start");
    this.#r = r;
    r.controller = new ReadableStreamDefaultController(KEY, r);
    const started = start === undefined ? undefined : start.call(source, r.controller);
    Promise.resolve(started).then(
      () => {
        r.started = true;
        pullIfNeeded(r);
      },
      (e) => errorReadable(r, e),
    );
  }

  static {
    readableState = (stream) => stream.#r;
  }

  /** A stream of what `iterable` (sync or async) yields. */
  static from(iterable) {
    const asyncMethod = iterable?.[Symbol.asyncIterator];
    const syncMethod = iterable?.[Symbol.iterator];
    if (typeof asyncMethod !== "function" && typeof syncMethod !== "function") {
      throw new TypeError("ReadableStream.from takes an iterable or an async iterable");
    }
    const isAsync = typeof asyncMethod === "function";
    const it = isAsync ? asyncMethod.call(iterable) : syncMethod.call(iterable);
    return new ReadableStream({
      async pull(c) {
        const { value, done } = await it.next();
        if (done) c.close();
        // A sync iterator's values are awaited, as an async iterator made from it has them.
        else c.enqueue(isAsync ? value : await value);
      },
      async cancel(reason) {
        if (typeof it.return === "function") await it.return(reason);
      },
    }, { highWaterMark: 0 });
  }

  get locked() { return this.#r.reader !== null; }

  cancel(reason = undefined) {
    if (this.locked) return Promise.reject(new TypeError("ReadableStream is locked"));
    return cancelReadable(this.#r, reason);
  }

  getReader(options = undefined) {
    const mode = options?.mode;
    if (mode !== undefined) {
      if (String(mode) === "byob") throw new TypeError("BYOB readers are not supported");
      throw new TypeError(`Invalid reader mode: ${String(mode)}`);
    }
    return new ReadableStreamDefaultReader(this);
  }

  pipeThrough(transform, options = undefined) {
    const { writable, readable } = transform ?? {};
    if (!(writable instanceof WritableStream) || !(readable instanceof ReadableStream)) {
      throw new TypeError("pipeThrough takes { writable, readable }");
    }
    if (this.locked) throw new TypeError("ReadableStream is locked");
    if (writable.locked) throw new TypeError("WritableStream is locked");
    handled(this.pipeTo(writable, options));
    return readable;
  }

  pipeTo(dest, options = undefined) {
    if (!(dest instanceof WritableStream)) return Promise.reject(new TypeError("pipeTo takes a WritableStream"));
    if (this.locked) return Promise.reject(new TypeError("ReadableStream is locked"));
    if (dest.locked) return Promise.reject(new TypeError("WritableStream is locked"));
    const preventClose = Boolean(options?.preventClose);
    const preventAbort = Boolean(options?.preventAbort);
    const preventCancel = Boolean(options?.preventCancel);
    const signal = options?.signal;
    const reader = this.getReader();
    const writer = dest.getWriter();
    const piped = deferred();
    let finished = false;
    let stop = null;
    let lastWrite = Promise.resolve();
    // Ends the pipe once: `action` (closing, aborting or cancelling a side), then the locks
    // go and the pipe settles.
    const finish = (action, error, failed) => {
      if (finished) return;
      finished = true;
      Promise.resolve()
        .then(action)
        .then(
          () => {},
          (e) => {
            if (!failed) {
              failed = true;
              error = e;
            }
          },
        )
        .then(() => {
          if (stop !== null) signal.removeEventListener("abort", stop);
          reader.releaseLock();
          writer.releaseLock();
          if (failed) piped.reject(error);
          else piped.resolve(undefined);
        });
    };
    // Reads what the destination is ready for and writes it, until the source ends. A
    // side that fails or closes meanwhile ends the pipe through its `closed` (below),
    // whatever this waits on.
    const loop = (async () => {
      for (;;) {
        await writer.ready;
        const { value, done } = await reader.read();
        if (done) return;
        lastWrite = handled(writer.write(value));
      }
    })();
    handled(loop);
    reader.closed.then(
      () => finish(async () => {
        await loop;
        await lastWrite;
        if (!preventClose) await writer.close();
      }, undefined, false),
      (e) => finish(() => (preventAbort ? undefined : writer.abort(e)), e, true),
    );
    writer.closed.then(
      () => {
        const e = new TypeError("The destination closed before the pipe ended");
        finish(() => (preventCancel ? undefined : reader.cancel(e)), e, true);
      },
      (e) => finish(() => (preventCancel ? undefined : reader.cancel(e)), e, true),
    );
    if (signal) {
      stop = () => {
        const e = signal.reason;
        finish(() => Promise.all([
          preventAbort ? undefined : writer.abort(e),
          preventCancel ? undefined : reader.cancel(e),
        ]), e, true);
      };
      if (signal.aborted) stop();
      else signal.addEventListener("abort", stop);
    }
    return piped.promise;
  }

  /** Two streams that each read what this one gives. */
  tee() {
    const reader = this.getReader();
    const source = this.#r;
    let reading = false;
    const canceled = [false, false];
    const reasons = [undefined, undefined];
    const allCanceled = deferred();
    const branches = [];
    const pull = () => {
      if (reading) return Promise.resolve();
      reading = true;
      reader.read().then(
        ({ value, done }) => {
          reading = false;
          branches.forEach((b, i) => {
            if (canceled[i]) return;
            const br = readableState(b);
            if (br.state !== "readable" || br.closeRequested) return;
            if (done) requestClose(br);
            else enqueue(br, value);
          });
          if (done) allCanceled.resolve(undefined);
        },
        () => {
          reading = false;
        },
      );
      return Promise.resolve();
    };
    for (const i of [0, 1]) {
      branches.push(new ReadableStream({
        pull,
        cancel(reason) {
          canceled[i] = true;
          reasons[i] = reason;
          if (canceled[0] && canceled[1]) {
            cancelReadable(source, reasons).then(allCanceled.resolve, allCanceled.reject);
          }
          return allCanceled.promise;
        },
      }, { highWaterMark: 0 }));
    }
    reader.closed.then(undefined, (e) => {
      for (const b of branches) errorReadable(readableState(b), e);
      allCanceled.resolve(undefined);
    });
    return branches;
  }

  values(options = undefined) {
    const reader = this.getReader();
    const preventCancel = Boolean(options?.preventCancel);
    let ended = false;
    return {
      next: () => {
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return reader.read().then(
          (result) => {
            if (result.done) {
              ended = true;
              reader.releaseLock();
            }
            return result;
          },
          (e) => {
            ended = true;
            reader.releaseLock();
            throw e;
          },
        );
      },
      return: async (value) => {
        if (ended) return { value, done: true };
        ended = true;
        if (!preventCancel) {
          const cancelled = reader.cancel(value);
          reader.releaseLock();
          await cancelled;
        } else {
          reader.releaseLock();
        }
        return { value, done: true };
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }

  [Symbol.asyncIterator](options = undefined) {
    return this.values(options);
  }
}

// ---- WritableStream -------------------------------------------------------------------

// A writable stream's state `w`: state ("writable", "erroring", "errored", "closed"),
// error, writer (its state: ready, closed), the queue of writes (and the close, last),
// the write or close in flight, and the sink.

const CLOSE = Symbol("close");

function desiredSize(w) {
  return w.highWaterMark - w.queueSize;
}

function updateBackpressure(w) {
  const writer = w.writer;
  const backpressure = w.state === "writable" && !w.closeRequested && desiredSize(w) <= 0;
  if (backpressure === w.backpressure) return;
  w.backpressure = backpressure;
  if (writer === null) return;
  if (backpressure) writer.ready = deferred();
  else writer.ready.resolve(undefined);
}

function advance(w) {
  if (!w.started || w.inFlight !== null) return;
  if (w.state === "erroring") {
    finishErroring(w);
    return;
  }
  if (w.state !== "writable" || w.queue.length === 0) return;
  const head = w.queue[0];
  if (head.chunk === CLOSE) {
    w.inFlight = head;
    promiseCall(w.close, w.sink).then(
      () => {
        w.inFlight = null;
        w.queue.shift();
        head.done.resolve(undefined);
        if (w.state === "erroring") {
          // An abort came while the sink closed: the close stands.
          w.pendingAbort?.done.resolve(undefined);
          w.pendingAbort = null;
        }
        w.state = "closed";
        w.writer?.closed.resolve(undefined);
      },
      (e) => {
        w.inFlight = null;
        w.queue.shift();
        head.done.reject(e);
        // An abort that waited on the close fails with it.
        w.pendingAbort?.done.reject(e);
        w.pendingAbort = null;
        sinkFailed(w, e);
      },
    );
    return;
  }
  w.inFlight = head;
  promiseCall(w.write, w.sink, head.chunk, w.controller).then(
    () => {
      w.inFlight = null;
      w.queue.shift();
      w.queueSize = Math.max(0, w.queueSize - head.size);
      head.done.resolve(undefined);
      updateBackpressure(w);
      advance(w);
    },
    (e) => {
      w.inFlight = null;
      w.queue.shift();
      head.done.reject(e);
      sinkFailed(w, e);
    },
  );
}

/** The sink failed (its start, a write or the close): writes queued fail with it. */
function sinkFailed(w, e) {
  if (w.state === "writable") startErroring(w, e);
  finishErroring(w);
}

/** The stream is errored (by its controller, a chunk's size, its transform): it errors
 * once what the sink is doing settles. */
function errorWritable(w, e) {
  if (w.state === "writable") startErroring(w, e);
}

function startErroring(w, e) {
  w.state = "erroring";
  w.error = e;
  w.controllerAbort?.abort(e);
  const writer = w.writer;
  if (writer !== null && !w.backpressure) {
    writer.ready = rejectedDeferred(e);
  } else if (writer !== null) {
    writer.ready.reject(e);
    handled(writer.ready.promise);
  }
  if (w.inFlight === null && w.started) finishErroring(w);
}

function finishErroring(w) {
  if (w.state !== "erroring") return;
  w.state = "errored";
  const e = w.error;
  for (const queued of w.queue.splice(0)) queued.done.reject(e);
  w.queueSize = 0;
  const writer = w.writer;
  if (writer !== null) {
    writer.closed.reject(e);
    handled(writer.closed.promise);
  }
  const abort = w.pendingAbort;
  w.pendingAbort = null;
  if (abort !== null) {
    promiseCall(w.abort, w.sink, abort.reason).then(abort.done.resolve, abort.done.reject);
  }
}

function abortWritable(w, reason) {
  if (w.state === "closed" || w.state === "errored") return Promise.resolve(undefined);
  if (w.pendingAbort !== null) return w.pendingAbort.done.promise;
  const done = deferred();
  w.pendingAbort = { reason, done };
  if (w.state === "writable") startErroring(w, reason);
  return done.promise;
}

function closeWritable(w) {
  if (w.state === "closed" || w.state === "errored" || w.closeRequested) {
    return Promise.reject(new TypeError("The stream is closed or closing"));
  }
  if (w.state === "erroring") return Promise.reject(w.error);
  w.closeRequested = true;
  const done = deferred();
  w.queue.push({ chunk: CLOSE, size: 0, done });
  if (w.backpressure && w.writer !== null) w.writer.ready.resolve(undefined);
  w.backpressure = false;
  advance(w);
  return done.promise;
}

function write(w, chunk) {
  if (w.state === "errored" || w.state === "erroring") return Promise.reject(w.error);
  if (w.closeRequested || w.state === "closed") {
    return Promise.reject(new TypeError("The stream is closed or closing"));
  }
  let size;
  try {
    size = w.size(chunk);
  } catch (e) {
    errorWritable(w, e);
    return Promise.reject(e);
  }
  const done = deferred();
  w.queue.push({ chunk, size, done });
  w.queueSize += size;
  updateBackpressure(w);
  advance(w);
  return done.promise;
}

let writableState; // (WritableStream) → its state

class WritableStreamDefaultController {
  #w;
  constructor(key, w) {
    if (key !== KEY) throw new TypeError("Illegal constructor");
    this.#w = w;
  }
  get signal() { return this.#w.controllerAbort.signal; }
  error(e) {
    errorWritable(this.#w, e);
  }
}

class WritableStreamDefaultWriter {
  #writer;
  constructor(stream) {
    if (!(stream instanceof WritableStream)) throw new TypeError("WritableStreamDefaultWriter takes a WritableStream");
    const w = writableState(stream);
    if (w.writer !== null) throw new TypeError("WritableStream is locked");
    const ready = deferred();
    const closed = deferred();
    if (w.state === "writable" && !w.backpressure) ready.resolve(undefined);
    if (w.state === "closed") {
      ready.resolve(undefined);
      closed.resolve(undefined);
    }
    if (w.state === "errored" || w.state === "erroring") {
      ready.reject(w.error);
      handled(ready.promise);
    }
    if (w.state === "errored") {
      closed.reject(w.error);
      handled(closed.promise);
    }
    this.#writer = { stream: w, ready, closed };
    w.writer = this.#writer;
  }
  #stream() {
    const w = this.#writer.stream;
    if (w === null) throw new TypeError("The writer was released");
    return w;
  }
  get closed() { return this.#writer.closed.promise; }
  get ready() { return this.#writer.ready.promise; }
  get desiredSize() {
    const w = this.#stream();
    if (w.state === "errored" || w.state === "erroring") return null;
    if (w.state === "closed") return 0;
    return desiredSize(w);
  }
  write(chunk = undefined) {
    if (this.#writer.stream === null) return Promise.reject(new TypeError("The writer was released"));
    return write(this.#writer.stream, chunk);
  }
  close() {
    if (this.#writer.stream === null) return Promise.reject(new TypeError("The writer was released"));
    return closeWritable(this.#writer.stream);
  }
  abort(reason = undefined) {
    if (this.#writer.stream === null) return Promise.reject(new TypeError("The writer was released"));
    return abortWritable(this.#writer.stream, reason);
  }
  releaseLock() {
    const w = this.#writer.stream;
    if (w === null) return;
    const e = new TypeError("The writer was released");
    this.#writer.ready = rejectedDeferred(e);
    this.#writer.closed = rejectedDeferred(e);
    w.writer = null;
    this.#writer.stream = null;
  }
}

class WritableStream {
  #w;
  constructor(sink = undefined, strategy = undefined) {
    sink ??= {};
    if (typeof sink !== "object" && typeof sink !== "function") throw new TypeError("The sink must be an object");
    if (sink.type !== undefined) throw new RangeError("Invalid sink type");
    const w = {
      state: "writable",
      error: undefined,
      writer: null,
      queue: [],
      queueSize: 0,
      highWaterMark: highWaterMark(strategy, 1),
      size: sizeOf(strategy),
      backpressure: false,
      closeRequested: false,
      started: false,
      inFlight: null,
      pendingAbort: null,
      sink,
      write: method(sink, "write"),
      close: method(sink, "close"),
      abort: method(sink, "abort"),
      controller: null,
      controllerAbort: typeof AbortController === "function" ? new AbortController() : null,
    };
    this.#w = w;
    w.controller = new WritableStreamDefaultController(KEY, w);
    w.backpressure = desiredSize(w) <= 0;
    const start = method(sink, "start");
    const started = start === undefined ? undefined : start.call(sink, w.controller);
    Promise.resolve(started).then(
      () => {
        w.started = true;
        advance(w);
      },
      (e) => {
        w.started = true;
        sinkFailed(w, e);
      },
    );
  }
  static {
    writableState = (stream) => stream.#w;
  }
  get locked() { return this.#w.writer !== null; }
  abort(reason = undefined) {
    if (this.locked) return Promise.reject(new TypeError("WritableStream is locked"));
    return abortWritable(this.#w, reason);
  }
  close() {
    if (this.locked) return Promise.reject(new TypeError("WritableStream is locked"));
    return closeWritable(this.#w);
  }
  getWriter() {
    return new WritableStreamDefaultWriter(this);
  }
}

// ---- TransformStream ------------------------------------------------------------------

class TransformStreamDefaultController {
  #t;
  constructor(key, t) {
    if (key !== KEY) throw new TypeError("Illegal constructor");
    this.#t = t;
  }
  get desiredSize() {
    const r = this.#t.readable;
    if (r.state === "errored") return null;
    if (r.state === "closed") return 0;
    return r.highWaterMark - r.queueSize;
  }
  enqueue(chunk) {
    const t = this.#t;
    try {
      enqueue(t.readable, chunk);
    } catch (e) {
      errorWritable(t.writable, e);
      throw e;
    }
    t.checkBackpressure();
  }
  error(reason) {
    errorReadable(this.#t.readable, reason);
    errorWritable(this.#t.writable, reason);
  }
  terminate() {
    const t = this.#t;
    if (t.readable.state === "readable" && !t.readable.closeRequested) requestClose(t.readable);
    errorWritable(t.writable, new TypeError("The transform stream was terminated"));
  }
}

class TransformStream {
  #readable;
  #writable;
  constructor(transformer = undefined, writableStrategy = undefined, readableStrategy = undefined) {
    transformer ??= {};
    if (transformer.readableType !== undefined) throw new RangeError("Invalid readableType");
    if (transformer.writableType !== undefined) throw new RangeError("Invalid writableType");
    const transform = method(transformer, "transform");
    const flush = method(transformer, "flush");
    const cancel = method(transformer, "cancel");
    const start = method(transformer, "start");
    // Backpressure: a write waits while the readable side's queue is full, until a read
    // asks for more (its pull).
    let waiting = null;
    const t = {
      readable: null,
      writable: null,
      // As the spec's HasBackpressure: the readable side would not pull.
      checkBackpressure() {
        if (t.readable.state === "readable" && !shouldPull(t.readable)) waiting ??= deferred();
      },
    };
    const controller = new TransformStreamDefaultController(KEY, t);
    const started = deferred();
    this.#writable = new WritableStream({
      start: () => started.promise,
      write: async (chunk) => {
        if (waiting) await waiting.promise;
        const r = t.readable;
        if (r.state === "errored") throw r.error;
        try {
          if (transform === undefined) controller.enqueue(chunk);
          else await transform.call(transformer, chunk, controller);
        } catch (e) {
          errorReadable(t.readable, e);
          throw e;
        }
      },
      close: async () => {
        try {
          await promiseCall(flush, transformer, controller);
        } catch (e) {
          errorReadable(t.readable, e);
          throw e;
        }
        const r = t.readable;
        if (r.state === "errored") throw r.error;
        if (r.state === "readable" && !r.closeRequested) requestClose(r);
      },
      abort: async (reason) => {
        await promiseCall(cancel, transformer, reason);
        errorReadable(t.readable, reason);
      },
    }, writableStrategy);
    this.#readable = new ReadableStream({
      start: () => started.promise,
      pull: () => {
        if (waiting) {
          waiting.resolve(undefined);
          waiting = null;
        }
      },
      cancel: async (reason) => {
        await promiseCall(cancel, transformer, reason);
        errorWritable(t.writable, reason);
      },
    }, { highWaterMark: readableStrategy?.highWaterMark ?? 0, size: readableStrategy?.size });
    t.readable = readableState(this.#readable);
    t.writable = writableState(this.#writable);
    t.checkBackpressure();
    Promise.resolve(start === undefined ? undefined : start.call(transformer, controller)).then(
      () => started.resolve(undefined),
      (e) => {
        started.reject(e);
        errorReadable(t.readable, e);
      },
    );
  }
  get readable() { return this.#readable; }
  get writable() { return this.#writable; }
}

// ---- TextEncoderStream, TextDecoderStream ---------------------------------------------

class TextEncoderStream {
  #stream;
  constructor() {
    const encoder = new TextEncoder();
    let pending = ""; // a high surrogate split from its pair at the end of a chunk
    this.#stream = new TransformStream({
      transform(chunk, c) {
        let text = pending + String(chunk);
        pending = "";
        const last = text.charCodeAt(text.length - 1);
        if (last >= 0xd800 && last <= 0xdbff) {
          pending = text.slice(-1);
          text = text.slice(0, -1);
        }
        if (text.length > 0) c.enqueue(encoder.encode(text));
      },
      flush(c) {
        if (pending) c.enqueue(encoder.encode(pending));
      },
    });
  }
  get encoding() { return "utf-8"; }
  get readable() { return this.#stream.readable; }
  get writable() { return this.#stream.writable; }
}

class TextDecoderStream {
  #stream;
  #decoder;
  constructor(label = "utf-8", options = undefined) {
    const decoder = new TextDecoder(label, options);
    this.#decoder = decoder;
    this.#stream = new TransformStream({
      transform(chunk, c) {
        const text = decoder.decode(chunk, { stream: true });
        if (text) c.enqueue(text);
      },
      flush(c) {
        const text = decoder.decode();
        if (text) c.enqueue(text);
      },
    });
  }
  get encoding() { return this.#decoder.encoding; }
  get fatal() { return this.#decoder.fatal; }
  get ignoreBOM() { return this.#decoder.ignoreBOM; }
  get readable() { return this.#stream.readable; }
  get writable() { return this.#stream.writable; }
}

const globals = {
  ReadableStream,
  ReadableStreamDefaultReader,
  ReadableStreamDefaultController,
  WritableStream,
  WritableStreamDefaultWriter,
  WritableStreamDefaultController,
  TransformStream,
  TransformStreamDefaultController,
  ByteLengthQueuingStrategy,
  CountQueuingStrategy,
  TextEncoderStream,
  TextDecoderStream,
};
for (const [name, value] of Object.entries(globals)) {
  Object.defineProperty(value.prototype, Symbol.toStringTag, { value: name, configurable: true });
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}
// For web.js, evaluated next, which takes it away: whether a stream was read from
// (a body whose stream was read is used).
Object.defineProperty(globalThis, "__streams", {
  value: { disturbed: (stream) => readableState(stream).disturbed },
  configurable: true,
});
})();
