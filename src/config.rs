//! Typed settings: the embedded defaults, then `config.toml`, then `BP_AUTH__SECTION__KEY`
//! environment overrides, in that order of precedence (last wins).
//!
//! Every section denies unknown fields, so a misspelt key stops the start with a message that
//! names it instead of being silently ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::plans::{self, Plan};

/// The whole configuration, one field per `config.toml` section.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tokens: TokensConfig,
    pub refresh: RefreshConfig,
    pub cookie: CookieConfig,
    pub password: PasswordConfig,
    pub rate_limit: RateLimitConfig,
    pub codes: CodesConfig,
    pub registration: RegistrationConfig,
    pub cors: CorsConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub delivery: DeliveryConfig,
    pub metrics: MetricsConfig,
    pub webauthn: WebauthnConfig,
    pub oidc: OidcConfig,
    pub plans: BTreeMap<String, Plan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP listener binds.
    pub bind: String,
    /// Where the database, the signing keys and the outbox live.
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed to name the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Send `Strict-Transport-Security` (only behind TLS termination).
    pub hsts: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            trusted_proxies: Vec::new(),
            workers: 0,
            hsts: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl_seconds: u64,
    pub refresh_ttl_seconds: u64,
    pub mfa_pending_ttl_seconds: u64,
    pub leeway_seconds: u64,
    /// Absolute lifetime of one login, however often it is refreshed.
    pub session_max_seconds: u64,
    /// Make a new signing key when the active one is this old (0 = only by `bp-auth keys rotate`).
    pub key_rotation_days: u64,
    /// Live sessions one user may have; a login past it ends the least recently used one.
    pub max_sessions_per_user: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            issuer: "bp-auth".into(),
            audience: "blitzpulse".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 2_592_000,
            mfa_pending_ttl_seconds: 300,
            leeway_seconds: 30,
            session_max_seconds: 7_776_000,
            key_rotation_days: 0,
            max_sessions_per_user: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    pub rotation_enabled: bool,
    pub reuse_grace_seconds: u64,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            rotation_enabled: true,
            reuse_grace_seconds: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    pub secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self { secure: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    pub min_length: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Hashing threads; 0 means one per core.
    pub hash_threads: usize,
    /// The nice value (0–19) the hashing threads run at: above 0 they yield the cores to token
    /// checks and refreshes when both are waiting, so a login flood cannot starve them, and
    /// still take every idle cycle.
    pub hash_nice: i32,
    /// Run the hashing threads under `SCHED_IDLE` (Linux): any other thread that wakes takes
    /// the core from a hash at once. A nice value alone leaves a woken token check waiting for
    /// the rest of the hash's time slice, which doubled `/me`'s p99 under a login flood here.
    pub hash_idle: bool,
    /// Hashes allowed to wait for a thread before requests are shed with 503.
    pub max_queue: usize,
    /// Hashes one account may have queued or running at once; more answer 429, so that one
    /// client cannot fill the queue every other login needs. Holds even with rate limits off.
    pub max_in_flight_per_account: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            min_length: 8,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_threads: 0,
            hash_nice: 19,
            hash_idle: true,
            max_queue: 64,
            max_in_flight_per_account: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub login_failures_per_account: u32,
    pub login_failures_per_ip: u32,
    pub window_seconds: u64,
    /// Registrations one client address may make per window.
    pub registrations_per_ip: u32,
    /// Wrong second-factor answers one account may give per window, across pending tokens.
    pub mfa_failures_per_account: u32,
    /// IPv6 clients are counted by this prefix (a /64 is one subscriber's network).
    pub ipv6_prefix: u8,
    /// Slots of every table keyed by client input (addresses, unknown emails): memory stays
    /// fixed however many keys an attacker names; colliding keys share a count.
    pub max_tracked_addresses: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login_failures_per_account: 10,
            login_failures_per_ip: 50,
            window_seconds: 900,
            registrations_per_ip: 20,
            mfa_failures_per_account: 10,
            ipv6_prefix: 64,
            max_tracked_addresses: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Email a verification code to every new account.
    pub send_verification_email: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            send_verification_email: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    pub resend_seconds: u64,
    pub sends_per_hour: u32,
    pub max_attempts: u32,
    pub phone_ttl_seconds: u64,
    pub reactivate_ttl_seconds: u64,
    /// Lifetime of email verification and email change codes.
    pub email_ttl_seconds: u64,
    /// Lifetime of password reset codes.
    pub reset_ttl_seconds: u64,
}

impl Default for CodesConfig {
    fn default() -> Self {
        Self {
            resend_seconds: 60,
            sends_per_hour: 5,
            max_attempts: 5,
            phone_ttl_seconds: 600,
            reactivate_ttl_seconds: 900,
            email_ttl_seconds: 900,
            reset_ttl_seconds: 900,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
}

/// When a change counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A 2xx answer to a change means it is on disk (group-committed fsync).
    Flush,
    /// Changes are flushed every `flush_every_ms`; a crash may lose the last interval.
    Periodic,
}

/// Where users are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// sled, embedded, in `<data_dir>/db`: one node.
    Sled,
    /// PostgreSQL at `storage.postgres_url`.
    Postgres,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub engine: Engine,
    /// `postgres://user:password@host:port/database`; may hold a password, so it is never
    /// printed (see the `Debug` below).
    pub postgres_url: String,
    /// The key that seals the key material nodes share through PostgreSQL; empty means
    /// `<data_dir>/master.key` (generated on first start).
    pub master_key_file: String,
    pub durability: Durability,
    pub flush_every_ms: u64,
    pub actor_idle_seconds: u64,
    /// sled's page cache in MiB; 0 sizes it from the memory available
    /// (`store::sled::cache_capacity`).
    pub cache_mb: u64,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("engine", &self.engine)
            .field("postgres_url", &"<redacted>")
            .field("master_key_file", &self.master_key_file)
            .field("durability", &self.durability)
            .field("flush_every_ms", &self.flush_every_ms)
            .field("actor_idle_seconds", &self.actor_idle_seconds)
            .field("cache_mb", &self.cache_mb)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: Engine::Sled,
            postgres_url: String::new(),
            master_key_file: String::new(),
            durability: Durability::Flush,
            flush_every_ms: 500,
            actor_idle_seconds: 600,
            cache_mb: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter directive; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// How verification codes and notifications reach people.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The delivery of both channels unless `sms` or `email` names another: `"outbox"` (append
    /// to `<data_dir>/outbox.jsonl`), `"log"` or `"webhook"` (`"smtp"` only with `sms` set).
    pub kind: DeliveryKind,
    /// The delivery of SMS messages (`kind` when absent); anything but `"smtp"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<DeliveryKind>,
    /// The delivery of email messages (`kind` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<DeliveryKind>,
    pub webhook_url: String,
    /// Key of the `X-BP-Signature` HMAC-SHA256 header of webhook deliveries.
    pub webhook_secret: String,
    pub webhook_timeout_ms: u64,
    pub webhook_retries: u32,
    /// `smtp://[user:password@]host[:port]` (STARTTLS required), `smtps://…` (implicit TLS), or
    /// `smtp://host:port?tls=none` (plaintext, for a relay on the same host only).
    pub smtp_url: String,
    /// The `From` of every email, an RFC 5322 mailbox: `BlitzPulse <no-reply@example.com>`.
    pub smtp_from: String,
    /// The longest one email's whole SMTP exchange may take before it counts as failed.
    pub smtp_timeout_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            kind: DeliveryKind::Outbox,
            sms: None,
            email: None,
            webhook_url: String::new(),
            webhook_secret: String::new(),
            webhook_timeout_ms: 3_000,
            webhook_retries: 2,
            smtp_url: String::new(),
            smtp_from: String::new(),
            smtp_timeout_ms: 10_000,
        }
    }
}

impl DeliveryConfig {
    /// The delivery of SMS messages.
    pub fn sms_kind(&self) -> DeliveryKind {
        self.sms.unwrap_or(self.kind)
    }

    /// The delivery of email messages.
    pub fn email_kind(&self) -> DeliveryKind {
        self.email.unwrap_or(self.kind)
    }

    fn validate(&self) -> Result<(), String> {
        match (self.sms, self.sms_kind()) {
            (Some(DeliveryKind::Smtp), _) => {
                return Err("delivery.sms cannot be \"smtp\": SMTP sends email only; \
                            choose \"outbox\", \"webhook\" or \"log\""
                    .into())
            }
            (None, DeliveryKind::Smtp) => {
                return Err(
                    "delivery.kind = \"smtp\" would send SMS codes by email: set \
                            delivery.sms to \"outbox\", \"webhook\" or \"log\", or leave kind \
                            alone and set delivery.email = \"smtp\""
                        .into(),
                )
            }
            _ => {}
        }
        for (channel, kind) in [("sms", self.sms_kind()), ("email", self.email_kind())] {
            if kind == DeliveryKind::Webhook
                && (self.webhook_url.is_empty() || self.webhook_secret.is_empty())
            {
                return Err(format!(
                    "the {channel} delivery is \"webhook\": it needs delivery.webhook_url and \
                     delivery.webhook_secret"
                ));
            }
        }
        if self.email_kind() == DeliveryKind::Smtp {
            crate::delivery::smtp::Settings::from_config(self).map(drop)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    Outbox,
    Log,
    Webhook,
    /// Email only: `delivery.smtp_url`, `delivery.smtp_from`.
    Smtp,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Log => "log",
            Self::Webhook => "webhook",
            Self::Smtp => "smtp",
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`.
    pub enabled: bool,
    /// Serve it on this separate address (e.g. `127.0.0.1:9090`) instead of the API listener.
    pub bind: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: String::new(),
        }
    }
}

/// Passkeys: the WebAuthn relying party.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id: the domain passkeys are bound to (the site's domain or a parent of
    /// it). Changing it orphans every registered passkey.
    pub rp_id: String,
    /// The origins (`scheme://host[:port]`) whose pages may run ceremonies; the first must be on
    /// `rp_id`. `cors.allowed_origins` are allowed too.
    pub rp_origins: Vec<String>,
    /// The name authenticators show.
    pub rp_name: String,
    /// How long a ceremony waits for its answer (also the browser's timeout).
    pub challenge_ttl_seconds: u64,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            rp_id: "localhost".into(),
            rp_origins: vec!["http://localhost:8080".into()],
            rp_name: "BlitzPulse".into(),
            challenge_ttl_seconds: 300,
        }
    }
}

/// Sign in with OpenID Connect providers (Google and any other with a discovery document).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// bp-auth's own public URL, as browsers and providers reach it (`https://auth.example.com`,
    /// a path prefix allowed): the redirect URI registered with each provider is
    /// `<public_url>/api/auth/oidc/<name>/callback`. Required once a provider is configured.
    pub public_url: String,
    /// The frontend URLs a sign-in may return to: an entry with a path admits that URL and the
    /// paths below it, an origin alone (`https://app.example.com`) admits every path on it.
    /// Absent: the origins of `cors.allowed_origins`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_allowlist: Option<Vec<String>>,
    /// The most sign-in steps (begun flows, login codes) kept at once, across nodes; past it a
    /// start answers 503 until some expire (10 minutes at most).
    pub max_pending: usize,
    /// The providers, by the name used in the paths (`[oidc.providers.google]`).
    pub providers: BTreeMap<String, OidcProviderConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            redirect_allowlist: None,
            max_pending: 100_000,
            providers: BTreeMap::new(),
        }
    }
}

/// One OpenID Connect provider.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcProviderConfig {
    /// The issuer; its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret; better `client_secret_env`, which keeps it out of files.
    pub client_secret: String,
    /// The name of an environment variable holding the client secret.
    pub client_secret_env: String,
    /// Scopes asked for; `openid` is always asked.
    pub scopes: Vec<String>,
    /// What the frontend shows ("Google"); the name when empty.
    pub display_name: String,
}

impl Default for OidcProviderConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_env: String::new(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            display_name: String::new(),
        }
    }
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("client_secret_env", &self.client_secret_env)
            .field("scopes", &self.scopes)
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl OidcProviderConfig {
    /// The client secret: `client_secret`, or the variable `client_secret_env` names (`None`
    /// for a public client, which PKCE alone protects). The error names the variable, never a
    /// value.
    pub fn secret(&self) -> Result<Option<String>, String> {
        match (
            self.client_secret.is_empty(),
            self.client_secret_env.is_empty(),
        ) {
            (false, false) => Err("set client_secret or client_secret_env, not both".into()),
            (false, true) => Ok(Some(self.client_secret.clone())),
            (true, false) => match std::env::var(&self.client_secret_env) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(format!(
                    "client_secret_env names {:?}, which is not set",
                    self.client_secret_env
                )),
            },
            (true, true) => Ok(None),
        }
    }
}

impl OidcConfig {
    /// The redirect allowlist in force: as configured, or the CORS origins.
    pub fn allowlist<'a>(&'a self, cors: &'a CorsConfig) -> &'a [String] {
        self.redirect_allowlist
            .as_deref()
            .unwrap_or(&cors.allowed_origins)
    }

    fn validate(&self, cors: &CorsConfig) -> Result<(), String> {
        if !(1..=10_000_000).contains(&self.max_pending) {
            return Err("oidc.max_pending must be between 1 and 10000000".into());
        }
        for entry in self.allowlist(cors) {
            crate::oidc::redirect::Allowed::parse(entry)
                .map_err(|e| format!("oidc.redirect_allowlist: {entry:?}: {e}"))?;
        }
        if self.providers.is_empty() {
            return Ok(());
        }
        crate::oidc::public_base(&self.public_url).map_err(|e| format!("oidc.public_url: {e}"))?;
        for (name, p) in &self.providers {
            let at = |e: String| format!("oidc.providers.{name}: {e}");
            crate::oidc::check_name(name).map_err(at)?;
            let issuer = url::Url::parse(&p.issuer)
                .map_err(|e| at(format!("issuer {:?} is not a URL: {e}", p.issuer)))?;
            // Plain http only for a provider on this machine (a test or a local proxy): an
            // issuer's documents and keys are what every ID token is checked against.
            let loopback = matches!(issuer.host(), Some(url::Host::Domain("localhost")))
                || matches!(issuer.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(issuer.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
            let secure = issuer.scheme() == "https" || (issuer.scheme() == "http" && loopback);
            if !secure {
                return Err(at(
                    "issuer must be an https URL (http only on a loopback address)".into(),
                ));
            }
            if p.client_id.is_empty() {
                return Err(at("client_id is required".into()));
            }
            p.secret().map_err(at)?;
        }
        Ok(())
    }
}

impl Config {
    /// The WebAuthn relying party: `webauthn.*`, its origins and the CORS ones.
    pub fn relying_party(&self) -> Result<webauthn_rs::Webauthn, ConfigError> {
        let mut origins = self.webauthn.rp_origins.clone();
        for o in &self.cors.allowed_origins {
            if !origins.iter().any(|known| known.eq_ignore_ascii_case(o)) {
                origins.push(o.clone());
            }
        }
        crate::domain::passkeys::RelyingParty {
            id: &self.webauthn.rp_id,
            name: &self.webauthn.rp_name,
            origins: &origins,
            challenge_ttl: self.webauthn.challenge_ttl_seconds,
        }
        .build()
        .map_err(ConfigError::Invalid)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

const ENV_PREFIX: &str = "BP_AUTH__";

impl Config {
    /// Loads the layered configuration. `explicit` is a file named with `--config`: unlike the
    /// implicit `./config.toml`, its absence is an error.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match explicit {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.exists()),
        };
        Self::figment(file.as_deref(), Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// The layering itself, with the environment provider passed in so tests can supply one.
    pub fn figment(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default_with_plans()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Self = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults, including the shipped plans.
    pub fn default_with_plans() -> Self {
        Self {
            plans: plans::catalogue(),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.password.min_length == 0 || self.password.min_length > 128 {
            return bad("password.min_length must be between 1 and 128");
        }
        if self.password.argon2_memory_kib < 8 * self.password.argon2_parallelism.max(1) {
            return bad("password.argon2_memory_kib is below argon2's minimum");
        }
        if !(0..=19).contains(&self.password.hash_nice) {
            return bad("password.hash_nice must be between 0 and 19");
        }
        if self.password.argon2_iterations == 0 || self.password.argon2_parallelism == 0 {
            return bad("password.argon2_iterations and argon2_parallelism must be at least 1");
        }
        if self.tokens.access_ttl_seconds == 0 || self.tokens.refresh_ttl_seconds == 0 {
            return bad("tokens.access_ttl_seconds and refresh_ttl_seconds must be positive");
        }
        if self.tokens.max_sessions_per_user == 0 {
            return bad("tokens.max_sessions_per_user must be at least 1");
        }
        if !self.plans.contains_key("free") {
            return bad("plans.free must exist: every registration starts on it");
        }
        if self.codes.max_attempts == 0 {
            return bad("codes.max_attempts must be at least 1");
        }
        if self.password.max_in_flight_per_account == 0 {
            return bad("password.max_in_flight_per_account must be at least 1");
        }
        if self.rate_limit.ipv6_prefix == 0 || self.rate_limit.ipv6_prefix > 128 {
            return bad("rate_limit.ipv6_prefix must be between 1 and 128");
        }
        if !(1..=10_000_000).contains(&self.rate_limit.max_tracked_addresses) {
            return bad("rate_limit.max_tracked_addresses must be between 1 and 10000000");
        }
        self.delivery.validate().map_err(ConfigError::Invalid)?;
        if !(1..=3_600).contains(&self.webauthn.challenge_ttl_seconds) {
            return bad("webauthn.challenge_ttl_seconds must be between 1 and 3600");
        }
        self.relying_party()?;
        self.oidc
            .validate(&self.cors)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

/// Figment's messages name the key path (`unknown field `x` ... for key "default.refresh"`);
/// flatten every error of the chain into one line.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("{} (at `{path}`)", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)]
    fn with_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(Config::figment(None, Env::prefixed(ENV_PREFIX).split("__")));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default_with_plans();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.tokens.access_ttl_seconds, 900);
        assert_eq!(c.tokens.refresh_ttl_seconds, 2_592_000);
        assert_eq!(c.tokens.leeway_seconds, 30);
        assert_eq!(c.tokens.max_sessions_per_user, 100);
        assert!(c.refresh.rotation_enabled);
        assert_eq!(c.password.argon2_memory_kib, 19_456);
        assert_eq!(c.storage.durability, Durability::Flush);
        assert!(c.plans.contains_key("pro"));
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = with_env(&[
            ("BP_AUTH__REFRESH__ROTATION_ENABLED", "false"),
            ("BP_AUTH__PLANS__FREE__LIMITS__WATCHLISTS", "5"),
        ])
        .unwrap();
        assert!(!c.refresh.rotation_enabled);
        assert_eq!(c.plans["free"].limits["watchlists"], 5);
        assert_eq!(c.plans["free"].limits["api_requests_per_day"], 1_000);
    }

    #[test]
    fn environment_takes_lists_in_brackets() {
        let c = with_env(&[(
            "BP_AUTH__SERVER__TRUSTED_PROXIES",
            r#"["127.0.0.1", "::1"]"#,
        )])
        .unwrap();
        let want: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(c.server.trusted_proxies, want);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = with_env(&[("BP_AUTH__REFRESH__ROTATE", "false")]).unwrap_err();
        assert!(err.to_string().contains("rotate"), "{err}");
    }

    #[test]
    fn a_user_may_have_at_least_one_session() {
        let err = with_env(&[("BP_AUTH__TOKENS__MAX_SESSIONS_PER_USER", "0")]).unwrap_err();
        assert!(err.to_string().contains("max_sessions_per_user"), "{err}");
        let c = with_env(&[("BP_AUTH__TOKENS__MAX_SESSIONS_PER_USER", "3")]).unwrap();
        assert_eq!(c.tokens.max_sessions_per_user, 3);
    }

    #[test]
    fn each_channel_defaults_to_kind() {
        let c = with_env(&[]).unwrap();
        assert_eq!((c.delivery.sms, c.delivery.email), (None, None));
        assert_eq!(c.delivery.sms_kind(), DeliveryKind::Outbox);
        assert_eq!(c.delivery.email_kind(), DeliveryKind::Outbox);
        let c = with_env(&[("BP_AUTH__DELIVERY__KIND", "log")]).unwrap();
        assert_eq!(c.delivery.sms_kind(), DeliveryKind::Log);
        assert_eq!(c.delivery.email_kind(), DeliveryKind::Log);
        let c = with_env(&[
            ("BP_AUTH__DELIVERY__KIND", "log"),
            ("BP_AUTH__DELIVERY__SMS", "outbox"),
        ])
        .unwrap();
        assert_eq!(c.delivery.sms_kind(), DeliveryKind::Outbox);
        assert_eq!(c.delivery.email_kind(), DeliveryKind::Log);
    }

    #[test]
    fn email_by_smtp_from_the_environment() {
        let c = with_env(&[
            ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
            (
                "BP_AUTH__DELIVERY__SMTP_URL",
                "smtp://bp:s3cret@mail.example:587",
            ),
            (
                "BP_AUTH__DELIVERY__SMTP_FROM",
                "BlitzPulse <no-reply@blitzpulse.example>",
            ),
            ("BP_AUTH__DELIVERY__SMTP_TIMEOUT_MS", "2500"),
        ])
        .unwrap();
        assert_eq!(c.delivery.sms_kind(), DeliveryKind::Outbox);
        assert_eq!(c.delivery.email_kind(), DeliveryKind::Smtp);
        assert_eq!(c.delivery.smtp_timeout_ms, 2_500);
        // With kind = "smtp", SMS must be sent some other way.
        let c = with_env(&[
            ("BP_AUTH__DELIVERY__KIND", "smtp"),
            ("BP_AUTH__DELIVERY__SMS", "log"),
            ("BP_AUTH__DELIVERY__SMTP_URL", "smtps://mail.example"),
            (
                "BP_AUTH__DELIVERY__SMTP_FROM",
                "no-reply@blitzpulse.example",
            ),
        ])
        .unwrap();
        assert_eq!(c.delivery.email_kind(), DeliveryKind::Smtp);
        assert_eq!(c.delivery.smtp_timeout_ms, 10_000);
    }

    #[test]
    fn smtp_for_sms_is_refused_with_the_way_out() {
        let err = with_env(&[("BP_AUTH__DELIVERY__KIND", "smtp")]).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("delivery.sms") && err.contains("delivery.email = \"smtp\""),
            "{err}"
        );
        let err = with_env(&[
            ("BP_AUTH__DELIVERY__SMS", "smtp"),
            ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("delivery.sms cannot be"), "{err}");
    }

    #[test]
    fn incomplete_delivery_settings_are_refused() {
        for (vars, says) in [
            (
                &[("BP_AUTH__DELIVERY__EMAIL", "smtp")][..],
                "needs delivery.smtp_url",
            ),
            (
                &[
                    ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
                    ("BP_AUTH__DELIVERY__SMTP_URL", "smtp://mail.example"),
                ][..],
                "needs delivery.smtp_from",
            ),
            (
                &[
                    ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
                    (
                        "BP_AUTH__DELIVERY__SMTP_URL",
                        "smtp://u:s3cret@mail.example?tls=none",
                    ),
                    (
                        "BP_AUTH__DELIVERY__SMTP_FROM",
                        "no-reply@blitzpulse.example",
                    ),
                ][..],
                "in clear",
            ),
            (
                &[("BP_AUTH__DELIVERY__SMS", "webhook")][..],
                "the sms delivery is \"webhook\"",
            ),
            (
                &[("BP_AUTH__DELIVERY__EMAIL", "webhook")][..],
                "the email delivery is \"webhook\"",
            ),
            (&[("BP_AUTH__DELIVERY__EMAIL", "pigeon")][..], "email"),
        ] {
            let err = with_env(vars).unwrap_err().to_string();
            assert!(err.contains(says), "{vars:?}: {err}");
            assert!(!err.contains("s3cret"), "{vars:?}: {err}");
        }
        // Settings only matter to the delivery that uses them.
        with_env(&[("BP_AUTH__DELIVERY__SMTP_URL", "not checked")]).unwrap();
    }

    #[test]
    fn the_relying_party_follows_webauthn_and_cors() {
        let c = with_env(&[]).unwrap();
        let w = c.relying_party().unwrap();
        let origins: Vec<String> = w
            .get_allowed_origins()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(origins, ["http://localhost:8080/"]);
        let c = with_env(&[
            ("BP_AUTH__WEBAUTHN__RP_ID", "blitzpulse.example"),
            (
                "BP_AUTH__WEBAUTHN__RP_ORIGINS",
                r#"["https://auth.blitzpulse.example"]"#,
            ),
            (
                "BP_AUTH__CORS__ALLOWED_ORIGINS",
                r#"["https://app.blitzpulse.example"]"#,
            ),
        ])
        .unwrap();
        let w = c.relying_party().unwrap();
        assert_eq!(w.get_allowed_origins().len(), 2);
        let err = with_env(&[("BP_AUTH__WEBAUTHN__RP_ID", "example.org")]).unwrap_err();
        assert!(err.to_string().contains("webauthn.rp_id"), "{err}");
        let err = with_env(&[("BP_AUTH__WEBAUTHN__CHALLENGE_TTL_SECONDS", "0")]).unwrap_err();
        assert!(err.to_string().contains("challenge_ttl_seconds"), "{err}");
    }

    #[test]
    fn oidc_providers_are_checked_at_start() {
        let google = [
            ("BP_AUTH__OIDC__PUBLIC_URL", "https://auth.example.com"),
            (
                "BP_AUTH__OIDC__PROVIDERS__GOOGLE__ISSUER",
                "https://accounts.google.com",
            ),
            ("BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_ID", "id-1"),
            ("BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_SECRET", "s3cret"),
        ];
        let c = with_env(&google).unwrap();
        let g = &c.oidc.providers["google"];
        assert_eq!(g.scopes, ["openid", "email", "profile"]);
        assert_eq!(g.secret().unwrap().as_deref(), Some("s3cret"));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the secret is never printed"
        );
        assert_eq!(c.oidc.allowlist(&c.cors), &[] as &[String]);
        let refused = |extra: &[(&str, &str)], says: &str| {
            let mut vars = google.to_vec();
            vars.extend_from_slice(extra);
            let err = with_env(&vars).unwrap_err().to_string();
            assert!(err.contains(says), "{extra:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        };
        refused(
            &[("BP_AUTH__OIDC__PROVIDERS__GOOGLE__TENANT", "x")],
            "tenant",
        );
        refused(&[("BP_AUTH__OIDC__PUBLIC_URL", "")], "oidc.public_url");
        refused(
            &[(
                "BP_AUTH__OIDC__PROVIDERS__GOOGLE__ISSUER",
                "http://accounts.google.com",
            )],
            "https",
        );
        refused(
            &[(
                "BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_SECRET_ENV",
                "BP_TEST_UNSET_SECRET",
            )],
            "not both",
        );
        refused(
            &[(
                "BP_AUTH__OIDC__REDIRECT_ALLOWLIST",
                r#"["https://u@app.example.com"]"#,
            )],
            "oidc.redirect_allowlist",
        );
        refused(
            &[("BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_ID", "")],
            "client_id",
        );
        let err = with_env(&[
            ("BP_AUTH__OIDC__PUBLIC_URL", "https://auth.example.com"),
            (
                "BP_AUTH__OIDC__PROVIDERS__GOOGLE__ISSUER",
                "https://accounts.google.com",
            ),
            ("BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_ID", "id-1"),
            (
                "BP_AUTH__OIDC__PROVIDERS__GOOGLE__CLIENT_SECRET_ENV",
                "BP_TEST_UNSET_SECRET",
            ),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("BP_TEST_UNSET_SECRET"), "{err}");
        // Plain http for a provider on this machine (the tests' own).
        with_env(&[
            ("BP_AUTH__OIDC__PUBLIC_URL", "http://127.0.0.1:8080"),
            (
                "BP_AUTH__OIDC__PROVIDERS__LOCAL__ISSUER",
                "http://127.0.0.1:9000",
            ),
            ("BP_AUTH__OIDC__PROVIDERS__LOCAL__CLIENT_ID", "id-2"),
        ])
        .unwrap();
        let err = with_env(&[
            ("BP_AUTH__OIDC__PUBLIC_URL", "http://127.0.0.1:8080"),
            (
                "BP_AUTH__OIDC__PROVIDERS__BAD_NAME__ISSUER",
                "http://127.0.0.1:9000",
            ),
            ("BP_AUTH__OIDC__PROVIDERS__BAD_NAME__CLIENT_ID", "id-2"),
        ]);
        assert!(err.is_ok(), "lowercase with '_' is a fine name: {err:?}");
        // The allowlist defaults to the CORS origins.
        let c = with_env(&[(
            "BP_AUTH__CORS__ALLOWED_ORIGINS",
            r#"["https://app.example.com"]"#,
        )])
        .unwrap();
        assert_eq!(c.oidc.allowlist(&c.cors), ["https://app.example.com"]);
    }

    #[test]
    fn wrong_type_is_named() {
        let err = with_env(&[("BP_AUTH__TOKENS__ACCESS_TTL_SECONDS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("access_ttl_seconds"), "{err}");
    }
}

#[cfg(test)]
mod shipped_file {
    use super::*;

    #[test]
    fn config_toml_states_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let from_file: Config = Figment::from(Toml::file_exact(&path)).extract().unwrap();
        let defaults = Config::default_with_plans();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }
}
