//! Response bodies and the headers that go with them: the token response and its cookie, the
//! profile, and `no-store` for anything carrying a secret.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use utoipa::ToSchema;

use super::authn::COOKIE_NAME;
use super::error::ApiError;
use crate::domain::user::UserState;

const NO_STORE: [(header::HeaderName, &str); 2] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::PRAGMA, "no-cache"),
];

/// Marks a response that carries a token or key as never to be cached.
pub fn no_store(res: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    for (name, value) in NO_STORE {
        res.insert_header((name, value));
    }
    res
}

/// The answer of a handler whose every response, errors included, must not be cached (MFA
/// answers carry secrets or describe them).
pub fn never_cached(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    let mut res = result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
    for (name, value) in NO_STORE {
        res.headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    res
}

/// `bp_token=<token>; HttpOnly; Path=/; SameSite=Lax; Max-Age=<ttl>[; Secure]`.
pub fn auth_cookie(token: &str, max_age: u64, secure: bool) -> Cookie<'static> {
    Cookie::build(COOKIE_NAME, token.to_string())
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .secure(secure)
        .finish()
}

/// The cookie that clears `bp_token` (same attributes, `Max-Age=0`).
pub fn clearing_cookie(secure: bool) -> Cookie<'static> {
    auth_cookie("", 0, secure)
}

/// Login, refresh and MFA challenge answer this.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

/// The user's profile, as register and me answer it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Profile {
    pub id: String,
    /// As registered; compared lowercased.
    pub email: String,
    pub full_name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub phone_verified: bool,
    /// Whether a code sent to `email` was confirmed.
    pub email_verified: bool,
    pub mfa_enabled: bool,
    /// Whether the account has a password (false for an account a provider created, until
    /// one is set through `password/forgot`).
    pub has_password: bool,
    /// `active` or `deactivated`.
    pub status: &'static str,
    pub tenant_id: String,
    /// `owner`, `admin` or `member`.
    pub role: &'static str,
    pub plan: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<&UserState> for Profile {
    fn from(u: &UserState) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            phone: u.phone.clone(),
            phone_verified: u.phone_verified,
            email_verified: u.email_verified,
            mfa_enabled: u.mfa_enabled(),
            has_password: u.has_password(),
            status: u.status.as_str(),
            tenant_id: u.tenant.id.to_string(),
            role: u.role.as_str(),
            plan: u.tenant.plan.clone(),
            created_at: u.created_at.rfc3339(),
        }
    }
}

/// The shape of every error but a 422.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    /// Stable machine code, e.g. `invalid_credentials`.
    pub code: String,
}

/// One entry of a 422 list (pydantic v2).
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationIssue {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Vec<serde_json::Value>)]
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
}

/// A 422 body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    pub detail: Vec<ValidationIssue>,
    /// Always `validation_error`.
    pub code: String,
}

/// The answers of every endpoint that reads a body, stated once for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors {
    #[response(status = 413, description = "Body over 16 KiB (`payload_too_large`)")]
    TooLarge(ErrorBody),
    #[response(status = 422, description = "Validation Error")]
    Invalid(ValidationErrorBody),
}

/// The entitlements answer, as the OpenAPI document describes it (the value itself is
/// `domain::entitlements::Entitlements`, which knows nothing of OpenAPI).
#[derive(Debug, ToSchema)]
#[schema(as = Entitlements)]
#[allow(dead_code)]
pub struct EntitlementsSchema {
    pub user_id: String,
    pub tenant_id: String,
    pub plan: String,
    pub role: String,
    pub status: String,
    /// Sorted, without duplicates.
    pub features: Vec<String>,
    pub limits: std::collections::BTreeMap<String, i64>,
    pub phone_verified: bool,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub api_key_active: bool,
}
