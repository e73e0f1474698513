//! Every failure becomes an HTTP answer here, in one match: FastAPI's body shape with a stable
//! `code`, `WWW-Authenticate: Bearer` on every 401, `Retry-After` on 429 and 503.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::DirectoryError;
use crate::domain::credentials::FieldProblem;
use crate::domain::DomainError;
use crate::hashing::HashPoolError;

/// One segment of a pydantic error location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Loc {
    Key(String),
    Index(usize),
}

/// One entry of a 422 `detail` list, as pydantic v2 writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<Loc>,
    pub msg: String,
}

impl FieldError {
    /// An error at `["body", <path>...]`.
    pub fn body(path: &[&str], kind: &'static str, msg: impl Into<String>) -> Self {
        let mut loc = vec![Loc::Key("body".into())];
        loc.extend(path.iter().map(|p| Loc::Key((*p).to_string())));
        Self {
            kind,
            loc,
            msg: msg.into(),
        }
    }

    pub fn from_problem(field: &str, p: FieldProblem) -> Self {
        Self::body(&[field], p.kind, p.msg)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A domain error answered with another status than its usual one (e.g. a wrong password
    /// on deactivation is 403, a wrong MFA code at the challenge is 401).
    #[error("{1}")]
    WithStatus(StatusCode, DomainError),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("Request headers too large")]
    HeadersTooLarge,
    #[error("The request body was not sent in time")]
    RequestTimeout,
    #[error("Not Found")]
    NotFound,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("Server is overloaded, retry later")]
    Overloaded,
    #[error("Storage is unavailable, retry later")]
    StorageUnavailable,
    #[error("Could not deliver the code, retry later")]
    DeliveryFailed,
    /// An OpenID Connect callback whose `state` names no sign-in in progress.
    #[error("Unknown, used or expired sign-in state")]
    InvalidState,
    /// An OpenID Connect provider could not be reached (its discovery document).
    #[error("The identity provider is unavailable, retry later")]
    ProviderUnavailable,
    #[error("Internal server error")]
    Internal,
}

impl ApiError {
    /// A `429`, whatever carried it.
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            Self::Domain(DomainError::RateLimited { .. })
                | Self::WithStatus(_, DomainError::RateLimited { .. })
        )
    }

    pub fn validation(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Domain(d) | Self::WithStatus(_, d) => d.code(),
            Self::Validation(_) => "validation_error",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Overloaded => "overloaded",
            Self::StorageUnavailable => "storage_unavailable",
            Self::DeliveryFailed => "delivery_failed",
            Self::InvalidState => "invalid_state",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::Internal => "internal_error",
        }
    }
}

fn domain_status(d: &DomainError) -> StatusCode {
    use DomainError as D;
    match d {
        D::NotAuthenticated
        | D::InvalidToken
        | D::TokenExpired
        | D::SessionRevoked
        | D::InvalidCredentials
        | D::InvalidRefreshToken
        | D::RefreshTokenReused
        | D::PasskeyRefused { .. } => StatusCode::UNAUTHORIZED,
        D::SessionRequired | D::AccountDeactivated | D::OriginNotAllowed => StatusCode::FORBIDDEN,
        D::EmailTaken
        | D::PhoneAlreadyVerified
        | D::EmailAlreadyVerified
        | D::MfaAlreadyEnabled
        | D::PasskeyExists
        | D::TooManyPasskeys
        | D::AccountExists
        | D::IdentityTaken
        | D::TooManyIdentities
        | D::LastLoginMethod => StatusCode::CONFLICT,
        D::InvalidCode { .. }
        | D::CodeExpired
        | D::NoPhone
        | D::MfaNotSetUp
        | D::MfaNotEnabled
        | D::InvalidChallenge
        | D::InvalidPasskey
        | D::NoPasskey
        | D::InvalidRedirect
        | D::EmailMissing => StatusCode::BAD_REQUEST,
        D::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        D::UserNotFound | D::SessionNotFound | D::PasskeyNotFound | D::IdentityNotFound => {
            StatusCode::NOT_FOUND
        }
    }
}

/// Seconds a shed client should wait before retrying.
const OVERLOAD_RETRY_AFTER: u64 = 1;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Domain(d) => domain_status(d),
            Self::WithStatus(s, _) => *s,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeliveryFailed | Self::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            Self::InvalidState => StatusCode::BAD_REQUEST,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        let retry_after = match self {
            Self::Domain(DomainError::RateLimited { retry_after })
            | Self::WithStatus(_, DomainError::RateLimited { retry_after }) => {
                Some((*retry_after).max(1))
            }
            Self::Overloaded | Self::StorageUnavailable => Some(OVERLOAD_RETRY_AFTER),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let body = match self {
            Self::Validation(errors) => {
                serde_json::json!({ "detail": errors, "code": self.code() })
            }
            Self::Domain(DomainError::InvalidCode {
                attempts_left: Some(n),
            })
            | Self::WithStatus(
                _,
                DomainError::InvalidCode {
                    attempts_left: Some(n),
                },
            ) => {
                serde_json::json!({ "detail": self.to_string(), "code": self.code(), "attempts_left": n })
            }
            _ => serde_json::json!({ "detail": self.to_string(), "code": self.code() }),
        };
        res.json(body)
    }
}

impl From<HashPoolError> for ApiError {
    fn from(e: HashPoolError) -> Self {
        match e {
            HashPoolError::Overloaded => Self::Overloaded,
            HashPoolError::Failed(msg) => {
                tracing::error!(error = %msg, "password hashing failed");
                Self::Internal
            }
        }
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::UnknownUser => Self::Domain(DomainError::UserNotFound),
            DirectoryError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                Self::StorageUnavailable
            }
            DirectoryError::Unavailable => Self::StorageUnavailable,
            DirectoryError::Delivery(_) => Self::DeliveryFailed,
            DirectoryError::Ceremony(e) => {
                tracing::error!(error = %e, "a WebAuthn ceremony could not start");
                Self::Internal
            }
        }
    }
}

/// A call about a user that a token or a request named: when that user does not exist, the
/// answer is `instead` (what an unknown token or code answers), never a 404 that would tell
/// the caller which users exist.
pub fn unknown_user_as<T>(
    result: Result<Result<T, DomainError>, DirectoryError>,
    instead: DomainError,
) -> Result<Result<T, DomainError>, ApiError> {
    match result {
        Err(DirectoryError::UnknownUser) => Ok(Err(instead)),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body(e: &ApiError) -> serde_json::Value {
        let bytes = e.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_401_says_bearer() {
        for d in [
            DomainError::InvalidToken,
            DomainError::InvalidRefreshToken,
            DomainError::InvalidCredentials,
        ] {
            let r = ApiError::Domain(d).error_response();
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
        }
    }

    #[test]
    fn shapes_follow_fastapi() {
        let e = ApiError::Domain(DomainError::InvalidCredentials);
        assert_eq!(
            body(&e),
            serde_json::json!({"detail": "Incorrect email or password", "code": "invalid_credentials"})
        );
        let v = ApiError::validation(FieldError::body(&["email"], "missing", "Field required"));
        assert_eq!(
            body(&v),
            serde_json::json!({"detail": [{"type": "missing", "loc": ["body", "email"], "msg": "Field required"}], "code": "validation_error"})
        );
        let c = ApiError::Domain(DomainError::InvalidCode {
            attempts_left: Some(3),
        });
        assert_eq!(body(&c)["attempts_left"], 3);
    }

    #[test]
    fn throttles_say_when_to_retry() {
        let r = ApiError::Domain(DomainError::RateLimited { retry_after: 42 }).error_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "42");
        let r = ApiError::Overloaded.error_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
