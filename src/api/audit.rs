//! Security events: one structured event per event on the `bp_auth::audit` target, with the
//! user, the client address and the outcome, so they can be routed and kept apart from the
//! request log (`RUST_LOG=bp_auth::audit=info`). Never a secret: callers pass ids and words.

use actix_web::HttpRequest;

use super::AppState;
use crate::domain::ids::UserId;

/// Records `event` with its `outcome` for `user` (if known) from the request's client.
pub fn record(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    let client = state.throttle.client_ip(req);
    tracing::info!(target: "bp_auth::audit", user = ?user.map(|u| u.to_string()), client = ?client, event, outcome);
}

/// A [`record`] that deserves attention (refresh-token reuse: a token was likely stolen).
pub fn alert(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    let client = state.throttle.client_ip(req);
    tracing::warn!(target: "bp_auth::audit", user = ?user.map(|u| u.to_string()), client = ?client, event, outcome);
}
