//! Two-factor authentication (API.md: Login's MFA paragraph, "MFA-pending token", and
//! `/api/auth/mfa/*` under "Beyond the core").
//!
//! TOTP codes come from an implementation written here from RFC 4226/6238 (HMAC-SHA-1 over the
//! big-endian step counter, dynamic truncation, 6 digits, 30 s steps), never from the server's
//! code. A code is usable once, so [`Authenticator`] remembers the last step it handed out and
//! answers with the current step's code or, when that one is used, the next step's (the server
//! accepts one step either way); it waits for a step boundary only when both are used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32, BASE32_NOPAD};
use hmac::{Hmac, Mac};
use reqwest::{Client, Response};
use serde_json::{json, Value};
use sha1::Sha1;

use crate::helpers::*;

const SETUP: &str = "/api/auth/mfa/totp/setup";
const VERIFY: &str = "/api/auth/mfa/totp/verify";
const DISABLE: &str = "/api/auth/mfa/totp/disable";
const CHALLENGE: &str = "/api/auth/mfa/challenge";

// ---------------------------------------------------------------------------------------------
// An independent RFC 6238 implementation.
// ---------------------------------------------------------------------------------------------

const STEP_SECONDS: u64 = 30;

/// RFC 4226 HOTP with HMAC-SHA-1: the `digits` low decimal digits of the dynamically
/// truncated MAC of the 8-byte big-endian `counter`, zero-padded.
fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    let code = binary % 10u32.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// RFC 6238 TOTP at Unix time `t` (30 s steps from T0 = 0).
fn totp_at(key: &[u8], t: u64, digits: u32) -> String {
    hotp(key, t / STEP_SECONDS, digits)
}

/// The wall clock, read here rather than through the server's clock module.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// The server's base32 secret, decoded (padded or not).
fn decode_secret(secret: &str) -> Vec<u8> {
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b) || b == b'='),
        "secret is RFC 4648 base32: {secret:?}"
    );
    let decoded = if secret.contains('=') {
        BASE32.decode(secret.as_bytes())
    } else {
        BASE32_NOPAD.decode(secret.as_bytes())
    };
    decoded.unwrap_or_else(|e| panic!("secret {secret:?} is not base32: {e}"))
}

/// The user's authenticator app: the secret and the last step whose code it has given out.
struct Authenticator {
    key: Vec<u8>,
    last_step: u64,
}

impl Authenticator {
    fn new(secret: &str) -> Self {
        Self {
            key: decode_secret(secret),
            last_step: 0,
        }
    }

    fn code_at_step(&self, step: u64) -> String {
        hotp(&self.key, step, 6)
    }

    /// A code of a step not used yet: the current one, or the next one (which the server
    /// accepts, ±1 step) if the current one is used; waits for the next step boundary when
    /// both are used. The code's step counts as used from now on.
    async fn fresh_code(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now.as_secs() / STEP_SECONDS;
            let step = (self.last_step + 1).max(current);
            if step <= current + 1 {
                self.last_step = step;
                return self.code_at_step(step);
            }
            // Not a speed assertion: a code is good once, so wait until `step` is the next one.
            let boundary = Duration::from_secs((step - 1) * STEP_SECONDS);
            tokio::time::sleep(boundary.saturating_sub(now) + Duration::from_millis(50)).await;
        }
    }

    /// Six digits that are no code of any step the server could accept around now.
    fn wrong_code(&self, seed: u32) -> String {
        let current = unix_now().as_secs() / STEP_SECONDS;
        let near: Vec<String> = (current - 2..=current + 3)
            .map(|s| self.code_at_step(s))
            .collect();
        (seed..)
            .map(|n| format!("{:06}", n.wrapping_mul(104_729) % 1_000_000))
            .find(|c| !near.contains(c))
            .expect("a wrong code")
    }

    /// The code of a step outside the ±1 window around now (`offset` steps away, |offset| ≥ 3),
    /// unless it happens to equal a code the server could accept.
    fn out_of_window_code(&self, offset: i64) -> Option<String> {
        let current = unix_now().as_secs() / STEP_SECONDS;
        let step = current.checked_add_signed(offset).expect("a step");
        let code = self.code_at_step(step);
        let near: Vec<String> = (current - 2..=current + 2)
            .map(|s| self.code_at_step(s))
            .collect();
        (!near.contains(&code)).then_some(code)
    }
}

#[test]
fn the_tests_totp_matches_rfc_6238() {
    let seed = b"12345678901234567890";
    // RFC 6238 appendix B, SHA-1, 8 digits.
    for (t, code) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp_at(seed, t, 8), code, "T = {t}");
    }
    // RFC 4226 appendix D, 6 digits: counter 0 and 1.
    assert_eq!(hotp(seed, 0, 6), "755224");
    assert_eq!(hotp(seed, 1, 6), "287082");
    // The same seed as an authenticator app would receive it.
    assert_eq!(
        decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        seed.to_vec()
    );
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

/// `POST path` with a bearer token and an optional JSON body, without the cookie jar.
async fn post_bearer(app: &TestApp, path: &str, token: &str, body: Option<&Value>) -> Response {
    let mut req = Client::new().post(app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("post")
}

/// `POST /api/auth/mfa/challenge` with `Authorization: Bearer <pending>`.
async fn challenge(app: &TestApp, pending: &str, body: &Value) -> Response {
    post_bearer(app, CHALLENGE, pending, Some(body)).await
}

/// Setup: asserts the answer's shape; returns the secret.
async fn setup(app: &TestApp, email: &str, access: &str) -> String {
    let res = post_bearer(app, SETUP, access, None).await;
    assert_eq!(res.status(), 200, "setup");
    assert_no_store(res.headers());
    assert_common_headers(res.headers());
    let v = json_of(res).await;
    let secret = v["secret"].as_str().expect("secret").to_string();
    assert!(secret.trim_end_matches('=').len() >= 32, "≥ 160 bits: {v}");
    assert!(
        decode_secret(&secret).len() >= 20,
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
async fn enrolled_user(app: &TestApp) -> (String, Tokens, Authenticator, Vec<String>) {
    let (email, tokens) = app.new_user().await;
    let secret = setup(app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    let code = auth.fresh_code().await;
    let res = post_bearer(app, VERIFY, &tokens.access, Some(&json!({ "code": code }))).await;
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
async fn login_pending(app: &TestApp, email: &str) -> String {
    let res = Client::new()
        .post(app.url("/api/auth/token"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await
        .expect("login");
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
async fn expect_signed_in(res: Response) -> Tokens {
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
    let res = app.me(access).await;
    assert_eq!(res.status(), 200, "me");
    json_of(res).await["mfa_enabled"].clone()
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
    let res = post_bearer(
        &app,
        VERIFY,
        &tokens.access,
        Some(&json!({"code": "123456"})),
    )
    .await;
    expect_error(res, 400, "mfa_not_set_up").await;

    let secret = setup(&app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);

    // A wrong code.
    let wrong = auth.wrong_code(1);
    let res = post_bearer(&app, VERIFY, &tokens.access, Some(&json!({"code": wrong}))).await;
    expect_error(res, 400, "invalid_code").await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, false);

    // The right code.
    let code = auth.fresh_code().await;
    let res = post_bearer(&app, VERIFY, &tokens.access, Some(&json!({"code": code}))).await;
    assert_eq!(res.status(), 200, "verify with the current code");
    assert_no_store(res.headers());
    assert_common_headers(res.headers());
    recovery_codes(&json_of(res).await);

    // Setup or verify again.
    let res = post_bearer(&app, SETUP, &tokens.access, None).await;
    expect_error(res, 409, "mfa_already_enabled").await;
    let code = auth.fresh_code().await;
    let res = post_bearer(&app, VERIFY, &tokens.access, Some(&json!({"code": code}))).await;
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
    let res = post_bearer(
        &app,
        VERIFY,
        &tokens.access,
        Some(&json!({"code": "123456"})),
    )
    .await;
    no_store(&res, "verify before setup");
    expect_error(res, 400, "mfa_not_set_up").await;
    let res = post_bearer(
        &app,
        DISABLE,
        &tokens.access,
        Some(&json!({"code": "123456"})),
    )
    .await;
    no_store(&res, "disable when not enabled");
    expect_error(res, 400, "mfa_not_enabled").await;
    let secret = setup(&app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    let wrong = auth.wrong_code(2);
    let res = post_bearer(&app, VERIFY, &tokens.access, Some(&json!({"code": wrong}))).await;
    no_store(&res, "verify with a wrong code");
    expect_error(res, 400, "invalid_code").await;
    let code = auth.fresh_code().await;
    let res = post_bearer(&app, VERIFY, &tokens.access, Some(&json!({"code": code}))).await;
    no_store(&res, "verify");
    assert_eq!(res.status(), 200);
    let res = post_bearer(&app, SETUP, &tokens.access, None).await;
    no_store(&res, "setup when enabled");
    expect_error(res, 409, "mfa_already_enabled").await;
    let wrong = auth.wrong_code(3);
    let res = post_bearer(&app, DISABLE, &tokens.access, Some(&json!({"code": wrong}))).await;
    no_store(&res, "disable with a wrong code");
    expect_error(res, 400, "invalid_code").await;
    let code = auth.fresh_code().await;
    let res = post_bearer(&app, DISABLE, &tokens.access, Some(&json!({"code": code}))).await;
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
    let res = app.get_bearer("/api/auth/api-key", &tokens.access).await;
    assert_eq!(res.status(), 200, "api key created");
    let key = json_of(res).await["key"]
        .as_str()
        .expect("the new key")
        .to_string();
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
    let res = post_bearer(&app, SETUP, &key, None).await;
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
        let res = post_bearer(&app, path, &pending, None).await;
        expect_error(res, 401, "invalid_token").await;
    }
    for path in [VERIFY, DISABLE] {
        let res = post_bearer(&app, path, &pending, Some(&json!({"code": "123456"}))).await;
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
    let res = Client::new()
        .post(app.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": pending}))
        .send()
        .await
        .expect("refresh");
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
    let res = Client::new()
        .post(app.url(CHALLENGE))
        .json(&json!({"code": code}))
        .send()
        .await
        .expect("challenge");
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
    let detail = expect_validation(res).await;
    assert_issues(&detail, &[("json_invalid", &["body"])]);

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

    let res = post_bearer(
        &app,
        DISABLE,
        &tokens.access,
        Some(&json!({"code": auth.wrong_code(7)})),
    )
    .await;
    expect_error(res, 400, "invalid_code").await;
    // The code verify used is spent.
    let res = post_bearer(
        &app,
        DISABLE,
        &tokens.access,
        Some(&json!({"code": verify_code})),
    )
    .await;
    expect_error(res, 400, "invalid_code").await;
    assert_eq!(mfa_enabled_on_me(&app, &tokens.access).await, true);

    let code = auth.fresh_code().await;
    let res = post_bearer(&app, DISABLE, &tokens.access, Some(&json!({"code": code}))).await;
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

    let res = post_bearer(&app, DISABLE, &tokens.access, Some(&json!({"code": code}))).await;
    expect_error(res, 400, "mfa_not_enabled").await;

    // It can be set up again.
    setup(&app, &email, &tokens.access).await;
}
