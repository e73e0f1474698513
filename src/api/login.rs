//! Login (the OAuth2 password flow): a new session, or an MFA-pending token when the user has
//! a second factor.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::error::{ApiError, FieldError};
use super::extract::{form_fields, read_body};
use super::passwords::{self, Account};
use super::respond::{no_store, BodyErrors, TokenResponse};
use super::sessions::token_response;
use super::AppState;
use crate::actors::messages::{BeginMfa, OpenSession, Record};
use crate::clock;
use crate::domain::credentials::Email;
use crate::domain::events::EventKind;
use crate::domain::ids::UserId;
use crate::domain::sessions::LoginMethod;
use crate::domain::tokens::TYP_MFA_PENDING;
use crate::domain::user::Status;
use crate::domain::DomainError;

/// `POST /api/auth/token` form (OAuth2 password flow).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"username": "ada@example.com", "password": "correct horse battery staple", "grant_type": "password"}))]
pub struct LoginForm {
    /// The email. An empty value counts as missing.
    #[schema(min_length = 1)]
    pub username: String,
    /// An empty value counts as missing.
    #[schema(min_length = 1)]
    pub password: String,
    /// If present, must be `password`.
    #[schema(nullable = false, pattern = "^password$")]
    pub grant_type: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
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
        (status = 200, description = "Successful Response: the token response, or an MFA-pending token when MFA is enabled", body = LoginResponse, links(
            ("Refresh" = (operation_id = "refresh", description = "Continue the new session.",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
            ("Logout" = (operation_id = "logout", description = "End the new session by its refresh token.",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
        )),
        (status = 401, description = "Unknown email or wrong password (`invalid_credentials`)", body = super::respond::ErrorBody),
        (status = 403, description = "Account deactivated (`account_deactivated`), or an `Origin` that is neither the server's own nor listed in `cors.allowed_origins` (`origin_not_allowed`, login CSRF)", body = super::respond::ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many failures (`rate_limited`)", body = super::respond::ErrorBody),
        (status = 503, description = "Overloaded", body = super::respond::ErrorBody),
    )
)]
pub async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    super::authn::check_login_origin(&req, &state)?;
    let body = read_body(&req, payload).await?;
    let (username, password) = login_fields(&form_fields(&req, &body))?;
    // Whatever spelling named it, an account is counted as itself, and an unknown email as
    // what it parses to (trimmed and lowercased) so that variants share one count too.
    let parsed = Email::parse(&username).ok();
    let unknown_key = parsed
        .as_ref()
        .map_or_else(|| username.trim().to_lowercase(), |e| e.key().to_string());
    let user = match parsed {
        Some(email) => match state.directory.user_by_email(email.key())? {
            Some(id) => state.directory.view(id)?,
            None => None,
        },
        None => None,
    };
    let account = match &user {
        Some(u) => Account::Known(u.id, &u.password_hash),
        None => Account::Unknown(&unknown_key),
    };
    let matched = passwords::check(&state, &req, account, &password)
        .await
        .inspect_err(|e| {
            if e.is_rate_limited() {
                login_outcome("rate_limited");
            }
        })?;
    let user = match user {
        Some(u) if matched => u,
        Some(u) => {
            // In the history before the answer, so that the client's next read has it.
            let origin = audit::origin(&state, &req, None);
            let what = EventKind::LoginFailed;
            let recorded = state
                .directory
                .call_unflushed(u.id, Record { what, origin });
            recorded.await??;
            login_outcome("invalid_credentials");
            return Err(DomainError::InvalidCredentials.into());
        }
        None => {
            audit::record(&state, &req, None, "login", "invalid_credentials");
            login_outcome("invalid_credentials");
            return Err(DomainError::InvalidCredentials.into());
        }
    };
    if user.status != Status::Active {
        login_outcome("account_deactivated");
        return Err(DomainError::AccountDeactivated.into());
    }
    if user.mfa_enabled() {
        login_outcome("mfa_required");
        return mfa_pending(&state, &req, user.id).await;
    }
    let origin = audit::origin(&state, &req, None);
    let opened = state
        .directory
        .call(
            user.id,
            OpenSession {
                method: LoginMethod::Password,
                origin,
            },
        )
        .await??;
    login_outcome("success");
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

pub(super) async fn mfa_pending(
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
