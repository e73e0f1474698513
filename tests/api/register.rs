//! `POST /api/auth/register`: the profile it answers, duplicates, every validation rule, body
//! limits, passwords kept exactly as sent, and concurrent registrations of one address.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;

const PROFILE_KEYS: [&str; 13] = [
    "created_at",
    "email",
    "email_verified",
    "full_name",
    "has_password",
    "id",
    "mfa_enabled",
    "phone",
    "phone_verified",
    "plan",
    "role",
    "status",
    "tenant_id",
];

fn assert_profile_shape(p: &Value) {
    let obj = p.as_object().unwrap_or_else(|| panic!("object: {p}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys, PROFILE_KEYS,
        "every profile field, nulls included: {p}"
    );
    assert_uuid_v7(&p["id"], "id");
    assert_uuid_v7(&p["tenant_id"], "tenant_id");
    assert_ne!(p["id"], p["tenant_id"]);
    assert_eq!(p["role"], "owner");
    assert_eq!(p["plan"], "free");
    assert_eq!(p["status"], "active");
    assert_eq!(p["phone_verified"], false);
    assert_eq!(p["mfa_enabled"], false);
    assert_eq!(p["has_password"], true, "a registration sets a password");
    let created = p["created_at"].as_str().expect("created_at is a string");
    assert!(
        created.ends_with('Z'),
        "created_at in UTC with Z: {created}"
    );
    let parsed = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap_or_else(|e| panic!("created_at is not RFC 3339: {created}: {e}"));
    let age = now_secs() - parsed.timestamp();
    assert!(
        (-5..=120).contains(&age),
        "created_at is about now: {created}"
    );
}

#[actix_web::test]
async fn created_profile_has_every_field() {
    let app = spawn_app().await;
    let e = format!("Ada.{}@Example.com", uuid::Uuid::now_v7().simple());
    let res = app
        .register_raw(&json!({
            "email": e, "password": PASSWORD,
            "full_name": "Ada Lovelace", "phone": "+447700900123"
        }))
        .await;
    assert_eq!(res.status(), 201);
    assert_common_headers(res.headers());
    let p = json_of(res).await;
    assert_profile_shape(&p);
    assert_eq!(p["email"], e, "email as given");
    assert_eq!(p["full_name"], "Ada Lovelace");
    assert_eq!(p["phone"], "+447700900123");
}

#[actix_web::test]
async fn absent_optional_fields_are_null() {
    let app = spawn_app().await;
    let e = email();
    let res = app
        .register_raw(&json!({"email": e, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 201);
    let p = json_of(res).await;
    assert_profile_shape(&p);
    assert_eq!(p["email"], e);
    assert!(p["full_name"].is_null(), "{p}");
    assert!(p["phone"].is_null(), "{p}");
}

#[actix_web::test]
async fn each_registration_gets_its_own_tenant() {
    let app = spawn_app().await;
    let a = app.register(&email()).await;
    let b = app.register(&email()).await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["tenant_id"], b["tenant_id"]);
}

#[actix_web::test]
async fn same_email_in_other_case_is_taken() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    app.register(&format!("taken-{id}@example.com")).await;
    let res = app
        .register_raw(&json!({"email": format!("TAKEN-{id}@EXAMPLE.COM"), "password": PASSWORD}))
        .await;
    expect_error(res, 409, "email_taken").await;
    // Exactly the same address too.
    let res = app
        .register_raw(&json!({"email": format!("taken-{id}@example.com"), "password": PASSWORD}))
        .await;
    expect_error(res, 409, "email_taken").await;
}

#[actix_web::test]
async fn missing_fields_are_both_reported() {
    let app = spawn_app().await;
    let d = expect_issues(
        app.register_raw(&json!({})).await,
        &[
            ("missing", &["body", "email"]),
            ("missing", &["body", "password"]),
        ],
    )
    .await;
    for entry in &d {
        assert_eq!(entry["msg"], "Field required", "{entry}");
    }
    expect_issues(
        app.register_raw(&json!({"email": email()})).await,
        &[("missing", &["body", "password"])],
    )
    .await;
}

#[actix_web::test]
async fn invalid_email_is_422() {
    let app = spawn_app().await;
    for bad in [
        "not-an-email",
        "ada@",
        "@example.com",
        "ada@example",
        "a b@example.com",
    ] {
        expect_issues(
            app.register_raw(&json!({"email": bad, "password": PASSWORD}))
                .await,
            &[("value_error", &["body", "email"])],
        )
        .await;
    }
}

#[actix_web::test]
async fn email_longer_than_254_is_422() {
    let app = spawn_app().await;
    let long = format!("{}@{}.example.com", "a".repeat(64), "b".repeat(180));
    assert!(long.len() > 254);
    expect_issues(
        app.register_raw(&json!({"email": long, "password": PASSWORD}))
            .await,
        &[("*", &["body", "email"])],
    )
    .await;
}

#[actix_web::test]
async fn password_of_seven_is_too_short() {
    let app = spawn_app().await;
    expect_issues(
        app.register_raw(&json!({"email": email(), "password": "zq7#Kp2"}))
            .await,
        &[("string_too_short", &["body", "password"])],
    )
    .await;
}

#[actix_web::test]
async fn password_of_129_code_points_is_too_long() {
    let app = spawn_app().await;
    // Two-byte characters: the limit counts code points, not bytes.
    let long = "é".repeat(129);
    expect_issues(
        app.register_raw(&json!({"email": email(), "password": long}))
            .await,
        &[("string_too_long", &["body", "password"])],
    )
    .await;
    // 128 is the longest accepted, even though it is 256 bytes.
    let e = email();
    let res = app
        .register_raw(&json!({"email": e, "password": "é".repeat(128)}))
        .await;
    assert_eq!(res.status(), 201);
}

#[actix_web::test]
async fn common_passwords_are_refused_in_any_case() {
    let app = spawn_app().await;
    for common in ["password1", "qwertyuiop", "QwertyUIOP", "PASSWORD1"] {
        expect_issues(
            app.register_raw(&json!({"email": email(), "password": common}))
                .await,
            &[("value_error", &["body", "password"])],
        )
        .await;
    }
}

#[actix_web::test]
async fn password_equal_to_email_in_other_case_is_refused() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let e = format!("Grace-{id}@Example.com");
    expect_issues(
        app.register_raw(&json!({"email": e, "password": e.to_uppercase()}))
            .await,
        &[("value_error", &["body", "password"])],
    )
    .await;
}

#[actix_web::test]
async fn full_name_of_101_characters_is_too_long() {
    let app = spawn_app().await;
    expect_issues(
        app.register_raw(
            &json!({"email": email(), "password": PASSWORD, "full_name": "n".repeat(101)}),
        )
        .await,
        &[("string_too_long", &["body", "full_name"])],
    )
    .await;
    // 100 is fine.
    let res = app
        .register_raw(
            &json!({"email": email(), "password": PASSWORD, "full_name": "n".repeat(100)}),
        )
        .await;
    assert_eq!(res.status(), 201);
}

#[actix_web::test]
async fn bad_phone_is_422() {
    let app = spawn_app().await;
    for bad in [
        "447700900123",
        "+12345",
        "+1234567890123456",
        "+44 7700 900123",
        "phone",
    ] {
        expect_issues(
            app.register_raw(&json!({"email": email(), "password": PASSWORD, "phone": bad}))
                .await,
            &[("*", &["body", "phone"])],
        )
        .await;
    }
}

#[actix_web::test]
async fn email_of_wrong_json_type_is_string_type() {
    let app = spawn_app().await;
    for wrong in [
        json!(42),
        json!(true),
        json!(["a@example.com"]),
        json!({"a": 1}),
    ] {
        expect_issues(
            app.register_raw(&json!({"email": wrong, "password": PASSWORD}))
                .await,
            &[("string_type", &["body", "email"])],
        )
        .await;
    }
}

#[actix_web::test]
async fn every_invalid_field_is_reported_at_once() {
    let app = spawn_app().await;
    expect_issues(
        app.register_raw(&json!({
            "email": "nope", "password": "short", "full_name": "n".repeat(101), "phone": "12"
        }))
        .await,
        &[
            ("value_error", &["body", "email"]),
            ("string_too_short", &["body", "password"]),
            ("string_too_long", &["body", "full_name"]),
            ("*", &["body", "phone"]),
        ],
    )
    .await;
}

#[actix_web::test]
async fn non_json_content_type_is_json_invalid() {
    let app = spawn_app().await;
    let body = json!({"email": email(), "password": PASSWORD}).to_string();
    expect_issues(
        app.post_body("/api/auth/register", "text/plain", body.clone())
            .await,
        &[("json_invalid", &["body"])],
    )
    .await;
    expect_issues(
        app.post_body(
            "/api/auth/register",
            "application/x-www-form-urlencoded",
            "email=a%40example.com&password=x",
        )
        .await,
        &[("json_invalid", &["body"])],
    )
    .await;
}

#[actix_web::test]
async fn malformed_json_is_json_invalid() {
    let app = spawn_app().await;
    for bad in [
        r#"{"email": "#,
        "{email: 1}",
        "not json",
        r#"{"email":"a@example.com",}"#,
    ] {
        expect_issues(
            app.post_body("/api/auth/register", "application/json", bad)
                .await,
            &[("json_invalid", &["body"])],
        )
        .await;
    }
}

#[actix_web::test]
async fn empty_body_is_missing_body() {
    let app = spawn_app().await;
    expect_issues(
        app.post_body("/api/auth/register", "application/json", "")
            .await,
        &[("missing", &["body"])],
    )
    .await;
}

#[actix_web::test]
async fn body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let body = json!({"email": email(), "password": PASSWORD, "full_name": "x".repeat(20 * 1024)})
        .to_string();
    let res = app
        .post_body("/api/auth/register", "application/json", body)
        .await;
    expect_error(res, 413, "payload_too_large").await;
}

#[actix_web::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let res = app
        .register_raw(
            &json!({"email": email(), "password": PASSWORD, "plan": "enterprise", "role": "admin"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let p = json_of(res).await;
    assert_eq!(p["plan"], "free");
    assert_eq!(p["role"], "owner");
}

#[actix_web::test]
async fn password_is_kept_exactly_as_sent() {
    let app = spawn_app().await;
    let e = email();
    let spaced = " spaced pass phrase ";
    let res = app
        .register_raw(&json!({"email": e, "password": spaced}))
        .await;
    assert_eq!(res.status(), 201);
    let res = app.login_raw(&e, spaced.trim()).await;
    expect_error(res, 401, "invalid_credentials").await;
    let res = app.login_raw(&e, spaced).await;
    assert_eq!(res.status(), 200, "the exact password logs in");
}

#[actix_web::test]
async fn eight_emoji_are_eight_characters() {
    let app = spawn_app().await;
    let e = email();
    let emoji = "🔑🎲🌵🚲🧩🪁🦉🍋";
    assert_eq!(emoji.chars().count(), 8);
    let res = app
        .register_raw(&json!({"email": e, "password": emoji}))
        .await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let res = app.login_raw(&e, emoji).await;
    assert_eq!(res.status(), 200);
    // Seven emoji are too short although they are 28 bytes.
    expect_issues(
        app.register_raw(&json!({"email": email(), "password": "🔑🎲🌵🚲🧩🪁🦉"}))
            .await,
        &[("string_too_short", &["body", "password"])],
    )
    .await;
}

/// `s` with the case of its ASCII letters flipped where `mask`'s bits say.
fn recase(s: &str, mask: u32) -> String {
    let mut bit = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() && bit < 32 {
                let flip = mask & (1 << bit) != 0;
                bit += 1;
                if flip {
                    return c.to_ascii_uppercase();
                }
            }
            c
        })
        .collect()
}

#[actix_web::test]
async fn parallel_registrations_of_one_email_create_one_user() {
    let app = spawn_app().await;
    let base = email();
    let variants: Vec<String> = (0..20).map(|i| recase(&base, i)).collect();
    let distinct: std::collections::HashSet<&String> = variants.iter().collect();
    assert_eq!(distinct.len(), 20);
    let app = &app;
    let results = join_all(variants.iter().map(|e| async move {
        let res = app
            .post_json(
                "/api/auth/register",
                &json!({"email": e, "password": PASSWORD}),
            )
            .await;
        let status = res.status().as_u16();
        (status, json_of(res).await)
    }))
    .await;
    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    let taken = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "email_taken")
        .count();
    assert_eq!(created.len(), 1, "exactly one 201: {results:?}");
    assert_eq!(taken, 19, "nineteen 409 email_taken: {results:?}");
    // The one account logs in under any case.
    let winner = created[0]["email"].as_str().expect("email").to_string();
    let res = app.login_raw(&winner.to_uppercase(), PASSWORD).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn streamed_body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let head = format!(
        r#"{{"email": "{}", "password": "{PASSWORD}", "full_name": ""#,
        email()
    );
    let raw = chunked_post(
        app.port,
        "/api/auth/register",
        "application/json",
        &oversized_chunks(head.as_bytes(), br#""}"#),
    )
    .await;
    expect_raw_error(&raw, 413, "payload_too_large");
    assert!(
        raw.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{raw}"
    );
}

#[actix_web::test]
async fn streamed_body_under_the_limit_is_read() {
    let app = spawn_app().await;
    let body = json!({"email": email(), "password": PASSWORD})
        .to_string()
        .into_bytes();
    let (a, b) = body.split_at(10);
    let raw = chunked_post(
        app.port,
        "/api/auth/register",
        "application/json",
        &[a.to_vec(), b.to_vec()],
    )
    .await;
    assert_eq!(raw_status(&raw), 201, "{raw}");
}

#[actix_web::test]
async fn optional_fields_of_the_wrong_type_are_422() {
    let app = spawn_app().await;
    expect_issues(app.register_raw(&json!({"email": email(), "password": PASSWORD, "full_name": 5, "phone": ["+447700900123"]}))
            .await, &[
            ("string_type", &["body", "full_name"]),
            ("string_type", &["body", "phone"]),
        ]).await;
}
