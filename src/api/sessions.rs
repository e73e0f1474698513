//! Sessions: refresh and logout (the flows that continue and end them), the caller's list of
//! them and the revocations from it, and the token response every session-opening flow answers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::authn::{self, authenticate, Caller, Presented, Via};
use super::error::{unknown_user_as, ApiError};
use super::extract::json_body;
use super::respond::{auth_cookie, clearing_cookie, no_store, BodyErrors, TokenResponse};
use super::AppState;
use crate::actors::messages::{EndOtherSessions, EndSession, Logout, Refresh, Subject};
use crate::actors::DirectoryError;
use crate::clock;
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
    let origin = audit::origin(&state, &req, None);
    let msg = Refresh { token, origin };
    let (refreshed, pending) = match state.directory.call_pending(user, msg).await {
        Ok(((verdict, _), pending)) => (verdict, Some(pending)),
        Err(DirectoryError::UnknownUser) => (Err(DomainError::InvalidRefreshToken), None),
        Err(e) => return Err(e.into()),
    };
    let outcome = match &refreshed {
        Ok(r) => r.grant.outcome.as_str(),
        Err(DomainError::RefreshTokenReused) => "reused",
        Err(_) => "invalid",
    };
    crate::metrics::get()
        .refreshes
        .with_label_values(&[outcome])
        .inc();
    // Signed while the rotation is being made durable; sent only once it is.
    let answer = refreshed.map(|refreshed| {
        let grant = &refreshed.grant;
        token_response(
            &state,
            user,
            &refreshed.subject,
            grant.token.session,
            &grant.token,
            grant.expires_at,
            refreshed.issued_at,
        )
    });
    if let Some(pending) = pending {
        pending.durable().await?;
    }
    Ok(answer?)
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
            origin: audit::origin(state, req, c.sid),
        };
        best_effort(state.directory.call(c.sub, msg).await)?;
    }
    if let Some(r) = refresh.filter(|r| claims.as_ref().is_none_or(|c| c.sub != r.user)) {
        let msg = Logout {
            session: None,
            refresh: Some(r.clone()),
            everywhere: false,
            origin: audit::origin(state, req, None),
        };
        best_effort(state.directory.call(r.user, msg).await)?;
    }
    Ok(())
}

/// Logout is best-effort: a token of a user that no longer exists revokes nothing.
fn best_effort(r: Result<Result<(), DomainError>, DirectoryError>) -> Result<(), ApiError> {
    unknown_user_as(r, DomainError::InvalidToken).map(drop)
}

/// One live session, as `GET /api/auth/sessions` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: String,
    /// The login or the last refresh.
    pub last_used_at: String,
    /// When it ends unless refreshed.
    pub expires_at: String,
    /// As the client sent it at login, at most 256 characters.
    pub user_agent: Option<String>,
    /// The client address at login.
    pub ip: Option<String>,
    /// Whether the login showed a second factor.
    pub mfa: bool,
    /// Whether this is the session of the request's own token.
    pub current: bool,
}

/// `GET /api/auth/sessions` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Newest first.
    pub sessions: Vec<SessionInfo>,
}

/// The caller's session: these endpoints are about the caller's logins, so an API key cannot
/// use them (403 `session_required`).
fn session_caller(req: &HttpRequest, state: &AppState) -> Result<(Caller, SessionId), ApiError> {
    let caller = authenticate(req, state, false)?;
    match caller.via {
        Via::Session { sid, .. } => Ok((caller, sid)),
        Via::ApiKey => Err(DomainError::SessionRequired.into()),
    }
}

#[utoipa::path(
    get, path = "/api/auth/sessions", tag = "sessions", summary = "List Sessions",
    description = "The caller's live sessions, newest first: where and when each logged in, its last use, and which one is the caller's.",
    responses(
        (status = 200, description = "Successful Response", body = SessionList),
        (status = 401, description = "Not authenticated", body = super::respond::ErrorBody),
        (status = 403, description = "`session_required` (an API key)", body = super::respond::ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (caller, sid) = session_caller(&req, &state)?;
    let sessions = caller
        .user
        .live_sessions(clock::now())
        .into_iter()
        .map(|s| SessionInfo {
            id: s.id.to_string(),
            created_at: s.created_at.rfc3339(),
            last_used_at: s.last_used_at.rfc3339(),
            expires_at: s.expires_at().rfc3339(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.map(|ip| ip.to_string()),
            mfa: s.method.is_multi_factor(),
            current: s.id == sid,
        })
        .collect();
    Ok(no_store(&mut HttpResponse::Ok()).json(SessionList { sessions }))
}

#[utoipa::path(
    delete, path = "/api/auth/sessions/{id}", tag = "sessions", summary = "Revoke Session",
    description = "End one of the caller's sessions: its access tokens and its refresh family stop working at once.",
    params(("id" = String, Path, description = "A session id from the list")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = super::respond::ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = super::respond::ErrorBody),
        (status = 404, description = "`not_found`: not a live session of the caller", body = super::respond::ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (caller, _) = session_caller(&req, &state)?;
    // An id that does not parse is no session of the caller's either.
    let session: SessionId = path.parse().map_err(|_| DomainError::SessionNotFound)?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, EndSession { session, origin })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/auth/sessions/revoke-others", tag = "sessions", summary = "Revoke Other Sessions",
    description = "End every session of the caller but the one making the request.",
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = super::respond::ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = super::respond::ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn revoke_others(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (caller, current) = session_caller(&req, &state)?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, EndOtherSessions { current, origin })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}
