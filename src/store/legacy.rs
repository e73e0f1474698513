//! Frozen layouts of older snapshot versions, and their migration to the current `UserState`.
//! bincode is not self-describing: a snapshot can only be read through exactly the struct that
//! wrote it, so each older version keeps its field list here, never to be edited.

use serde::{Deserialize, Serialize};

use crate::domain::apikey::ApiKey;
use crate::domain::codes::CodeSlot;
use crate::domain::ids::UserId;
use crate::domain::mfa::MfaState;
use crate::domain::sessions::Session;
use crate::domain::time::Timestamp;
use crate::domain::user::{EmailChange, Role, Status, Tenant, UserState};

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
    pub sessions: Vec<Session>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    pub revision: u64,
}

/// Version 1 knew nothing of email verification: its users are unverified.
impl From<UserStateV1> for UserState {
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
            sessions: u.sessions.clone(),
            api_key: u.api_key.clone(),
            phone_code: u.phone_code.clone(),
            reactivate_code: u.reactivate_code.clone(),
            revision: u.revision,
        }
    }
}
