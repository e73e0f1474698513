//! Two-factor rules of one user: TOTP enrolment, disabling it, and the login challenge (which a
//! passkey may answer too: `passkeys.rs`).

use super::{Status, UserState};
use crate::domain::error::DomainError;
use crate::domain::ids::TokenId;
use crate::domain::mfa::{self, MfaState};
use crate::domain::time::Timestamp;

impl UserState {
    /// Whether a login needs a second factor: TOTP is enabled, or the user has a passkey.
    pub fn mfa_enabled(&self) -> bool {
        self.mfa.enabled || !self.passkeys.is_empty()
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
    /// A deactivated account gets no challenge: the right password there is still a 403.
    pub fn mfa_challenge(&mut self, ttl: u64, now: Timestamp) -> Result<TokenId, DomainError> {
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        Ok(self.mfa.open_challenge(ttl, now))
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
        if !self.mfa_enabled() || !self.mfa.challenge_open(jti, now) {
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
