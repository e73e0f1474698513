//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    account, email, login, meta, mfa, password, register, respond, sessions, verification,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "bp-auth", description = "BlitzPulse Auth API"),
    paths(
        register::register,
        login::login,
        sessions::refresh,
        sessions::logout,
        account::me,
        account::entitlements,
        account::get_api_key,
        account::rotate_api_key,
        account::patch_me,
        account::deactivate,
        verification::phone_request,
        verification::phone_confirm,
        verification::reactivate_request,
        verification::reactivate_confirm,
        password::change,
        password::forgot,
        password::reset,
        email::verify_request,
        email::verify_confirm,
        email::change,
        email::change_confirm,
        mfa::totp_setup,
        mfa::totp_verify,
        mfa::totp_disable,
        mfa::challenge,
        meta::jwks,
        meta::healthz,
        meta::readyz,
        serve,
        meta::metrics,
    ),
    components(schemas(
        register::RegisterRequest,
        login::LoginForm,
        sessions::RefreshRequest,
        sessions::LogoutRequest,
        respond::TokenResponse,
        respond::Profile,
        respond::ErrorBody,
        respond::ValidationErrorBody,
        respond::ValidationIssue,
        account::ApiKeyResponse,
        account::ProfileUpdate,
        account::DeactivateRequest,
        verification::PhoneCodeSent,
        verification::CodeRequest,
        verification::ReactivateRequest,
        verification::ReactivateConfirm,
        password::PasswordChange,
        password::PasswordForgot,
        password::PasswordReset,
        email::EmailCodeSent,
        email::EmailChangeRequest,
        respond::EntitlementsSchema,
        login::MfaPendingResponse,
        login::LoginResponse,
        mfa::TotpSetup,
        mfa::TotpEnabled,
        mfa::TotpCode,
        mfa::ChallengeAnswer,
    )),
    modifiers(&Security),
    tags((name = "auth", description = "Authentication"), (name = "mfa", description = "Two-factor authentication"), (name = "meta", description = "About the server"))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("bp_token"))),
        );
    }
}

/// The document as served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", summary = "OpenAPI document", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_summaries_and_version() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let summary = |path: &str, method: &str| {
            doc["paths"][path][method]["summary"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(summary("/api/auth/register", "post"), "Register");
        assert_eq!(summary("/api/auth/token", "post"), "Login");
        assert_eq!(
            summary("/api/auth/refresh", "post"),
            "Refresh Token Endpoint"
        );
        assert_eq!(summary("/api/auth/logout", "post"), "Logout");
        assert_eq!(summary("/api/auth/me", "get"), "Me");
        assert_eq!(
            summary("/api/auth/me/entitlements", "get"),
            "Me Entitlements"
        );
        assert_eq!(summary("/api/auth/api-key", "get"), "Get Api Key");
        assert_eq!(
            summary("/api/auth/api-key/rotate", "post"),
            "Rotate Api Key"
        );
        assert_eq!(
            summary("/api/auth/verify-phone/request", "post"),
            "Verify Phone Request"
        );
        assert_eq!(
            summary("/api/auth/verify-phone/confirm", "post"),
            "Verify Phone Confirm"
        );
        assert_eq!(
            summary("/api/auth/reactivate/request", "post"),
            "Reactivate Request"
        );
        assert_eq!(
            summary("/api/auth/reactivate/confirm", "post"),
            "Reactivate Confirm"
        );
        assert!(
            doc["paths"]["/api/auth/token"]["post"]["requestBody"]["content"]
                ["application/x-www-form-urlencoded"]
                .is_object()
        );
    }
}
