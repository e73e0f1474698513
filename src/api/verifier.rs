//! The keyring in use and its cache of access tokens already verified.
//!
//! Access tokens that verified once are remembered by a hash of the whole token until their
//! `exp` (plus leeway), so a client's repeated requests skip the ~30 µs signature check. The
//! cache belongs to the keyring it was filled from: a rotation replaces both at once, so a
//! retired key's tokens are never answered from the cache. Revocation is not cached: callers
//! still check the session live against the user's published view.

use std::ops::Deref;

use dashmap::DashMap;

use crate::domain::secrets::sha256;
use crate::domain::time::Timestamp;
use crate::domain::tokens::{Claims, Keyring, TokenError, TYP_ACCESS};

/// Past this many cached tokens, expired ones are swept; if that is not enough, all are.
const VERIFIED_CACHE_MAX: usize = 200_000;

#[derive(Debug)]
pub struct Verifier {
    keyring: Keyring,
    verified: DashMap<[u8; 32], Claims>,
}

impl Verifier {
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring,
            verified: DashMap::new(),
        }
    }

    /// [`Keyring::verify`] for access tokens, answered from the cache of tokens already verified.
    pub fn verify_access_cached(&self, token: &str, now: Timestamp) -> Result<Claims, TokenError> {
        let key = sha256(token.as_bytes());
        let leeway = i64::try_from(self.keyring.leeway).unwrap_or(i64::MAX);
        if let Some(claims) = self.verified.get(&key) {
            return if now.0 > claims.exp.saturating_add(leeway) {
                drop(claims);
                self.verified.remove(&key);
                Err(TokenError::Expired)
            } else {
                Ok(claims.clone())
            };
        }
        let claims = self.keyring.verify(token, TYP_ACCESS, now)?;
        if self.verified.len() >= VERIFIED_CACHE_MAX {
            self.verified
                .retain(|_, c| now.0 <= c.exp.saturating_add(leeway));
            if self.verified.len() >= VERIFIED_CACHE_MAX {
                self.verified.clear();
            }
        }
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }
}

/// Signing and uncached verification are the keyring's own.
impl Deref for Verifier {
    type Target = Keyring;

    fn deref(&self) -> &Keyring {
        &self.keyring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tokens::fixtures::{access, ring, NOW};

    #[test]
    fn cached_verification_agrees_and_still_expires() {
        let r = Verifier::new(ring());
        let t = access(&r, 60);
        let first = r.verify_access_cached(&t, NOW).unwrap();
        assert_eq!(r.verify_access_cached(&t, NOW).unwrap(), first);
        assert_eq!(
            r.verify_access_cached(&t, NOW.plus(91)),
            Err(TokenError::Expired)
        );
        // A tampered token is never a cache hit.
        let dot = t.rfind('.').unwrap();
        let bad = format!("{}.{}", &t[..dot], "A".repeat(86));
        assert_eq!(r.verify_access_cached(&bad, NOW), Err(TokenError::Invalid));
    }
}
