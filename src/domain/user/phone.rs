//! Phone verification: a code to the profile's phone, confirmed once.

use super::UserState;
use crate::domain::codes::CodePolicy;
use crate::domain::error::DomainError;
use crate::domain::time::Timestamp;

impl UserState {
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

    /// Once the phone is verified no code is pending any more: a confirm then is
    /// `code_expired`, like any code that is no longer good.
    pub fn confirm_phone(&mut self, hash: &[u8; 32], now: Timestamp) -> Result<(), DomainError> {
        if self.phone_verified {
            return Err(DomainError::CodeExpired);
        }
        self.phone_code.confirm(hash, now)?;
        self.phone_verified = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::ProfilePatch;
    use super::*;

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
}
