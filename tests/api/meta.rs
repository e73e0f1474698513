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
