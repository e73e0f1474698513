//! A user's security history: what happened to the account, when, and from where.
//!
//! It is kept with the user (the last [`KEPT`]), recorded by the same rule that makes the change,
//! in the same snapshot, and the audit log line of each event is written from the recorded event
//! itself (once the change is durable), so the history the user reads and the log an operator
//! reads cannot disagree. An event holds ids, an address and a user agent: never
//! a secret.
//!
//! Failures (`login_failed`, `mfa_failed`) are what anyone who knows an email can cause, so they
//! may fill at most half of the history ([`KEPT_FAILURES`]): a flood of wrong passwords drops
//! older failures, never the logins and changes an attacker would like to hide.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ids::SessionId;
use super::time::Timestamp;

/// How many events a user keeps.
pub const KEPT: usize = 100;
/// How many of them may be failures.
pub const KEPT_FAILURES: usize = KEPT / 2;
/// The longest user agent kept, in characters (the contract's bound).
pub const USER_AGENT_MAX: usize = 256;

/// What happened. New kinds go at the end: snapshots store the variant's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Login,
    LoginFailed,
    MfaFailed,
    RefreshReused,
    Logout,
    SessionRevoked,
    PasswordChanged,
    PasswordReset,
    EmailChanged,
    MfaEnabled,
    MfaDisabled,
    PasskeyAdded,
    PasskeyRemoved,
    ApiKeyRotated,
    Deactivated,
    Reactivated,
    /// An identity at an OpenID Connect provider was linked (a first sign-in, a sign-in whose
    /// verified email named the account, or a link from a session).
    IdentityLinked,
    IdentityUnlinked,
}

impl EventKind {
    pub const ALL: [EventKind; 18] = [
        Self::Login,
        Self::LoginFailed,
        Self::MfaFailed,
        Self::RefreshReused,
        Self::Logout,
        Self::SessionRevoked,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::EmailChanged,
        Self::MfaEnabled,
        Self::MfaDisabled,
        Self::PasskeyAdded,
        Self::PasskeyRemoved,
        Self::ApiKeyRotated,
        Self::Deactivated,
        Self::Reactivated,
        Self::IdentityLinked,
        Self::IdentityUnlinked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::LoginFailed => "login_failed",
            Self::MfaFailed => "mfa_failed",
            Self::RefreshReused => "refresh_reused",
            Self::Logout => "logout",
            Self::SessionRevoked => "session_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::EmailChanged => "email_changed",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
            Self::PasskeyAdded => "passkey_added",
            Self::PasskeyRemoved => "passkey_removed",
            Self::ApiKeyRotated => "api_key_rotated",
            Self::Deactivated => "deactivated",
            Self::Reactivated => "reactivated",
            Self::IdentityLinked => "identity_linked",
            Self::IdentityUnlinked => "identity_unlinked",
        }
    }

    /// What anyone who knows the email can cause, without any secret.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::LoginFailed | Self::MfaFailed)
    }

    /// Deserves an operator's attention: a reused refresh token was likely stolen.
    pub fn is_alert(self) -> bool {
        matches!(self, Self::RefreshReused)
    }
}

/// Where a request came from: the client's address (as the rate limits count it), its user
/// agent, and the session it was made with, if any. `Origin::default()` is an operator's
/// command, which has none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub session: Option<SessionId>,
}

impl Origin {
    /// A user agent is whatever the client sent: cut to [`USER_AGENT_MAX`] characters, control
    /// characters dropped (it is shown back to the user and written to logs), empty as none.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>, session: Option<SessionId>) -> Self {
        let user_agent = user_agent
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(USER_AGENT_MAX)
                    .collect::<String>()
            })
            .map(|ua| ua.trim().to_string())
            .filter(|ua| !ua.is_empty());
        Self {
            ip,
            user_agent,
            session,
        }
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The session the event is about: the one opened, ended or used for the change.
    pub session: Option<SessionId>,
}

/// The last [`KEPT`] events, oldest first, and how many were ever recorded (so that the actor
/// can tell which events a change added, however many were dropped, and the store whether the
/// history changed since it last wrote it).
///
/// The events are shared between copies of the history and copied only when one records: the
/// actor copies the whole state for every change it decides, and most changes (a refresh, say)
/// record nothing, so they copy, compare and keep one pointer instead of a hundred events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    events: Arc<VecDeque<Event>>,
    recorded: u64,
}

impl History {
    pub fn record(&mut self, event: Event) {
        let events = Arc::make_mut(&mut self.events);
        if event.kind.is_failure() {
            let failures = events.iter().filter(|e| e.kind.is_failure()).count();
            if failures >= KEPT_FAILURES {
                if let Some(oldest) = events.iter().position(|e| e.kind.is_failure()) {
                    events.remove(oldest);
                }
            }
        }
        if events.len() >= KEPT {
            events.pop_front();
        }
        events.push_back(event);
        self.recorded = self.recorded.wrapping_add(1);
    }

    /// How many events were ever recorded: it changes with every change of the history, so
    /// two copies of one user's history with the same count hold the same events.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The newest `n` events, newest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &Event> {
        self.events.iter().rev().take(n)
    }

    /// The events recorded since `earlier` (an older copy of this history), oldest first.
    pub fn since<'a>(&'a self, earlier: &History) -> impl Iterator<Item = &'a Event> {
        let added = self.recorded.wrapping_sub(earlier.recorded);
        let added = usize::try_from(added).map_or(self.events.len(), |n| n.min(self.events.len()));
        self.events.iter().skip(self.events.len() - added)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, at: i64) -> Event {
        Event {
            at: Timestamp(at),
            kind,
            ip: None,
            user_agent: None,
            session: None,
        }
    }

    #[test]
    fn keeps_the_last_hundred_newest_first() {
        let mut h = History::default();
        for i in 0..150 {
            h.record(event(EventKind::Login, i));
        }
        assert_eq!(h.len(), KEPT);
        let newest: Vec<i64> = h.newest(3).map(|e| e.at.0).collect();
        assert_eq!(newest, [149, 148, 147]);
        assert_eq!(h.newest(1000).last().unwrap().at.0, 50);
    }

    #[test]
    fn a_flood_of_failures_cannot_push_out_what_happened_before() {
        let mut h = History::default();
        for i in 0..10 {
            h.record(event(EventKind::Login, i));
        }
        h.record(event(EventKind::PasswordChanged, 10));
        for i in 0..10_000 {
            h.record(event(EventKind::LoginFailed, 100 + i));
            h.record(event(EventKind::MfaFailed, 100_000 + i));
        }
        assert_eq!(h.len(), 11 + KEPT_FAILURES);
        let kept: Vec<EventKind> = h.newest(KEPT).map(|e| e.kind).collect();
        assert_eq!(
            kept.iter().filter(|k| !k.is_failure()).count(),
            11,
            "every login and change is still there"
        );
        assert_eq!(h.newest(1).next().unwrap().kind, EventKind::MfaFailed);
        // Once the history is full of real events, they age out in order as usual.
        for i in 0..200 {
            h.record(event(EventKind::Logout, 1_000_000 + i));
        }
        assert_eq!(h.len(), KEPT);
        assert!(h.newest(KEPT).all(|e| e.kind == EventKind::Logout));
    }

    #[test]
    fn since_names_exactly_the_added_events_even_past_the_cap() {
        let mut h = History::default();
        for i in 0..99 {
            h.record(event(EventKind::Login, i));
        }
        let before = h.clone();
        h.record(event(EventKind::Logout, 99));
        h.record(event(EventKind::Logout, 100));
        let added: Vec<i64> = h.since(&before).map(|e| e.at.0).collect();
        assert_eq!(added, [99, 100]);
        assert_eq!(h.since(&h.clone()).count(), 0);
        let before = h.clone();
        for i in 0..300 {
            h.record(event(EventKind::Login, 1_000 + i));
        }
        assert_eq!(h.since(&before).count(), KEPT);
    }

    #[test]
    fn user_agents_are_bounded_and_printable() {
        let long = "x".repeat(1_000);
        let o = Origin::new(None, Some(&long), None);
        assert_eq!(o.user_agent.unwrap().chars().count(), USER_AGENT_MAX);
        let o = Origin::new(None, Some("Mozilla\r\n\u{7}/5.0"), None);
        assert_eq!(o.user_agent.as_deref(), Some("Mozilla/5.0"));
        assert_eq!(Origin::new(None, Some("  "), None).user_agent, None);
        let multibyte = "é".repeat(300);
        let o = Origin::new(None, Some(&multibyte), None);
        assert_eq!(o.user_agent.unwrap().chars().count(), USER_AGENT_MAX);
    }

    #[test]
    fn kinds_have_the_contracts_names() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 18);
        for (k, name) in EventKind::ALL.iter().zip(&names) {
            assert_eq!(serde_json::to_value(k).unwrap(), *name);
        }
    }
}
