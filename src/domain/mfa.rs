//! Two-factor authentication with TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one
//! step of drift either way), recovery codes, and the challenges that MFA-pending tokens stand
//! for.
//!
//! ```text
//!   (none) ──setup──▶ PENDING(secret) ──verify(code)──▶ ENABLED(secret, 10 recovery codes)
//!             ▲            │ setup again: new secret                │
//!             └────────────┴────────── disable(code) ◀──────────────┘
//!
//!   login (password ok, ENABLED) ──▶ CHALLENGE(jti, 5 attempts, 5 min)
//!        right TOTP or unused recovery code ──▶ consumed, a session opens
//!        wrong code ──▶ attempts - 1; the fifth voids it (its token is then invalid)
//! ```
//!
//! The secret is kept encrypted (ChaCha20-Poly1305 under the data key, bound to the user); a
//! code is accepted only for a time step later than the last accepted one, so it cannot be
//! replayed inside its window. Recovery codes are kept as keyed hashes and each works once.

use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::error::DomainError;
use super::ids::TokenId;
use super::time::Timestamp;

pub const ISSUER: &str = "BlitzPulse";
pub const STEP: u64 = 30;
pub const DIGITS: usize = 6;
/// 160 bits, RFC 4226's recommendation.
pub const SECRET_LEN: usize = 20;
pub const RECOVERY_CODES: usize = 10;
pub const CHALLENGE_ATTEMPTS: u32 = 5;

/// The user's MFA record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaState {
    /// The TOTP secret, encrypted: nonce ‖ ciphertext.
    pub secret: Option<Vec<u8>>,
    /// Set once a code from the secret has been verified.
    pub enabled: bool,
    /// The time step of the last accepted code; later codes only.
    pub last_step: u64,
    /// Keyed hashes of the unused recovery codes.
    pub recovery: Vec<[u8; 32]>,
    /// Open login challenges (one per MFA-pending token).
    pub challenges: Vec<Challenge>,
}

/// What an MFA-pending token stands for on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub jti: TokenId,
    pub expires_at: Timestamp,
    pub attempts_left: u32,
}

/// A fresh random secret.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s
}

/// The RFC 6238 generator for `secret`; `account` labels it in authenticator apps.
pub fn totp(secret: &[u8], account: &str) -> Result<TOTP, DomainError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP,
        secret.to_vec(),
        Some(ISSUER.to_string()),
        account.to_string(),
    )
    .map_err(|_| DomainError::MfaNotSetUp)
}

/// Checks `code` against the steps around `now`, later than `last_step`; returns the step it
/// matched.
pub fn match_step(totp: &TOTP, code: &str, last_step: u64, now: Timestamp) -> Option<u64> {
    let now = u64::try_from(now.0).ok()?;
    let current = now / STEP;
    let code = code.trim();
    if code.len() != DIGITS {
        return None;
    }
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = totp.generate(step * STEP);
        // Checked in constant time and for every step, whatever matched first.
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && step > last_step {
            found = Some(step);
        }
    }
    found
}

/// Ten fresh recovery codes, `xxxxx-xxxxx` from an alphabet without look-alikes (50 bits each).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut s: String = (0..10)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            s.insert(5, '-');
            s
        })
        .collect()
}

/// A recovery code as typed, normalised for hashing: lowercase, no dashes or spaces.
pub fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl MfaState {
    /// Opens a challenge for a login; returns its id, which becomes the pending token's `jti`.
    pub fn open_challenge(&mut self, ttl: u64, now: Timestamp) -> TokenId {
        self.challenges.retain(|c| c.expires_at > now);
        // Bounded: a password-holder cannot grow the state without limit.
        if self.challenges.len() >= 16 {
            self.challenges.remove(0);
        }
        let jti = TokenId::generate();
        self.challenges.push(Challenge {
            jti,
            expires_at: now.plus(ttl),
            attempts_left: CHALLENGE_ATTEMPTS,
        });
        jti
    }

    /// Whether `jti` is an open challenge.
    pub fn challenge_open(&self, jti: TokenId, now: Timestamp) -> bool {
        self.challenges
            .iter()
            .any(|c| c.jti == jti && c.expires_at > now && c.attempts_left > 0)
    }

    /// Records the outcome of one answer to challenge `jti`: consumed on success; one attempt
    /// less on failure, voided on the last.
    pub fn settle_challenge(&mut self, jti: TokenId, ok: bool) -> Result<(), DomainError> {
        let Some(i) = self.challenges.iter().position(|c| c.jti == jti) else {
            return Err(DomainError::InvalidToken);
        };
        if ok {
            self.challenges.remove(i);
            return Ok(());
        }
        let c = &mut self.challenges[i];
        c.attempts_left = c.attempts_left.saturating_sub(1);
        if c.attempts_left == 0 {
            self.challenges.remove(i);
        }
        Err(DomainError::InvalidCode {
            attempts_left: None,
        })
    }

    /// Uses up a recovery code if `hash` is one of the unused ones.
    pub fn use_recovery(&mut self, hash: &[u8; 32]) -> bool {
        let pos = self.recovery.iter().position(|h| bool::from(h.ct_eq(hash)));
        match pos {
            Some(i) => {
                self.recovery.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (8 digits, the RFC's seed).
    #[test]
    fn rfc6238_test_vectors() {
        let seed = b"12345678901234567890".to_vec();
        let t = TOTP::new(Algorithm::SHA1, 8, 1, 30, seed, None, "test".into()).unwrap();
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time), code, "T = {time}");
        }
    }

    #[test]
    fn codes_match_one_step_either_way_and_never_twice() {
        let secret = new_secret();
        let t = totp(&secret, "ada@example.com").unwrap();
        let now = Timestamp(1_800_000_000);
        let code = t.generate(1_800_000_000);
        let step = match_step(&t, &code, 0, now).unwrap();
        assert_eq!(step, 1_800_000_000 / 30);
        assert_eq!(match_step(&t, &code, step, now), None, "replay refused");
        let previous = t.generate(1_800_000_000 - 30);
        assert!(match_step(&t, &previous, 0, now).is_some());
        let old = t.generate(1_800_000_000 - 90);
        assert_eq!(match_step(&t, &old, 0, now), None);
        assert_eq!(match_step(&t, "12345", 0, now), None);
    }

    #[test]
    fn otpauth_url_names_the_issuer() {
        let t = totp(&new_secret(), "ada@example.com").unwrap();
        let url = t.get_url();
        assert!(
            url.starts_with("otpauth://totp/BlitzPulse:ada%40example.com?"),
            "{url}"
        );
        assert!(url.contains("issuer=BlitzPulse"));
        assert!(t.get_secret_base32().len() >= 32, "160-bit secret");
    }

    #[test]
    fn five_wrong_answers_void_a_challenge() {
        let mut m = MfaState::default();
        let now = Timestamp(1_000);
        let jti = m.open_challenge(300, now);
        for _ in 0..5 {
            assert!(m.challenge_open(jti, now));
            assert!(matches!(
                m.settle_challenge(jti, false),
                Err(DomainError::InvalidCode { .. })
            ));
        }
        assert!(!m.challenge_open(jti, now));
        assert_eq!(
            m.settle_challenge(jti, true),
            Err(DomainError::InvalidToken)
        );
    }

    #[test]
    fn a_challenge_succeeds_once_and_expires() {
        let mut m = MfaState::default();
        let jti = m.open_challenge(300, Timestamp(1_000));
        assert!(!m.challenge_open(jti, Timestamp(1_300)));
        assert!(m.settle_challenge(jti, true).is_ok());
        assert!(!m.challenge_open(jti, Timestamp(1_000)));
    }

    #[test]
    fn recovery_codes_work_once() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert!(codes
            .iter()
            .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
        let mut m = MfaState {
            recovery: vec![[1; 32], [2; 32]],
            ..Default::default()
        };
        assert!(m.use_recovery(&[2; 32]));
        assert!(!m.use_recovery(&[2; 32]));
        assert_eq!(normalise_recovery("AB2C3-d4E5f"), "ab2c3d4e5f");
    }
}
