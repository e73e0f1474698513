//! Operator commands on a stopped server's data dir: inspect and fix accounts, revoke
//! sessions, reset MFA, export and import. They write snapshots through the same `Store` as the
//! server, so the format and the indexes stay consistent.
//!
//! A running server holds sled's lock on the data dir; opening it then fails with a message
//! that says so, rather than an I/O error.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock;
use crate::config::Config;
use crate::domain::ids::UserId;
use crate::domain::mfa::MfaState;
use crate::domain::user::{Tenant, UserState};
use crate::store::{self, Created, IndexChange, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the data directory {0} is in use by a running bp-auth; stop the server first")]
    InUse(String),
    #[error("no user with email {0}")]
    NoSuchUser(String),
    #[error("no plan named {0} in the configuration")]
    NoSuchPlan(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the data dir's store, naming a running server as the reason it cannot be.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, AdminError> {
    store::open(&config.server.data_dir, &config.storage).map_err(|e| match e {
        StoreError::Locked => AdminError::InUse(config.server.data_dir.display().to_string()),
        other => other.into(),
    })
}

fn find(store: &dyn Store, email: &str) -> Result<UserState, AdminError> {
    let key = email.trim().to_lowercase();
    let id = store
        .user_by_email(&key)?
        .ok_or_else(|| AdminError::NoSuchUser(email.into()))?;
    store
        .load_user(id)?
        .ok_or_else(|| AdminError::NoSuchUser(email.into()))
}

/// Loads a user, applies `change`, writes it (made durable when the store closes).
fn update(
    store: &dyn Store,
    email: &str,
    index: &[IndexChange],
    change: impl FnOnce(&mut UserState),
) -> Result<UserState, AdminError> {
    let mut user = find(store, email)?;
    change(&mut user);
    user.revision = user.revision.wrapping_add(1);
    store.save_user(&user, index)?;
    Ok(user)
}

/// A summary of one account, without secrets.
pub fn user_show(store: &dyn Store, email: &str) -> Result<serde_json::Value, AdminError> {
    let u = find(store, email)?;
    let now = clock::now();
    Ok(json!({
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
        "mfa_enabled": u.mfa.enabled,
        "live_sessions": u.sessions.iter().filter(|s| s.is_live(now)).count(),
        "api_key": u.api_key.as_ref().map(|k| json!({
            "prefix": k.prefix, "created_at": k.created_at.rfc3339(),
            "last_used_at": k.last_used_at.map(|t| t.rfc3339()), "disabled": k.disabled,
        })),
    }))
}

pub fn user_deactivate(store: &dyn Store, email: &str) -> Result<UserState, AdminError> {
    update(store, email, &[], UserState::deactivate)
}

pub fn user_reactivate(store: &dyn Store, email: &str) -> Result<UserState, AdminError> {
    update(store, email, &[], UserState::reactivate)
}

pub fn user_set_plan(
    store: &dyn Store,
    config: &Config,
    email: &str,
    plan: &str,
) -> Result<UserState, AdminError> {
    if !config.plans.contains_key(plan) {
        return Err(AdminError::NoSuchPlan(plan.into()));
    }
    update(store, email, &[IndexChange::Tenant], |u| {
        u.tenant.plan = plan.to_string()
    })
}

pub fn sessions_revoke(store: &dyn Store, email: &str) -> Result<UserState, AdminError> {
    update(store, email, &[], UserState::revoke_all_sessions)
}

pub fn mfa_reset(store: &dyn Store, email: &str) -> Result<UserState, AdminError> {
    update(store, email, &[], |u| u.mfa = MfaState::default())
}

/// The export format: JSON lines, a header first.
pub const EXPORT_FORMAT: &str = "bp-auth-export";
pub const EXPORT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        version: u32,
        exported_at: String,
    },
    User {
        user: Box<UserState>,
    },
    Tenant {
        tenant: Tenant,
    },
    EmailIndex {
        email: String,
        user_id: UserId,
    },
    ApiKeyIndex {
        digest: String,
        user_id: UserId,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes every user, tenant and index entry. Secrets appear only as stored: password and
/// key hashes, encrypted TOTP secrets. The signing, server and data keys are not included:
/// back up `<data_dir>/keys/` beside the export.
pub fn export(store: &dyn Store, out: &Path) -> Result<usize, AdminError> {
    // The export holds password hashes and sealed secrets: owner-only, whatever the umask.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(out)?
    };
    let mut w = BufWriter::new(file);
    let mut write = |line: &Line| -> Result<(), AdminError> {
        serde_json::to_writer(&mut w, line).map_err(|e| AdminError::Invalid(e.to_string()))?;
        w.write_all(b"\n")?;
        Ok(())
    };
    write(&Line::Header {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        exported_at: clock::now().rfc3339(),
    })?;
    let ids = store.user_ids()?;
    for id in &ids {
        let Some(user) = store.load_user(*id)? else {
            continue;
        };
        write(&Line::Tenant {
            tenant: user.tenant.clone(),
        })?;
        write(&Line::EmailIndex {
            email: user.email_key.clone(),
            user_id: user.id,
        })?;
        if let Some(k) = &user.api_key {
            write(&Line::ApiKeyIndex {
                digest: hex(&k.digest),
                user_id: user.id,
            })?;
        }
        write(&Line::User {
            user: Box::new(user),
        })?;
    }
    w.flush()?;
    Ok(ids.len())
}

/// Reads an export into an empty data dir; the indexes are rebuilt from the snapshots (and
/// checked against the exported ones).
pub fn import(store: &dyn Store, input: &Path) -> Result<usize, AdminError> {
    if !store.user_ids()?.is_empty() {
        return Err(AdminError::Invalid(
            "import needs an empty data directory".into(),
        ));
    }
    let reader = BufReader::new(File::open(input)?);
    let mut lines = reader.lines();
    let header = lines
        .next()
        .ok_or_else(|| AdminError::Invalid("empty export file".into()))??;
    match serde_json::from_str::<Line>(&header) {
        Ok(Line::Header {
            format, version, ..
        }) if format == EXPORT_FORMAT && version == EXPORT_VERSION => {}
        _ => {
            return Err(AdminError::Invalid(format!(
                "not a {EXPORT_FORMAT} version {EXPORT_VERSION} file"
            )))
        }
    }
    let (mut users, mut emails) = (0usize, 0usize);
    for (n, line) in lines.enumerate() {
        let line = line?;
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| AdminError::Invalid(format!("line {}: {e}", n + 2)))?;
        match parsed {
            Line::User { user } => {
                if let Created::EmailTaken = store.create_user(&user)? {
                    return Err(AdminError::Invalid(format!(
                        "duplicate email {}",
                        user.email_key
                    )));
                }
                if let Some(k) = &user.api_key {
                    store.save_user(&user, &[IndexChange::ApiKeyPut(k.digest)])?;
                }
                users += 1;
            }
            Line::EmailIndex { .. } => emails += 1,
            Line::Header { .. } => return Err(AdminError::Invalid("a second header".into())),
            Line::Tenant { .. } | Line::ApiKeyIndex { .. } => {}
        }
    }
    if emails != users {
        return Err(AdminError::Invalid(format!(
            "{users} users but {emails} email index entries"
        )));
    }
    Ok(users)
}
