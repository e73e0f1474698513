//! Endpoints about the server itself: health, readiness, public keys, metrics. (The OpenAPI
//! document is served by `openapi`, beside the document.)

use actix_web::{web, HttpResponse};

use super::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "meta", summary = "Health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store is open and requests are accepted (the server binds only after both),
/// until a store flush fails. Then the store's memory may hold changes that were answered 503,
/// so the server refuses loads and writes until it is restarted, and says so here for load
/// balancers and operators.
#[utoipa::path(get, path = "/readyz", tag = "meta", summary = "Ready", responses(
    (status = 200, description = "Accepting requests"),
    (status = 503, description = "A store flush failed (`storage_unavailable`): restart after fixing the disk", body = super::respond::ErrorBody),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.directory.ready() {
        return HttpResponse::Ok().json(serde_json::json!({"status": "ready"}));
    }
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "status": "not_ready",
            "detail": "A store flush failed; restart after fixing the disk",
            "code": "storage_unavailable",
        }))
}

/// Every public key that may still have live tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta", summary = "JSON Web Key Set", responses((status = 200, description = "The public signing keys")))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.keyring().jwks())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "meta", summary = "Metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = crate::metrics::get();
    m.resident_actors
        .set(i64::try_from(state.directory.resident()).unwrap_or(i64::MAX));
    m.hash_queue_depth
        .set(i64::try_from(state.hashes.depth()).unwrap_or(i64::MAX));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render())
}
