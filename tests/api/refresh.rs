//! `POST /api/auth/refresh`: rotation within a session, reuse detection revoking the family and
//! its session, unknown tokens, validation, rotation turned off, the grace period, and a burst
//! of parallel refreshes of one token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::join_all;
use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

async fn post_refresh(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_json("/api/auth/refresh", body).await
}

async fn refresh_ok(app: &TestApp, token: &str) -> Tokens {
    let res = app.refresh_raw(token).await;
    assert_eq!(res.status(), 200, "refresh");
    Tokens::from_json(&json_of(res).await)
}

/// Presenting `reused`, a rotated-away token, is reuse: 401 `refresh_token_reused`; then the
/// family's latest pair `latest` is dead too (its refresh token invalid, its session revoked).
async fn assert_reuse_revokes_the_family(app: &TestApp, reused: &str, latest: &Tokens) {
    expect_refresh_error(app, reused, "refresh_token_reused").await;
    expect_refresh_error(app, &latest.refresh, "invalid_refresh_token").await;
    expect_error(app.me(&latest.access).await, 401, "session_revoked").await;
}

/// The same token with its 32-byte secret replaced: well-formed, same user and family, unknown.
fn with_other_secret(token: &str) -> String {
    let raw = URL_SAFE_NO_PAD
        .decode(token.strip_prefix("bprt_").expect("bprt_"))
        .expect("base64url");
    let mut raw = raw;
    let n = raw.len();
    for b in &mut raw[n - 32..] {
        *b ^= 0x5a;
    }
    format!("bprt_{}", URL_SAFE_NO_PAD.encode(raw))
}

#[actix_web::test]
async fn rotation_issues_a_new_pair_in_the_same_session() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_no_store(res.headers());
    let cookie = bp_token_cookie(res.headers());
    let body = json_of(res).await;
    let t2 = assert_token_response(&body, 900);
    assert_ne!(t2.refresh, t.refresh, "a new refresh token");
    assert_ne!(t2.access, t.access, "a new access token");
    assert_eq!(
        cookie.value, t2.access,
        "the cookie carries the new access token"
    );
    assert!(cookie.has("httponly"));
    assert_eq!(cookie.get("path"), Some("/"));
    assert_eq!(cookie.get("max-age"), Some("900"));
    let (c1, c2) = (jwt_claims(&t.access), jwt_claims(&t2.access));
    assert_eq!(c1["sid"], c2["sid"], "refresh continues the session");
    assert_eq!(c1["sub"], c2["sub"]);
    assert_ne!(c1["jti"], c2["jti"]);
    assert_eq!(app.me(&t2.access).await.status(), 200);
    // The old access token stays valid until it expires: the session continues.
    assert_eq!(app.me(&t.access).await.status(), 200);
    // And the chain goes on.
    let t3 = refresh_ok(&app, &t2.refresh).await;
    assert_eq!(jwt_claims(&t3.access)["sid"], c1["sid"]);
}

#[actix_web::test]
async fn reuse_revokes_the_family_and_the_session() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let t = app.login(&e).await;
    let other = app.login(&e).await;
    let t2 = refresh_ok(&app, &t.refresh).await;
    let res = app.refresh_raw(&t.refresh).await;
    assert!(
        !res.headers().contains_key("set-cookie") || {
            // If a cookie is set at all on this failure, it must not carry a token.
            bp_token_cookie(res.headers()).value.is_empty()
        }
    );
    expect_error(res, 401, "refresh_token_reused").await;
    // The successor belongs to the revoked family.
    expect_refresh_error(&app, &t2.refresh, "invalid_refresh_token").await;
    // Access tokens of that session stop working at once.
    expect_error(app.me(&t2.access).await, 401, "session_revoked").await;
    expect_error(app.me(&t.access).await, 401, "session_revoked").await;
    // Reusing again does not revoke anything new: the family is already gone.
    expect_refresh_error(&app, &t.refresh, "invalid_refresh_token").await;
    // The user's other session is untouched.
    assert_eq!(app.me(&other.access).await.status(), 200);
    refresh_ok(&app, &other.refresh).await;
}

#[actix_web::test]
async fn reuse_of_an_older_generation_is_reuse_too() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let t2 = refresh_ok(&app, &t.refresh).await;
    let t3 = refresh_ok(&app, &t2.refresh).await;
    assert_reuse_revokes_the_family(&app, &t.refresh, &t3).await;
}

#[actix_web::test]
async fn garbage_and_unknown_tokens_are_invalid() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let unknown_user = {
        let mut raw = vec![0u8; 68];
        raw[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
        raw[16..32].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
        raw[36..].copy_from_slice(&[7u8; 32]);
        format!("bprt_{}", URL_SAFE_NO_PAD.encode(raw))
    };
    for bad in [
        "garbage".to_string(),
        String::new(),
        "bprt_".to_string(),
        "bprt_!!!".to_string(),
        format!("bprt_{}", "A".repeat(43)),
        format!("bprt_{}", "A".repeat(500)),
        t.access.clone(),
        unknown_user,
        with_other_secret(&t.refresh),
    ] {
        let res = app.refresh_raw(&bad).await;
        assert!(
            !res.headers().contains_key("set-cookie") || {
                bp_token_cookie(res.headers()).value.is_empty()
            }
        );
        expect_error(res, 401, "invalid_refresh_token").await;
    }
    // None of that hurt the genuine token's family.
    refresh_ok(&app, &t.refresh).await;
}

#[actix_web::test]
async fn missing_field_or_wrong_type_is_422() {
    let app = spawn_app().await;
    expect_issues(
        post_refresh(&app, &json!({})).await,
        &[("missing", &["body", "refresh_token"])],
    )
    .await;
    expect_issues(
        post_refresh(&app, &json!({"token": "bprt_x"})).await,
        &[("missing", &["body", "refresh_token"])],
    )
    .await;
    for wrong in [json!(123), json!(true), json!(["bprt_x"]), json!({"t": 1})] {
        expect_issues(
            post_refresh(&app, &json!({"refresh_token": wrong})).await,
            &[("string_type", &["body", "refresh_token"])],
        )
        .await;
    }
    let res = Client::new()
        .post(app.url("/api/auth/refresh"))
        .header("content-type", "application/json")
        .body("")
        .send()
        .await
        .expect("refresh");
    expect_issues(res, &[("missing", &["body"])]).await;
    let res = Client::new()
        .post(app.url("/api/auth/refresh"))
        .header("content-type", "application/json")
        .body("{\"refresh_token\": ")
        .send()
        .await
        .expect("refresh");
    expect_issues(res, &[("json_invalid", &["body"])]).await;
    let res = Client::new()
        .post(app.url("/api/auth/refresh"))
        .form(&[("refresh_token", "bprt_x")])
        .send()
        .await
        .expect("refresh");
    expect_issues(res, &[("json_invalid", &["body"])]).await;
}

#[actix_web::test]
async fn body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let body = json!({"refresh_token": "x".repeat(20 * 1024)});
    expect_error(post_refresh(&app, &body).await, 413, "payload_too_large").await;
}

#[actix_web::test]
async fn rotation_disabled_keeps_the_refresh_token() {
    let app = spawn_app_with(|c| c.refresh.rotation_enabled = false).await;
    let (_, t) = app.new_user().await;
    let mut accesses = vec![t.access.clone()];
    for _ in 0..3 {
        let res = app.refresh_raw(&t.refresh).await;
        assert_eq!(res.status(), 200);
        assert_no_store(res.headers());
        let cookie = bp_token_cookie(res.headers());
        let body = json_of(res).await;
        let next = Tokens::from_json(&body);
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 900);
        assert_eq!(next.refresh, t.refresh, "the same refresh token every time");
        assert_eq!(cookie.value, next.access);
        assert!(!accesses.contains(&next.access), "a new access token");
        assert_eq!(
            jwt_claims(&next.access)["sid"],
            jwt_claims(&t.access)["sid"]
        );
        assert_eq!(app.me(&next.access).await.status(), 200);
        accesses.push(next.access);
    }
}

#[actix_web::test]
async fn grace_period_replays_the_successor_until_it_is_used() {
    let app = spawn_app_with(|c| c.refresh.reuse_grace_seconds = 30).await;
    let (_, t) = app.new_user().await;
    let first = refresh_ok(&app, &t.refresh).await;
    // A retry of the token just rotated (the client lost the answer): the same successor.
    let retry = refresh_ok(&app, &t.refresh).await;
    assert_eq!(retry.refresh, first.refresh, "the same successor");
    assert_eq!(
        jwt_claims(&retry.access)["sid"],
        jwt_claims(&first.access)["sid"]
    );
    assert_eq!(app.me(&retry.access).await.status(), 200);
    // Once the successor has been used, the old token is reuse.
    let second = refresh_ok(&app, &first.refresh).await;
    assert_reuse_revokes_the_family(&app, &t.refresh, &second).await;
}

#[actix_web::test]
async fn without_grace_a_retry_is_reuse() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    refresh_ok(&app, &t.refresh).await;
    expect_refresh_error(&app, &t.refresh, "refresh_token_reused").await;
}

#[actix_web::test]
async fn parallel_refreshes_of_one_token_have_one_winner() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let results = join_all((0..20).map(|_| async {
        let res = post_refresh(&app, &json!({"refresh_token": t.refresh})).await;
        let status = res.status().as_u16();
        (status, json_of(res).await)
    }))
    .await;
    let winners: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one 200: {results:?}");
    let losers: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s != 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(losers.len(), 19);
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 401, "{body}");
        assert!(
            body["code"] == "refresh_token_reused" || body["code"] == "invalid_refresh_token",
            "{body}"
        );
    }
    assert!(
        losers.iter().any(|b| b["code"] == "refresh_token_reused"),
        "at least one reuse: {results:?}"
    );
    let winner = Tokens::from_json(winners[0]);
    expect_refresh_error(&app, &winner.refresh, "invalid_refresh_token").await;
    expect_error(app.me(&winner.access).await, 401, "session_revoked").await;
}

#[actix_web::test]
async fn streamed_body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let raw = chunked_post(
        app.port,
        "/api/auth/refresh",
        "application/json",
        &oversized_chunks(br#"{"refresh_token": ""#, br#""}"#),
    )
    .await;
    expect_raw_error(&raw, 413, "payload_too_large");
}
