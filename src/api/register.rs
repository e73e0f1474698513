//! Registration: a new owner in a new tenant on the free plan.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::audit;
use super::error::ApiError;
use super::extract::{json_body, Fields};
use super::respond::{BodyErrors, Profile};
use super::AppState;
use crate::actors::messages::RequestEmailCode;
use crate::clock;
use crate::domain::credentials::{parse_full_name, parse_phone, Email, NewPassword};
use crate::domain::user::{NewUser, UserState};

/// `POST /api/auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple", "full_name": "Ada Lovelace", "phone": "+447700900123"}))]
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

#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth", summary = "Register",
    description = "Create a new public user account in an isolated Free tenant.",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Successful Response", body = Profile, links(
            ("Login" = (operation_id = "login", description = "Sign in with the new account.",
                request_body = json!({"username": "$request.body#/email", "password": "$request.body#/password"}))),
            ("ReactivateRequest" = (operation_id = "reactivate_request", description = "Ask for a reactivation code for the new account.",
                request_body = json!({"email": "$response.body#/email"}))),
        )),
        (status = 409, description = "Email already registered (`email_taken`)", body = super::respond::ErrorBody),
        BodyErrors,
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
    if state.config.registration.send_verification_email {
        // After the answer: the account exists whatever the mail does, and the user can ask
        // for another code (`verify-email/request`).
        let (state, id) = (state.clone(), created.id);
        actix_web::rt::spawn(async move {
            match state.directory.call(id, RequestEmailCode).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(user = %id, error = %e, "no verification email at registration")
                }
                Err(e) => {
                    tracing::warn!(user = %id, error = %e, "verification email at registration failed")
                }
            }
        });
    }
    Ok(HttpResponse::Created().json(Profile::from(created.as_ref())))
}
