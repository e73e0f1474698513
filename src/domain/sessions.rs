//! Sessions and their refresh-token families.
//!
//! A session is one login. It owns exactly one refresh family: a chain of tokens in which each
//! rotation issues generation `n + 1` and retires generation `n`. The session id (`sid`) is in
//! every access token it issues, so revoking the session ends the access tokens at once.
//!
//! ```text
//!             login                    refresh(gen n, current)
//!   (none) ──────────▶ LIVE(gen 0) ───────────────────────────▶ LIVE(gen n+1)
//!                        │   ▲   │
//!                        │   └───┘ refresh(gen n-1) within the grace period, successor unused:
//!                        │         the same gen n is answered again (a lost response retried)
//!                        │
//!                        │ refresh(gen < n) outside grace  ──▶ REVOKED (answer: refresh_token_reused)
//!                        │ logout / deactivation            ──▶ REVOKED
//!                        │ refresh token or session max age ──▶ EXPIRED
//!                        ▼
//!            REVOKED / EXPIRED: the session is dropped from the state; any token of it,
//!            access or refresh, is then refused (`session_revoked` / `invalid_refresh_token`)
//! ```
//!
//! Only the hash of the current generation's secret is stored. Successors are derived with the
//! server key (`secret[n+1] = HMAC(key, sid ‖ n+1 ‖ secret[n])`), so an older token is proven
//! genuine by walking the chain forward to the stored hash: reuse is detected for every old
//! token without keeping a list of them, and a retry in the grace period gets the same successor.

use serde::{Deserialize, Serialize};

use super::ids::{SessionId, UserId};
use super::secrets::{sha256, RefreshToken, ServerKey};
use super::time::Timestamp;

/// The longest chain walked to recognise an old token. A session refreshed every 15 minutes for
/// 90 days is 8,640 generations; older tokens than this are simply invalid.
const MAX_CHAIN_WALK: u32 = 20_000;

/// One live login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub created_at: Timestamp,
    /// The absolute end of the login, however often it is refreshed.
    pub max_expires_at: Timestamp,
    /// Generation of the current (unused) refresh token.
    pub generation: u32,
    /// SHA-256 of the current refresh token's secret.
    pub current_hash: [u8; 32],
    /// When the current refresh token stops working.
    pub refresh_expires_at: Timestamp,
    /// When the current generation was issued: the start of the grace period of its predecessor.
    pub rotated_at: Timestamp,
}

/// Session lifetimes and rotation policy, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub refresh_ttl: u64,
    pub session_max: u64,
    pub rotation_enabled: bool,
    pub reuse_grace: u64,
}

impl Session {
    /// Opens a session; returns it and its first refresh token.
    pub fn open(
        user: UserId,
        secret: [u8; 32],
        policy: &SessionPolicy,
        now: Timestamp,
    ) -> (Self, RefreshToken) {
        let id = SessionId::generate();
        let max_expires_at = now.plus(policy.session_max);
        let session = Self {
            id,
            created_at: now,
            max_expires_at,
            generation: 0,
            current_hash: sha256(&secret),
            refresh_expires_at: now.plus(policy.refresh_ttl).min(max_expires_at),
            rotated_at: now,
        };
        let token = RefreshToken {
            user,
            session: id,
            generation: 0,
            secret,
        };
        (session, token)
    }

    /// Whether the session still authorises anything at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.refresh_expires_at && now < self.max_expires_at
    }

    /// When the session ends unless refreshed.
    pub fn expires_at(&self) -> Timestamp {
        self.refresh_expires_at.min(self.max_expires_at)
    }

    /// Whether `token` is a genuine token of this family (current or older), without deciding
    /// anything. Used by logout, which revokes a family only for its own tokens.
    pub fn recognises(&self, token: &RefreshToken, key: &ServerKey) -> bool {
        self.walk_to_current(token, key).is_some()
    }

    /// The secret that `token` leads to at the current generation, if `token` is genuine.
    fn walk_to_current(&self, token: &RefreshToken, key: &ServerKey) -> Option<[u8; 32]> {
        if token.session != self.id || token.generation > self.generation {
            return None;
        }
        if self.generation - token.generation > MAX_CHAIN_WALK {
            return None;
        }
        let mut secret = token.secret;
        for gen in token.generation + 1..=self.generation {
            secret = key.refresh_successor(self.id, gen, &secret);
        }
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &sha256(&secret)[..],
            &self.current_hash[..],
        ))
        .then_some(secret)
    }

    /// Applies the refresh rules to a presented token. On `Err(Reused)` the caller must revoke
    /// the session; every other error leaves it untouched.
    pub fn refresh(
        &mut self,
        token: &RefreshToken,
        key: &ServerKey,
        policy: &SessionPolicy,
        now: Timestamp,
    ) -> Result<RefreshGrant, RefreshError> {
        if !self.is_live(now) {
            return Err(RefreshError::Invalid);
        }
        let Some(current_secret) = self.walk_to_current(token, key) else {
            return Err(RefreshError::Invalid);
        };
        if token.generation == self.generation {
            if !policy.rotation_enabled {
                return Ok(RefreshGrant {
                    token: token.clone(),
                    expires_at: self.expires_at(),
                    outcome: RefreshOutcome::Kept,
                });
            }
            let next_gen = self
                .generation
                .checked_add(1)
                .ok_or(RefreshError::Invalid)?;
            let next = key.refresh_successor(self.id, next_gen, &current_secret);
            self.generation = next_gen;
            self.current_hash = sha256(&next);
            self.refresh_expires_at = now.plus(policy.refresh_ttl).min(self.max_expires_at);
            self.rotated_at = now;
            return Ok(RefreshGrant {
                token: RefreshToken {
                    user: token.user,
                    session: self.id,
                    generation: next_gen,
                    secret: next,
                },
                expires_at: self.expires_at(),
                outcome: RefreshOutcome::Rotated,
            });
        }
        // An older, genuine token. Its direct successor is still unused (it is current), so a
        // retry inside the grace window gets that successor again; anything else is reuse.
        let just_rotated = token.generation + 1 == self.generation;
        if policy.reuse_grace > 0
            && just_rotated
            && now.0 <= self.rotated_at.0.saturating_add(policy.reuse_grace as i64)
        {
            return Ok(RefreshGrant {
                token: RefreshToken {
                    user: token.user,
                    session: self.id,
                    generation: self.generation,
                    secret: current_secret,
                },
                expires_at: self.expires_at(),
                outcome: RefreshOutcome::GraceReplay,
            });
        }
        Err(RefreshError::Reused)
    }
}

/// What a successful refresh did with the presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new generation was issued; the presented one is now used.
    Rotated,
    /// A retry of the token just rotated, inside the grace window: the same successor again.
    GraceReplay,
    /// Rotation is off: the same token stays current.
    Kept,
}

impl RefreshOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::GraceReplay => "grace_replay",
            Self::Kept => "kept",
        }
    }
}

/// A successful refresh: the refresh token to hand back, when it expires, and what happened.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub token: RefreshToken,
    pub expires_at: Timestamp,
    pub outcome: RefreshOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshError {
    /// Unknown, expired, revoked, or not of this family.
    Invalid,
    /// A genuine token that was already used: the family must be revoked.
    Reused,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    fn policy(rotation: bool, grace: u64) -> SessionPolicy {
        SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 5_000,
            rotation_enabled: rotation,
            reuse_grace: grace,
        }
    }

    fn setup() -> (ServerKey, Session, RefreshToken) {
        let key = ServerKey::from_bytes([3; 32]);
        let (s, t) = Session::open(UserId::generate(), [5; 32], &policy(true, 0), T0);
        (key, s, t)
    }

    #[test]
    fn rotation_issues_next_generation_and_old_token_is_reuse() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        let g1 = s.refresh(&t0, &key, &p, T0.plus(10)).unwrap();
        assert_eq!(g1.token.generation, 1);
        assert_eq!(g1.outcome, RefreshOutcome::Rotated);
        assert_ne!(g1.token.secret, t0.secret);
        assert_eq!(
            s.refresh(&t0, &key, &p, T0.plus(11)).unwrap_err(),
            RefreshError::Reused
        );
    }

    #[test]
    fn every_older_generation_counts_as_reuse() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        let t1 = s.refresh(&t0, &key, &p, T0).unwrap().token;
        let _t2 = s.refresh(&t1, &key, &p, T0).unwrap().token;
        assert_eq!(
            s.refresh(&t0, &key, &p, T0).unwrap_err(),
            RefreshError::Reused
        );
        assert_eq!(
            s.refresh(&t1, &key, &p, T0).unwrap_err(),
            RefreshError::Reused
        );
    }

    #[test]
    fn forged_or_foreign_tokens_are_invalid_not_reuse() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        s.refresh(&t0, &key, &p, T0).unwrap();
        let mut forged = t0.clone();
        forged.secret[0] ^= 1;
        assert_eq!(
            s.refresh(&forged, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        let mut future = t0.clone();
        future.generation = 9;
        assert_eq!(
            s.refresh(&future, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        let other_key = ServerKey::from_bytes([4; 32]);
        assert_eq!(
            s.refresh(&t0, &other_key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
    }

    #[test]
    fn grace_replays_the_same_successor_until_it_is_used() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 30);
        let g1 = s.refresh(&t0, &key, &p, T0).unwrap();
        let again = s.refresh(&t0, &key, &p, T0.plus(30)).unwrap();
        assert_eq!(again.token, g1.token);
        assert_eq!(again.outcome, RefreshOutcome::GraceReplay);
        // Outside the window, the retry is reuse.
        let mut late = s.clone();
        assert_eq!(
            late.refresh(&t0, &key, &p, T0.plus(31)).unwrap_err(),
            RefreshError::Reused
        );
        // Once the successor has been used, the old token is reuse even inside the window.
        s.refresh(&g1.token, &key, &p, T0.plus(1)).unwrap();
        assert_eq!(
            s.refresh(&t0, &key, &p, T0.plus(2)).unwrap_err(),
            RefreshError::Reused
        );
    }

    #[test]
    fn rotation_off_keeps_the_token() {
        let (key, mut s, t0) = setup();
        let p = policy(false, 0);
        for i in 0..3 {
            let g = s.refresh(&t0, &key, &p, T0.plus(i)).unwrap();
            assert_eq!(g.token, t0);
        }
    }

    #[test]
    fn expiry_and_absolute_limit() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        assert_eq!(
            s.refresh(&t0, &key, &p, T0.plus(1_000)).unwrap_err(),
            RefreshError::Invalid
        );
        // Refreshing keeps the session alive, but never past its maximum age.
        let mut t = t0;
        for step in 1..=5u64 {
            t = s.refresh(&t, &key, &p, T0.plus(step * 900)).unwrap().token;
        }
        assert_eq!(s.expires_at(), T0.plus(5_000));
        assert!(!s.is_live(T0.plus(5_000)));
    }

    #[test]
    fn logout_recognises_only_its_own_tokens() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        let t1 = s.refresh(&t0, &key, &p, T0).unwrap().token;
        assert!(s.recognises(&t0, &key));
        assert!(s.recognises(&t1, &key));
        let mut forged = t1;
        forged.secret[31] ^= 0x80;
        assert!(!s.recognises(&forged, &key));
    }
}
