//! The HTTP layer: the route table, shared handler state, and one file per area. Handlers are
//! thin: they parse input into domain types, authenticate, make one call to the directory, and
//! map the result. No storage access and no business rules live here.

pub mod account;
pub mod audit;
pub mod authn;
pub mod cors;
pub mod error;
pub mod extract;
pub mod login;
pub mod meta;
pub mod mfa;
pub mod openapi;
pub mod register;
pub mod respond;
pub mod sessions;
mod state;
pub mod throttle;
pub mod verification;
pub mod verifier;

use actix_web::dev::HttpServiceFactory;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};

use error::ApiError;
pub use state::AppState;

fn resource<F, Args>(
    path: &str,
    method: fn() -> actix_web::Route,
    handler: F,
) -> impl HttpServiceFactory
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(method().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// Registers `/metrics` (on the API listener, or alone on a separate one).
pub fn metrics_route(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", web::get, meta::metrics));
}

/// Registers every API route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/api/auth/register",
        web::post,
        register::register,
    ))
    .service(resource("/api/auth/token", web::post, login::login))
    .service(resource("/api/auth/refresh", web::post, sessions::refresh))
    .service(resource("/api/auth/logout", web::post, sessions::logout))
    .service(
        web::resource("/api/auth/me")
            .route(web::get().to(account::me))
            .route(web::patch().to(account::patch_me))
            .default_service(web::to(method_not_allowed)),
    )
    .service(resource(
        "/api/auth/me/entitlements",
        web::get,
        account::entitlements,
    ))
    .service(resource(
        "/api/auth/api-key",
        web::get,
        account::get_api_key,
    ))
    .service(resource(
        "/api/auth/api-key/rotate",
        web::post,
        account::rotate_api_key,
    ))
    .service(resource(
        "/api/auth/deactivate",
        web::post,
        account::deactivate,
    ))
    .service(resource(
        "/api/auth/verify-phone/request",
        web::post,
        verification::phone_request,
    ))
    .service(resource(
        "/api/auth/verify-phone/confirm",
        web::post,
        verification::phone_confirm,
    ))
    .service(resource(
        "/api/auth/reactivate/request",
        web::post,
        verification::reactivate_request,
    ))
    .service(resource(
        "/api/auth/reactivate/confirm",
        web::post,
        verification::reactivate_confirm,
    ))
    .service(resource(
        "/api/auth/mfa/totp/setup",
        web::post,
        mfa::totp_setup,
    ))
    .service(resource(
        "/api/auth/mfa/totp/verify",
        web::post,
        mfa::totp_verify,
    ))
    .service(resource(
        "/api/auth/mfa/totp/disable",
        web::post,
        mfa::totp_disable,
    ))
    .service(resource(
        "/api/auth/mfa/challenge",
        web::post,
        mfa::challenge,
    ))
    .service(resource("/.well-known/jwks.json", web::get, meta::jwks))
    .service(resource("/openapi.json", web::get, openapi::serve))
    .service(resource("/healthz", web::get, meta::healthz))
    .service(resource("/readyz", web::get, meta::readyz));
}

/// 404 for every unknown path, in the contract's shape.
pub async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound)
}

async fn method_not_allowed() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed)
}
