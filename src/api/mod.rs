//! The HTTP layer: the route table, shared handler state, and one file per area. Handlers are
//! thin: they parse input into domain types, authenticate, make one call to the directory, and
//! map the result. No storage access and no business rules live here.

pub mod account;
pub mod audit;
pub mod authn;
pub mod cors;
pub mod email;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod history;
pub mod identities;
pub mod login;
pub mod meta;
pub mod mfa;
pub mod oidc;
pub mod openapi;
pub mod passkeys;
pub mod password;
pub mod passwords;
pub mod register;
pub mod respond;
pub mod sessions;
mod slots;
mod state;
pub mod throttle;
pub mod verification;
pub mod verifier;

use actix_web::dev::HttpServiceFactory;
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};

use error::ApiError;
pub use state::AppState;

fn resource<F, Args>(path: &str, method: Method, handler: F) -> impl HttpServiceFactory
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let allow = method.to_string();
    web::resource(path)
        .route(web::method(method).to(handler))
        .default_service(web::to(move || method_not_allowed(allow.clone())))
}

/// Registers `/metrics` (on the API listener, or alone on a separate one).
pub fn metrics_route(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", Method::GET, meta::metrics));
}

/// Registers every API route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/api/auth/register",
        Method::POST,
        register::register,
    ))
    .service(resource("/api/auth/token", Method::POST, login::login))
    .service(resource(
        "/api/auth/refresh",
        Method::POST,
        sessions::refresh,
    ))
    .service(resource("/api/auth/logout", Method::POST, sessions::logout))
    .service(
        web::resource("/api/auth/me")
            .route(web::get().to(account::me))
            .route(web::patch().to(account::patch_me))
            .default_service(web::to(|| method_not_allowed("GET, PATCH".into()))),
    )
    .service(resource(
        "/api/auth/me/entitlements",
        Method::GET,
        account::entitlements,
    ))
    .service(resource(
        "/api/auth/me/events",
        Method::GET,
        history::events,
    ))
    .service(resource("/api/auth/sessions", Method::GET, sessions::list))
    .service(resource(
        "/api/auth/sessions/revoke-others",
        Method::POST,
        sessions::revoke_others,
    ))
    .service(resource(
        "/api/auth/sessions/{id}",
        Method::DELETE,
        sessions::revoke,
    ))
    .service(resource(
        "/api/auth/api-key",
        Method::GET,
        account::get_api_key,
    ))
    .service(resource(
        "/api/auth/api-key/rotate",
        Method::POST,
        account::rotate_api_key,
    ))
    .service(resource(
        "/api/auth/deactivate",
        Method::POST,
        account::deactivate,
    ))
    .service(resource(
        "/api/auth/verify-phone/request",
        Method::POST,
        verification::phone_request,
    ))
    .service(resource(
        "/api/auth/verify-phone/confirm",
        Method::POST,
        verification::phone_confirm,
    ))
    .service(resource(
        "/api/auth/reactivate/request",
        Method::POST,
        verification::reactivate_request,
    ))
    .service(resource(
        "/api/auth/reactivate/confirm",
        Method::POST,
        verification::reactivate_confirm,
    ))
    .service(resource(
        "/api/auth/password/change",
        Method::POST,
        password::change,
    ))
    .service(resource(
        "/api/auth/password/forgot",
        Method::POST,
        password::forgot,
    ))
    .service(resource(
        "/api/auth/password/reset",
        Method::POST,
        password::reset,
    ))
    .service(resource(
        "/api/auth/verify-email/request",
        Method::POST,
        email::verify_request,
    ))
    .service(resource(
        "/api/auth/verify-email/confirm",
        Method::POST,
        email::verify_confirm,
    ))
    .service(resource(
        "/api/auth/email/change",
        Method::POST,
        email::change,
    ))
    .service(resource(
        "/api/auth/email/change/confirm",
        Method::POST,
        email::change_confirm,
    ))
    .service(resource(
        "/api/auth/mfa/totp/setup",
        Method::POST,
        mfa::totp_setup,
    ))
    .service(resource(
        "/api/auth/mfa/totp/verify",
        Method::POST,
        mfa::totp_verify,
    ))
    .service(resource(
        "/api/auth/mfa/totp/disable",
        Method::POST,
        mfa::totp_disable,
    ))
    .service(resource(
        "/api/auth/mfa/challenge",
        Method::POST,
        mfa::challenge,
    ))
    .service(resource(
        "/api/auth/mfa/passkey/start",
        Method::POST,
        passkeys::mfa_start,
    ))
    .service(resource("/api/auth/passkeys", Method::GET, passkeys::list))
    .service(resource(
        "/api/auth/passkeys/register/start",
        Method::POST,
        passkeys::register_start,
    ))
    .service(resource(
        "/api/auth/passkeys/register/finish",
        Method::POST,
        passkeys::register_finish,
    ))
    .service(resource(
        "/api/auth/passkeys/login/start",
        Method::POST,
        passkeys::login_start,
    ))
    .service(resource(
        "/api/auth/passkeys/login/finish",
        Method::POST,
        passkeys::login_finish,
    ))
    .service(
        web::resource("/api/auth/passkeys/{id}")
            .route(web::patch().to(passkeys::rename))
            .route(web::delete().to(passkeys::remove))
            .default_service(web::to(|| method_not_allowed("PATCH, DELETE".into()))),
    )
    .service(resource(
        "/api/auth/oidc/providers",
        Method::GET,
        oidc::providers,
    ))
    .service(resource(
        "/api/auth/oidc/exchange",
        Method::POST,
        oidc::exchange,
    ))
    .service(resource(
        "/api/auth/oidc/{name}/start",
        Method::GET,
        oidc::start,
    ))
    .service(resource(
        "/api/auth/oidc/{name}/callback",
        Method::GET,
        oidc::callback,
    ))
    .service(resource(
        "/api/auth/oidc/{name}/link",
        Method::POST,
        identities::link,
    ))
    .service(resource(
        "/api/auth/identities",
        Method::GET,
        identities::identities,
    ))
    .service(resource(
        "/api/auth/identities/{id}",
        Method::DELETE,
        identities::unlink,
    ))
    .service(resource("/.well-known/jwks.json", Method::GET, meta::jwks))
    .service(resource("/openapi.json", Method::GET, openapi::serve))
    .service(resource("/healthz", Method::GET, meta::healthz))
    .service(resource("/readyz", Method::GET, meta::readyz));
}

/// 404 for every unknown path, in the contract's shape.
pub async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound)
}

/// 405 with `Allow` naming the path's methods (RFC 9110).
async fn method_not_allowed(allow: String) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}
