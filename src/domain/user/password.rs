//! Changing the password (signed in, with the current one) and resetting it (signed out, with a
//! code sent to the account's address).
//!
//! A reset proves only control of the mailbox, so it ends every session and refresh family and
//! every pending MFA challenge, and opens none: the next login still asks for the second factor.

use super::{Status, UserState};
use crate::domain::codes::CodePolicy;
use crate::domain::error::DomainError;
use crate::domain::ids::SessionId;
use crate::domain::time::Timestamp;

impl UserState {
    /// Replaces the password hash (the caller checked the current password). Other sessions end
    /// unless `revoke_others` is false; `current` stays. A pending reset code is void: the user
    /// has just shown the password.
    pub fn change_password(&mut self, hash: String, current: SessionId, revoke_others: bool) {
        self.password_hash = hash;
        if revoke_others {
            self.sessions.retain(|s| s.id == current);
        }
        self.reset_code.void();
    }

    /// Issues a reset code if the account is active and the resend limits allow; `false` when
    /// nothing is to be sent. The caller answers the same either way.
    pub fn request_password_reset(
        &mut self,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> bool {
        self.status == Status::Active && self.reset_code.issue(hash, policy, now).is_ok()
    }

    /// Sets the new password if `code_hash` is the pending reset code's. Every failure is the
    /// same `invalid_code`, so nothing is learnt about the account.
    pub fn reset_password(
        &mut self,
        code_hash: &[u8; 32],
        new_hash: String,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let refused = DomainError::InvalidCode {
            attempts_left: None,
        };
        if self.status != Status::Active {
            return Err(refused);
        }
        self.reset_code
            .confirm(code_hash, now)
            .map_err(|_| refused)?;
        self.password_hash = new_hash;
        self.revoke_all_sessions();
        self.mfa.challenges.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn key() -> crate::domain::secrets::ServerKey {
        crate::domain::secrets::ServerKey::from_bytes([1; 32])
    }

    fn refused() -> DomainError {
        DomainError::InvalidCode {
            attempts_left: None,
        }
    }

    #[test]
    fn a_change_keeps_the_current_session_and_ends_the_others_if_asked() {
        let mut u = user();
        let (a, _, _) = u.open_session(&key(), &policy(), LOGIN, T0).unwrap();
        let (b, _, _) = u.open_session(&key(), &policy(), LOGIN, T0).unwrap();
        u.change_password("$argon2id$new".into(), a, false);
        assert_eq!(u.sessions.len(), 2);
        u.change_password("$argon2id$newer".into(), a, true);
        assert_eq!(u.password_hash, "$argon2id$newer");
        assert!(u.session(a, T0).is_some());
        assert!(u.session(b, T0).is_none());
    }

    #[test]
    fn a_reset_needs_the_code_ends_every_session_and_keeps_mfa() {
        let mut u = user();
        u.open_session(&key(), &policy(), LOGIN, T0).unwrap();
        u.mfa.enabled = true;
        assert!(u.request_password_reset([7; 32], &code_policy(), T0));
        assert_eq!(u.reset_password(&[8; 32], "$x".into(), T0), Err(refused()));
        u.reset_password(&[7; 32], "$argon2id$reset".into(), T0.plus(1))
            .unwrap();
        assert_eq!(u.password_hash, "$argon2id$reset");
        assert!(u.sessions.is_empty());
        assert!(u.mfa.enabled, "the second factor stays");
        assert_eq!(
            u.reset_password(&[7; 32], "$again".into(), T0.plus(2)),
            Err(refused()),
            "single use"
        );
    }

    #[test]
    fn deactivated_accounts_get_no_reset_and_a_newer_code_voids_the_older() {
        let mut u = user();
        assert!(u.request_password_reset([1; 32], &code_policy(), T0));
        assert!(u.request_password_reset([2; 32], &code_policy(), T0.plus(60)));
        assert_eq!(
            u.reset_password(&[1; 32], "$x".into(), T0.plus(61)),
            Err(refused())
        );
        u.deactivate();
        assert!(!u.request_password_reset([3; 32], &code_policy(), T0.plus(200)));
        assert_eq!(
            u.reset_password(&[2; 32], "$x".into(), T0.plus(201)),
            Err(refused())
        );
    }
}
