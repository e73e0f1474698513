//! Deactivation and reactivation: the account's status and what follows from it.

use super::{Status, UserState};
use crate::domain::codes::CodePolicy;
use crate::domain::error::DomainError;
use crate::domain::time::Timestamp;

impl UserState {
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
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn deactivation_and_reactivation() {
        let mut u = user();
        u.open_session(
            &crate::domain::secrets::ServerKey::from_bytes([1; 32]),
            &policy(),
            LOGIN,
            T0,
        )
        .unwrap();
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
