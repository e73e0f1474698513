//! Audit lines for what is not kept in a user's history (a registration, a wrong password for an
//! unknown email, a login waiting for its second factor), with the request's client address.
//! Events of the history are logged by the user actor as it records them: see [`crate::audit`].

use actix_web::http::header;
use actix_web::HttpRequest;

use super::authn::{Caller, Via};
use super::AppState;
use crate::domain::events::Origin;
use crate::domain::ids::{SessionId, UserId};

/// Where a request came from, for the user's history and a session opened by it: the client
/// address as the rate limits count it, the user agent (bounded), and `session`.
pub fn origin(state: &AppState, req: &HttpRequest, session: Option<SessionId>) -> Origin {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Origin::new(
        state.throttle.client_ip(req),
        user_agent.as_deref(),
        session,
    )
}

/// [`origin`] of an authenticated request: with the caller's session, if they used one.
pub fn caller_origin(state: &AppState, req: &HttpRequest, caller: &Caller) -> Origin {
    let session = match &caller.via {
        Via::Session { sid, .. } => Some(*sid),
        Via::ApiKey => None,
    };
    origin(state, req, session)
}

/// Notes `event` with its `outcome` for `user` (if known) from the request's client.
pub fn record(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    crate::audit::note(user, state.throttle.client_ip(req), event, outcome);
}

/// A refused passkey whose signature counter went back (a cloned authenticator), for the
/// operator: a warning on the audit target naming the user and the passkey.
pub fn passkey_cloned(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    passkey: crate::domain::ids::PasskeyId,
) {
    let outcome = format!("counter_went_back passkey={passkey}");
    crate::audit::alert(
        user,
        state.throttle.client_ip(req),
        "passkey_refused",
        &outcome,
    );
}
