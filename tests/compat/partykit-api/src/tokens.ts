// crypto.subtle as JWT and session code uses it: jose's tokens, HMAC, AES-GCM, PBKDF2,
// HKDF, key import and export. POST a JSON job to the room; the answer is JSON, and a job
// that throws answers {"error": "<name or jose code>: <message>"}.
import type * as Party from "partykit/server";
import * as jose from "jose";

type Job = Record<string, any> & { job: string };

const bytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
const text = (s: string) => new TextEncoder().encode(s);

// A key as the test sends it: a PEM (spki or pkcs8), a JWK, or an HMAC secret.
async function key(alg: string, k: any, use: "sign" | "verify") {
  if (typeof k === "object") return jose.importJWK(k, alg);
  if (alg.startsWith("HS")) return text(k);
  return use === "sign" ? jose.importPKCS8(k, alg) : jose.importSPKI(k, alg);
}

async function errorName(f: () => Promise<unknown>) {
  try {
    await f();
    return "no error";
  } catch (e: any) {
    return typeof e?.code === "string" ? e.code : e?.name; // jose's codes; DOMException's names
  }
}

const jobs: Record<string, (j: Job) => Promise<unknown>> = {
  async verify({ alg, key: k, token }) {
    const { payload, protectedHeader } = await jose.jwtVerify(token, await key(alg, k, "verify"), {
      algorithms: [alg],
    });
    return { payload, alg: protectedHeader.alg };
  },

  async sign({ alg, key: k, payload }) {
    const token = await new jose.SignJWT(payload)
      .setProtectedHeader({ alg })
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(await key(alg, k, "sign"));
    return { token };
  },

  // A key pair made here: the token it signs and its public JWK, for the test to check.
  async generate({ alg, payload }) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    const token = await new jose.SignJWT(payload).setProtectedHeader({ alg }).sign(privateKey);
    return { token, jwk: await jose.exportJWK(publicKey), privateType: privateKey.type };
  },

  async hmac({ secret, data, mac }) {
    const k = await crypto.subtle.importKey("raw", text(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    const tag = await crypto.subtle.sign("HMAC", k, text(data));
    const tampered = bytes(mac);
    tampered[0] ^= 1;
    return {
      mac: hex(tag),
      verifies: await crypto.subtle.verify("HMAC", k, bytes(mac), text(data)),
      tamperedVerifies: await crypto.subtle.verify("HMAC", k, tampered, text(data)),
      algorithm: k.algorithm,
    };
  },

  async aes({ key: k, iv, aad, sealed, plain }) {
    const aesKey = await crypto.subtle.importKey("raw", bytes(k), "AES-GCM", true, ["encrypt", "decrypt"]);
    const params = { name: "AES-GCM", iv: bytes(iv), additionalData: text(aad) };
    const opened = new TextDecoder().decode(await crypto.subtle.decrypt(params, aesKey, bytes(sealed)));
    const corrupt = bytes(sealed);
    corrupt[corrupt.length - 1] ^= 1;
    return {
      opened,
      sealed: hex(await crypto.subtle.encrypt(params, aesKey, text(plain))),
      corrupt: await errorName(() => crypto.subtle.decrypt(params, aesKey, corrupt)),
      jwk: await crypto.subtle.exportKey("jwk", aesKey),
    };
  },

  async derive({ password, salt, iterations, ikm, info }) {
    const pbkdf2 = await crypto.subtle.importKey("raw", text(password), "PBKDF2", false, ["deriveBits", "deriveKey"]);
    const hkdf = await crypto.subtle.importKey("raw", bytes(ikm), "HKDF", false, ["deriveBits"]);
    const derivedKey = await crypto.subtle.deriveKey(
      { name: "PBKDF2", hash: "SHA-256", salt: text(salt), iterations },
      pbkdf2,
      { name: "AES-GCM", length: 256 },
      true,
      ["encrypt"],
    );
    return {
      pbkdf2: hex(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: text(salt), iterations }, pbkdf2, 256)),
      hkdf: hex(await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-512", salt: text(salt), info: text(info) }, hkdf, 424)),
      derivedKey: hex(await crypto.subtle.exportKey("raw", derivedKey)),
    };
  },

  // A private key imported as PKCS #8 and exported again in every format it has.
  async roundtrip({ pkcs8, algorithm, usage }) {
    const der = Uint8Array.from(atob(pkcs8), (c) => c.charCodeAt(0));
    const k = await crypto.subtle.importKey("pkcs8", der, algorithm, true, [usage]);
    const jwk = await crypto.subtle.exportKey("jwk", k);
    const again = await crypto.subtle.importKey("jwk", jwk, algorithm, true, [usage]);
    const publicJwk = { ...jwk, d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined, key_ops: undefined };
    const pub = await crypto.subtle.importKey("jwk", JSON.parse(JSON.stringify(publicJwk)), algorithm, true, []);
    return {
      jwk,
      pkcs8: btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey("pkcs8", again)))),
      spki: btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey("spki", pub)))),
      type: [k.type, pub.type],
      algorithm: k.algorithm.name,
      usages: k.usages,
      isKey: k instanceof CryptoKey,
    };
  },

  // Misuse, answered as WebCrypto answers it.
  async errors({ spki1024, limits }) {
    const hmac = await crypto.subtle.importKey("raw", text("s"), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    const signOnly = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    return {
      withoutUsage: await errorName(() => crypto.subtle.sign("HMAC", hmac, text("x"))),
      wrongAlgorithm: await errorName(() => crypto.subtle.sign("HMAC", signOnly.privateKey, text("x"))),
      notExtractable: await errorName(() => crypto.subtle.exportKey("jwk", hmac)),
      badSpki: await errorName(() => crypto.subtle.importKey("spki", new Uint8Array([1, 2, 3]), { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"])),
      badUsage: await errorName(() => crypto.subtle.importKey("raw", text("s"), { name: "HMAC", hash: "SHA-256" }, false, ["encrypt"])),
      unknown: await errorName(() => crypto.subtle.importKey("raw", text("s"), "NOPE", false, ["sign"])),
      rsa1024: await errorName(() => crypto.subtle.importKey("spki", Uint8Array.from(atob(spki1024), (c) => c.charCodeAt(0)), { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, true, ["verify"])),
      construct: await errorName(async () => new (CryptoKey as any)()),
      // workerd's name for Ed25519.
      nodeEd25519: await errorName(async () => {
        const pair = await crypto.subtle.generateKey({ name: "NODE-ED25519", namedCurve: "NODE-ED25519" } as any, false, ["sign", "verify"]);
        const signature = await crypto.subtle.sign({ name: "NODE-ED25519" } as any, (pair as CryptoKeyPair).privateKey, text("x"));
        if (!(await crypto.subtle.verify({ name: "NODE-ED25519" } as any, (pair as CryptoKeyPair).publicKey, signature, text("x")))) throw new Error("did not verify");
      }),
      // Work a native call cannot be interrupted in: refused up front (not asked of workerd,
      // which would run it).
      ...(limits && {
        hugeDerive: await errorName(async () => {
          const hkdf = await crypto.subtle.importKey("raw", text("k"), "HKDF", false, ["deriveBits"]);
          await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: text(""), info: text("") }, hkdf, 2 ** 40);
        }),
        slowPbkdf2: await errorName(async () => {
          const pbkdf2 = await crypto.subtle.importKey("raw", text("p"), "PBKDF2", false, ["deriveBits"]);
          await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: text("s"), iterations: 2_000_000 }, pbkdf2, 256 * 100);
        }),
      }),
      forgedToken: await errorName(async () => {
        const token = await new jose.SignJWT({ sub: "x" }).setProtectedHeader({ alg: "HS256" }).sign(text("one"));
        await jose.jwtVerify(token, text("two"));
      }),
    };
  },
};

export default class CryptoParty implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request): Promise<Response> {
    const job = await req.json<Job>();
    try {
      return Response.json(await jobs[job.job](job));
    } catch (e: any) {
      return Response.json({ error: `${typeof e?.code === "string" ? e.code : e?.name}: ${e?.message}` });
    }
  }
}
