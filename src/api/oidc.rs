//! Sign in with Google (any OpenID Connect provider): the providers list, the start of a
//! sign-in, the provider's callback, and the exchange of the one-time login code. The linked
//! identities (list, link, unlink) are `api/identities.rs`.
//!
//! The browser goes start → provider → callback → the frontend's `redirect_to`, whose fragment
//! carries `login_code=` (never the query, which servers and proxies log, and never a token);
//! the frontend POSTs the code to the exchange and gets the answer of a login. Every step after
//! the start may reach another node: what a step leaves for the next is kept through the
//! directory in the store (`actors/identities.rs`). Errors after a known `redirect_to` go back
//! to it as `#error=<code>`; a callback whose `state` names no flow answers 400.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::authn::check_login_origin;
use super::error::{unknown_user_as, ApiError, FieldError, Loc};
use super::extract::json_body;
use super::login::mfa_pending;
use super::respond::{no_store, BodyErrors, ErrorBody};
use super::sessions::token_response;
use super::AppState;
use crate::actors::identities::LinkIdentity;
use crate::actors::messages::OpenSession;
use crate::clock;
use crate::domain::backoff::Settled;
use crate::domain::identities::{Flow, FLOW_TTL};
use crate::domain::secrets::{random_32, sha256};
use crate::domain::sessions::LoginMethod;
use crate::domain::user::{LinkBy, Status};
use crate::domain::DomainError;
use crate::oidc::{redirect, OidcError, Provider};

/// The longest `state` or `login_code` worth looking up (ours are 43 characters).
const SECRET_MAX_LEN: usize = 128;

/// A provider as the frontend lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderInfo {
    /// What the paths use: `/api/auth/oidc/{name}/start`.
    pub name: String,
    /// What to show ("Google").
    pub display_name: String,
}

/// `GET /api/auth/oidc/providers` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderInfo>,
}

/// `POST /api/auth/oidc/exchange` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"login_code": "q2Vt1b0m…"}))]
pub struct ExchangeRequest {
    /// From the callback's redirect: the `login_code` of `redirect_to`'s fragment.
    #[schema(min_length = 1, max_length = 128)]
    pub login_code: String,
}

pub(super) fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a Provider, ApiError> {
    state
        .oidc
        .get(name)
        .map(|p| p.as_ref())
        .ok_or(ApiError::NotFound)
}

/// The value of `name` in a query string (the last one, as `history` reads `limit`).
fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    pairs
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A 302 to `to`, never cached, with no `Referer` leaking the URL it came from (a callback's
/// carries the provider's code).
fn found(to: &str) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Found();
    no_store(&mut res)
        .insert_header((header::LOCATION, to))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    res
}

/// `redirect_to` with `key=value` as its fragment.
fn with_fragment(redirect_to: &str, key: &str, value: &str) -> String {
    format!("{redirect_to}#{key}={value}")
}

/// The browser-binding cookie of the flow whose `state` this is: its name is derived from the
/// state, so that sign-ins in two tabs do not overwrite each other's.
fn binding_cookie_name(state: &str) -> String {
    let digest = sha256(state.as_bytes());
    let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("bp_oidc_{tag}")
}

fn binding_cookie(name: String, value: String, max_age: u64, secure: bool) -> Cookie<'static> {
    Cookie::build(name, value)
        .http_only(true)
        .path("/api/auth/oidc/")
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .secure(secure)
        .finish()
}

/// `redirect_to` if the allowlist admits it, else `invalid_redirect`.
pub(super) fn checked_redirect(state: &AppState, redirect_to: &str) -> Result<String, ApiError> {
    redirect::check(redirect_to, &state.redirects)
        .map(|u| u.to_string())
        .ok_or_else(|| DomainError::InvalidRedirect.into())
}

#[utoipa::path(
    get, path = "/api/auth/oidc/providers", tag = "oidc", summary = "Oidc Providers",
    description = "The configured OpenID Connect providers (\"Sign in with Google\"), in name order.",
    responses((status = 200, description = "Successful Response", body = ProviderList))
)]
pub async fn providers(state: web::Data<AppState>) -> HttpResponse {
    let providers = state
        .oidc
        .iter()
        .map(|p| ProviderInfo {
            name: p.name.clone(),
            display_name: p.display_name.clone(),
        })
        .collect();
    HttpResponse::Ok().json(ProviderList { providers })
}

/// Begins a flow: kept in the store, then the provider's authorization URL for it.
pub(super) async fn begin(
    state: &AppState,
    provider: &Provider,
    redirect_to: String,
    link: Option<(crate::domain::ids::UserId, crate::domain::ids::SessionId)>,
    binding: Option<[u8; 32]>,
) -> Result<(String, String), ApiError> {
    let secrets = state.directory.flow_secrets(None);
    // The provider first: a provider that is down leaves no flow behind.
    let url = provider
        .authorize_url(&secrets.state, &secrets.nonce, &secrets.pkce_verifier)
        .await
        .map_err(|e| {
            tracing::warn!(provider = %provider.name, error = %e, "sign-in not started");
            ApiError::ProviderUnavailable
        })?;
    let flow = Flow {
        provider: provider.name.clone(),
        redirect_to,
        link,
        binding,
    };
    if !state.directory.begin_flow(&secrets.state, flow)? {
        tracing::warn!("oidc.max_pending sign-ins in progress; start refused");
        return Err(ApiError::Overloaded);
    }
    Ok((url.to_string(), secrets.state))
}

#[utoipa::path(
    get, path = "/api/auth/oidc/{name}/start", tag = "oidc", summary = "Oidc Start",
    description = "Begin signing in with a provider: a 302 to its authorization endpoint (authorization code flow, PKCE S256, a fresh `state` and `nonce` kept by the server for 10 minutes, single-use). The browser must navigate here (not fetch): the answer sets a cookie that binds the sign-in to this browser. After the provider, the browser comes back to `redirect_to` with `#login_code=<one-time code>` (POST it to `/api/auth/oidc/exchange`) or `#error=<code>`.",
    params(
        ("name" = String, Path, description = "A provider's name from `/api/auth/oidc/providers`"),
        ("redirect_to" = String, Query, max_length = 2048, description = "The frontend URL to come back to; in `oidc.redirect_allowlist`"),
    ),
    responses(
        (status = 302, description = "To the provider's authorization endpoint"),
        (status = 400, description = "`invalid_redirect`: `redirect_to` is not in the allowlist", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider", body = ErrorBody),
        (status = 422, description = "`redirect_to` missing", body = super::respond::ValidationErrorBody),
        (status = 429, description = "Too many sign-ins begun from this client (`rate_limited`)", body = ErrorBody),
        (status = 502, description = "`provider_unavailable`: the provider's discovery document could not be fetched", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many sign-ins in progress", body = ErrorBody),
    )
)]
pub async fn start(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let provider = provider(&state, &path)?;
    let Some(raw) = query_param(&req, "redirect_to") else {
        return Err(ApiError::validation(FieldError {
            kind: "missing",
            loc: vec![Loc::Key("query".into()), Loc::Key("redirect_to".into())],
            msg: "Field required".into(),
        }));
    };
    let redirect_to = checked_redirect(&state, &raw)?;
    state.throttle.oidc_start(state.throttle.client_ip(&req))?;
    let binder = URL_SAFE_NO_PAD.encode(random_32());
    let binding = sha256(binder.as_bytes());
    let (url, flow_state) = begin(&state, provider, redirect_to, None, Some(binding)).await?;
    let cookie = binding_cookie(
        binding_cookie_name(&flow_state),
        binder,
        FLOW_TTL,
        state.config.cookie.secure,
    );
    Ok(found(&url).cookie(cookie).finish())
}

/// The `#error=` code of a provider's error answer: the few a frontend acts on, else one word.
fn provider_error_code(error: &str) -> &'static str {
    match error {
        "access_denied" => "access_denied",
        "temporarily_unavailable" | "server_error" => "provider_unavailable",
        _ => "provider_error",
    }
}

#[utoipa::path(
    get, path = "/api/auth/oidc/{name}/callback", tag = "oidc", summary = "Oidc Callback",
    description = "The redirect URI registered with the provider (`<oidc.public_url>/api/auth/oidc/<name>/callback`). Takes the flow `state` names (once), exchanges the code with its PKCE verifier, verifies the ID token (signature from the provider's JWKS, `iss`, `aud`, `nonce`, `exp`), then finds, links or creates the account and answers a 302 to `redirect_to#login_code=<code>` (a link: `redirect_to#linked=<provider>`). Errors go to `redirect_to#error=<code>`: `access_denied`, `provider_error`, `provider_unavailable`, `invalid_state` (another browser's sign-in, or another provider's), `code_refused`, `invalid_id_token`, `account_exists`, `account_deactivated`, `email_missing`, `identity_taken`, `too_many_identities`, `session_revoked`, `temporarily_unavailable`.",
    params(
        ("name" = String, Path, description = "The provider's name"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The flow's `state`"),
        ("error" = Option<String>, Query, description = "The provider's error, instead of a code"),
        ("iss" = Option<String>, Query, description = "The provider's issuer (RFC 9207); checked when present"),
    ),
    responses(
        (status = 302, description = "To `redirect_to` with `#login_code=…`, `#linked=…` or `#error=…`"),
        (status = 400, description = "`invalid_state`: no `state`, or one that names no flow (unknown, used or expired)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider", body = ErrorBody),
    )
)]
pub async fn callback(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let provider = provider(&state, &path)?;
    let flow_state = query_param(&req, "state").unwrap_or_default();
    let flow = if flow_state.is_empty() || flow_state.len() > SECRET_MAX_LEN {
        None
    } else {
        state.directory.take_flow(&flow_state)?
    };
    let Some(flow) = flow else {
        audit::record(&state, &req, None, "oidc_callback", "invalid_state");
        return Err(ApiError::InvalidState);
    };
    let cookie_name = binding_cookie_name(&flow_state);
    let clear = binding_cookie(
        cookie_name.clone(),
        String::new(),
        0,
        state.config.cookie.secure,
    );
    let back = |key: &str, value: &str| {
        found(&with_fragment(&flow.redirect_to, key, value))
            .cookie(clear.clone())
            .finish()
    };
    let fail = |code: &str| {
        audit::record(
            &state,
            &req,
            flow.link.map(|(u, _)| u),
            "oidc_callback",
            code,
        );
        back("error", code)
    };
    if flow.provider != provider.name {
        return Ok(fail("invalid_state"));
    }
    if let Some(binding) = flow.binding {
        let carried = req
            .cookie(&cookie_name)
            .map(|c| sha256(c.value().as_bytes()));
        if carried != Some(binding) {
            return Ok(fail("invalid_state"));
        }
    }
    if let Some(error) = query_param(&req, "error") {
        return Ok(fail(provider_error_code(&error)));
    }
    // RFC 9207: an `iss` that is not this provider's is a mix-up of providers.
    if let Some(iss) = query_param(&req, "iss") {
        if iss.trim_end_matches('/') != provider.issuer().trim_end_matches('/') {
            return Ok(fail("provider_error"));
        }
    }
    let Some(code) = query_param(&req, "code").filter(|c| !c.is_empty()) else {
        return Ok(fail("provider_error"));
    };
    let secrets = state.directory.flow_secrets(Some(&flow_state));
    let claims = match provider
        .finish(&code, &secrets.pkce_verifier, &secrets.nonce)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            if let OidcError::InvalidIdToken(why) = &e {
                tracing::warn!(provider = %provider.name, failed = why, "ID token refused");
            }
            return Ok(fail(e.code()));
        }
    };
    let origin = audit::origin(&state, &req, None);
    if let Some((user, session)) = flow.link {
        let msg = LinkIdentity {
            claims,
            by: LinkBy::Session(session),
            origin: audit::origin(&state, &req, Some(session)),
        };
        return Ok(match state.directory.call(user, msg).await {
            Ok(Ok(())) => back("linked", &provider.name),
            Ok(Err(e)) => fail(e.code()),
            Err(crate::actors::DirectoryError::UnknownUser) => fail("session_revoked"),
            Err(e) => {
                tracing::error!(error = %e, "link not made");
                fail("temporarily_unavailable")
            }
        });
    }
    let user = match state
        .directory
        .sign_in_with_identity(&claims, &origin)
        .await
    {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => return Ok(fail(e.code())),
        Err(e) => {
            tracing::error!(error = %e, "sign-in not decided");
            return Ok(fail("temporarily_unavailable"));
        }
    };
    match state.directory.issue_login_code(user, &provider.name) {
        Ok(Some(code)) => {
            audit::record(
                &state,
                &req,
                Some(user),
                "oidc_callback",
                "login_code_issued",
            );
            Ok(back("login_code", &code))
        }
        Ok(None) => Ok(fail("temporarily_unavailable")),
        Err(e) => {
            tracing::error!(error = %e, "login code not kept");
            Ok(fail("temporarily_unavailable"))
        }
    }
}

#[utoipa::path(
    post, path = "/api/auth/oidc/exchange", tag = "oidc", summary = "Oidc Exchange",
    description = "Exchange the one-time login code of a sign-in's callback for the answer of a login: the token response and the `bp_token` cookie, or the MFA-pending token when the user has a second factor (then `POST /api/auth/mfa/challenge`). The code is single-use and lives 60 seconds. A wrong code counts against the client address like a wrong password.",
    request_body(content = ExchangeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in: the token response, or an MFA-pending token", body = super::login::LoginResponse),
        (status = 400, description = "`invalid_code`: unknown, used or expired", body = ErrorBody),
        (status = 403, description = "`account_deactivated`, or `origin_not_allowed` (login CSRF)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many failures from this client (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn exchange(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_login_origin(&req, &state)?;
    let code = json_body(&req, payload, true, |f| {
        f.string("login_code").map(str::to_string)
    })
    .await?;
    let throttle = &state.throttle;
    let attempt = throttle.reserve_address(throttle.client_ip(&req), clock::now())?;
    let user = if code.is_empty() || code.len() > SECRET_MAX_LEN {
        Ok(None)
    } else {
        state.directory.take_login_code(&code)
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            attempt.settle(Settled::Released, clock::now());
            return Err(e.into());
        }
    };
    let user = match user.map(|id| state.directory.view(id)).transpose() {
        Ok(u) => u.flatten(),
        Err(e) => {
            attempt.settle(Settled::Released, clock::now());
            return Err(e.into());
        }
    };
    let Some(user) = user else {
        attempt.settle(Settled::Failed, clock::now());
        audit::record(&state, &req, None, "oidc_exchange", "invalid_code");
        return Err(DomainError::InvalidCode {
            attempts_left: None,
        }
        .into());
    };
    attempt.settle(Settled::Succeeded, clock::now());
    if user.status != Status::Active {
        return Err(DomainError::AccountDeactivated.into());
    }
    if user.mfa_enabled() {
        return mfa_pending(&state, &req, user.id).await;
    }
    let msg = OpenSession {
        method: LoginMethod::Oidc,
        origin: audit::origin(&state, &req, None),
    };
    let opened = unknown_user_as(
        state.directory.call(user.id, msg).await,
        DomainError::InvalidCode {
            attempts_left: None,
        },
    )??;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_cookie_is_named_for_its_flow() {
        let a = binding_cookie_name("state-a");
        assert!(
            a.starts_with("bp_oidc_") && a.len() == "bp_oidc_".len() + 12,
            "{a}"
        );
        assert_ne!(a, binding_cookie_name("state-b"));
        assert_eq!(a, binding_cookie_name("state-a"));
    }

    #[test]
    fn provider_errors_map_to_few_codes() {
        assert_eq!(provider_error_code("access_denied"), "access_denied");
        assert_eq!(provider_error_code("server_error"), "provider_unavailable");
        assert_eq!(provider_error_code("<script>"), "provider_error");
    }
}
