//! What the directory and every user actor share: the published views, the API-key cache, the
//! store and the keys. It lives apart from both so that the actor never reaches into the
//! directory (and the directory's actor map stays the directory's own).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use super::passkeys::LoginTable;
use super::DirectoryConfig;
use crate::delivery::Sender;
use crate::domain::ids::UserId;
use crate::domain::passkeys::Decoys;
use crate::domain::secrets::{DataKey, ServerKey};
use crate::domain::user::UserState;
use crate::store::Store;

/// A published view and the activity clock it shares with its actor.
#[derive(Clone)]
pub(crate) struct ViewEntry {
    pub(crate) state: Arc<UserState>,
    /// Seconds (on [`Shared::uptime_secs`]) of the user's last read or write.
    pub(crate) activity: Arc<AtomicU64>,
}

/// User id → the immutable state readers use without a hop to the actor. Only the user's
/// actor publishes (before it answers a change); the actor forgets its view when it retires.
#[derive(Default)]
pub(crate) struct Views {
    map: DashMap<UserId, ViewEntry>,
}

impl Views {
    /// Makes `state` what readers of its user see from now on.
    pub(crate) fn publish(&self, state: Arc<UserState>, activity: Arc<AtomicU64>) {
        self.map.insert(state.id, ViewEntry { state, activity });
    }

    /// Drops the view of `id` if it is still `mine` (a newer actor may have published since).
    pub(crate) fn forget(&self, id: UserId, mine: &Arc<UserState>) {
        self.map.remove_if(&id, |_, v| Arc::ptr_eq(&v.state, mine));
    }

    /// Drops the view of `id`, whoever published it (another node changed the user).
    pub(crate) fn drop_user(&self, id: UserId) {
        self.map.remove(&id);
    }

    /// Drops every view.
    pub(crate) fn drop_all(&self) {
        self.map.clear();
    }

    pub(crate) fn get(&self, id: UserId) -> Option<ViewEntry> {
        self.map.get(&id).map(|v| v.clone())
    }

    /// Users whose last activity is at least `idle` seconds before `now`.
    pub(crate) fn idle(&self, now: u64, idle: u64) -> Vec<UserId> {
        self.map
            .iter()
            .filter(|v| now.saturating_sub(v.activity.load(Ordering::Relaxed)) >= idle)
            .map(|v| *v.key())
            .collect()
    }
}

pub(crate) struct Shared {
    pub(crate) views: Views,
    pub(crate) store: Arc<dyn Store>,
    /// API-key digest → user, a cache of the store's index. Entries are checked against the
    /// user's view on every use, and dropped when the key is rotated.
    pub(crate) api_keys: DashMap<[u8; 32], UserId>,
    pub(crate) delivery: Arc<dyn Sender>,
    /// Derives refresh-token secrets and code hashes (see `domain::secrets`).
    pub(crate) key: ServerKey,
    /// Seals TOTP secrets at rest.
    pub(crate) data_key: DataKey,
    pub(crate) config: DirectoryConfig,
    /// Login ceremonies not tied to a user's actor: usernameless ones with their state, and the
    /// route of each named one (see `actors/passkeys.rs`).
    pub(crate) logins: LoginTable,
    /// The decoy credentials of emails without passkeys, keyed from the server key.
    pub(crate) decoys: Option<Decoys>,
    /// The origin of the activity clock: a monotonic clock, so idling is immune to wall-clock
    /// jumps.
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        keys: (ServerKey, DataKey),
        delivery: Arc<dyn Sender>,
        config: DirectoryConfig,
    ) -> Self {
        let decoy_key = keys.0.digest("webauthn-decoy-credentials", b"");
        let decoys = Decoys::new(&decoy_key)
            .inspect_err(|e| tracing::error!(error = %e, "no passkey decoys"))
            .ok();
        Self {
            views: Views::default(),
            store,
            api_keys: DashMap::new(),
            delivery,
            key: keys.0,
            data_key: keys.1,
            logins: LoginTable::new(config.passkeys.login_slots),
            decoys,
            config,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn uptime_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }
}
