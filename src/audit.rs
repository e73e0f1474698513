//! The audit log: one structured line per security event on the `bp_auth::audit` target, with
//! the user, the client address and what happened, so that they can be routed and kept apart
//! from the request log (`RUST_LOG=bp_auth::audit=info`).
//!
//! Events kept in a user's history are logged from the recorded event itself ([`recorded`],
//! called by the directory once the change that recorded it is durable), so the log and the
//! history never disagree. Other lines (a registration, a wrong password for an unknown email) go
//! through [`note`]. Never a secret: only ids, addresses, user agents and words.

use std::net::IpAddr;

use crate::domain::events::Event;
use crate::domain::ids::{SessionId, UserId};

/// One line; tracing's level is part of each call site's metadata, hence one call per level.
fn line(
    alert: bool,
    user: Option<UserId>,
    client: Option<IpAddr>,
    session: Option<SessionId>,
    event: &str,
    outcome: &str,
) {
    let user = user.map(|u| u.to_string());
    let session = session.map(|s| s.to_string());
    if alert {
        tracing::warn!(target: "bp_auth::audit", user = ?user, client = ?client, session = ?session, event, outcome);
    } else {
        tracing::info!(target: "bp_auth::audit", user = ?user, client = ?client, session = ?session, event, outcome);
    }
}

/// An event of `user`'s history, as recorded.
pub fn recorded(user: UserId, event: &Event) {
    line(
        event.kind.is_alert(),
        Some(user),
        event.ip,
        event.session,
        event.kind.as_str(),
        "recorded",
    );
}

/// A line about something that is not part of a user's history.
pub fn note(user: Option<UserId>, client: Option<IpAddr>, event: &str, outcome: &str) {
    line(false, user, client, None, event, outcome);
}

/// [`note`] at warn level: something an operator should look at (a passkey whose signature
/// counter went back, the mark of a cloned authenticator).
pub fn alert(user: Option<UserId>, client: Option<IpAddr>, event: &str, outcome: &str) {
    line(true, user, client, None, event, outcome);
}
