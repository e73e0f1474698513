//! Finds a user's actor, starting it from its snapshot on demand, and answers reads from the
//! views the actors publish, without a hop to the actor.
//!
//! The directory owns the map user id → actor address and the arbiters the actors run on (one
//! per core by default), chosen by user id so placement is stable and the HTTP workers stay
//! free for parsing and token checks. What it shares with the actors (views, caches, store,
//! keys) is `Shared` (`actors/shared.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Handler, MailboxError, Message};
use dashmap::DashMap;

use super::messages::{ActorError, Discard, Done, RetireIfIdle};
use super::shared::Shared;
use super::user::UserActor;
use crate::delivery::Sender;
use crate::domain::backoff::AttemptRules;
use crate::domain::codes::CodePolicy;
use crate::domain::error::DomainError;
use crate::domain::ids::UserId;
use crate::domain::secrets::{DataKey, ServerKey};
use crate::domain::sessions::SessionPolicy;
use crate::domain::user::UserState;
use crate::store::{Changed, Created, Store, StoreError, Ticket};

/// What the actors need to know from the configuration.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub policy: SessionPolicy,
    pub idle: Duration,
    pub phone_codes: CodePolicy,
    pub reactivate_codes: CodePolicy,
    pub email_codes: CodePolicy,
    pub reset_codes: CodePolicy,
    /// Limits on password checks and second-factor answers per account.
    pub attempts: AttemptRules,
    /// The WebAuthn relying party and its ceremonies' lifetime.
    pub passkeys: PasskeySettings,
    /// The most pending sign-in entries (begun flows, login codes) the store keeps at once
    /// (`oidc.max_pending`): each is created by a request, so their number is bounded.
    pub oidc_max_pending: usize,
}

/// What the passkey ceremonies need from the configuration.
#[derive(Debug, Clone)]
pub struct PasskeySettings {
    /// The relying party (`webauthn.*`), built once at start.
    pub webauthn: Arc<webauthn_rs::Webauthn>,
    /// How long a ceremony waits for its answer (`webauthn.challenge_ttl_seconds`).
    pub challenge_ttl: u64,
    /// Slots of the table of login ceremonies not yet tied to a user (a fixed bound, like every
    /// table keyed by client input: `rate_limit.max_tracked_addresses`).
    pub login_slots: usize,
}

/// Why the directory could not give a verdict: the one error type of this layer, so that the
/// callers never see the store's.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no such user")]
    UnknownUser,
    /// The store refused a read or a write, or a write could not be made durable.
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the user's actor is unavailable")]
    Unavailable,
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// A WebAuthn ceremony could not be started.
    #[error("webauthn: {0}")]
    Ceremony(String),
}

impl From<StoreError> for DirectoryError {
    fn from(e: StoreError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// Shards of the invalidation counters (see [`Inner::announced`]).
const EPOCH_SHARDS: usize = 64;

struct Inner {
    shared: Arc<Shared>,
    actors: DashMap<UserId, Addr<UserActor>>,
    /// Counts the other nodes' announced changes, by shard of user id: a load that saw the
    /// count move while it read the store may hold what the change replaced, so it loads again
    /// (an announcement can arrive before the view it must drop is published).
    announced: [AtomicU64; EPOCH_SHARDS],
    /// Where actors are started; indexed by [`arbiter_index`].
    handles: Vec<ArbiterHandle>,
    /// The arbiters themselves, kept to stop their threads at shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
}

/// The handle the API layer holds; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl Directory {
    /// Starts `threads` arbiters for the actors (at least one). Must run inside an actix system.
    pub fn new(
        store: Arc<dyn Store>,
        keys: (ServerKey, DataKey),
        delivery: Arc<dyn Sender>,
        config: DirectoryConfig,
        threads: usize,
    ) -> Self {
        let arbiters: Vec<Arbiter> = (0..threads.max(1)).map(|_| Arbiter::new()).collect();
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(store, keys, delivery, config)),
                actors: DashMap::new(),
                announced: std::array::from_fn(|_| AtomicU64::new(0)),
                handles: arbiters.iter().map(Arbiter::handle).collect(),
                arbiters: Mutex::new(arbiters),
            }),
        }
    }

    /// What the actors share, for the directory's other files (`actors/passkeys.rs`).
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Stops the actors' threads (at shutdown, after the last request).
    pub fn stop(&self) {
        let arbiters = match self.inner.arbiters.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for a in arbiters {
            a.stop();
        }
    }

    /// Starts the sweeper that retires idle actors: one timer for all of them, rather than one
    /// per actor, so a hundred thousand resident users cost no wake-ups of their own.
    pub fn start_sweeper(&self) {
        let Some(arbiter) = self.inner.handles.first() else {
            return;
        };
        let inner = self.inner.clone();
        let idle = inner.shared.config.idle;
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        arbiter.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let stale = inner
                    .shared
                    .views
                    .idle(inner.shared.uptime_secs(), idle.as_secs());
                for id in stale {
                    let addr = inner.actors.get(&id).map(|a| a.clone());
                    if let Some(addr) = addr {
                        let inner = inner.clone();
                        actix::spawn(async move {
                            if let Ok(true) = addr.send(RetireIfIdle).await {
                                inner.actors.remove_if(&id, |_, a| *a == addr);
                            }
                        });
                    }
                }
            }
        });
    }

    /// Whether the store can be trusted: false once a flush has failed, until a restart.
    pub fn ready(&self) -> bool {
        !self.inner.shared.store.commit().failed()
    }

    /// Refuses loads, lookups and writes once a flush has failed: the store's memory may hold
    /// changes that were answered 503, and no answer may reflect them. Resident views stay
    /// readable: every change whose flush failed took its actor and view with it.
    pub(super) fn usable(&self) -> Result<(), StoreError> {
        if self.ready() {
            Ok(())
        } else {
            Err(StoreError::Io(
                "a store flush failed; restart after fixing the disk".into(),
            ))
        }
    }

    /// Another node changed a user (or anything): drops the actors and views that may now be
    /// stale, so the next request reloads from the store. Never blocks on the store (the
    /// engine calls it from the thread that runs the store's own calls).
    pub fn invalidate(&self, change: Changed) {
        let inner = &self.inner;
        let kind = match change {
            Changed::User { .. } => "user",
            Changed::Everything => "everything",
            Changed::Keys => "keys",
        };
        crate::metrics::get()
            .invalidations
            .with_label_values(&[kind])
            .inc();
        match change {
            Changed::User { id, revision } => self.drop_older_than(id, revision),
            Changed::Everything => {
                for shard in &inner.announced {
                    shard.fetch_add(1, Ordering::SeqCst);
                }
                inner.shared.views.drop_all();
                let ids: Vec<UserId> = inner.actors.iter().map(|a| *a.key()).collect();
                for id in ids {
                    if let Some((_, addr)) = inner.actors.remove(&id) {
                        addr.do_send(Discard);
                    }
                }
            }
            Changed::Keys => {}
        }
    }

    /// Actors resident in memory now.
    pub fn resident(&self) -> usize {
        self.inner.actors.len()
    }

    /// The user whose lowercase email is `key`, if any.
    pub fn user_by_email(&self, key: &str) -> Result<Option<UserId>, DirectoryError> {
        self.usable()?;
        Ok(self.inner.shared.store.user_by_email(key)?)
    }

    /// The user an API key's digest belongs to, through the cache.
    pub fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, DirectoryError> {
        self.usable()?;
        let shared = &self.inner.shared;
        if let Some(id) = shared.api_keys.get(digest) {
            return Ok(Some(*id));
        }
        let found = shared.store.user_by_api_key(digest)?;
        if let Some(id) = found {
            shared.api_keys.insert(*digest, id);
        }
        Ok(found)
    }

    /// Delivers a message outside any change (a notification after a change was made durable);
    /// a failure is logged, never answered: the change it tells of has happened.
    pub fn notify(&self, message: crate::delivery::Message) {
        let send = self.inner.shared.delivery.send(message);
        actix::spawn(async move {
            if let Err(e) = send.await {
                tracing::warn!(error = %e, "notification could not be delivered");
            }
        });
    }

    /// Forgets a cached API-key digest that no longer matches its user.
    pub fn forget_api_key(&self, digest: &[u8; 32]) {
        self.inner.shared.api_keys.remove(digest);
    }

    /// Sends a message nobody waits for (write-behind bookkeeping).
    pub fn tell<M>(&self, id: UserId, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        UserActor: Handler<M>,
    {
        if let Ok(Some(addr)) = self.spawn(id) {
            addr.do_send(msg);
        }
    }

    /// Writes a new user, claiming the email atomically, and waits until it is durable.
    pub async fn register(
        &self,
        state: UserState,
    ) -> Result<Result<Arc<UserState>, DomainError>, DirectoryError> {
        self.usable()?;
        let store = &self.inner.shared.store;
        match store.create_user(&state)? {
            // A registration has no identities: only the email can be taken.
            Created::EmailTaken | Created::IdentityTaken => Ok(Err(DomainError::EmailTaken)),
            Created::Yes(ticket) => {
                store.commit().durable(ticket).await?;
                Ok(Ok(Arc::new(state)))
            }
        }
    }

    /// Drops this node's view and actor of `id` unless they already hold `revision` (this node
    /// loaded the user after that commit).
    fn drop_older_than(&self, id: UserId, revision: u64) {
        let inner = &self.inner;
        inner.announced[epoch_shard(id)].fetch_add(1, Ordering::SeqCst);
        let current = inner.shared.views.get(id).map(|v| v.state.revision);
        if current.is_some_and(|r| r >= revision) {
            return;
        }
        inner.shared.views.drop_user(id);
        if let Some((_, addr)) = inner.actors.remove(&id) {
            addr.do_send(Discard);
        }
    }

    /// The view of `id` as the database holds it now, for when this node's may be behind: on
    /// an engine other nodes write, a session another node opened a moment ago reaches this
    /// node's view only with that node's notice, which travels apart from the answer its client
    /// already has (and may send here next). One read of the stored revision; a reload only
    /// when it is not the view's. On an engine only this node writes, the view is the truth.
    pub fn view_as_stored(&self, id: UserId) -> Result<Option<Arc<UserState>>, DirectoryError> {
        let store = &self.inner.shared.store;
        if store.shared() {
            let Some(stored) = store.stored_revision(id)? else {
                return Ok(None);
            };
            self.drop_older_than(id, stored);
        }
        self.view(id)
    }

    /// The published view of a user, loading the actor if it is not resident. `None` for a
    /// user that does not exist. Reading it marks the user active.
    pub fn view(&self, id: UserId) -> Result<Option<Arc<UserState>>, DirectoryError> {
        let shared = &self.inner.shared;
        // An actor may retire between its start and our read of its view; the next start
        // reloads it, so a few tries always find one.
        for _ in 0..4 {
            if let Some(entry) = shared.views.get(id) {
                entry
                    .activity
                    .store(shared.uptime_secs(), Ordering::Relaxed);
                return Ok(Some(entry.state));
            }
            if self.spawn(id)?.is_none() {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The resident actor of `id`, started from its snapshot if needed.
    fn spawn(&self, id: UserId) -> Result<Option<Addr<UserActor>>, StoreError> {
        use dashmap::mapref::entry::Entry;
        self.usable()?;
        match self.inner.actors.entry(id) {
            Entry::Occupied(o) if o.get().connected() => Ok(Some(o.get().clone())),
            entry => {
                let shared = &self.inner.shared;
                let announced = &self.inner.announced[epoch_shard(id)];
                // Bounded: under a storm of announcements the last load is used as it is (a
                // stale write is still refused by a shared engine's version check).
                let mut state = None;
                for _ in 0..4 {
                    let seen = announced.load(Ordering::SeqCst);
                    let Some(loaded) = shared.store.load_user(id)? else {
                        return Ok(None);
                    };
                    state = Some(loaded);
                    if announced.load(Ordering::SeqCst) == seen {
                        break;
                    }
                }
                let Some(state) = state else {
                    return Ok(None);
                };
                let state = Arc::new(state);
                let activity = Arc::new(AtomicU64::new(shared.uptime_secs()));
                shared.views.publish(state.clone(), activity.clone());
                let handles = &self.inner.handles;
                let arbiter = &handles[arbiter_index(id, handles.len())];
                let shared = shared.clone();
                let addr = UserActor::start_in_arbiter(arbiter, move |_| {
                    UserActor::new(state, activity, shared)
                });
                match entry {
                    Entry::Occupied(mut o) => {
                        o.insert(addr.clone());
                    }
                    Entry::Vacant(v) => {
                        v.insert(addr.clone());
                    }
                }
                Ok(Some(addr))
            }
        }
    }

    /// Sends `msg` to the user's actor and waits for its verdict to be durable.
    ///
    /// A message that reaches an actor retiring for idleness is retried on a fresh actor, which
    /// reloads the snapshot: the retired one never writes again, so there is only ever one writer.
    pub async fn call<M, T>(
        &self,
        id: UserId,
        msg: M,
    ) -> Result<Result<T, DomainError>, DirectoryError>
    where
        M: Message<Result = Result<Done<T>, ActorError>> + Clone + Send + 'static,
        T: Send + 'static,
        UserActor: Handler<M>,
    {
        Ok(self.call_with_state(id, msg).await?.0)
    }

    /// [`Directory::call`] without waiting for durability: the change is applied and visible to
    /// the next read when this returns, and made durable with the next flush. Only for
    /// bookkeeping that no answer acknowledges (a failed login in the history), where waiting
    /// for the disk would also let a client time the difference between a known and an unknown
    /// email.
    pub async fn call_unflushed<M, T>(
        &self,
        id: UserId,
        msg: M,
    ) -> Result<Result<T, DomainError>, DirectoryError>
    where
        M: Message<Result = Result<Done<T>, ActorError>> + Clone + Send + 'static,
        T: Send + 'static,
        UserActor: Handler<M>,
    {
        let (done, addr) = self.deliver(id, msg).await?;
        log_recorded(id, &done.recorded);
        if let Some(ticket) = done.ticket {
            let dir = self.clone();
            actix::spawn(async move {
                if dir
                    .inner
                    .shared
                    .store
                    .commit()
                    .durable(ticket)
                    .await
                    .is_err()
                {
                    dir.discard(id, &addr).await;
                }
            });
        }
        Ok(done.value)
    }

    /// [`Directory::call`], also returning the user's state after the message.
    pub async fn call_with_state<M, T>(
        &self,
        id: UserId,
        msg: M,
    ) -> Result<(Result<T, DomainError>, Arc<UserState>), DirectoryError>
    where
        M: Message<Result = Result<Done<T>, ActorError>> + Clone + Send + 'static,
        T: Send + 'static,
        UserActor: Handler<M>,
    {
        let (verdict, pending) = self.call_pending(id, msg).await?;
        pending.durable().await?;
        Ok(verdict)
    }

    /// [`Directory::call_with_state`] in two steps: the actor's verdict at once, and what must
    /// be awaited before anything of it reaches the client. The caller prepares its answer (signs
    /// the tokens) while the disk makes the change durable rather than after it, so that on a
    /// busy server that work fills time in which the cores would wait for the disk.
    pub async fn call_pending<M, T>(
        &self,
        id: UserId,
        msg: M,
    ) -> Result<((Result<T, DomainError>, Arc<UserState>), Pending), DirectoryError>
    where
        M: Message<Result = Result<Done<T>, ActorError>> + Clone + Send + 'static,
        T: Send + 'static,
        UserActor: Handler<M>,
    {
        let (done, addr) = self.deliver(id, msg).await?;
        let pending = Pending {
            dir: self.clone(),
            id,
            addr,
            ticket: done.ticket,
            recorded: done.recorded,
        };
        Ok(((done.value, done.state), pending))
    }

    /// Hands `msg` to the user's actor, retrying on a fresh actor if it met one retiring or one
    /// whose state was stale (a version conflict in a shared store).
    async fn deliver<M, T>(
        &self,
        id: UserId,
        msg: M,
    ) -> Result<(Done<T>, Addr<UserActor>), DirectoryError>
    where
        M: Message<Result = Result<Done<T>, ActorError>> + Clone + Send + 'static,
        T: Send + 'static,
        UserActor: Handler<M>,
    {
        for _ in 0..4 {
            let addr = self.spawn(id)?.ok_or(DirectoryError::UnknownUser)?;
            match addr.send(msg.clone()).await {
                Ok(Ok(done)) => return Ok((done, addr)),
                // Another node changed the user since this actor loaded it: the actor's state
                // is stale and its write was refused. Retire it; the next try reloads the user
                // and decides again on fresh state, so the client never sees the conflict.
                Ok(Err(ActorError::Store(StoreError::Conflict))) => {
                    tracing::debug!(user = %id, "stale user actor; reloading");
                    crate::metrics::get().store_conflicts.inc();
                    let _ = addr.send::<Discard>(Discard).await;
                    self.inner.actors.remove_if(&id, |_, a| *a == addr);
                }
                Ok(Err(ActorError::Store(e))) => return Err(e.into()),
                Ok(Err(ActorError::Delivery(e))) => return Err(DirectoryError::Delivery(e)),
                Ok(Err(ActorError::Ceremony(e))) => return Err(DirectoryError::Ceremony(e)),
                Ok(Err(ActorError::Retired)) | Err(MailboxError::Closed) => {
                    self.inner.actors.remove_if(&id, |_, a| *a == addr);
                }
                Err(MailboxError::Timeout) => return Err(DirectoryError::Unavailable),
            }
        }
        Err(DirectoryError::Unavailable)
    }

    /// Withdraws an actor whose change could not be made durable: it already holds and
    /// publishes that change, which was answered as failed.
    async fn discard(&self, id: UserId, addr: &Addr<UserActor>) {
        tracing::warn!(user = %id, "a change could not be made durable; user actor discarded");
        // A closed mailbox means the actor is gone already, and its view with it.
        let _ = addr.send(Discard).await;
        self.inner.actors.remove_if(&id, |_, a| a == addr);
    }
}

/// A verdict of a user's actor that may not be durable yet: nothing of it may reach the client
/// before [`Pending::durable`] has returned. Dropped instead, the change still becomes durable
/// with the next flush, but its events are not logged (nobody was answered).
#[must_use = "a verdict is answered only once it is durable"]
pub struct Pending {
    dir: Directory,
    id: UserId,
    addr: Addr<UserActor>,
    ticket: Option<Ticket>,
    recorded: Vec<crate::domain::events::Event>,
}

impl Pending {
    /// Waits until the change is durable, then logs the events it recorded. On a failed flush
    /// the actor, which holds the change, is discarded (the next request reloads the user).
    pub async fn durable(self) -> Result<(), DirectoryError> {
        if let Some(ticket) = self.ticket {
            if let Err(e) = self.dir.inner.shared.store.commit().durable(ticket).await {
                self.dir.discard(self.id, &self.addr).await;
                return Err(e.into());
            }
        }
        log_recorded(self.id, &self.recorded);
        Ok(())
    }
}

/// The audit lines of the events a change recorded: logged from the events themselves, so the
/// log and the history agree, and here, in the caller's task, so that they carry its span (the
/// request id).
pub(super) fn log_recorded(id: UserId, events: &[crate::domain::events::Event]) {
    for event in events {
        crate::audit::recorded(id, event);
    }
}

fn epoch_shard(id: UserId) -> usize {
    arbiter_index(id, EPOCH_SHARDS)
}

fn arbiter_index(id: UserId, n: usize) -> usize {
    // The low bytes of a UUIDv7 are random, so this spreads users evenly.
    let b = id.as_bytes();
    (u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]) % n.max(1) as u64)
        as usize
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::config::Durability;
    use crate::delivery::log::LogSender;
    use crate::domain::backoff::AttemptRules;
    use crate::domain::codes::CodePolicy;
    use crate::domain::credentials::Email;
    use crate::domain::secrets::DataKey;
    use crate::domain::time::Timestamp;
    use crate::domain::user::NewUser;
    use crate::store::{GroupCommit, IndexChange, Ticket};

    /// A store holding one user, whose writes fail while `fail` is set.
    struct FlakyStore {
        user: std::sync::Mutex<UserState>,
        fail: AtomicBool,
        commit: GroupCommit,
    }

    impl Store for FlakyStore {
        fn load_user(&self, id: UserId) -> Result<Option<UserState>, StoreError> {
            let u = self.user.lock().unwrap().clone();
            Ok((u.id == id).then_some(u))
        }
        fn user_by_email(&self, _: &str) -> Result<Option<UserId>, StoreError> {
            Ok(None)
        }
        fn user_by_api_key(&self, _: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
            Ok(None)
        }
        fn user_by_passkey(&self, _: &[u8]) -> Result<Option<UserId>, StoreError> {
            Ok(None)
        }
        fn create_user(&self, _: &UserState) -> Result<Created, StoreError> {
            Ok(Created::EmailTaken)
        }
        fn save_user(&self, state: &UserState, _: &[IndexChange]) -> Result<Ticket, StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Io("disk full".into()));
            }
            *self.user.lock().unwrap() = state.clone();
            Ok(self.commit.written())
        }
        fn user_by_identity(&self, _: &[u8]) -> Result<Option<UserId>, StoreError> {
            Ok(None)
        }
        fn user_ids(&self) -> Result<Vec<UserId>, StoreError> {
            Ok(vec![])
        }
        fn put_pending(
            &self,
            _: &[u8; 32],
            _: &[u8],
            _: Timestamp,
            _: Timestamp,
            _: usize,
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        fn take_pending(&self, _: &[u8; 32], _: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn commit(&self) -> &GroupCommit {
            &self.commit
        }
        fn close(&self) {}
    }

    /// A directory over a [`FlakyStore`] holding one user; writes fail while `fail` is set,
    /// flushes while the returned flag is.
    fn flaky_directory(fail: bool) -> (Directory, Arc<FlakyStore>, Arc<AtomicBool>, UserId) {
        let user = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
                phone: None,
                password_hash: String::new(),
            },
            Timestamp(1_800_000_000),
        );
        let id = user.id;
        let flush_fails = Arc::new(AtomicBool::new(false));
        let flag = flush_fails.clone();
        let store = Arc::new(FlakyStore {
            user: std::sync::Mutex::new(user),
            fail: AtomicBool::new(fail),
            commit: GroupCommit::start(
                Durability::Flush,
                Duration::from_millis(10),
                Box::new(move || {
                    if flag.load(Ordering::SeqCst) {
                        Err(StoreError::Io("fsync: input/output error".into()))
                    } else {
                        Ok(0)
                    }
                }),
            )
            .unwrap(),
        });
        let codes = CodePolicy {
            ttl: 600,
            resend: 60,
            per_hour: 5,
            max_attempts: 5,
        };
        let dir = Directory::new(
            store.clone(),
            (ServerKey::from_bytes([1; 32]), DataKey::from_bytes([2; 32])),
            Arc::new(LogSender),
            DirectoryConfig {
                policy: SessionPolicy {
                    refresh_ttl: 1_000,
                    session_max: 10_000,
                    rotation_enabled: true,
                    reuse_grace: 0,
                    max_sessions: 100,
                },
                idle: Duration::from_secs(600),
                phone_codes: codes,
                reactivate_codes: codes,
                email_codes: codes,
                reset_codes: codes,
                attempts: AttemptRules::new(true, 10, 10, 900, 2),
                passkeys: crate::actors::passkeys::test_settings(),
                oidc_max_pending: 100,
            },
            1,
        );
        (dir, store, flush_fails, id)
    }

    #[actix_rt::test]
    async fn a_refused_write_leaves_the_actor_as_it_was() {
        let (dir, store, _, id) = flaky_directory(true);
        let refused = dir
            .call(
                id,
                crate::actors::messages::OpenSession {
                    method: crate::domain::sessions::LoginMethod::Password,
                    origin: Default::default(),
                },
            )
            .await;
        assert!(matches!(refused, Err(DirectoryError::Storage(_))));
        assert!(
            dir.view(id).unwrap().unwrap().sessions.is_empty(),
            "memory did not run ahead of disk"
        );
        assert!(store.user.lock().unwrap().sessions.is_empty());

        store.fail.store(false, Ordering::SeqCst);
        let opened = dir
            .call(
                id,
                crate::actors::messages::OpenSession {
                    method: crate::domain::sessions::LoginMethod::Password,
                    origin: Default::default(),
                },
            )
            .await
            .unwrap()
            .unwrap();
        let view = dir.view(id).unwrap().unwrap();
        assert_eq!(view.sessions.len(), 1);
        assert_eq!(view.sessions[0].id, opened.session);
        assert_eq!(store.user.lock().unwrap().sessions.len(), 1);
        dir.stop();
    }

    #[actix_rt::test]
    async fn a_failed_flush_is_not_kept() {
        let (dir, store, flush_fails, id) = flaky_directory(false);
        assert!(dir.view(id).unwrap().unwrap().sessions.is_empty());
        assert!(dir.ready());

        flush_fails.store(true, Ordering::SeqCst);
        let failed = dir
            .call(
                id,
                crate::actors::messages::OpenSession {
                    method: crate::domain::sessions::LoginMethod::Password,
                    origin: Default::default(),
                },
            )
            .await;
        assert!(
            matches!(failed, Err(DirectoryError::Storage(_))),
            "{failed:?}"
        );
        // The engine took the write (sled keeps it in memory): only the directory can hide it.
        assert_eq!(store.user.lock().unwrap().sessions.len(), 1);
        match dir.view(id) {
            Err(DirectoryError::Storage(_)) | Ok(None) => {}
            Ok(Some(view)) => assert!(
                view.sessions.is_empty(),
                "a session answered 503 is visible"
            ),
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(!dir.ready(), "readiness reports the failed flush");

        // The disk seems to recover; the store's memory is still not to be trusted.
        flush_fails.store(false, Ordering::SeqCst);
        let later = dir
            .call(
                id,
                crate::actors::messages::OpenSession {
                    method: crate::domain::sessions::LoginMethod::Password,
                    origin: Default::default(),
                },
            )
            .await;
        assert!(
            matches!(later, Err(DirectoryError::Storage(_))),
            "{later:?}"
        );
        assert!(matches!(dir.view(id), Err(DirectoryError::Storage(_))));
        assert!(dir.user_by_email("ada@example.com").is_err());
        assert!(!dir.ready());
        dir.stop();
    }
}
