//! Who is calling. The `Authorization` header alone is used when present, else `X-API-Key`,
//! else the `bp_token` cookie; credentials in the URL are never looked at.
//!
//! Access tokens are verified here, in the handler, without touching an actor; the session is
//! then checked against the user's published view, so a revoked session fails at once.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;

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

/// `scheme://host[:port]` → `host:port`, with the scheme's default port made explicit.
fn authority(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let host = rest.split('/').next()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port {
        host
    } else if scheme == "https" {
        format!("{host}:443")
    } else {
        format!("{host}:80")
    })
}

/// Cross-site defence for cookie-authenticated changes: an `Origin` that is neither this
/// server's own (its host and port equal to `Host`) nor a configured frontend is refused.
fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let listed = state.config.cors.allowed_origins.iter().any(|o| {
        o.trim_end_matches('/')
            .eq_ignore_ascii_case(origin.trim_end_matches('/'))
    });
    if listed {
        return Ok(());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let scheme = req.connection_info().scheme().to_string();
    match (authority(origin), authority(&format!("{scheme}://{host}"))) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(DomainError::OriginNotAllowed.into()),
    }
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
            if user.session(sid, now).is_none() {
                return Err(DomainError::SessionRevoked.into());
            }
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
    fn authorities_compare_with_default_ports() {
        assert_eq!(
            authority("http://localhost:8080").as_deref(),
            Some("localhost:8080")
        );
        assert_eq!(
            authority("https://app.example.com").as_deref(),
            Some("app.example.com:443")
        );
        assert_eq!(
            authority("http://App.Example.com/").as_deref(),
            Some("app.example.com:80")
        );
        assert_eq!(authority("null"), None);
    }
}
