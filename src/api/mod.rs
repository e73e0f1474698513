//! The HTTP layer: the route table, shared handler state, and one file per area. Handlers are
//! thin: they parse input into domain types, authenticate, make one call to the directory, and
//! map the result. No storage access and no business rules live here.

pub mod account;
pub mod audit;
pub mod authn;
pub mod cors;
pub mod error;
pub mod extract;
pub mod meta;
pub mod mfa;
pub mod openapi;
pub mod respond;
pub mod sessions;
pub mod throttle;
pub mod verification;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::dev::HttpServiceFactory;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};
use arc_swap::ArcSwap;

use crate::actors::messages::TouchApiKey;
use crate::actors::Directory;
use crate::clock;
use crate::config::Config;
use crate::domain::apikey;
use crate::domain::entitlements::Plan;
use crate::domain::tokens::Keyring;
use crate::domain::user::Status;
use crate::domain::user::UserState;
use crate::domain::DomainError;
use crate::hashing::HashPool;
use error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub directory: Directory,
    pub hashes: HashPool,
    pub config: Arc<Config>,
    /// The configured plans, by name.
    pub plans: HashMap<String, Plan>,
    pub throttle: throttle::Throttle,
    /// Replaced whole when signing keys rotate, so a request sees one consistent set.
    pub keyring: ArcSwap<Keyring>,
}

impl AppState {
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// The user an API key belongs to. A key whose checksum fails is refused before any
    /// lookup; a found key is checked against its user's current state, so a rotated or
    /// disabled key fails at once even if the cache still knows it.
    pub fn api_key_user(&self, key: &str) -> Result<Arc<UserState>, ApiError> {
        if !apikey::well_formed(key) {
            return Err(DomainError::InvalidToken.into());
        }
        let digest = apikey::digest(key);
        let user_id = self
            .directory
            .user_by_api_key(&digest)?
            .ok_or(DomainError::InvalidToken)?;
        let user = self.directory.view(user_id)?;
        let current = user
            .as_ref()
            .filter(|u| u.status == Status::Active)
            .and_then(|u| u.api_key.as_ref())
            .filter(|k| k.digest == digest && !k.disabled);
        let (Some(user), Some(k)) = (user.clone(), current) else {
            self.directory.forget_api_key(&digest);
            return Err(DomainError::InvalidToken.into());
        };
        let now = clock::now();
        if k.last_used_at.is_none_or(|t| now.0 - t.0 >= 60) {
            self.directory.tell(user.id, TouchApiKey { digest });
        }
        Ok(user)
    }
}

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
        sessions::register,
    ))
    .service(resource("/api/auth/token", web::post, sessions::login))
    .service(resource("/api/auth/refresh", web::post, sessions::refresh))
    .service(resource("/api/auth/logout", web::post, sessions::logout))
    .service(
        web::resource("/api/auth/me")
            .route(web::get().to(sessions::me))
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
    .service(resource("/openapi.json", web::get, meta::openapi))
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
