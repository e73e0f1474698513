//! Two-factor authentication: TOTP enrolment and the login challenge (answered with a TOTP or
//! recovery code, or a passkey: `passkeys.rs` starts that ceremony).

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
use crate::actors::passkeys::AnswerMfaPasskey;
use crate::clock;
use crate::domain::tokens::{Claims, TYP_MFA_PENDING};
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

/// `POST /api/auth/mfa/challenge` body: a `code`, a `recovery_code`, or a passkey's answer
/// (`challenge_id` from `POST /api/auth/mfa/passkey/start` and the `credential`).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct ChallengeAnswer {
    pub code: Option<String>,
    pub recovery_code: Option<String>,
    pub challenge_id: Option<String>,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, its binary fields in
    /// base64url.
    #[schema(value_type = Option<Object>)]
    pub credential: Option<serde_json::Value>,
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

/// The claims of the MFA-pending token in `Authorization` (the cookie and API keys do not
/// count here).
pub(super) fn pending_claims(req: &HttpRequest, state: &AppState) -> Result<Claims, ApiError> {
    let token = match presented(req) {
        Presented::Jwt(t) if req.headers().contains_key("authorization") => t,
        Presented::None | Presented::Malformed => return Err(DomainError::NotAuthenticated.into()),
        _ => return Err(DomainError::InvalidToken.into()),
    };
    Ok(state
        .keyring()
        .verify(&token, TYP_MFA_PENDING, clock::now())
        .map_err(DomainError::from)?)
}

/// What the challenge was answered with.
enum Answer {
    Codes(Option<String>, Option<String>),
    Passkey(String, serde_json::Map<String, serde_json::Value>),
}

fn wrong_answer() -> ApiError {
    ApiError::WithStatus(
        StatusCode::UNAUTHORIZED,
        DomainError::InvalidCode {
            attempts_left: None,
        },
    )
}

#[utoipa::path(
    post, path = "/api/auth/mfa/challenge", tag = "mfa", summary = "Mfa Challenge",
    description = "Complete a login that answered an MFA-pending token: `Authorization: Bearer <mfa-pending token>` and a TOTP `code`, a `recovery_code`, or a passkey's `challenge_id` (from `POST /api/auth/mfa/passkey/start`) and `credential`. A wrong passkey answers like a wrong code. Five wrong answers void the pending token.",
    request_body(content = ChallengeAnswer, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 400, description = "`invalid_challenge`: the passkey ceremony is unknown, answered or expired", body = ErrorBody),
        (status = 401, description = "`invalid_code` (a wrong code or passkey), `invalid_token`, `token_expired` or `not_authenticated`", body = ErrorBody),
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
    let claims = pending_claims(&req, &state)?;
    let answer = json_body(&req, payload, true, |f| {
        let missing = || {
            Err(crate::domain::credentials::FieldProblem::new(
                "missing",
                "Field required",
            ))
        };
        let code = f.opt_string("code")?.map(str::to_string);
        let recovery = f.opt_string("recovery_code")?.map(str::to_string);
        let challenge = f.opt_string("challenge_id")?.map(str::to_string);
        let credential = f.opt_object("credential")?.cloned();
        if code.is_some() || recovery.is_some() {
            return Some(Answer::Codes(code, recovery));
        }
        match (challenge, credential) {
            (Some(c), Some(cred)) => Some(Answer::Passkey(c, cred)),
            (None, None) => f.check::<Answer>("code", missing()),
            (Some(_), None) => f.check::<Answer>("credential", missing()),
            (None, Some(_)) => f.check::<Answer>("challenge_id", missing()),
        }
    })
    .await?;
    let ip = state.throttle.client_ip(&req);
    state.throttle.mfa_attempt(ip)?;
    let origin = audit::origin(&state, &req, None);
    let opened = match answer {
        Answer::Codes(code, recovery_code) => {
            let answer = AnswerMfa {
                jti: claims.jti,
                code,
                recovery_code,
                origin,
            };
            unknown_user_as(
                state.directory.call(claims.sub, answer).await,
                DomainError::InvalidToken,
            )?
        }
        Answer::Passkey(challenge, credential) => {
            let challenge = challenge
                .parse()
                .map_err(|_| DomainError::InvalidChallenge)?;
            // Not a credential at all: wrong, though no secret was checked to know it.
            let credential =
                serde_json::from_value(credential.into()).map_err(|_| wrong_answer())?;
            let answer = AnswerMfaPasskey {
                jti: claims.jti,
                challenge,
                credential: Box::new(credential),
                origin,
            };
            unknown_user_as(
                state.directory.call(claims.sub, answer).await,
                DomainError::InvalidToken,
            )?
        }
    };
    let opened = opened.map_err(|e| match e {
        DomainError::InvalidCode { .. } => wrong_answer(),
        DomainError::PasskeyRefused { cloned } => {
            if let Some(passkey) = cloned {
                audit::passkey_cloned(&state, &req, Some(claims.sub), passkey);
            }
            wrong_answer()
        }
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
