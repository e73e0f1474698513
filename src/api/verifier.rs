//! The keyring in use and its cache of access tokens already verified.
//!
//! Access tokens that verified once are remembered by a hash of the whole token until their
//! `exp` (plus leeway), so a client's repeated requests skip the ~30 µs signature check. The
//! cache belongs to the keyring it was filled from: a rotation replaces both at once, so a
//! retired key's tokens are never answered from the cache. Revocation is not cached: callers
//! still check the session live against the user's published view.
//!
//! The cache is a fixed table of slots ([`Slots`]): a token takes the slot its hash picks,
//! displacing whatever was there, so memory is bounded without ever scanning for room (a
//! displaced token costs one signature check on its next use).

use std::ops::Deref;

use super::slots::Slots;
use crate::domain::secrets::sha256;
use crate::domain::time::Timestamp;
use crate::domain::tokens::{Claims, Keyring, TokenError, TYP_ACCESS};

/// Slots of the cache: about one per concurrently active client (an empty slot costs 16
/// bytes, a filled one a few hundred).
const VERIFIED_CACHE_SLOTS: usize = 1 << 17;

/// A token verified once: the SHA-256 of the whole token, and its claims.
type Entry = Option<Box<([u8; 32], Claims)>>;

pub struct Verifier {
    keyring: Keyring,
    verified: Slots<Entry>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(keyring: Keyring) -> Self {
        Self::with_slots(keyring, VERIFIED_CACHE_SLOTS)
    }

    fn with_slots(keyring: Keyring, slots: usize) -> Self {
        Self {
            keyring,
            verified: Slots::new(slots),
        }
    }

    /// [`Keyring::verify`] for access tokens, answered from the cache of tokens already verified.
    pub fn verify_access_cached(&self, token: &str, now: Timestamp) -> Result<Claims, TokenError> {
        let key = sha256(token.as_bytes());
        let slot = self.verified.index(&key);
        let leeway = i64::try_from(self.keyring.leeway).unwrap_or(i64::MAX);
        let hit = self.verified.with(slot, |entry| match entry {
            Some(e) if e.0 == key => {
                if now.0 > e.1.exp.saturating_add(leeway) {
                    *entry = None;
                    Some(Err(TokenError::Expired))
                } else {
                    Some(Ok(e.1.clone()))
                }
            }
            _ => None,
        });
        if let Some(answer) = hit {
            return answer;
        }
        let claims = self.keyring.verify(token, TYP_ACCESS, now)?;
        let cached = Box::new((key, claims.clone()));
        self.verified.with(slot, |entry| *entry = Some(cached));
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

    #[test]
    fn a_full_cache_displaces_and_still_answers_right() {
        let r = Verifier::with_slots(ring(), 4);
        let tokens: Vec<String> = (0..64).map(|i| access(&r, 60 + i)).collect();
        for _ in 0..2 {
            for t in &tokens {
                let claims = r.verify_access_cached(t, NOW).unwrap();
                assert_eq!(claims, r.verify(t, TYP_ACCESS, NOW).unwrap());
            }
        }
        assert_eq!(r.verified.capacity(), 4, "the cache never grows");
    }
}
