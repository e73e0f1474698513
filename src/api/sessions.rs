//! Register, login, refresh, logout and me: the flows that open, continue and end sessions.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::authn::{self, Presented};
use super::error::{ApiError, FieldError};
use super::extract::{form_fields, json_body, read_body, Fields};
use super::respond::{auth_cookie, clearing_cookie, no_store, Profile, TokenResponse};
use super::AppState;
use crate::actors::messages::{BeginMfa, Logout, OpenSession, Refresh, Subject};
use crate::clock;
use crate::domain::credentials::{parse_full_name, parse_phone, Email, NewPassword};
use crate::domain::ids::{SessionId, UserId};
use crate::domain::secrets::RefreshToken;
use crate::domain::time::Timestamp;
use crate::domain::tokens::{TYP_ACCESS, TYP_MFA_PENDING};
use crate::domain::user::{NewUser, Status, UserState};
use crate::domain::DomainError;

/// `POST /api/auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// A valid address, at most 254 characters; compared case-insensitively.
    pub email: String,
    /// `password.min_length` (8) to 128 characters, hashed exactly as sent; not one of the
    /// 10,000 most common passwords, not the email.
    pub password: String,
    /// At most 100 characters.
    pub full_name: Option<String>,
    /// E.164: `+` and 7 to 15 digits.
    pub phone: Option<String>,
}

/// `POST /api/auth/token` form (OAuth2 password flow).
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    /// The email.
    pub username: String,
    pub password: String,
    /// If present, must be `password`.
    pub grant_type: Option<String>,
    /// Accepted and ignored.
    pub scope: Option<String>,
    /// Accepted and ignored.
    pub client_id: Option<String>,
    /// Accepted and ignored.
    pub client_secret: Option<String>,
}

/// `POST /api/auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// `bprt_…`
    pub refresh_token: String,
}

/// `POST /api/auth/logout` body; an empty body counts as `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// Revokes this token's family (and so its session).
    pub refresh_token: Option<String>,
    /// With a verifiable access token, revokes every session of the user.
    #[serde(default)]
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
    post, path = "/api/auth/register", tag = "auth", summary = "Register",
    description = "Create a new public user account in an isolated Free tenant.",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Successful Response", body = Profile),
        (status = 409, description = "Email already registered (`email_taken`)", body = super::respond::ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = super::respond::ErrorBody),
        (status = 422, description = "Validation Error", body = super::respond::ValidationErrorBody),
        (status = 429, description = "Too many registrations from this client", body = super::respond::ErrorBody),
        (status = 503, description = "Overloaded", body = super::respond::ErrorBody),
    )
)]
pub async fn register(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let min_len = state.config.password.min_length;
    let new = json_body(&req, payload, true, |f: &mut Fields<'_>| {
        let email = f
            .string("email")
            .and_then(|e| f.check("email", Email::parse(e)));
        let password = f
            .string("password")
            .and_then(|p| f.check("password", NewPassword::parse(p, min_len, email.as_ref())));
        let full_name = f
            .opt_string("full_name")
            .map(|n| n.map(parse_full_name).transpose());
        let full_name = full_name.and_then(|r| f.check("full_name", r));
        let phone = f
            .opt_string("phone")
            .map(|p| p.map(parse_phone).transpose());
        let phone = phone.and_then(|r| f.check("phone", r));
        Some((email?, password?, full_name?, phone?))
    })
    .await?;
    let (email, password, full_name, phone) = new;
    state
        .throttle
        .registration(state.throttle.client_ip(&req))?;
    let password_hash = state.hashes.hash(password.expose()).await?;
    let user = UserState::register(
        NewUser {
            email,
            full_name: full_name.filter(|n| !n.is_empty()),
            phone,
            password_hash,
        },
        clock::now(),
    );
    let created = state.directory.register(user).await??;
    audit::record(&state, &req, Some(created.id), "register", "created");
    Ok(HttpResponse::Created().json(Profile::from(created.as_ref())))
}

fn login_outcome(outcome: &str) {
    crate::metrics::get()
        .logins
        .with_label_values(&[outcome])
        .inc();
}

/// The form's fields, with FastAPI's answers for missing ones.
fn login_fields(form: &[(String, String)]) -> Result<(String, String), ApiError> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut errors = Vec::new();
    let mut required = |name: &str| match get(name) {
        Some(v) if !v.is_empty() => Some(v.to_string()),
        _ => {
            errors.push(FieldError::body(&[name], "missing", "Field required"));
            None
        }
    };
    let username = required("username");
    let password = required("password");
    if let Some(gt) = get("grant_type") {
        if gt != "password" {
            errors.push(FieldError::body(
                &["grant_type"],
                "string_pattern_mismatch",
                "String should match pattern '^password$'",
            ));
        }
    }
    match (username, password) {
        (Some(u), Some(p)) if errors.is_empty() => Ok((u, p)),
        _ => Err(ApiError::Validation(errors)),
    }
}

#[utoipa::path(
    post, path = "/api/auth/token", tag = "auth", summary = "Login",
    description = "OAuth2 password flow — sets an httpOnly bp_token cookie and also returns the token in the body for backwards compatibility. If the user has any verified MFA method, returns an mfa-pending token instead of a full access token; the frontend must then call POST /api/auth/mfa/challenge with the code.",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Successful Response: the token response, or an MFA-pending token when MFA is enabled", body = LoginResponse),
        (status = 401, description = "Unknown email or wrong password (`invalid_credentials`)", body = super::respond::ErrorBody),
        (status = 403, description = "Account deactivated (`account_deactivated`)", body = super::respond::ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = super::respond::ErrorBody),
        (status = 422, description = "Validation Error", body = super::respond::ValidationErrorBody),
        (status = 429, description = "Too many failures (`rate_limited`)", body = super::respond::ErrorBody),
        (status = 503, description = "Overloaded", body = super::respond::ErrorBody),
    )
)]
pub async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload).await?;
    let (username, password) = login_fields(&form_fields(&req, &body))?;
    let now = clock::now();
    let ip = state.throttle.client_ip(&req);
    let account = username.to_lowercase();
    state
        .throttle
        .login_allowed(&account, ip, now)
        .inspect_err(|_| login_outcome("rate_limited"))?;
    // A password longer than registration allows can never match: refuse it without hashing.
    if password.chars().count() > NewPassword::MAX_LEN {
        state.throttle.login_failed(&account, ip, now);
        login_outcome("invalid_credentials");
        return Err(DomainError::InvalidCredentials.into());
    }
    let user = match Email::parse(&username) {
        Ok(email) => match state.directory.user_by_email(email.key())? {
            Some(id) => state.directory.view(id)?,
            None => None,
        },
        Err(_) => None,
    };
    // Unknown users are checked against a dummy hash: the same cost and the same answer.
    let phc = user
        .as_ref()
        .map(|u| Arc::<str>::from(u.password_hash.as_str()));
    let matched = state.hashes.verify(&password, phc).await?;
    let user = match user {
        Some(u) if matched => u,
        other => {
            state.throttle.login_failed(&account, ip, now);
            audit::record(
                &state,
                &req,
                other.map(|u| u.id),
                "login",
                "invalid_credentials",
            );
            login_outcome("invalid_credentials");
            return Err(DomainError::InvalidCredentials.into());
        }
    };
    state.throttle.login_succeeded(&account);
    if user.status != Status::Active {
        login_outcome("account_deactivated");
        return Err(DomainError::AccountDeactivated.into());
    }
    if user.mfa_enabled() {
        login_outcome("mfa_required");
        return mfa_pending(&state, &req, user.id).await;
    }
    let opened = state.directory.call(user.id, OpenSession).await??;
    login_outcome("success");
    audit::record(&state, &req, Some(user.id), "login", "success");
    Ok(token_response(
        &state,
        user.id,
        &opened.subject,
        opened.session,
        &opened.refresh,
        opened.refresh_expires_at,
        opened.issued_at,
    ))
}

/// What a right password answers: tokens, or an MFA-pending token (documentation only).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LoginResponse {
    Tokens(TokenResponse),
    MfaPending(MfaPendingResponse),
}

/// The answer to a right password when MFA is enabled: a token only the challenge accepts.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaPendingResponse {
    pub access_token: String,
    /// Always `mfa_pending`.
    pub token_type: &'static str,
    pub mfa_required: bool,
    pub expires_in: u64,
}

async fn mfa_pending(
    state: &AppState,
    req: &HttpRequest,
    user: UserId,
) -> Result<HttpResponse, ApiError> {
    let ttl = state.config.tokens.mfa_pending_ttl_seconds;
    let (jti, subject) = state.directory.call(user, BeginMfa { ttl }).await??;
    let keyring = state.keyring();
    let mut claims = keyring.claims(user, subject.tenant, None, subject.role, clock::now(), ttl);
    claims.jti = jti;
    audit::record(state, req, Some(user), "login", "mfa_required");
    Ok(no_store(&mut HttpResponse::Ok()).json(MfaPendingResponse {
        access_token: keyring.sign(&claims, TYP_MFA_PENDING),
        token_type: "mfa_pending",
        mfa_required: true,
        expires_in: ttl,
    }))
}

#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth", summary = "Refresh Token Endpoint",
    description = "Rotate refresh token and issue a new access+refresh pair. On first use of a valid token: marks old as used, inserts new token in same family. On reuse of a used token: revokes entire family, returns 401. Feature flag REFRESH_ROTATION_ENABLED=False: issues new access token, same refresh token.",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Successful Response", body = TokenResponse),
        (status = 401, description = "`invalid_refresh_token` or `refresh_token_reused`", body = super::respond::ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = super::respond::ErrorBody),
        (status = 422, description = "Validation Error", body = super::respond::ValidationErrorBody),
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
    let refreshed = match state.directory.call(user, Refresh { token }).await {
        Err(crate::actors::CallError::UnknownUser) => {
            return Err(DomainError::InvalidRefreshToken.into())
        }
        other => other?,
    };
    let outcome = match &refreshed {
        Ok(r) if r.grant.rotated => "rotated",
        Ok(_) if state.config.refresh.rotation_enabled => "grace_replay",
        Ok(_) => "kept",
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
    request_body(content = LogoutRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Successful Response"),
        (status = 413, description = "Body over 16 KiB", body = super::respond::ErrorBody),
        (status = 422, description = "Validation Error", body = super::respond::ValidationErrorBody),
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
        ignore_unknown(state.directory.call(c.sub, msg).await)?;
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
        ignore_unknown(state.directory.call(r.user, msg).await)?;
    }
    Ok(())
}

/// Logout is best-effort: a token of a user that no longer exists revokes nothing.
fn ignore_unknown(
    r: Result<Result<(), DomainError>, crate::actors::CallError>,
) -> Result<(), ApiError> {
    match r {
        Ok(_) | Err(crate::actors::CallError::UnknownUser) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth", summary = "Me",
    description = "Return the currently authenticated user's profile. Accepts an API key.",
    responses(
        (status = 200, description = "Successful Response", body = Profile),
        (status = 401, description = "`not_authenticated`, `invalid_token`, `token_expired` or `session_revoked`", body = super::respond::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []))
)]
pub async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = authn::authenticate(&req, &state, true)?;
    Ok(HttpResponse::Ok().json(Profile::from(caller.user.as_ref())))
}
