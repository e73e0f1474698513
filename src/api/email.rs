//! The account's address: verifying it with a code sent there, and changing it to a new one,
//! which is claimed only when the code sent to it is confirmed.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit;
use super::authn::authenticate;
use super::error::ApiError;
use super::extract::json_body;
use super::passwords;
use super::respond::{no_store, BodyErrors, ErrorBody, Profile};
use super::AppState;
use crate::actors::messages::{
    CodeSent, ConfirmEmail, ConfirmEmailChange, RequestEmailChange, RequestEmailCode,
};
use crate::clock;
use crate::delivery::{Channel, Message, Purpose};
use crate::domain::credentials::Email;
use crate::domain::DomainError;

/// A code sent to an address: `destination` keeps its first character and its domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailCodeSent {
    pub sent: bool,
    pub destination: String,
    pub expires_in: u64,
    pub resend_after: u64,
}

impl From<CodeSent> for EmailCodeSent {
    fn from(c: CodeSent) -> Self {
        Self {
            sent: true,
            destination: c.destination,
            expires_in: c.expires_in,
            resend_after: c.resend_after,
        }
    }
}

#[utoipa::path(
    post, path = "/api/auth/verify-email/request", tag = "auth", summary = "Verify Email Request",
    description = "Email a 6-digit code to the account's address; a new code voids the previous one. No body.",
    responses(
        (status = 200, description = "Successful Response", body = EmailCodeSent),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "Already verified (`email_already_verified`)", body = ErrorBody),
        (status = 429, description = "Resend interval or hourly cap (`rate_limited`)", body = ErrorBody),
        (status = 502, description = "The code could not be delivered (`delivery_failed`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn verify_request(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    let sent = state
        .directory
        .call(caller.user.id, RequestEmailCode)
        .await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(EmailCodeSent::from(sent)))
}

#[utoipa::path(
    post, path = "/api/auth/verify-email/confirm", tag = "auth", summary = "Verify Email Confirm",
    request_body(content = super::verification::CodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Successful Response", body = inline(Object), example = json!({"email_verified": true})),
        (status = 400, description = "`invalid_code` (with `attempts_left`) or `code_expired`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "The client address's code-request rate (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn verify_confirm(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let code = json_body(&req, payload, true, |f| {
        f.string("code").map(str::to_string)
    })
    .await?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    state
        .directory
        .call(caller.user.id, ConfirmEmail { code })
        .await??;
    audit::record(&state, &req, Some(caller.user.id), "email", "verified");
    Ok(HttpResponse::Ok().json(serde_json::json!({"email_verified": true})))
}

/// `POST /api/auth/email/change` body.
#[derive(Debug, ToSchema)]
pub struct EmailChangeRequest {
    pub new_email: String,
    /// The account's current password.
    pub password: String,
}

#[utoipa::path(
    post, path = "/api/auth/email/change", tag = "auth", summary = "Email Change",
    description = "Send a 6-digit code to a new address; the address changes when the code is confirmed. The password is required.",
    request_body(content = EmailChangeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A code was sent to the new address", body = EmailCodeSent),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Wrong password (`invalid_credentials`), `session_required` or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "The address belongs to an account, this one included (`email_taken`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many wrong passwords, resend limits, or the client address's code-request rate (`rate_limited`)", body = ErrorBody),
        (status = 502, description = "The code could not be delivered (`delivery_failed`)", body = ErrorBody),
        (status = 503, description = "Overloaded", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn change(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let (new_email, password) = json_body(&req, payload, true, |f| {
        let new_email = f
            .string("new_email")
            .and_then(|e| f.check("new_email", Email::parse(e)));
        let password = f.string("password").map(str::to_string);
        Some((new_email?, password?))
    })
    .await?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    passwords::confirm_own(&state, &req, &caller.user, &password, "email_change").await?;
    if state.directory.user_by_email(new_email.key())?.is_some() {
        return Err(DomainError::EmailTaken.into());
    }
    let sent = state
        .directory
        .call(caller.user.id, RequestEmailChange { new_email })
        .await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(EmailCodeSent::from(sent)))
}

#[utoipa::path(
    post, path = "/api/auth/email/change/confirm", tag = "auth", summary = "Email Change Confirm",
    description = "Confirm the new address with the code sent to it: it is claimed now (409 if another account took it meanwhile), counts as verified, and the old address is notified and no longer logs in.",
    request_body(content = super::verification::CodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The profile, with the new address", body = Profile),
        (status = 400, description = "`invalid_code` (with `attempts_left`) or `code_expired`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "Another account took the address meanwhile (`email_taken`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "The client address's code-request rate (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn change_confirm(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    let code = json_body(&req, payload, true, |f| {
        f.string("code").map(str::to_string)
    })
    .await?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    let (moved, user) = state
        .directory
        .call_with_state(
            caller.user.id,
            ConfirmEmailChange {
                code,
                origin: audit::caller_origin(&state, &req, &caller),
            },
        )
        .await?;
    let moved = moved?;
    state.directory.notify(Message::notification(
        Channel::Email,
        &moved.old_email,
        Purpose::EmailChanged,
        user.id,
        clock::now(),
    ));
    Ok(HttpResponse::Ok().json(Profile::from(user.as_ref())))
}
