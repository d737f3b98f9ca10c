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

mod keys;
mod ops;

use super::{bytes_of, dom_exception};
use keys::{check_pair, encode, from_pkcs8, from_spki, generate, rsa_from_parts, rsa_parts};
use ops::{aes_gcm, derive, sign, verify};
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
