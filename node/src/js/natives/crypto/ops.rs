//! What keys do: MACs, signatures, AES-GCM and key derivation.

use super::keys::{ec_pair, ed25519_pair, rsa_private};
use super::*;

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
pub(super) fn sign<'js>(
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
pub(super) fn verify<'js>(
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
pub(super) fn aes_gcm<'js>(
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
pub(super) fn derive<'js>(
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
