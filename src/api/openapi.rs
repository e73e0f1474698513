//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    account, email, history, identities, login, meta, mfa, oidc, passkeys, password, register,
    respond, sessions, verification, AppState,
};
use crate::config::Config;
use crate::domain::credentials::{
    Email, NewPassword, FULL_NAME_MAX_LEN, FULL_NAME_PATTERN, PHONE_PATTERN,
};
use crate::domain::passkeys::{
    NAME_MAX_LEN as PASSKEY_NAME_MAX_LEN, NAME_PATTERN as PASSKEY_NAME_PATTERN,
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
        history::events,
        sessions::list,
        sessions::revoke,
        sessions::revoke_others,
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
        passkeys::mfa_start,
        passkeys::register_start,
        passkeys::register_finish,
        passkeys::list,
        passkeys::rename,
        passkeys::remove,
        passkeys::login_start,
        passkeys::login_finish,
        oidc::providers,
        oidc::start,
        oidc::callback,
        oidc::exchange,
        identities::identities,
        identities::link,
        identities::unlink,
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
        sessions::SessionInfo,
        sessions::SessionList,
        history::EventInfo,
        history::EventList,
        passkeys::PasskeyOptions,
        passkeys::PasskeyInfo,
        passkeys::PasskeyList,
        passkeys::PasskeyRegisterFinish,
        passkeys::PasskeyRename,
        passkeys::PasskeyLoginStart,
        passkeys::PasskeyLoginFinish,
        oidc::ProviderInfo,
        oidc::ProviderList,
        oidc::ExchangeRequest,
        identities::LinkRequest,
        identities::LinkStarted,
        identities::IdentityInfo,
        identities::IdentityList,
    )),
    modifiers(&Security),
    tags((name = "auth", description = "Authentication"), (name = "mfa", description = "Two-factor authentication"), (name = "passkeys", description = "Passkeys (WebAuthn)"), (name = "oidc", description = "Sign in with Google (any OpenID Connect provider)"), (name = "meta", description = "About the server"))
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

/// The document as served at `/openapi.json` by a server with this configuration.
pub fn document(config: &Config) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    state_the_parsers_rules(&mut doc, config);
    spell_links_in_camel_case(&mut doc);
    // Logout's and a passkey login start's bodies are optional, but when sent they are objects:
    // `null` is not one. (utoipa can say "optional" only with `Option<…>`, which it renders as
    // "this schema or null".)
    for (path, schema) in [
        (
            "/paths/~1api~1auth~1logout/post/requestBody",
            "LogoutRequest",
        ),
        (
            "/paths/~1api~1auth~1passkeys~1login~1start/post/requestBody",
            "PasskeyLoginStart",
        ),
        (
            "/paths/~1api~1auth~1oidc~1{name}~1link/post/requestBody",
            "LinkRequest",
        ),
    ] {
        if let Some(body) = doc.pointer_mut(path) {
            body["content"]["application/json"]["schema"] =
                json!({"$ref": format!("#/components/schemas/{schema}")});
            if let Some(body) = body.as_object_mut() {
                body.remove("required");
            }
        }
    }
    // The challenge takes a TOTP `code`, a `recovery_code`, or a passkey's `challenge_id` and
    // `credential`, and refuses a body with none of them.
    if let Some(answer) = doc.pointer_mut("/components/schemas/ChallengeAnswer") {
        answer["anyOf"] = json!([
            {"required": ["code"], "properties": {"code": {"type": "string"}}},
            {"required": ["recovery_code"], "properties": {"recovery_code": {"type": "string"}}},
            {"required": ["challenge_id", "credential"], "properties": {
                "challenge_id": {"type": "string"}, "credential": {"type": "object"}}},
        ]);
    }
    doc
}

/// The fields whose values a parser in `domain::credentials` checks, and what it checks, so
/// that a request the document admits is never refused with 422: `(schema, property, rules)`.
fn parsed_fields(config: &Config) -> Vec<(&'static str, &'static str, Value)> {
    let email = json!({"format": "email", "maxLength": Email::MAX_LEN, "pattern": Email::PATTERN});
    let new_password = json!({
        "minLength": config.password.min_length,
        "maxLength": NewPassword::MAX_LEN,
    });
    let full_name = json!({"maxLength": FULL_NAME_MAX_LEN, "pattern": FULL_NAME_PATTERN});
    let phone = json!({"pattern": PHONE_PATTERN});
    let passkey_name = json!({"maxLength": PASSKEY_NAME_MAX_LEN, "pattern": PASSKEY_NAME_PATTERN});
    vec![
        ("RegisterRequest", "email", email.clone()),
        ("RegisterRequest", "password", new_password.clone()),
        ("PasswordChange", "new_password", new_password.clone()),
        ("PasswordReset", "new_password", new_password),
        ("PasswordForgot", "email", email.clone()),
        ("EmailChangeRequest", "new_email", email.clone()),
        // Not parsed (an unknown address answers `invalid_code`), but the same kind of value.
        ("PasswordReset", "email", email.clone()),
        ("RegisterRequest", "full_name", full_name.clone()),
        ("RegisterRequest", "phone", phone.clone()),
        ("ProfileUpdate", "full_name", full_name),
        ("ProfileUpdate", "phone", phone),
        ("ReactivateRequest", "email", email.clone()),
        // Not parsed (an address that cannot register cannot be reactivated, and the answer is
        // `invalid_code` either way), but the same kind of value.
        ("ReactivateConfirm", "email", email.clone()),
        ("PasskeyLoginStart", "email", email),
        ("PasskeyRegisterFinish", "name", passkey_name.clone()),
        ("PasskeyRename", "name", passkey_name),
    ]
}

/// utoipa 5 writes a link's fields as `operation_id` and `request_body`; OpenAPI spells them
/// `operationId` and `requestBody`, and tools ignore the others.
fn spell_links_in_camel_case(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_string(), value);
                }
            }
        }
    }
}

fn state_the_parsers_rules(doc: &mut Value, config: &Config) {
    for (schema, property, rules) in parsed_fields(config) {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        match (doc.pointer_mut(&pointer), rules) {
            (Some(Value::Object(target)), Value::Object(rules)) => target.extend(rules),
            _ => tracing::error!(%pointer, "OpenAPI: no such property to constrain"),
        }
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", summary = "OpenAPI document", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&state.config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parsed_field_is_constrained() {
        let config = Config::default();
        let doc = document(&config);
        for (schema, property, rules) in parsed_fields(&config) {
            let stated = &doc["components"]["schemas"][schema]["properties"][property];
            for (keyword, value) in rules.as_object().unwrap() {
                assert_eq!(&stated[keyword], value, "{schema}.{property}.{keyword}");
            }
        }
    }

    #[test]
    fn the_password_length_is_the_configured_one() {
        let mut config = Config::default();
        config.password.min_length = 12;
        let doc = document(&config);
        let password = &doc["components"]["schemas"]["RegisterRequest"]["properties"]["password"];
        assert_eq!(password["minLength"], 12);
        assert_eq!(password["maxLength"], 128);
    }

    #[test]
    fn links_are_spelled_as_openapi_spells_them() {
        let doc = document(&Config::default());
        let links = &doc["paths"]["/api/auth/token"]["post"]["responses"]["200"]["links"];
        let refresh = &links["Refresh"];
        assert_eq!(refresh["operationId"], "refresh", "{links}");
        assert_eq!(
            refresh["requestBody"]["refresh_token"],
            "$response.body#/refresh_token"
        );
        assert!(refresh.get("operation_id").is_none() && refresh.get("request_body").is_none());
    }

    #[test]
    fn core_summaries_and_version() {
        let doc = document(&Config::default());
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
