//! Operator changes to one account (`bp-auth admin ...`), defined once for both ways they run:
//! the running server sends [`Administer`] to the user's actor, so live tokens and the
//! published view see the change at once; on a stopped data dir the admin module applies the
//! same [`Change`] to the stored snapshot.

use actix::{Context, Handler, Message};
use serde::{Deserialize, Serialize};

use super::messages::Reply;
use super::user::UserActor;
use crate::domain::events::{EventKind, Origin};
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;
use crate::store::IndexChange;

/// What an operator can do to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Every session revoked, the API key disabled.
    Deactivate,
    /// Active again, the API key enabled.
    Reactivate,
    /// The user's tenant moves to this plan (the caller checked that it is configured).
    SetPlan(String),
    /// Every session and refresh family ends.
    RevokeSessions,
    /// Every second factor gone: TOTP (its secret, recovery codes and open challenges) and every
    /// passkey (their credential ids released).
    ResetMfa,
}

impl Change {
    /// Applies the change to `state` at `now`, adding the index entries that must land with it,
    /// and records it in the user's history (from no client: an operator's command) if it
    /// changed anything. The one definition of each change, whichever way it runs.
    pub fn apply(&self, state: &mut UserState, index: &mut Vec<IndexChange>, now: Timestamp) {
        let before = state.clone();
        match self {
            Change::Deactivate => state.deactivate(),
            Change::Reactivate => state.reactivate(),
            Change::SetPlan(plan) => {
                state.tenant.plan = plan.clone();
                index.push(IndexChange::Tenant);
            }
            Change::RevokeSessions => state.revoke_all_sessions(),
            Change::ResetMfa => {
                for credential_id in state.reset_second_factors() {
                    index.push(IndexChange::PasskeyDelete(credential_id));
                }
            }
        }
        if let Some(kind) = self.event().filter(|_| *state != before) {
            state.record(kind, &Origin::default(), None, now);
        }
    }

    /// What the user's history calls it (a plan is the tenant's, not a security event).
    fn event(&self) -> Option<EventKind> {
        match self {
            Change::Deactivate => Some(EventKind::Deactivated),
            Change::Reactivate => Some(EventKind::Reactivated),
            Change::SetPlan(_) => None,
            Change::RevokeSessions => Some(EventKind::SessionRevoked),
            Change::ResetMfa => Some(EventKind::MfaDisabled),
        }
    }

    /// The command's name, for the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Deactivate => "deactivate",
            Change::Reactivate => "reactivate",
            Change::SetPlan(_) => "set_plan",
            Change::RevokeSessions => "revoke_sessions",
            Change::ResetMfa => "reset_mfa",
        }
    }
}

/// An operator's change, made by the user's actor like any other write: snapshot first, then
/// the published view, so the next request already sees it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct Administer(pub Change);

impl Handler<Administer> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Administer, _: &mut Context<Self>) -> Self::Result {
        if msg.0 == Change::ResetMfa {
            // A ceremony begun before the reset must not finish after it.
            self.ceremonies = Default::default();
        }
        self.apply(|s, index, now| {
            msg.0.apply(s, index, now);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::mfa::MfaState;
    use crate::domain::secrets::ServerKey;
    use crate::domain::user::fixtures::{policy, user, LOGIN, T0};
    use crate::domain::user::Status;

    #[test]
    fn each_change_does_what_it_says_and_only_set_plan_touches_an_index() {
        let mut u = user();
        u.open_session(&ServerKey::from_bytes([1; 32]), &policy(), LOGIN, T0)
            .unwrap();
        u.mfa.enabled = true;
        let mut index = Vec::new();
        Change::RevokeSessions.apply(&mut u, &mut index, T0);
        assert!(u.sessions.is_empty());
        Change::ResetMfa.apply(&mut u, &mut index, T0);
        assert_eq!(u.mfa, MfaState::default());
        Change::Deactivate.apply(&mut u, &mut index, T0);
        assert_eq!(u.status, Status::Deactivated);
        Change::Reactivate.apply(&mut u, &mut index, T0);
        assert_eq!(u.status, Status::Active);
        assert!(index.is_empty());
        Change::SetPlan("pro".into()).apply(&mut u, &mut index, T0);
        assert_eq!(u.tenant.plan, "pro");
        assert_eq!(index, vec![IndexChange::Tenant]);
    }

    #[test]
    fn a_change_is_recorded_once_from_no_client_and_only_if_it_changed_something() {
        let mut u = user();
        let start = u.history.clone();
        let mut index = Vec::new();
        Change::Reactivate.apply(&mut u, &mut index, T0);
        Change::RevokeSessions.apply(&mut u, &mut index, T0);
        Change::ResetMfa.apply(&mut u, &mut index, T0);
        assert_eq!(
            u.history.since(&start).count(),
            0,
            "nothing to do, nothing recorded"
        );
        Change::Deactivate.apply(&mut u, &mut index, T0);
        Change::Deactivate.apply(&mut u, &mut index, T0);
        Change::SetPlan("pro".into()).apply(&mut u, &mut index, T0);
        Change::Reactivate.apply(&mut u, &mut index, T0);
        let added: Vec<_> = u.history.since(&start).collect();
        let kinds: Vec<EventKind> = added.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Deactivated, EventKind::Reactivated]);
        for e in added {
            assert_eq!(
                (e.ip, &e.user_agent, e.session, e.at),
                (None, &None, None, T0)
            );
        }
    }
}
