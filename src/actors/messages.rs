//! The messages a user actor answers. Each is a plain struct; its reply is a [`Done`] carrying
//! the rule's verdict and, when state changed, the [`Ticket`] that the caller awaits before
//! answering the client (nothing acknowledged may be lost).

use actix::Message;

use crate::domain::error::DomainError;
use crate::domain::ids::{SessionId, TenantId};
use crate::domain::secrets::RefreshToken;
use crate::domain::sessions::RefreshGrant;
use crate::domain::time::Timestamp;
use crate::store::{StoreError, Ticket};

/// A rule's verdict and, if a snapshot was written, its commit ticket.
#[derive(Debug)]
pub struct Done<T> {
    pub value: Result<T, DomainError>,
    pub ticket: Option<Ticket>,
}

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The actor is shutting down for idleness; the directory retries on a fresh one.
    #[error("actor retired")]
    Retired,
    /// The snapshot could not be written; the change was discarded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Reply<T> = Result<Done<T>, ActorError>;

/// Who a token is about, for signing.
#[derive(Debug, Clone)]
pub struct Subject {
    pub tenant: TenantId,
    pub role: &'static str,
}

/// Open a session after the password was verified by the caller.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Opened>")]
pub struct OpenSession;

#[derive(Debug)]
pub struct Opened {
    pub session: SessionId,
    pub refresh: RefreshToken,
    pub refresh_expires_at: Timestamp,
    pub subject: Subject,
}

/// Rotate (or, with rotation off, reuse) a refresh token.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Refreshed>")]
pub struct Refresh {
    pub token: RefreshToken,
}

#[derive(Debug)]
pub struct Refreshed {
    pub grant: RefreshGrant,
    pub subject: Subject,
}

/// Revoke what a logout identifies.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct Logout {
    pub session: Option<SessionId>,
    pub refresh: Option<RefreshToken>,
    pub everywhere: bool,
}
