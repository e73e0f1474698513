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
//! # Optimistic concurrency
//!
//! A snapshot is written only over the revision it was derived from (`revision - 1`, as the
//! actor and the admin commands bump it by one), else the write is refused with
//! [`StoreError::Conflict`] and nothing of it lands. Rewriting the very same bytes at the same
//! revision is accepted (the import writes a user's first snapshot again with its API key).

use std::sync::mpsc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Transaction};
use uuid::Uuid;

use super::{codec, Created, GroupCommit, IndexChange, Store, StoreError, Ticket};
use crate::config::{Durability, StorageConfig};
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;

/// The longest a caller waits for one call (a pooled connection, the statements, the commit).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL's own limit on one statement, below [`CALL_TIMEOUT`] so the server gives up first.
const STATEMENT_TIMEOUT_MS: u64 = 8_000;
/// Connections in the pool: the writers are the actors' arbiters (one per core) and the HTTP
/// workers' lookups; more would only queue inside PostgreSQL.
const POOL_SIZE: usize = 8;
/// Serialises migrations of nodes starting at once (an arbitrary constant: "bp-auth").
const MIGRATION_LOCK: i64 = 0x0062_702d_6175_7468;

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
];

pub struct PgStore {
    /// The store's runtime, where every statement runs; see the module docs.
    runtime: tokio::runtime::Handle,
    /// Ends the runtime's thread (dropping a runtime inside an async context would panic, and
    /// the last handle on the store may be dropped there).
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    pool: Pool,
    commit: GroupCommit,
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
    pub fn open(storage: &StorageConfig) -> Result<Self, StoreError> {
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
            pg,
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
        let store = Self {
            runtime,
            stop: std::sync::Mutex::new(Some(stop)),
            pool,
            commit,
        };
        store.call(migrate)?;
        Ok(store)
    }

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
        let snapshot: Option<Vec<u8>> = self.call(move |client| async move {
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
        self.call(move |client| async move {
            let row = client
                .query_opt("SELECT user_id FROM emails WHERE email = $1", &[&email])
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn user_by_api_key(&self, digest: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
        let digest = digest.to_vec();
        self.call(move |client| async move {
            let row = client
                .query_opt("SELECT user_id FROM api_keys WHERE digest = $1", &[&digest])
                .await
                .map_err(db)?;
            row.map(|r| column(&r).map(UserId)).transpose()
        })
    }

    fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, StoreError> {
        let credential_id = credential_id.to_vec();
        self.call(move |client| async move {
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
        self.call(move |client| async move {
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
        let created = self.call(move |mut client| async move {
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
        let outcome = self.call(move |mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            let written = tx
                .execute(
                    "UPDATE users SET version = $2, snapshot = $3
                     WHERE id = $1 AND (version = $4 OR (version = $2 AND snapshot = $3))",
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
        self.call(|client| async move {
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
        self.call(move |mut client| async move {
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
        self.call(move |client| async move {
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

    fn close(&self) {
        self.commit.shutdown();
        self.pool.close();
        let stop = match self.stop.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}
