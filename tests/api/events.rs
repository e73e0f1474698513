//! The user's security history (`GET /api/auth/me/events`, API.md "Sessions and security
//! events"): each action records its event, newest first, kept with the user (the last 100),
//! never holding a secret, and the same events as the audit log.

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::deactivation::{deactivate, reactivate_confirm, reactivate_request};
use crate::helpers::*;
use crate::lifecycle::{change_email, change_password, confirm_change, forgot, reset, wait_for};
use crate::mfa::{challenge, enrolled_user, login_pending, DISABLE};

const EVENTS: &str = "/api/auth/me/events";
const WRONG: &str = "Tr0ub4dor&3-not-it";
const NEW_PASSWORD: &str = "a brand new passphrase 2026";
const AGENT: &str = "EventsTest/1.0 (+https://example.test)";

async fn events_raw(app: &impl Server, access: &str, query: &str) -> Response {
    app.get_bearer(&format!("{EVENTS}{query}"), access).await
}

/// The events, asserting their shape.
async fn events(app: &impl Server, access: &str, query: &str) -> Vec<Value> {
    let res = events_raw(app, access, query).await;
    assert_no_store(res.headers());
    let v = expect_status(res, 200, "events").await;
    let list = v["events"].as_array().expect("events").clone();
    for e in &list {
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["at", "ip", "session_id", "type", "user_agent"],
            "{e}"
        );
        assert_rfc3339_z(&e["at"], "at");
    }
    list
}

fn types(list: &[Value]) -> Vec<&str> {
    list.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn sid(t: &Tokens) -> String {
    jwt_claims(&t.access)["sid"].as_str().unwrap().to_string()
}

async fn login_with_agent(app: &impl Server, email: &str, password: &str) -> Response {
    app.client()
        .post(app.url("/api/auth/token"))
        .header("User-Agent", AGENT)
        .form(&[("username", email), ("password", password)])
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn login_failure_reuse_and_password_change_are_recorded_in_order() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let first = Tokens::from_json(
        &expect_status(login_with_agent(&app, &e, PASSWORD).await, 200, "login").await,
    );
    expect_error(
        login_with_agent(&app, &e, WRONG).await,
        401,
        "invalid_credentials",
    )
    .await;
    // The rotated-away token presented again: reuse, the session revoked.
    expect_status(app.refresh_raw(&first.refresh).await, 200, "rotate").await;
    expect_refresh_error(&app, &first.refresh, "refresh_token_reused").await;
    let second = app.login(&e).await;
    let res = change_password(
        &app,
        &second.access,
        &json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 204);

    let list = events(&app, &second.access, "").await;
    assert_eq!(
        types(&list),
        [
            "password_changed",
            "login",
            "refresh_reused",
            "login_failed",
            "login"
        ]
    );
    let [changed, login2, reused, failed, login1] = &list[..] else {
        unreachable!()
    };
    assert_eq!(
        login1["session_id"],
        sid(&first).as_str(),
        "the session opened"
    );
    assert_eq!(login1["user_agent"], AGENT);
    assert_eq!(login1["ip"], "127.0.0.1");
    assert_eq!(failed["session_id"], Value::Null);
    assert_eq!(failed["user_agent"], AGENT);
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(
        reused["session_id"],
        sid(&first).as_str(),
        "the session revoked"
    );
    assert_eq!(login2["session_id"], sid(&second).as_str());
    assert_eq!(login2["user_agent"], Value::Null, "no User-Agent sent");
    assert_eq!(changed["session_id"], sid(&second).as_str(), "made from");
    let at: Vec<&str> = list.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {at:?}");
}

#[actix_web::test]
async fn every_kind_of_change_records_its_event() {
    let app = spawn_app().await;
    let (e, t, mut auth, _) = enrolled_user(&app).await;
    // mfa_failed and a login with the second factor.
    let pending = login_pending(&app, &e).await;
    let wrong = auth.code_at_step(1);
    let res = challenge(&app, &pending, &json!({ "code": wrong })).await;
    assert_eq!(res.status(), 401);
    let code = auth.fresh_code().await;
    let second = challenge(&app, &pending, &json!({ "code": code })).await;
    let second = Tokens::from_json(&expect_status(second, 200, "challenge").await);
    // session_revoked, logout, api_key_rotated, mfa_disabled.
    let third = app.login_raw(&e, PASSWORD).await;
    let pending = json_of(third).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let code = auth.fresh_code().await;
    let third = challenge(&app, &pending, &json!({ "code": code })).await;
    let third = Tokens::from_json(&expect_status(third, 200, "challenge").await);
    let res = app
        .client()
        .delete(app.url(&format!("/api/auth/sessions/{}", sid(&third))))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.logout_bearer(Some(&second.access), &json!({}))
            .await
            .status(),
        204
    );
    let rotated = app
        .post_bearer("/api/auth/api-key/rotate", &t.access, None)
        .await;
    assert_eq!(rotated.status(), 200);
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(DISABLE, &t.access, Some(&json!({ "code": code })))
        .await;
    assert_eq!(res.status(), 204);
    // email_changed.
    let new_email = email();
    let res = change_email(&app, &t.access, &new_email, PASSWORD).await;
    expect_status(res, 200, "email change").await;
    let line = wait_for(&app, "change_email", 1).await;
    let code = line["code"].as_str().unwrap().to_string();
    expect_status(confirm_change(&app, &t.access, &code).await, 200, "confirm").await;
    // password_reset (it ends every session).
    assert_eq!(forgot(&app, &new_email).await.status(), 204);
    let line = wait_for(&app, "password_reset", 1).await;
    let code = line["code"].as_str().unwrap().to_string();
    let res = reset(&app, &new_email, &code, NEW_PASSWORD).await;
    assert_eq!(res.status(), 204);
    // deactivated, then reactivated by the emailed code.
    let login = |pw: &'static str| {
        let (app, e) = (&app, new_email.clone());
        async move {
            let res = app.login_raw(&e, pw).await;
            Tokens::from_json(&expect_status(res, 200, "login").await)
        }
    };
    let t = login(NEW_PASSWORD).await;
    assert_eq!(
        deactivate(&app, &t.access, NEW_PASSWORD).await.status(),
        204
    );
    assert_eq!(reactivate_request(&app, &new_email).await.status(), 204);
    let line = wait_for(&app, "reactivate", 1).await;
    let code = line["code"].as_str().unwrap().to_string();
    let res = reactivate_confirm(&app, &new_email, &code).await;
    expect_status(res, 200, "reactivate").await;
    let t = login(NEW_PASSWORD).await;

    let list = events(&app, &t.access, "").await;
    let mut oldest_first = types(&list);
    oldest_first.reverse();
    assert_eq!(
        oldest_first,
        [
            "login",
            "mfa_enabled",
            "mfa_failed",
            "login",
            "login",
            "session_revoked",
            "logout",
            "api_key_rotated",
            "mfa_disabled",
            "email_changed",
            "password_reset",
            "login",
            "deactivated",
            "reactivated",
            "login",
        ]
    );
    let revoked = &list[list.len() - 6];
    assert_eq!(
        revoked["session_id"],
        sid(&third).as_str(),
        "the one revoked"
    );
    let logout = &list[list.len() - 7];
    assert_eq!(logout["session_id"], sid(&second).as_str(), "the one ended");
}

#[actix_web::test]
async fn limit_picks_the_newest_and_is_bounded() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(app.login(&e).await);
    }
    let t = last.unwrap();
    let all = events(&app, &t.access, "").await;
    assert_eq!(all.len(), 3);
    let two = events(&app, &t.access, "?limit=2").await;
    assert_eq!(two, all[..2], "the two newest");
    assert_eq!(two[0]["session_id"], sid(&t).as_str());
    assert_eq!(events(&app, &t.access, "?limit=100").await.len(), 3);
    for bad in ["0", "101", "-1", "ten", "", "2.5"] {
        let res = events_raw(&app, &t.access, &format!("?limit={bad}")).await;
        let detail = expect_validation_at(res, "query").await;
        assert_eq!(detail.len(), 1, "limit={bad}: {detail:?}");
        assert_eq!(detail[0]["loc"], json!(["query", "limit"]), "limit={bad}");
    }
}

#[actix_web::test]
async fn an_api_key_reads_the_history_too() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let key = app.new_api_key(&t.access).await;
    let res = app.get_with_api_key(EVENTS, &key).await;
    let v = expect_status(res, 200, "events by API key").await;
    assert_eq!(types(v["events"].as_array().unwrap()), ["login"]);
    expect_error(app.get(EVENTS).await, 401, "not_authenticated").await;
}

#[actix_web::test]
async fn wrong_passwords_cannot_push_the_logins_out_of_the_history() {
    // No throttling, so that one client can send many wrong passwords quickly: this is about
    // what the history keeps, not about the limits.
    let app = spawn_app_with(|c| c.rate_limit.enabled = false).await;
    let e = email();
    app.register(&e).await;
    let first = app.login(&e).await;
    for _ in 0..70 {
        expect_error(app.login_raw(&e, WRONG).await, 401, "invalid_credentials").await;
    }
    let list = events(&app, &first.access, "?limit=100").await;
    assert_eq!(list.len(), 51, "the login and the 50 newest failures");
    assert_eq!(list[50]["type"], "login");
    assert_eq!(list[50]["session_id"], sid(&first).as_str());
    assert!(list[..50].iter().all(|e| e["type"] == "login_failed"));
}

#[actix_web::test]
async fn the_history_survives_a_restart_agrees_with_the_audit_log_and_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let env = [
        ("RUST_LOG", "warn,bp_auth::audit=info"),
        ("BP_AUTH__LOG__FORMAT", "json"),
    ];
    let server = ServerProcess::start_logged(dir.path(), &env, &log).await;
    let e = email();
    let user_id = server.register(&e).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = server.login(&e).await;
    expect_error(
        login_with_agent(&server, &e, WRONG).await,
        401,
        "invalid_credentials",
    )
    .await;
    let next = Tokens::from_json(
        &expect_status(server.refresh_raw(&t.refresh).await, 200, "rotate").await,
    );
    expect_refresh_error(&server, &t.refresh, "refresh_token_reused").await;
    assert_eq!(server.me(&next.access).await.status(), 401, "revoked");
    let key = server.new_api_key(&server.login(&e).await.access).await;
    let before = {
        let res = server.get_with_api_key(EVENTS, &key).await;
        expect_status(res, 200, "events").await
    };
    let server = {
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        ServerProcess::start_logged(dir.path(), &env, &log).await
    };
    let after = {
        let res = server.get_with_api_key(EVENTS, &key).await;
        expect_status(res, 200, "events after a restart").await
    };
    assert_eq!(before, after, "kept with the user's snapshot");
    let recorded = types(after["events"].as_array().unwrap())
        .into_iter()
        .rev()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(
        recorded,
        ["login", "login_failed", "refresh_reused", "login"]
    );

    // The audit log has the same events for the user, in the same order, from the same record.
    let text = wait_for_log(&log, recorded.len(), &user_id).await;
    let logged: Vec<String> = audit_events(&text, &user_id);
    assert_eq!(logged, recorded, "the log and the history agree:\n{text}");
    // Reuse is an alert.
    assert!(text
        .lines()
        .any(|l| l.contains("refresh_reused") && l.contains("WARN")));

    // No secret in either: not the passwords, not a token.
    let body = after.to_string();
    for secret in [
        PASSWORD,
        WRONG,
        t.refresh.as_str(),
        t.access.as_str(),
        key.as_str(),
    ] {
        assert!(!body.contains(secret), "the history holds no secret");
        assert!(!text.contains(secret), "the log holds no secret");
    }
}

/// The `event` of every audit line about `user_id` that records a history event, in order.
fn audit_events(text: &str, user_id: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "bp_auth::audit")
        .filter(|v| v["fields"]["outcome"] == "recorded")
        .filter(|v| {
            v["fields"]["user"]
                .as_str()
                .is_some_and(|u| u.contains(user_id))
        })
        .map(|v| {
            v["fields"]["event"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn wait_for_log(log: &std::path::Path, n: usize, user_id: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if audit_events(&text, user_id).len() >= n {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::read_to_string(log).unwrap_or_default()
}
