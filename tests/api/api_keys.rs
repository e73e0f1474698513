//! API keys: `GET /api/auth/api-key` (auto-creation, shown once), `POST /api/auth/api-key/rotate`,
//! the key's format and checksum, and where a key authenticates (API-key-ok endpoints only).

use futures_util::future::join_all;
use rand::Rng;
use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::*;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and final xor all ones),
/// written here rather than taken from the server.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// `n` in base62 (`0-9A-Za-z`), most significant digit first, left-padded with `0` to 6.
fn base62_6(n: u32) -> String {
    let mut n = u64::from(n);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    assert_eq!(n, 0, "a CRC32 fits in six base62 digits");
    String::from_utf8(out.to_vec()).unwrap()
}

/// The contract's checksum of the 32 random characters.
fn checksum(random: &str) -> String {
    base62_6(crc32_ieee(random.as_bytes()))
}

/// A well-formed key (valid checksum) that the server never issued.
fn forged_key() -> String {
    let mut rng = rand::thread_rng();
    let random: String = (0..32)
        .map(|_| char::from(BASE62[rng.gen_range(0..62)]))
        .collect();
    format!("bpk_{random}{}", checksum(&random))
}

/// `^bpk_[0-9A-Za-z]{38}$`.
fn assert_key_format(key: &str) {
    let rest = key
        .strip_prefix("bpk_")
        .unwrap_or_else(|| panic!("key does not start with bpk_: {key:?}"));
    assert_eq!(rest.len(), 38, "32 random + 6 checksum characters: {key:?}");
    assert!(
        rest.bytes().all(|b| b.is_ascii_alphanumeric()),
        "base62 only: {key:?}"
    );
}

/// The exact metadata shape; returns the key when the response carries one.
fn assert_key_metadata(v: &Value) -> Option<String> {
    let obj = v.as_object().unwrap_or_else(|| panic!("object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "key", "last_used_at", "prefix"],
        "{v}"
    );
    assert_uuid_v7(&v["id"], "id");
    assert_rfc3339_z(&v["created_at"], "created_at");
    if !v["last_used_at"].is_null() {
        assert_rfc3339_z(&v["last_used_at"], "last_used_at");
    }
    let prefix = v["prefix"].as_str().expect("prefix is a string");
    assert_eq!(prefix.len(), 12, "prefix is 12 characters: {v}");
    assert!(prefix.starts_with("bpk_"), "{v}");
    match &v["key"] {
        Value::Null => None,
        Value::String(k) => {
            assert_key_format(k);
            assert_eq!(prefix, &k[..12], "prefix is the key's first 12 characters");
            Some(k.clone())
        }
        other => panic!("key is a string or null: {other}"),
    }
}

/// A new user, their access token and their freshly created key.
async fn user_with_key(app: &TestApp) -> (Tokens, Value, String) {
    let (_, t) = app.new_user().await;
    let meta = app.api_key(&t.access).await;
    let key = assert_key_metadata(&meta).expect("the first GET shows the key");
    (t, meta, key)
}

#[test]
fn the_tests_crc32_and_base62_are_right() {
    // The standard CRC-32 check value.
    assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32_ieee(b""), 0);
    assert_eq!(base62_6(0), "000000");
    assert_eq!(base62_6(61), "00000z");
    assert_eq!(base62_6(62), "000010");
    // 0xCBF43926 = 3421780262 = 3*62^5 + 45*62^4 + 61*62^3 + 27*62^2 + 22*62 + 14.
    assert_eq!(base62_6(0xCBF4_3926), "3jZRME");
}

#[actix_web::test]
async fn first_get_creates_the_key_and_shows_it_once() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;

    let res = app.get_bearer("/api/auth/api-key", &t.access).await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_no_store(res.headers());
    let first = json_of(res).await;
    let key = assert_key_metadata(&first).expect("the creating response holds the key");
    assert!(first["last_used_at"].is_null(), "{first}");

    let res = app.get_bearer("/api/auth/api-key", &t.access).await;
    assert_eq!(res.status(), 200);
    let second = json_of(res).await;
    assert_eq!(assert_key_metadata(&second), None, "the key is shown once");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["prefix"], first["prefix"]);
    assert_eq!(second["created_at"], first["created_at"]);
    assert!(second["last_used_at"].is_null(), "{second}");
    assert_eq!(&key[..12], second["prefix"].as_str().unwrap());
}

#[actix_web::test]
async fn key_checksum_is_base62_crc32_of_the_random_part() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let (_, _, key) = user_with_key(&app).await;
        let random = &key[4..36];
        let check = &key[36..];
        assert_eq!(check, checksum(random), "checksum of {key}");
    }
}

#[actix_web::test]
async fn api_key_authenticates_me_and_entitlements() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let key = assert_key_metadata(&app.api_key(&t.access).await).unwrap();
    let profile = json_of(app.me(&t.access).await).await;
    assert_eq!(profile["email"], e);

    for path in ["/api/auth/me", "/api/auth/me/entitlements"] {
        let res = app.get_with_api_key(path, &key).await;
        assert_eq!(res.status(), 200, "X-API-Key on {path}");
        assert_common_headers(res.headers());
        let body = json_of(res).await;
        let id = if path == "/api/auth/me" {
            &body["id"]
        } else {
            &body["user_id"]
        };
        assert_eq!(id, &profile["id"], "{path}: {body}");

        let res = app.get_bearer(path, &key).await;
        assert_eq!(res.status(), 200, "Authorization: Bearer <key> on {path}");
        let body = json_of(res).await;
        let id = if path == "/api/auth/me" {
            &body["id"]
        } else {
            &body["user_id"]
        };
        assert_eq!(id, &profile["id"], "{path}: {body}");
    }

    // /me through the key is the same profile as through the session.
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(json_of(res).await, profile);
}

#[actix_web::test]
async fn an_api_key_cannot_manage_keys_or_the_profile() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app).await;
    let c = Client::new();

    let cases: [(Method, &str, Option<Value>); 3] = [
        (Method::GET, "/api/auth/api-key", None),
        (Method::POST, "/api/auth/api-key/rotate", None),
        (
            Method::PATCH,
            "/api/auth/me",
            Some(json!({"full_name": "Mallory"})),
        ),
    ];
    for (method, path, body) in cases {
        let mut req = c
            .request(method.clone(), app.url(path))
            .header("x-api-key", &key);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let got = expect_error(res, 403, "session_required").await;
        assert!(got["detail"].is_string(), "{method} {path}");

        let res = app
            .send_bearer(method.clone(), path, &key, body.as_ref())
            .await;
        expect_error(res, 403, "session_required").await;
    }

    // None of those changed anything: the key still works, the name is unchanged.
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);
    assert!(json_of(res).await["full_name"].is_null());
}

#[actix_web::test]
async fn rotate_issues_a_new_key_and_the_old_one_stops_at_once() {
    let app = spawn_app().await;
    let (t, old_meta, old_key) = user_with_key(&app).await;

    let res = app
        .post_bearer("/api/auth/api-key/rotate", &t.access, None)
        .await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    assert_no_store(res.headers());
    let rotated = json_of(res).await;
    let new_key = assert_key_metadata(&rotated).expect("rotate returns the new full key");
    assert_ne!(rotated["id"], old_meta["id"], "a new id");
    assert_ne!(new_key, old_key);
    assert_eq!(&new_key[36..], checksum(&new_key[4..36]));
    assert!(rotated["last_used_at"].is_null(), "{rotated}");

    // The old key is refused at once, however it is presented.
    let res = app.get_with_api_key("/api/auth/me", &old_key).await;
    expect_error(res, 401, "invalid_token").await;
    let res = app.get_bearer("/api/auth/me/entitlements", &old_key).await;
    expect_error(res, 401, "invalid_token").await;

    // The new one works.
    let res = app.get_with_api_key("/api/auth/me", &new_key).await;
    assert_eq!(res.status(), 200);
    let res = app.get_bearer("/api/auth/me/entitlements", &new_key).await;
    assert_eq!(res.status(), 200);

    // GET now shows the new key's metadata, without the key.
    let meta = app.api_key(&t.access).await;
    assert_eq!(assert_key_metadata(&meta), None);
    assert_eq!(meta["id"], rotated["id"]);
    assert_eq!(meta["prefix"], rotated["prefix"]);

    // The old key stays dead.
    let res = app.get_with_api_key("/api/auth/me", &old_key).await;
    expect_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn rotate_without_a_key_creates_one() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app
        .post_bearer("/api/auth/api-key/rotate", &t.access, None)
        .await;
    assert_eq!(res.status(), 200);
    let created = json_of(res).await;
    let key = assert_key_metadata(&created).expect("the created key is shown");
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);
    let meta = app.api_key(&t.access).await;
    assert_eq!(meta["id"], created["id"]);
    assert!(meta["key"].is_null());
}

#[actix_web::test]
async fn a_mistyped_key_is_refused() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app).await;
    let swap = |c: u8| if c == b'a' { b'b' } else { b'a' };
    // One character changed in the random part, and one in the checksum.
    for i in [4, 20, 35, 36, 41] {
        let mut bytes = key.clone().into_bytes();
        bytes[i] = swap(bytes[i]);
        let typo = String::from_utf8(bytes).unwrap();
        assert_ne!(typo, key);
        let res = app.get_with_api_key("/api/auth/me", &typo).await;
        expect_error(res, 401, "invalid_token").await;
        let res = app.get_bearer("/api/auth/me", &typo).await;
        expect_error(res, 401, "invalid_token").await;
    }
    // Truncated, extended, wrong prefix.
    for bad in [
        key[..key.len() - 1].to_string(),
        format!("{key}0"),
        key.replacen("bpk_", "bpx_", 1),
    ] {
        let res = app.get_with_api_key("/api/auth/me", &bad).await;
        expect_error(res, 401, "invalid_token").await;
    }
    // The genuine key still works.
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn an_unknown_well_formed_key_is_refused() {
    let app = spawn_app().await;
    // Some user has a key, so the lookup has something to miss.
    let _ = user_with_key(&app).await;
    for _ in 0..3 {
        let forged = forged_key();
        assert_key_format(&forged);
        let res = app.get_with_api_key("/api/auth/me", &forged).await;
        expect_error(res, 401, "invalid_token").await;
        let res = app.get_bearer("/api/auth/me/entitlements", &forged).await;
        expect_error(res, 401, "invalid_token").await;
    }
}

#[actix_web::test]
async fn parallel_first_gets_create_one_key() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let responses = join_all((0..10).map(|_| async {
        let res = app.get_bearer("/api/auth/api-key", &t.access).await;
        assert_eq!(res.status(), 200);
        json_of(res).await
    }))
    .await;
    let keys: Vec<String> = responses.iter().filter_map(assert_key_metadata).collect();
    assert_eq!(
        keys.len(),
        1,
        "exactly one response carries the key: {responses:?}"
    );
    let id = &responses[0]["id"];
    assert!(
        responses.iter().all(|r| &r["id"] == id),
        "one key id: {responses:?}"
    );
    let res = app.get_with_api_key("/api/auth/me", &keys[0]).await;
    assert_eq!(res.status(), 200, "the one key shown is the key");
}

#[actix_web::test]
async fn use_of_the_key_is_recorded() {
    let app = spawn_app().await;
    let (t, meta, key) = user_with_key(&app).await;
    assert!(meta["last_used_at"].is_null());
    let res = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let seen = loop {
        let meta = app.api_key(&t.access).await;
        if !meta["last_used_at"].is_null() {
            break meta;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at still null 5 s after a use: {meta}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_rfc3339_z(&seen["last_used_at"], "last_used_at");
    assert_eq!(seen["id"], meta["id"]);
    assert!(seen["key"].is_null());
}

#[actix_web::test]
async fn an_api_key_in_the_query_string_does_not_authenticate() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app).await;
    for param in [
        "api_key",
        "apikey",
        "x-api-key",
        "key",
        "access_token",
        "token",
    ] {
        let res = Client::new()
            .get(app.url("/api/auth/me"))
            .query(&[(param, key.as_str())])
            .send()
            .await
            .unwrap();
        expect_error(res, 401, "not_authenticated").await;
    }
}

#[actix_web::test]
async fn the_authorization_header_alone_is_used_over_x_api_key() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app).await;
    let res = Client::new()
        .get(app.url("/api/auth/me"))
        .bearer_auth("not-a-token")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn x_api_key_is_used_over_the_cookie() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    assert_eq!(
        jar.get(app.url("/api/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A bad key next to a good cookie: the key alone is used.
    let res = jar
        .get(app.url("/api/auth/me"))
        .header("x-api-key", forged_key())
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn an_access_token_is_not_an_api_key() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let res = app.get_with_api_key("/api/auth/me", &t.access).await;
    expect_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn cookie_key_management_from_another_origin_is_refused() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let created = jar.get(app.url("/api/auth/api-key")).send().await.unwrap();
    assert_eq!(created.status(), 200);
    let created = json_of(created).await;

    let res = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "origin_not_allowed").await;
    let res = jar.get(app.url("/api/auth/api-key")).send().await.unwrap();
    assert_eq!(json_of(res).await["id"], created["id"], "not rotated");

    // The server's own origin is fine.
    let res = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .header("origin", app.address.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_ne!(json_of(res).await["id"], created["id"]);
}

#[actix_web::test]
async fn a_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let res = server.login_raw(&e, PASSWORD).await;
    let access = Tokens::from_json(&json_of(res).await).access;
    let res = server.get_bearer("/api/auth/api-key", &access).await;
    let created = json_of(res).await;
    let key = assert_key_metadata(&created).unwrap();
    // storage.durability = "flush": the 200 meant the key was on disk.
    server.kill();

    let server = ServerProcess::start(dir.path(), &[]).await;
    let res = server.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["email"], e);
    let res = server.get_bearer("/api/auth/api-key", &access).await;
    let meta = json_of(res).await;
    assert_eq!(meta["id"], created["id"]);
    assert!(meta["key"].is_null(), "shown once, even across restarts");
    assert!(server.terminate().success());
}
