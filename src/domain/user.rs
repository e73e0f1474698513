//! One user's whole state: the profile, the password hash and the live sessions. This is what a
//! user actor owns, what it publishes to readers, and what it snapshots to the store.

use serde::{Deserialize, Serialize};

use super::apikey::{ApiKey, NewKey};
use super::codes::{CodePolicy, CodeSlot};
use super::credentials::Email;
use super::error::DomainError;
use super::ids::TokenId;
use super::ids::{SessionId, TenantId, UserId};
use super::mfa::{self, MfaState};
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
    pub mfa: MfaState,
    pub status: Status,
    pub role: Role,
    pub tenant: Tenant,
    pub created_at: Timestamp,
    /// argon2id PHC string; never the password.
    pub password_hash: String,
    pub sessions: Vec<Session>,
    pub api_key: Option<ApiKey>,
    pub phone_code: CodeSlot,
    pub reactivate_code: CodeSlot,
    /// Counts the snapshots written; bumped by the actor whenever the state changed.
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
        }
    }

    /// Drops sessions that can no longer authorise anything, so state does not grow forever.
    pub fn prune(&mut self, now: Timestamp) {
        self.sessions.retain(|s| s.is_live(now));
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
            Ok(grant) => Ok(grant),
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
        self.sessions.len() != before
    }

    /// Ends every session.
    pub fn revoke_all_sessions(&mut self) {
        self.sessions.clear();
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

impl UserState {
    pub fn mfa_enabled(&self) -> bool {
        self.mfa.enabled
    }

    /// Stores a new (encrypted) secret awaiting its first code.
    pub fn mfa_setup(&mut self, sealed_secret: Vec<u8>) -> Result<(), DomainError> {
        if self.mfa.enabled {
            return Err(DomainError::MfaAlreadyEnabled);
        }
        self.mfa.secret = Some(sealed_secret);
        self.mfa.recovery.clear();
        Ok(())
    }

    /// The first valid code enables MFA, with the given recovery-code hashes.
    pub fn mfa_enable(
        &mut self,
        totp: Option<&totp_rs::TOTP>,
        code: &str,
        recovery: Vec<[u8; 32]>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if self.mfa.enabled {
            return Err(DomainError::MfaAlreadyEnabled);
        }
        let totp = totp
            .filter(|_| self.mfa.secret.is_some())
            .ok_or(DomainError::MfaNotSetUp)?;
        let step = mfa::match_step(totp, code, self.mfa.last_step, now).ok_or(
            DomainError::InvalidCode {
                attempts_left: None,
            },
        )?;
        self.mfa.last_step = step;
        self.mfa.enabled = true;
        self.mfa.recovery = recovery;
        Ok(())
    }

    /// A valid code turns MFA off and forgets the secret, recovery codes and challenges.
    pub fn mfa_disable(
        &mut self,
        totp: Option<&totp_rs::TOTP>,
        code: &str,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.mfa.enabled {
            return Err(DomainError::MfaNotEnabled);
        }
        let ok = totp
            .and_then(|t| mfa::match_step(t, code, self.mfa.last_step, now))
            .is_some();
        if !ok {
            return Err(DomainError::InvalidCode {
                attempts_left: None,
            });
        }
        self.mfa = MfaState::default();
        Ok(())
    }

    /// Opens a login challenge (the password was right); its id is the pending token's `jti`.
    pub fn mfa_challenge(&mut self, ttl: u64, now: Timestamp) -> TokenId {
        self.mfa.open_challenge(ttl, now)
    }

    /// Answers challenge `jti` with a TOTP code or a recovery code's hash.
    pub fn mfa_answer(
        &mut self,
        jti: TokenId,
        totp: Option<&totp_rs::TOTP>,
        code: Option<&str>,
        recovery: Option<[u8; 32]>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.mfa.enabled || !self.mfa.challenge_open(jti, now) {
            return Err(DomainError::InvalidToken);
        }
        let ok = match (code, recovery) {
            (Some(code), _) => {
                match totp.and_then(|t| mfa::match_step(t, code, self.mfa.last_step, now)) {
                    Some(step) => {
                        self.mfa.last_step = step;
                        true
                    }
                    None => false,
                }
            }
            (None, Some(hash)) => self.mfa.use_recovery(&hash),
            (None, None) => false,
        };
        self.mfa.settle_challenge(jti, ok)
    }
}

/// A `PATCH /me` change: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    pub full_name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
}

impl UserState {
    /// The current key, creating one if there is none; the secret is returned only on creation.
    pub fn ensure_api_key(&mut self, now: Timestamp) -> (ApiKey, Option<String>) {
        match &self.api_key {
            Some(k) => (k.clone(), None),
            None => {
                let NewKey { secret, record } = ApiKey::generate(now);
                self.api_key = Some(record.clone());
                (record, Some(secret))
            }
        }
    }

    /// Replaces the key (creating one if there is none); returns the new key, its secret and
    /// the digest of the key it replaced.
    pub fn rotate_api_key(&mut self, now: Timestamp) -> (ApiKey, String, Option<[u8; 32]>) {
        let old = self.api_key.as_ref().map(|k| k.digest);
        let NewKey { secret, mut record } = ApiKey::generate(now);
        record.disabled = self.status != Status::Active;
        self.api_key = Some(record.clone());
        (record, secret, old)
    }

    /// Records a use of the key, at most once a minute (write-behind bookkeeping).
    pub fn touch_api_key(&mut self, digest: &[u8; 32], now: Timestamp) {
        if let Some(k) = self.api_key.as_mut().filter(|k| &k.digest == digest) {
            if k.last_used_at.is_none_or(|t| now.0 - t.0 >= 60) {
                k.last_used_at = Some(now);
            }
        }
    }

    /// Applies a profile change; a new phone number is unverified and voids a pending code.
    pub fn patch_profile(&mut self, patch: ProfilePatch) {
        if let Some(name) = patch.full_name {
            self.full_name = name;
        }
        if let Some(phone) = patch.phone {
            if phone != self.phone {
                self.phone = phone;
                self.phone_verified = false;
                self.phone_code.void();
            }
        }
    }

    /// Where a phone code goes, after the request's rules are checked.
    pub fn request_phone_code(
        &mut self,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<String, DomainError> {
        let phone = self.phone.clone().ok_or(DomainError::NoPhone)?;
        if self.phone_verified {
            return Err(DomainError::PhoneAlreadyVerified);
        }
        self.phone_code.issue(hash, policy, now)?;
        Ok(phone)
    }

    pub fn confirm_phone(&mut self, hash: &[u8; 32], now: Timestamp) -> Result<(), DomainError> {
        if self.phone_verified {
            return Err(DomainError::PhoneAlreadyVerified);
        }
        self.phone_code.confirm(hash, now)?;
        self.phone_verified = true;
        Ok(())
    }

    /// Deactivation: every session ends and the API key stops working until reactivation.
    pub fn deactivate(&mut self) {
        self.status = Status::Deactivated;
        self.revoke_all_sessions();
        if let Some(k) = self.api_key.as_mut() {
            k.disabled = true;
        }
    }

    /// Issues a reactivation code if the account is deactivated and the resend limits allow;
    /// `Ok(false)` when there is nothing to send. The caller answers the same either way.
    pub fn request_reactivation(
        &mut self,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> bool {
        self.status == Status::Deactivated && self.reactivate_code.issue(hash, policy, now).is_ok()
    }

    /// Every failure is the same `invalid_code`, so nothing is learnt about the account.
    pub fn confirm_reactivation(
        &mut self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if self.status != Status::Deactivated {
            return Err(DomainError::InvalidCode {
                attempts_left: None,
            });
        }
        self.reactivate_code
            .confirm(hash, now)
            .map_err(|_| DomainError::InvalidCode {
                attempts_left: None,
            })?;
        self.reactivate();
        Ok(())
    }

    /// The account works again, and so does its API key.
    pub fn reactivate(&mut self) {
        self.status = Status::Active;
        if let Some(k) = self.api_key.as_mut() {
            k.disabled = false;
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

    fn code_policy() -> CodePolicy {
        CodePolicy {
            ttl: 600,
            resend: 60,
            per_hour: 5,
            max_attempts: 5,
        }
    }

    #[test]
    fn api_key_is_created_once_and_rotation_replaces_it() {
        let mut u = user();
        let (k1, secret) = u.ensure_api_key(T0);
        assert!(secret.is_some());
        let (k1_again, none) = u.ensure_api_key(T0);
        assert_eq!(k1, k1_again);
        assert!(none.is_none());
        let (k2, _, old) = u.rotate_api_key(T0);
        assert_eq!(old, Some(k1.digest));
        assert_ne!(k2.id, k1.id);
    }

    #[test]
    fn key_use_is_recorded_at_most_once_a_minute() {
        let mut u = user();
        let (k, _) = u.ensure_api_key(T0);
        u.touch_api_key(&k.digest, T0.plus(1));
        u.touch_api_key(&k.digest, T0.plus(30));
        assert_eq!(u.api_key.as_ref().unwrap().last_used_at, Some(T0.plus(1)));
        u.touch_api_key(&k.digest, T0.plus(61));
        assert_eq!(u.api_key.as_ref().unwrap().last_used_at, Some(T0.plus(61)));
    }

    #[test]
    fn phone_rules() {
        let mut u = user();
        assert_eq!(
            u.request_phone_code([1; 32], &code_policy(), T0),
            Err(DomainError::NoPhone)
        );
        u.patch_profile(ProfilePatch {
            phone: Some(Some("+447700900123".into())),
            ..Default::default()
        });
        assert_eq!(
            u.request_phone_code([1; 32], &code_policy(), T0).unwrap(),
            "+447700900123"
        );
        // A new number voids the pending code.
        u.patch_profile(ProfilePatch {
            phone: Some(Some("+447700900124".into())),
            ..Default::default()
        });
        assert_eq!(u.confirm_phone(&[1; 32], T0), Err(DomainError::CodeExpired));
        u.request_phone_code([2; 32], &code_policy(), T0.plus(60))
            .unwrap();
        u.confirm_phone(&[2; 32], T0.plus(61)).unwrap();
        assert!(u.phone_verified);
        assert_eq!(
            u.request_phone_code([3; 32], &code_policy(), T0.plus(200)),
            Err(DomainError::PhoneAlreadyVerified)
        );
    }

    #[test]
    fn deactivation_and_reactivation() {
        let mut u = user();
        u.open_session([2; 32], &policy(), T0).unwrap();
        u.ensure_api_key(T0);
        assert!(
            !u.request_reactivation([1; 32], &code_policy(), T0),
            "active accounts get no code"
        );
        u.deactivate();
        assert!(u.sessions.is_empty());
        assert!(u.api_key.as_ref().unwrap().disabled);
        assert!(u.request_reactivation([1; 32], &code_policy(), T0));
        assert_eq!(
            u.confirm_reactivation(&[9; 32], T0),
            Err(DomainError::InvalidCode {
                attempts_left: None
            })
        );
        u.confirm_reactivation(&[1; 32], T0).unwrap();
        assert_eq!(u.status, Status::Active);
        assert!(!u.api_key.as_ref().unwrap().disabled);
    }
}
