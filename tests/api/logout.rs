//! `POST /api/auth/logout`: always 204 with the clearing cookie, whatever the token's state;
//! what it revokes (the session of a verifiable token, expired or not; a refresh token's family;
//! every session with `everywhere`); and the 422/413 answers, which clear the cookie too.

use reqwest::Client;
use serde_json::json;

use crate::helpers::*;

async fn logout_204(res: reqwest::Response) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.text().await.expect("body");
    assert_eq!(status, 204, "{body}");
    assert!(body.is_empty(), "204 has no body: {body:?}");
    assert_common_headers(&headers);
    assert_clears_cookie(&headers);
}

/// The session of `t` is gone: its access token is `session_revoked`, its refresh token invalid.
async fn assert_session_revoked(app: &TestApp, t: &Tokens) {
    expect_error(app.me(&t.access).await, 401, "session_revoked").await;
    expect_refresh_error(app, &t.refresh, "invalid_refresh_token").await;
}

#[actix_web::test]
async fn no_token_is_204_and_clears_the_cookie() {
    let app = spawn_app().await;
    logout_204(app.logout_bearer(None, &json!({})).await).await;
    // An empty body counts as {}.
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .header("content-type", "application/json")
        .body("")
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
}

#[actix_web::test]
async fn cleared_cookie_keeps_secure_by_default() {
    let app = spawn_app_with(|c| c.cookie.secure = true).await;
    let res = app.logout_bearer(None, &json!({})).await;
    assert_eq!(res.status(), 204);
    let c = bp_token_cookie(res.headers());
    assert_eq!(c.get("max-age"), Some("0"));
    assert!(c.has("secure"), "{c:?}");
    assert!(c.has("httponly"), "{c:?}");
}

#[actix_web::test]
async fn garbage_token_is_204() {
    let app = spawn_app().await;
    logout_204(app.logout_bearer(Some("garbage"), &json!({})).await).await;
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .header("cookie", "bp_token=garbage")
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
}

#[actix_web::test]
async fn valid_access_token_revokes_its_session() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let t = app.login(&e).await;
    let other = app.login(&e).await;
    logout_204(app.logout_bearer(Some(&t.access), &json!({})).await).await;
    assert_session_revoked(&app, &t).await;
    // Only that session.
    assert_eq!(app.me(&other.access).await.status(), 200);
    refresh_ok_status(&app, &other).await;
    // Logging out again is still 204.
    logout_204(app.logout_bearer(Some(&t.access), &json!({})).await).await;
}

async fn refresh_ok_status(app: &TestApp, t: &Tokens) {
    assert_eq!(app.refresh_raw(&t.refresh).await.status(), 200);
}

#[actix_web::test]
async fn cookie_logout_revokes_and_clears_the_jar() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, t) = app.cookie_login(&e).await;
    assert_eq!(
        jar.get(app.url("/api/auth/me"))
            .send()
            .await
            .expect("me")
            .status(),
        200
    );
    let res = jar
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
    // The jar dropped the cookie, and the session is revoked server-side.
    let res = jar.get(app.url("/api/auth/me")).send().await.expect("me");
    expect_error(res, 401, "not_authenticated").await;
    assert_session_revoked(&app, &t).await;
}

#[actix_web::test]
async fn expired_but_genuine_token_revokes_its_session() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let expired = forge_for_session(&app, &t.access, 7200, 900);
    expect_error(app.me(&expired).await, 401, "token_expired").await;
    logout_204(app.logout_bearer(Some(&expired), &json!({})).await).await;
    assert_session_revoked(&app, &t).await;
}

#[actix_web::test]
async fn expired_token_in_the_cookie_revokes_its_session() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let expired = forge_for_session(&app, &t.access, 7200, 900);
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .header("cookie", format!("bp_token={expired}"))
        .send()
        .await
        .expect("logout");
    logout_204(res).await;
    assert_session_revoked(&app, &t).await;
}

#[actix_web::test]
async fn refresh_token_in_the_body_revokes_its_family() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let t = app.login(&e).await;
    let other = app.login(&e).await;
    logout_204(
        app.logout_bearer(None, &json!({"refresh_token": t.refresh}))
            .await,
    )
    .await;
    assert_session_revoked(&app, &t).await;
    assert_eq!(app.me(&other.access).await.status(), 200);
    // A garbage refresh token in the body is still 204.
    logout_204(
        app.logout_bearer(None, &json!({"refresh_token": "bprt_garbage"}))
            .await,
    )
    .await;
}

#[actix_web::test]
async fn rotated_refresh_token_in_the_body_revokes_the_session() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    let t2 = Tokens::from_json(&json_of(res).await);
    logout_204(
        app.logout_bearer(None, &json!({"refresh_token": t2.refresh}))
            .await,
    )
    .await;
    assert_session_revoked(&app, &t2).await;
    expect_error(app.me(&t.access).await, 401, "session_revoked").await;
}

#[actix_web::test]
async fn everywhere_revokes_every_session_of_the_user() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let sessions = [
        app.login(&e).await,
        app.login(&e).await,
        app.login(&e).await,
    ];
    let (_, bystander) = app.new_user().await;
    logout_204(
        app.logout_bearer(Some(&sessions[0].access), &json!({"everywhere": true}))
            .await,
    )
    .await;
    for t in &sessions {
        assert_session_revoked(&app, t).await;
    }
    // Another user is untouched.
    assert_eq!(app.me(&bystander.access).await.status(), 200);
    // The user can log in again afterwards.
    let fresh = app.login(&e).await;
    assert_eq!(app.me(&fresh.access).await.status(), 200);
}

#[actix_web::test]
async fn everywhere_false_revokes_only_the_current_session() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let a = app.login(&e).await;
    let b = app.login(&e).await;
    logout_204(
        app.logout_bearer(Some(&a.access), &json!({"everywhere": false}))
            .await,
    )
    .await;
    assert_session_revoked(&app, &a).await;
    assert_eq!(app.me(&b.access).await.status(), 200);
}

#[actix_web::test]
async fn everywhere_without_a_verifiable_token_revokes_nothing() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    logout_204(
        app.logout_bearer(Some("garbage"), &json!({"everywhere": true}))
            .await,
    )
    .await;
    assert_eq!(app.me(&t.access).await.status(), 200);
}

#[actix_web::test]
async fn invalid_json_is_422_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    for (ct, body) in [
        ("application/json", "{\"everywhere\": "),
        ("application/json", "not json"),
        ("text/plain", "{}"),
    ] {
        let res = Client::new()
            .post(app.url("/api/auth/logout"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("logout");
        let headers = res.headers().clone();
        expect_issues(res, &[("json_invalid", &["body"])]).await;
        assert_clears_cookie(&headers);
    }
    assert_eq!(app.me(&t.access).await.status(), 200);
}

#[actix_web::test]
async fn wrong_type_field_is_422_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app
        .logout_bearer(Some(&t.access), &json!({"everywhere": "yes"}))
        .await;
    let headers = res.headers().clone();
    expect_issues(res, &[("bool_type", &["body", "everywhere"])]).await;
    assert_clears_cookie(&headers);
    let res = app.logout_bearer(None, &json!({"refresh_token": 42})).await;
    let headers = res.headers().clone();
    expect_issues(res, &[("string_type", &["body", "refresh_token"])]).await;
    assert_clears_cookie(&headers);
}

#[actix_web::test]
async fn body_over_16_kib_is_413_and_clears_the_cookie() {
    let app = spawn_app().await;
    let res = app
        .logout_bearer(None, &json!({"refresh_token": "x".repeat(20 * 1024)}))
        .await;
    let headers = res.headers().clone();
    expect_error(res, 413, "payload_too_large").await;
    assert_clears_cookie(&headers);
}

#[actix_web::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    logout_204(
        app.logout_bearer(
            Some(&t.access),
            &json!({"reason": "done", "everywhere": false}),
        )
        .await,
    )
    .await;
    assert_session_revoked(&app, &t).await;
}

#[actix_web::test]
async fn streamed_body_over_16_kib_is_413_and_clears_the_cookie() {
    let app = spawn_app().await;
    let raw = chunked_post(
        app.port,
        "/api/auth/logout",
        "application/json",
        &oversized_chunks(br#"{"refresh_token": ""#, br#""}"#),
    )
    .await;
    expect_raw_error(&raw, 413, "payload_too_large");
    let cookie_line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: bp_token="))
        .unwrap_or_else(|| panic!("a bp_token Set-Cookie: {raw}"));
    let cookie = SetCookie::parse(cookie_line.split_once(':').expect("header").1.trim());
    assert_eq!(cookie.value, "");
    assert_eq!(cookie.get("max-age"), Some("0"), "{cookie_line}");
}
