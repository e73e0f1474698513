//! Refresh and logout: the flows that continue and end sessions, and the token response every
//! session-opening flow answers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::audit;
use super::authn::{self, Presented};
use super::error::{unknown_user_as, ApiError};
use super::extract::json_body;
use super::respond::{auth_cookie, clearing_cookie, no_store, BodyErrors, TokenResponse};
use super::AppState;
use crate::actors::messages::{Logout, Refresh, Subject};
use crate::actors::DirectoryError;
use crate::domain::ids::{SessionId, UserId};
use crate::domain::secrets::RefreshToken;
use crate::domain::time::Timestamp;
use crate::domain::tokens::TYP_ACCESS;
use crate::domain::DomainError;

/// `POST /api/auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"refresh_token": "bprt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))]
pub struct RefreshRequest {
    /// `bprt_…`
    pub refresh_token: String,
}

/// `POST /api/auth/logout` body; an empty body counts as `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"everywhere": false}))]
pub struct LogoutRequest {
    /// Revokes this token's family (and so its session).
    pub refresh_token: Option<String>,
    /// With a verifiable access token, revokes every session of the user; `null` counts as
    /// absent (`false`).
    #[serde(default)]
    #[schema(nullable)]
    pub everywhere: bool,
}

/// Signs an access token for a session and builds the token response with its cookie.
pub(super) fn token_response(
    state: &AppState,
    user: UserId,
    subject: &Subject,
    sid: SessionId,
    refresh: &RefreshToken,
    refresh_expires_at: Timestamp,
    now: Timestamp,
) -> HttpResponse {
    let ttl = state.config.tokens.access_ttl_seconds;
    let keyring = state.keyring();
    let claims = keyring.claims(user, subject.tenant, Some(sid), subject.role, now, ttl);
    let access = keyring.sign(&claims, TYP_ACCESS);
    let body = TokenResponse {
        access_token: access.clone(),
        token_type: "bearer",
        expires_in: ttl,
        refresh_token: refresh.encode(),
        refresh_expires_in: now.until(refresh_expires_at),
    };
    no_store(&mut HttpResponse::Ok())
        .cookie(auth_cookie(&access, ttl, state.config.cookie.secure))
        .json(body)
}

#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth", summary = "Refresh Token Endpoint",
    description = "Rotate refresh token and issue a new access+refresh pair. On first use of a valid token: marks old as used, inserts new token in same family. On reuse of a used token: revokes entire family, returns 401. Feature flag REFRESH_ROTATION_ENABLED=False: issues new access token, same refresh token.",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Successful Response", body = TokenResponse, links(
            ("Refresh" = (operation_id = "refresh", description = "Continue with the rotated token.",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
            ("Logout" = (operation_id = "logout", description = "End the session by its rotated token.",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
        )),
        (status = 401, description = "`invalid_refresh_token` or `refresh_token_reused`", body = super::respond::ErrorBody),
        BodyErrors,
    )
)]
pub async fn refresh(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let presented = json_body(&req, payload, true, |f| {
        f.string("refresh_token").map(str::to_string)
    })
    .await?;
    let token = RefreshToken::parse(&presented).ok_or(DomainError::InvalidRefreshToken)?;
    let user = token.user;
    let refreshed = unknown_user_as(
        state.directory.call(user, Refresh { token }).await,
        DomainError::InvalidRefreshToken,
    )?;
    let outcome = match &refreshed {
        Ok(r) => r.grant.outcome.as_str(),
        Err(DomainError::RefreshTokenReused) => {
            audit::alert(&state, &req, Some(user), "refresh_reuse", "session_revoked");
            "reused"
        }
        Err(_) => "invalid",
    };
    crate::metrics::get()
        .refreshes
        .with_label_values(&[outcome])
        .inc();
    let refreshed = refreshed?;
    let grant = &refreshed.grant;
    Ok(token_response(
        &state,
        user,
        &refreshed.subject,
        grant.token.session,
        &grant.token,
        grant.expires_at,
        refreshed.issued_at,
    ))
}

#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth", summary = "Logout",
    description = "Clear the auth cookie and revoke the current access-token session. Best-effort by design: the cookie clear path runs even when the presented token is stale or invalid.",
    // Not `Option<…>`, which would admit a `null` body: `openapi::document` marks it optional.
    request_body(content = LogoutRequest, content_type = "application/json", description = "Optional: an empty body counts as `{}`."),
    responses(
        (status = 204, description = "Successful Response"),
        BodyErrors,
    )
)]
pub async fn logout(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let secure = state.config.cookie.secure;
    let mut res = match logout_inner(&req, payload, &state).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    // Whatever happened, the cookie is cleared: that is how a client stuck on a bad token gets out.
    let _ = res.add_cookie(&clearing_cookie(secure));
    res
}

async fn logout_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(), ApiError> {
    // A field of the wrong type is recorded by `Fields` and answered 422 before this value is used.
    let body = json_body(req, payload, false, |f| {
        let refresh = f.opt_string("refresh_token").flatten().map(str::to_string);
        let everywhere = f.opt_bool("everywhere").unwrap_or(false);
        Some(LogoutRequest {
            refresh_token: refresh,
            everywhere,
        })
    })
    .await?;
    // The access token is read here rather than required: expired or not, a genuine one names
    // the session to end.
    let claims = match authn::presented(req) {
        Presented::Jwt(t) => state.keyring().verify_ignoring_expiry(&t, TYP_ACCESS).ok(),
        _ => None,
    };
    let refresh = body.refresh_token.as_deref().and_then(RefreshToken::parse);
    if let Some(c) = &claims {
        let same_user_refresh = refresh.clone().filter(|r| r.user == c.sub);
        let msg = Logout {
            session: c.sid,
            refresh: same_user_refresh,
            everywhere: body.everywhere,
        };
        best_effort(state.directory.call(c.sub, msg).await)?;
        audit::record(
            state,
            req,
            Some(c.sub),
            "logout",
            if body.everywhere {
                "everywhere"
            } else {
                "session"
            },
        );
    }
    if let Some(r) = refresh.filter(|r| claims.as_ref().is_none_or(|c| c.sub != r.user)) {
        let msg = Logout {
            session: None,
            refresh: Some(r.clone()),
            everywhere: false,
        };
        best_effort(state.directory.call(r.user, msg).await)?;
    }
    Ok(())
}

/// Logout is best-effort: a token of a user that no longer exists revokes nothing.
fn best_effort(r: Result<Result<(), DomainError>, DirectoryError>) -> Result<(), ApiError> {
    unknown_user_as(r, DomainError::InvalidToken).map(drop)
}
