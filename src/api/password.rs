//! The password's lifecycle: change it signed in (with the current one), or reset it signed out
//! with a code sent to the account's address (OWASP's Forgot Password Cheat Sheet: the same
//! answer and the same time for every email, single-use expiring codes, every session ended,
//! no automatic login, and a notification to the account's address).

use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::ToSchema;

use super::audit;
use super::authn::{authenticate, Via};
use super::error::ApiError;
use super::extract::json_body;
use super::passwords;
use super::respond::{no_store, BodyErrors, ErrorBody};
use super::verification::code_after_the_answer;
use super::AppState;
use crate::actors::messages::{ChangePassword, RequestPasswordReset, ResetPassword};
use crate::actors::DirectoryError;
use crate::clock;
use crate::delivery::{Channel, Message, Purpose};
use crate::domain::credentials::{Email, NewPassword};
use crate::domain::ids::UserId;
use crate::domain::DomainError;

/// `POST /api/auth/password/change` body.
#[derive(Debug, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    /// Follows the rules of registration.
    pub new_password: String,
    /// End every other session (default `true`); the current one stays.
    pub revoke_other_sessions: Option<bool>,
}

/// Tells the account's owner, at `to`, that the password changed.
fn notify_password_changed(state: &AppState, user: UserId, to: &str) {
    let message = Message::notification(
        Channel::Email,
        to,
        Purpose::PasswordChanged,
        user,
        clock::now(),
    );
    state.directory.notify(message);
}

#[utoipa::path(
    post, path = "/api/auth/password/change", tag = "auth", summary = "Password Change",
    description = "Replace the password; the current one is required. Other sessions end unless `revoke_other_sessions` is false. The account's address is notified.",
    request_body(content = PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Wrong current password (`invalid_credentials`), `session_required` or `origin_not_allowed`", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many wrong passwords for the account, or too many checks of it in flight (`rate_limited`)", body = ErrorBody),
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
    let Via::Session { sid, .. } = caller.via else {
        return Err(DomainError::SessionRequired.into());
    };
    let min_len = state.config.password.min_length;
    let email = Email::parse(&caller.user.email).ok();
    let (current, new, revoke_others) = json_body(&req, payload, true, |f| {
        let current = f.string("current_password").map(str::to_string);
        let new = f.string("new_password").and_then(|p| {
            f.check(
                "new_password",
                NewPassword::parse(p, min_len, email.as_ref()),
            )
        });
        let revoke = f.opt_bool("revoke_other_sessions").unwrap_or(true);
        Some((current?, new?, revoke))
    })
    .await?;
    passwords::confirm_own(&state, &req, &caller.user, &current, "password_change").await?;
    let hash = state.hashes.hash(new.expose()).await?;
    let change = ChangePassword {
        hash,
        current: sid,
        revoke_others,
        origin: audit::caller_origin(&state, &req, &caller),
    };
    let (done, user) = state
        .directory
        .call_with_state(caller.user.id, change)
        .await?;
    done?;
    notify_password_changed(&state, user.id, &user.email);
    Ok(no_store(&mut HttpResponse::NoContent()).finish())
}

/// `POST /api/auth/password/forgot` body.
#[derive(Debug, ToSchema)]
pub struct PasswordForgot {
    pub email: String,
}

#[utoipa::path(
    post, path = "/api/auth/password/forgot", tag = "auth", summary = "Password Forgot",
    description = "If the email names an active account, send it a 6-digit reset code. Always 204, whether or not the account exists, in the same time.",
    request_body(content = PasswordForgot, content_type = "application/json"),
    responses(
        (status = 204, description = "Successful Response"),
        BodyErrors,
        (status = 429, description = "The client address's code-request rate (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn forgot(
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
        "password_reset",
        |state, user| async move { state.directory.call(user, RequestPasswordReset).await },
    );
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/auth/password/reset` body.
#[derive(Debug, ToSchema)]
pub struct PasswordReset {
    pub email: String,
    /// Six digits, from the email.
    pub code: String,
    /// Follows the rules of registration.
    pub new_password: String,
}

#[utoipa::path(
    post, path = "/api/auth/password/reset", tag = "auth", summary = "Password Reset",
    description = "Set a new password with the code sent by `password/forgot`. Every session and refresh family of the user ends; no session is opened, and a second factor is still asked at the next login.",
    request_body(content = PasswordReset, content_type = "application/json"),
    responses(
        (status = 204, description = "Replaced"),
        (status = 400, description = "Wrong, expired or absent code, or unknown email (`invalid_code`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "The client address's code-request rate (`rate_limited`)", body = ErrorBody),
        (status = 503, description = "Overloaded", body = ErrorBody),
    )
)]
pub async fn reset(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let min_len = state.config.password.min_length;
    let (email, code, new) = json_body(&req, payload, true, |f| {
        let email = f.string("email").map(|e| Email::parse(e).ok());
        let code = f.string("code").map(str::to_string);
        let new = f.string("new_password").and_then(|p| {
            let email = email.as_ref().and_then(Option::as_ref);
            f.check("new_password", NewPassword::parse(p, min_len, email))
        });
        Some((email?, code?, new?))
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
    let user = match &email {
        Some(e) => state.directory.user_by_email(e.key())?,
        None => None,
    };
    // The new password is hashed for every request, so an unknown email costs the same.
    let hash = state.hashes.hash(new.expose()).await?;
    let Some(user) = user else {
        return Err(invalid());
    };
    let reset = ResetPassword {
        code,
        hash,
        origin: audit::origin(&state, &req, None),
    };
    let after = match state.directory.call_with_state(user, reset).await {
        Ok((Ok(()), after)) => after,
        Ok((Err(_), _)) | Err(DirectoryError::UnknownUser) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    notify_password_changed(&state, user, &after.email);
    Ok(HttpResponse::NoContent().finish())
}
