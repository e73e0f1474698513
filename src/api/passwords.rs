//! Every check of a password against an account (login, deactivation, and any later endpoint
//! that asks for the password) goes through [`check`], so they all share one count per account.
//!
//! The attempt is reserved before the hash runs, for the client address and for the account
//! (in its actor, or in the throttle's table for an email that names no account), and settled
//! with the outcome afterwards. Reserving first makes the check and the count one step: N
//! parallel guesses see each other, and an account over its limit is refused before any hashing,
//! the right password too. The reservation also caps the hashes one account may have queued or
//! running (`password.max_in_flight_per_account`), so one client cannot fill the queue that
//! every other login needs.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpRequest;

use super::audit;
use super::error::ApiError;
use super::throttle::Reserved;
use super::AppState;
use crate::actors::messages::{ReservePassword, SettlePassword};
use crate::actors::Directory;
use crate::clock;
use crate::domain::backoff::Settled;
use crate::domain::credentials::NewPassword;
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;
use crate::domain::DomainError;
use crate::hashing::HashPoolError;

/// Whose password is being checked.
pub enum Account<'a> {
    /// An account, with its stored hash.
    Known(UserId, &'a str),
    /// An input that names no account: what it parses to (trimmed, lowercased), so that every
    /// spelling of it shares one count. Checked against a dummy hash, at the same cost.
    Unknown(&'a str),
}

/// Whether `password` is the account's, counted against the account and the client address.
/// `Err` is `429` when either is over its limits (before any hashing) or `503` when the hashing
/// queue is full (the attempt is then given back).
pub async fn check(
    state: &AppState,
    req: &HttpRequest,
    account: Account<'_>,
    password: &str,
) -> Result<bool, ApiError> {
    let throttle = &state.throttle;
    let address = throttle.reserve_address(throttle.client_ip(req), clock::now())?;
    let reserved = match account {
        // An account without a password (a provider made it) is checked against the dummy
        // hash like an unknown one, at the same cost, and never matches.
        Account::Known(id, phc) => ActorAttempt::reserve(&state.directory, id).await.map(|a| {
            (
                Held::Actor(a),
                (!phc.is_empty()).then(|| Arc::<str>::from(phc)),
            )
        }),
        Account::Unknown(key) => throttle
            .reserve_unknown(key, clock::now())
            .map(|r| (Held::Table(r), None))
            .map_err(ApiError::from),
    };
    let (held, phc) = match reserved {
        Ok(r) => r,
        Err(e) => {
            // Refused before anything was checked: the address's attempt is given back.
            address.settle(Settled::Released, clock::now());
            return Err(e);
        }
    };
    // A password longer than registration allows can never match: no hashing needed.
    let verdict = if NewPassword::may_match(password) {
        state.hashes.verify(password, phc).await
    } else {
        Ok(false)
    };
    let outcome = match &verdict {
        Ok(true) => Settled::Succeeded,
        Ok(false) => Settled::Failed,
        Err(HashPoolError::Overloaded) => Settled::Released,
        Err(HashPoolError::Failed(_)) => Settled::Released,
    };
    let now = clock::now();
    held.settle(outcome, now);
    address.settle(outcome, now);
    Ok(verdict?)
}

/// For endpoints that ask a signed-in user for their own password before a change: `Ok` if
/// it is right, else `403 invalid_credentials` (audited as `event`), counted like [`check`].
pub async fn confirm_own(
    state: &AppState,
    req: &HttpRequest,
    user: &UserState,
    password: &str,
    event: &str,
) -> Result<(), ApiError> {
    let account = Account::Known(user.id, &user.password_hash);
    if check(state, req, account, password).await? {
        return Ok(());
    }
    audit::record(state, req, Some(user.id), event, "invalid_credentials");
    Err(ApiError::WithStatus(
        StatusCode::FORBIDDEN,
        DomainError::InvalidCredentials,
    ))
}

/// An account's reservation, wherever it is kept.
enum Held<'a> {
    Actor(ActorAttempt<'a>),
    Table(Reserved<'a>),
}

impl Held<'_> {
    fn settle(self, outcome: Settled, now: Timestamp) {
        match self {
            Self::Actor(a) => a.settle(outcome),
            Self::Table(r) => r.settle(outcome, now),
        }
    }
}

/// A check reserved in the account's actor; settled as a failure if dropped unsettled (its
/// caller went away mid-hash). The actor is not retired while a check is in flight, so the
/// settlement, sent without waiting, always finds it.
struct ActorAttempt<'a> {
    directory: &'a Directory,
    user: UserId,
    settled: bool,
}

impl<'a> ActorAttempt<'a> {
    async fn reserve(directory: &'a Directory, user: UserId) -> Result<Self, ApiError> {
        directory.call(user, ReservePassword).await??;
        Ok(Self {
            directory,
            user,
            settled: false,
        })
    }

    fn settle(mut self, outcome: Settled) {
        self.settled = true;
        self.directory.tell(self.user, SettlePassword(outcome));
    }
}

impl Drop for ActorAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.directory
                .tell(self.user, SettlePassword(Settled::Failed));
        }
    }
}
