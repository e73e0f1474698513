//! One-time codes: phone verification, and reactivation of a deactivated account.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit;
use super::authn::authenticate;
use super::error::{unknown_user_as, ApiError};
use super::extract::json_body;
use super::respond::{no_store, BodyErrors, ErrorBody};
use super::AppState;
use crate::actors::messages::{
    ConfirmPhone, ConfirmReactivation, RequestPhoneCode, RequestReactivation,
};
use crate::actors::DirectoryError;
use crate::domain::credentials::Email;
use crate::domain::ids::UserId;
use crate::domain::DomainError;

/// `POST /api/auth/verify-phone/request` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneCodeSent {
    pub sent: bool,
    /// The phone with all but its first and last three characters starred.
    pub destination: String,
    pub expires_in: u64,
    pub resend_after: u64,
}

#[utoipa::path(
    post, path = "/api/auth/verify-phone/request", tag = "auth", summary = "Verify Phone Request",
    description = "Send a 6-digit code by SMS to the phone on the profile; a new code voids the previous one. No body.",
    responses(
        (status = 200, description = "Successful Response", body = PhoneCodeSent),
        (status = 400, description = "No phone on the profile (`no_phone`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "Phone already verified (`phone_already_verified`)", body = ErrorBody),
        (status = 429, description = "Resend interval or hourly cap (`rate_limited`)", body = ErrorBody),
        (status = 502, description = "The code could not be delivered (`delivery_failed`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn phone_request(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, false)?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    let sent = state
        .directory
        .call(caller.user.id, RequestPhoneCode)
        .await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(PhoneCodeSent {
        sent: true,
        destination: sent.destination,
        expires_in: sent.expires_in,
        resend_after: sent.resend_after,
    }))
}

/// A code as typed by the user.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct CodeRequest {
    /// Six digits.
    pub code: String,
}

#[utoipa::path(
    post, path = "/api/auth/verify-phone/confirm", tag = "auth", summary = "Verify Phone Confirm",
    request_body(content = CodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Successful Response", body = inline(Object), example = json!({"phone_verified": true})),
        (status = 400, description = "`invalid_code` (with `attempts_left`) or `code_expired`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many code attempts from this client (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn phone_confirm(
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
        .call(caller.user.id, ConfirmPhone { code })
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"phone_verified": true})))
}

/// `POST /api/auth/reactivate/request` body.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct ReactivateRequest {
    /// The address the account registered with.
    pub email: String,
}

#[utoipa::path(
    post, path = "/api/auth/reactivate/request", tag = "auth", summary = "Reactivate Request",
    description = "If the account exists and is deactivated, email it a 6-digit code. Always 204, whether or not the account exists or is deactivated, in the same time.",
    request_body(content = ReactivateRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Successful Response"),
        BodyErrors,
        (status = 429, description = "Too many code requests from this client (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn reactivate_request(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let email = json_body(&req, payload, true, |f| {
        f.string("email")
            .and_then(|e| f.check("email", Email::parse(e)))
    })
    .await?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    let client = state.throttle.client_ip(&req);
    code_after_the_answer(
        state,
        client,
        email,
        "reactivation",
        |state, user| async move { state.directory.call(user, RequestReactivation).await },
    );
    Ok(HttpResponse::NoContent().finish())
}

/// Looks up `email` and sends its account `msg` (a code request answering whether a code was
/// sent) after the answer has gone: the answer's timing then says nothing about whether the
/// account exists or was sent a code. The outcome goes to the audit log.
pub(super) fn code_after_the_answer<F, Fut>(
    state: web::Data<AppState>,
    client: Option<std::net::IpAddr>,
    email: Email,
    event: &'static str,
    request: F,
) where
    F: FnOnce(Arc<AppState>, UserId) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Result<bool, DomainError>, DirectoryError>>,
{
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let user = match state.directory.user_by_email(email.key()) {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, event, "code request: lookup failed");
                return;
            }
        };
        match request(state.clone(), user).await {
            Ok(Ok(true)) => {
                tracing::info!(target: "bp_auth::audit", user = %user, client = ?client, event, outcome = "code_sent")
            }
            Ok(_) => {}
            Err(DirectoryError::Delivery(e)) => {
                tracing::warn!(user = %user, error = %e, event, "code could not be delivered")
            }
            Err(e) => tracing::error!(user = %user, error = %e, event, "code request failed"),
        }
    });
}

/// `POST /api/auth/reactivate/confirm` body.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "code": "123456"}))]
pub struct ReactivateConfirm {
    /// The address the account registered with.
    pub email: String,
    /// Six digits, from the email.
    pub code: String,
}

#[utoipa::path(
    post, path = "/api/auth/reactivate/confirm", tag = "auth", summary = "Reactivate Confirm",
    request_body(content = ReactivateConfirm, content_type = "application/json"),
    responses(
        (status = 200, description = "Successful Response", body = inline(Object), example = json!({"status": "active"})),
        (status = 400, description = "Wrong, expired or absent code, or unknown email (`invalid_code`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many code attempts from this client (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn reactivate_confirm(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (email, code) = json_body(&req, payload, true, |f| {
        let email = f.string("email").map(str::to_string);
        let code = f.string("code").map(str::to_string);
        Some((email?, code?))
    })
    .await?;
    state
        .throttle
        .code_request(state.throttle.client_ip(&req))?;
    let invalid = || {
        ApiError::Domain(DomainError::InvalidCode {
            attempts_left: None,
        })
    };
    let Some(user) = Email::parse(&email)
        .ok()
        .map(|e| state.directory.user_by_email(e.key()))
        .transpose()?
        .flatten()
    else {
        return Err(invalid());
    };
    let confirmed = unknown_user_as(
        state
            .directory
            .call(
                user,
                ConfirmReactivation {
                    code,
                    origin: audit::origin(&state, &req, None),
                },
            )
            .await,
        DomainError::InvalidCode {
            attempts_left: None,
        },
    )?;
    if confirmed.is_err() {
        return Err(invalid());
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "active"})))
}
