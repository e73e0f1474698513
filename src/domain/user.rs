//! One user's whole state: the profile, the password hash and the live sessions. This is what a
//! user actor owns, what it publishes to readers, and what it snapshots to the store.

use serde::{Deserialize, Serialize};

use super::credentials::Email;
use super::error::DomainError;
use super::ids::{SessionId, TenantId, UserId};
use super::secrets::{RefreshToken, ServerKey};
use super::sessions::{RefreshError, RefreshGrant, Session, SessionPolicy};
use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Active,
    Deactivated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// The organisation a user belongs to; every registration creates one on the `free` plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    pub owner: UserId,
    pub created_at: Timestamp,
}

/// Everything bp-auth knows about one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: UserId,
    /// The email as registered, shown back as given.
    pub email: String,
    /// Its lowercase form: the key of the email index.
    pub email_key: String,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa_enabled: bool,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    /// argon2id PHC string; never the password.
    pub password_hash: String,
    pub sessions: Vec<Session>,
    /// Bumped by every change: decides whether the actor must write a snapshot, and feeds the
    /// entitlements ETag.
    pub revision: u64,
}

/// What registration asks for, already parsed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub password_hash: String,
}

impl UserState {
    /// A new owner in a new tenant on the free plan.
    pub fn register(new: NewUser, now: Timestamp) -> Self {
        let id = UserId::generate();
        let tenant_name = match &new.full_name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => new.email.as_str().to_string(),
        };
        Self {
            id,
            email: new.email.as_str().to_string(),
            email_key: new.email.key().to_string(),
            full_name: new.full_name,
            phone: new.phone,
            phone_verified: false,
            mfa_enabled: false,
            status: Status::Active,
            role: Role::Owner,
            tenant: Tenant {
                id: TenantId::generate(),
                name: tenant_name,
                plan: "free".into(),
                owner: id,
                created_at: now,
            },
            created_at: now,
            password_hash: new.password_hash,
            sessions: Vec::new(),
            revision: 0,
        }
    }

    fn touch(&mut self) {
        self.revision = self.revision.wrapping_add(1);
    }

    /// Drops sessions that can no longer authorise anything, so state does not grow forever.
    pub fn prune(&mut self, now: Timestamp) {
        let before = self.sessions.len();
        self.sessions.retain(|s| s.is_live(now));
        if self.sessions.len() != before {
            self.touch();
        }
    }

    pub fn session(&self, sid: SessionId, now: Timestamp) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == sid && s.is_live(now))
    }

    /// Opens a session after a successful password check (made by the caller).
    pub fn open_session(
        &mut self,
        secret: [u8; 32],
        policy: &SessionPolicy,
        now: Timestamp,
    ) -> Result<(SessionId, RefreshToken, Timestamp), DomainError> {
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        self.prune(now);
        let (session, token) = Session::open(self.id, secret, policy, now);
        let out = (session.id, token, session.expires_at());
        self.sessions.push(session);
        self.touch();
        Ok(out)
    }

    /// Applies the refresh rules; a reused token revokes its session before the error returns.
    pub fn refresh(
        &mut self,
        token: &RefreshToken,
        key: &ServerKey,
        policy: &SessionPolicy,
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
            Ok(grant) => {
                if grant.rotated {
                    self.touch();
                }
                Ok(grant)
            }
            Err(RefreshError::Invalid) => Err(DomainError::InvalidRefreshToken),
            Err(RefreshError::Reused) => {
                self.revoke_session(token.session);
                Err(DomainError::RefreshTokenReused)
            }
        }
    }

    /// Ends one session; true if it was live.
    pub fn revoke_session(&mut self, sid: SessionId) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|s| s.id != sid);
        let changed = self.sessions.len() != before;
        if changed {
            self.touch();
        }
        changed
    }

    /// Ends every session.
    pub fn revoke_all_sessions(&mut self) {
        if !self.sessions.is_empty() {
            self.sessions.clear();
            self.touch();
        }
    }

    /// Best-effort logout: each argument that identifies a session of this user revokes it.
    /// A refresh token revokes its family only if it is a genuine token of that family.
    pub fn logout(
        &mut self,
        sid: Option<SessionId>,
        refresh: Option<&RefreshToken>,
        everywhere: bool,
        key: &ServerKey,
    ) {
        if everywhere {
            self.revoke_all_sessions();
            return;
        }
        if let Some(sid) = sid {
            self.revoke_session(sid);
        }
        if let Some(token) = refresh {
            let genuine = self
                .sessions
                .iter()
                .any(|s| s.id == token.session && s.recognises(token, key));
            if genuine {
                self.revoke_session(token.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    fn policy() -> SessionPolicy {
        SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 10_000,
            rotation_enabled: true,
            reuse_grace: 0,
        }
    }

    fn user() -> UserState {
        UserState::register(
            NewUser {
                email: Email::parse("Ada@Example.com").unwrap(),
                full_name: Some("Ada".into()),
                phone: None,
                password_hash: "$argon2id$...".into(),
            },
            T0,
        )
    }

    #[test]
    fn registration_makes_an_owner_of_a_free_tenant() {
        let u = user();
        assert_eq!(u.email, "Ada@Example.com");
        assert_eq!(u.email_key, "ada@example.com");
        assert_eq!(u.role, Role::Owner);
        assert_eq!(u.tenant.plan, "free");
        assert_eq!(u.tenant.owner, u.id);
    }

    #[test]
    fn reuse_revokes_the_session() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        let (sid, t0, _) = u.open_session([2; 32], &policy(), T0).unwrap();
        let _t1 = u.refresh(&t0, &key, &policy(), T0).unwrap();
        assert_eq!(
            u.refresh(&t0, &key, &policy(), T0).unwrap_err(),
            DomainError::RefreshTokenReused
        );
        assert!(u.session(sid, T0).is_none());
        // Once revoked, every token of the family is merely invalid.
        assert_eq!(
            u.refresh(&t0, &key, &policy(), T0).unwrap_err(),
            DomainError::InvalidRefreshToken
        );
    }

    #[test]
    fn deactivated_users_cannot_log_in() {
        let mut u = user();
        u.status = Status::Deactivated;
        assert_eq!(
            u.open_session([2; 32], &policy(), T0).unwrap_err(),
            DomainError::AccountDeactivated
        );
    }

    #[test]
    fn logout_by_refresh_token_needs_a_genuine_token() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        let (sid, t0, _) = u.open_session([2; 32], &policy(), T0).unwrap();
        let mut forged = t0.clone();
        forged.secret[0] ^= 1;
        u.logout(None, Some(&forged), false, &key);
        assert!(u.session(sid, T0).is_some());
        u.logout(None, Some(&t0), false, &key);
        assert!(u.session(sid, T0).is_none());
    }

    #[test]
    fn everywhere_ends_all_sessions_and_expired_ones_are_pruned() {
        let key = ServerKey::from_bytes([1; 32]);
        let mut u = user();
        u.open_session([2; 32], &policy(), T0).unwrap();
        u.open_session([3; 32], &policy(), T0.plus(500)).unwrap();
        u.prune(T0.plus(1_000));
        assert_eq!(u.sessions.len(), 1);
        u.logout(None, None, true, &key);
        assert!(u.sessions.is_empty());
    }
}
