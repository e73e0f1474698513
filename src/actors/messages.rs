//! The messages a user actor answers. Each is a plain struct; its reply is a [`Done`] carrying
//! the rule's verdict and, when state changed, the [`Ticket`] that the caller awaits before
//! answering the client (nothing acknowledged may be lost).

use actix::Message;

use std::sync::Arc;

use crate::domain::apikey::ApiKey;
use crate::domain::backoff::Settled;
use crate::domain::credentials::Email;
use crate::domain::error::DomainError;
use crate::domain::events::{Event, EventKind, Origin};
use crate::domain::ids::{SessionId, TenantId, TokenId};
use crate::domain::secrets::RefreshToken;
use crate::domain::sessions::{LoginMethod, RefreshGrant};
use crate::domain::time::Timestamp;
use crate::domain::user::{EmailMoved, ProfilePatch, UserState};
use crate::store::{StoreError, Ticket};

/// A rule's verdict, the state after it, and, if a snapshot was written, its commit ticket and
/// the security events it recorded (which the directory logs once they are durable, in the
/// request's span).
#[derive(Debug)]
pub struct Done<T> {
    pub value: Result<T, DomainError>,
    pub state: Arc<UserState>,
    pub ticket: Option<Ticket>,
    pub recorded: Vec<Event>,
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
    /// A code could not be delivered; the change was discarded.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// webauthn-rs could not start a ceremony (a bug or a misconfiguration, never the input).
    #[error("webauthn: {0}")]
    Ceremony(String),
}

pub type Reply<T> = Result<Done<T>, ActorError>;

/// Who a token is about, for signing.
#[derive(Debug, Clone)]
pub struct Subject {
    pub tenant: TenantId,
    pub role: &'static str,
}

/// Open a session after the first factor was verified by the caller (a password, or a
/// provider's sign-in whose login code was exchanged).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Opened>")]
pub struct OpenSession {
    pub method: LoginMethod,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct Opened {
    pub session: SessionId,
    pub refresh: RefreshToken,
    pub refresh_expires_at: Timestamp,
    pub subject: Subject,
    /// The actor's clock when it decided: the access token's `iat`.
    pub issued_at: Timestamp,
}

impl Opened {
    /// The answer of every flow that opens a session: what `UserState::open_session` returned,
    /// for `subject`, decided at `issued_at`.
    pub fn new(
        (session, refresh, refresh_expires_at): (SessionId, RefreshToken, Timestamp),
        subject: Subject,
        issued_at: Timestamp,
    ) -> Self {
        Self {
            session,
            refresh,
            refresh_expires_at,
            subject,
            issued_at,
        }
    }
}

/// Rotate (or, with rotation off, reuse) a refresh token.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Refreshed>")]
pub struct Refresh {
    pub token: RefreshToken,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct Refreshed {
    pub grant: RefreshGrant,
    pub subject: Subject,
    pub issued_at: Timestamp,
}

/// Revoke what a logout identifies.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct Logout {
    pub session: Option<SessionId>,
    pub refresh: Option<RefreshToken>,
    pub everywhere: bool,
    pub origin: Origin,
}

/// End one live session of the user (`SessionNotFound` if it is not one).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct EndSession {
    pub session: SessionId,
    pub origin: Origin,
}

/// End every session of the user but the caller's.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct EndOtherSessions {
    pub current: SessionId,
    pub origin: Origin,
}

/// Add an event that no other message records (a wrong password at login) to the history.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct Record {
    pub what: EventKind,
    pub origin: Origin,
}

/// The user's API key, created if absent (`secret` only then).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<KeyIssued>")]
pub struct GetApiKey;

/// Replace the API key; the old one stops working at once.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<KeyIssued>")]
pub struct RotateApiKey {
    pub origin: Origin,
}

#[derive(Debug)]
pub struct KeyIssued {
    pub key: ApiKey,
    /// The full key, only in the answer that created it.
    pub secret: Option<String>,
}

/// Note a use of the API key (write-behind; nobody waits for it).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct TouchApiKey {
    pub digest: [u8; 32],
}

/// `PATCH /me`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct PatchProfile(pub ProfilePatch);

/// Send a phone verification code.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<CodeSent>")]
pub struct RequestPhoneCode;

#[derive(Debug)]
pub struct CodeSent {
    pub destination: String,
    pub expires_in: u64,
    pub resend_after: u64,
}

/// Check a phone verification code.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ConfirmPhone {
    pub code: String,
}

/// Deactivate the account (the password was checked by the caller).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct Deactivate {
    pub origin: Origin,
}

/// Email a reactivation code if the account is deactivated; `false` if nothing was sent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<bool>")]
pub struct RequestReactivation;

/// Check a reactivation code.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ConfirmReactivation {
    pub code: String,
    pub origin: Origin,
}

/// Start TOTP enrolment: a new secret, shown once.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<MfaEnrolment>")]
pub struct MfaSetup;

pub struct MfaEnrolment {
    pub secret_base32: String,
    pub otpauth_url: String,
}

impl std::fmt::Debug for MfaEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaEnrolment(<redacted>)")
    }
}

/// Finish enrolment with a first code; answers the recovery codes, shown once.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Vec<String>>")]
pub struct MfaVerify {
    pub code: String,
    pub origin: Origin,
}

/// Turn MFA off (a valid code required).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct MfaDisable {
    pub code: String,
    pub origin: Origin,
}

/// After a right password for an enrolled user: open a challenge for the pending token.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<(TokenId, Subject)>")]
pub struct BeginMfa {
    pub ttl: u64,
}

/// Answer a challenge; on success a session opens, in the same step.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Opened>")]
pub struct AnswerMfa {
    pub jti: TokenId,
    pub code: Option<String>,
    pub recovery_code: Option<String>,
    pub origin: Origin,
}

/// Sent by the directory's sweeper to an actor that looked idle; answers whether it retired
/// (the directory then drops its address).
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct RetireIfIdle;

/// Reserve one password check of this account before the hash runs: refused with
/// `RateLimited` while the account is over its failures or has too many checks in flight.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ReservePassword;

/// Settle a reserved password check (sent without waiting: nothing is written).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct SettlePassword(pub Settled);

/// Replace the password (the caller checked the current one and hashed the new one).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ChangePassword {
    pub hash: String,
    /// The session the change was made from: it stays.
    pub current: SessionId,
    pub revoke_others: bool,
    pub origin: Origin,
}

/// Email a password reset code if the account is active; `false` if nothing was sent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<bool>")]
pub struct RequestPasswordReset;

/// Set a new password (already hashed) with a reset code.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ResetPassword {
    pub code: String,
    pub hash: String,
    pub origin: Origin,
}

/// Email a verification code to the account's address.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<CodeSent>")]
pub struct RequestEmailCode;

/// Check an email verification code.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct ConfirmEmail {
    pub code: String,
}

/// Email a code to a new address (the caller checked the password).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<CodeSent>")]
pub struct RequestEmailChange {
    pub new_email: Email,
}

/// Confirm the change of address with the code sent to the new one.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<EmailMoved>")]
pub struct ConfirmEmailChange {
    pub code: String,
    pub origin: Origin,
}

/// Sent by the directory when the actor's last change could not be made durable: the actor
/// retires at once, withdrawing its view, so no reader sees that change.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Discard;
