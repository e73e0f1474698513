//! `GET /api/auth/me/entitlements`: the envelope's shape and values (from the plan in
//! `config.toml`), its caching headers, and conditional requests with `If-None-Match`.

use std::collections::BTreeSet;

use figment::providers::Format;

use reqwest::header::HeaderMap;
use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const PATH: &str = "/api/auth/me/entitlements";

/// `[plans.<name>]` of the shipped `config.toml`, as JSON.
fn shipped_plan(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    figment::Figment::from(figment::providers::Toml::file_exact(path))
        .extract_inner::<Value>(&format!("plans.{name}"))
        .expect("config.toml has the plan")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("strings: {v}"))
                .to_string()
        })
        .collect()
}

fn set(v: &Value) -> BTreeSet<String> {
    strings(v).into_iter().collect()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Cache-Control: private, no-cache`, `Vary` naming `Authorization`, `Cookie` and `X-API-Key`,
/// and an entity tag; returns the tag.
fn assert_caching_headers(headers: &HeaderMap) -> String {
    assert_common_headers(headers);
    assert_eq!(
        header(headers, "cache-control"),
        Some("private, no-cache"),
        "{headers:?}"
    );
    let vary: BTreeSet<String> = headers
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in ["authorization", "cookie", "x-api-key"] {
        assert!(vary.contains(name), "Vary names {name}: {vary:?}");
    }
    let etag = header(headers, "etag")
        .unwrap_or_else(|| panic!("an ETag: {headers:?}"))
        .to_string();
    let opaque = etag.strip_prefix("W/").unwrap_or(&etag);
    assert!(
        opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"'),
        "ETag is an entity tag: {etag:?}"
    );
    etag
}

async fn get_if_none_match(app: &TestApp, token: &str, inm: &str) -> Response {
    Client::new()
        .get(app.url(PATH))
        .bearer_auth(token)
        .header("if-none-match", inm)
        .send()
        .await
        .unwrap()
}

/// 200 with the envelope; returns it and its ETag.
async fn fetch(app: &TestApp, token: &str) -> (Value, String) {
    let res = app.get_bearer(PATH, token).await;
    assert_eq!(res.status(), 200);
    let etag = assert_caching_headers(res.headers());
    (json_of(res).await, etag)
}

async fn expect_not_modified(res: Response, etag: &str) {
    assert_eq!(res.status(), 304);
    let got = assert_caching_headers(res.headers());
    assert_eq!(got, etag, "a 304 carries the same ETag");
    let body = res.bytes().await.unwrap();
    assert!(body.is_empty(), "a 304 has no body: {body:?}");
}

/// Registers a user with a phone, verifies it through the outbox, and returns the token.
async fn verify_phone(app: &TestApp, token: &str) {
    let before = app.outbox().len();
    let res = app.phone_request(token).await;
    assert_eq!(res.status(), 200);
    let lines = app.wait_outbox(before + 1).await;
    let code = assert_six_digits(&lines[before]["code"], "code");
    let res = app.phone_confirm(token, &code).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_new_user_gets_the_free_plan() {
    let app = spawn_app().await;
    let e = email();
    let profile = app.register(&e).await;
    let t = app.login(&e).await;
    let (body, _) = fetch(&app, &t.access).await;

    let obj = body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_key_active",
            "email_verified",
            "features",
            "limits",
            "mfa_enabled",
            "phone_verified",
            "plan",
            "role",
            "status",
            "tenant_id",
            "user_id"
        ],
        "{body}"
    );
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["user_id"], profile["id"]);
    assert_eq!(body["tenant_id"], profile["tenant_id"]);
    assert_uuid_v7(&body["user_id"], "user_id");
    assert_uuid_v7(&body["tenant_id"], "tenant_id");
    assert_eq!(body["plan"], "free");
    assert_eq!(body["role"], "owner");
    assert_eq!(body["status"], "active");
    assert_eq!(body["phone_verified"], false);
    assert_eq!(body["mfa_enabled"], false);
    assert_eq!(body["api_key_active"], false);

    // Features and limits are config.toml's [plans.free], without the phone-only features.
    let plan = shipped_plan("free");
    assert_eq!(set(&body["features"]), set(&plan["features"]), "{body}");
    assert_eq!(
        strings(&body["features"]).len(),
        set(&body["features"]).len(),
        "no duplicate features: {body}"
    );
    assert_eq!(body["limits"], plan["limits"], "{body}");
    // And those are the values the contract shows.
    assert_eq!(
        set(&body["features"]),
        set(&json!(["dashboard", "watchlists"]))
    );
    assert_eq!(body["limits"]["api_requests_per_day"], 1000);
    assert_eq!(body["limits"]["watchlists"], 3);
}

#[actix_web::test]
async fn api_key_active_turns_true_once_a_key_exists() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let (before, etag_before) = fetch(&app, &t.access).await;
    assert_eq!(before["api_key_active"], false);

    let key = app.new_api_key(&t.access).await;
    let (after, etag_after) = fetch(&app, &t.access).await;
    assert_eq!(after["api_key_active"], true);
    assert_ne!(
        etag_before, etag_after,
        "the ETag changes with the envelope"
    );

    // The old tag no longer matches.
    let res = get_if_none_match(&app, &t.access, &etag_before).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, after);

    // Through the key itself: the same envelope.
    let res = app.get_with_api_key(PATH, &key).await;
    assert_eq!(res.status(), 200);
    assert_caching_headers(res.headers());
    assert_eq!(json_of(res).await, after);
}

#[actix_web::test]
async fn caching_headers_and_conditional_requests() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let (body, etag) = fetch(&app, &t.access).await;

    // The same tag: 304, no body, the same ETag.
    expect_not_modified(get_if_none_match(&app, &t.access, &etag).await, &etag).await;
    // `*` matches any current representation.
    expect_not_modified(get_if_none_match(&app, &t.access, "*").await, &etag).await;
    // A list containing the tag.
    let list = format!("\"nope\", {etag}, W/\"other\"");
    expect_not_modified(get_if_none_match(&app, &t.access, &list).await, &etag).await;
    // Weak comparison: the tag's weak and strong forms both match.
    let opaque = etag.strip_prefix("W/").unwrap_or(&etag).to_string();
    expect_not_modified(get_if_none_match(&app, &t.access, &opaque).await, &etag).await;
    let weak = format!("W/{opaque}");
    expect_not_modified(get_if_none_match(&app, &t.access, &weak).await, &etag).await;

    // Another tag: the full answer.
    for other in ["\"nope\"", "W/\"nope\"", "\"a\", \"b\""] {
        let res = get_if_none_match(&app, &t.access, other).await;
        assert_eq!(res.status(), 200, "If-None-Match: {other}");
        assert_eq!(assert_caching_headers(res.headers()), etag);
        assert_eq!(json_of(res).await, body);
    }

    // Nothing changed: the tag is stable.
    let (_, again) = fetch(&app, &t.access).await;
    assert_eq!(again, etag);
}

#[actix_web::test]
async fn a_verified_phone_adds_its_features_and_changes_the_etag() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone("+447700900123").await;
    let (before, etag_before) = fetch(&app, &t.access).await;
    assert_eq!(before["phone_verified"], false);
    assert!(!set(&before["features"]).contains("sms_alerts"));

    verify_phone(&app, &t.access).await;

    let (after, etag_after) = fetch(&app, &t.access).await;
    assert_eq!(after["phone_verified"], true);
    let mut expected = set(&shipped_plan("free")["features"]);
    expected.extend(set(&shipped_plan("free")["verified_phone_features"]));
    assert!(expected.contains("sms_alerts"));
    assert_eq!(set(&after["features"]), expected, "{after}");
    assert_eq!(after["limits"], before["limits"]);
    assert_ne!(etag_before, etag_after);
    let res = get_if_none_match(&app, &t.access, &etag_before).await;
    assert_eq!(res.status(), 200, "the old tag no longer matches");
    expect_not_modified(
        get_if_none_match(&app, &t.access, &etag_after).await,
        &etag_after,
    )
    .await;

    // A different phone is unverified again: the feature goes, and so does the tag.
    let res = app
        .patch_me(&t.access, &json!({"phone": "+447700900456"}))
        .await;
    assert_eq!(res.status(), 200);
    let (changed, etag_changed) = fetch(&app, &t.access).await;
    assert_eq!(changed["phone_verified"], false);
    assert!(!set(&changed["features"]).contains("sms_alerts"));
    assert_ne!(etag_changed, etag_after);
}

#[actix_web::test]
async fn the_configured_plan_is_what_is_served() {
    let app = spawn_app_with(|c| {
        let free = c.plans.get_mut("free").unwrap();
        free.limits.insert("watchlists".into(), 7);
        free.limits.insert("exports_per_month".into(), 2);
        free.features.push("exports".into());
    })
    .await;
    let (_, t) = app.new_user().await;
    let (body, _) = fetch(&app, &t.access).await;
    assert_eq!(
        body["limits"],
        json!({"api_requests_per_day": 1000, "watchlists": 7, "alerts": 5, "exports_per_month": 2}),
        "{body}"
    );
    assert_eq!(
        set(&body["features"]),
        set(&json!(["dashboard", "watchlists", "exports"])),
        "{body}"
    );
}

#[actix_web::test]
async fn the_cookie_authenticates() {
    let app = spawn_app().await;
    let e = email();
    let profile = app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let res = jar.get(app.url(PATH)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_caching_headers(res.headers());
    assert_eq!(json_of(res).await["user_id"], profile["id"]);
}

#[actix_web::test]
async fn no_credentials_is_not_authenticated() {
    let app = spawn_app().await;
    let res = app.get(PATH).await;
    expect_error(res, 401, "not_authenticated").await;
    let res = Client::new()
        .get(app.url(PATH))
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "not_authenticated").await;
}
