//! Abuse resistance of sessions: a user has at most `tokens.max_sessions_per_user` live
//! sessions (a login past it ends the least recently used one), and a refresh token forged for a
//! real session, whatever generation it claims, is refused without revoking anything.

use std::time::Duration;

use bp_auth::domain::secrets::{random_32, RefreshToken};
use serde_json::json;

use crate::helpers::*;

async fn spawn_capped(cap: usize) -> TestApp {
    spawn_app_with(|c| c.tokens.max_sessions_per_user = cap).await
}

async fn refresh_ok(app: &TestApp, token: &str, what: &str) -> Tokens {
    Tokens::from_json(&expect_status(app.refresh_raw(token).await, 200, what).await)
}

/// Waits until the server's clock (whole seconds) is past `after`, so that what happens next is
/// strictly later than anything that happened at `after`.
async fn wait_past(after: i64) {
    while now_secs() <= after {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session of `t` was ended: its refresh token and its access token are refused.
async fn assert_ended(app: &TestApp, t: &Tokens) {
    expect_refresh_error(app, &t.refresh, "invalid_refresh_token").await;
    expect_error(app.me(&t.access).await, 401, "session_revoked").await;
}

#[actix_web::test]
async fn a_login_past_the_cap_ends_the_oldest_session() {
    let app = spawn_capped(3).await;
    let e = email();
    app.register(&e).await;
    let mut logins = Vec::new();
    for _ in 0..4 {
        logins.push(app.login(&e).await);
    }
    assert_ended(&app, &logins[0]).await;
    for (i, t) in logins.iter().enumerate().skip(1) {
        let next = refresh_ok(&app, &t.refresh, &format!("login {i}")).await;
        assert_eq!(app.me(&next.access).await.status(), 200, "login {i}");
    }
}

#[actix_web::test]
async fn the_cap_ends_the_least_recently_used_not_the_first() {
    let app = spawn_capped(3).await;
    let e = email();
    app.register(&e).await;
    let first = app.login(&e).await;
    let second = app.login(&e).await;
    let third = app.login(&e).await;
    // Refreshed strictly later than the other two logins: the first is now the most recent.
    wait_past(now_secs()).await;
    let first = refresh_ok(&app, &first.refresh, "the first login").await;
    let fourth = app.login(&e).await;
    // The second login is the least recently used one.
    assert_ended(&app, &second).await;
    for (t, what) in [(&first, "first"), (&third, "third"), (&fourth, "fourth")] {
        refresh_ok(&app, &t.refresh, what).await;
    }
}

/// `token` with its generation and secret replaced: the right user and session, a secret the
/// server never issued.
fn forged(token: &str, generation: u32) -> String {
    let real = RefreshToken::parse(token).expect("a refresh token");
    RefreshToken {
        generation,
        secret: random_32(),
        ..real
    }
    .encode()
}

#[actix_web::test]
async fn a_forged_token_for_a_real_session_revokes_nothing() {
    let app = spawn_app().await;
    let (_, t0) = app.new_user().await;
    let t1 = refresh_ok(&app, &t0.refresh, "gen 0").await;
    let t2 = refresh_ok(&app, &t1.refresh, "gen 1").await;
    let t3 = refresh_ok(&app, &t2.refresh, "gen 2").await;
    assert_eq!(RefreshToken::parse(&t3.refresh).unwrap().generation, 3);
    // Older generations, the current one, and ones never issued.
    for generation in [0, 1, 2, 3, 4, u32::MAX] {
        let token = forged(&t3.refresh, generation);
        expect_refresh_error(&app, &token, "invalid_refresh_token").await;
        let res = app
            .logout_bearer(None, &json!({"refresh_token": token}))
            .await;
        assert_eq!(res.status(), 204, "logout with gen {generation}");
    }
    assert_eq!(app.me(&t3.access).await.status(), 200, "the session lives");
    let t4 = refresh_ok(&app, &t3.refresh, "the genuine current token").await;
    assert_eq!(app.me(&t4.access).await.status(), 200);
    // The genuine old tokens are still recognised as reuse.
    expect_refresh_error(&app, &t0.refresh, "refresh_token_reused").await;
    assert_ended(&app, &t4).await;
}
