//! The identities linked to an account at OpenID Connect providers: the list, a link begun
//! from a session (the sign-in's flow, bound to the caller's session instead of a browser
//! cookie; its callback is the sign-in's, `api/oidc.rs`), and unlinking one while another way
//! to log in remains.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::authn::{authenticate, Caller, Via};
use super::error::ApiError;
use super::extract::json_body;
use super::oidc::{begin, checked_redirect, provider};
use super::respond::{no_store, BodyErrors, ErrorBody};
use super::AppState;
use crate::actors::identities::UnlinkIdentity;
use crate::domain::identities::Identity;
use crate::domain::ids::IdentityId;
use crate::domain::DomainError;

/// `POST /api/auth/oidc/{name}/link` body; an empty body counts as `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"redirect_to": "https://app.blitzpulse.com/settings"}))]
pub struct LinkRequest {
    /// Where the browser goes back to (`#linked=<provider>` or `#error=<code>`); in
    /// `oidc.redirect_allowlist`. Absent: the allowlist's first entry.
    #[schema(nullable = false, max_length = 2048)]
    pub redirect_to: Option<String>,
}

/// `POST /api/auth/oidc/{name}/link` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStarted {
    /// Send the browser here (a top-level navigation): the provider's authorization endpoint.
    pub authorize_url: String,
}

/// A linked identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityInfo {
    pub id: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's display name (its name if it is no longer configured).
    pub display_name: String,
    /// The email the provider gave at the last sign-in.
    pub email: Option<String>,
    pub created_at: String,
    /// The last sign-in through it; `null` until then.
    pub last_used_at: Option<String>,
}

/// `GET /api/auth/identities` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityList {
    /// Oldest first.
    pub identities: Vec<IdentityInfo>,
}

fn identity_info(state: &AppState, i: &Identity) -> IdentityInfo {
    let display_name = state
        .oidc
        .get(&i.provider)
        .map_or_else(|| i.provider.clone(), |p| p.display_name.clone());
    IdentityInfo {
        id: i.id.to_string(),
        provider: i.provider.clone(),
        display_name,
        email: i.email.clone(),
        created_at: i.created_at.rfc3339(),
        last_used_at: i.last_used_at.map(|t| t.rfc3339()),
    }
}

/// The caller's session: identities are managed from a login, never with an API key.
fn session_caller(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let caller = authenticate(req, state, false)?;
    match caller.via {
        Via::Session { .. } => Ok(caller),
        Via::ApiKey => Err(DomainError::SessionRequired.into()),
    }
}

#[utoipa::path(
    get, path = "/api/auth/identities", tag = "oidc", summary = "List Identities",
    description = "The caller's identities at OpenID Connect providers, oldest first.",
    responses(
        (status = 200, description = "Successful Response", body = IdentityList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn identities(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state)?;
    let identities = caller
        .user
        .identities
        .iter()
        .map(|i| identity_info(&state, i))
        .collect();
    Ok(no_store(&mut HttpResponse::Ok()).json(IdentityList { identities }))
}

#[utoipa::path(
    post, path = "/api/auth/oidc/{name}/link", tag = "oidc", summary = "Oidc Link",
    description = "Start linking an identity at the provider to the caller's account: the same flow as a sign-in, bound to the caller's session. Send the browser to `authorize_url`; it comes back to `redirect_to#linked=<provider>` or `redirect_to#error=<code>` (`identity_taken` when the identity is linked to another account).",
    params(("name" = String, Path, description = "A provider's name")),
    request_body(content = LinkRequest, content_type = "application/json", description = "Optional: an empty body counts as `{}`."),
    responses(
        (status = 200, description = "Where to send the browser", body = LinkStarted),
        (status = 400, description = "`invalid_redirect`", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many sign-ins begun from this client (`rate_limited`)", body = ErrorBody),
        (status = 502, description = "`provider_unavailable`", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many sign-ins in progress", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn link(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state)?;
    let provider = provider(&state, &path)?;
    let raw = json_body(&req, payload, false, |f| {
        f.opt_string("redirect_to").map(|r| r.map(str::to_string))
    })
    .await?;
    let raw = match raw {
        Some(r) => r,
        None => state
            .config
            .oidc
            .allowlist(&state.config.cors)
            .first()
            .cloned()
            .ok_or(DomainError::InvalidRedirect)?,
    };
    let redirect_to = checked_redirect(&state, &raw)?;
    state.throttle.oidc_start(state.throttle.client_ip(&req))?;
    let Via::Session { sid, .. } = caller.via else {
        return Err(DomainError::SessionRequired.into());
    };
    let (url, _) = begin(
        &state,
        provider,
        redirect_to,
        Some((caller.user.id, sid)),
        None,
    )
    .await?;
    Ok(no_store(&mut HttpResponse::Ok()).json(LinkStarted { authorize_url: url }))
}

#[utoipa::path(
    delete, path = "/api/auth/identities/{id}", tag = "oidc", summary = "Unlink Identity",
    description = "Unlink one of the caller's identities; refused while it is the account's last way to log in (no password, passkey or other identity).",
    params(("id" = String, Path, description = "An identity id from the list")),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`session_required` (an API key), or `origin_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: not an identity of the caller", body = ErrorBody),
        (status = 409, description = "`last_login_method`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn unlink(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = session_caller(&req, &state)?;
    let identity: IdentityId = path
        .parse()
        .map_err(|_| ApiError::from(DomainError::IdentityNotFound))?;
    let origin = audit::caller_origin(&state, &req, &caller);
    state
        .directory
        .call(caller.user.id, UnlinkIdentity { identity, origin })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}
