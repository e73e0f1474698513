//! One-time verification codes (phone verification, reactivation).
//!
//! ```text
//!                request (resend interval and hourly cap respected)
//!   (none) ─────────────────────────────────────────────▶ PENDING(attempts = max)
//!     ▲                                                      │  │  │
//!     │   a new request voids the previous code ◀────────────┘  │  │
//!     │   right code before expiry: consumed ◀──────────────────┘  │
//!     └── wrong code with attempts left: PENDING(attempts - 1);    │
//!         the last wrong try, or expiry, voids it ◀────────────────┘
//! ```
//!
//! Codes are six digits from the OS generator. Only an HMAC of a code, under the server key and
//! bound to its purpose and owner, is kept, and comparison is constant-time.

use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::DomainError;
use super::time::Timestamp;

/// Limits from `[codes]`.
#[derive(Debug, Clone, Copy)]
pub struct CodePolicy {
    pub ttl: u64,
    pub resend: u64,
    pub per_hour: u32,
    pub max_attempts: u32,
}

/// A code waiting to be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCode {
    pub hash: [u8; 32],
    pub expires_at: Timestamp,
    pub attempts_left: u32,
}

/// A purpose's pending code and its recent sends (for the resend limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSlot {
    pub pending: Option<PendingCode>,
    /// Send times within the last hour, oldest first.
    pub sends: Vec<Timestamp>,
}

/// A fresh six-digit code.
pub fn generate() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

const HOUR: i64 = 3_600;

impl CodeSlot {
    /// Checks the resend limits; on success records the send and stores the new code's hash,
    /// voiding any previous code.
    pub fn issue(
        &mut self,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.sends.retain(|t| now.0 - t.0 < HOUR);
        if let Some(last) = self.sends.last() {
            let next = last.plus(policy.resend);
            if now < next {
                return Err(DomainError::RateLimited {
                    retry_after: now.until(next),
                });
            }
        }
        if self.sends.len() as u64 >= u64::from(policy.per_hour) {
            let oldest = self.sends.first().copied().unwrap_or(now);
            return Err(DomainError::RateLimited {
                retry_after: now.until(Timestamp(oldest.0 + HOUR)).max(1),
            });
        }
        self.sends.push(now);
        self.pending = Some(PendingCode {
            hash,
            expires_at: now.plus(policy.ttl),
            attempts_left: policy.max_attempts,
        });
        Ok(())
    }

    /// Checks a presented code's hash; consumes the code on success, counts a wrong try, voids
    /// it on the last wrong try or after expiry.
    pub fn confirm(&mut self, hash: &[u8; 32], now: Timestamp) -> Result<(), DomainError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(DomainError::CodeExpired);
        };
        if now >= pending.expires_at || pending.attempts_left == 0 {
            self.pending = None;
            return Err(DomainError::CodeExpired);
        }
        if bool::from(pending.hash.ct_eq(hash)) {
            self.pending = None;
            return Ok(());
        }
        pending.attempts_left -= 1;
        let left = pending.attempts_left;
        if left == 0 {
            self.pending = None;
        }
        Err(DomainError::InvalidCode {
            attempts_left: Some(left),
        })
    }

    /// Drops a pending code (the phone it was sent to changed).
    pub fn void(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);
    const P: CodePolicy = CodePolicy {
        ttl: 600,
        resend: 60,
        per_hour: 5,
        max_attempts: 5,
    };

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = generate();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn right_code_once() {
        let mut s = CodeSlot::default();
        s.issue([1; 32], &P, T0).unwrap();
        assert_eq!(s.confirm(&[1; 32], T0.plus(10)), Ok(()));
        assert_eq!(
            s.confirm(&[1; 32], T0.plus(11)),
            Err(DomainError::CodeExpired)
        );
    }

    #[test]
    fn fifth_wrong_try_voids_the_code() {
        let mut s = CodeSlot::default();
        s.issue([1; 32], &P, T0).unwrap();
        for left in (0..5).rev() {
            assert_eq!(
                s.confirm(&[2; 32], T0),
                Err(DomainError::InvalidCode {
                    attempts_left: Some(left)
                })
            );
        }
        assert_eq!(s.confirm(&[1; 32], T0), Err(DomainError::CodeExpired));
    }

    #[test]
    fn expiry_voids() {
        let mut s = CodeSlot::default();
        s.issue([1; 32], &P, T0).unwrap();
        assert_eq!(
            s.confirm(&[1; 32], T0.plus(600)),
            Err(DomainError::CodeExpired)
        );
    }

    #[test]
    fn resend_interval_and_hourly_cap() {
        let mut s = CodeSlot::default();
        s.issue([1; 32], &P, T0).unwrap();
        assert_eq!(
            s.issue([2; 32], &P, T0.plus(59)),
            Err(DomainError::RateLimited { retry_after: 1 })
        );
        for i in 1..5 {
            s.issue([2; 32], &P, T0.plus(60 * i)).unwrap();
        }
        assert_eq!(
            s.issue([3; 32], &P, T0.plus(300)),
            Err(DomainError::RateLimited { retry_after: 3_300 })
        );
        // An hour after the first send, one more is allowed.
        s.issue([3; 32], &P, T0.plus(3_600)).unwrap();
    }

    #[test]
    fn a_new_code_voids_the_previous_one() {
        let mut s = CodeSlot::default();
        s.issue([1; 32], &P, T0).unwrap();
        s.issue([2; 32], &P, T0.plus(60)).unwrap();
        assert!(matches!(
            s.confirm(&[1; 32], T0.plus(61)),
            Err(DomainError::InvalidCode { .. })
        ));
        assert_eq!(s.confirm(&[2; 32], T0.plus(62)), Ok(()));
    }
}
