//! The account's address: verifying it, and changing it to a new one that is verified by a
//! code sent there. The new address is claimed only when that code is confirmed (by the store,
//! atomically with the snapshot), so two users racing for one address cannot both get it.

use super::UserState;
use crate::domain::codes::CodePolicy;
use crate::domain::credentials::Email;
use crate::domain::error::DomainError;
use crate::domain::time::Timestamp;

/// What a confirmed change moved: the old address (for its notification) and the index keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMoved {
    pub old_email: String,
    pub old_key: String,
    pub new_key: String,
}

impl UserState {
    /// Where a verification code goes, after the request's rules are checked.
    pub fn request_email_code(
        &mut self,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<String, DomainError> {
        if self.email_verified {
            return Err(DomainError::EmailAlreadyVerified);
        }
        self.email_code.issue(hash, policy, now)?;
        Ok(self.email.clone())
    }

    /// Like the phone's: once verified, no code is pending, so a confirm is `code_expired`.
    pub fn confirm_email(&mut self, hash: &[u8; 32], now: Timestamp) -> Result<(), DomainError> {
        if self.email_verified {
            return Err(DomainError::CodeExpired);
        }
        self.email_code.confirm(hash, now)?;
        self.email_verified = true;
        Ok(())
    }

    /// Starts a change to `new` (the caller checked the password and that no other account
    /// has it); returns where the code goes. A newer request voids the older one's code.
    pub fn request_email_change(
        &mut self,
        new: &Email,
        hash: [u8; 32],
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<String, DomainError> {
        if new.key() == self.email_key {
            return Err(DomainError::EmailTaken);
        }
        self.email_change.code.issue(hash, policy, now)?;
        self.email_change.new_email = Some(new.as_str().to_string());
        Ok(new.as_str().to_string())
    }

    /// Confirms the pending change: the address is replaced and counts as verified. The caller
    /// must claim `new_key` in the email index in the same write.
    pub fn confirm_email_change(
        &mut self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<EmailMoved, DomainError> {
        let new = self
            .email_change
            .new_email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or(DomainError::CodeExpired)?;
        let confirmed = self.email_change.code.confirm(hash, now);
        if self.email_change.code.pending.is_none() {
            self.email_change.new_email = None;
        }
        confirmed?;
        let old_email = std::mem::replace(&mut self.email, new.as_str().to_string());
        let old_key = std::mem::replace(&mut self.email_key, new.key().to_string());
        self.email_verified = true;
        self.email_code.void();
        // A reset code went to the old address, which no longer speaks for the account.
        self.reset_code.void();
        Ok(EmailMoved {
            old_email,
            old_key,
            new_key: new.key().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn verification_is_once() {
        let mut u = user();
        assert!(!u.email_verified);
        assert_eq!(
            u.request_email_code([1; 32], &code_policy(), T0).unwrap(),
            "Ada@Example.com"
        );
        assert!(matches!(
            u.confirm_email(&[2; 32], T0),
            Err(DomainError::InvalidCode { .. })
        ));
        u.confirm_email(&[1; 32], T0).unwrap();
        assert!(u.email_verified);
        assert_eq!(
            u.request_email_code([3; 32], &code_policy(), T0.plus(100)),
            Err(DomainError::EmailAlreadyVerified)
        );
        assert_eq!(u.confirm_email(&[1; 32], T0), Err(DomainError::CodeExpired));
    }

    #[test]
    fn a_change_moves_the_address_only_with_the_code() {
        let mut u = user();
        let own = Email::parse("ADA@example.com").unwrap();
        assert_eq!(
            u.request_email_change(&own, [1; 32], &code_policy(), T0),
            Err(DomainError::EmailTaken)
        );
        let new = Email::parse("Lovelace@Example.org").unwrap();
        assert!(u.request_password_reset([5; 32], &code_policy(), T0));
        assert_eq!(
            u.request_email_change(&new, [1; 32], &code_policy(), T0)
                .unwrap(),
            "Lovelace@Example.org"
        );
        assert!(matches!(
            u.confirm_email_change(&[2; 32], T0),
            Err(DomainError::InvalidCode { .. })
        ));
        assert_eq!(u.email, "Ada@Example.com", "nothing moved yet");
        let moved = u.confirm_email_change(&[1; 32], T0.plus(1)).unwrap();
        assert_eq!(
            moved,
            EmailMoved {
                old_email: "Ada@Example.com".into(),
                old_key: "ada@example.com".into(),
                new_key: "lovelace@example.org".into(),
            }
        );
        assert_eq!(u.email, "Lovelace@Example.org");
        assert!(u.email_verified);
        assert!(
            u.reset_password(&[5; 32], "$x".into(), T0.plus(2)).is_err(),
            "a reset code sent to the old address is void"
        );
        assert_eq!(
            u.confirm_email_change(&[1; 32], T0.plus(2)),
            Err(DomainError::CodeExpired),
            "single use"
        );
    }
}
