//! The one place that reads the wall clock. Everything below `domain` takes time as a
//! parameter; `clippy.toml` forbids `SystemTime::now` elsewhere so that stays true.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::time::Timestamp;

/// Now, in whole Unix seconds.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}
