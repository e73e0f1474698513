//! Persistence behind one trait, so the engine (embedded sled by default, or PostgreSQL) can be
//! chosen without touching the actors. A user's state is one versioned snapshot; cross-user
//! lookups (email → user, API-key hash → user, passkey credential id → user, provider identity
//! → user) are index entries written in the same batch as the snapshot that changes them.
//!
//! Beside the users, the store keeps single-use pending entries with an expiry (the steps of an
//! OpenID Connect sign-in, which may each reach another node): put under a digest of their
//! secret, taken atomically, bounded in number.

pub mod codec;
pub mod commit;
mod legacy;
pub mod postgres;
pub mod sled;

use std::path::Path;
use std::sync::Arc;

use crate::config::{Engine, StorageConfig};
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;
use crate::keys::KeyFiles;

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
    /// An identity index claim found the (provider, subject) linked to another user; nothing
    /// was written.
    #[error("the identity is linked to another user")]
    IdentityTaken,
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
    /// The provider identity with this index key (`domain::identities::index_key`) is now
    /// linked to the user (refused with [`StoreError::IdentityTaken`] if another user has it).
    IdentityPut(Vec<u8>),
    /// The provider identity with this index key is linked to no one any more.
    IdentityDelete(Vec<u8>),
}

/// What registration's atomic claim of an email found.
#[derive(Debug)]
pub enum Created {
    Yes(Ticket),
    EmailTaken,
    /// One of the user's provider identities is linked to another user.
    IdentityTaken,
}

/// What another node changed, as a shared engine tells the nodes that cache its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// This user's snapshot was committed at `revision`.
    User { id: UserId, revision: u64 },
    /// Anything may have changed (the engine lost track: a dropped listener connection).
    Everything,
    /// The shared key material changed (a signing key rotation).
    Keys,
}

/// Receives the changes of other nodes; called on the engine's own thread, so it must be quick.
pub type Watcher = Arc<dyn Fn(Changed) + Send + Sync>;

/// The storage engine. Methods are synchronous and fast (they write to the engine's memory and
/// log); durability is awaited separately through the returned [`Ticket`].
pub trait Store: Send + Sync + 'static {
    fn load_user(&self, id: UserId) -> Result<Option<UserState>, StoreError>;
    fn user_by_email(&self, email_key: &str) -> Result<Option<UserId>, StoreError>;
    fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, StoreError>;
    /// The user a passkey's credential id is registered to.
    fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, StoreError>;
    /// The user a provider identity (its `domain::identities::index_key`) is linked to.
    fn user_by_identity(&self, key: &[u8]) -> Result<Option<UserId>, StoreError>;
    /// Claims `state.email_key` and the index keys of `state.identities`, and writes the first
    /// snapshot and the tenant record, all or none.
    fn create_user(&self, state: &UserState) -> Result<Created, StoreError>;
    /// Writes a snapshot and the index changes it implies, all or none. An engine shared by
    /// several nodes writes it only over `state.revision - 1` (the revision it was derived from)
    /// and answers [`StoreError::Conflict`] otherwise.
    fn save_user(&self, state: &UserState, index: &[IndexChange]) -> Result<Ticket, StoreError>;
    /// Every user id, for maintenance and export.
    fn user_ids(&self) -> Result<Vec<UserId>, StoreError>;
    /// Keeps `value` under `key` (a digest of the entry's secret) until `expires_at`, for
    /// every node to see at once. Expired entries are swept; if `max` live entries remain,
    /// nothing is kept and the answer is `false`. Not awaited for durability: a pending entry
    /// lost in a crash is a sign-in to begin again.
    fn put_pending(
        &self,
        key: &[u8; 32],
        value: &[u8],
        expires_at: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<bool, StoreError>;
    /// Takes the entry under `key` atomically: of two takers, one gets it. `None` if unknown,
    /// taken already or expired (an expired one is removed all the same).
    fn take_pending(&self, key: &[u8; 32], now: Timestamp) -> Result<Option<Vec<u8>>, StoreError>;
    /// The group committer that makes tickets durable.
    fn commit(&self) -> &GroupCommit;
    /// Makes everything durable and stops the committer (at shutdown).
    fn close(&self);
    /// Whether other nodes write to this engine too: then the user actors cannot keep
    /// anything that must hold across nodes (attempt counters) in memory only.
    fn shared(&self) -> bool {
        false
    }
    /// The revision of the user's snapshot as stored now, from an engine other nodes write
    /// too (`None` from one only this node writes, whose actors are never stale).
    fn stored_revision(&self, _id: UserId) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// A user's attempt counters, kept by an engine several nodes share (elsewhere they live
    /// in the user's actor): their version (0 if never written) and record.
    fn load_attempts(&self, _id: UserId) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        Ok((0, None))
    }
    /// Writes a user's attempt counters over version `read` (as [`Store::load_attempts`]
    /// gave it), durably; [`StoreError::Conflict`] if another node wrote them since.
    fn save_attempts(&self, _id: UserId, _read: u64, _record: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Starts telling `watcher` of what other nodes commit. An engine only this node writes
    /// has nothing to tell.
    fn watch(&self, _watcher: Watcher) {}
    /// Starts reading the users into the engine's cache in the background, so that their first
    /// requests after a start find them there (the server calls it; the admin commands do not).
    /// An engine with no cache of its own has nothing to do.
    fn prewarm(&self) {}
    /// Where this engine keeps the key files, if it keeps them (nodes sharing it need the same
    /// keys); `None`: in the data dir.
    fn key_files(&self) -> Option<Arc<dyn KeyFiles>> {
        None
    }
}

/// Where the key files of a server on `store` with `data_dir` are.
pub fn key_files(store: &dyn Store, data_dir: &Path) -> Arc<dyn KeyFiles> {
    store
        .key_files()
        .unwrap_or_else(|| Arc::new(data_dir.to_path_buf()))
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
        Engine::Postgres => Arc::new(postgres::PgStore::open(data_dir, storage)?),
    })
}
