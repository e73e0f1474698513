//! What an operator asks for, what comes of it, and what is printed: the functions both ways
//! of running a command share, so that their output is the same by construction.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::accounts::Accounts;
use super::AdminError;
use crate::actors::admin::Change;
use crate::clock;
use crate::config::Config;
use crate::domain::user::UserState;

/// A command as it travels over the admin socket: no local paths, since files are the
/// client's (its working directory and permissions count, not the server's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Show {
        email: String,
    },
    Change {
        email: String,
        change: Change,
    },
    /// Every user as export lines, with the data dir's keys if asked.
    Export {
        include_keys: bool,
    },
    /// Export lines into an empty data dir: the next `bytes` bytes the client sends, so that
    /// a stream cut short (a client killed half-way) is an error, not a smaller import.
    Import {
        bytes: u64,
    },
}

/// An operator's command line: the command, and the local file it reads or writes.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `user show|deactivate|reactivate|set-plan`, `sessions revoke`, `mfa reset`.
    Account(Command),
    /// `export --out` (`backup: false`) or `backup --out [--include-keys]`.
    Export {
        out: PathBuf,
        include_keys: bool,
        backup: bool,
    },
    Import {
        input: PathBuf,
    },
}

/// What a command came to, before it is put in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The text to print.
    Text(String),
    Exported {
        users: usize,
        keys: bool,
    },
    Imported {
        users: usize,
        keys: bool,
    },
}

/// What the CLI prints for `outcome`.
pub fn report(invocation: &Invocation, outcome: Outcome) -> Result<String, AdminError> {
    let and_keys = |keys: bool| if keys { " and the keys" } else { "" };
    match (invocation, outcome) {
        (Invocation::Account(_), Outcome::Text(text)) => Ok(text),
        (
            Invocation::Export {
                out, backup: false, ..
            },
            Outcome::Exported { users, .. },
        ) => Ok(format!("exported {users} users to {}", out.display())),
        (
            Invocation::Export {
                out, backup: true, ..
            },
            Outcome::Exported { users, keys },
        ) => Ok(format!(
            "backed up {users} users{} to {}",
            and_keys(keys),
            out.display()
        )),
        (Invocation::Import { input }, Outcome::Imported { users, keys }) => Ok(format!(
            "imported {users} users{} from {}",
            and_keys(keys),
            input.display()
        )),
        (_, other) => Err(AdminError::Socket(format!(
            "answered {other:?}, which is not an answer to this command"
        ))),
    }
}

/// Runs an account command against either place accounts live; returns the text to print.
pub(crate) async fn account(
    accounts: &impl Accounts,
    config: &Config,
    command: &Command,
) -> Result<String, AdminError> {
    match command {
        Command::Show { email } => {
            let user = accounts.find(email).await?;
            serde_json::to_string_pretty(&summary(&user))
                .map_err(|e| AdminError::Invalid(e.to_string()))
        }
        Command::Change { email, change } => {
            if let Change::SetPlan(plan) = change {
                if !config.plans.contains_key(plan) {
                    return Err(AdminError::NoSuchPlan(plan.clone()));
                }
            }
            let user = accounts.change(email, change.clone()).await?;
            Ok(format!("{}: {}", user.email, summary(&user)))
        }
        Command::Export { .. } | Command::Import { .. } => {
            Err(AdminError::Invalid("not an account command".into()))
        }
    }
}

/// A summary of one account, without secrets.
pub fn summary(u: &UserState) -> serde_json::Value {
    let now = clock::now();
    json!({
        "id": u.id.to_string(),
        "email": u.email,
        "full_name": u.full_name,
        "phone": u.phone,
        "phone_verified": u.phone_verified,
        "email_verified": u.email_verified,
        "status": u.status.as_str(),
        "role": u.role.as_str(),
        "tenant_id": u.tenant.id.to_string(),
        "plan": u.tenant.plan,
        "created_at": u.created_at.rfc3339(),
        "mfa_enabled": u.mfa_enabled(),
        "live_sessions": u.sessions.iter().filter(|s| s.is_live(now)).count(),
        "api_key": u.api_key.as_ref().map(|k| json!({
            "prefix": k.prefix, "created_at": k.created_at.rfc3339(),
            "last_used_at": k.last_used_at.map(|t| t.rfc3339()), "disabled": k.disabled,
        })),
    })
}
