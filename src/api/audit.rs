//! Security events: one structured event per event on the `bp_auth::audit` target, with the
//! user, the client address and the outcome, so they can be routed and kept apart from the
//! request log (`RUST_LOG=bp_auth::audit=info`). Never a secret: callers pass ids and words.

use actix_web::HttpRequest;

use super::AppState;
use crate::domain::ids::UserId;

/// How loud an event is: most are routine; an alert deserves attention (refresh-token reuse:
/// a token was likely stolen).
#[derive(Debug, Clone, Copy)]
enum Severity {
    Routine,
    Alert,
}

fn emit(
    severity: Severity,
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    let client = state.throttle.client_ip(req);
    let user = user.map(|u| u.to_string());
    // tracing's level is part of each call site's static metadata, hence one call per level.
    match severity {
        Severity::Routine => {
            tracing::info!(target: "bp_auth::audit", user = ?user, client = ?client, event, outcome)
        }
        Severity::Alert => {
            tracing::warn!(target: "bp_auth::audit", user = ?user, client = ?client, event, outcome)
        }
    }
}

/// Records `event` with its `outcome` for `user` (if known) from the request's client.
pub fn record(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    emit(Severity::Routine, state, req, user, event, outcome);
}

/// A [`record`] that deserves attention.
pub fn alert(
    state: &AppState,
    req: &HttpRequest,
    user: Option<UserId>,
    event: &str,
    outcome: &str,
) {
    emit(Severity::Alert, state, req, user, event, outcome);
}
