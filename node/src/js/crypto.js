// crypto.subtle beyond digest, for PartyKit servers running on QuickJS-ng: what JWT and
// session libraries (jose and the like) call. Evaluated after web.js, whose `crypto`
// global it completes; the keys' bytes and the cryptography are Rust's (natives/crypto/,
// on ring).
//
// Supported:
// - HMAC (SHA-1/256/384/512): importKey raw/jwk, exportKey raw/jwk, generateKey, sign,
//   verify;
// - RSASSA-PKCS1-v1_5 and RSA-PSS (SHA-256/384/512; PKCS1 also verifies SHA-1; PSS with a
//   salt as long as the hash): importKey spki/pkcs8/jwk, exportKey spki/pkcs8/jwk, sign,
//   verify. Keys of 2048 to 8192 bits (2048 to 4096 for private ones). No generateKey;
// - ECDSA on P-256 with SHA-256 and P-384 with SHA-384: importKey raw/spki/pkcs8/jwk,
//   exportKey all four, generateKey, sign, verify (signatures as r‖s, as WebCrypto's);
// - Ed25519 (also by workerd's older name NODE-ED25519): as ECDSA;
// - AES-GCM with 128- and 256-bit keys, a 12-byte IV and a 128-bit tag: importKey raw/jwk,
//   exportKey raw/jwk, generateKey, encrypt, decrypt;
// - PBKDF2 and HKDF: importKey raw, deriveBits, deriveKey (to HMAC or AES-GCM keys).
// Everything else (RSA-OAEP, AES-CBC/CTR/KW, ECDH, X25519, wrapKey, unwrapKey) rejects with
// NotSupportedError.
(() => {
"use strict";

// What a bundle might replace later is captured now.
const native = globalThis.__native;
const DOMEx = globalThis.DOMException;
const { atob, btoa } = globalThis;

const fail = (name, message) => new DOMEx(message, name);

function bytesOf(data, what = "data") {
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError(`${what}: expected an ArrayBuffer or an ArrayBufferView`);
}

// A copy, as its own ArrayBuffer: what natives take, and what callers may not change later.
const copy = (data, what) => bytesOf(data, what).slice().buffer;

function base64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text, member) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw fail("DataError", `the JWK member "${member}" is not base64url`);
  }
  if (text.length % 4 === 1) throw fail("DataError", `the JWK member "${member}" is not base64url`);
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out.buffer;
}

// ------------------------------------------------------------ algorithm names

const NAMES = [
  "HMAC", "RSASSA-PKCS1-v1_5", "RSA-PSS", "ECDSA", "Ed25519", "AES-GCM", "PBKDF2", "HKDF",
];
const KNOWN_UNSUPPORTED = [
  "RSA-OAEP", "AES-CBC", "AES-CTR", "AES-KW", "ECDH", "X25519", "Ed448", "X448",
];
const HASHES = ["SHA-1", "SHA-256", "SHA-384", "SHA-512"];
const HASH_BITS = { "SHA-1": 160, "SHA-256": 256, "SHA-384": 384, "SHA-512": 512 };
const BLOCK_BITS = { "SHA-1": 512, "SHA-256": 512, "SHA-384": 1024, "SHA-512": 1024 };

function algorithmName(algorithm) {
  const name = typeof algorithm === "string" ? algorithm : algorithm?.name;
  if (typeof name !== "string") throw new TypeError("the algorithm needs a name");
  const upper = name.toUpperCase();
  if (upper === "NODE-ED25519") return "Ed25519"; // workerd's name before WebCrypto had one
  const found = NAMES.find((n) => n.toUpperCase() === upper);
  if (found) return found;
  const unsupported = KNOWN_UNSUPPORTED.find((n) => n.toUpperCase() === upper);
  throw fail("NotSupportedError", unsupported ? `${unsupported} is not supported` : `Unrecognized algorithm name: ${name}`);
}

function hashName(hash) {
  if (hash === undefined) throw new TypeError("the algorithm needs a hash");
  const name = String(typeof hash === "object" && hash !== null ? hash.name : hash);
  const found = HASHES.find((h) => h === name.toUpperCase());
  if (!found) throw fail("NotSupportedError", `Unrecognized hash: ${name}`);
  return found;
}

const algorithmObject = (algorithm) => (typeof algorithm === "string" ? { name: algorithm } : algorithm);

// ------------------------------------------------------------------ CryptoKey

// Each key's material and what it is for: { kind, secret, public, private, hash, ... }.
const SLOTS = new WeakMap();
let making = false;

class CryptoKey {
  constructor() {
    if (!making) throw new TypeError("Illegal constructor");
  }
  get type() { return slot(this).type; }
  get extractable() { return slot(this).extractable; }
  get algorithm() { return slot(this).algorithm; }
  get usages() { return slot(this).usages; }
}
Object.defineProperty(CryptoKey.prototype, Symbol.toStringTag, { value: "CryptoKey", configurable: true });

function slot(key) {
  const s = SLOTS.get(key);
  if (!s) throw new TypeError("not a CryptoKey");
  return s;
}

function makeKey(type, extractable, algorithm, usages, material) {
  making = true;
  let key;
  try {
    key = new CryptoKey();
  } finally {
    making = false;
  }
  SLOTS.set(key, {
    type, extractable: Boolean(extractable), algorithm: Object.freeze(algorithm), usages: Object.freeze([...usages]), ...material,
  });
  return key;
}

// The usages a key of each algorithm and type may have.
const USAGES = {
  HMAC: { secret: ["sign", "verify"] },
  "RSASSA-PKCS1-v1_5": { public: ["verify"], private: ["sign"] },
  "RSA-PSS": { public: ["verify"], private: ["sign"] },
  ECDSA: { public: ["verify"], private: ["sign"] },
  Ed25519: { public: ["verify"], private: ["sign"] },
  "AES-GCM": { secret: ["encrypt", "decrypt", "wrapKey", "unwrapKey"] },
  PBKDF2: { secret: ["deriveBits", "deriveKey"] },
  HKDF: { secret: ["deriveBits", "deriveKey"] },
};

const KEY_USAGES = ["encrypt", "decrypt", "sign", "verify", "deriveKey", "deriveBits", "wrapKey", "unwrapKey"];

function checkUsages(name, type, usages) {
  if (!Array.isArray(usages) && !(usages && typeof usages[Symbol.iterator] === "function")) {
    throw new TypeError("keyUsages must be a sequence");
  }
  const list = [...new Set(Array.from(usages, String))];
  const allowed = USAGES[name][type] ?? [];
  for (const u of list) {
    if (!KEY_USAGES.includes(u)) throw new TypeError(`"${u}" is not a key usage`);
    if (!allowed.includes(u)) throw fail("SyntaxError", `a ${type} ${name} key cannot be used to ${u}`);
  }
  if ((type === "secret" || type === "private") && list.length === 0) {
    throw fail("SyntaxError", "a secret or private key needs at least one usage");
  }
  return list;
}

function requireUsage(key, usage, name) {
  const s = slot(key);
  if (s.algorithm.name !== name) {
    throw fail("InvalidAccessError", `the key is a ${s.algorithm.name} key, not ${name}`);
  }
  if (!s.usages.includes(usage)) throw fail("InvalidAccessError", `the key's usages do not include ${usage}`);
  return s;
}

// ------------------------------------------------------------------ JWK checks

const JWK_ALG = {
  HMAC: (s) => `HS${HASH_BITS[s.hash]}`.replace("HS160", "HS1"),
  "RSASSA-PKCS1-v1_5": (s) => `RS${HASH_BITS[s.hash]}`.replace("RS160", "RS1"),
  "RSA-PSS": (s) => `PS${HASH_BITS[s.hash]}`.replace("PS160", "PS1"),
  ECDSA: (s) => (s.kind === "P-256" ? "ES256" : "ES384"),
  Ed25519: () => "EdDSA",
  "AES-GCM": (s) => `A${s.secret.byteLength * 8}GCM`,
};

function checkJwk(jwk, kty, extractable, usages, alg, use) {
  if (jwk === null || typeof jwk !== "object") throw new TypeError("a JWK must be an object");
  if (jwk.kty !== kty) throw fail("DataError", `the JWK's kty must be "${kty}"`);
  const algs = Array.isArray(alg) ? alg : [alg];
  if (alg !== undefined && jwk.alg !== undefined && !algs.includes(jwk.alg)) {
    throw fail("DataError", `the JWK's alg ${jwk.alg} does not match ${alg}`);
  }
  if (usages.length && jwk.use !== undefined && jwk.use !== use) {
    throw fail("DataError", `the JWK's use must be "${use}"`);
  }
  if (jwk.key_ops !== undefined) {
    if (!Array.isArray(jwk.key_ops)) throw fail("DataError", "the JWK's key_ops must be an array");
    for (const u of usages) {
      if (!jwk.key_ops.includes(u)) throw fail("DataError", `the JWK's key_ops do not allow ${u}`);
    }
  }
  if (jwk.ext === false && extractable) throw fail("DataError", "the JWK is not extractable");
}

// --------------------------------------------------------------------- import

function importKeySync(format, keyData, algorithm, extractable, keyUsages) {
  const name = algorithmName(algorithm);
  algorithm = algorithmObject(algorithm);
  const jwk = format === "jwk" ? keyData : undefined;
  if (format === "jwk" && (jwk === null || typeof jwk !== "object")) throw new TypeError("a JWK must be an object");
  const bytes = () => {
    if (format === "jwk") throw new TypeError("a jwk key must be an object");
    return copy(keyData, "keyData");
  };
  if (!["raw", "spki", "pkcs8", "jwk"].includes(format)) throw new TypeError(`Unknown key format: ${format}`);
  switch (name) {
    case "HMAC": {
      const hash = hashName(algorithm.hash);
      if (format !== "raw" && format !== "jwk") throw fail("NotSupportedError", `HMAC keys cannot be imported from ${format}`);
      const usages = checkUsages(name, "secret", keyUsages);
      let secret;
      if (jwk) {
        checkJwk(jwk, "oct", extractable, usages, JWK_ALG.HMAC({ hash }), "sig");
        secret = fromBase64url(jwk.k, "k");
      } else {
        secret = bytes();
      }
      let length = secret.byteLength * 8;
      if (algorithm.length !== undefined) {
        const wanted = Number(algorithm.length);
        if (!(wanted > length - 8 && wanted <= length)) throw fail("DataError", `the key has ${length} bits, not ${wanted}`);
        length = wanted;
      }
      if (length === 0) throw fail("DataError", "an HMAC key cannot be empty");
      return makeKey("secret", extractable, { name, hash: { name: hash }, length }, usages, { secret, hash });
    }
    case "RSASSA-PKCS1-v1_5":
    case "RSA-PSS": {
      const hash = hashName(algorithm.hash);
      let parsed;
      if (format === "spki") parsed = native.cryptoFromSpki(bytes());
      else if (format === "pkcs8") parsed = native.cryptoFromPkcs8(bytes());
      else if (format === "jwk") {
        const members = jwk?.d === undefined ? ["n", "e"] : ["n", "e", "d", "p", "q", "dp", "dq", "qi"];
        if (jwk?.oth !== undefined) throw fail("NotSupportedError", "multi-prime RSA keys are not supported");
        parsed = native.cryptoRsaFromParts(members.map((m) => fromBase64url(jwk?.[m], m)));
      } else throw fail("NotSupportedError", `RSA keys cannot be imported from ${format}`);
      if (parsed.kind !== "rsa") throw fail("DataError", `the key is not an RSA key (${parsed.kind})`);
      const type = parsed.private ? "private" : "public";
      const usages = checkUsages(name, type, keyUsages);
      if (jwk) checkJwk(jwk, "RSA", extractable, usages, JWK_ALG[name]({ hash }), "sig");
      const info = {
        name, modulusLength: parsed.bits, publicExponent: new Uint8Array(parsed.exponent), hash: { name: hash },
      };
      return makeKey(type, extractable, info, usages, {
        kind: "rsa", hash, public: parsed.public, private: parsed.private,
      });
    }
    case "ECDSA":
    case "Ed25519": {
      const curve = curveOf(name, algorithm);
      let parsed;
      if (format === "spki") parsed = native.cryptoFromSpki(bytes());
      else if (format === "pkcs8") parsed = native.cryptoFromPkcs8(bytes());
      else if (format === "raw") {
        parsed = { kind: curve, public: bytes() };
        native.cryptoCheckPair(curve, parsed.public);
      } else {
        const ec = name === "ECDSA";
        checkJwk(jwk, ec ? "EC" : "OKP", extractable, [], undefined, "sig");
        if (jwk.crv !== curve) throw fail("DataError", `the JWK's crv must be ${curve}`);
        const coordinate = (m) => {
          const bytes = fromBase64url(jwk[m], m);
          if (ec && bytes.byteLength !== (curve === "P-256" ? 32 : 48)) throw fail("DataError", `the JWK's ${m} is not a ${curve} coordinate`);
          return bytes;
        };
        const pub = ec ? concat([4], coordinate("x"), coordinate("y")) : fromBase64url(jwk.x, "x");
        const priv = jwk.d === undefined ? undefined : fromBase64url(jwk.d, "d");
        const derived = priv === undefined ? native.cryptoCheckPair(curve, pub) : native.cryptoCheckPair(curve, pub, priv);
        if (derived && !equalBytes(derived, pub)) throw fail("DataError", "the JWK's x does not match its d");
        parsed = { kind: curve, public: pub, private: priv };
      }
      if (parsed.kind !== curve) throw fail("DataError", `the key is a ${parsed.kind} key, not ${curve}`);
      const type = parsed.private ? "private" : "public";
      const usages = checkUsages(name, type, keyUsages);
      // Ed25519 JWKs name their alg EdDSA or, lately, Ed25519.
      const algs = name === "Ed25519" ? ["EdDSA", "Ed25519"] : JWK_ALG[name]({ kind: curve });
      if (jwk) checkJwk(jwk, jwk.kty, extractable, usages, algs, "sig");
      const info = name === "ECDSA" ? { name, namedCurve: curve } : { name };
      return makeKey(type, extractable, info, usages, { kind: curve, public: parsed.public, private: parsed.private });
    }
    case "AES-GCM": {
      if (format !== "raw" && format !== "jwk") throw fail("NotSupportedError", `AES keys cannot be imported from ${format}`);
      const usages = checkUsages(name, "secret", keyUsages);
      let secret;
      if (jwk) {
        checkJwk(jwk, "oct", extractable, usages, undefined, "enc");
        secret = fromBase64url(jwk.k, "k");
        if (jwk.alg !== undefined && jwk.alg !== `A${secret.byteLength * 8}GCM`) {
          throw fail("DataError", `the JWK's alg ${jwk.alg} does not match its key`);
        }
      } else {
        secret = bytes();
      }
      aesLength(secret.byteLength * 8);
      return makeKey("secret", extractable, { name, length: secret.byteLength * 8 }, usages, { secret });
    }
    case "PBKDF2":
    case "HKDF": {
      if (format !== "raw") throw fail("NotSupportedError", `${name} keys are imported from raw bytes only`);
      if (extractable) throw fail("SyntaxError", `${name} keys cannot be extractable`);
      const usages = checkUsages(name, "secret", keyUsages);
      return makeKey("secret", false, { name }, usages, { secret: bytes() });
    }
  }
}

function curveOf(name, algorithm) {
  if (name === "Ed25519") return "Ed25519";
  if (algorithm.namedCurve === undefined) throw new TypeError("ECDSA needs a namedCurve");
  const curve = String(algorithm.namedCurve);
  if (curve !== "P-256" && curve !== "P-384") {
    throw fail("NotSupportedError", `the curve ${curve} is not supported (P-256 and P-384 are)`);
  }
  return curve;
}

function aesLength(bits) {
  if (bits === 192) throw fail("NotSupportedError", "AES-192 is not supported (AES-128 and AES-256 are)");
  if (bits !== 128 && bits !== 256) throw fail("DataError", `AES keys are 128 or 256 bits, not ${bits}`);
}

function concat(...parts) {
  const arrays = parts.map((p) => new Uint8Array(p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out.buffer;
}

function equalBytes(a, b) {
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

// --------------------------------------------------------------------- export

function exportKeySync(format, key) {
  const s = slot(key);
  if (!s.extractable) throw fail("InvalidAccessError", "the key is not extractable");
  const name = s.algorithm.name;
  if (!["raw", "spki", "pkcs8", "jwk"].includes(format)) throw new TypeError(`Unknown key format: ${format}`);
  if (s.secret) {
    if (format === "raw") return s.secret.slice(0);
    if (format === "jwk") {
      return { kty: "oct", k: base64url(s.secret), alg: JWK_ALG[name](s), key_ops: [...s.usages], ext: true };
    }
    throw fail("NotSupportedError", `${name} keys cannot be exported as ${format}`);
  }
  if (format === "spki") {
    if (s.type !== "public") throw fail("InvalidAccessError", "only public keys export as spki");
    return native.cryptoEncode(s.kind, "spki", s.public);
  }
  if (format === "pkcs8") {
    if (s.type !== "private") throw fail("InvalidAccessError", "only private keys export as pkcs8");
    return native.cryptoEncode(s.kind, "pkcs8", s.public, s.private);
  }
  if (format === "raw") {
    if (s.kind === "rsa" || s.type !== "public") throw fail("InvalidAccessError", `a ${s.type} ${name} key does not export as raw`);
    return s.public.slice(0);
  }
  const jwk = {};
  if (s.kind === "rsa") {
    const parts = native.cryptoRsaParts(s.private ?? s.public, s.type === "private");
    const members = ["n", "e", "d", "p", "q", "dp", "dq", "qi"];
    jwk.kty = "RSA";
    parts.forEach((p, i) => { jwk[members[i]] = base64url(p); });
  } else if (s.kind === "Ed25519") {
    Object.assign(jwk, { kty: "OKP", crv: "Ed25519", x: base64url(s.public) });
    if (s.private) jwk.d = base64url(s.private);
  } else {
    const half = (s.public.byteLength - 1) / 2;
    Object.assign(jwk, {
      kty: "EC", crv: s.kind, x: base64url(s.public.slice(1, 1 + half)), y: base64url(s.public.slice(1 + half)),
    });
    if (s.private) jwk.d = base64url(s.private);
  }
  // An ECDSA key is not bound to a hash, so its JWK names no alg (WebCrypto's rule).
  if (name !== "ECDSA") jwk.alg = JWK_ALG[name](s);
  return Object.assign(jwk, { key_ops: [...s.usages], ext: true });
}

// ------------------------------------------------------------ sign and verify

function signatureScheme(algorithm, s, name) {
  const op = { scheme: name, hash: s.hash, kind: s.kind };
  if (name === "ECDSA") op.hash = hashName(algorithm.hash);
  if (name === "RSA-PSS") {
    const salt = algorithm.saltLength;
    if (typeof salt !== "number") throw new TypeError("RSA-PSS needs a saltLength");
    op.saltLength = salt;
  }
  return op;
}

// -------------------------------------------------------------------- generate

function generateKeySync(algorithm, extractable, keyUsages) {
  const name = algorithmName(algorithm);
  algorithm = algorithmObject(algorithm);
  switch (name) {
    case "HMAC": {
      const hash = hashName(algorithm.hash);
      const length = algorithm.length === undefined ? BLOCK_BITS[hash] : Number(algorithm.length);
      if (!(length > 0)) throw fail("OperationError", "an HMAC key needs a length");
      const secret = randomBits(length);
      return importKeySync("raw", secret, { name, hash, length }, extractable, keyUsages);
    }
    case "AES-GCM": {
      if (algorithm.length === undefined) throw new TypeError("AES-GCM needs a length");
      const length = Number(algorithm.length);
      if (length === 192) aesLength(length);
      if (length !== 128 && length !== 256) throw fail("OperationError", `AES keys are 128 or 256 bits, not ${length}`);
      return importKeySync("raw", randomBits(length), algorithm, extractable, keyUsages);
    }
    case "ECDSA":
    case "Ed25519": {
      const curve = curveOf(name, algorithm);
      const usages = Array.from(keyUsages, String);
      for (const u of usages) {
        if (u !== "sign" && u !== "verify") throw fail("SyntaxError", `a ${name} key cannot be used to ${u}`);
      }
      const privateUsages = usages.filter((u) => u === "sign");
      if (privateUsages.length === 0) throw fail("SyntaxError", "a private key needs at least one usage");
      const pair = native.cryptoGenerate(curve);
      const info = name === "ECDSA" ? { name, namedCurve: curve } : { name };
      const material = { kind: curve, public: pair.public };
      return {
        publicKey: makeKey("public", true, { ...info }, usages.filter((u) => u === "verify"), material),
        privateKey: makeKey("private", extractable, { ...info }, privateUsages, { ...material, private: pair.private }),
      };
    }
    case "RSASSA-PKCS1-v1_5":
    case "RSA-PSS":
      throw fail("NotSupportedError", "generating RSA keys is not supported; import one instead");
    default:
      throw fail("NotSupportedError", `${name} keys are not generated`);
  }
}

function randomBits(bits) {
  const bytes = new Uint8Array(Math.ceil(bits / 8));
  for (let at = 0; at < bytes.length; at += 65536) {
    bytes.set(new Uint8Array(native.randomBytes(Math.min(65536, bytes.length - at))), at);
  }
  return bytes;
}

// --------------------------------------------------------------- encryption

function aesGcm(encrypt, algorithm, key, data) {
  const name = algorithmName(algorithm);
  if (name !== "AES-GCM") throw fail("NotSupportedError", `${name} does not ${encrypt ? "encrypt" : "decrypt"}`);
  const s = requireUsage(key, encrypt ? "encrypt" : "decrypt", name);
  if (algorithm.tagLength !== undefined && Number(algorithm.tagLength) !== 128) {
    throw fail("NotSupportedError", "AES-GCM tags other than 128 bits are not supported");
  }
  const iv = copy(algorithm.iv, "iv");
  const aad = algorithm.additionalData === undefined ? new ArrayBuffer(0) : copy(algorithm.additionalData, "additionalData");
  return native.cryptoAesGcm(encrypt, s.secret, iv, aad, copy(data));
}

// --------------------------------------------------------------- derivation

function deriveBitsSync(algorithm, baseKey, length, usage) {
  const name = algorithmName(algorithm);
  if (name !== "PBKDF2" && name !== "HKDF") throw fail("NotSupportedError", `${name} does not derive bits`);
  const s = requireUsage(baseKey, usage, name);
  if (length === null || length === undefined || length % 8 !== 0 || length <= 0) {
    throw fail("OperationError", "the length must be a positive multiple of 8");
  }
  const op = { scheme: name, hash: hashName(algorithm.hash) };
  const salt = copy(algorithm.salt, "salt");
  const extra = name === "PBKDF2" ? algorithm.iterations : copy(algorithm.info, "info");
  return native.cryptoDerive(op, s.secret, salt, extra, length);
}

function derivedKeyLength(type) {
  const name = algorithmName(type);
  if (name === "AES-GCM") return Number(type.length);
  if (name === "HMAC") return type.length === undefined ? BLOCK_BITS[hashName(type.hash)] : Number(type.length);
  throw fail("NotSupportedError", `keys of ${name} are not derived`);
}

// --------------------------------------------------------------- SubtleCrypto

// Every method runs its checks inside the promise, so a bad argument rejects, as
// WebCrypto's do.
const later = (fn) => new Promise((resolve) => resolve(fn()));
const existing = globalThis.crypto.subtle;

class SubtleCrypto {
  constructor() {
    throw new TypeError("Illegal constructor");
  }
  digest(algorithm, data) { return existing.digest(algorithm, data); }
  importKey(format, keyData, algorithm, extractable, keyUsages) {
    return later(() => importKeySync(format, keyData, algorithm, extractable, keyUsages));
  }
  exportKey(format, key) { return later(() => exportKeySync(format, key)); }
  generateKey(algorithm, extractable, keyUsages) {
    return later(() => generateKeySync(algorithm, extractable, keyUsages));
  }
  sign(algorithm, key, data) {
    return later(() => {
      const name = algorithmName(algorithm);
      const s = requireUsage(key, "sign", name);
      const op = signatureScheme(algorithmObject(algorithm), s, name);
      return native.cryptoSign(op, s.secret ?? s.private, s.public ?? new ArrayBuffer(0), copy(data));
    });
  }
  verify(algorithm, key, signature, data) {
    return later(() => {
      const name = algorithmName(algorithm);
      const s = requireUsage(key, "verify", name);
      const op = signatureScheme(algorithmObject(algorithm), s, name);
      return native.cryptoVerify(op, s.secret ?? s.public, copy(signature, "signature"), copy(data));
    });
  }
  encrypt(algorithm, key, data) { return later(() => aesGcm(true, algorithmObject(algorithm), key, data)); }
  decrypt(algorithm, key, data) { return later(() => aesGcm(false, algorithmObject(algorithm), key, data)); }
  deriveBits(algorithm, baseKey, length) {
    return later(() => deriveBitsSync(algorithmObject(algorithm), baseKey, length, "deriveBits"));
  }
  deriveKey(algorithm, baseKey, derivedKeyType, extractable, keyUsages) {
    return later(() => {
      const type = algorithmObject(derivedKeyType);
      const bits = deriveBitsSync(algorithmObject(algorithm), baseKey, derivedKeyLength(type), "deriveKey");
      return importKeySync("raw", bits, type, extractable, keyUsages);
    });
  }
  wrapKey() { return later(() => { throw fail("NotSupportedError", "crypto.subtle.wrapKey is not supported"); }); }
  unwrapKey() { return later(() => { throw fail("NotSupportedError", "crypto.subtle.unwrapKey is not supported"); }); }
}
Object.defineProperty(SubtleCrypto.prototype, Symbol.toStringTag, { value: "SubtleCrypto", configurable: true });

const subtle = Object.create(SubtleCrypto.prototype);
Object.defineProperty(globalThis.crypto, "subtle", { value: subtle, enumerable: true, configurable: true });
for (const [name, cls] of Object.entries({ CryptoKey, SubtleCrypto })) {
  if (!(name in globalThis)) Object.defineProperty(globalThis, name, { value: cls, writable: true, configurable: true });
}
})();
