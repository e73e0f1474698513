//! `POST /api/auth/token`: the OAuth2 password flow, its token response, cookie and JWT, the
//! failures that must not tell users apart, and the form's validation.

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

async fn jwks_kid(app: &TestApp) -> String {
    app.jwks().await["keys"][0]["kid"]
        .as_str()
        .expect("a kid in the JWKS")
        .to_string()
}

async fn post_form(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    Client::new()
        .post(app.url("/api/auth/token"))
        .form(fields)
        .send()
        .await
        .expect("login")
}

/// The login cookie's attributes other than `Secure`: `HttpOnly`, `Path=/`, `SameSite=Lax` and
/// the access token's 900 s as `Max-Age`.
fn assert_session_cookie_attributes(cookie: &SetCookie) {
    assert!(cookie.has("httponly"), "{cookie:?}");
    assert_eq!(cookie.get("path"), Some("/"));
    assert_eq!(
        cookie
            .get("samesite")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("lax")
    );
    assert_eq!(cookie.get("max-age"), Some("900"));
}

#[actix_web::test]
async fn token_response_has_the_contract_shape() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = app.login_raw(&e, PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_no_store(res.headers());
    let body = json_of(res).await;
    let t = assert_token_response(&body, 900);
    let res = app.me(&t.access).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn login_sets_the_cookie_without_secure_when_configured_off() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = app.login_raw(&e, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let cookie = bp_token_cookie(res.headers());
    let body = json_of(res).await;
    assert_eq!(cookie.value, body["access_token"].as_str().expect("token"));
    assert_session_cookie_attributes(&cookie);
    assert!(!cookie.has("secure"), "cookie.secure = false: {cookie:?}");
}

#[actix_web::test]
async fn cookie_is_secure_by_default() {
    let app = spawn_app_with(|c| c.cookie.secure = true).await;
    let e = email();
    app.register(&e).await;
    let res = app.login_raw(&e, PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert_no_store(res.headers());
    let cookie = bp_token_cookie(res.headers());
    assert!(!cookie.value.is_empty());
    assert!(cookie.has("secure"), "{cookie:?}");
    assert_session_cookie_attributes(&cookie);
}

#[actix_web::test]
async fn access_token_header_and_claims() {
    let app = spawn_app().await;
    let e = email();
    let profile = app.register(&e).await;
    let before = now_secs();
    let t = app.login(&e).await;
    let after = now_secs();
    let kid = jwks_kid(&app).await;
    assert_eq!(
        jwt_header(&t.access),
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}),
        "the header is exactly alg, typ and kid"
    );
    let c = jwt_claims(&t.access);
    let obj = c.as_object().expect("claims object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["aud", "exp", "iat", "iss", "jti", "role", "sid", "sub", "tid"],
        "{c}"
    );
    assert_eq!(c["iss"], "bp-auth");
    assert_eq!(c["aud"], "blitzpulse");
    assert_eq!(c["sub"], profile["id"]);
    assert_eq!(c["tid"], profile["tenant_id"]);
    assert_eq!(c["role"], "owner");
    assert_uuid_v7(&c["sid"], "sid");
    assert_uuid_v7(&c["jti"], "jti");
    let iat = c["iat"].as_i64().expect("iat is an integer");
    let exp = c["exp"].as_i64().expect("exp is an integer");
    assert!((before - 1..=after + 1).contains(&iat), "iat is now: {iat}");
    assert_eq!(exp - iat, 900);
}

#[actix_web::test]
async fn wrong_password_and_unknown_email_answer_the_same() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let wrong = app.login_raw(&e, "not the password at all").await;
    assert!(!wrong.headers().contains_key("set-cookie"));
    let wrong = expect_error(wrong, 401, "invalid_credentials").await;
    let unknown = app.login_raw(&email(), PASSWORD).await;
    assert!(!unknown.headers().contains_key("set-cookie"));
    let unknown = expect_error(unknown, 401, "invalid_credentials").await;
    assert_eq!(wrong, unknown, "identical bodies");
    // A username that is not even an email, and an overlong password, answer the same.
    let odd = expect_error(
        app.login_raw("not-an-email", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(odd, wrong);
    let long = expect_error(
        app.login_raw(&e, &"x".repeat(200)).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(long, wrong);
}

#[actix_web::test]
async fn email_is_matched_case_insensitively() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let registered = format!("Mixed.Case-{id}@Example.com");
    let p = app.register(&registered).await;
    for variant in [
        registered.to_lowercase(),
        registered.to_uppercase(),
        registered.clone(),
    ] {
        let res = app.login_raw(&variant, PASSWORD).await;
        assert_eq!(res.status(), 200, "{variant}");
        let t = Tokens::from_json(&json_of(res).await);
        assert_eq!(jwt_claims(&t.access)["sub"], p["id"]);
    }
    // The profile keeps the address as registered.
    let t = app.login(&registered.to_uppercase()).await;
    let me = json_of(app.me(&t.access).await).await;
    assert_eq!(me["email"], registered);
}

#[actix_web::test]
async fn grant_type_other_than_password_is_422() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = post_form(
        &app,
        &[
            ("grant_type", "foo"),
            ("username", &e),
            ("password", PASSWORD),
        ],
    )
    .await;
    expect_issues(res, &[("*", &["body", "grant_type"])]).await;
    let res = post_form(
        &app,
        &[
            ("grant_type", "password"),
            ("username", &e),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn missing_username_and_password_are_each_reported() {
    let app = spawn_app().await;
    expect_issues(
        post_form(&app, &[]).await,
        &[
            ("missing", &["body", "username"]),
            ("missing", &["body", "password"]),
        ],
    )
    .await;
    expect_issues(
        post_form(&app, &[("username", "a@example.com")]).await,
        &[("missing", &["body", "password"])],
    )
    .await;
    expect_issues(
        post_form(&app, &[("password", PASSWORD)]).await,
        &[("missing", &["body", "username"])],
    )
    .await;
}

#[actix_web::test]
async fn a_json_body_is_an_empty_form() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = app
        .post_json(
            "/api/auth/token",
            &json!({"username": e, "password": PASSWORD}),
        )
        .await;
    expect_issues(
        res,
        &[
            ("missing", &["body", "username"]),
            ("missing", &["body", "password"]),
        ],
    )
    .await;
}

#[actix_web::test]
async fn oauth2_client_extras_are_accepted() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = Client::new()
        .post(app.url("/api/auth/token"))
        .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .form(&[
            ("grant_type", "password"),
            ("username", e.as_str()),
            ("password", PASSWORD),
            ("scope", "read write"),
            ("client_id", "client"),
            ("client_secret", "secret"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let body: Value = json_of(res).await;
    assert_token_response(&body, 900);
}

#[actix_web::test]
async fn each_login_opens_a_new_session() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let a = app.login(&e).await;
    let b = app.login(&e).await;
    let (ca, cb) = (jwt_claims(&a.access), jwt_claims(&b.access));
    assert_ne!(ca["sid"], cb["sid"], "a login is a new session");
    assert_ne!(ca["jti"], cb["jti"]);
    assert_ne!(a.refresh, b.refresh);
    assert_eq!(app.me(&a.access).await.status(), 200);
    assert_eq!(app.me(&b.access).await.status(), 200);
}

#[actix_web::test]
async fn form_over_16_kib_is_413() {
    let app = spawn_app().await;
    let e = email();
    let padding = "x".repeat(20 * 1024);
    let res = post_form(
        &app,
        &[
            ("username", e.as_str()),
            ("password", PASSWORD),
            ("scope", &padding),
        ],
    )
    .await;
    expect_error(res, 413, "payload_too_large").await;
    let head = format!("username={e}&password=x&scope=");
    let raw = chunked_post(
        app.port,
        "/api/auth/token",
        "application/x-www-form-urlencoded",
        &oversized_chunks(head.as_bytes(), b""),
    )
    .await;
    expect_raw_error(&raw, 413, "payload_too_large");
}
