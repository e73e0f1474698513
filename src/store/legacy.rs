//! Frozen layouts of older snapshot versions, and their migration to the current `UserState`.
//! bincode is not self-describing: a snapshot can only be read through exactly the struct that
//! wrote it, so each older version keeps its field list here, never to be edited.

use serde::{Deserialize, Serialize};

use crate::domain::apikey::ApiKey;
use crate::domain::codes::CodeSlot;
use crate::domain::events::History;
use crate::domain::ids::UserId;
use crate::domain::mfa::MfaState;
use crate::domain::passkeys::StoredPasskey;
use crate::domain::sessions::{LoginMethod, Session};
use crate::domain::time::Timestamp;
use crate::domain::user::{EmailChange, Role, Status, Tenant, UserState};

/// `Session` as format versions 1 and 2 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionV1 {
    pub id: crate::domain::ids::SessionId,
    pub created_at: Timestamp,
    pub max_expires_at: Timestamp,
    pub generation: u32,
    pub current_hash: [u8; 32],
    pub refresh_expires_at: Timestamp,
    pub rotated_at: Timestamp,
}

/// Those sessions recorded neither the client nor the method; the last rotation is the best
/// known last use.
impl From<SessionV1> for Session {
    fn from(v: SessionV1) -> Self {
        Self {
            id: v.id,
            created_at: v.created_at,
            max_expires_at: v.max_expires_at,
            generation: v.generation,
            current_hash: v.current_hash,
            refresh_expires_at: v.refresh_expires_at,
            rotated_at: v.rotated_at,
            last_used_at: v.rotated_at,
            method: LoginMethod::Unrecorded,
            user_agent: None,
            ip: None,
        }
    }
}

/// `UserState` as format version 1 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserStateV1 {
    pub id: UserId,
    pub email: String,
    pub email_key: String,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    pub password_hash: String,
    pub sessions: Vec<SessionV1>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    pub revision: u64,
}

/// `UserState` as format version 2 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserStateV2 {
    pub id: UserId,
    pub email: String,
    pub email_key: String,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    pub password_hash: String,
    pub sessions: Vec<SessionV1>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    pub revision: u64,
    pub email_verified: bool,
    pub email_code: CodeSlot,
    pub reset_code: CodeSlot,
    pub email_change: EmailChange,
}

/// `UserState` as format version 3 wrote it. Its sessions, MFA record and history are today's
/// types: version 4 only appended a variant to `LoginMethod` (bincode stores the index, so the
/// old ones read the same) and added the passkeys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserStateV3 {
    pub id: UserId,
    pub email: String,
    pub email_key: String,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    pub password_hash: String,
    pub sessions: Vec<Session>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    pub revision: u64,
    pub email_verified: bool,
    pub email_code: CodeSlot,
    pub reset_code: CodeSlot,
    pub email_change: EmailChange,
    pub history: History,
}

/// `UserState` as format version 4 wrote it. Its sessions and history are today's types:
/// version 5 only appended variants to `LoginMethod` and `EventKind` (bincode stores the index,
/// so the old ones read the same) and added the identities.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserStateV4 {
    pub id: UserId,
    pub email: String,
    pub email_key: String,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    pub password_hash: String,
    pub sessions: Vec<Session>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    pub revision: u64,
    pub email_verified: bool,
    pub email_code: CodeSlot,
    pub reset_code: CodeSlot,
    pub email_change: EmailChange,
    pub history: History,
    pub passkeys: Vec<StoredPasskey>,
}

/// Version 4 had no identities.
impl From<UserStateV4> for UserState {
    fn from(v: UserStateV4) -> Self {
        Self {
            id: v.id,
            email: v.email,
            email_key: v.email_key,
            full_name: v.full_name,
            phone: v.phone,
            phone_verified: v.phone_verified,
            mfa: v.mfa,
            status: v.status,
            role: v.role,
            tenant: v.tenant,
            created_at: v.created_at,
            password_hash: v.password_hash,
            sessions: v.sessions,
            api_key: v.api_key,
            phone_code: v.phone_code,
            reactivate_code: v.reactivate_code,
            revision: v.revision,
            email_verified: v.email_verified,
            email_code: v.email_code,
            reset_code: v.reset_code,
            email_change: v.email_change,
            history: v.history,
            passkeys: v.passkeys,
            identities: Vec::new(),
        }
    }
}

/// Version 3 had no passkeys.
impl From<UserStateV3> for UserStateV4 {
    fn from(v: UserStateV3) -> Self {
        Self {
            id: v.id,
            email: v.email,
            email_key: v.email_key,
            full_name: v.full_name,
            phone: v.phone,
            phone_verified: v.phone_verified,
            mfa: v.mfa,
            status: v.status,
            role: v.role,
            tenant: v.tenant,
            created_at: v.created_at,
            password_hash: v.password_hash,
            sessions: v.sessions,
            api_key: v.api_key,
            phone_code: v.phone_code,
            reactivate_code: v.reactivate_code,
            revision: v.revision,
            email_verified: v.email_verified,
            email_code: v.email_code,
            reset_code: v.reset_code,
            email_change: v.email_change,
            history: v.history,
            passkeys: Vec::new(),
        }
    }
}

/// Version 2 had no session metadata and no security history: the history starts empty.
impl From<UserStateV2> for UserStateV3 {
    fn from(v: UserStateV2) -> Self {
        Self {
            id: v.id,
            email: v.email,
            email_key: v.email_key,
            full_name: v.full_name,
            phone: v.phone,
            phone_verified: v.phone_verified,
            mfa: v.mfa,
            status: v.status,
            role: v.role,
            tenant: v.tenant,
            created_at: v.created_at,
            password_hash: v.password_hash,
            sessions: v.sessions.into_iter().map(Session::from).collect(),
            api_key: v.api_key,
            phone_code: v.phone_code,
            reactivate_code: v.reactivate_code,
            revision: v.revision,
            email_verified: v.email_verified,
            email_code: v.email_code,
            reset_code: v.reset_code,
            email_change: v.email_change,
            history: History::default(),
        }
    }
}

/// Version 1 knew nothing of email verification: its users are unverified.
impl From<UserStateV1> for UserStateV2 {
    fn from(v: UserStateV1) -> Self {
        Self {
            id: v.id,
            email: v.email,
            email_key: v.email_key,
            full_name: v.full_name,
            phone: v.phone,
            phone_verified: v.phone_verified,
            mfa: v.mfa,
            status: v.status,
            role: v.role,
            tenant: v.tenant,
            created_at: v.created_at,
            password_hash: v.password_hash,
            sessions: v.sessions,
            api_key: v.api_key,
            phone_code: v.phone_code,
            reactivate_code: v.reactivate_code,
            revision: v.revision,
            email_verified: false,
            email_code: CodeSlot::default(),
            reset_code: CodeSlot::default(),
            email_change: EmailChange::default(),
        }
    }
}

#[cfg(test)]
impl SessionV1 {
    fn frozen_from(s: &Session) -> Self {
        Self {
            id: s.id,
            created_at: s.created_at,
            max_expires_at: s.max_expires_at,
            generation: s.generation,
            current_hash: s.current_hash,
            refresh_expires_at: s.refresh_expires_at,
            rotated_at: s.rotated_at,
        }
    }
}

#[cfg(test)]
impl UserStateV4 {
    /// What version 4 would have written for `u` (for migration tests).
    pub fn frozen_from(u: &UserState) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            email_key: u.email_key.clone(),
            full_name: u.full_name.clone(),
            phone: u.phone.clone(),
            phone_verified: u.phone_verified,
            mfa: u.mfa.clone(),
            status: u.status,
            role: u.role,
            tenant: u.tenant.clone(),
            created_at: u.created_at,
            password_hash: u.password_hash.clone(),
            sessions: u.sessions.clone(),
            api_key: u.api_key.clone(),
            phone_code: u.phone_code.clone(),
            reactivate_code: u.reactivate_code.clone(),
            revision: u.revision,
            email_verified: u.email_verified,
            email_code: u.email_code.clone(),
            reset_code: u.reset_code.clone(),
            email_change: u.email_change.clone(),
            history: u.history.clone(),
            passkeys: u.passkeys.clone(),
        }
    }
}

#[cfg(test)]
impl UserStateV3 {
    /// What version 3 would have written for `u` (for migration tests).
    pub fn frozen_from(u: &UserState) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            email_key: u.email_key.clone(),
            full_name: u.full_name.clone(),
            phone: u.phone.clone(),
            phone_verified: u.phone_verified,
            mfa: u.mfa.clone(),
            status: u.status,
            role: u.role,
            tenant: u.tenant.clone(),
            created_at: u.created_at,
            password_hash: u.password_hash.clone(),
            sessions: u.sessions.clone(),
            api_key: u.api_key.clone(),
            phone_code: u.phone_code.clone(),
            reactivate_code: u.reactivate_code.clone(),
            revision: u.revision,
            email_verified: u.email_verified,
            email_code: u.email_code.clone(),
            reset_code: u.reset_code.clone(),
            email_change: u.email_change.clone(),
            history: u.history.clone(),
        }
    }
}

#[cfg(test)]
impl UserStateV2 {
    /// What version 2 would have written for `u` (for migration tests).
    pub fn frozen_from(u: &UserState) -> Self {
        let v1 = UserStateV1::frozen_from(u);
        Self {
            email_verified: u.email_verified,
            email_code: u.email_code.clone(),
            reset_code: u.reset_code.clone(),
            email_change: u.email_change.clone(),
            ..Self::from(v1)
        }
    }
}

#[cfg(test)]
impl UserStateV1 {
    /// What version 1 would have written for `u` (for migration tests).
    pub fn frozen_from(u: &UserState) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            email_key: u.email_key.clone(),
            full_name: u.full_name.clone(),
            phone: u.phone.clone(),
            phone_verified: u.phone_verified,
            mfa: u.mfa.clone(),
            status: u.status,
            role: u.role,
            tenant: u.tenant.clone(),
            created_at: u.created_at,
            password_hash: u.password_hash.clone(),
            sessions: u.sessions.iter().map(SessionV1::frozen_from).collect(),
            api_key: u.api_key.clone(),
            phone_code: u.phone_code.clone(),
            reactivate_code: u.reactivate_code.clone(),
            revision: u.revision,
        }
    }
}
