//! bp-auth: the authentication server behind BlitzPulse.
//!
//! Stateless HTTP handlers verify tokens and pass one message to the actor that owns the user;
//! each user's actor is the only writer of that user's state and snapshots it to sled before any
//! change is acknowledged.
//!
//! # Layout
//!
//! - [`config`]: typed settings (embedded defaults, `config.toml`, `BP_AUTH__*` overrides).
//! - [`clock`]: the one reader of the wall clock.
//! - [`telemetry`]: the tracing subscriber and the per-request span.
//! - [`domain`]: pure rules and data: ids, credentials, tokens, sessions, the user state.
//! - [`store`]: the `Store` trait, the sled engine, snapshot codec, group commit.
//! - [`hashing`]: the bounded argon2id pool.
//! - [`delivery`]: sending verification codes (outbox, webhook, log).
//! - [`keys`]: signing keys and the server key in the data dir.
//! - [`metrics`]: the Prometheus registry.
//! - [`actors`]: the user actor and the directory that finds, starts and retires actors.
//! - [`api`]: routes, extractors, authentication, error mapping, one file per area.
//! - [`startup`]: wiring it all together and serving.
//! - [`admin`]: operator commands on a stopped server's data dir (the `bp-auth admin` CLI).
//!
//! Dependencies point one way: `domain` ← `store` ← `actors` ← `api` ← `startup`.

pub mod actors;
pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod hashing;
pub mod keys;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod telemetry;
