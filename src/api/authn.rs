//! Who is calling. The `Authorization` header alone is used when present, else `X-API-Key`,
//! else the `bp_token` cookie; credentials in the URL are never looked at.
//!
//! Access tokens are verified here, in the handler, without touching an actor; the session is
//! then checked against the user's published view, so a revoked session fails at once.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::clock;
use crate::domain::ids::SessionId;
use crate::domain::tokens::Claims;
use crate::domain::user::UserState;
use crate::domain::DomainError;

pub const COOKIE_NAME: &str = "bp_token";
const API_KEY_PREFIX: &str = "bpk_";

/// A credential as presented, before it is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    None,
    /// `Authorization` present but not a bearer credential.
    Malformed,
    Jwt(String),
    ApiKey(String),
}

/// Picks the one credential the precedence rules say to use.
pub fn presented(req: &HttpRequest) -> Presented {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Presented::Malformed;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return Presented::Malformed;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Malformed;
        }
        let token = token.trim();
        return if token.starts_with(API_KEY_PREFIX) {
            Presented::ApiKey(token.to_string())
        } else {
            Presented::Jwt(token.to_string())
        };
    }
    if let Some(value) = req.headers().get("x-api-key") {
        return Presented::ApiKey(value.to_str().unwrap_or_default().trim().to_string());
    }
    match req.cookie(COOKIE_NAME) {
        Some(c) if !c.value().is_empty() => Presented::Jwt(c.value().to_string()),
        _ => Presented::None,
    }
}

/// Whether the request's credential came from the cookie (which browsers attach on their own,
/// so cross-site checks apply).
pub fn uses_cookie(req: &HttpRequest) -> bool {
    !req.headers().contains_key(header::AUTHORIZATION)
        && !req.headers().contains_key("x-api-key")
        && req.cookie(COOKIE_NAME).is_some()
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Session { sid: SessionId, claims: Claims },
    ApiKey,
}

/// An authenticated caller and the published view of their state.
#[derive(Clone)]
pub struct Caller {
    pub user: Arc<UserState>,
    pub via: Via,
}

/// `scheme://host[:port]` in one spelling: lowercase, the scheme's default port explicit.
/// The scheme is part of it: `https://h:8080` is another origin than `http://h:8080`. Only
/// `http` and `https` name an origin this server can have.
fn normal_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = rest.split('/').next()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{default_port}")
    })
}

/// Marks a request whose answer depended on its `Origin` header (present or not), so that the
/// CORS layer adds `Vary: Origin` even when no CORS origins are configured.
#[derive(Debug, Clone, Copy)]
pub struct OriginConsulted;

/// Whether `origin` may act with the user's cookie: the server's own origin (as the client
/// addressed it; see [`super::forwarded`]) or a configured frontend. `null` is neither.
fn origin_allowed(req: &HttpRequest, state: &AppState, origin: &str) -> bool {
    let listed = state.config.cors.allowed_origins.iter().any(|o| {
        o.trim_end_matches('/')
            .eq_ignore_ascii_case(origin.trim_end_matches('/'))
    });
    if listed {
        return true;
    }
    let own = super::forwarded::addressed(req, &state.config.server.trusted_proxies).origin();
    matches!((normal_origin(origin), normal_origin(&own)), (Some(a), Some(b)) if a == b)
}

/// Refuses a request whose `Origin` is present and not allowed; no `Origin` passes (it is not
/// a browser's cross-origin request, or the browser is too old to send one).
fn check_origin_header(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    req.extensions_mut().insert(OriginConsulted);
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    match origin.to_str() {
        Ok(origin) if origin_allowed(req, state, origin) => Ok(()),
        _ => Err(DomainError::OriginNotAllowed.into()),
    }
}

/// Cross-site defence for cookie-authenticated changes: an `Origin` that is neither this
/// server's own nor a configured frontend is refused.
fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    check_origin_header(req, state)
}

/// Login CSRF: a page on another site must not sign the browser into an account of the
/// attacker's choosing. The login carries no cookie to check, so its `Origin` alone decides.
pub fn check_login_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    check_origin_header(req, state)
}

/// Authenticates a request. `api_key_ok` marks the endpoints that accept an API key; the
/// others answer 403 `session_required` to one. Cookie-authenticated changes also pass the
/// origin check.
pub fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    api_key_ok: bool,
) -> Result<Caller, ApiError> {
    let caller = authenticate_credential(req, state, api_key_ok)?;
    if uses_cookie(req) {
        check_origin(req, state)?;
    }
    Ok(caller)
}

/// [`authenticate`] (sessions only) for the endpoints that create or reveal a secret: the API
/// key, a TOTP secret, recovery codes. A cookie-authenticated request that the browser says
/// comes from another site (`Sec-Fetch-Site: cross-site`) is refused, a GET too (which the
/// origin check lets through): no other site's page has any business with these answers.
pub fn authenticate_for_secret(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let caller = authenticate(req, state, false)?;
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"));
    if cross_site && uses_cookie(req) {
        return Err(DomainError::OriginNotAllowed.into());
    }
    Ok(caller)
}

/// How young an access token must be for an unknown session to be looked up in the store
/// before it is refused: another node's notice of a login is normally milliseconds behind its
/// answer, and the nodes' clocks may disagree by a few seconds.
const JUST_ISSUED_SECONDS: i64 = 10;

fn authenticate_credential(
    req: &HttpRequest,
    state: &AppState,
    api_key_ok: bool,
) -> Result<Caller, ApiError> {
    match presented(req) {
        Presented::None | Presented::Malformed => Err(DomainError::NotAuthenticated.into()),
        Presented::ApiKey(key) => {
            if !api_key_ok {
                return Err(DomainError::SessionRequired.into());
            }
            let user = state.api_key_user(&key)?;
            Ok(Caller {
                user,
                via: Via::ApiKey,
            })
        }
        Presented::Jwt(token) => {
            let now = clock::now();
            let claims = state
                .keyring()
                .verify_access_cached(&token, now)
                .map_err(DomainError::from)?;
            let sid = claims.sid.ok_or(DomainError::InvalidToken)?;
            let user = state
                .directory
                .view(claims.sub)?
                .ok_or(DomainError::InvalidToken)?;
            let user = if user.session(sid, now).is_some() {
                user
            } else if now.0.saturating_sub(claims.iat) <= JUST_ISSUED_SECONDS {
                // Issued moments ago, perhaps by another node whose notice of the new session
                // has not arrived: the stored user decides. Bounded: only a token this young,
                // and one revision read unless the view is behind.
                state
                    .directory
                    .view_as_stored(claims.sub)?
                    .filter(|u| u.session(sid, now).is_some())
                    .ok_or(DomainError::SessionRevoked)?
            } else {
                return Err(DomainError::SessionRevoked.into());
            };
            Ok(Caller {
                user,
                via: Via::Session { sid, claims },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_with_scheme_and_default_port() {
        assert_eq!(
            normal_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normal_origin("https://app.example.com").as_deref(),
            Some("https://app.example.com:443")
        );
        assert_eq!(
            normal_origin("HTTP://App.Example.com/").as_deref(),
            Some("http://app.example.com:80")
        );
        assert_ne!(
            normal_origin("https://localhost:8080"),
            normal_origin("http://localhost:8080")
        );
        assert_eq!(normal_origin("null"), None);
        assert_eq!(normal_origin("chrome-extension://abc"), None);
    }
}
