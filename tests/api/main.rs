//! Integration tests: one binary, one module per area, each test against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod login;
mod logout;
mod me;
mod meta;
mod mfa;
mod refresh;
mod register;
mod restart;
mod smoke;
mod tokens;
