//! `GET /api/auth/me`: which credential is used (header alone if present, else the cookie),
//! and the 401s for everything else.

use reqwest::Client;

use crate::helpers::*;

#[actix_web::test]
async fn bearer_token_gets_the_profile() {
    let app = spawn_app().await;
    let e = email();
    let registered = app.register(&e).await;
    let t = app.login(&e).await;
    let res = app.me(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    let me = json_of(res).await;
    assert_eq!(me, registered, "me answers the same profile register did");
}

#[actix_web::test]
async fn cookie_from_login_authenticates() {
    let app = spawn_app().await;
    let e = email();
    let registered = app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let res = jar.get(app.url("/api/auth/me")).send().await.expect("me");
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["id"], registered["id"]);
}

#[actix_web::test]
async fn cookie_sent_by_hand_authenticates() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .header("cookie", format!("bp_token={}", t.access))
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn no_credentials_is_not_authenticated() {
    let app = spawn_app().await;
    let res = app.get("/api/auth/me").await;
    expect_error(res, 401, "not_authenticated").await;
}

#[actix_web::test]
async fn garbage_bearer_is_invalid_token() {
    let app = spawn_app().await;
    for garbage in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJFZERTQSJ9.e30.",
        "x".repeat(5000).as_str(),
    ] {
        let res = app.me(garbage).await;
        expect_error(res, 401, "invalid_token").await;
    }
}

#[actix_web::test]
async fn garbage_cookie_is_invalid_token() {
    let app = spawn_app().await;
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .header("cookie", "bp_token=garbage")
        .send()
        .await
        .expect("me");
    expect_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn token_in_the_query_string_does_not_authenticate() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    for param in ["access_token", "token", "bp_token"] {
        let res = Client::new()
            .get(app.url(&format!("/api/auth/me?{param}={}", t.access)))
            .send()
            .await
            .expect("me");
        expect_error(res, 401, "not_authenticated").await;
    }
}

#[actix_web::test]
async fn authorization_header_alone_is_used_over_the_cookie() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let cookie = format!("bp_token={}", t.access);
    // A bearer that does not verify: the valid cookie is not consulted.
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .header("cookie", &cookie)
        .bearer_auth("garbage")
        .send()
        .await
        .expect("me");
    expect_error(res, 401, "invalid_token").await;
    // A header that is not a bearer credential at all: still 401, the cookie is not used.
    for header in ["Basic Y2xpZW50OnNlY3JldA==", "Bearer", "garbage"] {
        let res = Client::new()
            .get(app.url("/api/auth/me"))
            .header("cookie", &cookie)
            .header("authorization", header)
            .send()
            .await
            .expect("me");
        assert_eq!(res.status(), 401, "{header}");
        assert_eq!(
            res.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let code = json_of(res).await["code"].clone();
        assert!(
            code == "not_authenticated" || code == "invalid_token",
            "{header}: {code}"
        );
    }
}

#[actix_web::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .header("authorization", format!("bearer {}", t.access))
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
}
