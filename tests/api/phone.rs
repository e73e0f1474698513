//! Phone verification: `POST /api/auth/verify-phone/request` and `/confirm`, the SMS line in the
//! outbox, the code's limits, `PATCH /api/auth/me`'s effect on them, and a code's durability.

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

const PHONE: &str = "+447700900123";
const MASKED: &str = "+44*******123";

/// The exact sms line for `user_id`; returns its code.
fn assert_sms_line(line: &Value, to: &str, user_id: &Value) -> String {
    assert_outbox_line(line, "sms", "verify_phone", to, user_id)
}

/// Requests a code (expecting 200) and returns it from the one new outbox line.
async fn request_code(app: &TestApp, token: &str) -> String {
    let before = app.outbox().len();
    let res = app.phone_request(token).await;
    assert_eq!(res.status(), 200, "verify-phone/request");
    let lines = app.wait_outbox(before + 1).await;
    assert_eq!(lines.len(), before + 1, "exactly one new line");
    assert_six_digits(&lines[before]["code"], "code")
}

#[actix_web::test]
async fn request_sends_one_sms_through_the_outbox() {
    let app = spawn_app().await;
    let e = email();
    let res = app
        .register_raw(&json!({"email": e, "password": PASSWORD, "phone": PHONE}))
        .await;
    assert_eq!(res.status(), 201);
    let registered = json_of(res).await;
    let t = app.login(&e).await;
    assert!(app.outbox().is_empty(), "nothing sent yet");

    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    let body = json_of(res).await;
    assert_eq!(
        body,
        json!({"sent": true, "destination": MASKED, "expires_in": 600, "resend_after": 60})
    );

    let lines = app.wait_outbox(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let code = assert_sms_line(&lines[0], PHONE, &registered["id"]);
    assert!(
        !body.to_string().contains(&code),
        "the answer does not hold the code"
    );
}

#[actix_web::test]
async fn the_answer_reflects_the_configured_limits() {
    let app = spawn_app_with(|c| {
        c.codes.phone_ttl_seconds = 300;
        c.codes.resend_seconds = 30;
    })
    .await;
    let (_, t) = app.new_user_with_phone("+15551234567").await;
    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        json_of(res).await,
        json!({"sent": true, "destination": "+15******567", "expires_in": 300, "resend_after": 30})
    );
}

#[actix_web::test]
async fn wrong_codes_count_down_and_the_last_one_voids_the_code() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;
    let wrong = other_code(&code);
    for left in [4, 3, 2, 1, 0] {
        let res = app.phone_confirm(&t.access, &wrong).await;
        expect_invalid_code(res, Some(left)).await;
    }
    let res = app.phone_confirm(&t.access, &code).await;
    expect_error(res, 400, "code_expired").await;
    assert_eq!(app.profile(&t.access).await["phone_verified"], false);
}

#[actix_web::test]
async fn the_right_code_verifies_the_phone() {
    let app = spawn_app_with(|c| c.codes.resend_seconds = 0).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;

    // A wrong try first does not spoil the right code.
    let res = app.phone_confirm(&t.access, &other_code(&code)).await;
    expect_invalid_code(res, Some(4)).await;

    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_eq!(json_of(res).await, json!({"phone_verified": true}));

    let me = app.profile(&t.access).await;
    assert_eq!(me["phone_verified"], true);
    assert_eq!(me["phone"], PHONE);

    let before = app.outbox().len();
    let res = app.phone_request(&t.access).await;
    expect_error(res, 409, "phone_already_verified").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        app.outbox().len(),
        before,
        "nothing sent to a verified phone"
    );
}

#[actix_web::test]
async fn a_code_is_usable_once() {
    let app = spawn_app_with(|c| c.codes.resend_seconds = 0).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;
    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);

    // The phone is verified; the spent code is not accepted again.
    let res = app.phone_confirm(&t.access, &code).await;
    let status = res.status().as_u16();
    let body = json_of(res).await;
    assert!(
        (status == 400 && body["code"] == "code_expired")
            || (status == 409 && body["code"] == "phone_already_verified"),
        "a spent code: {status} {body}"
    );

    // Unverify by changing the phone and back: the spent code is still spent.
    let res = app
        .patch_me(&t.access, &json!({"phone": "+447700900456"}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app.patch_me(&t.access, &json!({"phone": PHONE})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["phone_verified"], false);
    let res = app.phone_confirm(&t.access, &code).await;
    expect_error(res, 400, "code_expired").await;
}

#[actix_web::test]
async fn a_new_code_voids_the_previous_one() {
    let app = spawn_app_with(|c| {
        c.codes.resend_seconds = 0;
        c.codes.sends_per_hour = 100;
    })
    .await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let first = request_code(&app, &t.access).await;
    let mut second = request_code(&app, &t.access).await;
    while second == first {
        // One chance in a million: ask again until the codes differ.
        second = request_code(&app, &t.access).await;
    }
    let res = app.phone_confirm(&t.access, &first).await;
    let status = res.status().as_u16();
    let body = json_of(res).await;
    assert_eq!(status, 400, "the previous code is void: {body}");
    assert!(
        body["code"] == "invalid_code" || body["code"] == "code_expired",
        "{body}"
    );
    let res = app.phone_confirm(&t.access, &second).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"phone_verified": true}));
}

#[actix_web::test]
async fn confirm_with_nothing_pending_is_code_expired() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let res = app.phone_confirm(&t.access, "123456").await;
    expect_error(res, 400, "code_expired").await;
}

#[actix_web::test]
async fn request_again_within_the_resend_interval_is_rate_limited() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;

    let res = app.phone_request(&t.access).await;
    let retry_after = retry_after(res.headers());
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    expect_error(res, 429, "rate_limited").await;
    assert_eq!(app.outbox().len(), 1, "nothing more was sent");

    // The refused request voided nothing: the first code still works.
    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn code_limits_hold_with_rate_limiting_disabled() {
    let app = spawn_app_with(|c| c.rate_limit.enabled = false).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    request_code(&app, &t.access).await;
    let res = app.phone_request(&t.access).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, 429, "rate_limited").await;
}

#[actix_web::test]
async fn the_sixth_send_in_an_hour_is_rate_limited() {
    let app = spawn_app_with(|c| {
        c.codes.resend_seconds = 0;
        c.codes.sends_per_hour = 5;
    })
    .await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let mut last = String::new();
    for _ in 0..5 {
        last = request_code(&app, &t.access).await;
    }
    let res = app.phone_request(&t.access).await;
    let retry_after = retry_after(res.headers());
    // The hour's first send was a moment ago.
    assert!(
        (3_500..=3_600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    expect_error(res, 429, "rate_limited").await;
    assert_eq!(app.outbox().len(), 5);
    // The fifth code is still the pending one.
    let res = app.phone_confirm(&t.access, &last).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn no_phone_on_the_profile() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app.phone_request(&t.access).await;
    expect_error(res, 400, "no_phone").await;
    assert!(app.outbox().is_empty());

    // Adding one makes the request work.
    let res = app.patch_me(&t.access, &json!({"phone": PHONE})).await;
    assert_eq!(res.status(), 200);
    let me = json_of(res).await;
    assert_eq!(me["phone"], PHONE);
    assert_eq!(me["phone_verified"], false);
    let code = request_code(&app, &t.access).await;
    assert_sms_line(&app.outbox()[0], PHONE, &me["id"]);
    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_different_phone_is_unverified_and_voids_a_pending_code() {
    let app = spawn_app_with(|c| c.codes.resend_seconds = 0).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;
    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);

    // The same number again changes nothing.
    let res = app.patch_me(&t.access, &json!({"phone": PHONE})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["phone_verified"], true);

    // A different number is unverified.
    let res = app
        .patch_me(&t.access, &json!({"phone": "+447700900456"}))
        .await;
    assert_eq!(res.status(), 200);
    let me = json_of(res).await;
    assert_eq!(me["phone"], "+447700900456");
    assert_eq!(me["phone_verified"], false);
    assert_eq!(app.profile(&t.access).await, me);

    // A code sent to it is voided by another change of number.
    let pending = request_code(&app, &t.access).await;
    let line = app.outbox().last().cloned().unwrap();
    assert_eq!(line["to"], "+447700900456");
    let res = app
        .patch_me(&t.access, &json!({"phone": "+447700900789"}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app.phone_confirm(&t.access, &pending).await;
    expect_error(res, 400, "code_expired").await;

    // Removing the phone unverifies it too.
    let code = request_code(&app, &t.access).await;
    let res = app.phone_confirm(&t.access, &code).await;
    assert_eq!(res.status(), 200);
    let res = app.patch_me(&t.access, &json!({"phone": null})).await;
    assert_eq!(res.status(), 200);
    let me = json_of(res).await;
    assert!(me["phone"].is_null(), "{me}");
    assert_eq!(me["phone_verified"], false, "{me}");
    let res = app.phone_request(&t.access).await;
    expect_error(res, 400, "no_phone").await;
}

#[actix_web::test]
async fn patch_me_changes_the_name_and_validates() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let original = app.profile(&t.access).await;

    let res = app
        .patch_me(&t.access, &json!({"full_name": "Ada Lovelace"}))
        .await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    let me = json_of(res).await;
    assert_eq!(me["full_name"], "Ada Lovelace");
    assert_eq!(me["email"], e);
    assert_eq!(me["id"], original["id"]);
    assert!(me["phone"].is_null(), "absent fields are unchanged");

    // 100 characters (code points) is the limit.
    let hundred = "é".repeat(100);
    let res = app
        .patch_me(&t.access, &json!({"full_name": hundred}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["full_name"], hundred);

    let res = app
        .patch_me(&t.access, &json!({"full_name": "x".repeat(101)}))
        .await;
    expect_issues(res, &[("string_too_long", &["body", "full_name"])]).await;

    for bad in [
        "12345",
        "447700900123",
        "+44 7700 900123",
        "+12345",
        "+4477009001234567",
        "phone",
    ] {
        let res = app.patch_me(&t.access, &json!({"phone": bad})).await;
        let detail = expect_issues(res, &[("*", &["body", "phone"])]).await;
        let kind = detail[0]["type"].as_str().unwrap();
        assert!(
            kind == "string_pattern_mismatch" || kind == "value_error",
            "{bad:?}: {detail:?}"
        );
    }

    // Wrong types are refused, never ignored.
    let res = app.patch_me(&t.access, &json!({"full_name": 5})).await;
    expect_issues(res, &[("string_type", &["body", "full_name"])]).await;
    let res = app
        .patch_me(&t.access, &json!({"phone": 447700900123u64}))
        .await;
    expect_issues(res, &[("string_type", &["body", "phone"])]).await;

    // Nothing above changed the profile.
    assert_eq!(app.profile(&t.access).await["full_name"], hundred);

    // null clears.
    let res = app.patch_me(&t.access, &json!({"full_name": null})).await;
    assert_eq!(res.status(), 200);
    let me = json_of(res).await;
    assert!(me["full_name"].is_null(), "{me}");
    assert!(app.profile(&t.access).await["full_name"].is_null());

    // Not JSON.
    let res = Client::new()
        .patch(app.url("/api/auth/me"))
        .bearer_auth(&t.access)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_issues(res, &[("json_invalid", &["body"])]).await;
}

#[actix_web::test]
async fn confirm_needs_a_code_field() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let res = app
        .post_bearer(
            "/api/auth/verify-phone/confirm",
            &t.access,
            Some(&json!({})),
        )
        .await;
    expect_issues(res, &[("missing", &["body", "code"])]).await;
    let res = app
        .post_bearer(
            "/api/auth/verify-phone/confirm",
            &t.access,
            Some(&json!({"code": 123456})),
        )
        .await;
    expect_issues(res, &[("string_type", &["body", "code"])]).await;
}

#[actix_web::test]
async fn phone_endpoints_need_a_session() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let key = app.new_api_key(&t.access).await;
    for path in [
        "/api/auth/verify-phone/request",
        "/api/auth/verify-phone/confirm",
    ] {
        let res = Client::new()
            .post(app.url(path))
            .json(&json!({"code": "123456"}))
            .send()
            .await
            .unwrap();
        expect_error(res, 401, "not_authenticated").await;
        let res = Client::new()
            .post(app.url(path))
            .header("x-api-key", &key)
            .json(&json!({"code": "123456"}))
            .send()
            .await
            .unwrap();
        expect_error(res, 403, "session_required").await;
    }
    assert!(app.outbox().is_empty());
}

// --- Durability across restarts, with the real binary -----------------------------------------

/// Registers a user with a phone on `server`, logs in, requests a code; returns the access
/// token and the code from the outbox.
async fn pending_code_on(server: &ServerProcess, dir: &std::path::Path) -> (String, String) {
    let (_, t) = server.new_user_with_phone(PHONE).await;
    let res = server.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    let lines = wait_outbox_len(dir, 1).await;
    let code = assert_six_digits(&lines[0]["code"], "code");
    (t.access, code)
}

async fn confirm_after_restart(dir: &std::path::Path, access: &str, code: &str) {
    let server = ServerProcess::start(dir, &[]).await;
    // The resend interval (60 s) outlives the restart too, and its refusal voids nothing.
    let res = server.phone_request(access).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, 429, "rate_limited").await;
    // A wrong code first: the pending code's attempts were kept too.
    let res = server.phone_confirm(access, &other_code(code)).await;
    expect_invalid_code(res, Some(4)).await;
    let res = server.phone_confirm(access, code).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"phone_verified": true}));
    let res = server.me(access).await;
    assert_eq!(json_of(res).await["phone_verified"], true);
    assert!(server.terminate().success());
}

#[actix_web::test]
async fn a_pending_code_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (access, code) = pending_code_on(&server, dir.path()).await;
    assert!(server.terminate().success(), "SIGTERM exits with 0");
    confirm_after_restart(dir.path(), &access, &code).await;
}

#[actix_web::test]
async fn a_pending_code_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (access, code) = pending_code_on(&server, dir.path()).await;
    // storage.durability = "flush": the 200 meant the code was on disk.
    server.kill();
    confirm_after_restart(dir.path(), &access, &code).await;
}

#[actix_web::test]
async fn an_expired_code_is_refused() {
    let app = spawn_app_with(|c| c.codes.phone_ttl_seconds = 1).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["expires_in"], 1);
    let code = assert_six_digits(&app.wait_outbox(1).await[0]["code"], "code");
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let res = app.phone_confirm(&t.access, &code).await;
    expect_error(res, 400, "code_expired").await;
    assert_eq!(app.profile(&t.access).await["phone_verified"], false);
}

#[actix_web::test]
async fn max_attempts_is_configurable() {
    let app = spawn_app_with(|c| c.codes.max_attempts = 3).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let code = request_code(&app, &t.access).await;
    for left in [2, 1, 0] {
        let res = app.phone_confirm(&t.access, &other_code(&code)).await;
        expect_invalid_code(res, Some(left)).await;
    }
    let res = app.phone_confirm(&t.access, &code).await;
    expect_error(res, 400, "code_expired").await;
}

#[actix_web::test]
async fn patch_me_ignores_unknown_fields_and_needs_a_body() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let before = app.profile(&t.access).await;

    let res = app.patch_me(&t.access, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, before);

    let res = app
        .patch_me(
            &t.access,
            &json!({"email": "other@example.com", "status": "deactivated", "phone_verified": true, "plan": "enterprise"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let after = json_of(res).await;
    assert_eq!(after, before, "unknown and read-only fields are ignored");
    assert_eq!(after["email"], e);

    let res = Client::new()
        .patch(app.url("/api/auth/me"))
        .bearer_auth(&t.access)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    expect_issues(res, &[("missing", &["body"])]).await;
}
