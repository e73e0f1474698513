//! Sign in with Google (API.md "Sign in with Google (any OpenID Connect provider)"), against a
//! real provider: panva's oidc-provider on loopback (`oidc_provider.rs`), whose login and
//! consent pages the tests drive over plain HTTP as a browser would (a cookie jar, following
//! redirects by hand, submitting the forms it serves).
//!
//! Every flow is the real one: bp-auth's start, the provider's authorization endpoint and
//! forms, the provider's redirect to bp-auth's callback (which exchanges the code at the
//! provider's token endpoint and verifies the ID token), and the frontend's exchange of the
//! login code. The refusals are made honestly too: a tampered ID token is the provider's genuine
//! one re-signed (or given another nonce) by the provider process itself at its token endpoint,
//! for the accounts a test marks, so bp-auth meets it exactly where it would meet a forgery.

use reqwest::{Client, Method, Response};
use serde_json::{json, Value};
use url::Url;

use crate::helpers::*;
use crate::mfa::{challenge, expect_signed_in, setup, VERIFY};
use crate::oidc_provider::{provider, Tamper};
use bp_auth::config::{Config, OidcProviderConfig};

/// The frontend: where sign-ins come back to. Never fetched: the tests read `Location`.
const FRONTEND: &str = "https://app.example.test";
const BACK_TO: &str = "https://app.example.test/after-login";
const EXCHANGE: &str = "/api/auth/oidc/exchange";
const IDENTITIES: &str = "/api/auth/identities";

/// A bp-auth with the test provider as `test`, on a port chosen first so that its redirect URI
/// can be registered with the provider before it starts.
async fn oidc_app() -> TestApp {
    oidc_app_with(|_| {}).await
}

async fn oidc_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let p = provider();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (client_id, client_secret) = p
        .register_client(&format!("{base}/api/auth/oidc/test/callback"))
        .await;
    spawn_app_with(|c| {
        c.server.bind = format!("127.0.0.1:{port}");
        c.oidc.public_url = base.clone();
        c.oidc.redirect_allowlist = Some(vec![FRONTEND.into()]);
        c.oidc.providers.insert(
            "test".into(),
            OidcProviderConfig {
                issuer: p.issuer.clone(),
                client_id,
                client_secret,
                display_name: "Test Provider".into(),
                ..Default::default()
            },
        );
        tweak(c);
    })
    .await
}

/// A browser: a cookie jar, redirects followed by the test.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A fresh account at the provider: its `sub` (its login there) and email.
async fn account(verified: bool, tamper: Tamper) -> (String, String) {
    let sub = format!("sub-{}", uuid::Uuid::now_v7().simple());
    let email = email();
    provider().account(&sub, &email, verified, tamper).await;
    (sub, email)
}

fn location(res: &Response, base: &str) -> String {
    let raw = res
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("a Location from {base}: {}", res.status()))
        .to_str()
        .expect("ASCII Location");
    Url::parse(base)
        .and_then(|b| b.join(raw))
        .expect("a URL")
        .to_string()
}

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[at..].find('"')? + at;
    Some(unescape(&tag[at..end]))
}

/// The first form of a page: its action and its fields, with `login` and `password` filled.
fn fill_form(html: &str, login: &str) -> (String, Vec<(String, String)>) {
    let start = html
        .find("<form")
        .unwrap_or_else(|| panic!("a form in {html}"));
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let action = attr(&form[..form.find('>').expect("form tag")], "action").expect("action");
    let mut fields = Vec::new();
    for piece in form.split("<input").skip(1) {
        let tag = &piece[..piece.find('>').unwrap_or(piece.len())];
        let Some(name) = attr(tag, "name") else {
            continue;
        };
        let value = match name.as_str() {
            "login" => login.to_string(),
            "password" => "any password".to_string(),
            _ => attr(tag, "value").unwrap_or_default(),
        };
        fields.push((name, value));
    }
    (action, fields)
}

/// The browser at the provider, from `url` on: through its login form (as `login`) and its
/// consent page, until it is sent back to bp-auth. Returns that URL (the callback's).
async fn through_provider(app: &TestApp, browser: &Client, url: &str, login: &str) -> String {
    through_provider_at(&app.address, browser, url, login).await
}

/// `GET /api/auth/oidc/test/start?redirect_to=…` in `browser`.
async fn start_raw(app: &TestApp, browser: &Client, provider: &str, redirect_to: &str) -> Response {
    let mut url = Url::parse(&app.url(&format!("/api/auth/oidc/{provider}/start"))).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_to", redirect_to);
    browser.get(url).send().await.expect("start")
}

/// A sign-in up to the provider's redirect back: returns the authorization URL bp-auth sent
/// the browser to and the callback URL the provider sent it back with.
async fn to_callback(app: &TestApp, browser: &Client, login: &str) -> (Url, String) {
    let res = start_raw(app, browser, "test", BACK_TO).await;
    assert_eq!(res.status(), 302, "start");
    assert_no_store(res.headers());
    let authorize = location(&res, &app.address);
    let callback = through_provider(app, browser, &authorize, login).await;
    (Url::parse(&authorize).unwrap(), callback)
}

/// The callback in `browser`: its 302's `Location`, which must go back to the frontend.
async fn callback(app: &TestApp, browser: &Client, url: &str) -> Url {
    let res = browser.get(url).send().await.expect("callback");
    assert_eq!(res.status(), 302, "callback");
    assert_no_store(res.headers());
    let to = Url::parse(&location(&res, &app.address)).unwrap();
    assert!(
        to.as_str().starts_with(BACK_TO),
        "back to the frontend: {to}"
    );
    assert_eq!(to.query(), None, "nothing in the query: {to}");
    to
}

/// A value of a fragment like `login_code=…`.
fn fragment(url: &Url, key: &str) -> Option<String> {
    let f = url.fragment()?;
    f.strip_prefix(&format!("{key}=")).map(str::to_string)
}

/// A whole sign-in as `login`, returning where the browser lands (`BACK_TO#…`).
async fn sign_in(app: &TestApp, login: &str) -> Url {
    let b = browser();
    let (_, cb) = to_callback(app, &b, login).await;
    callback(app, &b, &cb).await
}

/// A whole sign-in as `login` that must succeed: the login code.
async fn login_code(app: &TestApp, login: &str) -> String {
    let back = sign_in(app, login).await;
    fragment(&back, "login_code").unwrap_or_else(|| panic!("a login code: {back}"))
}

async fn exchange(app: &TestApp, code: &str) -> Response {
    app.post_json(EXCHANGE, &json!({ "login_code": code }))
        .await
}

/// A sign-in as `login` through to tokens.
async fn signed_in(app: &TestApp, login: &str) -> Tokens {
    let code = login_code(app, login).await;
    expect_signed_in(exchange(app, &code).await).await
}

async fn identities(app: &TestApp, access: &str) -> Vec<Value> {
    let v = expect_status(app.get_bearer(IDENTITIES, access).await, 200, "identities").await;
    v["identities"].as_array().expect("a list").clone()
}

async fn event_types(app: &TestApp, access: &str) -> Vec<String> {
    let v = expect_status(
        app.get_bearer("/api/auth/me/events", access).await,
        200,
        "events",
    )
    .await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// Registers `email` with the password and verifies its address through the outbox.
async fn verified_user(app: &TestApp, email: &str) -> Tokens {
    app.register(email).await;
    let tokens = app.login(email).await;
    let res = app
        .post_bearer("/api/auth/verify-email/request", &tokens.access, None)
        .await;
    assert_eq!(res.status(), 200, "verify-email request");
    let line = app
        .wait_outbox(1)
        .await
        .into_iter()
        .rev()
        .find(|l| l["to"] == email.to_lowercase() || l["to"] == email)
        .expect("the verification email");
    let code = line["code"].as_str().unwrap().to_string();
    let res = app
        .post_bearer(
            "/api/auth/verify-email/confirm",
            &tokens.access,
            Some(&json!({ "code": code })),
        )
        .await;
    assert_eq!(res.status(), 200, "verify-email confirm");
    tokens
}

/// Whether an account with `email` exists: registering it is refused then.
async fn email_taken(app: &TestApp, email: &str) -> bool {
    let res = app
        .register_raw(&json!({"email": email, "password": PASSWORD}))
        .await;
    match res.status().as_u16() {
        409 => true,
        201 => false,
        other => panic!("register {email}: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The flow.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn the_providers_are_listed() {
    let app = oidc_app().await;
    let v = expect_status(app.get("/api/auth/oidc/providers").await, 200, "list").await;
    assert_eq!(
        v,
        json!({"providers": [{"name": "test", "display_name": "Test Provider"}]})
    );
    let bare = spawn_app().await;
    let v = expect_status(bare.get("/api/auth/oidc/providers").await, 200, "list").await;
    assert_eq!(v, json!({"providers": []}));
}

#[actix_web::test]
async fn a_first_sign_in_creates_a_user_and_the_second_finds_it() {
    let app = oidc_app().await;
    let (sub, email) = account(true, Tamper::None).await;
    let b = browser();
    let (authorize, cb) = to_callback(&app, &b, &sub).await;
    // The authorization request: code flow, PKCE S256, our state and nonce, the scopes.
    let q: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert!(
        authorize.as_str().starts_with(&provider().issuer),
        "{authorize}"
    );
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "SHA-256, base64url: {q:?}");
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43, "{q:?}");
    assert_ne!(q["state"], q["nonce"]);
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    for s in ["openid", "email", "profile"] {
        assert!(scopes.contains(&s), "{q:?}");
    }
    assert_eq!(
        q["redirect_uri"],
        app.url("/api/auth/oidc/test/callback"),
        "the registered redirect URI"
    );
    // The login code is in the fragment, never in the query.
    let back = callback(&app, &b, &cb).await;
    let code = fragment(&back, "login_code").unwrap_or_else(|| panic!("{back}"));
    assert!(code.len() >= 43, "{code}");
    assert!(!back.as_str().contains('?'), "{back}");
    let res = exchange(&app, &code).await;
    let first = expect_signed_in(res).await;
    let profile = app.profile(&first.access).await;
    assert_eq!(profile["email"], email.as_str());
    assert_eq!(profile["email_verified"], true);
    assert_eq!(profile["has_password"], false);
    assert_eq!(profile["full_name"], "Test Person");
    let linked = identities(&app, &first.access).await;
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(linked[0]["provider"], "test");
    assert_eq!(linked[0]["display_name"], "Test Provider");
    assert_eq!(linked[0]["email"], email.as_str());
    assert_uuid_v7(&linked[0]["id"], "identity id");
    let events = event_types(&app, &first.access).await;
    assert_eq!(events, ["login", "identity_linked"], "newest first");

    // The second sign-in finds the same user.
    let second = signed_in(&app, &sub).await;
    let again = app.profile(&second.access).await;
    assert_eq!(again["id"], profile["id"]);
    assert_eq!(identities(&app, &second.access).await.len(), 1);
    assert_ne!(
        jwt_claims(&second.access)["sid"],
        jwt_claims(&first.access)["sid"],
        "a new session"
    );
    let sessions = expect_status(
        app.get_bearer("/api/auth/sessions", &second.access).await,
        200,
        "sessions",
    )
    .await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);
    assert!(sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["mfa"] == false));
    // The sessions count by how the login was proved.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("bp_sessions_created_total{method=\"oidc\"}"),
        "{metrics}"
    );
    // A password login for it is refused like a wrong password, not an error.
    let res = app.login_raw(&email, PASSWORD).await;
    expect_error(res, 401, "invalid_credentials").await;
}

#[actix_web::test]
async fn a_matching_verified_email_links_and_an_unverified_one_is_refused() {
    let app = oidc_app().await;
    // Both sides verified: the existing account gets the identity.
    let (sub, email) = account(true, Tamper::None).await;
    let local = verified_user(&app, &email).await;
    let tokens = signed_in(&app, &sub).await;
    let me = app.profile(&tokens.access).await;
    assert_eq!(me["id"], app.profile(&local.access).await["id"]);
    assert_eq!(me["has_password"], true);
    assert_eq!(identities(&app, &local.access).await.len(), 1);
    assert!(event_types(&app, &local.access)
        .await
        .contains(&"identity_linked".to_string()));

    // The local email unverified: refused, nothing linked.
    let (sub, email) = account(true, Tamper::None).await;
    app.register(&email).await;
    let back = sign_in(&app, &sub).await;
    assert_eq!(
        fragment(&back, "error").as_deref(),
        Some("account_exists"),
        "{back}"
    );
    let tokens = app.login(&email).await;
    assert!(identities(&app, &tokens.access).await.is_empty());

    // The provider did not verify it: refused too.
    let (sub, email) = account(false, Tamper::None).await;
    let local = verified_user(&app, &email).await;
    let back = sign_in(&app, &sub).await;
    assert_eq!(
        fragment(&back, "error").as_deref(),
        Some("account_exists"),
        "{back}"
    );
    assert!(identities(&app, &local.access).await.is_empty());

    // A new user whose provider did not verify the email has it unverified.
    let (sub, _) = account(false, Tamper::None).await;
    let tokens = signed_in(&app, &sub).await;
    assert_eq!(app.profile(&tokens.access).await["email_verified"], false);
}

#[actix_web::test]
async fn a_deactivated_account_is_refused() {
    let app = oidc_app().await;
    let (sub, email) = account(true, Tamper::None).await;
    let local = verified_user(&app, &email).await;
    signed_in(&app, &sub).await;
    let res = app
        .post_bearer(
            "/api/auth/deactivate",
            &local.access,
            Some(&json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(res.status(), 204);
    let back = sign_in(&app, &sub).await;
    assert_eq!(
        fragment(&back, "error").as_deref(),
        Some("account_deactivated"),
        "{back}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals of the flow.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_wrong_or_foreign_state_is_refused() {
    let app = oidc_app().await;
    let (sub, _) = account(true, Tamper::None).await;
    let b = browser();
    let (authorize, cb) = to_callback(&app, &b, &sub).await;
    let state: String = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    // A state the server never made, or none: no flow, no known redirect target.
    let forged = cb.replace(&state, &format!("{}x", &state[..state.len() - 1]));
    expect_error(b.get(&forged).send().await.unwrap(), 400, "invalid_state").await;
    let bare = app.url("/api/auth/oidc/test/callback?code=abc");
    expect_error(b.get(&bare).send().await.unwrap(), 400, "invalid_state").await;
    // The genuine callback URL in another browser (login CSRF: an attacker's own sign-in
    // handed to a victim): refused, and the flow is used up.
    let other = browser();
    let back = callback(&app, &other, &cb).await;
    assert_eq!(fragment(&back, "error").as_deref(), Some("invalid_state"));
    expect_error(b.get(&cb).send().await.unwrap(), 400, "invalid_state").await;
    // The provider's error answer comes back as one.
    let b = browser();
    let res = start_raw(&app, &b, "test", BACK_TO).await;
    let authorize = Url::parse(&location(&res, &app.address)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut denied = Url::parse(&app.url("/api/auth/oidc/test/callback")).unwrap();
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", &state);
    let back = callback(&app, &b, denied.as_str()).await;
    assert_eq!(fragment(&back, "error").as_deref(), Some("access_denied"));
}

#[actix_web::test]
async fn a_replayed_code_or_login_code_is_refused() {
    let app = oidc_app().await;
    let (sub, _) = account(true, Tamper::None).await;
    let b = browser();
    let (_, cb) = to_callback(&app, &b, &sub).await;
    let code: String = Url::parse(&cb)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let back = callback(&app, &b, &cb).await;
    let login_code = fragment(&back, "login_code").expect("a login code");
    // The same callback again: its state was used.
    expect_error(b.get(&cb).send().await.unwrap(), 400, "invalid_state").await;
    // The same authorization code in a fresh flow of the same browser: the provider refuses it
    // (used, and issued for another PKCE challenge).
    let res = start_raw(&app, &b, "test", BACK_TO).await;
    let authorize = Url::parse(&location(&res, &app.address)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut replay = Url::parse(&app.url("/api/auth/oidc/test/callback")).unwrap();
    replay
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    let back = callback(&app, &b, replay.as_str()).await;
    assert_eq!(
        fragment(&back, "error").as_deref(),
        Some("code_refused"),
        "{back}"
    );
    // The login code works once.
    expect_signed_in(exchange(&app, &login_code).await).await;
    expect_invalid_code(exchange(&app, &login_code).await, None).await;
    expect_invalid_code(exchange(&app, "not-a-code").await, None).await;
    expect_invalid_code(exchange(&app, "").await, None).await;
    let detail = expect_validation(app.post_json(EXCHANGE, &json!({})).await).await;
    assert_issues(&detail, &[("missing", &["body", "login_code"])]);
}

#[actix_web::test]
async fn a_tampered_id_token_or_a_wrong_nonce_is_refused() {
    let app = oidc_app().await;
    for tamper in [Tamper::Resign, Tamper::UnknownKid, Tamper::Nonce] {
        let (sub, email) = account(true, tamper).await;
        let back = sign_in(&app, &sub).await;
        assert_eq!(
            fragment(&back, "error").as_deref(),
            Some("invalid_id_token"),
            "{tamper:?}: {back}"
        );
        assert!(
            !email_taken(&app, &email).await,
            "{tamper:?}: no account made"
        );
    }
    // The same provider and client, an honest token: accepted (the refusals were the tokens').
    let (sub, _) = account(true, Tamper::None).await;
    signed_in(&app, &sub).await;
}

#[actix_web::test]
async fn a_second_factor_is_asked_after_a_sign_in() {
    let app = oidc_app().await;
    let (sub, email) = account(true, Tamper::None).await;
    let tokens = signed_in(&app, &sub).await;
    let secret = setup(&app, &email, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    let code = auth.fresh_code().await;
    let res = app
        .post_bearer(VERIFY, &tokens.access, Some(&json!({ "code": code })))
        .await;
    assert_eq!(res.status(), 200, "TOTP enabled");
    let login = login_code(&app, &sub).await;
    let v = expect_status(exchange(&app, &login).await, 200, "exchange").await;
    assert_eq!(v["token_type"], "mfa_pending", "{v}");
    assert_eq!(v["mfa_required"], true);
    assert!(v.get("refresh_token").is_none(), "{v}");
    let pending = v["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(pending)["typ"], "mfa+jwt");
    let code = auth.fresh_code().await;
    let t = expect_signed_in(challenge(&app, pending, &json!({ "code": code })).await).await;
    assert_eq!(
        app.profile(&t.access).await["id"],
        app.profile(&tokens.access).await["id"]
    );
}

// ---------------------------------------------------------------------------------------------
// Identities: link and unlink.
// ---------------------------------------------------------------------------------------------

/// `POST /api/auth/oidc/test/link` with `body`: the authorization URL.
async fn start_link(app: &TestApp, access: &str, body: Option<&Value>) -> String {
    let v = expect_status(
        app.post_bearer("/api/auth/oidc/test/link", access, body)
            .await,
        200,
        "link",
    )
    .await;
    v["authorize_url"]
        .as_str()
        .expect("authorize_url")
        .to_string()
}

#[actix_web::test]
async fn the_last_way_to_log_in_cannot_be_unlinked() {
    let app = oidc_app().await;
    let (first_sub, _) = account(true, Tamper::None).await;
    let tokens = signed_in(&app, &first_sub).await;
    let first = identities(&app, &tokens.access).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{IDENTITIES}/{first}");
    let res = app
        .send_bearer(Method::DELETE, &path, &tokens.access, None)
        .await;
    expect_error(res, 409, "last_login_method").await;

    // Link a second identity from the session (the browser needs no bp-auth cookie for it).
    let (second_sub, _) = account(true, Tamper::None).await;
    let authorize = start_link(&app, &tokens.access, Some(&json!({"redirect_to": BACK_TO}))).await;
    let b = browser();
    let cb = through_provider(&app, &b, &authorize, &second_sub).await;
    let back = callback(&app, &b, &cb).await;
    assert_eq!(fragment(&back, "linked").as_deref(), Some("test"), "{back}");
    assert_eq!(identities(&app, &tokens.access).await.len(), 2);
    // Either identity now signs in to the same account.
    let via_second = signed_in(&app, &second_sub).await;
    assert_eq!(
        app.profile(&via_second.access).await["id"],
        app.profile(&tokens.access).await["id"]
    );
    // Linking an identity another account holds is refused.
    let (other_sub, _) = account(true, Tamper::None).await;
    signed_in(&app, &other_sub).await;
    let authorize = start_link(&app, &tokens.access, None).await;
    let b = browser();
    let cb = through_provider(&app, &b, &authorize, &other_sub).await;
    let res = b.get(&cb).send().await.unwrap();
    let to = Url::parse(&location(&res, &app.address)).unwrap();
    assert!(
        to.as_str().starts_with(FRONTEND),
        "the allowlist's first entry: {to}"
    );
    assert_eq!(fragment(&to, "error").as_deref(), Some("identity_taken"));

    let res = app
        .send_bearer(Method::DELETE, &path, &tokens.access, None)
        .await;
    assert_eq!(res.status(), 204);
    let left = identities(&app, &tokens.access).await;
    assert_eq!(left.len(), 1);
    let events = event_types(&app, &tokens.access).await;
    assert_eq!(events[0], "identity_unlinked", "{events:?}");
    assert!(events.contains(&"identity_linked".to_string()));
    let last = format!("{IDENTITIES}/{}", left[0]["id"].as_str().unwrap());
    let res = app
        .send_bearer(Method::DELETE, &last, &tokens.access, None)
        .await;
    expect_error(res, 409, "last_login_method").await;
    let res = app
        .send_bearer(Method::DELETE, &path, &tokens.access, None)
        .await;
    expect_error(res, 404, "not_found").await;
    let res = app
        .send_bearer(
            Method::DELETE,
            &format!("{IDENTITIES}/nope"),
            &tokens.access,
            None,
        )
        .await;
    expect_error(res, 404, "not_found").await;
    // An API key cannot manage identities.
    let key = app.new_api_key(&tokens.access).await;
    let res = app.get_with_api_key(IDENTITIES, &key).await;
    expect_error(res, 403, "session_required").await;
}

#[actix_web::test]
async fn has_password_turns_true_after_a_password_reset() {
    let app = oidc_app().await;
    let (sub, email) = account(true, Tamper::None).await;
    let tokens = signed_in(&app, &sub).await;
    assert_eq!(app.profile(&tokens.access).await["has_password"], false);
    let res = app
        .post_json("/api/auth/password/forgot", &json!({ "email": email }))
        .await;
    assert_eq!(res.status(), 204);
    let line = app.wait_outbox(1).await.pop().expect("the reset code");
    assert_eq!(line["purpose"], "password_reset");
    let res = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"email": email, "code": line["code"], "new_password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 204);
    let t = app.login(&email).await;
    assert_eq!(app.profile(&t.access).await["has_password"], true);
    // With a password, the identity may go.
    let id = identities(&app, &t.access).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .send_bearer(
            Method::DELETE,
            &format!("{IDENTITIES}/{id}"),
            &t.access,
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
}

// ---------------------------------------------------------------------------------------------
// Redirect targets and requests that name nothing.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn only_allowlisted_redirect_targets_are_accepted() {
    let app = oidc_app().await;
    let b = browser();
    for bad in [
        "http://app.example.test/",
        "https://app.example.test@evil.example/",
        "https://user:pw@app.example.test/",
        "https://app.example.test.evil.example/",
        "https://evil-app.example.test/",
        "https://app.example.test:8443/",
        "https://app.example.test/#x",
        "//app.example.test/",
        "/after-login",
        "javascript:alert(1)",
        "",
    ] {
        let res = start_raw(&app, &b, "test", bad).await;
        expect_error(res, 400, "invalid_redirect").await;
    }
    for good in [FRONTEND, BACK_TO, "https://APP.example.test:443/x?y=1"] {
        let res = start_raw(&app, &b, "test", good).await;
        assert_eq!(res.status(), 302, "{good}");
    }
    let res = start_raw(&app, &b, "nope", BACK_TO).await;
    expect_error(res, 404, "not_found").await;
    let res = b
        .get(app.url("/api/auth/oidc/test/start"))
        .send()
        .await
        .unwrap();
    let detail = expect_validation_at(res, "query").await;
    assert_issues(&detail, &[("missing", &["query", "redirect_to"])]);
    let res = b
        .get(app.url("/api/auth/oidc/nope/callback?state=x&code=y"))
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    // The link checks its target the same way.
    let (_, tokens) = app.new_user().await;
    let res = app
        .post_bearer(
            "/api/auth/oidc/test/link",
            &tokens.access,
            Some(&json!({"redirect_to": "https://evil.example/"})),
        )
        .await;
    expect_error(res, 400, "invalid_redirect").await;
}

#[actix_web::test]
async fn nothing_secret_reaches_the_log() {
    let p = provider();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (client_id, client_secret) = p
        .register_client(&format!("{base}/api/auth/oidc/test/callback"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let env = [
        ("BP_AUTH__LOG__LEVEL", "info,bp_auth=debug"),
        ("BP_AUTH__OIDC__PUBLIC_URL", base.as_str()),
        (
            "BP_AUTH__OIDC__REDIRECT_ALLOWLIST",
            "[\"https://app.example.test\"]",
        ),
        ("BP_AUTH__OIDC__PROVIDERS__TEST__ISSUER", p.issuer.as_str()),
        (
            "BP_AUTH__OIDC__PROVIDERS__TEST__CLIENT_ID",
            client_id.as_str(),
        ),
        (
            "BP_AUTH__OIDC__PROVIDERS__TEST__CLIENT_SECRET_ENV",
            "TEST_OIDC_SECRET",
        ),
        ("TEST_OIDC_SECRET", client_secret.as_str()),
    ];
    let server = ServerProcess::start_logged_at(port, &data, &env, &log).await;
    let app_like = Remote {
        address: server.address.clone(),
    };
    let (sub, _) = account(true, Tamper::None).await;
    let b = browser();
    let mut url = Url::parse(&format!("{base}/api/auth/oidc/test/start")).unwrap();
    url.query_pairs_mut().append_pair("redirect_to", BACK_TO);
    let res = b.get(url).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let authorize = Url::parse(&location(&res, &base)).unwrap();
    let q: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    let cb = through_provider_at(&base, &b, authorize.as_str(), &sub).await;
    let code: String = Url::parse(&cb)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let res = b.get(&cb).send().await.unwrap();
    let back = Url::parse(&location(&res, &base)).unwrap();
    let login = fragment(&back, "login_code").expect("a login code");
    let res = app_like
        .post_json(EXCHANGE, &json!({ "login_code": login }))
        .await;
    let tokens = expect_signed_in(res).await;
    let _ = app_like.me(&tokens.access).await;
    // A refused exchange and a forged callback log too; still nothing secret.
    let _ = app_like
        .post_json(EXCHANGE, &json!({ "login_code": login }))
        .await;
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("oidc_callback"),
        "the audit line is there: {text}"
    );
    for (what, secret) in [
        ("client secret", client_secret.as_str()),
        ("state", q["state"].as_str()),
        ("nonce", q["nonce"].as_str()),
        ("authorization code", code.as_str()),
        ("login code", login.as_str()),
        ("access token", tokens.access.as_str()),
        ("refresh token", tokens.refresh.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} is in the log");
    }
}

/// A server known by its address only (the real binary).
struct Remote {
    address: String,
}

impl Server for Remote {
    fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> Client {
        Client::new()
    }
}

/// [`through_provider`] for a server known by its address `base`.
async fn through_provider_at(base: &str, browser: &Client, url: &str, login: &str) -> String {
    let mut url = url.to_string();
    for _ in 0..16 {
        if url.starts_with(base) {
            return url;
        }
        let res = browser.get(&url).send().await.expect("provider page");
        if res.status().is_redirection() {
            url = location(&res, &url);
            continue;
        }
        assert_eq!(res.status(), 200, "a provider page at {url}");
        let page = url.clone();
        let html = res.text().await.expect("HTML");
        let (action, fields) = fill_form(&html, login);
        let action = Url::parse(&page)
            .unwrap()
            .join(&action)
            .unwrap()
            .to_string();
        let res = browser
            .post(&action)
            .form(&fields)
            .send()
            .await
            .expect("form");
        assert!(
            res.status().is_redirection(),
            "the form at {page} answered {}",
            res.status()
        );
        url = location(&res, &action);
    }
    panic!("the provider never sent the browser back to {base}")
}

/// Two nodes on one PostgreSQL database behind one public URL, a client's requests landing on
/// either: the start on one, the provider's callback on the other, the exchange on the first.
/// The flow and the login code live in the store, not in a node's memory.
#[actix_web::test]
async fn a_sign_in_may_cross_nodes() {
    let url = crate::pg_cluster::database();
    let p = provider();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (client_id, client_secret) = p
        .register_client(&format!("{public}/api/auth/oidc/test/callback"))
        .await;
    // The nodes share the keys through the database, sealed under one master key.
    let shared = tempfile::tempdir().unwrap();
    let master = shared.path().join("master.key").display().to_string();
    let node = |bind: String| {
        let (public, client_id, client_secret, url, master) = (
            public.clone(),
            client_id.clone(),
            client_secret.clone(),
            url.clone(),
            master.clone(),
        );
        spawn_app_with(move |c| {
            c.server.bind = bind;
            c.storage.engine = bp_auth::config::Engine::Postgres;
            c.storage.postgres_url = url;
            c.storage.master_key_file = master;
            c.oidc.public_url = public;
            c.oidc.redirect_allowlist = Some(vec![FRONTEND.into()]);
            c.oidc.providers.insert(
                "test".into(),
                OidcProviderConfig {
                    issuer: provider().issuer.clone(),
                    client_id,
                    client_secret,
                    ..Default::default()
                },
            );
        })
    };
    let a = node(format!("127.0.0.1:{port}")).await;
    let b = node("127.0.0.1:0".into()).await;

    let (sub, email) = account(true, Tamper::None).await;
    let browser = browser();
    let (_, cb) = to_callback(&a, &browser, &sub).await;
    assert!(cb.starts_with(&public), "{cb}");
    // The load balancer sends the callback to node B.
    let on_b = cb.replacen(&a.address, &b.address, 1);
    let back = callback(&b, &browser, &on_b).await;
    let code = fragment(&back, "login_code").unwrap_or_else(|| panic!("{back}"));
    // And the exchange to node A.
    let tokens = expect_signed_in(exchange(&a, &code).await).await;
    assert_eq!(a.profile(&tokens.access).await["email"], email.as_str());
    expect_invalid_code(exchange(&b, &code).await, None).await;
    // The used flow is gone for node A too.
    let on_a = cb.clone();
    expect_error(
        browser.get(&on_a).send().await.unwrap(),
        400,
        "invalid_state",
    )
    .await;
}
