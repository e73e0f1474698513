//! The PostgreSQL engine: the only module that imports `tokio_postgres` and `deadpool_postgres`.
//!
//! Tables (see [`MIGRATIONS`]): `users (id, version, snapshot)` holds the same versioned
//! snapshot as sled (`store::codec`), `version` being the snapshot's `revision`; `emails`,
//! `api_keys`, `passkeys`, `identities` and `tenants` are the cross-user indexes, written in the
//! same transaction as the snapshot that changes them, so an index never points at a snapshot
//! that was not committed. `pending` holds the single-use entries of sign-ins in progress,
//! taken with `DELETE … RETURNING` so that of two nodes taking one, one gets it.
//!
//! # How a synchronous trait meets an async client
//!
//! The [`Store`] methods are synchronous: the actors call them inside their handlers, and a
//! handler's decision must know at once whether its write stood (an email taken, a version
//! conflict). So each call runs its statements on the store's own small tokio runtime (a
//! dedicated thread, never the caller's) and the caller waits for the answer on a plain
//! channel, for at most [`CALL_TIMEOUT`] (PostgreSQL's `statement_timeout` is set below it), so
//! a stalled database holds an actor's thread for a bounded time and then answers an error.
//! A write's [`Ticket`] is durable when issued: the `COMMIT` has returned, and with
//! `synchronous_commit` on (`storage.durability = "flush"`) PostgreSQL has flushed its WAL;
//! PostgreSQL does the group commit. `"periodic"` maps to `synchronous_commit = off` (a crash
//! may lose the last few hundred milliseconds, never consistency).
//!
//! # Several nodes
//!
//! Each snapshot write notifies the other nodes in its own transaction (`pg_notify` on
//! [`CHANNEL`], delivered by PostgreSQL at the commit and only if it commits), naming the user
//! and the revision; [`Store::watch`] keeps one connection outside the pool listening, and tells
//! the directory, which drops its actor and view of that user. A node skips its own
//! notifications (each payload carries the writer's random node id). A lost listener connection
//! means notifications may have been missed: the watcher is told [`Changed::Everything`] when it
//! is lost and again once listening resumes. Correctness never rests on a notification: a stale
//! actor's write is refused on the version check below, and the actor reloaded.
//!
//! # Optimistic concurrency
//!
//! A snapshot is written only over the revision it was derived from (`revision - 1`, as the
//! actor and the admin commands bump it by one), else the write is refused with
//! [`StoreError::Conflict`] and nothing of it lands, even when it is byte for byte what the
//! other node wrote: two nodes rotating one refresh token decide the same next state (its
//! secret is derived), and only one of them may answer.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Transaction};
use uuid::Uuid;

use super::{
    codec, Changed, Created, GroupCommit, IndexChange, Store, StoreError, Ticket, Watcher,
};
use crate::config::{Durability, StorageConfig};
use crate::domain::ids::UserId;
use crate::domain::secrets::DataKey;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;
use crate::keys::{KeyError, KeyFiles};

/// The longest a caller waits for one call (a pooled connection, the statements, the commit).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL's own limit on one statement, below [`CALL_TIMEOUT`] so the server gives up first.
const STATEMENT_TIMEOUT_MS: u64 = 8_000;
/// Connections in the pool: the writers are the actors' threads (see `startup::actor_threads`,
/// at most this less 8) and the rest serve the HTTP workers' lookups; PostgreSQL's default
/// `max_connections` (100) holds a few nodes' pools.
pub const POOL_SIZE: usize = 40;
/// Serialises migrations of nodes starting at once (an arbitrary constant: "bp-auth").
const MIGRATION_LOCK: i64 = 0x0062_702d_6175_7468;

/// The channel every commit of a user notifies (see the module docs).
const CHANNEL: &str = "bp_auth_changes";
/// How often the listener proves its connection alive (a silent half-open TCP connection would
/// otherwise hide lost notifications until the kernel gives up on it).
const LISTENER_PING: Duration = Duration::from_secs(2);
/// The listening connection's `application_name`.
pub const LISTENER_NAME: &str = "bp-auth listener";
/// The pause before the listener connects again after losing its connection.
const LISTENER_RETRY: Duration = Duration::from_millis(500);

/// The schema, in order; each applied once, recorded in `schema_migrations`. Append, never edit.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE users (
         id uuid PRIMARY KEY,
         version bigint NOT NULL,
         snapshot bytea NOT NULL
     );
     CREATE TABLE emails (
         email text PRIMARY KEY,
         user_id uuid NOT NULL
     );
     CREATE INDEX emails_user_id ON emails (user_id);
     CREATE TABLE api_keys (
         digest bytea PRIMARY KEY,
         user_id uuid NOT NULL
     );
     CREATE TABLE tenants (
         id uuid PRIMARY KEY,
         record bytea NOT NULL
     );",
    ),
    // Passkeys: a credential id belongs to one user, claimed like an email.
    (
        2,
        "CREATE TABLE passkeys (
             credential_id bytea PRIMARY KEY,
             user_id uuid NOT NULL
         );",
    ),
    // OpenID Connect: a provider identity belongs to one user, claimed like an email; the
    // pending steps of sign-ins, keyed by a digest of their secret, swept by expiry.
    (
        3,
        "CREATE TABLE identities (
             key bytea PRIMARY KEY,
             user_id uuid NOT NULL
         );
         CREATE TABLE pending (
             key bytea PRIMARY KEY,
             expires_at bigint NOT NULL,
             value bytea NOT NULL
         );
         CREATE INDEX pending_expires_at ON pending (expires_at);",
    ),
    // Clustering: the key files every node serves, sealed under the master key; and each user's attempt counters, which must count
    // across nodes (see `actors::user`), versioned like the snapshots.
    (
        4,
        "CREATE TABLE key_files (
             name text PRIMARY KEY,
             sealed bytea NOT NULL
         );
         CREATE TABLE attempts (
             user_id uuid PRIMARY KEY,
             version bigint NOT NULL,
             record bytea NOT NULL
         );",
    ),
];

/// Runs statements on the store's runtime for a synchronous caller (see the module docs).
#[derive(Clone)]
struct Calls {
    /// The store's runtime, where every statement runs.
    runtime: tokio::runtime::Handle,
    pool: Pool,
}

pub struct PgStore {
    calls: Calls,
    /// Ends the runtime's thread (dropping a runtime inside an async context would panic, and
    /// the last handle on the store may be dropped there).
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    commit: GroupCommit,
    /// The key files, sealed under the master key (`storage.master_key_file`).
    keys: Arc<SealedKeys>,
    /// Where the listener connects (the pool's own configuration).
    config: tokio_postgres::Config,
    /// This process among the nodes, in the payload of its notifications.
    node: u64,
}

/// A database error as the store reports it: the server's message (never the URL, which may
/// hold a password; tokio-postgres does not print its configuration).
fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Io(format!("postgres: {e}"))
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => StoreError::Io(format!("postgres pool: {other}")),
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The first column of a row, as the type the schema gives it.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
) -> Result<T, StoreError> {
    row.try_get(0)
        .map_err(|e| StoreError::Corrupt(format!("postgres: unexpected column: {e}")))
}

fn revision(v: u64) -> i64 {
    // A bit-for-bit cast: revisions wrap at u64, bigint holds the same 64 bits.
    v as i64
}

impl PgStore {
    /// Connects to `storage.postgres_url` and applies the migrations not yet applied.
    pub fn open(data_dir: &Path, storage: &StorageConfig) -> Result<Self, StoreError> {
        if storage.postgres_url.trim().is_empty() {
            return Err(StoreError::Io(
                "storage.engine is \"postgres\" but storage.postgres_url is empty".into(),
            ));
        }
        let mut pg: tokio_postgres::Config = storage.postgres_url.parse().map_err(|_| {
            // The parser's message may quote the URL; say only what is wrong.
            StoreError::Io("storage.postgres_url is not a valid PostgreSQL URL".into())
        })?;
        let synchronous = match storage.durability {
            Durability::Flush => "on",
            Durability::Periodic => "off",
        };
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT_MS} -c synchronous_commit={synchronous}",
            pg.get_options().unwrap_or_default()
        );
        pg.options(options.trim())
            .connect_timeout(Duration::from_secs(5))
            .application_name("bp-auth");
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let (runtime, stop) = start_runtime()?;
        let pool = {
            let _enter = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .wait_timeout(Some(CALL_TIMEOUT))
                .create_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Io(format!("postgres pool: {e}")))?
        };
        // Every ticket is durable when issued (see the module docs): the committer only keeps
        // the `Store` contract, never flushes anything.
        let commit = GroupCommit::start(
            Durability::Periodic,
            Duration::from_secs(1),
            Box::new(|| Ok(0)),
        )?;
        let calls = Calls { runtime, pool };
        let node = u64::from_le_bytes(
            crate::domain::secrets::random_32()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        let master = load_or_create_master_key(&master_key_path(data_dir, storage))?;
        let store = Self {
            keys: Arc::new(SealedKeys {
                calls: calls.clone(),
                master,
                node,
            }),
            calls,
            stop: std::sync::Mutex::new(Some(stop)),
            commit,
            config: pg,
            node,
        };
        store.calls.call(migrate)?;
        Ok(store)
    }
}

impl Calls {
    /// Runs `work` with a pooled connection on the store's runtime and waits for its answer.
    fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.runtime.spawn(async move {
            let answer = match pool.get().await {
                Ok(client) => work(client).await,
                Err(e) => Err(pool_error(e)),
            };
            let _ = tx.send(answer);
        });
        match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(answer) => answer,
            // The write may still commit after we gave up. That is safe: the caller keeps its
            // old state, so its next write is refused on the version and the user reloaded.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(StoreError::Io("postgres: no answer in time".into()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(StoreError::Io("postgres: the store has stopped".into()))
            }
        }
    }
}

/// A runtime on a thread of its own (one thread drives every connection: the work is waiting
/// on the network), kept alive until the returned sender fires or drops.
fn start_runtime() -> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), StoreError>
{
    let io = |e: std::io::Error| StoreError::Io(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("bp-postgres".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(io)?;
    Ok((handle, stop))
}

async fn migrate(mut client: deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(db)?
        .iter()
        .map(column)
        .collect::<Result<_, _>>()?;
    if let Some(newer) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(m, _)| m == *v))
    {
        return Err(StoreError::Corrupt(format!(
            "the database has schema migration {newer}, unknown to this build (a newer bp-auth?)"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "applied a schema migration");
    }
    tx.commit().await.map_err(db)
}

/// `storage.master_key_file`, or `<data_dir>/master.key`.
pub fn master_key_path(data_dir: &Path, storage: &StorageConfig) -> PathBuf {
    if storage.master_key_file.trim().is_empty() {
        data_dir.join("master.key")
    } else {
        PathBuf::from(storage.master_key_file.trim())
    }
}

/// The master key, from its file (base64url of 32 bytes, as the other key files); generated,
/// owner-only, when the file does not exist. Every node of a cluster needs the same one: a node
/// with another key fails at start, when it cannot open the database's keys.
fn load_or_create_master_key(path: &Path) -> Result<DataKey, StoreError> {
    let io =
        |e: &dyn std::fmt::Display| StoreError::Io(format!("master key {}: {e}", path.display()));
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(&e))?;
        }
        let text = URL_SAFE_NO_PAD.encode(crate::domain::secrets::random_32());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(|e| io(&e))?;
                f.sync_all().map_err(|e| io(&e))?;
                tracing::info!(path = %path.display(), "generated the master key; copy it to every node");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&e)),
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(&e))?;
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io(&"not 32 bytes of base64url"))?;
    Ok(DataKey::from_bytes(bytes))
}

/// The key files in the `key_files` table, each sealed under the master key with its name as
/// associated data (so a row cannot be passed off as another). A new file notifies the other
/// nodes, which reload their signing keys.
pub struct SealedKeys {
    calls: Calls,
    master: DataKey,
    node: u64,
}

fn key_err(e: StoreError) -> KeyError {
    KeyError::Invalid(format!("key files in PostgreSQL: {e}"))
}

impl KeyFiles for SealedKeys {
    fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
        let rows: Vec<(String, Vec<u8>)> = self
            .calls
            .call(|client| async move {
                let rows = client
                    .query("SELECT name, sealed FROM key_files ORDER BY name", &[])
                    .await
                    .map_err(db)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            r.try_get(1)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        ))
                    })
                    .collect()
            })
            .map_err(key_err)?;
        rows.into_iter()
            .map(|(name, sealed)| {
                let plain = self.master.open(name.as_bytes(), &sealed).ok_or_else(|| {
                    KeyError::Invalid(format!(
                        "the master key does not open the database's key {name}: every node \
                         needs the same storage.master_key_file (copy the first node's)"
                    ))
                })?;
                Ok((name, plain))
            })
            .collect()
    }

    fn create(&self, name: &str, contents: &[u8]) -> Result<bool, KeyError> {
        let sealed = self
            .master
            .seal(name.as_bytes(), contents)
            .ok_or_else(|| KeyError::Invalid("cannot seal a key file".into()))?;
        let name = name.to_string();
        let payload = format!("k {}", self.node);
        self.calls
            .call(move |mut client| async move {
                let tx = client.transaction().await.map_err(db)?;
                let written = tx
                    .execute(
                        "INSERT INTO key_files (name, sealed) VALUES ($1, $2)
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &sealed],
                    )
                    .await
                    .map_err(db)?;
                if written == 1 {
                    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(written == 1)
            })
            .map_err(key_err)
    }
}

/// What a notification on [`CHANNEL`] says, unless it is this node's own: `u <node> <user id>
/// <revision>` for a user's commit, `k <node>` for the key material.
fn parse_notification(payload: &str, me: u64) -> Option<Changed> {
    let mut parts = payload.split(' ');
    let (kind, node) = (parts.next()?, parts.next()?.parse::<u64>().ok()?);
    if node == me {
        return None;
    }
    match kind {
        "u" => Some(Changed::User {
            id: UserId(parts.next()?.parse().ok()?),
            revision: parts.next()?.parse().ok()?,
        }),
        "k" => Some(Changed::Keys),
        _ => None,
    }
}

/// Listens on [`CHANNEL`] for as long as the store's runtime runs, connecting again whenever
/// the connection is lost, and tells `watcher` what the other nodes commit.
async fn listen(config: tokio_postgres::Config, me: u64, watcher: Watcher) {
    loop {
        match listen_once(&config, me, &watcher).await {
            Ok(()) => tracing::warn!("postgres listener connection closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "postgres listener connection lost; reconnecting"),
        }
        // Whatever was committed while nobody listened is unknown here.
        watcher(Changed::Everything);
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}

/// One listener connection, from its start to its loss.
async fn listen_once(
    config: &tokio_postgres::Config,
    me: u64,
    watcher: &Watcher,
) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::AsyncMessage;
    // Named apart from the pool's connections, for operators reading `pg_stat_activity`.
    let mut config = config.clone();
    config.application_name(LISTENER_NAME);
    let (client, mut connection) = config.connect(NoTls).await?;
    let relay = watcher.clone();
    let mut messages = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(change) = parse_notification(n.payload(), me) {
                        relay(change);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(e) = listening {
        messages.abort();
        return Err(e);
    }
    // Changes committed before LISTEN took effect were never sent to this connection.
    watcher(Changed::Everything);
    tracing::info!("listening for other nodes' changes");
    let mut ping = tokio::time::interval(LISTENER_PING);
    loop {
        tokio::select! {
            ended = &mut messages => {
                return ended.unwrap_or(Ok(()));
            }
            _ = ping.tick() => {
                let alive = tokio::time::timeout(LISTENER_PING, client.simple_query("SELECT 1")).await;
                match alive {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        messages.abort();
                        return Err(e);
                    }
                    Err(_) => {
                        messages.abort();
                        tracing::warn!("postgres listener connection unresponsive");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// What a transaction found that refuses the whole change (it is rolled back).
enum Refused {
    EmailTaken,
    PasskeyTaken,
    IdentityTaken,
    Conflict,
}

/// Claims an identity's index key for `user` unless another user holds it; whether it did.
async fn claim_identity(tx: &Transaction<'_>, key: &[u8], user: Uuid) -> Result<bool, StoreError> {
    let claimed = tx
        .execute(
            "INSERT INTO identities (key, user_id) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET user_id = EXCLUDED.user_id
             WHERE identities.user_id = EXCLUDED.user_id",
            &[&key, &user],
        )
        .await
        .map_err(db)?;
    Ok(claimed == 1)
}

async fn put_tenant(tx: &Transaction<'_>, id: Uuid, record: &[u8]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tenants (id, record) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        &[&id, &record],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Applies one index change; `Err(Refused)` aborts the transaction.
async fn apply_index(
    tx: &Transaction<'_>,
    user: Uuid,
    tenant: (Uuid, &[u8]),
    change: &IndexChange,
) -> Result<Result<(), Refused>, StoreError> {
    match change {
        IndexChange::ApiKeyPut(d) => {
            tx.execute(
                "INSERT INTO api_keys (digest, user_id) VALUES ($1, $2)
                 ON CONFLICT (digest) DO UPDATE SET user_id = EXCLUDED.user_id",
                &[&&d[..], &user],
            )
            .await
            .map_err(db)?;
        }
        IndexChange::ApiKeyDelete(d) => {
            tx.execute(
                "DELETE FROM api_keys WHERE digest = $1 AND user_id = $2",
                &[&&d[..], &user],
            )
            .await
            .map_err(db)?;
        }
        IndexChange::Tenant => put_tenant(tx, tenant.0, tenant.1).await?,
        IndexChange::EmailMove { from, to } => {
            // Claims `to` unless another user holds it (then no row is touched).
            let claimed = tx
                .execute(
                    "INSERT INTO emails (email, user_id) VALUES ($1, $2)
                     ON CONFLICT (email) DO UPDATE SET user_id = EXCLUDED.user_id
                     WHERE emails.user_id = EXCLUDED.user_id",
                    &[to, &user],
                )
                .await
                .map_err(db)?;
            if claimed == 0 {
                return Ok(Err(Refused::EmailTaken));
            }
            if from != to {
                tx.execute(
                    "DELETE FROM emails WHERE email = $1 AND user_id = $2",
                    &[from, &user],
                )
                .await
                .map_err(db)?;
            }
        }
        IndexChange::PasskeyPut(credential_id) => {
            // Claims the id unless another user holds it (then no row is touched).
            let claimed = tx
                .execute(
                    "INSERT INTO passkeys (credential_id, user_id) VALUES ($1, $2)
                     ON CONFLICT (credential_id) DO UPDATE SET user_id = EXCLUDED.user_id
                     WHERE passkeys.user_id = EXCLUDED.user_id",
                    &[credential_id, &user],
                )
                .await
                .map_err(db)?;
            if claimed == 0 {
                return Ok(Err(Refused::PasskeyTaken));
            }
        }
        IndexChange::PasskeyDelete(credential_id) => {
            tx.execute(
                "DELETE FROM passkeys WHERE credential_id = $1 AND user_id = $2",
                &[credential_id, &user],
            )
            .await
            .map_err(db)?;
        }
        IndexChange::IdentityPut(key) => {
            if !claim_identity(tx, key, user).await? {
                return Ok(Err(Refused::IdentityTaken));
            }
        }
        IndexChange::IdentityDelete(key) => {
            tx.execute(
                "DELETE FROM identities WHERE key = $1 AND user_id = $2",
                &[key, &user],
            )
            .await
            .map_err(db)?;
        }
    }
    Ok(Ok(()))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        Store::close(self);
    }
}

impl Store for PgStore {
    fn load_user(&self, id: UserId) -> Result<Option<UserState>, StoreError> {
        let snapshot: Option<Vec<u8>> = self.calls.call(move |client| async move {
            let row = client
                .query_opt("SELECT snapshot FROM users WHERE id = $1", &[&id.0])
                .await
                .map_err(db)?;
            row.map(|r| column(&r)).transpose()
        })?;
        snapshot.map(|s| codec::decode_user(&s)).transpose()
    }

    fn user_by_email(&self, email_key: &str) -> Result<Option<UserId>, StoreError> {
        let email = email_key.to_owned();
        self.calls.call(move |client| async move {
            let row = client
                .query_opt("SELECT user_id FROM emails WHERE email = $1", &[&email])
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
        let digest = digest.to_vec();
        self.calls.call(move |client| async move {
            let row = client
                .query_opt("SELECT user_id FROM api_keys WHERE digest = $1", &[&digest])
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, StoreError> {
        let credential_id = credential_id.to_vec();
        self.calls.call(move |client| async move {
            let row = client
                .query_opt(
                    "SELECT user_id FROM passkeys WHERE credential_id = $1",
                    &[&credential_id],
                )
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn user_by_identity(&self, key: &[u8]) -> Result<Option<UserId>, StoreError> {
        let key = key.to_vec();
        self.calls.call(move |client| async move {
            let row = client
                .query_opt("SELECT user_id FROM identities WHERE key = $1", &[&key])
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn create_user(&self, state: &UserState) -> Result<Created, StoreError> {
        let snapshot = codec::encode(state)?;
        let tenant = codec::encode(&state.tenant)?;
        let (id, tenant_id, email) = (state.id.0, state.tenant.id.0, state.email_key.clone());
        let version = revision(state.revision);
        let identities: Vec<Vec<u8>> = state.identities.iter().map(|i| i.index_key()).collect();
        let created = self.calls.call(move |mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            let claimed = tx
                .execute(
                    "INSERT INTO emails (email, user_id) VALUES ($1, $2)
                     ON CONFLICT (email) DO NOTHING",
                    &[&email, &id],
                )
                .await
                .map_err(db)?;
            if claimed == 0 {
                return Ok(Err(Created::EmailTaken));
            }
            for key in &identities {
                if !claim_identity(&tx, key, id).await? {
                    return Ok(Err(Created::IdentityTaken));
                }
            }
            // As sled: a snapshot already under this id (an import run again) is replaced.
            tx.execute(
                "INSERT INTO users (id, version, snapshot) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE
                 SET version = EXCLUDED.version, snapshot = EXCLUDED.snapshot",
                &[&id, &version, &snapshot],
            )
            .await
            .map_err(db)?;
            put_tenant(&tx, tenant_id, &tenant).await?;
            match tx.commit().await {
                Ok(()) => Ok(Ok(())),
                // Another node claimed the address (or an identity) between our insert and
                // the commit; which one is not worth a query: the caller looks both up again.
                Err(e) if is_unique_violation(&e) => Ok(Err(Created::EmailTaken)),
                Err(e) => Err(db(e)),
            }
        })?;
        Ok(match created {
            Ok(()) => Created::Yes(self.commit.written()),
            Err(refused) => refused,
        })
    }

    fn save_user(&self, state: &UserState, index: &[IndexChange]) -> Result<Ticket, StoreError> {
        let snapshot = codec::encode(state)?;
        let tenant = codec::encode(&state.tenant)?;
        let (id, tenant_id) = (state.id.0, state.tenant.id.0);
        let version = revision(state.revision);
        let read = revision(state.revision.wrapping_sub(1));
        let index = index.to_vec();
        let payload = format!("u {} {} {}", self.node, id, state.revision);
        let outcome = self.calls.call(move |mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            let written = tx
                .execute(
                    "UPDATE users SET version = $2, snapshot = $3
                     WHERE id = $1 AND version = $4",
                    &[&id, &version, &snapshot, &read],
                )
                .await
                .map_err(db)?;
            if written == 0 {
                return Ok(Err(Refused::Conflict));
            }
            for change in &index {
                if let Err(refused) = apply_index(&tx, id, (tenant_id, &tenant), change).await? {
                    return Ok(Err(refused));
                }
            }
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(db)?;
            match tx.commit().await {
                Ok(()) => Ok(Ok(())),
                Err(e) if is_unique_violation(&e) => Ok(Err(Refused::EmailTaken)),
                Err(e) => Err(db(e)),
            }
        })?;
        match outcome {
            Ok(()) => Ok(self.commit.written()),
            Err(Refused::EmailTaken) => Err(StoreError::EmailTaken),
            Err(Refused::PasskeyTaken) => Err(StoreError::PasskeyTaken),
            Err(Refused::IdentityTaken) => Err(StoreError::IdentityTaken),
            Err(Refused::Conflict) => Err(StoreError::Conflict),
        }
    }

    fn user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        self.calls.call(|client| async move {
            let rows = client
                .query("SELECT id FROM users ORDER BY id", &[])
                .await
                .map_err(db)?;
            rows.iter().map(|r| column(r).map(UserId)).collect()
        })
    }

    fn put_pending(
        &self,
        key: &[u8; 32],
        value: &[u8],
        expires_at: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<bool, StoreError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.calls.call(move |mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            tx.execute("DELETE FROM pending WHERE expires_at <= $1", &[&now.0])
                .await
                .map_err(db)?;
            // Counting at most `max` rows; approximate under concurrent puts of several nodes
            // (each sees only the others' committed rows), never unbounded.
            let kept = tx
                .execute(
                    "INSERT INTO pending (key, expires_at, value)
                     SELECT $1, $2, $3
                     WHERE (SELECT count(*) FROM (SELECT 1 FROM pending LIMIT $4) AS live) < $4
                     ON CONFLICT (key) DO UPDATE
                     SET expires_at = EXCLUDED.expires_at, value = EXCLUDED.value",
                    &[&key, &expires_at.0, &value, &max],
                )
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(kept == 1)
        })
    }

    fn take_pending(&self, key: &[u8; 32], now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.calls.call(move |client| async move {
            let row = client
                .query_opt(
                    "DELETE FROM pending WHERE key = $1 RETURNING expires_at, value",
                    &[&key],
                )
                .await
                .map_err(db)?;
            let Some(row) = row else { return Ok(None) };
            let unexpected = |e: tokio_postgres::Error| {
                StoreError::Corrupt(format!("postgres: unexpected column: {e}"))
            };
            let expires_at: i64 = row.try_get(0).map_err(unexpected)?;
            let value: Vec<u8> = row.try_get(1).map_err(unexpected)?;
            Ok((expires_at > now.0).then_some(value))
        })
    }

    fn commit(&self) -> &GroupCommit {
        &self.commit
    }

    fn shared(&self) -> bool {
        true
    }

    fn stored_revision(&self, id: UserId) -> Result<Option<u64>, StoreError> {
        self.calls.call(move |client| async move {
            let row = client
                .query_opt("SELECT version FROM users WHERE id = $1", &[&id.0])
                .await
                .map_err(db)?;
            row.map(|r| column::<i64>(&r).map(|v| v as u64)).transpose()
        })
    }

    fn load_attempts(&self, id: UserId) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        self.calls.call(move |client| async move {
            let row = client
                .query_opt(
                    "SELECT version, record FROM attempts WHERE user_id = $1",
                    &[&id.0],
                )
                .await
                .map_err(db)?;
            match row {
                None => Ok((0, None)),
                Some(r) => {
                    let version: i64 = column(&r)?;
                    let record: Vec<u8> = r
                        .try_get(1)
                        .map_err(|e| StoreError::Corrupt(format!("postgres: {e}")))?;
                    Ok((version as u64, Some(record)))
                }
            }
        })
    }

    fn save_attempts(&self, id: UserId, read: u64, record: &[u8]) -> Result<(), StoreError> {
        let record = record.to_vec();
        let (read, next) = (revision(read), revision(read.wrapping_add(1)));
        let written = self.calls.call(move |client| async move {
            let n = if read == 0 {
                client
                    .execute(
                        "INSERT INTO attempts (user_id, version, record) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id) DO NOTHING",
                        &[&id.0, &next, &record],
                    )
                    .await
            } else {
                client
                    .execute(
                        "UPDATE attempts SET version = $2, record = $3
                         WHERE user_id = $1 AND version = $4",
                        &[&id.0, &next, &record, &read],
                    )
                    .await
            };
            n.map_err(db)
        })?;
        if written == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn key_files(&self) -> Option<Arc<dyn KeyFiles>> {
        Some(self.keys.clone())
    }

    fn watch(&self, watcher: Watcher) {
        self.calls
            .runtime
            .spawn(listen(self.config.clone(), self.node, watcher));
    }

    fn close(&self) {
        self.commit.shutdown();
        self.calls.pool.close();
        let stop = match self.stop.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_the_user_and_revision_and_a_node_skips_its_own() {
        let id = UserId::generate();
        let me = 7;
        assert_eq!(
            parse_notification(&format!("u 9 {id} 42"), me),
            Some(Changed::User { id, revision: 42 })
        );
        assert_eq!(parse_notification(&format!("u 7 {id} 42"), me), None);
        assert_eq!(parse_notification("k 9", me), Some(Changed::Keys));
        assert_eq!(parse_notification("k 7", me), None);
        for junk in [
            "",
            "u",
            "u 9",
            "u 9 not-a-uuid 1",
            "x 9",
            &format!("u 9 {id} -1"),
        ] {
            assert_eq!(parse_notification(junk, me), None, "{junk:?}");
        }
    }

    #[test]
    fn the_master_key_is_made_once_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("master.key");
        let first = load_or_create_master_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only");
        let again = load_or_create_master_key(&path).unwrap();
        let sealed = first.seal(b"name", b"secret").unwrap();
        assert_eq!(again.open(b"name", &sealed).unwrap(), b"secret");
        assert!(
            again.open(b"other name", &sealed).is_none(),
            "bound to its name"
        );
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create_master_key(&path).is_err());
    }
}
