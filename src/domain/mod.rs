//! The rules of bp-auth as pure functions and plain data: no actix, no sled, no clock.
//!
//! Time is always passed in as a [`time::Timestamp`], so every rule ("the fifth wrong code voids
//! it", "reuse of a used refresh token revokes its family") is unit-tested with a fixed clock.

pub mod apikey;
pub mod backoff;
pub mod codes;
pub mod credentials;
pub mod entitlements;
pub mod error;
pub mod events;
pub mod identities;
pub mod ids;
pub mod mfa;
pub mod passkeys;
pub mod password;
pub mod plans;
pub mod secrets;
pub mod sessions;
pub mod time;
pub mod tokens;
pub mod user;

pub use error::DomainError;
