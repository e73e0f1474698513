//! Passkeys (WebAuthn): registering one for the signed-in user, listing, renaming and removing
//! them, logging in with one (naming an email, or usernameless), and starting one as the second
//! factor of a password login (its answer goes to `POST /api/auth/mfa/challenge`).
//!
//! Ceremony bodies are the WebAuthn Level 3 JSON that browsers and webauthn-rs write: the
//! options go out as `publicKey` (binary fields in base64url), the credential comes back with
//! base64url fields. Each ceremony has a `challenge_id`, is answered once and lives
//! `webauthn.challenge_ttl_seconds`; its state stays on the server.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::authn::{authenticate, authenticate_for_secret, check_login_origin, Caller, Via};
use super::error::{unknown_user_as, ApiError};
use super::extract::{json_body, Fields};
use super::mfa::pending_claims;
use super::respond::{never_cached, no_store, BodyErrors, ErrorBody, TokenResponse};
use super::sessions::token_response;
use super::AppState;
use crate::actors::passkeys::{
    FinishPasskeyRegistration, RemovePasskey, RenamePasskey, StartMfaPasskey,
    StartPasskeyRegistration,
};
use crate::clock;
use crate::domain::backoff::Settled;
use crate::domain::credentials::Email;
use crate::domain::ids::{ChallengeId, PasskeyId};
use crate::domain::passkeys::{parse_name, StoredPasskey};
use crate::domain::DomainError;

/// A ceremony's options: what `navigator.credentials.create()` / `get()` takes as `publicKey`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyOptions {
    /// Names the ceremony at its finish.
    pub challenge_id: String,
    /// `PublicKeyCredentialCreationOptions` (registration) or `…RequestOptions` (login), JSON as
    /// WebAuthn Level 3 writes it: `challenge`, `user.id` and credential ids in base64url.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

/// A registered passkey.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The last login or second factor it proved; `null` until then.
    pub last_used_at: Option<String>,
}

impl From<&StoredPasskey> for PasskeyInfo {
    fn from(p: &StoredPasskey) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: p.created_at.rfc3339(),
            last_used_at: p.last_used_at.map(|t| t.rfc3339()),
        }
    }
}

/// `GET /api/auth/passkeys` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyList {
    /// Oldest first.
    pub passkeys: Vec<PasskeyInfo>,
}

/// `POST /api/auth/passkeys/register/finish` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"challenge_id": "01938f6e-7a1b-7c3d-9e4f-5a6b7c8d9e0f", "name": "Laptop", "credential": {"id": "…", "rawId": "…", "type": "public-key", "response": {"attestationObject": "…", "clientDataJSON": "…"}}}))]
pub struct PasskeyRegisterFinish {
    /// From the start's answer.
    pub challenge_id: String,
    /// What the user calls it; trimmed.
    pub name: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, binary fields in
    /// base64url (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// `PATCH /api/auth/passkeys/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Work laptop"}))]
pub struct PasskeyRename {
    /// Trimmed.
    pub name: String,
}

/// `POST /api/auth/passkeys/login/start` body; an empty body counts as `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct PasskeyLoginStart {
    /// The account to log in to; absent (or `null`) for a usernameless login, where the
    /// authenticator offers the passkeys it holds for this site.
    pub email: Option<String>,
}

/// `POST /api/auth/passkeys/login/finish` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"challenge_id": "01938f6e-7a1b-7c3d-9e4f-5a6b7c8d9e0f", "credential": {"id": "…", "rawId": "…", "type": "public-key", "response": {"authenticatorData": "…", "clientDataJSON": "…", "signature": "…", "userHandle": "…"}}}))]
pub struct PasskeyLoginFinish {
    pub challenge_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, binary fields in
    /// base64url.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

fn options(challenge: ChallengeId, public_key: impl Serialize) -> HttpResponse {
    let body = PasskeyOptions {
        challenge_id: challenge.to_string(),
        public_key: serde_json::to_value(public_key).unwrap_or_default(),
    };
    no_store(&mut HttpResponse::Ok()).json(body)
}

/// The caller's session: passkeys are managed from a login, never with an API key.
fn session_caller(req: &HttpRequest, state: &AppState, secret: bool) -> Result<Caller, ApiError> {
    let caller = if secret {
        authenticate_for_secret(req, state)?
    } else {
        authenticate(req, state, false)?
    };
    match caller.via {
        Via::Session { .. } => Ok(caller),
        Via::ApiKey => Err(DomainError::SessionRequired.into()),
    }
}

/// A ceremony id as sent: one that does not parse names no ceremony.
fn challenge_id(raw: &str) -> Result<ChallengeId, ApiError> {
    raw.trim()
        .parse()
        .map_err(|_| DomainError::InvalidChallenge.into())
}

fn name_field(f: &mut Fields<'_>) -> Option<String> {
    let raw = f.string("name")?;
    f.check("name", parse_name(raw))
}

#[utoipa::path(
    post, path = "/api/auth/passkeys/register/start", tag = "passkeys", summary = "Passkey Register Start",
    description = "Start registering a passkey for the caller: the options for `navigator.credentials.create({publicKey})`. The caller's existing passkeys are excluded; user verification is required.",
    responses(
        (status = 200, description = "The ceremony's options", body = PasskeyOptions),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "`too_many_passkeys` (16 per account)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn register_start(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    never_cached(register_start_inner(&req, &state).await)
}

async fn register_start_inner(
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(req, state, true)?;
    let challenge = ChallengeId::generate();
    let msg = StartPasskeyRegistration { challenge };
    let ccr = state.directory.call(caller.user.id, msg).await??;
    Ok(options(challenge, ccr.public_key))
}

#[utoipa::path(
    post, path = "/api/auth/passkeys/register/finish", tag = "passkeys", summary = "Passkey Register Finish",
    description = "Finish a registration with the authenticator's credential; the passkey is kept as `name`. A credential id belongs to one account only.",
    request_body(content = PasskeyRegisterFinish, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = PasskeyInfo),
        (status = 400, description = "`invalid_challenge` (unknown, used or expired `challenge_id`) or `invalid_passkey` (the credential does not verify)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 409, description = "`passkey_exists` (registered already, to this account or another) or `too_many_passkeys`", body = ErrorBody),
        BodyErrors,
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn register_finish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    never_cached(register_finish_inner(&req, payload, &state).await)
}

async fn register_finish_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(req, state, true)?;
    let (challenge, name, credential) = json_body(req, payload, true, |f| {
        let challenge = f.string("challenge_id").map(str::to_string);
        let name = name_field(f);
        let credential = f.object("credential").cloned();
        Some((challenge?, name?, credential?))
    })
    .await?;
    let challenge = challenge_id(&challenge)?;
    let credential =
        serde_json::from_value(credential.into()).map_err(|_| DomainError::InvalidPasskey)?;
    let msg = FinishPasskeyRegistration {
        challenge,
        name,
        credential: Box::new(credential),
        origin: audit::caller_origin(state, req, &caller),
    };
    let added = state.directory.call(caller.user.id, msg).await??;
    Ok(HttpResponse::Created().json(PasskeyInfo::from(&added)))
}

#[utoipa::path(
    get, path = "/api/auth/passkeys", tag = "passkeys", summary = "List Passkeys",
    description = "The caller's passkeys, oldest first.",
    responses(
        (status = 200, description = "Successful Response", body = PasskeyList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state, false)?;
    let passkeys = caller.user.passkeys.iter().map(PasskeyInfo::from).collect();
    Ok(no_store(&mut HttpResponse::Ok()).json(PasskeyList { passkeys }))
}

/// A passkey id from the path: one that does not parse is no passkey of the caller's either.
fn passkey_id(path: &str) -> Result<PasskeyId, ApiError> {
    path.parse()
        .map_err(|_| DomainError::PasskeyNotFound.into())
}

#[utoipa::path(
    patch, path = "/api/auth/passkeys/{id}", tag = "passkeys", summary = "Rename Passkey",
    params(("id" = String, Path, description = "A passkey id from the list")),
    request_body(content = PasskeyRename, content_type = "application/json"),
    responses(
        (status = 200, description = "Renamed", body = PasskeyInfo),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: not a passkey of the caller", body = ErrorBody),
        BodyErrors,
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn rename(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state, false)?;
    let name = json_body(&req, payload, true, name_field).await?;
    let passkey = passkey_id(&path)?;
    let renamed = state
        .directory
        .call(caller.user.id, RenamePasskey { passkey, name })
        .await??;
    Ok(no_store(&mut HttpResponse::Ok()).json(PasskeyInfo::from(&renamed)))
}

#[utoipa::path(
    delete, path = "/api/auth/passkeys/{id}", tag = "passkeys", summary = "Delete Passkey",
    description = "Remove one of the caller's passkeys. Removing the last second factor (no TOTP, no other passkey) turns `mfa_enabled` off.",
    params(("id" = String, Path, description = "A passkey id from the list")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: not a passkey of the caller", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn remove(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state, false)?;
    let passkey = passkey_id(&path)?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, RemovePasskey { passkey, origin })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/auth/passkeys/login/start", tag = "passkeys", summary = "Passkey Login Start",
    description = "Start a passkey login: the options for `navigator.credentials.get({publicKey})`. With an `email`, they list that account's passkeys; an email without passkeys, or without an account, gets options of the same shape. Without one the login is usernameless: the authenticator offers its discoverable passkeys for this site (pass `mediation: \"conditional\"` for autofill).",
    // Not `Option<…>`, which would admit a `null` body: `openapi::document` marks it optional.
    request_body(content = PasskeyLoginStart, content_type = "application/json", description = "Optional: an empty body counts as `{}`."),
    responses(
        (status = 200, description = "The ceremony's options", body = PasskeyOptions),
        (status = 403, description = "An `Origin` that is neither the server's own nor listed in `cors.allowed_origins` (`origin_not_allowed`, login CSRF)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many ceremonies begun from this client (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn login_start(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    never_cached(login_start_inner(&req, payload, &state).await)
}

async fn login_start_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    check_login_origin(req, state)?;
    let email = json_body(req, payload, false, |f| match f.opt_string("email")? {
        Some(raw) => f.check("email", Email::parse(raw)).map(Some),
        None => Some(None),
    })
    .await?;
    state
        .throttle
        .passkey_start(state.throttle.client_ip(req))?;
    let (challenge, rcr) = state
        .directory
        .start_passkey_login(email.as_ref().map(Email::key))
        .await?;
    Ok(options(challenge, rcr.public_key))
}

#[utoipa::path(
    post, path = "/api/auth/passkeys/login/finish", tag = "passkeys", summary = "Passkey Login Finish",
    description = "Finish a passkey login with the authenticator's credential: a new session (a passkey verifies its user, so it counts as two factors), the token response and the cookie. A refused assertion counts against the client address like a wrong password.",
    request_body(content = PasskeyLoginFinish, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 400, description = "`invalid_challenge`: unknown, used or expired `challenge_id`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: a wrong, replayed or cloned (signature counter gone back) assertion, or a credential of no account", body = ErrorBody),
        (status = 403, description = "`account_deactivated` (only once the assertion verified), or `origin_not_allowed` (login CSRF)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many failures from this client (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn login_finish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_login_origin(&req, &state)?;
    let (challenge, credential) = json_body(&req, payload, true, |f| {
        let challenge = f.string("challenge_id").map(str::to_string);
        let credential = f.object("credential").cloned();
        Some((challenge?, credential?))
    })
    .await?;
    let challenge = challenge_id(&challenge)?;
    let throttle = &state.throttle;
    let attempt = throttle.reserve_address(throttle.client_ip(&req), clock::now())?;
    // A body that is no credential at all still uses up its ceremony, and is refused.
    let credential = serde_json::from_value(credential.into()).ok();
    let origin = audit::origin(&state, &req, None);
    let finished = state
        .directory
        .finish_passkey_login(challenge, credential, origin)
        .await;
    let (user, verdict) = match finished {
        Ok(f) => f,
        Err(e) => {
            attempt.settle(Settled::Released, clock::now());
            return Err(e.into());
        }
    };
    let outcome = match &verdict {
        Ok(_) | Err(DomainError::AccountDeactivated) => Settled::Succeeded,
        Err(DomainError::PasskeyRefused { .. }) => Settled::Failed,
        Err(_) => Settled::Released,
    };
    attempt.settle(outcome, clock::now());
    let opened = match verdict {
        Ok(opened) => opened,
        Err(DomainError::PasskeyRefused { cloned }) => {
            if let Some(passkey) = cloned {
                audit::passkey_cloned(&state, &req, user, passkey);
            } else if user.is_none() {
                audit::record(&state, &req, None, "passkey_login", "invalid_credentials");
            }
            return Err(DomainError::PasskeyRefused { cloned: None }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let user = user.ok_or(ApiError::Internal)?;
    Ok(token_response(
        &state,
        user,
        &opened.subject,
        opened.session,
        &opened.refresh,
        opened.refresh_expires_at,
        opened.issued_at,
    ))
}

#[utoipa::path(
    post, path = "/api/auth/mfa/passkey/start", tag = "mfa", summary = "Mfa Passkey Start",
    description = "Answer a login's MFA-pending token with a passkey: `Authorization: Bearer <mfa-pending token>`; the options for `navigator.credentials.get({publicKey})`. Post the `challenge_id` and the `credential` to `POST /api/auth/mfa/challenge`.",
    responses(
        (status = 200, description = "The ceremony's options", body = PasskeyOptions),
        (status = 400, description = "`no_passkey`: the account has no passkey", body = ErrorBody),
        (status = 401, description = "`invalid_token`, `token_expired` or `not_authenticated`", body = ErrorBody),
        (status = 429, description = "Too many ceremonies begun from this client (`rate_limited`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn mfa_start(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    never_cached(mfa_start_inner(&req, &state).await)
}

async fn mfa_start_inner(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    let claims = pending_claims(req, state)?;
    state
        .throttle
        .passkey_start(state.throttle.client_ip(req))?;
    let challenge = ChallengeId::generate();
    let msg = StartMfaPasskey {
        jti: claims.jti,
        challenge,
    };
    let rcr = unknown_user_as(
        state.directory.call(claims.sub, msg).await,
        DomainError::InvalidToken,
    )??;
    Ok(options(challenge, rcr.public_key))
}
