//! One user's whole state: the profile, the password hash and the live sessions. This is what a
//! user actor owns, what it publishes to readers, and what it snapshots to the store.
//!
//! The rules that change it live beside it, one file per area: `sessions` (login, refresh,
//! logout), `mfa` (TOTP enrolment and the login challenge), `api_key`, `profile`,
//! `phone` (verification codes), `email` (verification and change of address), `password`
//! (change and reset), `status` (deactivation and reactivation), `passkeys` (WebAuthn
//! registration, login and second factor) and `identities` (OpenID Connect providers).

use serde::{Deserialize, Serialize};

mod api_key;
mod email;
mod identities;
mod mfa;
mod passkeys;
mod password;
mod phone;
mod profile;
mod sessions;
mod status;

pub use email::EmailMoved;
pub use identities::LinkBy;
#[cfg(test)]
pub(crate) use passkeys::soft;
pub use passkeys::{Ceremony, PasskeyUser};
pub use profile::ProfilePatch;

use super::apikey::ApiKey;
use super::codes::CodeSlot;
use super::credentials::Email;
use super::events::{Event, EventKind, History, Origin};
use super::identities::Identity;
use super::ids::{SessionId, TenantId, UserId};
use super::mfa::MfaState;
use super::passkeys::StoredPasskey;
use super::sessions::Session;
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
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    /// argon2id PHC string; never the password. Empty for a user a provider created, until
    /// one is set (`has_password`).
    pub password_hash: String,
    pub sessions: Vec<Session>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    /// Counts the snapshots written; bumped by the actor whenever the state changed.
    pub revision: u64,
    /// Whether the owner of `email` has shown a code sent to it (since format version 2; users
    /// from before count as unverified). The defaults let exports made before it import.
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub email_code: CodeSlot,
    #[serde(default)]
    pub reset_code: CodeSlot,
    /// A change of address waiting for the code sent to the new one.
    #[serde(default)]
    pub email_change: EmailChange,
    /// The security history (since format version 3).
    #[serde(default)]
    pub history: History,
    /// Registered passkeys, oldest first (since format version 4).
    #[serde(default)]
    pub passkeys: Vec<StoredPasskey>,
    /// Identities at OpenID Connect providers, oldest first (since format version 5).
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// The address a change is waiting to confirm, and the code sent to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChange {
    /// The new address as given; claimed only when the code is confirmed.
    pub new_email: Option<String>,
    pub code: CodeSlot,
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
            mfa: MfaState::default(),
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
            api_key: None,
            phone_code: CodeSlot::default(),
            reactivate_code: CodeSlot::default(),
            revision: 0,
            email_verified: false,
            email_code: CodeSlot::default(),
            reset_code: CodeSlot::default(),
            email_change: EmailChange::default(),
            history: History::default(),
            passkeys: Vec::new(),
            identities: Vec::new(),
        }
    }

    /// Adds an event to the history: `what` happened at `now`, asked from `origin`, about
    /// `session` (the one opened or ended) or else the session `origin` used.
    pub fn record(
        &mut self,
        what: EventKind,
        origin: &Origin,
        session: Option<SessionId>,
        now: Timestamp,
    ) {
        self.history.record(Event {
            at: now,
            kind: what,
            ip: origin.ip,
            user_agent: origin.user_agent.clone(),
            session: session.or(origin.session),
        });
    }

    /// Drops sessions that can no longer authorise anything, so state does not grow forever.
    pub fn prune(&mut self, now: Timestamp) {
        self.sessions.retain(|s| s.is_live(now));
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::domain::codes::CodePolicy;
    use crate::domain::sessions::{LoginMethod, SessionPolicy};

    pub(crate) const T0: Timestamp = Timestamp(1_800_000_000);
    /// A password login from nowhere in particular.
    pub(crate) const LOGIN: (LoginMethod, &Origin) = (
        LoginMethod::Password,
        &Origin {
            ip: None,
            user_agent: None,
            session: None,
        },
    );

    pub(crate) fn policy() -> SessionPolicy {
        SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 10_000,
            rotation_enabled: true,
            reuse_grace: 0,
            max_sessions: 100,
        }
    }

    pub(crate) fn user() -> UserState {
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

    pub(crate) fn code_policy() -> CodePolicy {
        CodePolicy {
            ttl: 600,
            resend: 60,
            per_hour: 5,
            max_attempts: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
    fn an_export_from_before_email_verification_reads_as_unverified() {
        let mut u = user();
        u.email_verified = true;
        let mut json = serde_json::to_value(&u).unwrap();
        for field in [
            "email_verified",
            "email_code",
            "reset_code",
            "email_change",
            "history",
            "passkeys",
            "identities",
        ] {
            json.as_object_mut().unwrap().remove(field);
        }
        let read: UserState = serde_json::from_value(json).unwrap();
        assert!(!read.email_verified);
        assert_eq!(read.email_change, EmailChange::default());
        assert!(read.passkeys.is_empty());
        assert!(read.identities.is_empty());
    }

    #[test]
    fn an_export_from_before_format_3_reads_its_sessions_as_unrecorded() {
        use crate::domain::secrets::ServerKey;
        use crate::domain::sessions::{LoginMethod, Session};
        let mut u = user();
        let key = ServerKey::from_bytes([1; 32]);
        u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        let (_, second, _) = u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        u.refresh(&second, &key, &policy(), &Origin::default(), T0.plus(5))
            .unwrap();
        let mut json = serde_json::to_value(&u).unwrap();
        json.as_object_mut().unwrap().remove("history");
        for s in json["sessions"].as_array_mut().unwrap() {
            for field in ["last_used_at", "method", "user_agent", "ip"] {
                s.as_object_mut().unwrap().remove(field);
            }
        }
        let mut read: UserState = serde_json::from_value(json).unwrap();
        read.sessions
            .iter_mut()
            .for_each(Session::complete_from_before_format_3);
        assert!(read.history.is_empty());
        for (s, was) in read.sessions.iter().zip(&u.sessions) {
            assert_eq!(s.method, LoginMethod::Unrecorded);
            assert_eq!((s.ip, s.user_agent.as_deref()), (None, None));
            assert_eq!(s.last_used_at, was.rotated_at, "its last rotation");
            assert_eq!(s.current_hash, was.current_hash);
        }
        assert_eq!(read.sessions[1].last_used_at, T0.plus(5));
    }
}
