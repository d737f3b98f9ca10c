//! Per-party JWT checks before the upgrade. The token comes from `?token=` or
//! `Authorization: Bearer`. No or invalid token → 401 (the body says only that; the reason
//! goes to the debug log); a valid token whose `party` or `room` claim names another room,
//! or whose bound claim is not the connection id, → 403.
//!
//! What "valid" means: the configured algorithm and key; `exp` present (unless the party
//! allows tokens without one) and not past; `nbf` not in the future; `iss` and `aud`
//! present and equal to the configured ones when configured; no `crit` header (this gateway
//! understands no JWS extensions, so RFC 7515 says refuse). 30 s of clock skew.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp`/`nbf` between the token issuer and this gateway.
pub const CLOCK_SKEW_SECS: u64 = 30;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// What a party requires of a token beyond its signature.
#[derive(Clone, Debug, Default)]
pub struct JwtRules {
    /// `iss` must be present and equal this.
    pub issuer: Option<String>,
    /// `aud` must be present and contain this.
    pub audience: Option<String>,
    /// Accept tokens without `exp` (they never expire). Off by default.
    pub allow_no_exp: bool,
    /// A claim (e.g. `sub`) that must equal the connection id (`_pk`), so one user's token
    /// cannot take another's id.
    pub bind_id_to: Option<String>,
}

/// How one party checks tokens.
#[derive(Clone)]
pub struct PartyAuth {
    key: DecodingKey,
    validation: Validation,
    bind_id_to: Option<String>,
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
    /// The reason is for logs only: clients get no parser internals.
    #[error("invalid token")]
    Invalid(String),
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("connection id does not match the token")]
    WrongId,
    #[error("bad auth config: {0}")]
    Config(String),
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongRoom | AuthError::WrongId => 403,
            AuthError::Config(_) => 500,
            _ => 401,
        }
    }
}

#[derive(Deserialize)]
struct RoomClaims {
    party: Option<String>,
    room: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl PartyAuth {
    /// `secret_or_pem`: the HS256 secret, or the PEM public key for RS256/ES256.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret_or_pem: &str,
        rules: JwtRules,
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
        if !rules.allow_no_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_aud = rules.audience.is_some();
        if let Some(a) = &rules.audience {
            validation.set_audience(&[a]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(i) = &rules.issuer {
            validation.set_issuer(&[i]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Self {
            key,
            validation,
            bind_id_to: rules.bind_id_to,
        })
    }

    /// Checks `token` for a connection or request to `party`/`room`; `conn_id` is the
    /// connection id a socket asks for (`None` for HTTP requests, which have none).
    pub fn check(
        &self,
        token: Option<&str>,
        party: &str,
        room: &str,
        conn_id: Option<&str>,
    ) -> Result<(), AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if let Some(crit) = header.crit {
            return Err(AuthError::Invalid(format!(
                "critical header extensions {crit:?} are not understood"
            )));
        }
        let data = decode::<RoomClaims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.party.as_deref().is_some_and(|p| p != party)
            || claims.room.as_deref().is_some_and(|r| r != room)
        {
            return Err(AuthError::WrongRoom);
        }
        if let (Some(claim), Some(id)) = (&self.bind_id_to, conn_id) {
            let bound = claims.rest.get(claim).and_then(|v| v.as_str());
            if bound != Some(id) {
                return Err(AuthError::WrongId);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const FUTURE: u64 = 4_000_000_000;

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn hs256(rules: JwtRules) -> PartyAuth {
        PartyAuth::new(JwtAlgorithm::HS256, "s3cret", rules).unwrap()
    }

    fn invalid(result: Result<(), AuthError>) -> bool {
        matches!(result, Err(AuthError::Invalid(_)))
    }

    #[test]
    fn hs256_accepts_rejects_and_scopes() {
        let auth = hs256(JwtRules::default());
        let ok = token("s3cret", json!({"sub": "u1", "exp": FUTURE}));
        assert_eq!(auth.check(Some(&ok), "main", "r", None), Ok(()));
        assert_eq!(auth.check(None, "main", "r", None), Err(AuthError::Missing));
        let bad = token("other", json!({"sub": "u1", "exp": FUTURE}));
        assert!(invalid(auth.check(Some(&bad), "main", "r", None)));
        let expired = token("s3cret", json!({"exp": 1000}));
        assert!(invalid(auth.check(Some(&expired), "main", "r", None)));
        let scoped = token("s3cret", json!({"room": "r", "exp": FUTURE}));
        assert_eq!(auth.check(Some(&scoped), "main", "r", None), Ok(()));
        assert_eq!(
            auth.check(Some(&scoped), "main", "other", None),
            Err(AuthError::WrongRoom)
        );
    }

    #[test]
    fn a_token_without_exp_is_refused_unless_the_party_allows_it() {
        let no_exp = token("s3cret", json!({"sub": "u1"}));
        assert!(invalid(hs256(JwtRules::default()).check(
            Some(&no_exp),
            "main",
            "r",
            None
        )));
        let lenient = hs256(JwtRules {
            allow_no_exp: true,
            ..JwtRules::default()
        });
        assert_eq!(lenient.check(Some(&no_exp), "main", "r", None), Ok(()));
    }

    #[test]
    fn configured_issuer_and_audience_are_required_not_only_compared() {
        let auth = hs256(JwtRules {
            issuer: Some("issuer-a".into()),
            audience: Some("conclave".into()),
            ..JwtRules::default()
        });
        let full = token(
            "s3cret",
            json!({"iss": "issuer-a", "aud": "conclave", "exp": FUTURE}),
        );
        assert_eq!(auth.check(Some(&full), "main", "r", None), Ok(()));
        let no_iss = token("s3cret", json!({"aud": "conclave", "exp": FUTURE}));
        assert!(invalid(auth.check(Some(&no_iss), "main", "r", None)));
        let no_aud = token("s3cret", json!({"iss": "issuer-a", "exp": FUTURE}));
        assert!(invalid(auth.check(Some(&no_aud), "main", "r", None)));
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let later = token("s3cret", json!({"nbf": FUTURE - 1, "exp": FUTURE}));
        assert!(invalid(hs256(JwtRules::default()).check(
            Some(&later),
            "main",
            "r",
            None
        )));
    }

    #[test]
    fn an_unknown_critical_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        let t = encode(
            &header,
            &json!({"exp": FUTURE, "exp-ext": 1}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(invalid(hs256(JwtRules::default()).check(
            Some(&t),
            "main",
            "r",
            None
        )));
    }

    #[test]
    fn refusals_say_nothing_of_the_parser() {
        let err = hs256(JwtRules::default())
            .check(Some("not.a.token"), "main", "r", None)
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid token");
    }

    #[test]
    fn a_bound_claim_must_be_the_connection_id() {
        let auth = hs256(JwtRules {
            bind_id_to: Some("sub".into()),
            ..JwtRules::default()
        });
        let bob = token("s3cret", json!({"sub": "bob", "exp": FUTURE}));
        assert_eq!(auth.check(Some(&bob), "main", "r", Some("bob")), Ok(()));
        assert_eq!(
            auth.check(Some(&bob), "main", "r", Some("alice")),
            Err(AuthError::WrongId)
        );
        let anonymous = token("s3cret", json!({"exp": FUTURE}));
        assert_eq!(
            auth.check(Some(&anonymous), "main", "r", Some("alice")),
            Err(AuthError::WrongId)
        );
        // HTTP requests carry no connection id.
        assert_eq!(auth.check(Some(&bob), "main", "r", None), Ok(()));
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
        let rules = JwtRules {
            issuer: Some("issuer-a".into()),
            audience: Some("conclave".into()),
            ..JwtRules::default()
        };
        let auth = PartyAuth::new(JwtAlgorithm::ES256, EC_PUBLIC, rules).unwrap();
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let sign = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
        };
        let good = sign(json!({"iss": "issuer-a", "aud": "conclave", "exp": FUTURE}));
        assert_eq!(auth.check(Some(&good), "main", "r", None), Ok(()));
        let wrong_issuer = sign(json!({"iss": "issuer-b", "aud": "conclave", "exp": FUTURE}));
        assert!(invalid(auth.check(Some(&wrong_issuer), "main", "r", None)));
        // An HS256 token cannot pass as ES256.
        let hs = token(
            "anything",
            json!({"iss": "issuer-a", "aud": "conclave", "exp": FUTURE}),
        );
        assert!(invalid(auth.check(Some(&hs), "main", "r", None)));
        assert!(matches!(
            PartyAuth::new(JwtAlgorithm::ES256, "not a pem", JwtRules::default()),
            Err(AuthError::Config(_))
        ));
    }
}
