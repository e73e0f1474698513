//! The sled engine: the only module that imports sled.
//!
//! Trees: `users` (user id → snapshot), `history` (user id → security history), `emails`
//! (lowercase email → user id), `tenants` (tenant id → record), `api_keys` (key digest → user
//! id), `passkeys` (WebAuthn credential id → user id), `identities` (provider identity index key
//! → user id), `pending` (digest → expiry and a single-use entry). Changes that touch more than
//! one tree run in one sled transaction, so an index never points at a snapshot that was not
//! written.
//!
//! A snapshot is written without its history (`codec::SPLIT_FLAG`), and the history only when
//! it changed: a full history is nine tenths of a user's bytes, and rewriting it with every
//! refresh was most of what a refresh wrote (sled rewrites a whole leaf of 16 users every few
//! writes to it, so each byte of a snapshot is written several times over).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{codec, Created, GroupCommit, IndexChange, Store, StoreError, Ticket};
use crate::config::StorageConfig;
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;

/// The longest pending entries go unswept while there is room (a full table sweeps at once).
const SWEEP_EVERY_SECONDS: i64 = 60;

pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    history: sled::Tree,
    emails: sled::Tree,
    tenants: sled::Tree,
    api_keys: sled::Tree,
    passkeys: sled::Tree,
    identities: sled::Tree,
    pending: sled::Tree,
    /// Entries in `pending` (counted at open, then kept), so that the bound costs no scan.
    pending_len: AtomicUsize,
    /// When `pending` was last swept of expired entries (Unix seconds).
    pending_swept: AtomicI64,
    commit: GroupCommit,
    /// The page cache's size, what [`Store::prewarm`] may fill.
    cache_bytes: u64,
    /// Tells a prewarm still running that the store is closing.
    closing: Arc<AtomicBool>,
}

/// sled reports another process's lock on the data dir as an I/O error: either the OS's
/// `WouldBlock` itself or its own message naming the lock.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Locked
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked,
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Io(other.to_string()),
        }
    }
}

fn user_id(bytes: &[u8]) -> Result<UserId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("index value is not a user id".into()))?;
    Ok(UserId::from_bytes(arr))
}

/// Opens the database under `dir` once and closes it again, so that sled writes its snapshot
/// (see [`super::checkpoint`]). The threads of a store just dropped may hold the lock a moment
/// longer: it waits up to ten seconds for them, then gives up (the next start replays instead).
pub fn checkpoint(dir: &Path) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => {
                db.flush()?;
                return Ok(());
            }
            Err(e) => match StoreError::from(e) {
                StoreError::Locked if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return Err(other),
            },
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// The bytes of sled's page cache: `cache_mb` when set, else a quarter of the memory the
/// process may use, at least 256 MiB (the old fixed size). Why not fixed: a page the cache does
/// not hold is read back from sled's log, and a write to it pages it in first, so a cache much
/// smaller than the data dir makes a user's first request and its writes several times dearer
/// (issue 16: a million users in a 1.4 GiB dir against 256 MiB). The cache fills only as pages
/// are read, so a small data dir costs no more memory than before.
fn cache_capacity(cache_mb: u64, available: Option<u64>) -> u64 {
    if cache_mb > 0 {
        return cache_mb.saturating_mul(MIB);
    }
    available.map_or(0, |m| m / 4).max(256 * MIB)
}

/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit when
/// that is lower (a container's), on Linux; `None` where neither can be read.
fn available_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib = m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
    });
    let machine = machine.map(|kib| kib.saturating_mul(1024));
    // cgroup v2, then v1; "max" (or v1's huge sentinel) means no limit.
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match (machine, limit) {
        (Some(m), Some(l)) => Some(m.min(l)),
        (m, l) => m.or(l),
    }
}

/// Reads `trees` in order, and so their pages into sled's cache, until `budget` bytes of keys
/// and values were read or `closing` is set; the bytes read. Why: after a start every page is
/// on disk, and a user's first request (and a write to it) pays for paging its leaf in; at a
/// million users that is most first requests (issue 16's cost curves). The users come first
/// (every load reads them), then their histories and the email index (logins).
fn prewarm(trees: &[sled::Tree], budget: u64, closing: &AtomicBool) -> u64 {
    let mut read = 0u64;
    for tree in trees {
        for entry in tree.iter() {
            if read >= budget || closing.load(Ordering::Relaxed) {
                return read;
            }
            match entry {
                Ok((k, v)) => read += (k.len() + v.len()) as u64,
                // Whatever it is, the request that needs the page will meet it and answer.
                Err(_) => return read,
            }
        }
    }
    read
}

impl SledStore {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path, storage: &StorageConfig) -> Result<Self, StoreError> {
        let cache_bytes = cache_capacity(storage.cache_mb, available_memory());
        let db = sled::Config::new()
            .path(dir)
            // The group committer owns flushing; sled's own timer would only add fsyncs.
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
            .open()?;
        let users = db.open_tree("users")?;
        let history = db.open_tree("history")?;
        let emails = db.open_tree("emails")?;
        let tenants = db.open_tree("tenants")?;
        let api_keys = db.open_tree("api_keys")?;
        let passkeys = db.open_tree("passkeys")?;
        let identities = db.open_tree("identities")?;
        let pending = db.open_tree("pending")?;
        let pending_len = AtomicUsize::new(pending.len());
        let flush_db = db.clone();
        // sled 0.34's flush ends in `sync_file_range`, which writes the log's pages but neither
        // the file's metadata (the log grows as it appends, so its new length and blocks are
        // metadata) nor the disk's write cache: after a power cut, what it "flushed" may be
        // gone. sled's own timer, which we turn off above, adds an fsync for that; so do we,
        // after every flush: fdatasync of the log file (through a descriptor of our own: the
        // call is per file, not per descriptor) covers both.
        let log = std::fs::File::open(dir.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open sled's log file: {e}")))?;
        let commit = GroupCommit::start(
            storage.durability,
            Duration::from_millis(storage.flush_every_ms.max(1)),
            Box::new(move || {
                let written = flush_db.flush()?;
                log.sync_data()
                    .map_err(|e| StoreError::Io(format!("fsync: {e}")))?;
                Ok(written)
            }),
        )?;
        Ok(Self {
            db,
            users,
            history,
            emails,
            tenants,
            api_keys,
            passkeys,
            identities,
            pending,
            pending_len,
            pending_swept: AtomicI64::new(0),
            commit,
            cache_bytes,
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Removes the expired pending entries and recounts the rest.
    fn sweep_pending(&self, now: Timestamp) -> Result<(), StoreError> {
        let mut live = 0;
        for entry in self.pending.iter() {
            let (key, value) = entry?;
            match pending_expiry(&value) {
                Some(expires) if expires > now => live += 1,
                _ => {
                    self.pending.remove(key)?;
                }
            }
        }
        self.pending_len.store(live, Ordering::Relaxed);
        self.pending_swept.store(now.0, Ordering::Relaxed);
        Ok(())
    }
}

/// A pending entry is stored as its expiry (8 bytes, big-endian Unix seconds), then its value.
fn pending_expiry(stored: &[u8]) -> Option<Timestamp> {
    let head: [u8; 8] = stored.get(..8)?.try_into().ok()?;
    Some(Timestamp(i64::from_be_bytes(head)))
}

/// Claims `key` in `tree` for `user` unless another user holds it.
fn claim(
    tree: &sled::transaction::TransactionalTree,
    key: &[u8],
    user: &UserId,
    taken: StoreError,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some(owner) = tree.get(key)? {
        if owner.as_ref() != user.as_bytes() {
            return Err(ConflictableTransactionError::Abort(taken));
        }
    }
    tree.insert(key, user.as_bytes())?;
    Ok(())
}

/// Releases `key` in `tree` if `user` holds it: a stale delete cannot release another's.
fn release(
    tree: &sled::transaction::TransactionalTree,
    key: &[u8],
    user: &UserId,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some(owner) = tree.get(key)? {
        if owner.as_ref() == user.as_bytes() {
            tree.remove(key)?;
        }
    }
    Ok(())
}

impl SledStore {
    /// The history record to write with `state`'s snapshot, if its history changed since the
    /// stored one: the actor is the only writer of its user, and every change of a history
    /// counts up its `recorded`, so an equal count is the same history.
    fn history_to_write(&self, state: &UserState) -> Result<Option<Vec<u8>>, StoreError> {
        let h = &state.history;
        let stored = self.history.get(state.id.as_bytes())?;
        let unchanged = match stored.as_deref().map(codec::history_recorded) {
            Some(Some(recorded)) => recorded == h.recorded(),
            Some(None) => false,
            None => h.recorded() == 0 && h.is_empty(),
        };
        if unchanged {
            Ok(None)
        } else {
            codec::encode_history(h).map(Some)
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        Store::close(self);
    }
}

fn flatten(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store for SledStore {
    fn load_user(&self, id: UserId) -> Result<Option<UserState>, StoreError> {
        let Some(bytes) = self.users.get(id.as_bytes())? else {
            return Ok(None);
        };
        let mut state = codec::decode_user(&bytes)?;
        // Older snapshots hold their history; a split one's is in its own tree (none yet for
        // a user who never had an event).
        if codec::is_split(&bytes) {
            if let Some(h) = self.history.get(id.as_bytes())? {
                state.history = codec::decode_history(&h)?;
            }
        }
        Ok(Some(state))
    }

    fn user_by_email(&self, email_key: &str) -> Result<Option<UserId>, StoreError> {
        self.emails
            .get(email_key.as_bytes())?
            .map(|v| user_id(&v))
            .transpose()
    }

    fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
        self.api_keys.get(digest)?.map(|v| user_id(&v)).transpose()
    }

    fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, StoreError> {
        self.passkeys
            .get(credential_id)?
            .map(|v| user_id(&v))
            .transpose()
    }

    fn user_by_identity(&self, key: &[u8]) -> Result<Option<UserId>, StoreError> {
        self.identities.get(key)?.map(|v| user_id(&v)).transpose()
    }

    fn create_user(&self, state: &UserState) -> Result<Created, StoreError> {
        let snapshot = codec::encode_split(state)?;
        let tenant = codec::encode(&state.tenant)?;
        let keys: Vec<Vec<u8>> = state.identities.iter().map(|i| i.index_key()).collect();
        let history = self.history_to_write(state)?;
        let trees = (
            &self.users,
            &self.emails,
            &self.tenants,
            &self.identities,
            &self.history,
        );
        let created = trees.transaction(|(users, emails, tenants, identities, histories)| {
            if emails.get(state.email_key.as_bytes())?.is_some() {
                return Ok(false);
            }
            // An identity another user holds aborts the whole transaction.
            for key in &keys {
                claim(identities, key, &state.id, StoreError::IdentityTaken)?;
            }
            emails.insert(state.email_key.as_bytes(), state.id.as_bytes())?;
            users.insert(state.id.as_bytes(), snapshot.as_slice())?;
            tenants.insert(state.tenant.id.as_bytes(), tenant.as_slice())?;
            if let Some(h) = &history {
                histories.insert(state.id.as_bytes(), h.as_slice())?;
            }
            Ok(true)
        });
        match created {
            Ok(true) => Ok(Created::Yes(self.commit.written())),
            Ok(false) => Ok(Created::EmailTaken),
            Err(TransactionError::Abort(StoreError::IdentityTaken)) => Ok(Created::IdentityTaken),
            Err(e) => Err(flatten(e)),
        }
    }

    fn save_user(&self, state: &UserState, index: &[IndexChange]) -> Result<Ticket, StoreError> {
        let snapshot = codec::encode_split(state)?;
        let history = self.history_to_write(state)?;
        if index.is_empty() && history.is_none() {
            self.users.insert(state.id.as_bytes(), snapshot)?;
        } else {
            let tenant = codec::encode(&state.tenant)?;
            let trees = (
                &self.users,
                &self.api_keys,
                &self.tenants,
                &self.emails,
                &self.passkeys,
                &self.identities,
                &self.history,
            );
            trees
                .transaction(
                    |(users, api_keys, tenants, emails, passkeys, identities, histories)| {
                        for change in index {
                            match change {
                                IndexChange::ApiKeyPut(d) => {
                                    api_keys.insert(&d[..], state.id.as_bytes())?;
                                }
                                IndexChange::ApiKeyDelete(d) => {
                                    api_keys.remove(&d[..])?;
                                }
                                IndexChange::Tenant => {
                                    tenants
                                        .insert(state.tenant.id.as_bytes(), tenant.as_slice())?;
                                }
                                IndexChange::EmailMove { from, to } => {
                                    if let Some(owner) = emails.get(to.as_bytes())? {
                                        if owner.as_ref() != state.id.as_bytes() {
                                            return Err(ConflictableTransactionError::Abort(
                                                StoreError::EmailTaken,
                                            ));
                                        }
                                    }
                                    emails.insert(to.as_bytes(), state.id.as_bytes())?;
                                    emails.remove(from.as_bytes())?;
                                }
                                IndexChange::PasskeyPut(credential_id) => {
                                    claim(
                                        passkeys,
                                        credential_id,
                                        &state.id,
                                        StoreError::PasskeyTaken,
                                    )?;
                                }
                                IndexChange::PasskeyDelete(credential_id) => {
                                    release(passkeys, credential_id, &state.id)?;
                                }
                                IndexChange::IdentityPut(key) => {
                                    claim(identities, key, &state.id, StoreError::IdentityTaken)?;
                                }
                                IndexChange::IdentityDelete(key) => {
                                    release(identities, key, &state.id)?;
                                }
                            }
                        }
                        users.insert(state.id.as_bytes(), snapshot.as_slice())?;
                        if let Some(h) = &history {
                            histories.insert(state.id.as_bytes(), h.as_slice())?;
                        }
                        Ok::<_, ConflictableTransactionError<StoreError>>(())
                    },
                )
                .map_err(flatten)?;
        }
        Ok(self.commit.written())
    }

    fn user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        self.users
            .iter()
            .keys()
            .map(|k| k.map_err(StoreError::from).and_then(|k| user_id(&k)))
            .collect()
    }

    fn put_pending(
        &self,
        key: &[u8; 32],
        value: &[u8],
        expires_at: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<bool, StoreError> {
        let stale = now.0 - self.pending_swept.load(Ordering::Relaxed) >= SWEEP_EVERY_SECONDS;
        if stale || self.pending_len.load(Ordering::Relaxed) >= max {
            self.sweep_pending(now)?;
        }
        if self.pending_len.load(Ordering::Relaxed) >= max {
            return Ok(false);
        }
        let mut stored = Vec::with_capacity(8 + value.len());
        stored.extend_from_slice(&expires_at.0.to_be_bytes());
        stored.extend_from_slice(value);
        if self.pending.insert(key, stored)?.is_none() {
            self.pending_len.fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn take_pending(&self, key: &[u8; 32], now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stored) = self.pending.remove(key)? else {
            return Ok(None);
        };
        // Saturating: a sweep may have recounted between our remove and this.
        let _ = self
            .pending_len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        Ok(match pending_expiry(&stored) {
            Some(expires) if expires > now => Some(stored[8..].to_vec()),
            _ => None,
        })
    }

    fn commit(&self) -> &GroupCommit {
        &self.commit
    }

    fn prewarm(&self) {
        let trees = vec![
            self.users.clone(),
            self.history.clone(),
            self.emails.clone(),
        ];
        // Half the cache: sled's pages take more room in memory than their bytes on disk, and
        // reading past what the cache holds would only evict what was just read.
        let budget = self.cache_bytes / 2;
        let closing = self.closing.clone();
        let spawned = std::thread::Builder::new()
            .name("bp-prewarm".into())
            .spawn(move || {
                // It yields to every request: the users it has not reached yet load as before.
                crate::hashing::Priority {
                    nice: 19,
                    idle: true,
                }
                .apply();
                let started = std::time::Instant::now();
                let read = prewarm(&trees, budget, &closing);
                tracing::info!(
                    bytes = read,
                    seconds = started.elapsed().as_secs_f64(),
                    "database cache prewarmed"
                );
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "database cache not prewarmed");
        }
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.commit.shutdown();
        let _ = self.db.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::domain::credentials::Email;
    use crate::domain::time::Timestamp;
    use crate::domain::user::NewUser;

    fn user(email: &str) -> UserState {
        UserState::register(
            NewUser {
                email: Email::parse(email).unwrap(),
                full_name: None,
                phone: None,
                password_hash: "$argon2id$x".into(),
            },
            Timestamp(1_800_000_000),
        )
    }

    fn open(dir: &Path) -> SledStore {
        let cfg = StorageConfig {
            durability: Durability::Flush,
            flush_every_ms: 500,
            actor_idle_seconds: 600,
            ..StorageConfig::default()
        };
        // sled's own background thread of a store just dropped can hold the lock a moment
        // longer on a loaded machine; a real restart is a new process.
        for _ in 0..100 {
            match SledStore::open(dir, &cfg) {
                Err(StoreError::Locked) => std::thread::sleep(std::time::Duration::from_millis(20)),
                other => return other.unwrap(),
            }
        }
        SledStore::open(dir, &cfg).unwrap()
    }

    #[test]
    fn the_cache_is_the_setting_or_a_quarter_of_memory_and_never_below_256_mib() {
        assert_eq!(cache_capacity(64, Some(64 << 30)), 64 * MIB);
        assert_eq!(cache_capacity(0, Some(24 << 30)), 6 << 30);
        assert_eq!(cache_capacity(0, Some(512 * MIB)), 256 * MIB);
        assert_eq!(cache_capacity(0, None), 256 * MIB);
        assert!(available_memory().is_some_and(|m| m > 0));
    }

    #[test]
    fn prewarm_reads_every_tree_in_turn_within_its_budget_and_stops_when_closing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        for i in 0u32..100 {
            a.insert(i.to_be_bytes(), vec![0u8; 96]).unwrap();
            b.insert(i.to_be_bytes(), vec![0u8; 46]).unwrap();
        }
        let trees = [a, b];
        let open = AtomicBool::new(false);
        // Everything: 100 entries of 100 bytes, then 100 of 50.
        assert_eq!(prewarm(&trees, u64::MAX, &open), 15_000);
        // A budget stops it at the first entry past it, in the first tree.
        assert_eq!(prewarm(&trees, 1_000, &open), 1_000);
        assert_eq!(prewarm(&trees, 10_050, &open), 10_050);
        // A closing store is not read at all.
        assert_eq!(prewarm(&trees, u64::MAX, &AtomicBool::new(true)), 0);
    }

    #[tokio::test]
    async fn create_claims_the_email_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = user("Ada@example.com");
        {
            let store = open(dir.path());
            let Created::Yes(t) = store.create_user(&a).unwrap() else {
                panic!("first claim must win")
            };
            store.commit().durable(t).await.unwrap();
            assert!(matches!(
                store.create_user(&user("ada@EXAMPLE.com")).unwrap(),
                Created::EmailTaken
            ));
        }
        let store = open(dir.path());
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), Some(a.id));
        assert_eq!(store.load_user(a.id).unwrap(), Some(a));
    }

    #[tokio::test]
    async fn index_changes_land_with_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut a = user("ada@example.com");
        store.create_user(&a).unwrap();
        a.revision = 5;
        let t = store
            .save_user(&a, &[IndexChange::ApiKeyPut([1; 32])])
            .unwrap();
        store.commit().durable(t).await.unwrap();
        assert_eq!(store.user_by_api_key(&[1; 32]).unwrap(), Some(a.id));
        assert_eq!(store.load_user(a.id).unwrap().unwrap().revision, 5);
        store
            .save_user(&a, &[IndexChange::ApiKeyDelete([1; 32])])
            .unwrap();
        assert_eq!(store.user_by_api_key(&[1; 32]).unwrap(), None);
        assert_eq!(store.user_ids().unwrap(), vec![a.id]);
    }

    #[test]
    fn the_history_is_kept_apart_and_written_only_when_it_changed() {
        use crate::domain::events::{EventKind, Origin};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut a = user("ada@example.com");
        let origin = Origin::new(None, Some("curl/8"), None);
        for _ in 0..50 {
            a.record(
                EventKind::LoginFailed,
                &origin,
                None,
                Timestamp(1_800_000_000),
            );
        }
        store.create_user(&a).unwrap();
        let raw = store.users.get(a.id.as_bytes()).unwrap().unwrap();
        assert!(codec::is_split(&raw));
        let whole = codec::encode(&a).unwrap();
        assert!(
            raw.len() * 2 < whole.len(),
            "{} vs {}",
            raw.len(),
            whole.len()
        );
        assert_eq!(store.load_user(a.id).unwrap(), Some(a.clone()));

        // A record with the same count is taken as the same history: a write that recorded
        // nothing leaves it alone (here a stand-in, to see it is not rewritten).
        let mut stand_in = crate::domain::events::History::default();
        for _ in 0..50 {
            stand_in.record(crate::domain::events::Event {
                at: Timestamp(1),
                kind: EventKind::Logout,
                ip: None,
                user_agent: None,
                session: None,
            });
        }
        let marker = codec::encode_history(&stand_in).unwrap();
        store
            .history
            .insert(a.id.as_bytes(), marker.as_slice())
            .unwrap();
        a.revision = 1;
        a.full_name = Some("Ada".into());
        store.save_user(&a, &[]).unwrap();
        let kept = store.history.get(a.id.as_bytes()).unwrap().unwrap();
        assert_eq!(kept.as_ref(), marker.as_slice(), "not rewritten");

        // A recorded event rewrites it, with the snapshot.
        a.revision = 2;
        a.record(EventKind::Login, &origin, None, Timestamp(1_800_000_001));
        store.save_user(&a, &[]).unwrap();
        assert_eq!(store.load_user(a.id).unwrap(), Some(a.clone()));

        // A whole (version 4) snapshot, as an older release wrote it, loads with its history
        // and is split at its next write.
        let mut b = user("bob@example.com");
        b.record(EventKind::Login, &origin, None, Timestamp(1_800_000_000));
        store.create_user(&b).unwrap();
        store.history.remove(b.id.as_bytes()).unwrap();
        store
            .users
            .insert(b.id.as_bytes(), codec::encode(&b).unwrap())
            .unwrap();
        assert_eq!(store.load_user(b.id).unwrap(), Some(b.clone()));
        b.revision = 1;
        store.save_user(&b, &[]).unwrap();
        let raw = store.users.get(b.id.as_bytes()).unwrap().unwrap();
        assert!(codec::is_split(&raw));
        assert_eq!(store.load_user(b.id).unwrap(), Some(b));
    }

    #[test]
    fn an_email_move_claims_the_new_address_or_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut a = user("ada@example.com");
        let b = user("bob@example.com");
        store.create_user(&a).unwrap();
        store.create_user(&b).unwrap();
        let before = store.load_user(a.id).unwrap();
        a.email_key = "bob@example.com".into();
        let to_b = IndexChange::EmailMove {
            from: "ada@example.com".into(),
            to: "bob@example.com".into(),
        };
        assert!(matches!(
            store.save_user(&a, &[to_b]),
            Err(StoreError::EmailTaken)
        ));
        assert_eq!(
            store.load_user(a.id).unwrap(),
            before,
            "the snapshot did not land"
        );
        assert_eq!(store.user_by_email("bob@example.com").unwrap(), Some(b.id));
        a.email_key = "ada@example.org".into();
        let to_free = IndexChange::EmailMove {
            from: "ada@example.com".into(),
            to: "ada@example.org".into(),
        };
        store.save_user(&a, &[to_free]).unwrap();
        assert_eq!(store.user_by_email("ada@example.org").unwrap(), Some(a.id));
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), None);
    }

    #[test]
    fn a_passkey_belongs_to_one_user_or_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut a = user("ada@example.com");
        let mut b = user("bob@example.com");
        store.create_user(&a).unwrap();
        store.create_user(&b).unwrap();
        let cred = vec![7u8; 32];
        a.revision = 1;
        store
            .save_user(&a, &[IndexChange::PasskeyPut(cred.clone())])
            .unwrap();
        assert_eq!(store.user_by_passkey(&cred).unwrap(), Some(a.id));
        // Claiming it again for its owner is fine; for another user it is refused whole.
        store
            .save_user(&a, &[IndexChange::PasskeyPut(cred.clone())])
            .unwrap();
        let before = store.load_user(b.id).unwrap();
        b.revision = 3;
        assert!(matches!(
            store.save_user(&b, &[IndexChange::PasskeyPut(cred.clone())]),
            Err(StoreError::PasskeyTaken)
        ));
        assert_eq!(store.load_user(b.id).unwrap(), before, "no snapshot landed");
        // Another user's delete does not release it; the owner's does.
        store
            .save_user(&b, &[IndexChange::PasskeyDelete(cred.clone())])
            .unwrap();
        assert_eq!(store.user_by_passkey(&cred).unwrap(), Some(a.id));
        store
            .save_user(&a, &[IndexChange::PasskeyDelete(cred.clone())])
            .unwrap();
        assert_eq!(store.user_by_passkey(&cred).unwrap(), None);
        assert_eq!(store.user_by_passkey(b"other").unwrap(), None);
    }
}
