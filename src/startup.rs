//! Builds the application: opens the data dir and the store, binds the admin socket, loads the
//! keys, starts the hashing pool, the actor arbiters and the directory, binds the listener, and
//! on shutdown drains requests, closes the admin socket and flushes the store.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;

use crate::actors::{Directory, DirectoryConfig, PasskeySettings};
use crate::admin::socket::{AdminSocket, Live};
use crate::api::verifier::Verifier;
use crate::api::{self, AppState};
use crate::clock;
use crate::config::Config;
use crate::delivery;
use crate::domain::codes::CodePolicy;
use crate::domain::password::Hasher;
use crate::domain::sessions::SessionPolicy;
use crate::domain::tokens::Keyring;
use crate::hashing::HashPool;
use crate::keys::{self, KeyFiles};
use crate::store::{self, Store};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data directory {0}: {1}")]
    DataDir(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Hashing(#[from] crate::hashing::HashPoolError),
    #[error("delivery: {0}")]
    Delivery(String),
    #[error("cannot bind {0}: {1}")]
    Bind(String, std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A built, bound, not yet running server.
pub struct Application {
    state: web::Data<AppState>,
    config: Arc<Config>,
    server: Server,
    metrics_server: Option<Server>,
    port: u16,
    store: Arc<dyn Store>,
    directory: Directory,
    admin: Option<AdminSocket>,
    key_files: Arc<dyn KeyFiles>,
    /// Told when another node added key material (a shared engine's notification).
    keys_changed: Arc<tokio::sync::Notify>,
}

/// Creates the data dir if needed and makes it owner-only (`0700`): it holds the keys and
/// every user's snapshot.
fn ensure_data_dir(dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| StartupError::DataDir(dir.display().to_string(), e.to_string());
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// The keyring from the key files (the data dir's, or the shared database's).
pub fn load_keyring<K: KeyFiles + ?Sized>(
    config: &Config,
    files: &K,
) -> Result<Keyring, StartupError> {
    let signing = keys::load_or_create_signing_keys(files, clock::now())?;
    let active = signing.active().cloned().ok_or_else(|| {
        StartupError::DataDir(
            config.server.data_dir.display().to_string(),
            "no signing key".into(),
        )
    })?;
    let published = signing.published(max_token_life(config), clock::now());
    Ok(Keyring::new(
        active,
        published,
        config.tokens.issuer.clone(),
        config.tokens.audience.clone(),
        config.tokens.leeway_seconds,
    ))
}

/// Threads for the user actors: one per core when a write costs memory and CPU (sled: the
/// flush is awaited apart, by the group committer); more with a shared engine, where each write
/// holds its actor's thread for a round trip and the database's commit, so that commits of
/// different users overlap (and PostgreSQL groups their WAL flushes) instead of queueing two at
/// a time behind two threads.
fn actor_threads(store: &dyn Store, cores: usize) -> usize {
    if store.shared() {
        (cores * 8).clamp(16, store::postgres::POOL_SIZE - 8)
    } else {
        cores
    }
}

/// The longest a signed token can stay valid: what a superseded key must outlive.
pub fn max_token_life(config: &Config) -> u64 {
    let t = &config.tokens;
    t.access_ttl_seconds.max(t.mfa_pending_ttl_seconds) + t.leeway_seconds
}

impl Application {
    /// Must run inside an actix system (the actors' arbiters are started here).
    pub fn build(config: Config) -> Result<Self, StartupError> {
        let data_dir = config.server.data_dir.clone();
        ensure_data_dir(&data_dir)?;
        let store = store::open(&data_dir, &config.storage)?;
        store.prewarm();
        let admin = AdminSocket::bind(&data_dir);
        let key_files = store::key_files(store.as_ref(), &data_dir);
        auto_rotate(&config, key_files.as_ref());
        let keyring = load_keyring(&config, key_files.as_ref())?;
        let server_key = keys::load_or_create_server_key(key_files.as_ref())?;
        let data_key = keys::load_or_create_data_key(key_files.as_ref())?;
        let p = &config.password;
        let hasher = Hasher::new(
            p.argon2_memory_kib,
            p.argon2_iterations,
            p.argon2_parallelism,
        )
        .map_err(|e| crate::hashing::HashPoolError::Failed(e.to_string()))?;
        let hashes = HashPool::start(
            hasher,
            p.hash_threads,
            p.max_queue,
            crate::hashing::Priority {
                nice: p.hash_nice,
                idle: p.hash_idle,
            },
        )?;

        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let policy = SessionPolicy {
            refresh_ttl: config.tokens.refresh_ttl_seconds,
            session_max: config.tokens.session_max_seconds,
            rotation_enabled: config.refresh.rotation_enabled,
            reuse_grace: config.refresh.reuse_grace_seconds,
            max_sessions: config.tokens.max_sessions_per_user,
        };
        let codes = &config.codes;
        let code_policy = |ttl| CodePolicy {
            ttl,
            resend: codes.resend_seconds,
            per_hour: codes.sends_per_hour,
            max_attempts: codes.max_attempts,
        };
        let delivery = delivery::from_config(&config.delivery, &data_dir)
            .map_err(|e| StartupError::Delivery(e.to_string()))?;
        let throttle = api::throttle::Throttle::new(
            &config.rate_limit,
            &config.server,
            config.password.max_in_flight_per_account,
        );
        let directory = Directory::new(
            store.clone(),
            (server_key, data_key),
            delivery,
            DirectoryConfig {
                policy,
                idle: Duration::from_secs(config.storage.actor_idle_seconds.max(1)),
                phone_codes: code_policy(codes.phone_ttl_seconds),
                reactivate_codes: code_policy(codes.reactivate_ttl_seconds),
                email_codes: code_policy(codes.email_ttl_seconds),
                reset_codes: code_policy(codes.reset_ttl_seconds),
                attempts: throttle.rules(),
                passkeys: PasskeySettings {
                    webauthn: Arc::new(config.relying_party()?),
                    challenge_ttl: config.webauthn.challenge_ttl_seconds,
                    login_slots: config.rate_limit.max_tracked_addresses,
                },
                oidc_max_pending: config.oidc.max_pending,
            },
            actor_threads(store.as_ref(), cores),
        );

        directory.start_sweeper();
        let keys_changed = Arc::new(tokio::sync::Notify::new());
        if store.shared() {
            watch_other_nodes(store.as_ref(), &directory, keys_changed.clone())?;
        }
        let listener = TcpListener::bind(&config.server.bind)
            .map_err(|e| StartupError::Bind(config.server.bind.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(config.server.bind.clone(), e))?
            .port();
        let workers = if config.server.workers == 0 {
            cores
        } else {
            config.server.workers
        };
        let oidc = crate::oidc::Providers::from_config(&config)?;
        let redirects = config
            .oidc
            .allowlist(&config.cors)
            .iter()
            .map(|e| crate::oidc::redirect::Allowed::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                crate::config::ConfigError::Invalid(format!("oidc.redirect_allowlist: {e}"))
            })?;
        let config = Arc::new(config);
        let state = web::Data::new(AppState {
            directory: directory.clone(),
            hashes,
            throttle,
            config: config.clone(),
            keyring: ArcSwap::from_pointee(Verifier::new(keyring)),
            oidc,
            redirects,
        });
        let state_handle = state.clone();
        let hsts = config.server.hsts;
        let metrics_here = config.metrics.enabled && config.metrics.bind.is_empty();
        let metrics_server = if config.metrics.enabled && !config.metrics.bind.is_empty() {
            let data = state.clone();
            let bind = config.metrics.bind.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(api::metrics_route)
            })
            .workers(1)
            .disable_signals()
            .bind(&bind)
            .map_err(|e| StartupError::Bind(bind.clone(), e))?
            .run();
            tracing::info!(bind = %config.metrics.bind, "metrics listening");
            Some(server)
        } else {
            None
        };
        let server = HttpServer::new(move || {
            let mut headers = DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff"));
            if hsts {
                headers = headers.add((
                    "Strict-Transport-Security",
                    "max-age=31536000; includeSubDomains",
                ));
            }
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(api::cors::cors))
                .wrap(from_fn(api::extract::limit_headers))
                .wrap(headers)
                .wrap(from_fn(telemetry::request_span))
                .configure(api::routes)
                .configure(|cfg| {
                    if metrics_here {
                        api::metrics_route(cfg);
                    }
                })
                .default_service(web::to(api::not_found))
        })
        .workers(workers)
        .max_connections(10_000)
        .client_request_timeout(Duration::from_secs(10))
        .client_disconnect_timeout(Duration::from_secs(2))
        .shutdown_timeout(10)
        // actix-server stops at once, dropping requests in flight, on SIGINT (and SIGQUIT);
        // the contract wants SIGINT to drain like SIGTERM, so the signals are ours.
        .disable_signals()
        .listen(listener)
        .map_err(|e| StartupError::Bind(config.server.bind.clone(), e))?
        .run();
        tracing::info!(port, data_dir = %data_dir.display(), "bp-auth listening");
        Ok(Self {
            state: state_handle,
            config: config.clone(),
            server,
            metrics_server,
            port,
            store,
            directory,
            admin,
            key_files,
            keys_changed,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere (tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or a stop through the handle), draining requests in flight,
    /// then flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|s| {
            let handle = s.handle();
            actix_web::rt::spawn(s);
            handle
        });
        let keys_task = actix_web::rt::spawn(watch_keys(
            self.state.clone(),
            self.config.clone(),
            self.key_files.clone(),
            self.keys_changed.clone(),
        ));
        let signals_task = actix_web::rt::spawn(drain_on_signal(self.server.handle()));
        let prune_task = actix_web::rt::spawn(prune_limiters(self.state.clone()));
        let admin = self.admin.map(|socket| {
            socket.serve(Live::new(
                self.directory.clone(),
                self.store.clone(),
                self.config.clone(),
            ))
        });
        let result = self.server.await;
        keys_task.abort();
        signals_task.abort();
        prune_task.abort();
        if let Some(h) = metrics {
            h.stop(true).await;
        }
        if let Some(admin) = admin {
            admin.stop().await;
        }
        self.directory.stop();
        self.store.close();
        tracing::info!("bp-auth stopped; store flushed");
        // Every handle of the store gone, the engine may prepare its next start.
        let (data_dir, storage) = (
            self.config.server.data_dir.clone(),
            self.config.storage.clone(),
        );
        drop(self.state);
        drop(self.directory);
        drop(self.store);
        let started = std::time::Instant::now();
        let checkpointed =
            tokio::task::spawn_blocking(move || crate::store::checkpoint(&data_dir, &storage))
                .await;
        match checkpointed {
            Ok(Ok(())) => tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "store checkpointed for a quick start"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store not checkpointed; the next start replays its log")
            }
            Err(e) => {
                tracing::warn!(error = %e, "store not checkpointed; the next start replays its log")
            }
        }
        result
    }
}

/// Every minute, drops the rate limiters' keys that are back at rest, so their memory follows
/// recent traffic rather than its peak (their number is bounded by the throttle's slots anyway).
async fn prune_limiters(state: web::Data<AppState>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        state.throttle.prune();
    }
}

/// SIGTERM or SIGINT: stop accepting, let requests in flight finish (up to the shutdown
/// timeout), then return from `run_until_stopped`, which flushes the store.
async fn drain_on_signal(server: actix_web::dev::ServerHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the server another way");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "draining requests in flight, then stopping");
    server.stop(true).await;
}

/// Tells the directory what other nodes change, from the shared engine's notifications, on a
/// thread of its own: the engine's thread must never wait, and dropping an actor may wait for
/// a load in progress (which waits on the engine's thread).
fn watch_other_nodes(
    store: &dyn Store,
    directory: &Directory,
    keys_changed: Arc<tokio::sync::Notify>,
) -> Result<(), StartupError> {
    let (tx, rx) = std::sync::mpsc::channel::<store::Changed>();
    let directory = directory.clone();
    std::thread::Builder::new()
        .name("bp-invalidate".into())
        .spawn(move || {
            for change in rx {
                directory.invalidate(change);
                if change == store::Changed::Keys {
                    keys_changed.notify_one();
                }
            }
        })
        .map_err(|e| StartupError::DataDir("invalidation thread".into(), e.to_string()))?;
    let tx = std::sync::Mutex::new(tx);
    store.watch(Arc::new(move |change| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(change);
        }
    }));
    Ok(())
}

/// Reloads the signing keys: on SIGHUP (after `bp-auth keys rotate`), when another node added
/// one (a shared engine), and hourly so that superseded keys retire once their tokens have
/// expired. With `tokens.key_rotation_days` set, also makes a new key when the active one is
/// that old. Requests in flight keep the keyring they started with; new ones get the new one.
async fn watch_keys(
    state: web::Data<AppState>,
    config: Arc<Config>,
    files: Arc<dyn KeyFiles>,
    changed: Arc<tokio::sync::Notify>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; keys reload hourly only");
            None
        }
    };
    let mut hourly = tokio::time::interval(Duration::from_secs(3_600));
    hourly.tick().await;
    loop {
        let signalled = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = signalled => tracing::info!("SIGHUP: reloading signing keys"),
            _ = changed.notified() => tracing::info!("another node added a signing key; reloading"),
            _ = hourly.tick() => auto_rotate(&config, files.as_ref()),
        }
        // The key files may be the database's: read them off the async threads.
        let (c, f) = (config.clone(), files.clone());
        let loaded = tokio::task::spawn_blocking(move || load_keyring(&c, f.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(StartupError::DataDir(
                    "keys".into(),
                    format!("key reload failed: {e}"),
                ))
            });
        match loaded {
            Ok(k) => {
                let previous = state.keyring().active_kid().to_string();
                if previous != k.active_kid() {
                    tracing::info!(target: "bp_auth::audit", event = "signing_key_rotated", outcome = "active", kid = %k.active_kid(), previous = %previous);
                }
                tracing::info!(active = %k.active_kid(), "signing keys loaded");
                state.keyring.store(Arc::new(Verifier::new(k)));
            }
            Err(e) => {
                tracing::error!(error = %e, "signing keys not reloaded; keeping the current ones")
            }
        }
    }
}

fn auto_rotate(config: &Config, dir: &dyn KeyFiles) {
    let days = config.tokens.key_rotation_days;
    if days == 0 {
        return;
    }
    let now = clock::now();
    let due = keys::load_or_create_signing_keys(dir, now)
        .ok()
        .and_then(|k| k.keys.first().map(|(_, created)| *created))
        .is_some_and(|created| created.plus(days * 86_400) <= now);
    if due {
        match keys::generate_signing_key(dir, now) {
            Ok(k) => tracing::info!(kid = %k.kid, "signing key rotated automatically"),
            Err(e) => tracing::error!(error = %e, "automatic key rotation failed"),
        }
    }
}
