//! `POST /api/auth/deactivate` and reactivation by emailed code (`POST /api/auth/reactivate/request`
//! and `/confirm`).

use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::*;

pub(crate) async fn deactivate(app: &TestApp, token: &str, password: &str) -> Response {
    app.post_bearer(
        "/api/auth/deactivate",
        token,
        Some(&json!({ "password": password })),
    )
    .await
}

pub(crate) async fn reactivate_request(app: &TestApp, email: &str) -> Response {
    app.post_json("/api/auth/reactivate/request", &json!({ "email": email }))
        .await
}

pub(crate) async fn reactivate_confirm(app: &TestApp, email: &str, code: &str) -> Response {
    app.post_json(
        "/api/auth/reactivate/confirm",
        &json!({ "email": email, "code": code }),
    )
    .await
}

/// The exact email line for `user_id`; returns its code.
fn assert_email_line(line: &Value, to: &str, user_id: &Value) -> String {
    assert_outbox_line(line, "email", "reactivate", to, user_id)
}

/// The answer is 204 with an empty body.
async fn expect_no_content(res: Response) {
    assert_eq!(res.status(), 204);
    assert_common_headers(res.headers());
    assert!(res.bytes().await.unwrap().is_empty());
}

/// A registered, logged-in user with an API key, deactivated; returns email, id, tokens, key.
async fn deactivated_user(app: &TestApp) -> (String, Value, Tokens, String) {
    let e = email();
    let profile = app.register(&e).await;
    let t = app.login(&e).await;
    let key = app.new_api_key(&t.access).await;
    let res = deactivate(app, &t.access, PASSWORD).await;
    assert_eq!(res.status(), 204);
    (e, profile["id"].clone(), t, key)
}

#[actix_web::test]
async fn a_wrong_password_does_not_deactivate() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = deactivate(&app, &t.access, "not the password at all").await;
    expect_error(res, 403, "invalid_credentials").await;
    let res = app.me(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["status"], "active");
}

#[actix_web::test]
async fn deactivation_ends_every_credential() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let t = app.login(&e).await;
    let other = app.login(&e).await;
    let key = app.new_api_key(&t.access).await;
    assert_eq!(
        app.get_with_api_key("/api/auth/me", &key).await.status(),
        200
    );

    let res = deactivate(&app, &t.access, PASSWORD).await;
    assert_eq!(res.status(), 204);
    assert_common_headers(res.headers());
    assert_clears_cookie(res.headers());
    assert!(res.bytes().await.unwrap().is_empty());

    // Every session, not only the caller's.
    for access in [&t.access, &other.access] {
        let res = app.me(access).await;
        expect_error(res, 401, "session_revoked").await;
    }
    for refresh in [&t.refresh, &other.refresh] {
        let res = app.refresh_raw(refresh).await;
        expect_error(res, 401, "invalid_refresh_token").await;
    }
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    expect_error(res, 401, "invalid_token").await;
    let res = app.get_bearer("/api/auth/me/entitlements", &key).await;
    expect_error(res, 401, "invalid_token").await;

    let res = app.login_raw(&e, PASSWORD).await;
    expect_error(res, 403, "account_deactivated").await;
    let res = app.login_raw(&e, "not the password at all").await;
    expect_error(res, 401, "invalid_credentials").await;
}

#[actix_web::test]
async fn reactivation_by_emailed_code() {
    let app = spawn_app().await;
    let (e, id, old, key) = deactivated_user(&app).await;
    assert!(app.outbox().is_empty());

    let res = reactivate_request(&app, &e).await;
    expect_no_content(res).await;
    let lines = app.wait_outbox(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let code = assert_email_line(&lines[0], &e, &id);

    let res = reactivate_confirm(&app, &e, &other_code(&code)).await;
    let wrong = expect_invalid_code(res, None).await;
    // An unknown email gets the very same answer.
    let res = reactivate_confirm(&app, &email(), &code).await;
    let unknown = expect_invalid_code(res, None).await;
    assert_eq!(
        wrong, unknown,
        "no difference between a wrong code and an unknown email"
    );

    let res = reactivate_confirm(&app, &e, &code).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_eq!(json_of(res).await, json!({"status": "active"}));

    // Log in as usual; the old sessions stay ended; the API key works again.
    let t = app.login(&e).await;
    let res = app.me(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["status"], "active");
    let res = app.me(&old.access).await;
    expect_error(res, 401, "session_revoked").await;
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["id"], id);
    let res = app.get_bearer("/api/auth/me/entitlements", &t.access).await;
    assert_eq!(json_of(res).await["api_key_active"], true);

    // The code was spent.
    let res = reactivate_confirm(&app, &e, &code).await;
    assert_eq!(expect_invalid_code(res, None).await, wrong);
}

#[actix_web::test]
async fn reactivation_email_is_compared_case_insensitively() {
    let app = spawn_app().await;
    let (e, id, _, _) = deactivated_user(&app).await;
    let upper = e.to_uppercase();
    let res = reactivate_request(&app, &upper).await;
    expect_no_content(res).await;
    let lines = app.wait_outbox(1).await;
    let code = assert_email_line(&lines[0], &e, &id);
    let res = reactivate_confirm(&app, &upper, &code).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"status": "active"}));
}

#[actix_web::test]
async fn five_wrong_codes_void_the_reactivation_code() {
    let app = spawn_app().await;
    let (e, id, _, _) = deactivated_user(&app).await;
    expect_no_content(reactivate_request(&app, &e).await).await;
    let code = assert_email_line(&app.wait_outbox(1).await[0], &e, &id);
    for _ in 0..5 {
        let res = reactivate_confirm(&app, &e, &other_code(&code)).await;
        expect_invalid_code(res, None).await;
    }
    let res = reactivate_confirm(&app, &e, &code).await;
    expect_invalid_code(res, None).await;
    let res = app.login_raw(&e, PASSWORD).await;
    expect_error(res, 403, "account_deactivated").await;
}

#[actix_web::test]
async fn a_new_reactivation_code_voids_the_previous_one() {
    let app = spawn_app_with(|c| {
        c.codes.resend_seconds = 0;
        c.codes.sends_per_hour = 100;
    })
    .await;
    let (e, id, _, _) = deactivated_user(&app).await;
    expect_no_content(reactivate_request(&app, &e).await).await;
    let first = assert_email_line(&app.wait_outbox(1).await[0], &e, &id);
    let mut n = 1;
    let second = loop {
        expect_no_content(reactivate_request(&app, &e).await).await;
        n += 1;
        let code = assert_email_line(&app.wait_outbox(n).await[n - 1], &e, &id);
        if code != first {
            break code;
        }
    };
    let res = reactivate_confirm(&app, &e, &first).await;
    expect_invalid_code(res, None).await;
    let res = reactivate_confirm(&app, &e, &second).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn resend_limits_apply_silently() {
    let app = spawn_app().await;
    let (e, id, _, _) = deactivated_user(&app).await;
    expect_no_content(reactivate_request(&app, &e).await).await;
    let code = assert_email_line(&app.wait_outbox(1).await[0], &e, &id);
    // Again at once: the same 204, and nothing is sent.
    expect_no_content(reactivate_request(&app, &e).await).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.outbox().len(), 1, "{:?}", app.outbox());
    // The first code is still good.
    let res = reactivate_confirm(&app, &e, &code).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn an_unknown_email_is_sent_nothing() {
    let app = spawn_app().await;
    let res = reactivate_request(&app, &email()).await;
    expect_no_content(res).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(app.outbox().is_empty(), "{:?}", app.outbox());
}

#[actix_web::test]
async fn an_active_account_is_sent_nothing() {
    let app = spawn_app().await;
    let (e, _) = app.new_user().await;
    let res = reactivate_request(&app, &e).await;
    expect_no_content(res).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(app.outbox().is_empty(), "{:?}", app.outbox());
    // And confirming anything does not touch it.
    let res = reactivate_confirm(&app, &e, "123456").await;
    expect_invalid_code(res, None).await;
    let res = app.login_raw(&e, PASSWORD).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn reactivation_requests_are_validated() {
    let app = spawn_app().await;
    let res = reactivate_request(&app, "not-an-email").await;
    expect_issues(res, &[("*", &["body", "email"])]).await;
    let res = app
        .post_json("/api/auth/reactivate/request", &json!({}))
        .await;
    expect_issues(res, &[("missing", &["body", "email"])]).await;
    let res = app
        .post_json("/api/auth/reactivate/request", &json!({"email": 5}))
        .await;
    expect_issues(res, &[("string_type", &["body", "email"])]).await;
    let res = app
        .post_json("/api/auth/reactivate/confirm", &json!({"email": email()}))
        .await;
    expect_issues(res, &[("missing", &["body", "code"])]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.outbox().is_empty());
}

#[actix_web::test]
async fn deactivate_needs_a_session_and_a_password() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let key = app.new_api_key(&t.access).await;

    let res = app
        .post_json("/api/auth/deactivate", &json!({"password": PASSWORD}))
        .await;
    expect_error(res, 401, "not_authenticated").await;

    let res = Client::new()
        .post(app.url("/api/auth/deactivate"))
        .header("x-api-key", &key)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "session_required").await;

    let res = app
        .post_bearer("/api/auth/deactivate", &t.access, Some(&json!({})))
        .await;
    expect_issues(res, &[("missing", &["body", "password"])]).await;

    let res = app
        .post_bearer(
            "/api/auth/deactivate",
            &t.access,
            Some(&json!({"password": 12345678})),
        )
        .await;
    expect_issues(res, &[("string_type", &["body", "password"])]).await;

    // Still active.
    let res = app.me(&t.access).await;
    assert_eq!(json_of(res).await["status"], "active");
    assert_eq!(
        app.get_with_api_key("/api/auth/me", &key).await.status(),
        200
    );
}

#[actix_web::test]
async fn an_expired_reactivation_code_is_refused() {
    let app = spawn_app_with(|c| c.codes.reactivate_ttl_seconds = 1).await;
    let (e, id, _, _) = deactivated_user(&app).await;
    expect_no_content(reactivate_request(&app, &e).await).await;
    let code = assert_email_line(&app.wait_outbox(1).await[0], &e, &id);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let res = reactivate_confirm(&app, &e, &code).await;
    expect_invalid_code(res, None).await;
    let res = app.login_raw(&e, PASSWORD).await;
    expect_error(res, 403, "account_deactivated").await;
}

#[actix_web::test]
async fn reactivation_bodies_must_be_json() {
    let app = spawn_app().await;
    for path in [
        "/api/auth/reactivate/request",
        "/api/auth/reactivate/confirm",
    ] {
        let res = Client::new()
            .post(app.url(path))
            .header("content-type", "application/json")
            .body("{\"email\": ")
            .send()
            .await
            .unwrap();
        expect_issues(res, &[("json_invalid", &["body"])]).await;
        let res = Client::new()
            .post(app.url(path))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        expect_issues(res, &[("missing", &["body"])]).await;
    }
}
