//! Access and MFA-pending tokens: JWTs signed with Ed25519 (`alg: EdDSA`).
//!
//! Verification is strict and ordered: the header must name `EdDSA`, the expected `typ` and a
//! known `kid`; the signature is checked before any claim is read; then `iss`, `aud` and `exp`
//! (with the configured leeway). Nothing in the header other than `kid` picks a key, so an
//! embedded `jwk`, a `jku` or an `alg: none` can never steer verification.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::ids::{SessionId, TenantId, TokenId, UserId};
use super::secrets::sha256;
use super::time::Timestamp;

/// `typ` of a full access token.
pub const TYP_ACCESS: &str = "at+jwt";
/// `typ` of a token that only the MFA challenge accepts.
pub const TYP_MFA_PENDING: &str = "mfa+jwt";

/// The claims bp-auth issues. `sid` is absent from MFA-pending tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub tid: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionId>,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: TokenId,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Claims as received: `aud` may be a string or a list.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    aud: Audience,
    sub: UserId,
    tid: TenantId,
    #[serde(default)]
    sid: Option<SessionId>,
    role: String,
    iat: i64,
    exp: i64,
    jti: TokenId,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, or a claim that does not match.
    #[error("invalid token")]
    Invalid,
    /// Genuine, but past `exp` plus the leeway.
    #[error("token expired")]
    Expired,
}

impl From<TokenError> for super::DomainError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid => Self::InvalidToken,
            TokenError::Expired => Self::TokenExpired,
        }
    }
}

/// One Ed25519 key pair and its id.
#[derive(Clone)]
pub struct KeyPair {
    pub kid: String,
    pub signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A key pair from its 32-byte seed, with the RFC 7638 thumbprint of its public key as `kid`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let kid = thumbprint(&signing.verifying_key());
        Self { kid, signing }
    }

    /// The public half as a JWK, for the JWKS document.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes()),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }
}

/// RFC 7638 JWK thumbprint (members in lexicographic order, no spaces).
fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()))
}

/// Signs with the active key and verifies with every published one.
#[derive(Debug)]
pub struct Keyring {
    active: KeyPair,
    published: Vec<KeyPair>,
    verifying: HashMap<String, VerifyingKey>,
    pub issuer: String,
    pub audience: String,
    pub leeway: u64,
}

impl Keyring {
    /// `published` must include `active`; others are older keys whose tokens may still be live.
    pub fn new(
        active: KeyPair,
        mut published: Vec<KeyPair>,
        issuer: String,
        audience: String,
        leeway: u64,
    ) -> Self {
        if !published.iter().any(|k| k.kid == active.kid) {
            published.insert(0, active.clone());
        }
        let verifying = published
            .iter()
            .map(|k| (k.kid.clone(), k.signing.verifying_key()))
            .collect();
        Self {
            active,
            published,
            verifying,
            issuer,
            audience,
            leeway,
        }
    }

    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// `{"keys": [...]}` with every published key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.published.iter().map(KeyPair::jwk).collect::<Vec<_>>() })
    }

    /// Claims for a token issued now, lasting `ttl` seconds.
    #[allow(clippy::too_many_arguments)]
    pub fn claims(
        &self,
        sub: UserId,
        tid: TenantId,
        sid: Option<SessionId>,
        role: &str,
        now: Timestamp,
        ttl: u64,
    ) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            tid,
            sid,
            role: role.to_string(),
            iat: now.0,
            exp: now.plus(ttl).0,
            jti: TokenId::generate(),
        }
    }

    /// Serialises and signs `claims` with the active key.
    pub fn sign(&self, claims: &Claims, typ: &str) -> String {
        let header = Header {
            alg: "EdDSA",
            typ,
            kid: &self.active.kid,
            crit: None,
        };
        // Serialising these plain structs cannot fail; an empty segment would only make the
        // token unverifiable, never wrongly valid.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = String::with_capacity(256);
        token.push_str(&URL_SAFE_NO_PAD.encode(header));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.active.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        token
    }

    /// Verifies a token of type `typ` at `now`.
    pub fn verify(&self, token: &str, typ: &str, now: Timestamp) -> Result<Claims, TokenError> {
        self.verify_inner(token, typ, Some(now))
    }

    /// Verifies everything but expiry: logout revokes the session of an expired token too.
    pub fn verify_ignoring_expiry(&self, token: &str, typ: &str) -> Result<Claims, TokenError> {
        self.verify_inner(token, typ, None)
    }

    fn verify_inner(
        &self,
        token: &str,
        typ: &str,
        now: Option<Timestamp>,
    ) -> Result<Claims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| TokenError::Invalid)?;
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Invalid)?;
        if header.alg != "EdDSA" || header.typ != typ || header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let key = self.verifying.get(header.kid).ok_or(TokenError::Invalid)?;
        let sig_bytes: [u8; 64] = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| TokenError::Invalid)?
            .try_into()
            .map_err(|_| TokenError::Invalid)?;
        let signed_len = h64.len() + 1 + p64.len();
        key.verify_strict(
            &token.as_bytes()[..signed_len],
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| TokenError::Invalid)?;

        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| TokenError::Invalid)?;
        let wire: WireClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        let aud_ok = match &wire.aud {
            Audience::One(a) => *a == self.audience,
            Audience::Many(list) => list.contains(&self.audience),
        };
        if wire.iss != self.issuer || !aud_ok {
            return Err(TokenError::Invalid);
        }
        // A session-bound type must carry a session; a pending token must not.
        if (typ == TYP_ACCESS) != wire.sid.is_some() {
            return Err(TokenError::Invalid);
        }
        if let Some(now) = now {
            let leeway = i64::try_from(self.leeway).unwrap_or(i64::MAX);
            if wire.iat > now.0.saturating_add(leeway) {
                return Err(TokenError::Invalid);
            }
            if now.0 > wire.exp.saturating_add(leeway) {
                return Err(TokenError::Expired);
            }
        }
        Ok(Claims {
            iss: wire.iss,
            aud: self.audience.clone(),
            sub: wire.sub,
            tid: wire.tid,
            sid: wire.sid,
            role: wire.role,
            iat: wire.iat,
            exp: wire.exp,
            jti: wire.jti,
        })
    }
}

/// A keyring and tokens for tests elsewhere in the crate (the verifier's cache).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) const NOW: Timestamp = Timestamp(1_800_000_000);

    pub(crate) fn ring() -> Keyring {
        Keyring::new(
            KeyPair::from_seed(&[1; 32]),
            vec![],
            "bp-auth".into(),
            "blitzpulse".into(),
            30,
        )
    }

    /// An access token of a fresh session, issued at [`NOW`] for `ttl` seconds.
    pub(crate) fn access(ring: &Keyring, ttl: u64) -> String {
        let c = ring.claims(
            UserId::generate(),
            TenantId::generate(),
            Some(SessionId::generate()),
            "owner",
            NOW,
            ttl,
        );
        ring.sign(&c, TYP_ACCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn reencode(
        token: &str,
        edit: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
    ) -> String {
        let p: Vec<&str> = token.split('.').collect();
        let mut h: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[0]).unwrap()).unwrap();
        let mut c: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[1]).unwrap()).unwrap();
        edit(&mut h, &mut c);
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(c.to_string()),
            p[2]
        )
    }

    #[test]
    fn round_trip_with_exact_header() {
        let r = ring();
        let t = access(&r, 900);
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": r.active_kid()})
        );
        let c = r.verify(&t, TYP_ACCESS, NOW).unwrap();
        assert_eq!(c.exp - c.iat, 900);
    }

    #[test]
    fn expiry_honours_leeway() {
        let r = ring();
        let t = access(&r, 60);
        assert!(r.verify(&t, TYP_ACCESS, NOW.plus(90)).is_ok());
        assert_eq!(
            r.verify(&t, TYP_ACCESS, NOW.plus(91)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampering_is_invalid() {
        let r = ring();
        let t = access(&r, 900);
        let cases = [
            reencode(&t, |_, c| c["role"] = "admin".into()),
            reencode(&t, |h, _| h["alg"] = "none".into()),
            reencode(&t, |h, _| h["kid"] = "../x".into()),
            reencode(&t, |h, _| h["typ"] = "mfa+jwt".into()),
            reencode(&t, |h, _| h["crit"] = serde_json::json!(["exp"])),
            format!("{}.", &t[..t.rfind('.').unwrap()]),
            t.replace('.', ""),
            String::new(),
        ];
        for bad in cases {
            assert_eq!(
                r.verify(&bad, TYP_ACCESS, NOW),
                Err(TokenError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_of_the_signature_is_refused() {
        let r = ring();
        let t = access(&r, 900);
        let dot = t.rfind('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(&t[dot + 1..]).unwrap();
        for bit in 0..sig.len() * 8 {
            let mut s = sig.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            let bad = format!("{}.{}", &t[..dot], URL_SAFE_NO_PAD.encode(&s));
            assert_eq!(r.verify(&bad, TYP_ACCESS, NOW), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn wrong_issuer_audience_or_key() {
        let r = ring();
        let t = access(&r, 900);
        let other_aud = Keyring::new(
            KeyPair::from_seed(&[1; 32]),
            vec![],
            "bp-auth".into(),
            "other".into(),
            30,
        );
        assert_eq!(
            other_aud.verify(&t, TYP_ACCESS, NOW),
            Err(TokenError::Invalid)
        );
        let other_key = Keyring::new(
            KeyPair::from_seed(&[2; 32]),
            vec![],
            "bp-auth".into(),
            "blitzpulse".into(),
            30,
        );
        assert_eq!(
            other_key.verify(&t, TYP_ACCESS, NOW),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn mfa_pending_tokens_are_not_access_tokens() {
        let r = ring();
        let c = r.claims(
            UserId::generate(),
            TenantId::generate(),
            None,
            "owner",
            NOW,
            300,
        );
        let t = r.sign(&c, TYP_MFA_PENDING);
        assert_eq!(r.verify(&t, TYP_ACCESS, NOW), Err(TokenError::Invalid));
        assert!(r.verify(&t, TYP_MFA_PENDING, NOW).is_ok());
    }

    #[test]
    fn old_published_keys_still_verify() {
        let old = Keyring::new(
            KeyPair::from_seed(&[1; 32]),
            vec![],
            "bp-auth".into(),
            "blitzpulse".into(),
            30,
        );
        let t = access(&old, 900);
        let new = Keyring::new(
            KeyPair::from_seed(&[2; 32]),
            vec![KeyPair::from_seed(&[2; 32]), KeyPair::from_seed(&[1; 32])],
            "bp-auth".into(),
            "blitzpulse".into(),
            30,
        );
        assert!(new.verify(&t, TYP_ACCESS, NOW).is_ok());
        assert_eq!(new.jwks()["keys"].as_array().unwrap().len(), 2);
    }
}
