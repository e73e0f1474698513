//! The contract's "Abuse resistance" rules and the mismatches found from outside, each tried
//! the way an attacker or a careless client would.

use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn a_405_names_the_methods_of_the_path() {
    let app = spawn_app().await;
    let cases = [
        ("/api/auth/token", reqwest::Method::GET, "POST"),
        ("/api/auth/register", reqwest::Method::DELETE, "POST"),
        ("/api/auth/me", reqwest::Method::POST, "GET, PATCH"),
        ("/healthz", reqwest::Method::POST, "GET"),
    ];
    for (path, method, allow) in cases {
        let res = Client::new()
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        expect_error(res, 405, "method_not_allowed").await;
    }
}

#[actix_web::test]
async fn null_for_a_required_string_is_string_type_not_missing() {
    let app = spawn_app().await;
    let res = app
        .client()
        .post(app.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": null}))
        .send()
        .await
        .expect("refresh");
    expect_issues(res, &[("string_type", &["body", "refresh_token"])]).await;
    let res = app
        .register_raw(&json!({"email": null, "password": PASSWORD}))
        .await;
    expect_issues(res, &[("string_type", &["body", "email"])]).await;
    // An absent field is still `missing`.
    let res = app.register_raw(&json!({"password": PASSWORD})).await;
    expect_issues(res, &[("missing", &["body", "email"])]).await;
}

#[actix_web::test]
async fn confirming_a_verified_phone_is_code_expired() {
    let app = spawn_app().await;
    let (_, t) = app.new_user_with_phone("+447700900123").await;
    let before = app.outbox().len();
    assert_eq!(app.phone_request(&t.access).await.status(), 200);
    let lines = app.wait_outbox(before + 1).await;
    let code = assert_six_digits(&lines[before]["code"], "code");
    assert_eq!(app.phone_confirm(&t.access, &code).await.status(), 200);
    for again in [code.clone(), other_code(&code)] {
        let res = app.phone_confirm(&t.access, &again).await;
        expect_error(res, 400, "code_expired").await;
    }
}

#[actix_web::test]
async fn the_logout_body_is_optional_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = json_of(app.get("/openapi.json").await).await;
    let body = &doc["paths"]["/api/auth/logout"]["post"]["requestBody"];
    assert!(body.is_object(), "logout documents its body: {body}");
    assert_ne!(body["required"], true, "logout's body is optional: {body}");
    let register = &doc["paths"]["/api/auth/register"]["post"]["requestBody"];
    assert_eq!(register["required"], true, "register's body is required");
}

/// SIGINT drains like SIGTERM: a login whose hash is running when the signal arrives still
/// gets its answer, and the process exits 0.
#[actix_web::test]
async fn sigint_drains_requests_in_flight() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Slow hashing (about half a second), so the login is surely in flight at the signal;
    // this test is about shutdown, not hashing cost.
    let server = ServerProcess::start(
        dir.path(),
        &[("BP_AUTH__PASSWORD__ARGON2_ITERATIONS", "60")],
    )
    .await;
    let e = email();
    server.register(&e).await;
    let url = server.url("/api/auth/token");
    let login = tokio::spawn(async move {
        Client::new()
            .post(url)
            .form(&[("username", e.as_str()), ("password", PASSWORD)])
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = server.interrupt();
    assert_eq!(
        login.await.expect("join").expect("the login got an answer"),
        200,
        "the login in flight at SIGINT completed"
    );
    assert!(status.success(), "SIGINT exits 0: {status:?}");
}

/// Every file under `dir` (and `dir` itself) with a mode that lets group or others in.
fn open_to_others(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        if meta.permissions().mode() & 0o077 != 0 {
            found.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode()
            ));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// The data dir is `0700` and everything the server and the CLI write in it or export is
/// owner-only, even when the operator's umask would let others read.
#[actix_web::test]
async fn the_data_dir_and_every_file_written_are_owner_only() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    // A pre-existing, world-readable data dir is tightened too.
    std::fs::create_dir(&data).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let server = ServerProcess::start(&data, &[]).await;
    let (_, t) = server.new_user_with_phone("+447700900123").await;
    assert_eq!(server.phone_request(&t.access).await.status(), 200);
    assert!(server.terminate().success());
    assert!(data.join("outbox.jsonl").exists(), "the outbox was written");
    assert_eq!(open_to_others(&data), Vec::<String>::new());

    let export = tmp.path().join("export.jsonl");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bp-auth"));
    cmd.args(["admin", "export", "--out"])
        .arg(&export)
        .arg("--data-dir")
        .arg(&data)
        .current_dir(&data);
    let out = run_to_exit(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(open_to_others(&export), Vec::<String>::new());
}
