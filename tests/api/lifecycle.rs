//! The credential lifecycle (API.md "Account lifecycle"): changing and resetting the password,
//! verifying the address, and changing it. Codes are read from the outbox, as a user reads
//! their mail.

use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const NEW_PASSWORD: &str = "a brand new passphrase 2026";
const WRONG: &str = "definitely not the password";

/// The outbox lines for `purpose`, in order.
fn lines_for(app: &TestApp, purpose: &str) -> Vec<Value> {
    app.outbox()
        .into_iter()
        .filter(|l| l["purpose"] == purpose)
        .collect()
}

/// Waits for the `n`th outbox line of `purpose`.
pub(crate) async fn wait_for(app: &TestApp, purpose: &str, n: usize) -> Value {
    for _ in 0..200 {
        let lines = lines_for(app, purpose);
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no {purpose} line #{n} in {:?}", app.outbox());
}

/// A notification: to the address, no code.
fn assert_notification(line: &Value, purpose: &str, to: &str, user_id: &Value) {
    assert_eq!(line["channel"], "email", "{line}");
    assert_eq!(line["purpose"], purpose, "{line}");
    assert_eq!(line["to"], to, "{line}");
    assert_eq!(&line["user_id"], user_id, "{line}");
    assert!(
        line["code"].is_null(),
        "a notification carries no code: {line}"
    );
}

pub(crate) async fn change_password(app: &TestApp, token: &str, body: &Value) -> Response {
    app.post_bearer("/api/auth/password/change", token, Some(body))
        .await
}

pub(crate) async fn forgot(app: &TestApp, email: &str) -> Response {
    app.post_json("/api/auth/password/forgot", &json!({ "email": email }))
        .await
}

pub(crate) async fn reset(app: &TestApp, email: &str, code: &str, password: &str) -> Response {
    app.post_json(
        "/api/auth/password/reset",
        &json!({ "email": email, "code": code, "new_password": password }),
    )
    .await
}

async fn expect_no_content(res: Response) {
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[actix_web::test]
async fn a_password_change_needs_the_current_password_and_ends_the_other_sessions() {
    let app = spawn_app().await;
    let (email, here) = app.new_user().await;
    let elsewhere = app.login(&email).await;
    let id = app.profile(&here.access).await["id"].clone();

    let wrong = json!({"current_password": WRONG, "new_password": NEW_PASSWORD});
    expect_error(
        change_password(&app, &here.access, &wrong).await,
        403,
        "invalid_credentials",
    )
    .await;
    let short = json!({"current_password": PASSWORD, "new_password": "short"});
    expect_issues(
        change_password(&app, &here.access, &short).await,
        &[("string_too_short", &["body", "new_password"])],
    )
    .await;

    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    expect_no_content(change_password(&app, &here.access, &body).await).await;
    assert_eq!(
        app.me(&here.access).await.status(),
        200,
        "the current session stays"
    );
    expect_error(app.me(&elsewhere.access).await, 401, "session_revoked").await;
    expect_refresh_error(&app, &elsewhere.refresh, "invalid_refresh_token").await;
    assert_eq!(
        app.login_raw(&email, PASSWORD).await.status(),
        401,
        "the old password is gone"
    );
    assert_eq!(app.login_raw(&email, NEW_PASSWORD).await.status(), 200);
    let note = wait_for(&app, "password_changed", 1).await;
    assert_notification(&note, "password_changed", &email, &id);
}

#[actix_web::test]
async fn a_password_change_can_keep_the_other_sessions() {
    let app = spawn_app().await;
    let (email, here) = app.new_user().await;
    let elsewhere = app.login(&email).await;
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "revoke_other_sessions": false});
    expect_no_content(change_password(&app, &here.access, &body).await).await;
    assert_eq!(app.me(&elsewhere.access).await.status(), 200);
}

#[actix_web::test]
async fn a_password_change_needs_a_session_not_an_api_key() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let key = expect_status(
        app.get_bearer("/api/auth/api-key", &tokens.access).await,
        200,
        "key",
    )
    .await;
    let key = key["key"].as_str().unwrap().to_string();
    let res = Client::new()
        .post(app.url("/api/auth/password/change"))
        .header("x-api-key", key)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "session_required").await;
}

#[actix_web::test]
async fn wrong_current_passwords_are_throttled_like_logins() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let wrong = json!({"current_password": WRONG, "new_password": NEW_PASSWORD});
    for _ in 0..10 {
        expect_error(
            change_password(&app, &tokens.access, &wrong).await,
            403,
            "invalid_credentials",
        )
        .await;
    }
    let right = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    expect_error(
        change_password(&app, &tokens.access, &right).await,
        429,
        "rate_limited",
    )
    .await;
    expect_error(app.login_raw(&email, PASSWORD).await, 429, "rate_limited").await;
}

/// What an answer shows a client: the status, the headers that are not per-request, the body.
async fn visible(res: Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    headers.sort();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

#[actix_web::test]
async fn forgot_answers_the_same_for_every_email() {
    let app = spawn_app().await;
    let (active, _) = app.new_user().await;
    let (gone, gone_tokens) = app.new_user().await;
    let res = app
        .post_bearer(
            "/api/auth/deactivate",
            &gone_tokens.access,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(res.status(), 204);
    let unknown = email();
    let answers = [
        visible(forgot(&app, &active).await).await,
        visible(forgot(&app, &gone).await).await,
        visible(forgot(&app, &unknown).await).await,
    ];
    assert_eq!(answers[0].0, 204);
    assert_eq!(answers[0], answers[1], "active and deactivated look alike");
    assert_eq!(answers[0], answers[2], "known and unknown look alike");
    let line = wait_for(&app, "password_reset", 1).await;
    assert_eq!(line["to"], active.as_str());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        lines_for(&app, "password_reset").len(),
        1,
        "only the active account got a code"
    );
}

#[actix_web::test]
async fn a_reset_needs_the_code_ends_every_session_and_opens_none() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let id = app.profile(&tokens.access).await["id"].clone();
    expect_no_content(forgot(&app, &email).await).await;
    let line = wait_for(&app, "password_reset", 1).await;
    let code = assert_outbox_line(&line, "email", "password_reset", &email, &id);

    let wrong = expect_error(
        reset(&app, &email, &other_code(&code), NEW_PASSWORD).await,
        400,
        "invalid_code",
    )
    .await;
    let unknown = expect_error(
        reset(&app, &crate::helpers::email(), &code, NEW_PASSWORD).await,
        400,
        "invalid_code",
    )
    .await;
    assert_eq!(
        wrong, unknown,
        "a wrong code and an unknown email answer alike"
    );
    expect_issues(
        reset(&app, &email, &code, "short").await,
        &[("string_too_short", &["body", "new_password"])],
    )
    .await;

    let res = reset(&app, &email, &code, NEW_PASSWORD).await;
    assert_eq!(
        res.headers().get_all("set-cookie").iter().count(),
        0,
        "no session is opened"
    );
    expect_no_content(res).await;
    expect_error(app.me(&tokens.access).await, 401, "session_revoked").await;
    expect_refresh_error(&app, &tokens.refresh, "invalid_refresh_token").await;
    assert_eq!(app.login_raw(&email, PASSWORD).await.status(), 401);
    assert_eq!(app.login_raw(&email, NEW_PASSWORD).await.status(), 200);
    expect_error(
        reset(&app, &email, &code, "yet another passphrase 1").await,
        400,
        "invalid_code",
    )
    .await;
    let note = wait_for(&app, "password_changed", 1).await;
    assert_notification(&note, "password_changed", &email, &id);
}

#[actix_web::test]
async fn a_newer_reset_code_voids_the_older() {
    let app = spawn_app_with(|c| c.codes.resend_seconds = 0).await;
    let (email, _) = app.new_user().await;
    expect_no_content(forgot(&app, &email).await).await;
    let first = wait_for(&app, "password_reset", 1).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    expect_no_content(forgot(&app, &email).await).await;
    let second = wait_for(&app, "password_reset", 2).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    if first != second {
        expect_error(
            reset(&app, &email, &first, NEW_PASSWORD).await,
            400,
            "invalid_code",
        )
        .await;
    }
    expect_no_content(reset(&app, &email, &second, NEW_PASSWORD).await).await;
}

#[actix_web::test]
async fn mfa_is_still_asked_after_a_reset() {
    let app = spawn_app().await;
    let (email, _, _, _) = crate::mfa::enrolled_user(&app).await;
    expect_no_content(forgot(&app, &email).await).await;
    let code = wait_for(&app, "password_reset", 1).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    expect_no_content(reset(&app, &email, &code, NEW_PASSWORD).await).await;
    let v = expect_status(app.login_raw(&email, NEW_PASSWORD).await, 200, "login").await;
    assert_eq!(v["token_type"], "mfa_pending", "{v}");
}

#[actix_web::test]
async fn registration_sends_a_verification_code_and_confirming_it_verifies() {
    let app = spawn_app_with(|c| c.registration.send_verification_email = true).await;
    let (email, tokens) = app.new_user().await;
    let id = app.profile(&tokens.access).await["id"].clone();
    assert_eq!(app.profile(&tokens.access).await["email_verified"], false);
    let line = wait_for(&app, "verify_email", 1).await;
    let code = assert_outbox_line(&line, "email", "verify_email", &email, &id);
    let confirm = |code: String| {
        let (app, token) = (&app, tokens.access.clone());
        async move {
            app.post_bearer(
                "/api/auth/verify-email/confirm",
                &token,
                Some(&json!({ "code": code })),
            )
            .await
        }
    };
    expect_invalid_code(confirm(other_code(&code)).await, Some(4)).await;
    let v = expect_status(confirm(code.clone()).await, 200, "confirm").await;
    assert_eq!(v, json!({"email_verified": true}));
    assert_eq!(app.profile(&tokens.access).await["email_verified"], true);
    let ent = expect_status(
        app.get_bearer("/api/auth/me/entitlements", &tokens.access)
            .await,
        200,
        "entitlements",
    )
    .await;
    assert_eq!(ent["email_verified"], true);
    expect_error(confirm(code).await, 400, "code_expired").await;
    let again = app
        .post_bearer("/api/auth/verify-email/request", &tokens.access, None)
        .await;
    expect_error(again, 409, "email_already_verified").await;
}

#[actix_web::test]
async fn a_verification_code_can_be_asked_for_again() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    assert!(
        lines_for(&app, "verify_email").is_empty(),
        "off in this configuration"
    );
    let res = app
        .post_bearer("/api/auth/verify-email/request", &tokens.access, None)
        .await;
    let v = expect_status(res, 200, "request").await;
    let first = email.chars().next().unwrap();
    let domain = email.split('@').nth(1).unwrap();
    assert_eq!(v["destination"], format!("{first}***@{domain}"));
    assert_eq!(v["sent"], true);
    assert_eq!(v["expires_in"], 900);
    assert_eq!(v["resend_after"], 60);
    let again = app
        .post_bearer("/api/auth/verify-email/request", &tokens.access, None)
        .await;
    expect_error(again, 429, "rate_limited").await;
}

pub(crate) async fn change_email(
    app: &TestApp,
    token: &str,
    new_email: &str,
    password: &str,
) -> Response {
    app.post_bearer(
        "/api/auth/email/change",
        token,
        Some(&json!({ "new_email": new_email, "password": password })),
    )
    .await
}

pub(crate) async fn confirm_change(app: &TestApp, token: &str, code: &str) -> Response {
    app.post_bearer(
        "/api/auth/email/change/confirm",
        token,
        Some(&json!({ "code": code })),
    )
    .await
}

#[actix_web::test]
async fn an_email_change_moves_the_login_to_the_new_address() {
    let app = spawn_app().await;
    let (old, tokens) = app.new_user().await;
    let id = app.profile(&tokens.access).await["id"].clone();
    let (taken, _) = app.new_user().await;
    let new = email();

    expect_error(
        change_email(&app, &tokens.access, &new, WRONG).await,
        403,
        "invalid_credentials",
    )
    .await;
    expect_error(
        change_email(&app, &tokens.access, &taken.to_uppercase(), PASSWORD).await,
        409,
        "email_taken",
    )
    .await;
    expect_error(
        change_email(&app, &tokens.access, &old, PASSWORD).await,
        409,
        "email_taken",
    )
    .await;

    let v = expect_status(
        change_email(&app, &tokens.access, &new, PASSWORD).await,
        200,
        "change",
    )
    .await;
    assert_eq!(v["sent"], true);
    let line = wait_for(&app, "change_email", 1).await;
    let code = assert_outbox_line(&line, "email", "change_email", &new, &id);
    assert_eq!(
        app.login_raw(&old, PASSWORD).await.status(),
        200,
        "nothing moved before the code"
    );

    expect_invalid_code(
        confirm_change(&app, &tokens.access, &other_code(&code)).await,
        Some(4),
    )
    .await;
    let profile = expect_status(
        confirm_change(&app, &tokens.access, &code).await,
        200,
        "confirm",
    )
    .await;
    assert_eq!(profile["email"], new.as_str());
    assert_eq!(profile["email_verified"], true);
    assert_eq!(app.profile(&tokens.access).await["email"], new.as_str());
    expect_error(
        app.login_raw(&old, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.login_raw(&new, PASSWORD).await.status(), 200);
    let note = wait_for(&app, "email_changed", 1).await;
    assert_notification(&note, "email_changed", &old, &id);
    // The old address is free for someone else now.
    app.register(&old).await;
}

#[actix_web::test]
async fn two_users_confirming_one_new_address_exactly_one_wins() {
    let app = spawn_app().await;
    let (_, a) = app.new_user().await;
    let (_, b) = app.new_user().await;
    let contested = email();
    for t in [&a, &b] {
        let res = change_email(&app, &t.access, &contested, PASSWORD).await;
        assert_eq!(res.status(), 200);
    }
    let lines = lines_for(&app, "change_email");
    assert_eq!(lines.len(), 2);
    let id_a = app.profile(&a.access).await["id"].clone();
    let code_of = |id: &Value| {
        lines.iter().find(|l| &l["user_id"] == id).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let id_b = app.profile(&b.access).await["id"].clone();
    let (ra, rb) = futures_util::future::join(
        confirm_change(&app, &a.access, &code_of(&id_a)),
        confirm_change(&app, &b.access, &code_of(&id_b)),
    )
    .await;
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    let loser = if statuses[0] == 409 { ra } else { rb };
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "exactly one wins");
    expect_error(loser, 409, "email_taken").await;
}
