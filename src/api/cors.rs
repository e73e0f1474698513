//! CORS for the configured frontend origins, with credentials.
//!
//! Hand-written rather than `actix-cors`, because the contract needs "other origins get no CORS
//! headers" and an error shape for everything: actix-cors 0.7 adds
//! `Access-Control-Allow-Credentials` and the exposed headers to every response, and answers an
//! unlisted preflight with a plain-text 400. The rules themselves are few.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use super::authn::OriginConsulted;
use super::AppState;

const ALLOW_METHODS: &str = "GET, POST, PATCH, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, x-api-key, x-request-id, if-none-match";
const EXPOSE_HEADERS: &str = "etag, retry-after, x-request-id, www-authenticate";

/// The request's `Origin` if it is a configured frontend.
fn listed_origin(req: &ServiceRequest) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let state = req.app_data::<web::Data<AppState>>()?;
    let text = origin.to_str().ok()?;
    state
        .config
        .cors
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// Whether some answer of this server depends on the request's `Origin`: every answer once
/// CORS origins are configured (a listed origin gets headers the others do not).
fn cors_configured(req: &ServiceRequest) -> bool {
    req.app_data::<web::Data<AppState>>()
        .is_some_and(|s| !s.config.cors.allowed_origins.is_empty())
}

/// `Vary: Origin` on an answer that depended on the `Origin` header, so that a cache never
/// hands one origin's answer (its CORS headers, or an origin check's verdict) to another.
fn vary_origin(res: &mut ServiceResponse<BoxBody>, configured: bool) {
    let consulted = res.request().extensions().contains::<OriginConsulted>();
    if !configured && !consulted {
        return;
    }
    let h = res.headers_mut();
    let present = h
        .get_all(header::VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*");
    if !present {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let configured = cors_configured(&req);
    let Some(origin) = listed_origin(&req) else {
        let mut res = next.call(req).await?.map_into_boxed_body();
        vary_origin(&mut res, configured);
        return Ok(res);
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let res = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    vary_origin(&mut res, true);
    Ok(res)
}
