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

use super::error::DomainError;
use super::time::Timestamp;

/// One key's failures in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

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
}
