//! Integration tests: one binary, one module per area, each test against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod admin_live;
mod api_keys;
mod cluster;
mod crash;
mod crosssite;
mod deactivation;
mod entitlements;
mod events;
mod flood;
mod helpers;
mod hostile;
mod idle;
mod layers;
mod lifecycle;
mod login;
mod logout;
mod me;
mod meta;
mod mfa;
mod model;
mod operate;
mod passkeys;
mod pg_cluster;
mod phone;
mod postgres;
mod refresh;
mod register;
mod restart;
mod session_list;
mod sessions_cap;
mod smoke;
mod smtp;
mod tokens;
mod webhook;
