//! The two places an account command reaches users: the stored snapshots of a stopped
//! server's data dir, or a running server's actors. Both apply the one [`Change`].

use std::sync::Arc;

use super::AdminError;
use crate::actors::admin::{Administer, Change};
use crate::actors::{Directory, DirectoryError};
use crate::clock;
use crate::domain::user::UserState;
use crate::store::Store;

/// Reads and changes accounts by email (matched case-insensitively).
pub(crate) trait Accounts {
    /// The user's current state.
    async fn find(&self, email: &str) -> Result<Arc<UserState>, AdminError>;
    /// Applies `change` and waits until it is durable; the state after it.
    async fn change(&self, email: &str, change: Change) -> Result<Arc<UserState>, AdminError>;
}

fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A stopped server's data dir: the CLI is the only writer.
pub(crate) struct Stored<'a>(pub &'a dyn Store);

impl Stored<'_> {
    fn load(&self, email: &str) -> Result<UserState, AdminError> {
        let store = self.0;
        let missing = || AdminError::NoSuchUser(email.into());
        let id = store
            .user_by_email(&email_key(email))?
            .ok_or_else(missing)?;
        store.load_user(id)?.ok_or_else(missing)
    }
}

impl Accounts for Stored<'_> {
    async fn find(&self, email: &str) -> Result<Arc<UserState>, AdminError> {
        self.load(email).map(Arc::new)
    }

    /// As the user's actor would: a snapshot only if something changed, one revision on.
    async fn change(&self, email: &str, change: Change) -> Result<Arc<UserState>, AdminError> {
        let before = self.load(email)?;
        let mut next = before.clone();
        let mut index = Vec::new();
        change.apply(&mut next, &mut index, clock::now());
        if next != before {
            next.revision = before.revision.wrapping_add(1);
            let ticket = self.0.save_user(&next, &index)?;
            self.0.commit().durable(ticket).await?;
        }
        Ok(Arc::new(next))
    }
}

/// A running server: reads from the published views, changes through the user's actor.
pub(crate) struct Running<'a>(pub &'a Directory);

impl Running<'_> {
    fn id(&self, email: &str) -> Result<crate::domain::ids::UserId, AdminError> {
        self.0
            .user_by_email(&email_key(email))
            .map_err(|e| from_directory(e, email))?
            .ok_or_else(|| AdminError::NoSuchUser(email.into()))
    }
}

fn from_directory(e: DirectoryError, email: &str) -> AdminError {
    match e {
        DirectoryError::UnknownUser => AdminError::NoSuchUser(email.into()),
        other => AdminError::Server(other.to_string()),
    }
}

impl Accounts for Running<'_> {
    async fn find(&self, email: &str) -> Result<Arc<UserState>, AdminError> {
        let id = self.id(email)?;
        self.0
            .view(id)
            .map_err(|e| from_directory(e, email))?
            .ok_or_else(|| AdminError::NoSuchUser(email.into()))
    }

    async fn change(&self, email: &str, change: Change) -> Result<Arc<UserState>, AdminError> {
        let id = self.id(email)?;
        let name = change.name();
        let (verdict, state) = self
            .0
            .call_with_state(id, Administer(change))
            .await
            .map_err(|e| from_directory(e, email))?;
        verdict.map_err(|e| AdminError::Server(e.to_string()))?;
        // Beside the history's own line (`deactivated`, ...): that an operator did it.
        crate::audit::note(Some(id), None, "admin", name);
        Ok(state)
    }
}
