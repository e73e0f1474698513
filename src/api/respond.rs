//! Response bodies and the headers that go with them: the token response and its cookie, the
//! profile, and `no-store` for anything carrying a secret.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::HttpResponseBuilder;
use serde::Serialize;
use utoipa::ToSchema;

use super::authn::COOKIE_NAME;
use crate::domain::user::UserState;

/// Marks a response that carries a token or key as never to be cached.
pub fn no_store(res: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
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
    pub mfa_enabled: bool,
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
            mfa_enabled: u.mfa_enabled(),
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
