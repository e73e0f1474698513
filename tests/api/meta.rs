//! The server's own endpoints and generic answers: health, readiness, the OpenAPI document,
//! 404 and 405 in the contract's shape, and `X-Content-Type-Options: nosniff` everywhere.

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn healthz_and_readyz_are_200() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_common_headers(res.headers());
    }
}

async fn openapi(app: &TestApp) -> Value {
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    json_of(res).await
}

#[actix_web::test]
async fn openapi_is_3_1_with_the_core_summaries() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    for (path, method, summary) in [
        ("/api/auth/register", "post", "Register"),
        ("/api/auth/token", "post", "Login"),
        ("/api/auth/refresh", "post", "Refresh Token Endpoint"),
        ("/api/auth/logout", "post", "Logout"),
        ("/api/auth/me", "get", "Me"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["summary"], summary,
            "{method} {path}"
        );
    }
    for path in [
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} documented");
    }
}

#[actix_web::test]
async fn openapi_states_request_content_types() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let content = |path: &str| doc["paths"][path]["post"]["requestBody"]["content"].clone();
    assert!(
        content("/api/auth/token")["application/x-www-form-urlencoded"].is_object(),
        "login takes a form"
    );
    for path in [
        "/api/auth/register",
        "/api/auth/refresh",
        "/api/auth/logout",
    ] {
        assert!(
            content(path)["application/json"].is_object(),
            "{path} takes JSON"
        );
    }
}

#[actix_web::test]
async fn openapi_lists_every_status_of_the_core_endpoints() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    for (path, method, statuses) in [
        (
            "/api/auth/register",
            "post",
            &["201", "409", "413", "422"][..],
        ),
        (
            "/api/auth/token",
            "post",
            &["200", "401", "403", "413", "422", "429"][..],
        ),
        (
            "/api/auth/refresh",
            "post",
            &["200", "401", "413", "422"][..],
        ),
        ("/api/auth/logout", "post", &["204", "413", "422"][..]),
        ("/api/auth/me", "get", &["200", "401"][..]),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for s in statuses {
            assert!(
                responses[*s].is_object(),
                "{method} {path} documents {s}: {responses}"
            );
        }
    }
}

#[actix_web::test]
async fn unknown_path_is_404_in_the_contract_shape() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/api/auth/nope",
        "/api/auth/me/nope",
        "/.well-known/other",
    ] {
        expect_error(app.get(path).await, 404, "not_found").await;
    }
    let res = app.post_json("/api/auth/nope", &json!({})).await;
    expect_error(res, 404, "not_found").await;
}

#[actix_web::test]
async fn wrong_method_is_405() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/api/auth/register"),
        (Method::GET, "/api/auth/token"),
        (Method::GET, "/api/auth/refresh"),
        (Method::GET, "/api/auth/logout"),
        (Method::POST, "/api/auth/me"),
        (Method::DELETE, "/api/auth/token"),
        (Method::POST, "/healthz"),
        (Method::PUT, "/.well-known/jwks.json"),
    ] {
        let res = Client::new()
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("request");
        let body = expect_error(res, 405, "method_not_allowed").await;
        assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
    }
}

#[actix_web::test]
async fn every_response_says_nosniff() {
    let app = spawn_app().await;
    let plain = Client::new();
    let e = email();
    let mut responses = vec![
        plain.get(app.url("/healthz")).send().await,
        plain.get(app.url("/readyz")).send().await,
        plain.get(app.url("/openapi.json")).send().await,
        plain.get(app.url("/.well-known/jwks.json")).send().await,
        plain.get(app.url("/nope")).send().await,
        plain.get(app.url("/api/auth/token")).send().await,
        plain.get(app.url("/api/auth/me")).send().await,
        plain
            .post(app.url("/api/auth/register"))
            .json(&json!({"email": e, "password": PASSWORD}))
            .send()
            .await,
        plain
            .post(app.url("/api/auth/register"))
            .json(&json!({"email": e, "password": PASSWORD}))
            .send()
            .await,
        plain
            .post(app.url("/api/auth/register"))
            .json(&json!({}))
            .send()
            .await,
        plain
            .post(app.url("/api/auth/register"))
            .header("content-type", "application/json")
            .body("x".repeat(20 * 1024))
            .send()
            .await,
        plain
            .post(app.url("/api/auth/token"))
            .form(&[
                ("username", e.as_str()),
                ("password", "wrong password here"),
            ])
            .send()
            .await,
        plain.post(app.url("/api/auth/logout")).send().await,
        plain
            .post(app.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": "bprt_x"}))
            .send()
            .await,
    ];
    let login = plain
        .post(app.url("/api/auth/token"))
        .form(&[("username", e.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    assert_common_headers(login.headers());
    let t = Tokens::from_json(&json_of(login).await);
    responses.push(
        plain
            .get(app.url("/api/auth/me"))
            .bearer_auth(&t.access)
            .send()
            .await,
    );
    responses.push(
        plain
            .post(app.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": t.refresh}))
            .send()
            .await,
    );
    let mut statuses = Vec::new();
    for res in responses {
        let res = res.expect("response");
        statuses.push(res.status().as_u16());
        assert_common_headers(res.headers());
    }
    for s in [200, 201, 204, 401, 404, 405, 409, 413, 422] {
        assert!(statuses.contains(&s), "covered {s}: {statuses:?}");
    }
}

/// The request schemas state what the server enforces (`password.min_length` as configured), so
/// that a client generating requests from the document is never refused with 422.
#[actix_web::test]
async fn openapi_request_schemas_state_what_the_server_enforces() {
    let app = spawn_app_with(|c| c.password.min_length = 12).await;
    let doc = openapi(&app).await;
    let schemas = &doc["components"]["schemas"];
    let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();

    let email = prop("RegisterRequest", "email");
    assert_eq!(email["format"], "email", "{email}");
    assert_eq!(email["maxLength"], 254, "{email}");
    assert!(email["pattern"]
        .as_str()
        .is_some_and(|p| p.starts_with('^') && p.ends_with('$')));
    let password = prop("RegisterRequest", "password");
    assert_eq!(
        password["minLength"], 12,
        "the configured minimum: {password}"
    );
    assert_eq!(password["maxLength"], 128, "{password}");
    for schema in ["RegisterRequest", "ProfileUpdate"] {
        let name = prop(schema, "full_name");
        assert_eq!(name["maxLength"], 100, "{schema}: {name}");
        assert_eq!(
            name["pattern"], r"^[^\x00-\x1F\x7F-\x9F]*$",
            "{schema}: {name}"
        );
        let phone = prop(schema, "phone");
        assert_eq!(
            phone["pattern"], r"^\+[1-9][0-9]{6,14}$",
            "{schema}: {phone}"
        );
    }
    for schema in ["ReactivateRequest", "ReactivateConfirm"] {
        let other = prop(schema, "email");
        for keyword in ["type", "format", "maxLength", "pattern"] {
            assert_eq!(
                other[keyword], email[keyword],
                "{schema} takes an address like register"
            );
        }
    }

    for field in ["username", "password"] {
        assert_eq!(
            prop("LoginForm", field)["minLength"],
            1,
            "an empty {field} is missing"
        );
    }
    let grant = prop("LoginForm", "grant_type");
    assert_eq!(grant["pattern"], "^password$", "{grant}");
    assert_eq!(
        grant["type"], "string",
        "a form field is never null: {grant}"
    );
    assert!(!schemas["LoginForm"]["required"]
        .as_array()
        .unwrap()
        .contains(&json!("grant_type")));

    // The challenge needs a code, a recovery code, or a passkey's ceremony and credential.
    let any_of = &schemas["ChallengeAnswer"]["anyOf"];
    let required: Vec<&Value> = any_of
        .as_array()
        .expect("anyOf")
        .iter()
        .map(|b| &b["required"])
        .collect();
    assert_eq!(
        required,
        [
            &json!(["code"]),
            &json!(["recovery_code"]),
            &json!(["challenge_id", "credential"])
        ],
        "{any_of}"
    );
    // Logout's body is optional, and an object when sent: `null` is not one.
    let logout = &doc["paths"]["/api/auth/logout"]["post"]["requestBody"];
    assert_eq!(
        logout["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/LogoutRequest"}),
        "{logout}"
    );
    assert_eq!(
        prop("LogoutRequest", "everywhere")["type"],
        json!(["boolean", "null"]),
        "the server reads `null` as absent"
    );
}

/// Values at the edges of what the document admits are accepted, and the next ones out are 422.
#[actix_web::test]
async fn the_documented_bounds_are_the_enforced_ones() {
    let app = spawn_app_with(|c| c.password.min_length = 12).await;
    let password = |n: usize| -> String { "k9Qz".chars().cycle().take(n).collect() };
    // a@ + three 63-letter labels + a 60-letter last label: 254 characters.
    let longest_email = format!(
        "a@{}.{}.{}.{}",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(60)
    );
    assert_eq!(longest_email.len(), 254);
    for (body, what) in [
        (
            json!({"email": email(), "password": password(12)}),
            "shortest password",
        ),
        (
            json!({"email": email(), "password": password(128)}),
            "longest password",
        ),
        (
            json!({"email": longest_email, "password": PASSWORD}),
            "longest email",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "full_name": "n".repeat(100)}),
            "longest name",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "phone": "+1234567"}),
            "shortest phone",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "phone": "+123456789012345"}),
            "longest phone",
        ),
    ] {
        let res = app.register_raw(&body).await;
        assert_eq!(res.status(), 201, "{what}: {}", res.text().await.unwrap());
    }
    for (body, field, kind) in [
        (
            json!({"email": email(), "password": password(11)}),
            "password",
            "string_too_short",
        ),
        (
            json!({"email": email(), "password": password(129)}),
            "password",
            "string_too_long",
        ),
        (
            json!({"email": format!("a{longest_email}"), "password": PASSWORD}),
            "email",
            "string_too_long",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "full_name": "n".repeat(101)}),
            "full_name",
            "string_too_long",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "phone": "+123456"}),
            "phone",
            "string_pattern_mismatch",
        ),
    ] {
        let detail = expect_validation(app.register_raw(&body).await).await;
        assert_eq!(detail[0]["loc"], json!(["body", field]), "{detail:?}");
        assert_eq!(detail[0]["type"], kind, "{field}: {detail:?}");
    }
}

/// Each request example in the document is one the server takes (the examples phase of the
/// fuzzer sends them).
#[actix_web::test]
async fn the_documented_request_examples_are_accepted() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let example = |schema: &str| doc["components"]["schemas"][schema]["example"].clone();

    let register = example("RegisterRequest");
    let res = app.register_raw(&register).await;
    assert_eq!(res.status(), 201, "{register}");
    let login = example("LoginForm");
    let form: Vec<(String, String)> = login
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let res = Client::new()
        .post(app.url("/api/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{login}");
    let t = Tokens::from_json(&json_of(res).await);

    let res = app.patch_me(&t.access, &example("ProfileUpdate")).await;
    assert_eq!(res.status(), 200);
    let res = app
        .post_json(
            "/api/auth/reactivate/request",
            &example("ReactivateRequest"),
        )
        .await;
    assert_eq!(res.status(), 204);
    // Well-formed, and refused for what they say, not how.
    let res = app
        .post_json("/api/auth/refresh", &example("RefreshRequest"))
        .await;
    expect_error(res, 401, "invalid_refresh_token").await;
    let res = app
        .post_json(
            "/api/auth/reactivate/confirm",
            &example("ReactivateConfirm"),
        )
        .await;
    expect_error(res, 400, "invalid_code").await;
    let res = app
        .logout_bearer(Some(&t.access), &example("LogoutRequest"))
        .await;
    assert_eq!(res.status(), 204);
}
