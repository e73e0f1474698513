//! The actor layer: one [`user::UserActor`] per user, the only writer of that user's state, and
//! the [`directory::Directory`] that finds, starts and retires them.
//!
//! The API layer talks to actors only through the directory, and the directory only through
//! messages, so either side can change without the other.

pub mod admin;
pub mod directory;
pub mod identities;
pub mod messages;
pub mod passkeys;
mod shared;
pub mod user;

pub use directory::{Directory, DirectoryConfig, DirectoryError, PasskeySettings};
