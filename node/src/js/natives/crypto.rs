//! What `crypto.subtle` (crypto.js) asks of Rust: parsing and encoding key formats, and
//! the signatures, MACs and ciphers themselves, all on *ring*.
//!
//! crypto.js keeps each key's material in one form per kind, whatever it was imported
//! from:
//! - a secret key (HMAC, AES): its raw bytes;
//! - RSA (kind "rsa"): PKCS #1 `RSAPublicKey` DER, and for a private key `RSAPrivateKey` DER;
//! - EC (kinds "P-256", "P-384"): the uncompressed public point, and for a private key the
//!   scalar;
//! - Ed25519 (kind "Ed25519"): the 32-byte public key, and for a private key its seed.
//!
//! Errors are DOMExceptions named as WebCrypto names them: DataError for key data that
//! does not parse, NotSupportedError for what *ring* does not do (RSA keys outside 2048 to
//! 8192 bits, or 4096 for private ones, PSS salts other than the hash's length, AES-192, IVs other than 12 bytes),
//! OperationError for a failed signature or decryption.

use super::{bytes_of, dom_exception};
use pkcs8::der::asn1::{BitStringRef, OctetStringRef, UintRef};
use pkcs8::der::{Decode, Encode};
use pkcs8::spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rquickjs::function::Opt;
use rquickjs::{ArrayBuffer, Ctx, Function, Object, Value};

type JsResult<T> = rquickjs::Result<T>;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// PBKDF2 runs on the worker thread that serves other rooms' events too, outside the
/// event's CPU budget: at most about a second of it (iterations × hash-sized blocks).
const PBKDF2_MAX_WORK: u64 = 2_000_000;

/// The most `deriveBits` gives: HKDF's limit with SHA-512 (255 blocks of 64 bytes), for
/// PBKDF2 too.
const DERIVE_MAX_BITS: usize = 255 * 64 * 8;

/// The RSA key sizes *ring* verifies with, and those it signs with.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
const RSA_PRIVATE_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

pub(super) fn install<'js>(ctx: &Ctx<'js>, n: &Object<'js>) -> JsResult<()> {
    n.set("cryptoFromSpki", Function::new(ctx.clone(), from_spki)?)?;
    n.set("cryptoFromPkcs8", Function::new(ctx.clone(), from_pkcs8)?)?;
    n.set(
        "cryptoRsaFromParts",
        Function::new(ctx.clone(), rsa_from_parts)?,
    )?;
    n.set("cryptoRsaParts", Function::new(ctx.clone(), rsa_parts)?)?;
    n.set("cryptoCheckPair", Function::new(ctx.clone(), check_pair)?)?;
    n.set("cryptoEncode", Function::new(ctx.clone(), encode)?)?;
    n.set("cryptoGenerate", Function::new(ctx.clone(), generate)?)?;
    n.set("cryptoSign", Function::new(ctx.clone(), sign)?)?;
    n.set("cryptoVerify", Function::new(ctx.clone(), verify)?)?;
    n.set("cryptoAesGcm", Function::new(ctx.clone(), aes_gcm)?)?;
    n.set("cryptoDerive", Function::new(ctx.clone(), derive)?)?;
    Ok(())
}

fn data_error(ctx: &Ctx<'_>, what: impl std::fmt::Display) -> rquickjs::Error {
    dom_exception(ctx, "DataError", &what.to_string())
}

fn not_supported(ctx: &Ctx<'_>, what: impl std::fmt::Display) -> rquickjs::Error {
    dom_exception(ctx, "NotSupportedError", &what.to_string())
}

fn operation_error(ctx: &Ctx<'_>, what: impl std::fmt::Display) -> rquickjs::Error {
    dom_exception(ctx, "OperationError", &what.to_string())
}

fn buffer<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> JsResult<ArrayBuffer<'js>> {
    ArrayBuffer::new(ctx.clone(), bytes.to_vec())
}

fn der<T: Encode>(ctx: &Ctx<'_>, value: &T) -> JsResult<Vec<u8>> {
    value
        .to_der()
        .map_err(|e| operation_error(ctx, format!("cannot encode the key: {e}")))
}

/// What a parsed key tells crypto.js: its kind, material and, for RSA, its size.
struct Parsed {
    kind: &'static str,
    public: Vec<u8>,
    private: Option<Vec<u8>>,
}

impl Parsed {
    fn into_js<'js>(self, ctx: &Ctx<'js>) -> JsResult<Object<'js>> {
        let o = Object::new(ctx.clone())?;
        o.set("kind", self.kind)?;
        if self.kind == "rsa" {
            let (bits, exponent) = rsa_size(ctx, &self.public)?;
            o.set("bits", bits)?;
            o.set("exponent", buffer(ctx, &exponent)?)?;
        }
        o.set("public", buffer(ctx, &self.public)?)?;
        if let Some(private) = &self.private {
            o.set("private", buffer(ctx, private)?)?;
        }
        Ok(o)
    }
}

fn bit_length(magnitude: &[u8]) -> usize {
    match magnitude.iter().position(|b| *b != 0) {
        Some(i) => (magnitude.len() - i) * 8 - magnitude[i].leading_zeros() as usize,
        None => 0,
    }
}

/// The modulus length in bits and the public exponent of an `RSAPublicKey`, refusing
/// sizes *ring* cannot use.
fn rsa_size(ctx: &Ctx<'_>, public: &[u8]) -> JsResult<(usize, Vec<u8>)> {
    let key = pkcs1::RsaPublicKey::from_der(public).map_err(|e| data_error(ctx, e))?;
    let bits = bit_length(key.modulus.as_bytes());
    if !RSA_BITS.contains(&bits) {
        return Err(not_supported(
            ctx,
            format!("RSA keys of {bits} bits are not supported (2048 to 8192 are)"),
        ));
    }
    Ok((bits, key.public_exponent.as_bytes().to_vec()))
}

fn curve_of(ctx: &Ctx<'_>, algorithm: &AlgorithmIdentifierRef<'_>) -> JsResult<&'static str> {
    match algorithm.parameters_oid() {
        Ok(oid) if oid == P256 => Ok("P-256"),
        Ok(oid) if oid == P384 => Ok("P-384"),
        Ok(oid) => Err(not_supported(
            ctx,
            format!("the curve {oid} is not supported"),
        )),
        Err(e) => Err(data_error(ctx, format!("the EC key names no curve: {e}"))),
    }
}

fn point_len(kind: &str) -> usize {
    if kind == "P-256" {
        65
    } else {
        97
    }
}

fn ecdsa_signing(kind: &str) -> &'static signature::EcdsaSigningAlgorithm {
    if kind == "P-256" {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    } else {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    }
}

/// `importKey("spki", …)`.
fn from_spki<'js>(ctx: Ctx<'js>, data: Value<'js>) -> JsResult<Object<'js>> {
    let bytes = bytes_of(&ctx, &data)?;
    let info = SubjectPublicKeyInfoRef::try_from(bytes.as_slice())
        .map_err(|e| data_error(&ctx, format!("not a SubjectPublicKeyInfo: {e}")))?;
    let key = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| data_error(&ctx, "the public key is not whole bytes"))?
        .to_vec();
    let kind = match info.algorithm.oid {
        RSA_ENCRYPTION => "rsa",
        EC_PUBLIC_KEY => {
            let kind = curve_of(&ctx, &info.algorithm)?;
            if key.len() != point_len(kind) || key[0] != 4 {
                return Err(not_supported(
                    &ctx,
                    "only uncompressed EC points are supported",
                ));
            }
            kind
        }
        ED25519 if key.len() == 32 => "Ed25519",
        ED25519 => return Err(data_error(&ctx, "an Ed25519 public key is 32 bytes")),
        oid => return Err(not_supported(&ctx, format!("keys of type {oid}"))),
    };
    Parsed {
        kind,
        public: key,
        private: None,
    }
    .into_js(&ctx)
}

/// `importKey("pkcs8", …)`: the key is checked by *ring* as it will be used.
fn from_pkcs8<'js>(ctx: Ctx<'js>, data: Value<'js>) -> JsResult<Object<'js>> {
    let bytes = bytes_of(&ctx, &data)?;
    let info = pkcs8::PrivateKeyInfo::try_from(bytes.as_slice())
        .map_err(|e| data_error(&ctx, format!("not a PKCS #8 PrivateKeyInfo: {e}")))?;
    let parsed = match info.algorithm.oid {
        RSA_ENCRYPTION => {
            let pair = rsa_private(&ctx, info.private_key)?;
            Parsed {
                kind: "rsa",
                public: pair.public().as_ref().to_vec(),
                private: Some(info.private_key.to_vec()),
            }
        }
        EC_PUBLIC_KEY => {
            let kind = curve_of(&ctx, &info.algorithm)?;
            let ec = sec1::EcPrivateKey::try_from(info.private_key)
                .map_err(|e| data_error(&ctx, format!("not an ECPrivateKey: {e}")))?;
            let public = ec
                .public_key
                .or(info.public_key)
                .ok_or_else(|| not_supported(&ctx, "EC private keys without their public key"))?;
            let public = public.to_vec();
            ec_pair(&ctx, kind, ec.private_key, &public)?;
            Parsed {
                kind,
                public,
                private: Some(ec.private_key.to_vec()),
            }
        }
        ED25519 => {
            let seed = OctetStringRef::from_der(info.private_key)
                .map_err(|e| data_error(&ctx, format!("not an Ed25519 private key: {e}")))?;
            let pair = ed25519_pair(&ctx, seed.as_bytes())?;
            Parsed {
                kind: "Ed25519",
                public: pair.public_key().as_ref().to_vec(),
                private: Some(seed.as_bytes().to_vec()),
            }
        }
        oid => return Err(not_supported(&ctx, format!("keys of type {oid}"))),
    };
    parsed.into_js(&ctx)
}

/// An RSA private key as *ring* signs with it: 2048 to 4096 bits, an exponent of at least
/// 65537.
fn rsa_private(ctx: &Ctx<'_>, der: &[u8]) -> JsResult<RsaKeyPair> {
    let key = pkcs1::RsaPrivateKey::from_der(der)
        .map_err(|e| data_error(ctx, format!("not an RSAPrivateKey: {e}")))?;
    let bits = bit_length(key.modulus.as_bytes());
    if !RSA_PRIVATE_BITS.contains(&bits) {
        return Err(not_supported(
            ctx,
            format!("RSA private keys of {bits} bits are not supported (2048 to 4096 are)"),
        ));
    }
    RsaKeyPair::from_der(der).map_err(|e| {
        data_error(
            ctx,
            format!("the RSA key was rejected ({e}; its exponent must be at least 65537)"),
        )
    })
}

fn ec_pair(ctx: &Ctx<'_>, kind: &str, private: &[u8], public: &[u8]) -> JsResult<EcdsaKeyPair> {
    EcdsaKeyPair::from_private_key_and_public_key(
        ecdsa_signing(kind),
        private,
        public,
        &SystemRandom::new(),
    )
    .map_err(|e| data_error(ctx, format!("the {kind} key pair was rejected: {e}")))
}

fn ed25519_pair(ctx: &Ctx<'_>, seed: &[u8]) -> JsResult<Ed25519KeyPair> {
    Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|e| data_error(ctx, format!("the Ed25519 key was rejected: {e}")))
}

/// A JWK's RSA members, in the order n, e (public) or n, e, d, p, q, dp, dq, qi (private).
fn rsa_from_parts<'js>(ctx: Ctx<'js>, parts: Vec<Value<'js>>) -> JsResult<Object<'js>> {
    let parts = parts
        .iter()
        .map(|p| bytes_of(&ctx, p))
        .collect::<JsResult<Vec<_>>>()?;
    let uint = |i: usize| {
        UintRef::new(&parts[i]).map_err(|e| data_error(&ctx, format!("a bad RSA member: {e}")))
    };
    let public = der(
        &ctx,
        &pkcs1::RsaPublicKey {
            modulus: uint(0)?,
            public_exponent: uint(1)?,
        },
    )?;
    let private = match parts.len() {
        2 => None,
        8 => {
            let key = pkcs1::RsaPrivateKey {
                modulus: uint(0)?,
                public_exponent: uint(1)?,
                private_exponent: uint(2)?,
                prime1: uint(3)?,
                prime2: uint(4)?,
                exponent1: uint(5)?,
                exponent2: uint(6)?,
                coefficient: uint(7)?,
                other_prime_infos: None,
            };
            let private = der(&ctx, &key)?;
            rsa_private(&ctx, &private)?;
            Some(private)
        }
        _ => return Err(data_error(&ctx, "an RSA key has 2 or 8 members")),
    };
    Parsed {
        kind: "rsa",
        public,
        private,
    }
    .into_js(&ctx)
}

/// The JWK members of an RSA key, as `rsa_from_parts` takes them.
fn rsa_parts<'js>(
    ctx: Ctx<'js>,
    key: Value<'js>,
    private: bool,
) -> JsResult<Vec<ArrayBuffer<'js>>> {
    let bytes = bytes_of(&ctx, &key)?;
    let members: Vec<&[u8]> = if private {
        let k = pkcs1::RsaPrivateKey::from_der(&bytes).map_err(|e| data_error(&ctx, e))?;
        [
            k.modulus,
            k.public_exponent,
            k.private_exponent,
            k.prime1,
            k.prime2,
            k.exponent1,
            k.exponent2,
            k.coefficient,
        ]
        .iter()
        .map(|u| u.as_bytes())
        .collect()
    } else {
        let k = pkcs1::RsaPublicKey::from_der(&bytes).map_err(|e| data_error(&ctx, e))?;
        vec![k.modulus.as_bytes(), k.public_exponent.as_bytes()]
    };
    members.iter().map(|m| buffer(&ctx, m)).collect()
}

/// Checks a JWK's EC or Ed25519 key: a private key against its public one (Ed25519: the
/// public key derived from the seed is returned, for the JWK's `x` to be compared).
fn check_pair<'js>(
    ctx: Ctx<'js>,
    kind: String,
    public: Value<'js>,
    private: Opt<Value<'js>>,
) -> JsResult<Option<ArrayBuffer<'js>>> {
    let public = bytes_of(&ctx, &public)?;
    let private = private.0.map(|p| bytes_of(&ctx, &p)).transpose()?;
    match (kind.as_str(), private) {
        ("P-256" | "P-384", None) => {
            if public.len() != point_len(&kind) || public[0] != 4 {
                return Err(data_error(&ctx, format!("not a {kind} point")));
            }
            Ok(None)
        }
        ("P-256" | "P-384", Some(private)) => {
            ec_pair(&ctx, &kind, &private, &public)?;
            Ok(None)
        }
        ("Ed25519", None) if public.len() == 32 => Ok(None),
        ("Ed25519", Some(seed)) => {
            let pair = ed25519_pair(&ctx, &seed)?;
            Ok(Some(buffer(&ctx, pair.public_key().as_ref())?))
        }
        _ => Err(data_error(&ctx, format!("not a {kind} key"))),
    }
}

/// `exportKey("spki" | "pkcs8", …)`.
fn encode<'js>(
    ctx: Ctx<'js>,
    kind: String,
    format: String,
    public: Value<'js>,
    private: Opt<Value<'js>>,
) -> JsResult<ArrayBuffer<'js>> {
    let public = bytes_of(&ctx, &public)?;
    let null = pkcs8::der::asn1::AnyRef::NULL;
    let curve;
    let algorithm = match kind.as_str() {
        "rsa" => AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(null),
        },
        "P-256" | "P-384" => {
            curve = if kind == "P-256" { P256 } else { P384 };
            AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY,
                parameters: Some((&curve).into()),
            }
        }
        "Ed25519" => AlgorithmIdentifierRef {
            oid: ED25519,
            parameters: None,
        },
        other => return Err(not_supported(&ctx, format!("{other} keys in {format}"))),
    };
    let out = match (format.as_str(), private.0) {
        ("spki", _) => der(
            &ctx,
            &SubjectPublicKeyInfoRef {
                algorithm,
                subject_public_key: BitStringRef::from_bytes(&public)
                    .map_err(|e| operation_error(&ctx, e))?,
            },
        )?,
        ("pkcs8", Some(private)) => {
            let private = bytes_of(&ctx, &private)?;
            let inner = match kind.as_str() {
                "rsa" => private,
                "Ed25519" => der(
                    &ctx,
                    &OctetStringRef::new(&private).map_err(|e| operation_error(&ctx, e))?,
                )?,
                _ => der(
                    &ctx,
                    &sec1::EcPrivateKey {
                        private_key: &private,
                        parameters: None,
                        public_key: Some(&public),
                    },
                )?,
            };
            der(&ctx, &pkcs8::PrivateKeyInfo::new(algorithm, &inner))?
        }
        _ => return Err(not_supported(&ctx, format!("the format {format}"))),
    };
    ArrayBuffer::new(ctx, out)
}

/// `generateKey` for EC and Ed25519 key pairs: `{ public, private }`. (*ring* does not
/// generate RSA keys.)
fn generate<'js>(ctx: Ctx<'js>, kind: String) -> JsResult<Object<'js>> {
    let rng = SystemRandom::new();
    let failed = |e: ring::error::Unspecified| operation_error(&ctx, format!("{e}"));
    let parsed = match kind.as_str() {
        "P-256" | "P-384" => {
            let doc = EcdsaKeyPair::generate_pkcs8(ecdsa_signing(&kind), &rng).map_err(failed)?;
            let pair = EcdsaKeyPair::from_pkcs8(ecdsa_signing(&kind), doc.as_ref(), &rng)
                .map_err(|e| operation_error(&ctx, e))?;
            let info = pkcs8::PrivateKeyInfo::try_from(doc.as_ref())
                .map_err(|e| operation_error(&ctx, e))?;
            let ec = sec1::EcPrivateKey::try_from(info.private_key)
                .map_err(|e| operation_error(&ctx, e))?;
            Parsed {
                kind: if kind == "P-256" { "P-256" } else { "P-384" },
                public: pair.public_key().as_ref().to_vec(),
                private: Some(ec.private_key.to_vec()),
            }
        }
        "Ed25519" => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| operation_error(&ctx, e))?;
            let pair = ed25519_pair(&ctx, &seed)?;
            Parsed {
                kind: "Ed25519",
                public: pair.public_key().as_ref().to_vec(),
                private: Some(seed.to_vec()),
            }
        }
        other => return Err(not_supported(&ctx, format!("generating {other} keys"))),
    };
    parsed.into_js(&ctx)
}

fn hmac_algorithm(ctx: &Ctx<'_>, hash: &str) -> JsResult<ring::hmac::Algorithm> {
    Ok(match hash {
        "SHA-1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "SHA-256" => ring::hmac::HMAC_SHA256,
        "SHA-384" => ring::hmac::HMAC_SHA384,
        "SHA-512" => ring::hmac::HMAC_SHA512,
        other => return Err(not_supported(ctx, format!("the hash {other}"))),
    })
}

fn hash_len(hash: &str) -> u32 {
    match hash {
        "SHA-1" => 20,
        "SHA-256" => 32,
        "SHA-384" => 48,
        _ => 64,
    }
}

/// A sign or verify request from crypto.js: `{ scheme, hash, kind, saltLength }`.
struct Scheme {
    scheme: String,
    hash: String,
    kind: String,
}

impl Scheme {
    fn read(ctx: &Ctx<'_>, o: &Object<'_>) -> JsResult<Self> {
        let s = Self {
            scheme: o.get("scheme")?,
            hash: o.get::<_, Option<String>>("hash")?.unwrap_or_default(),
            kind: o.get::<_, Option<String>>("kind")?.unwrap_or_default(),
        };
        if s.scheme == "RSA-PSS" {
            let salt: u32 = o.get("saltLength")?;
            if salt != hash_len(&s.hash) {
                return Err(not_supported(
                    ctx,
                    format!(
                        "RSA-PSS with {} needs a saltLength of {}",
                        s.hash,
                        hash_len(&s.hash)
                    ),
                ));
            }
        }
        Ok(s)
    }

    fn rsa_signing(&self, ctx: &Ctx<'_>) -> JsResult<&'static dyn signature::RsaEncoding> {
        Ok(match (self.scheme.as_str(), self.hash.as_str()) {
            ("RSASSA-PKCS1-v1_5", "SHA-256") => &signature::RSA_PKCS1_SHA256,
            ("RSASSA-PKCS1-v1_5", "SHA-384") => &signature::RSA_PKCS1_SHA384,
            ("RSASSA-PKCS1-v1_5", "SHA-512") => &signature::RSA_PKCS1_SHA512,
            ("RSA-PSS", "SHA-256") => &signature::RSA_PSS_SHA256,
            ("RSA-PSS", "SHA-384") => &signature::RSA_PSS_SHA384,
            ("RSA-PSS", "SHA-512") => &signature::RSA_PSS_SHA512,
            (scheme, hash) => return Err(not_supported(ctx, format!("{scheme} with {hash}"))),
        })
    }

    fn verification(
        &self,
        ctx: &Ctx<'_>,
    ) -> JsResult<&'static dyn signature::VerificationAlgorithm> {
        Ok(
            match (self.scheme.as_str(), self.hash.as_str(), self.kind.as_str()) {
                ("RSASSA-PKCS1-v1_5", "SHA-1", _) => {
                    &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
                }
                ("RSASSA-PKCS1-v1_5", "SHA-256", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
                ("RSASSA-PKCS1-v1_5", "SHA-384", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
                ("RSASSA-PKCS1-v1_5", "SHA-512", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
                ("RSA-PSS", "SHA-256", _) => &signature::RSA_PSS_2048_8192_SHA256,
                ("RSA-PSS", "SHA-384", _) => &signature::RSA_PSS_2048_8192_SHA384,
                ("RSA-PSS", "SHA-512", _) => &signature::RSA_PSS_2048_8192_SHA512,
                ("ECDSA", "SHA-256", "P-256") => &signature::ECDSA_P256_SHA256_FIXED,
                ("ECDSA", "SHA-384", "P-384") => &signature::ECDSA_P384_SHA384_FIXED,
                ("Ed25519", _, _) => &signature::ED25519,
                (scheme, hash, kind) => {
                    return Err(not_supported(
                        ctx,
                        format!("{scheme} with {hash} on {kind} keys"),
                    ))
                }
            },
        )
    }
}

/// `sign`: `key` is the secret (HMAC) or the private material, `public` the public one.
fn sign<'js>(
    ctx: Ctx<'js>,
    op: Object<'js>,
    key: Value<'js>,
    public: Value<'js>,
    data: Value<'js>,
) -> JsResult<ArrayBuffer<'js>> {
    let s = Scheme::read(&ctx, &op)?;
    let key = bytes_of(&ctx, &key)?;
    let data = bytes_of(&ctx, &data)?;
    let rng = SystemRandom::new();
    let signature = match s.scheme.as_str() {
        "HMAC" => {
            let key = ring::hmac::Key::new(hmac_algorithm(&ctx, &s.hash)?, &key);
            ring::hmac::sign(&key, &data).as_ref().to_vec()
        }
        "RSASSA-PKCS1-v1_5" | "RSA-PSS" => {
            let padding = s.rsa_signing(&ctx)?;
            let pair = rsa_private(&ctx, &key)?;
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &rng, &data, &mut out)
                .map_err(|e| operation_error(&ctx, e))?;
            out
        }
        "ECDSA" => {
            s.verification(&ctx)?; // the hash must be the curve's
            let public = bytes_of(&ctx, &public)?;
            let pair = ec_pair(&ctx, &s.kind, &key, &public)?;
            pair.sign(&rng, &data)
                .map_err(|e| operation_error(&ctx, e))?
                .as_ref()
                .to_vec()
        }
        "Ed25519" => ed25519_pair(&ctx, &key)?.sign(&data).as_ref().to_vec(),
        other => return Err(not_supported(&ctx, format!("signing with {other}"))),
    };
    ArrayBuffer::new(ctx, signature)
}

/// `verify`: `key` is the secret (HMAC) or the public material.
fn verify<'js>(
    ctx: Ctx<'js>,
    op: Object<'js>,
    key: Value<'js>,
    signature: Value<'js>,
    data: Value<'js>,
) -> JsResult<bool> {
    let s = Scheme::read(&ctx, &op)?;
    let key = bytes_of(&ctx, &key)?;
    let signature = bytes_of(&ctx, &signature)?;
    let data = bytes_of(&ctx, &data)?;
    Ok(match s.scheme.as_str() {
        "HMAC" => {
            let key = ring::hmac::Key::new(hmac_algorithm(&ctx, &s.hash)?, &key);
            ring::hmac::verify(&key, &data, &signature).is_ok()
        }
        _ => signature::UnparsedPublicKey::new(s.verification(&ctx)?, &key)
            .verify(&data, &signature)
            .is_ok(),
    })
}

/// AES-GCM with a 12-byte IV and a 128-bit tag (appended to the ciphertext).
fn aes_gcm<'js>(
    ctx: Ctx<'js>,
    encrypt: bool,
    key: Value<'js>,
    iv: Value<'js>,
    aad: Value<'js>,
    data: Value<'js>,
) -> JsResult<ArrayBuffer<'js>> {
    use ring::aead;
    let key = bytes_of(&ctx, &key)?;
    let iv = bytes_of(&ctx, &iv)?;
    let aad = bytes_of(&ctx, &aad)?;
    let mut data = bytes_of(&ctx, &data)?;
    let algorithm = match key.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => {
            return Err(not_supported(
                &ctx,
                format!("AES-GCM keys of {} bits", n * 8),
            ))
        }
    };
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(algorithm, &key).map_err(|e| operation_error(&ctx, e))?,
    );
    let nonce = aead::Nonce::try_assume_unique_for_key(&iv)
        .map_err(|_| not_supported(&ctx, "AES-GCM IVs other than 12 bytes"))?;
    if encrypt {
        key.seal_in_place_append_tag(nonce, aead::Aad::from(&aad), &mut data)
            .map_err(|e| operation_error(&ctx, e))?;
        ArrayBuffer::new(ctx, data)
    } else {
        let plain = key
            .open_in_place(nonce, aead::Aad::from(&aad), &mut data)
            .map_err(|_| operation_error(&ctx, "the data could not be decrypted"))?;
        buffer(&ctx, plain)
    }
}

/// `deriveBits` with PBKDF2 (`extra` the iterations) or HKDF (`extra` the info bytes).
fn derive<'js>(
    ctx: Ctx<'js>,
    op: Object<'js>,
    secret: Value<'js>,
    salt: Value<'js>,
    extra: Value<'js>,
    bits: usize,
) -> JsResult<ArrayBuffer<'js>> {
    let scheme: String = op.get("scheme")?;
    let hash: String = op.get("hash")?;
    if bits == 0 || !bits.is_multiple_of(8) || bits > DERIVE_MAX_BITS {
        return Err(operation_error(
            &ctx,
            format!("derive a multiple of 8 bits, at most {DERIVE_MAX_BITS}, not {bits}"),
        ));
    }
    let secret = bytes_of(&ctx, &secret)?;
    let salt = bytes_of(&ctx, &salt)?;
    let mut out = vec![0u8; bits / 8];
    match scheme.as_str() {
        "PBKDF2" => {
            let algorithm = match hash.as_str() {
                "SHA-1" => ring::pbkdf2::PBKDF2_HMAC_SHA1,
                "SHA-256" => ring::pbkdf2::PBKDF2_HMAC_SHA256,
                "SHA-384" => ring::pbkdf2::PBKDF2_HMAC_SHA384,
                "SHA-512" => ring::pbkdf2::PBKDF2_HMAC_SHA512,
                other => return Err(not_supported(&ctx, format!("the hash {other}"))),
            };
            let iterations = extra
                .as_number()
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= u32::MAX as f64)
                .and_then(|n| std::num::NonZeroU32::new(n as u32))
                .ok_or_else(|| operation_error(&ctx, "iterations must be a positive integer"))?;
            // PBKDF2 runs every iteration once per hash-sized block of output.
            let blocks = out.len().div_ceil(hash_len(&hash) as usize) as u64;
            if u64::from(iterations.get()) * blocks > PBKDF2_MAX_WORK {
                return Err(not_supported(
                    &ctx,
                    format!(
                        "PBKDF2 of more than {PBKDF2_MAX_WORK} iterations × hash-sized blocks of output"
                    ),
                ));
            }
            ring::pbkdf2::derive(algorithm, iterations, &salt, &secret, &mut out);
        }
        "HKDF" => {
            let algorithm = match hash.as_str() {
                "SHA-1" => ring::hkdf::HKDF_SHA1_FOR_LEGACY_USE_ONLY,
                "SHA-256" => ring::hkdf::HKDF_SHA256,
                "SHA-384" => ring::hkdf::HKDF_SHA384,
                "SHA-512" => ring::hkdf::HKDF_SHA512,
                other => return Err(not_supported(&ctx, format!("the hash {other}"))),
            };
            struct Len(usize);
            impl ring::hkdf::KeyType for Len {
                fn len(&self) -> usize {
                    self.0
                }
            }
            let info = bytes_of(&ctx, &extra)?;
            let too_long = |_| operation_error(&ctx, "too many bits for HKDF with this hash");
            ring::hkdf::Salt::new(algorithm, &salt)
                .extract(&secret)
                .expand(&[&info], Len(out.len()))
                .map_err(too_long)?
                .fill(&mut out)
                .map_err(too_long)?;
        }
        other => return Err(not_supported(&ctx, format!("deriving with {other}"))),
    }
    ArrayBuffer::new(ctx, out)
}

#[cfg(test)]
mod tests {
    use super::bit_length;

    #[test]
    fn bit_lengths_skip_leading_zero_bits() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0xff]), 9);
        assert_eq!(bit_length(&[0, 0]), 0);
    }
}
