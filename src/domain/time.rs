//! Timestamps as whole Unix seconds, formatted as RFC 3339 in UTC with a `Z` suffix.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch. Whole seconds are all the contract shows and all JWTs carry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus(self, seconds: u64) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
        )
    }

    /// Seconds from `self` until `later`, zero if `later` has passed.
    pub fn until(self, later: Timestamp) -> u64 {
        u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0)
    }

    /// `2026-11-28T06:15:51Z`.
    pub fn rfc3339(self) -> String {
        chrono::DateTime::from_timestamp(self.0, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z() {
        assert_eq!(Timestamp(1_795_846_551).rfc3339(), "2026-11-28T06:15:51Z");
    }

    #[test]
    fn until_never_negative() {
        assert_eq!(Timestamp(10).until(Timestamp(5)), 0);
        assert_eq!(Timestamp(10).plus(5), Timestamp(15));
    }
}
