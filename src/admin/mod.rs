//! Operator commands (`bp-auth admin ...`): inspect and fix accounts, revoke sessions, reset
//! MFA, export, back up and import.
//!
//! Each command runs one of two ways, with the same output:
//!
//! - **through a running server**: the server listens on an owner-only Unix socket in its data
//!   dir (`socket`); the CLI (`client`) sends the command there, and changes go through the
//!   user's actor, so they hold for live tokens at once;
//! - **on a stopped server's data dir** (`local`), when no server answers on the socket: the
//!   CLI opens the database itself, through the same `Store` as the server.
//!
//! Either way the same functions decide what is done and printed: `commands` for accounts
//! (over the two kinds of `accounts`), `export` for exports, backups and imports. A running
//! server holds sled's lock on the data dir, so the CLI never opens a database a server uses.

mod accounts;
mod client;
pub mod commands;
pub mod export;
mod local;
pub mod migrate;
mod outfile;
pub mod socket;
pub mod wire;

use std::sync::Arc;

use crate::config::Config;
use crate::keys::KeyError;
use crate::store::{self, Store, StoreError};

pub use commands::{Command, Invocation, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the data directory {0} is in use by a running bp-auth, but its admin socket does not \
         answer (see the server's log for why it has none); stop the server to run admin \
         commands on the data directory"
    )]
    InUse(String),
    #[error("no user with email {0}")]
    NoSuchUser(String),
    #[error("no plan named {0} in the configuration")]
    NoSuchPlan(String),
    #[error("{0}")]
    Invalid(String),
    /// The running server refused or failed the command; its message, as it gave it.
    #[error("{0}")]
    Server(String),
    /// Talking to the running server failed.
    #[error("admin socket {0}")]
    Socket(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs an operator's command: through the running server's admin socket if one answers,
/// else on the data dir itself. Returns what to print.
pub fn run(config: &Config, invocation: &Invocation) -> Result<String, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let path = socket::socket_path(&config.server.data_dir);
        match client::connect(&path).await? {
            Some(server) => client::run(server, invocation).await,
            None => local::run(config, invocation).await,
        }
    })
}

/// Opens the data dir's store, naming a running server as the reason it cannot be.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, AdminError> {
    store::open(&config.server.data_dir, &config.storage).map_err(|e| match e {
        StoreError::Locked => AdminError::InUse(config.server.data_dir.display().to_string()),
        other => other.into(),
    })
}
