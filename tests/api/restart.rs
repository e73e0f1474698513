//! The real binary: durability across SIGKILL, a clean SIGTERM that keeps the signing key, and
//! configuration errors that stop the start with a message naming the culprit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Client;
use serde_json::json;

use crate::helpers::*;

/// Runs `cmd` (a start that is expected to fail) to completion, killing it after 30 s; asserts
/// it exits non-zero and returns its stderr.
fn failed_start_stderr(cmd: Command) -> String {
    let out = run_to_exit(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "non-zero exit: {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `bp-auth serve` on a throwaway data dir and a free port, run from `cwd`.
fn serve_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bp-auth"));
    cmd.arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(cwd.join("data"))
        .current_dir(cwd);
    cmd
}

#[actix_web::test]
async fn acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    let profile = server.register(&e).await;
    let t = server.login(&e).await;
    let res = server.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    let rotated = Tokens::from_json(&json_of(res).await);
    // No drain, no flush: what was answered 2xx must already be on disk.
    server.kill();

    let server = ServerProcess::start(dir.path(), &[]).await;
    let again = server.login(&e).await;
    let res = server.me(&again.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["id"], profile["id"]);
    // The rotation was kept: the new token works...
    let res = server.refresh_raw(&rotated.refresh).await;
    assert_eq!(res.status(), 200, "the rotated token survived the crash");
    // ...and the old one is a reuse.
    expect_refresh_error(&server, &t.refresh, "refresh_token_reused").await;
    // The email is still taken.
    let res = server
        .register_raw(&json!({"email": e.to_uppercase(), "password": PASSWORD}))
        .await;
    expect_error(res, 409, "email_taken").await;
}

#[actix_web::test]
async fn revocation_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let res = Client::new()
        .post(server.url("/api/auth/logout"))
        .bearer_auth(&t.access)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    server.kill();

    let server = ServerProcess::start(dir.path(), &[]).await;
    expect_error(server.me(&t.access).await, 401, "session_revoked").await;
    expect_refresh_error(&server, &t.refresh, "invalid_refresh_token").await;
}

#[actix_web::test]
async fn sigterm_exits_cleanly_and_keeps_the_signing_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let before = server.jwks().await;
    let kid = jwt_header(&t.access)["kid"].clone();
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let server = ServerProcess::start(dir.path(), &[]).await;
    let after = server.jwks().await;
    assert_eq!(before, after, "the same published keys");
    assert!(
        after["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == kid),
        "the token's kid is still published"
    );
    assert_eq!(server.me(&t.access).await.status(), 200);
    let res = server.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    let t2 = Tokens::from_json(&json_of(res).await);
    assert_eq!(
        jwt_header(&t2.access)["kid"],
        kid,
        "still signing with the same key"
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

#[actix_web::test]
async fn signing_keys_are_private_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    server.terminate();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = dir.path().join("keys");
        let mut found = 0;
        for entry in std::fs::read_dir(&keys).expect("keys dir") {
            let meta = entry.expect("entry").metadata().expect("metadata");
            if meta.is_file() {
                found += 1;
                assert_eq!(meta.permissions().mode() & 0o077, 0, "owner only");
            }
        }
        assert!(found > 0, "a key was generated");
    }
}

#[actix_web::test]
async fn unknown_key_in_the_config_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[refresh]\nrotation_enabled = true\nrotate_every = 5\n",
    )
    .expect("write config");
    let mut cmd = serve_command(dir.path());
    cmd.arg("--config").arg(&config);
    let stderr = failed_start_stderr(cmd);
    assert!(
        stderr.contains("rotate_every"),
        "stderr names the key: {stderr}"
    );
}

#[actix_web::test]
async fn unknown_section_in_the_config_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[tokenz]\naccess_ttl_seconds = 60\n").expect("write config");
    let mut cmd = serve_command(dir.path());
    cmd.arg("--config").arg(&config);
    let stderr = failed_start_stderr(cmd);
    assert!(stderr.contains("tokenz"), "stderr names the key: {stderr}");
}

#[actix_web::test]
async fn implicit_config_toml_in_the_working_directory_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.toml"), "[refresh]\nrotate = 1\n").expect("write");
    let stderr = failed_start_stderr(serve_command(dir.path()));
    assert!(stderr.contains("rotate"), "stderr names the key: {stderr}");
}

#[actix_web::test]
async fn missing_config_file_named_on_the_command_line_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = serve_command(dir.path());
    cmd.arg("--config").arg(dir.path().join("absent.toml"));
    let stderr = failed_start_stderr(cmd);
    assert!(
        stderr.contains("absent.toml"),
        "stderr names the file: {stderr}"
    );
}

#[actix_web::test]
async fn environment_value_of_the_wrong_type_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = serve_command(dir.path());
    cmd.env("BP_AUTH__TOKENS__ACCESS_TTL_SECONDS", "soon");
    let stderr = failed_start_stderr(cmd);
    assert!(
        stderr.contains("access_ttl_seconds"),
        "stderr names the key: {stderr}"
    );
}

#[actix_web::test]
async fn unknown_environment_key_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = serve_command(dir.path());
    cmd.env("BP_AUTH__REFRESH__ROTATE", "false");
    let stderr = failed_start_stderr(cmd);
    assert!(
        stderr.to_lowercase().contains("rotate"),
        "stderr names the key: {stderr}"
    );
}

#[actix_web::test]
async fn environment_overrides_the_access_lifetime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ServerProcess::start(dir.path(), &[("BP_AUTH__TOKENS__ACCESS_TTL_SECONDS", "60")]).await;
    let e = email();
    server.register(&e).await;
    let res = server.login_raw(&e, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let cookie = bp_token_cookie(res.headers());
    let body = json_of(res).await;
    assert_eq!(body["expires_in"], 60);
    assert_eq!(cookie.get("max-age"), Some("60"));
    let c = jwt_claims(body["access_token"].as_str().expect("access_token"));
    assert_eq!(
        c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
        60
    );
}

#[actix_web::test]
async fn environment_turns_rotation_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(
        dir.path(),
        &[("BP_AUTH__REFRESH__ROTATION_ENABLED", "false")],
    )
    .await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    for _ in 0..2 {
        let res = server.refresh_raw(&t.refresh).await;
        assert_eq!(res.status(), 200);
        assert_eq!(json_of(res).await["refresh_token"], t.refresh.as_str());
    }
}
