//! bp-auth: the authentication server behind BlitzPulse.
//!
//! Stateless HTTP handlers verify tokens and pass one message to the actor that owns the user;
//! each user's actor is the only writer of that user's state and snapshots it to the store
//! before any change is acknowledged.
//!
//! # Layout
//!
//! The layers, bottom to top; each imports only the layers below it:
//!
//! - [`domain`] (layer 1): pure rules and data: ids, credentials, tokens, sessions, codes,
//!   back-off, plans, entitlements, the user state and its rules. No actix, no sled, no
//!   utoipa, no dashmap, no clock.
//! - [`store`] (layer 2): the `Store` trait, the sled engine (`store/sled.rs`, the only file
//!   that imports sled), the PostgreSQL engine (`store/postgres.rs`, the only one that imports
//!   its client crates), the snapshot codec, group commit. `store::open` is the one place an
//!   engine is named.
//! - [`actors`] (layer 3): the user actor, the views it publishes, and the directory that finds,
//!   starts and retires actors, with the passkey ceremonies waiting for their answer. The only
//!   layer that imports actix.
//! - [`api`] (layer 4): routes, extractors, authentication, the token verifier and its cache,
//!   throttles, error mapping, OpenAPI, one file per area. Reaches state only through
//!   [`actors::Directory`]; never sees the store.
//! - [`startup`] (layer 5): wiring it all together, serving, shutting down; and [`admin`],
//!   the operator commands (the `bp-auth admin` CLI): through a running server's admin socket
//!   and the user actors, or on a stopped server's data dir through the `Store` trait.
//!
//! Beside the layers, leaves any layer may use (they import [`domain`] types and each other,
//! never a layer above `domain`):
//!
//! - [`config`]: typed settings (embedded defaults, `config.toml`, `BP_AUTH__*` overrides).
//! - [`clock`]: the one reader of the wall clock.
//! - [`keys`]: signing keys and the server keys in the data dir.
//! - [`hashing`]: the bounded argon2id pool.
//! - [`delivery`]: sending verification codes (outbox, webhook, log).
//! - [`oidc`]: bp-auth as an OpenID Connect client: the configured providers, their cached
//!   discovery documents and keys, the authorization URL, the code exchange and the ID-token
//!   verification (all of it the `openidconnect` crate's).
//! - `metrics`: the Prometheus registry (private: only the layers inside use it).
//! - `audit`: the audit log's lines (private), written from recorded security events.
//! - [`telemetry`]: the tracing subscriber and the per-request span.
//!
//! Dependencies point one way: `domain` ← `store` ← `actors` ← `api` ← `startup`, checked by
//! the `layers` integration test.

pub mod actors;
pub mod admin;
pub mod api;
mod audit;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod hashing;
pub mod keys;
mod metrics;
pub mod oidc;
pub mod startup;
pub mod store;
pub mod telemetry;
