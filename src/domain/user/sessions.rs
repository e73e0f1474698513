//! Sessions of one user: opening one after a login, refreshing it, ending one or all.

use super::{Status, UserState};
use crate::domain::error::DomainError;
use crate::domain::events::{EventKind, Origin};
use crate::domain::ids::SessionId;
use crate::domain::secrets::{RefreshToken, ServerKey};
use crate::domain::sessions::{LoginMethod, RefreshError, RefreshGrant, Session, SessionPolicy};
use crate::domain::time::Timestamp;

impl UserState {
    pub fn session(&self, sid: SessionId, now: Timestamp) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == sid && s.is_live(now))
    }

    /// Opens a session after a successful login check (made by the caller) and records the
    /// login. At the cap, the least recently used session (the oldest login or refresh) ends to
    /// make room, so that logins in a loop cannot grow the state (and every snapshot of it)
    /// without bound.
    pub fn open_session(
        &mut self,
        key: &ServerKey,
        policy: &SessionPolicy,
        login: (LoginMethod, &Origin),
        now: Timestamp,
    ) -> Result<(SessionId, RefreshToken, Timestamp), DomainError> {
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        self.prune(now);
        while self.sessions.len() >= policy.max_sessions.max(1) {
            let Some(lru) = self
                .sessions
                .iter()
                .min_by_key(|s| s.last_used_at)
                .map(|s| s.id)
            else {
                break;
            };
            self.revoke_session(lru);
        }
        let (session, token) = Session::open(self.id, key, policy, login, now);
        let out = (session.id, token, session.expires_at());
        self.sessions.push(session);
        self.record(EventKind::Login, login.1, Some(out.0), now);
        Ok(out)
    }

    /// Applies the refresh rules; a reused token revokes its session (recorded as presented
    /// from `origin`) before the error returns.
    pub fn refresh(
        &mut self,
        token: &RefreshToken,
        key: &ServerKey,
        policy: &SessionPolicy,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<RefreshGrant, DomainError> {
        self.prune(now);
        if self.status != Status::Active {
            return Err(DomainError::InvalidRefreshToken);
        }
        let Some(session) = self.sessions.iter_mut().find(|s| s.id == token.session) else {
            return Err(DomainError::InvalidRefreshToken);
        };
        match session.refresh(token, key, policy, now) {
            Ok(grant) => Ok(grant),
            Err(RefreshError::Invalid) => Err(DomainError::InvalidRefreshToken),
            Err(RefreshError::Reused) => {
                self.revoke_session(token.session);
                self.record(EventKind::RefreshReused, origin, Some(token.session), now);
                Err(DomainError::RefreshTokenReused)
            }
        }
    }

    /// Ends one session; true if it was live.
    pub fn revoke_session(&mut self, sid: SessionId) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|s| s.id != sid);
        self.sessions.len() != before
    }

    /// The user ends one of their live sessions: `NotFound` unless `sid` is one.
    pub fn end_session(
        &mut self,
        sid: SessionId,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.prune(now);
        if !self.revoke_session(sid) {
            return Err(DomainError::SessionNotFound);
        }
        self.record(EventKind::SessionRevoked, origin, Some(sid), now);
        Ok(())
    }

    /// The user ends every session but `current` (recorded once, about no one session).
    pub fn end_other_sessions(&mut self, current: SessionId, origin: &Origin, now: Timestamp) {
        self.prune(now);
        let before = self.sessions.len();
        self.sessions.retain(|s| s.id == current);
        if self.sessions.len() != before {
            let origin = Origin {
                session: None,
                ..origin.clone()
            };
            self.record(EventKind::SessionRevoked, &origin, None, now);
        }
    }

    /// The live sessions, newest first.
    pub fn live_sessions(&self, now: Timestamp) -> Vec<&Session> {
        let mut live: Vec<&Session> = self.sessions.iter().filter(|s| s.is_live(now)).collect();
        live.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
        live
    }

    /// Ends every session.
    pub fn revoke_all_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Best-effort logout: each argument that identifies a session of this user revokes it.
    /// A refresh token revokes its family only if it is a genuine token of that family. A
    /// logout that ended something is recorded (about the session it ended, or none for
    /// everywhere).
    pub fn logout(
        &mut self,
        (sid, refresh, everywhere): (Option<SessionId>, Option<&RefreshToken>, bool),
        key: &ServerKey,
        origin: &Origin,
        now: Timestamp,
    ) {
        let before = self.sessions.len();
        let mut about = None;
        if everywhere {
            self.revoke_all_sessions();
        } else {
            if let Some(sid) = sid {
                if self.revoke_session(sid) {
                    about = Some(sid);
                }
            }
            if let Some(token) = refresh {
                let genuine = self
                    .sessions
                    .iter()
                    .any(|s| s.id == token.session && s.recognises(token, key));
                if genuine && self.revoke_session(token.session) {
                    about = about.or(Some(token.session));
                }
            }
        }
        if self.sessions.len() != before {
            let origin = Origin {
                session: about,
                ..origin.clone()
            };
            self.record(EventKind::Logout, &origin, about, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn reuse_revokes_the_session() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        let (sid, t0, _) = u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        let _t1 = u
            .refresh(&t0, &key, &policy(), &Origin::default(), T0)
            .unwrap();
        assert_eq!(
            u.refresh(&t0, &key, &policy(), &Origin::default(), T0)
                .unwrap_err(),
            DomainError::RefreshTokenReused
        );
        assert!(u.session(sid, T0).is_none());
        // Once revoked, every token of the family is merely invalid.
        assert_eq!(
            u.refresh(&t0, &key, &policy(), &Origin::default(), T0)
                .unwrap_err(),
            DomainError::InvalidRefreshToken
        );
    }

    #[test]
    fn deactivated_users_cannot_log_in() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        u.status = Status::Deactivated;
        assert_eq!(
            u.open_session(&key, &policy(), LOGIN, T0).unwrap_err(),
            DomainError::AccountDeactivated
        );
    }

    #[test]
    fn logout_by_refresh_token_needs_a_genuine_token() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        let (sid, t0, _) = u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        let mut forged = t0.clone();
        forged.secret[0] ^= 1;
        u.logout((None, Some(&forged), false), &key, &Origin::default(), T0);
        assert!(u.session(sid, T0).is_some());
        u.logout((None, Some(&t0), false), &key, &Origin::default(), T0);
        assert!(u.session(sid, T0).is_none());
    }

    #[test]
    fn everywhere_ends_all_sessions_and_expired_ones_are_pruned() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        u.open_session(&key, &policy(), LOGIN, T0.plus(500))
            .unwrap();
        u.prune(T0.plus(1_000));
        assert_eq!(u.sessions.len(), 1);
        u.logout((None, None, true), &key, &Origin::default(), T0);
        assert!(u.sessions.is_empty());
    }

    #[test]
    fn a_login_past_the_cap_ends_the_least_recently_used_session() {
        let key = ServerKey::from_bytes([1; 32]);
        let p = SessionPolicy {
            max_sessions: 3,
            ..policy()
        };
        let mut u = user();
        let (a, ta, _) = u.open_session(&key, &p, LOGIN, T0).unwrap();
        let (b, _, _) = u.open_session(&key, &p, LOGIN, T0.plus(1)).unwrap();
        let (c, _, _) = u.open_session(&key, &p, LOGIN, T0.plus(2)).unwrap();
        // The oldest login was refreshed since: it is the most recently used now.
        let ta1 = u
            .refresh(&ta, &key, &p, &Origin::default(), T0.plus(3))
            .unwrap()
            .token;
        let (d, _, _) = u.open_session(&key, &p, LOGIN, T0.plus(4)).unwrap();
        let live: Vec<_> = u.sessions.iter().map(|s| s.id).collect();
        assert_eq!(live.len(), 3);
        assert!(
            u.session(b, T0.plus(4)).is_none(),
            "b was the least recently used"
        );
        for sid in [a, c, d] {
            assert!(live.contains(&sid));
        }
        let (e, _, _) = u.open_session(&key, &p, LOGIN, T0.plus(5)).unwrap();
        assert!(u.session(c, T0.plus(5)).is_none());
        assert_eq!(u.sessions.len(), 3);
        assert!(u.session(e, T0.plus(5)).is_some());
        assert_eq!(
            u.refresh(&ta1, &key, &p, &Origin::default(), T0.plus(6))
                .unwrap()
                .token
                .generation,
            2
        );
    }

    #[test]
    fn a_state_above_the_cap_shrinks_to_it_at_the_next_login() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        for i in 0..5 {
            u.open_session(&key, &policy(), LOGIN, T0.plus(i)).unwrap();
        }
        let p = SessionPolicy {
            max_sessions: 2,
            ..policy()
        };
        let (newest, _, _) = u.open_session(&key, &p, LOGIN, T0.plus(10)).unwrap();
        assert_eq!(u.sessions.len(), 2);
        assert_eq!(u.sessions[1].id, newest);
        assert_eq!(u.sessions[0].rotated_at, T0.plus(4));
    }
}
