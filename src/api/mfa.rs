//! Two-factor authentication: TOTP enrolment and the login challenge.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit;
use super::authn::{authenticate, authenticate_for_secret, presented, Presented};
use super::error::{unknown_user_as, ApiError};
use super::extract::json_body;
use super::respond::{never_cached, no_store, BodyErrors, ErrorBody, TokenResponse};
use super::sessions::token_response;
use super::AppState;
use crate::actors::messages::{AnswerMfa, MfaDisable, MfaSetup, MfaVerify};
use crate::clock;
use crate::domain::tokens::TYP_MFA_PENDING;
use crate::domain::DomainError;

/// `POST /api/auth/mfa/totp/setup` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// The shared secret, base32 (160 bits).
    pub secret: String,
    /// `otpauth://totp/BlitzPulse:<email>?secret=…&issuer=BlitzPulse…`, for a QR code.
    pub otpauth_url: String,
}

/// `POST /api/auth/mfa/totp/verify` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnabled {
    pub mfa_enabled: bool,
    /// Ten single-use codes, shown only here.
    pub recovery_codes: Vec<String>,
}

/// A TOTP code.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct TotpCode {
    /// Six digits from the authenticator.
    pub code: String,
}

/// `POST /api/auth/mfa/challenge` body: one of the two.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct ChallengeAnswer {
    pub code: Option<String>,
    pub recovery_code: Option<String>,
}

#[utoipa::path(
    post, path = "/api/auth/mfa/totp/setup", tag = "mfa", summary = "Totp Setup",
    description = "Start TOTP enrolment: a new secret (RFC 6238, SHA-1, 6 digits, 30 s). Setting up again replaces a secret not yet verified.",
    responses(
        (status = 200, description = "The secret, shown once", body = TotpSetup),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required`, or `origin_not_allowed` (a cookie-authenticated request from a foreign `Origin` or with `Sec-Fetch-Site: cross-site`)", body = ErrorBody),
        (status = 409, description = "Already enabled (`mfa_already_enabled`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn totp_setup(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    never_cached(totp_setup_inner(req, state).await)
}

async fn totp_setup_inner(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate_for_secret(&req, &state)?;
    let enrolment = state.directory.call(caller.user.id, MfaSetup).await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(TotpSetup {
        secret: enrolment.secret_base32,
        otpauth_url: enrolment.otpauth_url,
    }))
}

#[utoipa::path(
    post, path = "/api/auth/mfa/totp/verify", tag = "mfa", summary = "Totp Verify",
    description = "Finish enrolment with a current code; answers ten recovery codes, shown once.",
    request_body(content = TotpCode, content_type = "application/json"),
    responses(
        (status = 200, description = "MFA enabled", body = TotpEnabled),
        (status = 400, description = "`invalid_code` or `mfa_not_set_up`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required`, or `origin_not_allowed` (a cookie-authenticated request from a foreign `Origin` or with `Sec-Fetch-Site: cross-site`)", body = ErrorBody),
        (status = 409, description = "Already enabled (`mfa_already_enabled`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many wrong codes for the account (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn totp_verify(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    never_cached(totp_verify_inner(req, payload, state).await)
}

async fn totp_verify_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate_for_secret(&req, &state)?;
    let code = json_body(&req, payload, true, |f| {
        f.string("code").map(str::to_string)
    })
    .await?;
    let origin = audit::caller_origin(&state, &req, &caller);
    let recovery_codes = state
        .directory
        .call(caller.user.id, MfaVerify { code, origin })
        .await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(TotpEnabled {
        mfa_enabled: true,
        recovery_codes,
    }))
}

#[utoipa::path(
    post, path = "/api/auth/mfa/totp/disable", tag = "mfa", summary = "Totp Disable",
    description = "Turn MFA off; a current code is required.",
    request_body(content = TotpCode, content_type = "application/json"),
    responses(
        (status = 204, description = "MFA disabled"),
        (status = 400, description = "`invalid_code` or `mfa_not_enabled`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many wrong codes for the account (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn totp_disable(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    never_cached(totp_disable_inner(req, payload, state).await)
}

async fn totp_disable_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let code = json_body(&req, payload, true, |f| {
        f.string("code").map(str::to_string)
    })
    .await?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, MfaDisable { code, origin })
        .await??;
    Ok(no_store(&mut HttpResponse::NoContent()).finish())
}

#[utoipa::path(
    post, path = "/api/auth/mfa/challenge", tag = "mfa", summary = "Mfa Challenge",
    description = "Complete a login that answered an MFA-pending token: `Authorization: Bearer <mfa-pending token>` and a TOTP `code` or a `recovery_code`. Five wrong answers void the pending token.",
    request_body(content = ChallengeAnswer, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "`invalid_code`, `invalid_token`, `token_expired` or `not_authenticated`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many attempts from this client, or too many wrong answers for the account across its pending tokens (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn challenge(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = match presented(&req) {
        Presented::Jwt(t) if req.headers().contains_key("authorization") => t,
        Presented::None | Presented::Malformed => return Err(DomainError::NotAuthenticated.into()),
        _ => return Err(DomainError::InvalidToken.into()),
    };
    let claims = state
        .keyring()
        .verify(&token, TYP_MFA_PENDING, clock::now())
        .map_err(DomainError::from)?;
    let (code, recovery_code) = json_body(&req, payload, true, |f| {
        let code = f.opt_string("code")?.map(str::to_string);
        let recovery = f.opt_string("recovery_code")?.map(str::to_string);
        if code.is_none() && recovery.is_none() {
            f.check::<()>(
                "code",
                Err(crate::domain::credentials::FieldProblem::new(
                    "missing",
                    "Field required",
                )),
            );
            return None;
        }
        Some((code, recovery))
    })
    .await?;
    let ip = state.throttle.client_ip(&req);
    state.throttle.mfa_attempt(ip)?;
    let answer = AnswerMfa {
        jti: claims.jti,
        code,
        recovery_code,
        origin: audit::origin(&state, &req, None),
    };
    let opened = unknown_user_as(
        state.directory.call(claims.sub, answer).await,
        DomainError::InvalidToken,
    )?;
    let opened = opened.map_err(|e| match e {
        DomainError::InvalidCode { .. } => ApiError::WithStatus(
            StatusCode::UNAUTHORIZED,
            DomainError::InvalidCode {
                attempts_left: None,
            },
        ),
        other => other.into(),
    })?;
    Ok(token_response(
        &state,
        claims.sub,
        &opened.subject,
        opened.session,
        &opened.refresh,
        opened.refresh_expires_at,
        opened.issued_at,
    ))
}
