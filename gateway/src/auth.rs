//! Per-party JWT checks before the upgrade. The token comes from `?token=` or
//! `Authorization: Bearer`. No or invalid token → 401; a valid token whose `party` or
//! `room` claim names another room → 403.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp`/`nbf` between the token issuer and this gateway.
pub const CLOCK_SKEW_SECS: u64 = 30;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// How one party checks tokens.
#[derive(Clone)]
pub struct PartyAuth {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for PartyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartyAuth")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: pass ?token= or Authorization: Bearer")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("bad auth config: {0}")]
    Config(String),
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongRoom => 403,
            AuthError::Config(_) => 500,
            _ => 401,
        }
    }
}

#[derive(Deserialize)]
struct RoomClaims {
    party: Option<String>,
    room: Option<String>,
}

impl PartyAuth {
    /// `secret_or_pem`: the HS256 secret, or the PEM public key for RS256/ES256.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret_or_pem: &str,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, AuthError> {
        let (key, alg) = match algorithm {
            JwtAlgorithm::HS256 => {
                if secret_or_pem.is_empty() {
                    return Err(AuthError::Config("HS256 secret is empty".into()));
                }
                (
                    DecodingKey::from_secret(secret_or_pem.as_bytes()),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(secret_or_pem.as_bytes())
                    .map_err(|e| AuthError::Config(e.to_string()))?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::ES256 => (
                DecodingKey::from_ec_pem(secret_or_pem.as_bytes())
                    .map_err(|e| AuthError::Config(e.to_string()))?,
                Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_aud = audience.is_some();
        if let Some(a) = audience {
            validation.set_audience(&[a]);
        }
        if let Some(i) = issuer {
            validation.set_issuer(&[i]);
        }
        Ok(Self { key, validation })
    }

    /// Checks `token` for a connection or request to `party`/`room`.
    pub fn check(&self, token: Option<&str>, party: &str, room: &str) -> Result<(), AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = decode::<RoomClaims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if data.claims.party.as_deref().is_some_and(|p| p != party)
            || data.claims.room.as_deref().is_some_and(|r| r != room)
        {
            return Err(AuthError::WrongRoom);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_accepts_rejects_and_scopes() {
        let auth = PartyAuth::new(JwtAlgorithm::HS256, "s3cret", None, None).unwrap();
        let ok = token(
            "s3cret",
            serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64}),
        );
        assert_eq!(auth.check(Some(&ok), "main", "r"), Ok(()));
        assert_eq!(auth.check(None, "main", "r"), Err(AuthError::Missing));
        let bad = token("other", serde_json::json!({"sub": "u1"}));
        assert!(matches!(
            auth.check(Some(&bad), "main", "r"),
            Err(AuthError::Invalid(_))
        ));
        let expired = token("s3cret", serde_json::json!({"exp": 1000}));
        assert!(matches!(
            auth.check(Some(&expired), "main", "r"),
            Err(AuthError::Invalid(_))
        ));
        let scoped = token("s3cret", serde_json::json!({"room": "r"}));
        assert_eq!(auth.check(Some(&scoped), "main", "r"), Ok(()));
        assert_eq!(
            auth.check(Some(&scoped), "main", "other"),
            Err(AuthError::WrongRoom)
        );
    }

    // A throwaway P-256 key pair, for this test only.
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6GefV6UE/wePB0Gq
FUcc3w9mCQf+pKAidwqT141s4Y6hRANCAAQAysZPB65rDCGKNa/sUtzhu3xLQD7E
ak9MkZ9k/7uOBiwQlxiSTarYMKx/wDfPcHYKBrmo+xuMkWwhCSC47eDS
-----END PRIVATE KEY-----
";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAMrGTweuawwhijWv7FLc4bt8S0A+
xGpPTJGfZP+7jgYsEJcYkk2q2DCsf8A3z3B2Cga5qPsbjJFsIQkguO3g0g==
-----END PUBLIC KEY-----
";

    #[test]
    fn es256_public_key_verifies_and_checks_issuer() {
        let auth = PartyAuth::new(
            JwtAlgorithm::ES256,
            EC_PUBLIC,
            Some("issuer-a"),
            Some("conclave"),
        )
        .unwrap();
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let sign = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
        };
        let good = sign(
            serde_json::json!({"iss": "issuer-a", "aud": "conclave", "exp": 4_000_000_000u64}),
        );
        assert_eq!(auth.check(Some(&good), "main", "r"), Ok(()));
        let wrong_issuer = sign(serde_json::json!({"iss": "issuer-b", "aud": "conclave"}));
        assert!(matches!(
            auth.check(Some(&wrong_issuer), "main", "r"),
            Err(AuthError::Invalid(_))
        ));
        // An HS256 token cannot pass as ES256.
        let hs = token(
            "anything",
            serde_json::json!({"iss": "issuer-a", "aud": "conclave"}),
        );
        assert!(matches!(
            auth.check(Some(&hs), "main", "r"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            PartyAuth::new(JwtAlgorithm::ES256, "not a pem", None, None),
            Err(AuthError::Config(_))
        ));
    }
}
