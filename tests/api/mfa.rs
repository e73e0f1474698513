//! Two-factor authentication (API.md: Login's MFA paragraph, "MFA-pending token", and
//! `/api/auth/mfa/*` under "Beyond the core").
//!
//! TOTP codes come from the tests' own RFC 4226/6238 implementation in the helpers, never from
//! the server's code. A code is usable once, so [`Authenticator`] remembers the last step it
//! handed out and answers with the current step's code or, when that one is used, the next
//! step's (the server accepts one step either way); it waits for a step boundary only when both
//! are used.

use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::*;

pub(crate) const SETUP: &str = "/api/auth/mfa/totp/setup";
pub(crate) const VERIFY: &str = "/api/auth/mfa/totp/verify";
pub(crate) const DISABLE: &str = "/api/auth/mfa/totp/disable";
pub(crate) const CHALLENGE: &str = "/api/auth/mfa/challenge";

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

/// `POST /api/auth/mfa/challenge` with `Authorization: Bearer <pending>`.
pub(crate) async fn challenge(app: &TestApp, pending: &str, body: &Value) -> Response {
    app.post_bearer(CHALLENGE, pending, Some(body)).await
}

/// Setup: asserts the answer's shape; returns the secret.
pub(crate) async fn setup(app: &TestApp, email: &str, access: &str) -> String {
    let res = app.post_bearer(SETUP, access, None).await;
    assert_eq!(res.status(), 200, "setup");
    assert_no_store(res.headers());
    assert_common_headers(res.headers());
    let v = json_of(res).await;
    let secret = v["secret"].as_str().expect("secret").to_string();
    assert!(secret.trim_end_matches('=').len() >= 32, "≥ 160 bits: {v}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b) || b == b'='),
        "secret is RFC 4648 base32: {secret:?}"
    );
    assert!(
        decode_base32(&secret).len() >= 20,
        "the secret has at least 160 bits: {secret}"
    );
    let url = v["otpauth_url"].as_str().expect("otpauth_url");
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains("issuer=BlitzPulse"), "{url}");
    let query = url.split_once('?').map_or("", |(_, q)| q);
    assert!(
        query.split('&').any(|p| p == format!("secret={secret}")),
        "the url carries the same secret {secret}: {url}"
    );
    let label = url["otpauth://totp/".len()..]
        .split('?')
        .next()
        .unwrap_or("");
    let local = email.split('@').next().unwrap_or(email);
    assert!(label.contains(local), "the label names the account: {url}");
    secret
}

/// A user with MFA enabled: returns the email, the access token of the session it enrolled
/// in, its authenticator (whose last step is the one verify used) and the recovery codes.
pub(crate) async fn enrolled_user(app: &TestApp) -> (String, Tokens, Authenticator, Vec<String>) {
    let (email, tokens) = app.new_user().await;
    let secret = setup(app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({ "code": code })))
        .await;
    assert_eq!(res.status(), 200, "verify with the current code");
    assert_no_store(res.headers());
    let v = json_of(res).await;
    let codes = recovery_codes(&v);
    (email, tokens, auth, codes)
}

/// `{"mfa_enabled": true, "recovery_codes": [10 distinct codes]}`; returns the codes.
fn recovery_codes(v: &Value) -> Vec<String> {
    let obj = v.as_object().unwrap_or_else(|| panic!("object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["mfa_enabled", "recovery_codes"], "{v}");
    assert_eq!(v["mfa_enabled"], true, "{v}");
    let codes: Vec<String> = v["recovery_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("recovery_codes is a list: {v}"))
        .iter()
        .map(|c| {
            c.as_str()
                .unwrap_or_else(|| panic!("a code is a string: {v}"))
                .to_string()
        })
        .collect();
    assert_eq!(codes.len(), 10, "ten recovery codes: {v}");
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "distinct recovery codes: {v}");
    assert!(codes.iter().all(|c| !c.is_empty()), "no empty code: {v}");
    codes
}

/// Logs in a user with MFA: asserts the MFA-pending answer; returns the pending token.
pub(crate) async fn login_pending(app: &TestApp, email: &str) -> String {
    let res = app.login_raw(email, PASSWORD).await;
    assert_eq!(res.status(), 200, "login of an enrolled user");
    let headers = res.headers().clone();
    assert_no_store(&headers);
    assert_eq!(
        headers.get_all("set-cookie").iter().count(),
        0,
        "no cookie with an MFA-pending token"
    );
    let v = json_of(res).await;
    let obj = v.as_object().unwrap_or_else(|| panic!("object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "mfa_required", "token_type"],
        "no refresh token: {v}"
    );
    assert_eq!(v["token_type"], "mfa_pending", "{v}");
    assert_eq!(v["mfa_required"], true, "{v}");
    assert_eq!(v["expires_in"], 300, "{v}");
    let token = v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let header = jwt_header(&token);
    assert_eq!(header["typ"], "mfa+jwt", "{header}");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    let claims = jwt_claims(&token);
    assert!(claims.get("sid").is_none(), "no sid: {claims}");
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 300, "{claims}");
    token
}

/// A full token response with its cookie, from the challenge; returns the tokens.
pub(crate) async fn expect_signed_in(res: Response) -> Tokens {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let v = json_of(res).await;
    assert_eq!(status, 200, "challenge answered: {v}");
    assert_no_store(&headers);
    assert_common_headers(&headers);
    let t = assert_token_response(&v, 900);
    let cookie = bp_token_cookie(&headers);
    assert_eq!(cookie.value, t.access, "the cookie holds the access token");
    assert!(cookie.has("httponly"), "{cookie:?}");
    assert_eq!(cookie.get("path"), Some("/"), "{cookie:?}");
    assert_eq!(cookie.get("max-age"), Some("900"), "{cookie:?}");
    assert_eq!(jwt_header(&t.access)["typ"], "at+jwt");
    assert!(jwt_claims(&t.access)["sid"].is_string(), "a session token");
    t
}

async fn mfa_enabled_on_me(app: &TestApp, access: &str) -> Value {
    app.profile(access).await["mfa_enabled"].clone()
}

// ---------------------------------------------------------------------------------------------
// Enrolment.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn setup_and_verify_enable_mfa() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let ent = app
        .get_bearer("/api/auth/me/entitlements", &tokens.access)
        .await;
    assert_eq!(ent.status(), 200);
    let etag_before = ent.headers().get("etag").cloned();
    assert_eq!(json_of(ent).await["mfa_enabled"], false);

    // Verify before setup.
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": "123456"})))
        .await;
    expect_error(res, 400, "mfa_not_set_up").await;

    let secret = setup(&app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);

    // A wrong code.
    let wrong = auth.wrong_code(1);
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": wrong})))
        .await;
    expect_error(res, 400, "invalid_code").await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);

    // The right code.
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": code})))
        .await;
    assert_eq!(res.status(), 200, "verify with the current code");
    assert_no_store(res.headers());
    assert_common_headers(res.headers());
    recovery_codes(&json_of(res).await);

    // Setup or verify again.
    let res = app.post_bearer(SETUP, &tokens.access, None).await;
    expect_error(res, 409, "mfa_already_enabled").await;
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": code})))
        .await;
    expect_error(res, 409, "mfa_already_enabled").await;

    // The profile and the entitlements say so.
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, true);
    let ent = app
        .get_bearer("/api/auth/me/entitlements", &tokens.access)
        .await;
    assert_eq!(ent.status(), 200);
    let etag_after = ent.headers().get("etag").cloned();
    assert_eq!(json_of(ent).await["mfa_enabled"], true);
    assert!(etag_after.is_some(), "entitlements carry an ETag");
    assert_ne!(etag_before, etag_after, "the ETag changes with mfa_enabled");
}

#[actix_web::test]
async fn mfa_answers_carry_no_store() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    // Every answer is checked; the failures are listed together at the end.
    let mut missing: Vec<String> = Vec::new();
    let mut no_store = |res: &Response, what: &str| {
        let get = |k: &str| res.headers().get(k).and_then(|v| v.to_str().ok());
        if get("cache-control") != Some("no-store") {
            missing.push(format!(
                "{what} ({}): Cache-Control {:?}",
                res.status(),
                get("cache-control")
            ));
        }
    };
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": "123456"})))
        .await;
    no_store(&res, "verify before setup");
    expect_error(res, 400, "mfa_not_set_up").await;
    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": "123456"})))
        .await;
    no_store(&res, "disable when not enabled");
    expect_error(res, 400, "mfa_not_enabled").await;
    let secret = setup(&app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    let wrong = auth.wrong_code(2);
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": wrong})))
        .await;
    no_store(&res, "verify with a wrong code");
    expect_error(res, 400, "invalid_code").await;
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({"code": code})))
        .await;
    no_store(&res, "verify");
    assert_eq!(res.status(), 200);
    let res = app.post_bearer(SETUP, &tokens.access, None).await;
    no_store(&res, "setup when enabled");
    expect_error(res, 409, "mfa_already_enabled").await;
    let wrong = auth.wrong_code(3);
    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": wrong})))
        .await;
    no_store(&res, "disable with a wrong code");
    expect_error(res, 400, "invalid_code").await;
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": code})))
        .await;
    no_store(&res, "disable");
    assert_eq!(res.status(), 204);
    assert!(
        missing.is_empty(),
        "MFA answers without Cache-Control: no-store: {missing:#?}"
    );
}

#[actix_web::test]
async fn an_api_key_cannot_manage_mfa() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let key = app.new_api_key(&tokens.access).await;
    for path in [SETUP, VERIFY, DISABLE] {
        let res = Client::new()
            .post(app.url(path))
            .header("X-API-Key", &key)
            .json(&json!({"code": "123456"}))
            .send()
            .await
            .expect("post");
        expect_error(res, 403, "session_required").await;
    }
    let res = app.post_bearer(SETUP, &key, None).await;
    expect_error(res, 403, "session_required").await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);
}

// ---------------------------------------------------------------------------------------------
// Login and the challenge.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn an_mfa_pending_token_is_good_only_for_the_challenge() {
    let app = spawn_app().await;
    let (email, _, _, _) = enrolled_user(&app).await;
    let pending = login_pending(&app, &email).await;

    let res = app.me(&pending).await;
    expect_error(res, 401, "invalid_token").await;
    for path in ["/api/auth/me/entitlements", "/api/auth/api-key"] {
        let res = app.get_bearer(path, &pending).await;
        expect_error(res, 401, "invalid_token").await;
    }
    for path in [
        "/api/auth/api-key/rotate",
        "/api/auth/verify-phone/request",
        SETUP,
    ] {
        let res = app.post_bearer(path, &pending, None).await;
        expect_error(res, 401, "invalid_token").await;
    }
    for path in [VERIFY, DISABLE] {
        let res = app
            .post_bearer(path, &pending, Some(&json!({"code": "123456"})))
            .await;
        expect_error(res, 401, "invalid_token").await;
    }
    // As the cookie.
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .header("Cookie", format!("bp_token={pending}"))
        .send()
        .await
        .expect("me");
    expect_error(res, 401, "invalid_token").await;
    // It is no refresh token either.
    let res = app.refresh_raw(&pending).await;
    expect_error(res, 401, "invalid_refresh_token").await;
}

#[actix_web::test]
async fn a_totp_code_completes_the_challenge_once() {
    let app = spawn_app().await;
    let (email, _, mut auth, _) = enrolled_user(&app).await;
    let pending = login_pending(&app, &email).await;

    // The verify step used the current step's code: this is another step's.
    let code = auth.fresh_code().await;
    let res = challenge(&app, &pending, &json!({"code": code})).await;
    let tokens = expect_signed_in(res).await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, true);
    let res = app.refresh_raw(&tokens.refresh).await;
    assert_eq!(res.status(), 200, "the refresh token works");

    // The pending token has succeeded once: it is spent.
    let res = challenge(&app, &pending, &json!({"code": code})).await;
    expect_error(res, 401, "invalid_token").await;

    // The same code on a new pending token is a replay.
    let pending2 = login_pending(&app, &email).await;
    let res = challenge(&app, &pending2, &json!({"code": code})).await;
    expect_error(res, 401, "invalid_code").await;

    // The failed attempt left the token usable: a code of a later step signs in (this may
    // wait for the next 30 s step).
    let code = auth.fresh_code().await;
    let res = challenge(&app, &pending2, &json!({"code": code})).await;
    let tokens2 = expect_signed_in(res).await;
    assert_ne!(
        jwt_claims(&tokens2.access)["sid"],
        jwt_claims(&tokens.access)["sid"],
        "each challenge opens its own session"
    );
}

#[actix_web::test]
async fn five_wrong_codes_void_the_pending_token() {
    let app = spawn_app().await;
    let (email, _, mut auth, _) = enrolled_user(&app).await;
    let pending = login_pending(&app, &email).await;

    let mut wrong: Vec<String> = [-3i64, 3]
        .into_iter()
        .filter_map(|o| auth.out_of_window_code(o))
        .collect();
    let mut seed = 10;
    while wrong.len() < 5 {
        let c = auth.wrong_code(seed);
        if !wrong.contains(&c) {
            wrong.push(c);
        }
        seed += 1;
    }
    for code in &wrong {
        let res = challenge(&app, &pending, &json!({"code": code})).await;
        expect_error(res, 401, "invalid_code").await;
    }
    let right = auth.fresh_code().await;
    let res = challenge(&app, &pending, &json!({"code": right})).await;
    expect_error(res, 401, "invalid_token").await;
    let res = challenge(&app, &pending, &json!({"recovery_code": "aaaaa-bbbbb"})).await;
    expect_error(res, 401, "invalid_token").await;

    // The voided token did not use the code up: a new login signs in with it.
    let pending2 = login_pending(&app, &email).await;
    let res = challenge(&app, &pending2, &json!({"code": right})).await;
    expect_signed_in(res).await;
}

#[actix_web::test]
async fn a_recovery_code_works_once() {
    let app = spawn_app().await;
    let (email, _, _, codes) = enrolled_user(&app).await;

    let pending = login_pending(&app, &email).await;
    let res = challenge(&app, &pending, &json!({"recovery_code": codes[0]})).await;
    let tokens = expect_signed_in(res).await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, true);

    let pending2 = login_pending(&app, &email).await;
    let res = challenge(&app, &pending2, &json!({"recovery_code": codes[0]})).await;
    expect_error(res, 401, "invalid_code").await;
    let res = challenge(&app, &pending2, &json!({"recovery_code": "zzzzz-zzzzz"})).await;
    expect_error(res, 401, "invalid_code").await;

    // Another one still works, on the same pending token.
    let res = challenge(&app, &pending2, &json!({"recovery_code": codes[1]})).await;
    expect_signed_in(res).await;
}

#[actix_web::test]
async fn the_challenge_needs_a_pending_token_and_an_answer() {
    let app = spawn_app().await;
    let (email, tokens, mut auth, _) = enrolled_user(&app).await;
    let code = auth.fresh_code().await;

    // No Authorization (and no cookie).
    let res = app.post_json(CHALLENGE, &json!({"code": code})).await;
    expect_error(res, 401, "not_authenticated").await;

    // A normal access token.
    let res = challenge(&app, &tokens.access, &json!({"code": code})).await;
    expect_error(res, 401, "invalid_token").await;

    // A pending token with no answer, or an answer of the wrong type.
    let pending = login_pending(&app, &email).await;
    let res = challenge(&app, &pending, &json!({})).await;
    expect_validation(res).await;
    let res = challenge(&app, &pending, &json!({"code": 123_456})).await;
    expect_validation(res).await;
    let res = Client::new()
        .post(app.url(CHALLENGE))
        .bearer_auth(&pending)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("challenge");
    expect_issues(res, &[("json_invalid", &["body"])]).await;

    // The token is still good for a right answer.
    let res = challenge(&app, &pending, &json!({"code": code})).await;
    expect_signed_in(res).await;
}

// ---------------------------------------------------------------------------------------------
// Disable.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn disable_turns_mfa_off() {
    let app = spawn_app().await;
    let (email, tokens, mut auth, _) = enrolled_user(&app).await;
    let verify_code = auth.code_at_step(auth.last_step);

    let res = app
        .post_bearer(
            DISABLE,
            &tokens.access,
            Some(&json!({"code": auth.wrong_code(7)})),
        )
        .await;
    expect_error(res, 400, "invalid_code").await;
    // The code verify used is spent.
    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": verify_code})))
        .await;
    expect_error(res, 400, "invalid_code").await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, true);

    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": code})))
        .await;
    assert_eq!(res.status(), 204, "disable with an unused code");
    assert_common_headers(res.headers());
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);

    // A plain login again.
    let res = app.login_raw(&email, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    let t = assert_token_response(&json_of(res).await, 900);
    assert_eq!(bp_token_cookie(&headers).value, t.access);
    assert_eq!(mfa_enabled_on_me(&app, &t.access).await, false);

    let res = app
        .post_bearer(DISABLE, &tokens.access, Some(&json!({"code": code})))
        .await;
    expect_error(res, 400, "mfa_not_enabled").await;

    // It can be set up again.
    setup(&app, &email, &tokens.access).await;
}
