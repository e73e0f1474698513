//! The caller's sessions (API.md "Sessions and security events"): the list with where and when
//! each logged in, revoking one, and revoking all the others.

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::mfa::{challenge, enrolled_user, expect_signed_in, login_pending};

const LIST: &str = "/api/auth/sessions";
const OTHERS: &str = "/api/auth/sessions/revoke-others";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const PHONE: &str = "BlitzPulse/3.2 (iPhone; iOS 18.1)";

/// Logs in with a user agent; returns the tokens.
async fn login_as(app: &TestApp, email: &str, user_agent: &str) -> Tokens {
    let res = app
        .client()
        .post(app.url("/api/auth/token"))
        .header("User-Agent", user_agent)
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    Tokens::from_json(&expect_status(res, 200, "login").await)
}

fn sid(t: &Tokens) -> String {
    jwt_claims(&t.access)["sid"]
        .as_str()
        .expect("a session token")
        .to_string()
}

/// The list, asserting its shape; returns the sessions.
async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let res = app.get_bearer(LIST, access).await;
    assert_no_store(res.headers());
    let v = expect_status(res, 200, "list").await;
    let obj = v.as_object().unwrap_or_else(|| panic!("object: {v}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["sessions"], "{v}");
    let list = v["sessions"].as_array().expect("a list").clone();
    for s in &list {
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "current",
                "expires_at",
                "id",
                "ip",
                "last_used_at",
                "mfa",
                "user_agent"
            ],
            "{s}"
        );
        for field in ["created_at", "last_used_at", "expires_at"] {
            assert_rfc3339_z(&s[field], field);
        }
        assert_uuid_v7(&s["id"], "id");
    }
    list
}

fn ids(list: &[Value]) -> Vec<&str> {
    list.iter().map(|s| s["id"].as_str().unwrap()).collect()
}

async fn delete(app: &TestApp, access: &str, id: &str) -> Response {
    app.client()
        .delete(app.url(&format!("{LIST}/{id}")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn wait_next_second() {
    let now = now_secs();
    while now_secs() <= now {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn the_list_shows_each_login_with_its_client_newest_first() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let laptop = login_as(&app, &e, FIREFOX).await;
    wait_next_second().await;
    let phone = login_as(&app, &e, PHONE).await;

    let list = sessions(&app, &laptop.access).await;
    assert_eq!(ids(&list), [sid(&phone), sid(&laptop)], "newest first");
    assert_eq!(list[0]["user_agent"], PHONE);
    assert_eq!(list[1]["user_agent"], FIREFOX);
    for s in &list {
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
        assert_eq!(s["mfa"], false, "{s}");
        assert_eq!(s["created_at"], s["last_used_at"], "not refreshed yet: {s}");
    }
    assert_eq!(
        (list[0]["current"].clone(), list[1]["current"].clone()),
        (json!(false), json!(true)),
        "current is the caller's session"
    );
    let from_phone = sessions(&app, &phone.access).await;
    assert_eq!(from_phone[0]["current"], true);
    assert_eq!(from_phone[1]["current"], false);

    // A refresh moves last_used_at (and keeps the session's id); the login time stays.
    wait_next_second().await;
    let refreshed = Tokens::from_json(
        &expect_status(app.refresh_raw(&laptop.refresh).await, 200, "refresh").await,
    );
    assert_eq!(sid(&refreshed), sid(&laptop));
    let list = sessions(&app, &refreshed.access).await;
    let s = &list[1];
    assert_eq!(s["id"], sid(&laptop).as_str());
    assert_eq!(s["created_at"], list[1]["created_at"]);
    assert!(
        s["last_used_at"].as_str() > s["created_at"].as_str(),
        "last_used_at moved: {s}"
    );
    assert_eq!(
        s["current"], true,
        "the refreshed token is of the same session"
    );
}

#[actix_web::test]
async fn user_agents_are_cut_to_256_characters_and_absent_ones_are_null() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let long = format!("Agent/{}", "x".repeat(1_000));
    let t = login_as(&app, &e, &long).await;
    let plain = app.login(&e).await;
    let list = sessions(&app, &t.access).await;
    let by_id = |id: &str| list.iter().find(|s| s["id"] == id).unwrap().clone();
    let ua = by_id(&sid(&t))["user_agent"].as_str().unwrap().to_string();
    assert_eq!(ua.chars().count(), 256);
    assert!(long.starts_with(&ua));
    assert_eq!(by_id(&sid(&plain))["user_agent"], Value::Null);
}

#[actix_web::test]
async fn a_login_with_a_second_factor_is_marked_mfa() {
    let app = spawn_app().await;
    let (e, enrolled_in, mut auth, _) = enrolled_user(&app).await;
    let pending = login_pending(&app, &e).await;
    let code = auth.fresh_code().await;
    let t = expect_signed_in(challenge(&app, &pending, &json!({ "code": code })).await).await;
    let list = sessions(&app, &t.access).await;
    let mfa = |s: &Tokens| {
        list.iter()
            .find(|x| x["id"] == sid(s).as_str())
            .map(|x| x["mfa"].clone())
    };
    assert_eq!(mfa(&t), Some(json!(true)));
    assert_eq!(
        mfa(&enrolled_in),
        Some(json!(false)),
        "the session that enrolled logged in with a password alone"
    );
}

#[actix_web::test]
async fn revoking_a_session_ends_its_access_and_refresh_tokens_at_once() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let mine = login_as(&app, &e, FIREFOX).await;
    let stolen = login_as(&app, &e, PHONE).await;
    // The access token works until the revocation, and not one request after it.
    assert_eq!(app.me(&stolen.access).await.status(), 200);

    let res = delete(&app, &mine.access, &sid(&stolen)).await;
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty());
    expect_error(app.me(&stolen.access).await, 401, "session_revoked").await;
    expect_refresh_error(&app, &stolen.refresh, "invalid_refresh_token").await;
    assert_eq!(ids(&sessions(&app, &mine.access).await), [sid(&mine)]);

    // Gone is gone: the same id again, a made-up one and garbage are all 404.
    expect_error(
        delete(&app, &mine.access, &sid(&stolen)).await,
        404,
        "not_found",
    )
    .await;
    let made_up = "01900000-0000-7000-8000-000000000000";
    expect_error(delete(&app, &mine.access, made_up).await, 404, "not_found").await;
    expect_error(
        delete(&app, &mine.access, "not-a-uuid").await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.me(&mine.access).await.status(), 200);
}

#[actix_web::test]
async fn another_users_session_cannot_be_revoked_or_seen() {
    let app = spawn_app().await;
    let (_, alice) = app.new_user().await;
    let (_, bob) = app.new_user().await;
    expect_error(
        delete(&app, &alice.access, &sid(&bob)).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.me(&bob.access).await.status(),
        200,
        "bob's session lives"
    );
    expect_status(app.refresh_raw(&bob.refresh).await, 200, "bob refreshes").await;
    assert_eq!(ids(&sessions(&app, &alice.access).await), [sid(&alice)]);
}

#[actix_web::test]
async fn revoke_others_keeps_only_the_callers_session() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let a = app.login(&e).await;
    let b = app.login(&e).await;
    let c = app.login(&e).await;
    let res = app.post_bearer(OTHERS, &b.access, None).await;
    assert_eq!(res.status(), 204);
    for t in [&a, &c] {
        expect_error(app.me(&t.access).await, 401, "session_revoked").await;
        expect_refresh_error(&app, &t.refresh, "invalid_refresh_token").await;
    }
    assert_eq!(app.me(&b.access).await.status(), 200);
    let list = sessions(&app, &b.access).await;
    assert_eq!(ids(&list), [sid(&b)]);
    assert_eq!(list[0]["current"], true);
    // Alone already: nothing to do, still 204.
    assert_eq!(app.post_bearer(OTHERS, &b.access, None).await.status(), 204);
    expect_status(app.refresh_raw(&b.refresh).await, 200, "b refreshes").await;
}

#[actix_web::test]
async fn sessions_are_for_sessions_not_api_keys() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let key = app.new_api_key(&t.access).await;
    let res = app.get_with_api_key(LIST, &key).await;
    expect_error(res, 403, "session_required").await;
    let res = app
        .client()
        .post(app.url(OTHERS))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "session_required").await;
    let res = app
        .client()
        .delete(app.url(&format!("{LIST}/{}", sid(&t))))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "session_required").await;
    expect_error(app.get(LIST).await, 401, "not_authenticated").await;
    assert_eq!(app.me(&t.access).await.status(), 200, "nothing was revoked");
}

#[actix_web::test]
async fn a_foreign_page_cannot_revoke_with_the_cookie() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (browser, t) = app.cookie_login(&e).await;
    let other = app.login(&e).await;
    let res = browser
        .post(app.url(OTHERS))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "origin_not_allowed").await;
    let res = browser
        .delete(app.url(&format!("{LIST}/{}", sid(&other))))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "origin_not_allowed").await;
    assert_eq!(app.me(&other.access).await.status(), 200);
    // The same browser on the server's own page may.
    let res = browser
        .delete(app.url(&format!("{LIST}/{}", sid(&other))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.me(&t.access).await.status(), 200);
}

/// The value of the counter line `name{labels}` in a Prometheus text answer.
fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn metrics_count_sessions_created_and_revoked_by_reason() {
    let app = spawn_app().await;
    let scrape = || async { app.get("/metrics").await.text().await.unwrap() };
    let created = "bp_sessions_created_total{method=\"password\"}";
    let by_user = "bp_sessions_revoked_total{reason=\"session_revoked\"}";
    let by_logout = "bp_sessions_revoked_total{reason=\"logout\"}";
    let before = scrape().await;
    let e = email();
    app.register(&e).await;
    let a = app.login(&e).await;
    let b = app.login(&e).await;
    let c = app.login(&e).await;
    assert_eq!(delete(&app, &a.access, &sid(&b)).await.status(), 204);
    assert_eq!(
        app.logout_bearer(Some(&c.access), &json!({}))
            .await
            .status(),
        204
    );
    let after = scrape().await;
    // Other tests in this process count too: at least ours.
    assert!(
        counter(&after, created) - counter(&before, created) >= 3.0,
        "{after}"
    );
    assert!(
        counter(&after, by_user) - counter(&before, by_user) >= 1.0,
        "{after}"
    );
    assert!(
        counter(&after, by_logout) - counter(&before, by_logout) >= 1.0,
        "{after}"
    );
}
