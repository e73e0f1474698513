//! `GET /api/auth/me/events`: the caller's own security history, newest first.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::authn::authenticate;
use super::error::{ApiError, FieldError, Loc};
use super::respond::{no_store, ErrorBody, ValidationErrorBody};
use super::AppState;
use crate::domain::events::KEPT;

const DEFAULT_LIMIT: usize = 50;

/// One event of the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventInfo {
    pub at: String,
    /// `login`, `login_failed`, `mfa_failed`, `refresh_reused`, `logout`, `session_revoked`,
    /// `password_changed`, `password_reset`, `email_changed`, `mfa_enabled`, `mfa_disabled`,
    /// `passkey_added`, `passkey_removed`, `api_key_rotated`, `deactivated`, `reactivated`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The client address of the request (none for an operator's command).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session opened or ended, or else the one the change was made with.
    pub session_id: Option<String>,
}

/// `GET /api/auth/me/events` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Newest first; at most the last 100 are kept.
    pub events: Vec<EventInfo>,
}

/// `limit` from the query string, as FastAPI reads an `int` query parameter with
/// `ge=1, le=100`: absent means the default; the last of repeated values counts.
fn limit(query: &str) -> Result<usize, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let Some((_, raw)) = pairs.iter().rev().find(|(k, _)| k == "limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    let err = |kind, msg: &str| {
        ApiError::validation(FieldError {
            kind,
            loc: vec![Loc::Key("query".into()), Loc::Key("limit".into())],
            msg: msg.into(),
        })
    };
    let n: i64 = raw.trim().parse().map_err(|_| {
        err(
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    })?;
    if n < 1 {
        return Err(err(
            "greater_than_equal",
            "Input should be greater than or equal to 1",
        ));
    }
    if n > KEPT as i64 {
        return Err(err(
            "less_than_equal",
            "Input should be less than or equal to 100",
        ));
    }
    Ok(n as usize)
}

#[utoipa::path(
    get, path = "/api/auth/me/events", tag = "auth", summary = "Me Events",
    description = "The caller's own security history (logins, failures, revocations, changes), newest first; the last 100 are kept. Accepts an API key.",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many events (default 50)")),
    responses(
        (status = 200, description = "Successful Response", body = EventList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 422, description = "Validation Error", body = ValidationErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []))
)]
pub async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, true)?;
    let limit = limit(req.query_string())?;
    let events = caller
        .user
        .history
        .newest(limit)
        .map(|e| EventInfo {
            at: e.at.rfc3339(),
            kind: e.kind.as_str(),
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent.clone(),
            session_id: e.session.map(|s| s.to_string()),
        })
        .collect();
    Ok(no_store(&mut HttpResponse::Ok()).json(EventList { events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(q: &str) -> &'static str {
        match limit(q) {
            Err(ApiError::Validation(errors)) => errors[0].kind,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn limit_is_bounded_like_the_contract_says() {
        assert_eq!(limit("").unwrap(), 50);
        assert_eq!(limit("other=3").unwrap(), 50);
        assert_eq!(limit("limit=1").unwrap(), 1);
        assert_eq!(limit("limit=100").unwrap(), 100);
        assert_eq!(limit("limit=5&limit=7").unwrap(), 7);
        assert_eq!(rejected("limit=0"), "greater_than_equal");
        assert_eq!(rejected("limit=-3"), "greater_than_equal");
        assert_eq!(rejected("limit=101"), "less_than_equal");
        assert_eq!(rejected("limit=99999999999999999999"), "int_parsing");
        assert_eq!(rejected("limit=ten"), "int_parsing");
        assert_eq!(rejected("limit="), "int_parsing");
        assert_eq!(rejected("limit=1.5"), "int_parsing");
    }
}
