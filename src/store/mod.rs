//! Persistence behind one trait, so the engine (embedded sled by default, or PostgreSQL) can be
//! chosen without touching the actors. A user's state is one versioned snapshot; cross-user
//! lookups (email → user, API-key hash → user, passkey credential id → user) are index entries
//! written in the same batch as the snapshot that changes them.

pub mod codec;
pub mod commit;
mod legacy;
pub mod postgres;
pub mod sled;

use std::path::Path;
use std::sync::Arc;

use crate::config::{Engine, StorageConfig};
use crate::domain::ids::UserId;
use crate::domain::user::UserState;

pub use commit::{GroupCommit, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("the data directory is in use by another bp-auth process")]
    Locked,
    /// An email index claim found the address taken by another user; nothing was written.
    #[error("the email is taken by another user")]
    EmailTaken,
    /// A passkey index claim found the credential id registered to another user; nothing was
    /// written.
    #[error("the passkey is registered to another user")]
    PasskeyTaken,
    /// The user changed since this snapshot's state was read (another node wrote it); nothing
    /// was written. The caller reloads the user and decides again.
    #[error("the user was changed concurrently")]
    Conflict,
}

/// A change to a cross-user index that must land atomically with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    /// The API key with this digest now belongs to the user.
    ApiKeyPut([u8; 32]),
    /// The API key with this digest no longer authenticates anyone.
    ApiKeyDelete([u8; 32]),
    /// The user's tenant record changed (its plan, say).
    Tenant,
    /// The user's address changed: claim `to` (refused with [`StoreError::EmailTaken`] if
    /// another user has it) and release `from`.
    EmailMove { from: String, to: String },
    /// The passkey with this credential id now belongs to the user (refused with
    /// [`StoreError::PasskeyTaken`] if another user has it).
    PasskeyPut(Vec<u8>),
    /// The passkey with this credential id no longer belongs to anyone.
    PasskeyDelete(Vec<u8>),
}

/// What registration's atomic claim of an email found.
#[derive(Debug)]
pub enum Created {
    Yes(Ticket),
    EmailTaken,
}

/// The storage engine. Methods are synchronous and fast (they write to the engine's memory and
/// log); durability is awaited separately through the returned [`Ticket`].
pub trait Store: Send + Sync + 'static {
    fn load_user(&self, id: UserId) -> Result<Option<UserState>, StoreError>;
    fn user_by_email(&self, email_key: &str) -> Result<Option<UserId>, StoreError>;
    fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, StoreError>;
    /// The user a passkey's credential id is registered to.
    fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, StoreError>;
    /// Claims `state.email_key` and writes the first snapshot and the tenant record, all or none.
    fn create_user(&self, state: &UserState) -> Result<Created, StoreError>;
    /// Writes a snapshot and the index changes it implies, all or none. An engine shared by
    /// several nodes writes it only over `state.revision - 1` (the revision it was derived from)
    /// and answers [`StoreError::Conflict`] otherwise.
    fn save_user(&self, state: &UserState, index: &[IndexChange]) -> Result<Ticket, StoreError>;
    /// Every user id, for maintenance and export.
    fn user_ids(&self) -> Result<Vec<UserId>, StoreError>;
    /// The group committer that makes tickets durable.
    fn commit(&self) -> &GroupCommit;
    /// Makes everything durable and stops the committer (at shutdown).
    fn close(&self);
}

/// Lets the engine's next open of a store closed cleanly be quick; call once every handle of it
/// is gone (after [`Store::close`] and the last drop).
///
/// sled 0.34 records where every page lives (its snapshot) only when it opens a database, and
/// at the next open replays every write made since: after a bulk import, or days of serving,
/// that is the whole log (measured here: 0.75 s for 100,000 users, several seconds for a
/// million). Opening it once more at a clean stop writes that snapshot then, while nobody
/// waits, so that the next start reads only the snapshot. After a crash the start still
/// replays the log. A no-op for PostgreSQL.
pub fn checkpoint(data_dir: &Path, storage: &StorageConfig) -> Result<(), StoreError> {
    match storage.engine {
        Engine::Sled => sled::checkpoint(&data_dir.join("db")),
        Engine::Postgres => Ok(()),
    }
}

/// Opens the configured engine (sled in the data dir, or PostgreSQL at `storage.postgres_url`):
/// the one place that names an engine.
pub fn open(data_dir: &Path, storage: &StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match storage.engine {
        Engine::Sled => Arc::new(sled::SledStore::open(&data_dir.join("db"), storage)?),
        Engine::Postgres => Arc::new(postgres::PgStore::open(storage)?),
    })
}
