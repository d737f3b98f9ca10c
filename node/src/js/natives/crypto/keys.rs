//! Keys: parsing the formats WebCrypto imports (SPKI, PKCS #8, JWK members), encoding the
//! ones it exports, and generating pairs, into the forms crypto.js keeps.

use super::*;

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

pub(super) fn point_len(kind: &str) -> usize {
    if kind == "P-256" {
        65
    } else {
        97
    }
}

pub(super) fn ecdsa_signing(kind: &str) -> &'static signature::EcdsaSigningAlgorithm {
    if kind == "P-256" {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    } else {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    }
}

/// `importKey("spki", …)`.
pub(super) fn from_spki<'js>(ctx: Ctx<'js>, data: Value<'js>) -> JsResult<Object<'js>> {
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
pub(super) fn from_pkcs8<'js>(ctx: Ctx<'js>, data: Value<'js>) -> JsResult<Object<'js>> {
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
pub(super) fn rsa_private(ctx: &Ctx<'_>, der: &[u8]) -> JsResult<RsaKeyPair> {
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

pub(super) fn ec_pair(
    ctx: &Ctx<'_>,
    kind: &str,
    private: &[u8],
    public: &[u8],
) -> JsResult<EcdsaKeyPair> {
    EcdsaKeyPair::from_private_key_and_public_key(
        ecdsa_signing(kind),
        private,
        public,
        &SystemRandom::new(),
    )
    .map_err(|e| data_error(ctx, format!("the {kind} key pair was rejected: {e}")))
}

pub(super) fn ed25519_pair(ctx: &Ctx<'_>, seed: &[u8]) -> JsResult<Ed25519KeyPair> {
    Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|e| data_error(ctx, format!("the Ed25519 key was rejected: {e}")))
}

/// A JWK's RSA members, in the order n, e (public) or n, e, d, p, q, dp, dq, qi (private).
pub(super) fn rsa_from_parts<'js>(ctx: Ctx<'js>, parts: Vec<Value<'js>>) -> JsResult<Object<'js>> {
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
pub(super) fn rsa_parts<'js>(
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
pub(super) fn check_pair<'js>(
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
pub(super) fn encode<'js>(
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
pub(super) fn generate<'js>(ctx: Ctx<'js>, kind: String) -> JsResult<Object<'js>> {
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
