//! Failure back-off: after `limit` failures inside a window that starts at the first failure,
//! further attempts are refused with `RateLimited` until the window has passed. A success
//! resets the count (the caller drops the window). This is a failure counter with a reset,
//! which a token bucket cannot express.
//!
//! ```text
//!   (none) --fail--> [start=now, count=1] --fail--> ... [count=limit] --check--> RateLimited
//!      ^                                                       |
//!      +---------- success, or now >= start + window ----------+
//! ```

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::time::Timestamp;

/// How long reserved attempts count without being settled. A node that reserved and then
/// died (its counters live in a shared store) can only hold the account's attempts this long;
/// it is far above any hash's time in the queue and on a core.
pub const LEASE_SECONDS: u64 = 120;

/// One key's failures in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureWindow {
    pub start: Timestamp,
    pub count: u32,
}

/// The limit and the window length, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub limit: u32,
    pub window: u64,
}

impl Backoff {
    fn end(&self, w: &FailureWindow) -> Timestamp {
        w.start.plus(self.window)
    }

    /// `Err(RateLimited)` while the window is full.
    pub fn check(&self, w: Option<&FailureWindow>, now: Timestamp) -> Result<(), DomainError> {
        match w {
            Some(w) if now < self.end(w) && w.count >= self.limit => {
                Err(DomainError::RateLimited {
                    retry_after: now.until(self.end(w)).max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure, starting a new window if the old one has passed.
    pub fn record(&self, w: &mut FailureWindow, now: Timestamp) {
        if self.is_over(w, now) {
            *w = FailureWindow {
                start: now,
                count: 0,
            };
        }
        w.count = w.count.saturating_add(1);
    }

    /// Whether the window has passed (and can be forgotten).
    pub fn is_over(&self, w: &FailureWindow, now: Timestamp) -> bool {
        now >= self.end(w)
    }

    /// A fresh window for a first failure at `now`.
    pub fn first(now: Timestamp) -> FailureWindow {
        FailureWindow {
            start: now,
            count: 0,
        }
    }
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The secret was wrong, or the caller went away before knowing (errs towards counting).
    Failed,
    /// The secret was right: the window is reset.
    Succeeded,
    /// Nothing was checked (the hashing pool shed the job): the attempt is given back.
    Released,
}

/// A key's password attempts: its failure window, plus the attempts reserved and not yet
/// settled. Checking and counting are one step ([`Attempts::reserve`]) taken *before* the
/// slow check of the secret, so N parallel guesses cannot all pass a check that sees none of
/// the others: an attempt in flight counts as a failure until it is settled.
///
/// ```text
///   reserve: refused if in_flight >= max_in_flight (always),
///            or failures + in_flight >= limit (when limited); else in_flight += 1
///   settle:  in_flight -= 1; a failure is recorded, a success resets the window
/// ```
///
/// Attempts in flight are forgotten [`LEASE_SECONDS`] after the last reservation: in memory
/// each one is settled long before, but counters kept in a store shared by several nodes may
/// hold the reservations of a node that crashed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    window: Option<FailureWindow>,
    in_flight: u32,
    #[serde(default)]
    lease_until: Option<Timestamp>,
}

/// An account's counters: its password attempts and its wrong second-factor answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAttempts {
    pub passwords: Attempts,
    pub second_factors: Attempts,
}

impl Attempts {
    /// Drops reservations whose lease has run out.
    fn expire(&mut self, now: Timestamp) {
        if self.lease_until.is_some_and(|until| now >= until) {
            self.in_flight = 0;
            self.lease_until = None;
        }
    }

    /// Reserves one attempt at `now`. `rule` is `None` when rate limits are off; the cap on
    /// attempts in flight holds regardless.
    pub fn reserve(
        &mut self,
        rule: Option<&Backoff>,
        max_in_flight: u32,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.expire(now);
        if self.in_flight >= max_in_flight {
            return Err(DomainError::RateLimited { retry_after: 1 });
        }
        if let Some(rule) = rule {
            if let Some(w) = self.window.filter(|w| !rule.is_over(w, now)) {
                rule.check(Some(&w), now)?;
                if w.count.saturating_add(self.in_flight) >= rule.limit {
                    return Err(DomainError::RateLimited { retry_after: 1 });
                }
            } else if self.in_flight >= rule.limit {
                return Err(DomainError::RateLimited { retry_after: 1 });
            }
        }
        self.in_flight += 1;
        self.lease_until = Some(now.plus(LEASE_SECONDS));
        Ok(())
    }

    /// Settles one reserved attempt.
    pub fn settle(&mut self, rule: &Backoff, outcome: Settled, now: Timestamp) {
        self.expire(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.lease_until = None;
        }
        match outcome {
            Settled::Failed => self.fail(rule, now),
            Settled::Succeeded => self.window = None,
            Settled::Released => {}
        }
    }

    /// Counts a failure that needed no reservation (decided in one step by the caller).
    pub fn fail(&mut self, rule: &Backoff, now: Timestamp) {
        let w = self.window.get_or_insert(Backoff::first(now));
        rule.record(w, now);
    }

    /// Forgets the failures (a right answer given in one step).
    pub fn reset(&mut self) {
        self.window = None;
    }

    /// `Err(RateLimited)` while the window is full (for checks decided in one step).
    pub fn check(&self, rule: &Backoff, now: Timestamp) -> Result<(), DomainError> {
        rule.check(self.window.as_ref(), now)
    }

    /// Whether nothing is left to remember at `now`: no attempt in flight, no live window.
    pub fn is_quiet(&self, rule: &Backoff, now: Timestamp) -> bool {
        let mut live = *self;
        live.expire(now);
        live.in_flight == 0 && self.window.is_none_or(|w| rule.is_over(&w, now))
    }
}

/// The rules for password attempts, enforced by the user actors for accounts and by
/// the API's tables for emails that name none.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRules {
    /// Failures per account in the window; `None` when rate limits are off.
    pub account: Option<Backoff>,
    /// Wrong second-factor answers per account in the window; `None` when rate limits are off.
    pub mfa: Option<Backoff>,
    /// Hashes one account may have queued or running (always enforced).
    pub max_in_flight: u32,
}

impl AttemptRules {
    /// `enabled` is `rate_limit.enabled`; the limits count within `window` seconds.
    pub fn new(enabled: bool, account: u32, mfa: u32, window: u64, max_in_flight: u32) -> Self {
        let limited = |limit| enabled.then_some(Backoff { limit, window });
        Self {
            account: limited(account),
            mfa: limited(mfa),
            max_in_flight,
        }
    }

    /// The rule a settlement records under: the configured one, or (limits off) one that
    /// never refuses, so that only the cap in flight is kept.
    pub fn account_or_unlimited(&self) -> Backoff {
        self.account.unwrap_or(Backoff {
            limit: u32::MAX,
            window: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn reservations_never_settled_are_given_back_after_their_lease() {
        let rule = Backoff {
            limit: 10,
            window: 900,
        };
        let mut a = Attempts::default();
        a.reserve(Some(&rule), 2, T0).unwrap();
        a.reserve(Some(&rule), 2, T0).unwrap();
        assert!(a
            .reserve(Some(&rule), 2, T0.plus(LEASE_SECONDS - 1))
            .is_err());
        // The node that reserved them died: the account is not locked for good.
        a.reserve(Some(&rule), 2, T0.plus(LEASE_SECONDS)).unwrap();
        a.settle(&rule, Settled::Failed, T0.plus(LEASE_SECONDS));
        assert!(a.is_quiet(&rule, T0.plus(LEASE_SECONDS + 900)));
        assert_eq!(a.window.map(|w| w.count), Some(1));
    }

    #[test]
    fn the_limit_holds_until_the_window_passes() {
        let b = Backoff {
            limit: 3,
            window: 60,
        };
        let mut w = Backoff::first(T0);
        for _ in 0..3 {
            assert!(b.check(Some(&w), T0).is_ok());
            b.record(&mut w, T0);
        }
        assert_eq!(
            b.check(Some(&w), T0.plus(10)),
            Err(DomainError::RateLimited { retry_after: 50 })
        );
        assert!(b.check(Some(&w), T0.plus(60)).is_ok());
        b.record(&mut w, T0.plus(60));
        assert_eq!(w.count, 1, "a failure after the window starts a new one");
        assert!(b.check(None, T0).is_ok());
    }

    const RULE: Backoff = Backoff {
        limit: 10,
        window: 900,
    };

    #[test]
    fn parallel_reservations_cannot_pass_the_limit_together() {
        let mut a = Attempts::default();
        let mut granted = 0;
        for _ in 0..30 {
            if a.reserve(Some(&RULE), 100, T0).is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 10, "attempts in flight count as failures");
        for _ in 0..10 {
            a.settle(&RULE, Settled::Failed, T0);
        }
        assert!(matches!(
            a.reserve(Some(&RULE), 100, T0.plus(1)),
            Err(DomainError::RateLimited { retry_after: 899 })
        ));
        assert!(a.reserve(Some(&RULE), 100, T0.plus(900)).is_ok());
    }

    #[test]
    fn the_cap_in_flight_holds_without_a_limit() {
        let mut a = Attempts::default();
        assert!(a.reserve(None, 2, T0).is_ok());
        assert!(a.reserve(None, 2, T0).is_ok());
        assert!(a.reserve(None, 2, T0).is_err());
        a.settle(&RULE, Settled::Failed, T0);
        assert!(a.reserve(None, 2, T0).is_ok());
    }

    #[test]
    fn success_resets_and_quiet_means_forgettable() {
        let mut a = Attempts::default();
        assert!(a.is_quiet(&RULE, T0));
        a.reserve(Some(&RULE), 2, T0).unwrap();
        assert!(!a.is_quiet(&RULE, T0));
        a.settle(&RULE, Settled::Failed, T0);
        assert!(!a.is_quiet(&RULE, T0.plus(899)));
        assert!(a.is_quiet(&RULE, T0.plus(900)));
        a.reserve(Some(&RULE), 2, T0).unwrap();
        a.settle(&RULE, Settled::Succeeded, T0);
        assert_eq!(a, Attempts::default());
    }
}
