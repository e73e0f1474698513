//! What can go wrong, in the contract's vocabulary. Each variant has one stable machine code
//! (`code()`), which `api::error` maps to an HTTP status in a single match.

/// A failure decided by the rules (not a bug). Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("Not authenticated")]
    NotAuthenticated,
    #[error("Could not validate credentials")]
    InvalidToken,
    #[error("Token has expired")]
    TokenExpired,
    #[error("Session has been revoked")]
    SessionRevoked,
    #[error("This endpoint requires a session; an API key cannot be used")]
    SessionRequired,
    #[error("Incorrect email or password")]
    InvalidCredentials,
    /// The right password was given for a deactivated account.
    #[error("Account is deactivated")]
    AccountDeactivated,
    #[error("Email already registered")]
    EmailTaken,
    #[error("Invalid refresh token")]
    InvalidRefreshToken,
    #[error("Refresh token reuse detected; the session has been revoked")]
    RefreshTokenReused,
    #[error("Invalid or wrong code")]
    InvalidCode { attempts_left: Option<u32> },
    #[error("Code expired or not requested")]
    CodeExpired,
    #[error("No phone number on the profile")]
    NoPhone,
    #[error("Phone already verified")]
    PhoneAlreadyVerified,
    #[error("Email already verified")]
    EmailAlreadyVerified,
    #[error("Two-factor authentication is not set up")]
    MfaNotSetUp,
    #[error("Two-factor authentication is already enabled")]
    MfaAlreadyEnabled,
    #[error("Two-factor authentication is not enabled")]
    MfaNotEnabled,
    #[error("Too many requests")]
    RateLimited { retry_after: u64 },
    #[error("Origin not allowed")]
    OriginNotAllowed,
    #[error("User not found")]
    UserNotFound,
    /// Not a live session of the caller (another user's looks the same).
    #[error("Session not found")]
    SessionNotFound,
    /// A WebAuthn ceremony that is unknown, already answered or expired.
    #[error("Unknown, used or expired challenge")]
    InvalidChallenge,
    /// A registration credential that failed verification.
    #[error("The passkey could not be verified")]
    InvalidPasskey,
    /// The credential is registered already (to this account or another).
    #[error("This passkey is already registered")]
    PasskeyExists,
    /// The account has as many passkeys as it may have.
    #[error("Too many passkeys on the account")]
    TooManyPasskeys,
    /// A second factor by passkey was asked of an account that has none.
    #[error("No passkey on the account")]
    NoPasskey,
    /// Not a passkey of the caller (another user's looks the same).
    #[error("Passkey not found")]
    PasskeyNotFound,
    /// An assertion that did not verify: unknown credential, wrong signature or challenge, or
    /// a signature counter that went back, the mark of a copied authenticator (`cloned` names
    /// that passkey). The client is told the same either way; the operator is told of a clone.
    #[error("The passkey was not accepted")]
    PasskeyRefused {
        cloned: Option<super::ids::PasskeyId>,
    },
    /// A `redirect_to` outside `oidc.redirect_allowlist`.
    #[error("The redirect target is not allowed")]
    InvalidRedirect,
    /// A first sign-in whose email belongs to an account that cannot be linked by it (one side
    /// did not verify the email): log in with the password and link from there.
    #[error("An account with this email exists; log in and link the provider from there")]
    AccountExists,
    /// The identity is linked to another account.
    #[error("This identity is linked to another account")]
    IdentityTaken,
    /// The account has as many identities as it may have.
    #[error("Too many linked identities on the account")]
    TooManyIdentities,
    /// Not an identity of the caller (another user's looks the same).
    #[error("Identity not found")]
    IdentityNotFound,
    /// Unlinking it would leave no password, passkey or other identity to log in with.
    #[error("This is the account's last way to log in")]
    LastLoginMethod,
    /// The provider gave no usable email, which an account needs.
    #[error("The provider gave no usable email address")]
    EmailMissing,
}

impl DomainError {
    /// The stable machine code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAuthenticated => "not_authenticated",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::SessionRequired => "session_required",
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountDeactivated => "account_deactivated",
            Self::EmailTaken => "email_taken",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidCode { .. } => "invalid_code",
            Self::CodeExpired => "code_expired",
            Self::NoPhone => "no_phone",
            Self::EmailAlreadyVerified => "email_already_verified",
            Self::PhoneAlreadyVerified => "phone_already_verified",
            Self::MfaNotSetUp => "mfa_not_set_up",
            Self::MfaAlreadyEnabled => "mfa_already_enabled",
            Self::MfaNotEnabled => "mfa_not_enabled",
            Self::RateLimited { .. } => "rate_limited",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::UserNotFound
            | Self::SessionNotFound
            | Self::PasskeyNotFound
            | Self::IdentityNotFound => "not_found",
            Self::InvalidChallenge => "invalid_challenge",
            Self::InvalidPasskey => "invalid_passkey",
            Self::PasskeyExists => "passkey_exists",
            Self::TooManyPasskeys => "too_many_passkeys",
            Self::NoPasskey => "no_passkey",
            Self::PasskeyRefused { .. } => "invalid_credentials",
            Self::InvalidRedirect => "invalid_redirect",
            Self::AccountExists => "account_exists",
            Self::IdentityTaken => "identity_taken",
            Self::TooManyIdentities => "too_many_identities",
            Self::LastLoginMethod => "last_login_method",
            Self::EmailMissing => "email_missing",
        }
    }
}
