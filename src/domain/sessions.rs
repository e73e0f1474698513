//! Sessions and their refresh-token families.
//!
//! A session is one login. It owns exactly one refresh family: a sequence of tokens in which each
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
//!                        │ refresh(gen < n, genuine) outside grace ──▶ REVOKED (refresh_token_reused)
//!                        │ logout / deactivation                   ──▶ REVOKED
//!                        │ a login past tokens.max_sessions_per_user,
//!                        │   this session the least recently used  ──▶ REVOKED
//!                        │ refresh token or session max age        ──▶ EXPIRED
//!                        ▼
//!            REVOKED / EXPIRED: the session is dropped from the state; any token of it,
//!            access or refresh, is then refused (`session_revoked` / `invalid_refresh_token`)
//!
//!   Any token that is not genuine (forged secret, a generation above n, another session's id)
//!   is `invalid_refresh_token` and changes nothing.
//! ```
//!
//! # Deriving the secrets
//!
//! The secret of generation `g` is `HMAC(server_key, "bprt-v2" ‖ sid ‖ g)`
//! ([`ServerKey::refresh_secret`]), and only the SHA-256 of the current one is stored. Deciding
//! what a presented token is therefore costs a bounded amount of work whatever generation it
//! claims: one SHA-256 for the current generation, one HMAC for an older one (plus one of each to
//! answer a grace replay). That matters because a refresh runs on the actor threads every user
//! shares, and anyone who has seen one token of a session can claim any generation of it.
//!
//! Reuse is still detected for every older generation, without a list of spent tokens: an older
//! token is genuine iff its secret equals the derivation for its generation.
//!
//! The database alone still cannot mint a token: it holds a hash of the current secret, and
//! every secret needs the server key, which never leaves `keys/`. An earlier derivation chained
//! the secrets (`secret[n+1] = HMAC(key, sid ‖ n+1 ‖ secret[n])`), so that even the key could
//! not produce a session's next token without its current one; but whoever holds `keys/` also
//! holds the signing keys and can sign access tokens for any session directly, so the chain
//! bought nothing, and recognising an old token cost a walk of up to 20,000 HMACs.
//!
//! Sessions opened under the chain keep working: their current token is recognised by its hash
//! like any other and rotates into this derivation. Their older tokens, and the one just rotated
//! away from the chain, were never derivations, so they are merely invalid (no reuse detection and
//! no grace replay for them); from the first rotation on, the session is like any other.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use std::net::IpAddr;

use super::events::Origin;
use super::ids::{SessionId, UserId};
use super::secrets::{sha256, RefreshToken, ServerKey};
use super::time::Timestamp;

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
    /// The login or last refresh: what the user sees, and the use that counts for
    /// `tokens.max_sessions_per_user` (since format version 3; older sessions start at
    /// `rotated_at`). The defaults let exports from before it import.
    #[serde(default)]
    pub last_used_at: Timestamp,
    /// How the login proved who it was.
    #[serde(default)]
    pub method: LoginMethod,
    /// The client's user agent at login, at most 256 characters.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The client's address at login.
    #[serde(default)]
    pub ip: Option<IpAddr>,
}

/// How a session's login was proved. New variants go at the end: snapshots store the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginMethod {
    /// Opened before sessions recorded it (format versions 1 and 2).
    #[default]
    Unrecorded,
    /// A password alone.
    Password,
    /// A password and a second factor (TOTP, a recovery code or a passkey).
    SecondFactor,
    /// A passkey alone: it verified its user (PIN or biometric), so it is two factors.
    Passkey,
    /// A sign-in through an OpenID Connect provider (one factor as far as we can tell: the
    /// provider's own second factor is its business; ours is asked for like after a password).
    Oidc,
}

impl LoginMethod {
    /// Whether more than one factor was shown (the `mfa` of the sessions list).
    pub fn is_multi_factor(self) -> bool {
        matches!(self, Self::SecondFactor | Self::Passkey)
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unrecorded => "unrecorded",
            Self::Password => "password",
            Self::SecondFactor => "second_factor",
            Self::Passkey => "passkey",
            Self::Oidc => "oidc",
        }
    }
}

/// Session lifetimes, rotation policy and the cap on sessions, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub refresh_ttl: u64,
    pub session_max: u64,
    pub rotation_enabled: bool,
    pub reuse_grace: u64,
    /// Live sessions one user may have; a login past it ends the least recently used.
    pub max_sessions: usize,
}

/// What a presented token is to a family, if it is one of its genuine tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Current,
    Spent,
}

impl Session {
    /// Opens a session for a login proved by `method` from `origin`; returns it and its first
    /// refresh token.
    pub fn open(
        user: UserId,
        key: &ServerKey,
        policy: &SessionPolicy,
        (method, origin): (LoginMethod, &Origin),
        now: Timestamp,
    ) -> (Self, RefreshToken) {
        let id = SessionId::generate();
        let secret = key.refresh_secret(id, 0);
        let max_expires_at = now.plus(policy.session_max);
        let session = Self {
            id,
            created_at: now,
            max_expires_at,
            generation: 0,
            current_hash: sha256(&secret),
            refresh_expires_at: now.plus(policy.refresh_ttl).min(max_expires_at),
            rotated_at: now,
            last_used_at: now,
            method,
            user_agent: origin.user_agent.clone(),
            ip: origin.ip,
        };
        let token = RefreshToken {
            user,
            session: id,
            generation: 0,
            secret,
        };
        (session, token)
    }

    /// A session read from an export made before format 3 has no last use: its last rotation
    /// is the best one known (a use is never before it).
    pub fn complete_from_before_format_3(&mut self) {
        self.last_used_at = self.last_used_at.max(self.rotated_at);
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
        self.standing(token, key).is_some()
    }

    /// One SHA-256 or one HMAC, whatever the token claims.
    fn standing(&self, token: &RefreshToken, key: &ServerKey) -> Option<Standing> {
        if token.session != self.id {
            return None;
        }
        // The current generation is checked against its stored hash rather than derived, so
        // that the current token of a session opened before the derivation changed still works.
        let (standing, genuine) = match token.generation.cmp(&self.generation) {
            std::cmp::Ordering::Equal => (Standing::Current, self.holds_current(&token.secret)),
            std::cmp::Ordering::Less => {
                let derived = key.refresh_secret(self.id, token.generation);
                (Standing::Spent, bool::from(derived.ct_eq(&token.secret)))
            }
            std::cmp::Ordering::Greater => return None,
        };
        genuine.then_some(standing)
    }

    fn holds_current(&self, secret: &[u8; 32]) -> bool {
        bool::from(sha256(secret).ct_eq(&self.current_hash))
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
        let Some(standing) = self.standing(token, key) else {
            return Err(RefreshError::Invalid);
        };
        if standing == Standing::Current {
            self.last_used_at = now;
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
            let next = key.refresh_secret(self.id, next_gen);
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
            let current = key.refresh_secret(self.id, self.generation);
            // A session whose current token predates the derivation cannot answer it again:
            // the successor its client was handed is not one the key can reproduce.
            if !self.holds_current(&current) {
                return Err(RefreshError::Invalid);
            }
            self.last_used_at = now;
            return Ok(RefreshGrant {
                token: RefreshToken {
                    user: token.user,
                    session: self.id,
                    generation: self.generation,
                    secret: current,
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
    const LOGIN: (LoginMethod, &Origin) = (
        LoginMethod::Password,
        &Origin {
            ip: None,
            user_agent: None,
            session: None,
        },
    );

    fn policy(rotation: bool, grace: u64) -> SessionPolicy {
        SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 5_000,
            rotation_enabled: rotation,
            reuse_grace: grace,
            max_sessions: 100,
        }
    }

    fn setup() -> (ServerKey, Session, RefreshToken) {
        let key = ServerKey::from_bytes([3; 32]);
        let (s, t) = Session::open(UserId::generate(), &key, &policy(true, 0), LOGIN, T0);
        (key, s, t)
    }

    /// The session as if it had been rotated up to `generation`, and its current token.
    fn at_generation(
        key: &ServerKey,
        s: &mut Session,
        t0: &RefreshToken,
        generation: u32,
    ) -> RefreshToken {
        let secret = key.refresh_secret(s.id, generation);
        s.generation = generation;
        s.current_hash = sha256(&secret);
        RefreshToken {
            generation,
            secret,
            ..t0.clone()
        }
    }

    #[test]
    fn the_first_token_is_generation_0_of_the_derivation() {
        let (key, s, t0) = setup();
        assert_eq!(t0.generation, 0);
        assert_eq!(t0.secret, key.refresh_secret(s.id, 0));
        assert_eq!(s.current_hash, sha256(&t0.secret));
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
    fn reuse_is_detected_however_old_the_token() {
        let (key, s, t0) = setup();
        let p = policy(true, 0);
        for spent in [0, 1, 25_000, 49_999] {
            let mut s = s.clone();
            let _current = at_generation(&key, &mut s, &t0, 50_000);
            let old = RefreshToken {
                generation: spent,
                secret: key.refresh_secret(s.id, spent),
                ..t0.clone()
            };
            assert!(s.recognises(&old, &key), "gen {spent}");
            assert_eq!(
                s.refresh(&old, &key, &p, T0).unwrap_err(),
                RefreshError::Reused,
                "gen {spent}"
            );
        }
    }

    #[test]
    fn forged_tokens_of_any_generation_are_invalid_and_change_nothing() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 30);
        let current = at_generation(&key, &mut s, &t0, 50_000);
        let before = s.clone();
        for claimed in [0, 1, 25_000, 49_999, 50_000, 50_001, u32::MAX] {
            let mut forged = RefreshToken {
                generation: claimed,
                ..current.clone()
            };
            forged.secret[claimed as usize % 32] ^= 1;
            assert!(!s.recognises(&forged, &key), "gen {claimed}");
            assert_eq!(
                s.refresh(&forged, &key, &p, T0).unwrap_err(),
                RefreshError::Invalid,
                "gen {claimed}"
            );
            assert_eq!(s, before, "gen {claimed}");
        }
        // Genuine secrets of a generation above the current one were never issued.
        let future = RefreshToken {
            generation: 50_001,
            secret: key.refresh_secret(s.id, 50_001),
            ..current.clone()
        };
        assert_eq!(
            s.refresh(&future, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        assert_eq!(s, before);
        assert_eq!(
            s.refresh(&current, &key, &p, T0).unwrap().outcome,
            RefreshOutcome::Rotated
        );
    }

    #[test]
    fn tokens_of_another_session_or_key_are_invalid() {
        let (key, mut s, t0) = setup();
        let p = policy(true, 0);
        s.refresh(&t0, &key, &p, T0).unwrap();
        let other_key = ServerKey::from_bytes([4; 32]);
        assert_eq!(
            s.refresh(&t0, &other_key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        // Another session's genuine token, sent with this session's id.
        let (other, other_t0) = Session::open(t0.user, &key, &p, LOGIN, T0);
        let moved = RefreshToken {
            session: s.id,
            ..other_t0.clone()
        };
        assert_eq!(
            s.refresh(&moved, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        assert!(!s.recognises(&other_t0, &key));
        assert!(other.recognises(&other_t0, &key));
    }

    /// A session as the chained derivation left it: its current secret is no derivation.
    fn pre_change_session(key: &ServerKey) -> (Session, RefreshToken, RefreshToken) {
        let (mut s, t0) = Session::open(UserId::generate(), key, &policy(true, 0), LOGIN, T0);
        let chained = [5; 32];
        s.generation = 7;
        s.current_hash = sha256(&chained);
        let current = RefreshToken {
            generation: 7,
            secret: chained,
            ..t0.clone()
        };
        let previous = RefreshToken {
            generation: 6,
            secret: [6; 32],
            ..t0
        };
        (s, current, previous)
    }

    #[test]
    fn a_pre_change_sessions_current_token_rotates_into_the_derivation() {
        let key = ServerKey::from_bytes([3; 32]);
        let p = policy(true, 30);
        let (mut s, current, previous) = pre_change_session(&key);
        assert_eq!(
            s.refresh(&previous, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid,
            "older chained tokens are not derivations: invalid, not reuse"
        );
        let g8 = s.refresh(&current, &key, &p, T0).unwrap();
        assert_eq!(g8.outcome, RefreshOutcome::Rotated);
        assert_eq!(g8.token.generation, 8);
        assert_eq!(g8.token.secret, key.refresh_secret(s.id, 8));
        // The chained token it replaced cannot be replayed; the session goes on.
        assert_eq!(
            s.refresh(&current, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        let g9 = s.refresh(&g8.token, &key, &p, T0).unwrap();
        assert_eq!(g9.token.generation, 9);
        assert_eq!(
            s.refresh(&g8.token, &key, &p, T0.plus(100)).unwrap_err(),
            RefreshError::Reused
        );
    }

    #[test]
    fn a_pre_change_session_has_no_grace_replay() {
        let key = ServerKey::from_bytes([3; 32]);
        let p = policy(true, 30);
        let (mut s, current, _) = pre_change_session(&key);
        let before = s.clone();
        // Even a derived secret for the previous generation gets no successor: the current one
        // was chained, and the key cannot reproduce it.
        let derived_previous = RefreshToken {
            generation: 6,
            secret: key.refresh_secret(s.id, 6),
            ..current.clone()
        };
        assert_eq!(
            s.refresh(&derived_previous, &key, &p, T0).unwrap_err(),
            RefreshError::Invalid
        );
        assert_eq!(s, before);
        assert_eq!(
            s.refresh(&current, &key, &p, T0).unwrap().outcome,
            RefreshOutcome::Rotated
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
