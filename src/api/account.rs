//! The signed-in user's account: entitlements, API key, profile changes, deactivation.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit;
use super::authn::{authenticate, authenticate_for_secret};
use super::error::ApiError;
use super::extract::json_body;
use super::passwords;
use super::respond::{clearing_cookie, no_store, BodyErrors, ErrorBody, Profile};
use super::AppState;
use crate::actors::messages::{Deactivate, GetApiKey, KeyIssued, PatchProfile, RotateApiKey};
use crate::domain::credentials::{parse_full_name, parse_phone};
use crate::domain::entitlements::{if_none_match_hits, Entitlements};
use crate::domain::user::ProfilePatch;

#[utoipa::path(
    get, path = "/api/auth/me/entitlements", tag = "auth", summary = "Me Entitlements",
    description = "Return the current user's effective access envelope. Accepts an API key. Answers 304 to a matching If-None-Match.",
    responses(
        (status = 200, description = "Successful Response", body = super::respond::EntitlementsSchema),
        (status = 304, description = "Not modified (If-None-Match matched the ETag)"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []))
)]
pub async fn entitlements(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, true)?;
    let user = caller.user.as_ref();
    let body = Entitlements::derive(user, state.config.plans.get(&user.tenant.plan));
    let etag = body.etag();
    let matched = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match_hits(v, &etag));
    let mut res = if matched {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::VARY, "Authorization, Cookie, X-API-Key"));
    Ok(if matched {
        res.finish()
    } else {
        res.json(body)
    })
}

/// API key metadata; `key` holds the full key only in the response that created it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: String,
    /// The first 12 characters, e.g. `bpk_AbCdEfGh`.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub key: Option<String>,
}

fn key_response(issued: KeyIssued) -> HttpResponse {
    let k = issued.key;
    no_store(&mut HttpResponse::Ok()).json(ApiKeyResponse {
        id: k.id.to_string(),
        prefix: k.prefix,
        created_at: k.created_at.rfc3339(),
        last_used_at: k.last_used_at.map(|t| t.rfc3339()),
        key: issued.secret,
    })
}

#[utoipa::path(
    get, path = "/api/auth/api-key", tag = "auth", summary = "Get Api Key",
    description = "Return the current user's API key metadata. Auto-creates the key if absent. Requires a session.",
    responses(
        (status = 200, description = "Successful Response", body = ApiKeyResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key cannot manage API keys) or `origin_not_allowed` (a cookie-authenticated request with `Sec-Fetch-Site: cross-site`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn get_api_key(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate_for_secret(&req, &state)?;
    let issued = state.directory.call(caller.user.id, GetApiKey).await??;
    Ok(key_response(issued))
}

#[utoipa::path(
    post, path = "/api/auth/api-key/rotate", tag = "auth", summary = "Rotate Api Key",
    description = "Rotate (regenerate) the current user's API key. The old key stops working at once.",
    responses(
        (status = 200, description = "Successful Response", body = ApiKeyResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required`, or `origin_not_allowed` (a cookie-authenticated request from a foreign `Origin` or with `Sec-Fetch-Site: cross-site`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn rotate_api_key(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate_for_secret(&req, &state)?;
    let origin = audit::caller_origin(&state, &req, &caller);
    let issued = state
        .directory
        .call(caller.user.id, RotateApiKey { origin })
        .await??;
    Ok(key_response(issued))
}

/// `PATCH /api/auth/me` body: absent fields are unchanged, `null` clears.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"full_name": "Ada Lovelace", "phone": "+447700900123"}))]
pub struct ProfileUpdate {
    /// At most 100 characters.
    pub full_name: Option<String>,
    /// E.164; a number different from the current one is unverified.
    pub phone: Option<String>,
}

#[utoipa::path(
    patch, path = "/api/auth/me", tag = "auth", summary = "Update Me",
    description = "Change the name or phone. A phone different from the current one is unverified and voids a pending code.",
    request_body(content = ProfileUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated profile", body = Profile),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn patch_me(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let patch = json_body(&req, payload, true, |f| {
        let full_name = if f.has("full_name") {
            let parsed = f
                .opt_string("full_name")
                .map(|n| n.map(parse_full_name).transpose());
            Some(
                parsed
                    .and_then(|r| f.check("full_name", r))?
                    .filter(|n| !n.is_empty()),
            )
        } else {
            None
        };
        let phone = if f.has("phone") {
            let parsed = f
                .opt_string("phone")
                .map(|p| p.map(parse_phone).transpose());
            Some(parsed.and_then(|r| f.check("phone", r))?)
        } else {
            None
        };
        Some(ProfilePatch { full_name, phone })
    })
    .await?;
    let (result, user) = state
        .directory
        .call_with_state(caller.user.id, PatchProfile(patch))
        .await?;
    result?;
    Ok(HttpResponse::Ok().json(Profile::from(user.as_ref())))
}

/// `POST /api/auth/deactivate` body.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"password": "correct horse battery staple"}))]
pub struct DeactivateRequest {
    pub password: String,
}

#[utoipa::path(
    post, path = "/api/auth/deactivate", tag = "auth", summary = "Deactivate",
    description = "Deactivate the account: every session is revoked and the API key disabled until reactivation.",
    request_body(content = DeactivateRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Deactivated; the auth cookie is cleared"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Wrong password (`invalid_credentials`), `session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many wrong passwords for the account, or too many checks of it in flight (`rate_limited`)", body = ErrorBody),
        (status = 503, description = "Overloaded", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn deactivate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let password = json_body(&req, payload, true, |f| {
        f.string("password").map(str::to_string)
    })
    .await?;
    passwords::confirm_own(&state, &req, &caller.user, &password, "deactivation").await?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, Deactivate { origin })
        .await??;
    Ok(HttpResponse::NoContent()
        .cookie(clearing_cookie(state.config.cookie.secure))
        .finish())
}

#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth", summary = "Me",
    description = "Return the currently authenticated user's profile. Accepts an API key.",
    responses(
        (status = 200, description = "Successful Response", body = Profile),
        (status = 401, description = "`not_authenticated`, `invalid_token`, `token_expired` or `session_revoked`", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []))
)]
pub async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, true)?;
    Ok(HttpResponse::Ok().json(Profile::from(caller.user.as_ref())))
}
