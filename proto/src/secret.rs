//! The cluster secret: a key every role of one cluster shares, so that only its roles can
//! speak its internal protocols (the relay, placement's ring feed) and write what placement
//! believes (node heartbeats and rings in Redis). It is never sent: a caller proves it
//! knows the secret with an HMAC-SHA256 over the callee's name, the time and a nonce, and
//! Redis entries carry an HMAC over their content.
//!
//! Without TLS this authenticates the cluster's roles to each other but does not hide what
//! they say from someone who can watch the network: use TLS between hosts you do not trust
//! (docs/operations.md).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// gRPC metadata key of a caller's proof.
pub const PROOF_HEADER: &str = "x-conclave-proof";
/// How far a proof's clock may be from the callee's.
pub const PROOF_WINDOW: Duration = Duration::from_secs(60);
/// The shortest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the cluster secret must be at least {MIN_SECRET_BYTES} bytes (after trimming whitespace)")]
pub struct SecretTooShort;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterSecret {
    /// A secret from its text (surrounding whitespace, e.g. a file's newline, is ignored).
    pub fn new(text: &str) -> Result<Self, SecretTooShort> {
        let bytes = text.trim().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort);
        }
        Ok(Self(bytes.into()))
    }

    fn mac(&self, context: &str, parts: &[impl AsRef<[u8]>]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(context.as_bytes());
        for part in parts {
            let part = part.as_ref();
            // Length-prefixed, so parts cannot run into each other.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// An HMAC of `parts` for `context` (what the signed thing is), base64url.
    pub fn sign(&self, context: &str, parts: &[impl AsRef<[u8]>]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(context, parts).finalize().into_bytes())
    }

    /// Whether `signature` is [`sign`](Self::sign)'s for these parts (constant time).
    pub fn verify(&self, context: &str, parts: &[impl AsRef<[u8]>], signature: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        self.mac(context, parts).verify_slice(&bytes).is_ok()
    }

    /// A proof for one call to `callee` (a node's id, or "placement"): time, nonce, HMAC.
    pub fn proof(&self, callee: &str) -> String {
        let mut nonce = [0u8; 12];
        let _ = getrandom::fill(&mut nonce);
        let (time, nonce) = (now_ms().to_string(), URL_SAFE_NO_PAD.encode(nonce));
        let sig = self.sign(
            "call",
            &[callee.as_bytes(), time.as_bytes(), nonce.as_bytes()],
        );
        format!("{time}.{nonce}.{sig}")
    }

    /// Whether `proof` is a fresh proof of this secret for a call to `callee`.
    pub fn check_proof(&self, callee: &str, proof: &str) -> bool {
        let mut parts = proof.splitn(3, '.');
        let (Some(time), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(at) = time.parse::<u64>() else {
            return false;
        };
        if now_ms().abs_diff(at) > PROOF_WINDOW.as_millis() as u64 {
            return false;
        }
        self.verify(
            "call",
            &[callee.as_bytes(), time.as_bytes(), nonce.as_bytes()],
            sig,
        )
    }
}

/// Checks a call's proof on the server side: a tonic interceptor for `callee`, refusing
/// calls without a valid proof (`Unauthenticated`) when a secret is set.
pub fn require_proof(
    secret: Option<ClusterSecret>,
    callee: String,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let Some(secret) = &secret else {
            return Ok(req);
        };
        let proof = req
            .metadata()
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok());
        match proof {
            Some(p) if secret.check_proof(&callee, p) => Ok(req),
            _ => Err(tonic::Status::unauthenticated(
                "not a member of this cluster (no valid cluster-secret proof)",
            )),
        }
    }
}

/// Adds a call's proof on the client side: a tonic interceptor for calls to `callee`.
pub fn attach_proof(
    secret: Option<ClusterSecret>,
    callee: String,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut req: tonic::Request<()>| {
        if let Some(secret) = &secret {
            let proof = secret.proof(&callee);
            if let Ok(value) = proof.parse() {
                req.metadata_mut().insert(PROOF_HEADER, value);
            }
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s).unwrap()
    }

    #[test]
    fn a_proof_holds_for_its_callee_and_secret_only() {
        let s = secret("0123456789abcdef-cluster");
        let proof = s.proof("a");
        assert!(s.check_proof("a", &proof));
        assert!(!s.check_proof("b", &proof), "another node");
        assert!(!secret("another-cluster-secret").check_proof("a", &proof));
        assert!(!s.check_proof("a", "garbage"));
        let old = now_ms() - 120_000;
        let sig = s.sign("call", &[b"a", old.to_string().as_bytes(), b"n"]);
        assert!(!s.check_proof("a", &format!("{old}.n.{sig}")), "too old");
    }

    #[test]
    fn signatures_cover_every_part_and_its_boundaries() {
        let s = secret("0123456789abcdef-cluster");
        let sig = s.sign("beat", &[&b"ab"[..], b"c"]);
        assert!(s.verify("beat", &[&b"ab"[..], b"c"], &sig));
        assert!(!s.verify("beat", &[&b"a"[..], b"bc"], &sig));
        assert!(!s.verify("ring", &[&b"ab"[..], b"c"], &sig));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(ClusterSecret::new("  short \n").err(), Some(SecretTooShort));
    }
}
