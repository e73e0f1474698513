//! The admin CLI against a running server (issue 13): through the server's owner-only admin
//! socket, changes take effect on live tokens at once, every command prints what it prints on
//! a stopped data dir, and a backup taken under load restores into a fresh data dir.
//!
//! Servers are the real binary (`ServerProcess`) and the CLI is the real binary run to
//! completion (`operate::bp_auth`), so the socket, its permissions and the fallback to the
//! data dir are what ships.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::operate::{bp_auth, bp_auth_ok, full_login, CliRun};

fn socket(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The CLI on a blocking thread, so that the test's own tasks (a load loop) keep running.
async fn bp_auth_async(data_dir: &Path, args: &[&str]) -> CliRun {
    let dir = data_dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bp_auth(&dir, &args)
    })
    .await
    .expect("the CLI thread")
}

/// The lines of a JSON-lines file, parsed.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON ({e}): {l}")))
        .collect()
}

/// Copies a stopped server's data dir (database and keys) to `to`.
fn copy_data_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

#[actix_web::test]
async fn admin_user_deactivate_on_a_running_server_takes_effect_on_the_next_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (e, t) = server.new_user().await;
    let key = server.new_api_key(&t.access).await;
    assert_eq!(server.me(&t.access).await.status(), 200);

    let run = bp_auth_ok(dir.path(), &["admin", "user", "deactivate", &e]);
    assert!(run.stdout.starts_with(&format!("{e}: ")), "{run:?}");
    let summary: Value = serde_json::from_str(run.stdout[e.len() + 2..].trim()).expect("JSON");
    assert_eq!(summary["status"], "deactivated", "{summary}");

    expect_error(server.me(&t.access).await, 401, "session_revoked").await;
    expect_error(
        server.login_raw(&e, PASSWORD).await,
        403,
        "account_deactivated",
    )
    .await;
    expect_refresh_error(&server, &t.refresh, "invalid_refresh_token").await;
    assert_eq!(
        server.get_with_api_key("/api/auth/me", &key).await.status(),
        401,
        "the API key of a deactivated account"
    );

    bp_auth_ok(dir.path(), &["admin", "user", "reactivate", &e]);
    let t = full_login(&server, &e).await;
    assert_eq!(server.profile(&t.access).await["status"], "active");
    let res = server.get_with_api_key("/api/auth/me", &key).await;
    expect_status(res, 200, "the API key works again").await;
    assert!(server.terminate().success());
}

#[actix_web::test]
async fn admin_sessions_revoke_on_a_running_server_ends_live_tokens_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (e, t1) = server.new_user().await;
    let t2 = full_login(&server, &e).await;
    for t in [&t1, &t2] {
        assert_eq!(server.me(&t.access).await.status(), 200);
    }

    let run = bp_auth_ok(dir.path(), &["admin", "sessions", "revoke", &e]);
    assert!(run.stdout.contains("\"live_sessions\":0"), "{run:?}");
    for t in [&t1, &t2] {
        expect_error(server.me(&t.access).await, 401, "session_revoked").await;
        expect_refresh_error(&server, &t.refresh, "invalid_refresh_token").await;
    }
    // The account itself is fine, and its history tells of the revocation, from no client.
    let t = full_login(&server, &e).await;
    assert_eq!(server.me(&t.access).await.status(), 200);
    let res = server.get_bearer("/api/auth/me/events", &t.access).await;
    let events = expect_status(res, 200, "the user's history").await;
    let revoked: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "session_revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{events}");
    assert!(
        revoked[0]["ip"].is_null() && revoked[0]["user_agent"].is_null(),
        "{events}"
    );
    assert!(server.terminate().success());
}

#[actix_web::test]
async fn every_admin_command_prints_the_same_against_a_running_server_and_its_stopped_data_dir() {
    let live = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(live.path(), &[]).await;
    let (e1, t1) = server.new_user().await;
    full_login(&server, &e1).await;
    server.new_api_key(&t1.access).await;
    let (e2, _) = server.new_user().await;
    assert!(server.terminate().success());
    // Two data dirs in the same state: one served, one stopped.
    let stopped = tempfile::tempdir().expect("temp dir");
    copy_data_dir(live.path(), stopped.path());
    let server = ServerProcess::start(live.path(), &[]).await;

    let upper = e1.to_uppercase();
    let commands: Vec<Vec<&str>> = vec![
        vec!["admin", "user", "show", &e1],
        vec!["admin", "user", "show", &upper],
        vec!["admin", "user", "set-plan", &e1, "pro"],
        vec!["admin", "user", "set-plan", &e1, "no-such-plan"],
        vec!["admin", "sessions", "revoke", &e1],
        vec!["admin", "mfa", "reset", &e2],
        vec!["admin", "user", "deactivate", &e2],
        vec!["admin", "user", "deactivate", &e2],
        vec!["admin", "user", "reactivate", &e2],
        vec!["admin", "user", "show", &e2],
        vec!["admin", "user", "show", "nobody@example.com"],
        vec!["admin", "sessions", "revoke", "nobody@example.com"],
        vec!["admin", "export", "--out", "export.jsonl"],
        vec!["admin", "backup", "--out", "backup.jsonl"],
        vec!["admin", "backup", "--out", "keys.jsonl", "--include-keys"],
        vec!["admin", "import", "--in", "export.jsonl"],
    ];
    let on_live: Vec<CliRun> = commands.iter().map(|c| bp_auth(live.path(), c)).collect();
    assert!(server.terminate().success());
    for (command, live_run) in commands.iter().zip(&on_live) {
        let stopped_run = bp_auth(stopped.path(), command);
        assert_eq!(
            (live_run.success, &live_run.stdout, &live_run.stderr),
            (
                stopped_run.success,
                &stopped_run.stdout,
                &stopped_run.stderr
            ),
            "{command:?}: running {live_run:?}, stopped {stopped_run:?}"
        );
    }
    assert!(on_live[0].success && on_live[0].stdout.contains(&e1));
    assert!(
        on_live[2].stdout.contains("\"plan\":\"pro\""),
        "{:?}",
        on_live[2]
    );
    assert!(
        on_live[3].stderr.contains("no-such-plan"),
        "{:?}",
        on_live[3]
    );
    assert!(on_live[10]
        .stderr
        .contains("no user with email nobody@example.com"));
    assert_eq!(on_live[12].stdout, "exported 2 users to export.jsonl\n");
    assert_eq!(
        on_live[14].stdout,
        "backed up 2 users and the keys to keys.jsonl\n"
    );
    assert!(
        on_live[15].stderr.contains("empty data directory"),
        "{:?}",
        on_live[15]
    );

    // The files agree too, but for the times that legitimately differ: the header's, and
    // those of the history events the commands recorded (each run made its change when it ran).
    let when_made = |lines: Vec<Value>| -> Vec<Value> {
        let mut lines = lines;
        for line in lines.iter_mut() {
            if let Some(events) = line["user"]["history"]["events"].as_array_mut() {
                for e in events.iter_mut().filter(|e| e["ip"].is_null()) {
                    e["at"] = Value::Null;
                }
            }
        }
        lines
    };
    for name in ["export.jsonl", "backup.jsonl", "keys.jsonl"] {
        let (a, b) = (
            when_made(json_lines(&live.path().join(name))),
            when_made(json_lines(&stopped.path().join(name))),
        );
        assert_eq!(a[1..], b[1..], "{name}");
        assert_eq!(mode(&live.path().join(name)), 0o600, "{name} is owner-only");
    }

    // Import: into a running server's empty data dir, and into an empty stopped one.
    let export = live.path().join("export.jsonl");
    let export_s = export.to_str().expect("utf-8");
    let (fresh_live, fresh_stopped) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let server = ServerProcess::start(fresh_live.path(), &[]).await;
    let live_import = bp_auth_ok(fresh_live.path(), &["admin", "import", "--in", export_s]);
    // The running server finds the imported users by email and by API key at once.
    let t = full_login(&server, &e1).await;
    assert_eq!(server.profile(&t.access).await["plan"], "pro");
    full_login(&server, &e2).await;
    assert!(server.terminate().success());
    let stopped_import = bp_auth_ok(fresh_stopped.path(), &["admin", "import", "--in", export_s]);
    assert_eq!(live_import.stdout, stopped_import.stdout);
    assert_eq!(
        live_import.stdout,
        format!("imported 2 users from {export_s}\n")
    );
}

#[actix_web::test]
async fn the_admin_socket_is_owner_only_replaced_after_a_crash_and_gone_after_a_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (e, _) = server.new_user().await;
    let sock = socket(dir.path());
    let meta = std::fs::metadata(&sock).expect("the socket exists while the server runs");
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&sock), 0o600, "the socket is owner-only");
    assert_eq!(mode(dir.path()) & 0o077, 0, "the data dir stays owner-only");

    // SIGKILL leaves the socket file behind; the next server replaces it.
    server.kill();
    assert!(sock.exists(), "a crash leaves the socket file");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let run = bp_auth_ok(dir.path(), &["admin", "user", "show", &e]);
    assert!(run.stdout.contains(&e), "{run:?}");
    assert_eq!(mode(&sock), 0o600);

    assert!(server.terminate().success());
    assert!(!sock.exists(), "a stopped server removes its socket");
    assert_eq!(mode(dir.path()) & 0o077, 0);
}

/// Sends raw bytes to the socket and reads the answer until the server hangs up.
fn raw_exchange(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // The server may hang up before taking everything; its answer is what counts.
    let _ = s.write_all(bytes);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// `admin user show EMAIL` succeeds within a few seconds (slots free up asynchronously).
fn eventually_shows(dir: &Path, email: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let run = bp_auth(dir, &["admin", "user", "show", email]);
        if run.success {
            assert!(run.stdout.contains(email), "{run:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the socket serves again: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[actix_web::test]
async fn the_admin_socket_refuses_oversized_requests_and_extra_connections_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (e, _) = server.new_user().await;
    let sock = socket(dir.path());

    let mut huge = vec![b'x'; 70 * 1024];
    huge.push(b'\n');
    let answer = raw_exchange(&sock, &huge);
    assert!(
        answer.starts_with("error ") && answer.contains("longer than 65536 bytes"),
        "{answer:?}"
    );
    let answer = raw_exchange(&sock, b"{\"version\":1,\"command\":\"format-disk\"}\n");
    assert!(
        answer.starts_with("error \"not an admin request"),
        "{answer:?}"
    );
    let answer = raw_exchange(&sock, b"{\"version\":99}\n");
    assert!(answer.contains("protocol version 1, not 99"), "{answer:?}");
    eventually_shows(dir.path(), &e);

    // An import stream cut short is an error, not a smaller import.
    let empty = tempfile::tempdir().expect("temp dir");
    let fresh = ServerProcess::start(empty.path(), &[]).await;
    let mut s = UnixStream::connect(socket(empty.path())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(b"{\"version\":1,\"command\":{\"import\":{\"bytes\":100000}}}\n")
        .expect("request");
    let mut ready = [0u8; 9];
    s.read_exact(&mut ready).expect("ready");
    assert_eq!(&ready, b"ready {}\n");
    let header = b"{\"type\":\"header\",\"format\":\"bp-auth-export\",\"version\":1,\"exported_at\":\"x\"}\n";
    s.write_all(header).expect("header");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("error ")
            && answer.contains(&format!("ended after {} of 100000 bytes", header.len())),
        "{answer:?}"
    );
    assert!(fresh.terminate().success());

    // Four idle clients hold every slot; a fifth is told so at once.
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).expect("connect"))
        .collect();
    let started = Instant::now();
    let answer = raw_exchange(&sock, b"");
    assert!(answer.contains("busy"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    drop(idle);
    eventually_shows(dir.path(), &e);
    full_login(&server, &e).await;
    assert!(server.terminate().success());
}

#[actix_web::test]
async fn a_backup_under_write_load_restores_every_user() {
    const USERS: usize = 12;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Arc::new(ServerProcess::start(dir.path(), &[]).await);
    let mut chains = Vec::new();
    let mut emails = Vec::new();
    for _ in 0..USERS {
        let (e, t) = server.new_user().await;
        emails.push(e);
        chains.push(t.refresh);
    }
    // A client rotating every user's refresh token, round after round, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(AtomicUsize::new(0));
    let load = {
        let (server, stop, rotations) = (server.clone(), stop.clone(), rotations.clone());
        actix_web::rt::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for refresh in chains.iter_mut() {
                    let res = server.refresh_raw(refresh).await;
                    let v = expect_status(res, 200, "a refresh under load").await;
                    *refresh = Tokens::from_json(&v).refresh;
                    rotations.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    while rotations.load(Ordering::SeqCst) < USERS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = rotations.load(Ordering::SeqCst);
    for n in 0..5 {
        let out = format!("backup-{n}.jsonl");
        let run = bp_auth_async(dir.path(), &["admin", "backup", "--out", &out]).await;
        assert!(run.success, "backup {n}: {run:?}");
        assert_eq!(run.stdout, format!("backed up {USERS} users to {out}\n"));
    }
    let during = rotations.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    load.await.expect("the load loop");
    assert!(during > 0, "the backups ran under load");

    let backup = dir.path().join("backup-4.jsonl");
    let lines = json_lines(&backup);
    let users: Vec<&Value> = lines.iter().filter(|l| l["type"] == "user").collect();
    assert_eq!(users.len(), USERS);
    let fresh = tempfile::tempdir().expect("temp dir");
    let run = bp_auth_ok(
        fresh.path(),
        &["admin", "import", "--in", backup.to_str().expect("utf-8")],
    );
    assert!(
        run.stdout
            .starts_with(&format!("imported {USERS} users from")),
        "{run:?}"
    );
    let restored = ServerProcess::start(fresh.path(), &[]).await;
    for e in &emails {
        full_login(&restored, e).await;
    }
    assert!(restored.terminate().success());
    drop(server);
}

/// Every file under `<data_dir>/keys/`, by name.
fn key_files(data_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(data_dir.join("keys"))
        .expect("keys dir")
        .map(|e| {
            let e = e.expect("entry");
            let text = std::fs::read_to_string(e.path()).expect("key file");
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// The secret parts of the key files: each signing key's seed, the server and data keys.
fn key_secrets(data_dir: &Path) -> Vec<String> {
    key_files(data_dir)
        .into_iter()
        .map(|(name, text)| {
            if name.ends_with(".json") {
                let v: Value = serde_json::from_str(&text).expect("signing key JSON");
                v["seed"].as_str().expect("seed").to_string()
            } else {
                text.trim().to_string()
            }
        })
        .collect()
}

#[actix_web::test]
async fn a_backup_holds_keys_only_with_include_keys_and_restores_them() {
    let src = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(src.path(), &[]).await;
    let (e, t) = server.new_user().await;
    let key = server.new_api_key(&t.access).await;
    let files = tempfile::tempdir().expect("temp dir");
    let plain = files.path().join("plain.jsonl");
    let with_keys = files.path().join("with-keys.jsonl");
    bp_auth_ok(
        src.path(),
        &["admin", "backup", "--out", plain.to_str().expect("utf-8")],
    );
    let run = bp_auth_ok(
        src.path(),
        &[
            "admin",
            "backup",
            "--out",
            with_keys.to_str().expect("utf-8"),
            "--include-keys",
        ],
    );
    assert!(
        run.stdout.starts_with("backed up 1 users and the keys to"),
        "{run:?}"
    );
    for f in [&plain, &with_keys] {
        assert_eq!(mode(f), 0o600, "{f:?} is owner-only");
    }

    let secrets = key_secrets(src.path());
    assert_eq!(secrets.len(), 3, "a signing key, server.key and data.key");
    let plain_text = std::fs::read_to_string(&plain).expect("backup");
    for s in &secrets {
        assert!(
            !plain_text.contains(s.as_str()),
            "no key material without --include-keys"
        );
    }
    let plain_lines = json_lines(&plain);
    assert_eq!(plain_lines[0]["version"], 1, "{}", plain_lines[0]);
    assert!(plain_lines.iter().all(|l| l["type"] != "keys"));
    let keyed = json_lines(&with_keys);
    assert_eq!(keyed[0]["version"], 2, "{}", keyed[0]);
    assert_eq!(keyed[1]["type"], "keys");

    // A running server cannot take another server's keys.
    let other = tempfile::tempdir().expect("temp dir");
    let other_server = ServerProcess::start(other.path(), &[]).await;
    let run = bp_auth(
        other.path(),
        &[
            "admin",
            "import",
            "--in",
            with_keys.to_str().expect("utf-8"),
        ],
    );
    assert!(!run.success, "{run:?}");
    assert!(run.stderr.contains("cannot change its keys"), "{run:?}");
    let run = bp_auth(other.path(), &["admin", "user", "show", &e]);
    assert!(!run.success, "nothing was imported: {run:?}");
    assert!(other_server.terminate().success());
    assert!(server.terminate().success());

    // Restored with its keys: the old access token, refresh token and API key all work.
    let dest = tempfile::tempdir().expect("temp dir");
    let run = bp_auth_ok(
        dest.path(),
        &[
            "admin",
            "import",
            "--in",
            with_keys.to_str().expect("utf-8"),
        ],
    );
    assert!(
        run.stdout.starts_with("imported 1 users and the keys from"),
        "{run:?}"
    );
    assert_eq!(key_files(dest.path()), key_files(src.path()));
    assert_eq!(mode(&dest.path().join("keys")), 0o700);
    let restored = ServerProcess::start(dest.path(), &[]).await;
    assert_eq!(restored.profile(&t.access).await["email"], e.as_str());
    let res = restored.get_with_api_key("/api/auth/me", &key).await;
    expect_status(res, 200, "the API key issued before the backup").await;
    let res = restored.refresh_raw(&t.refresh).await;
    expect_status(res, 200, "the refresh token issued before the backup").await;
    assert!(restored.terminate().success());

    // Restored without: the data is there, the old server's tokens are not valid here.
    let bare = tempfile::tempdir().expect("temp dir");
    bp_auth_ok(
        bare.path(),
        &["admin", "import", "--in", plain.to_str().expect("utf-8")],
    );
    let restored = ServerProcess::start(bare.path(), &[]).await;
    assert_eq!(restored.me(&t.access).await.status(), 401);
    full_login(&restored, &e).await;
    assert!(restored.terminate().success());
}

#[actix_web::test]
async fn a_data_dir_too_long_for_a_socket_still_serves_and_admin_commands_say_why_they_cannot() {
    let base = tempfile::tempdir().expect("temp dir");
    let dir = base.path().join("d".repeat(110));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log = base.path().join("server.log");
    let server = ServerProcess::start_logged(&dir, &[], &log).await;
    let (e, _) = server.new_user().await;
    let run = bp_auth(&dir, &["admin", "user", "show", &e]);
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("in use by a running bp-auth")
            && run.stderr.contains("admin socket does not answer"),
        "{run:?}"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("admin commands need a stopped server"),
        "{text}"
    );
    full_login(&server, &e).await;
    assert!(server.terminate().success());
    let run = bp_auth_ok(&dir, &["admin", "user", "show", &e]);
    assert!(run.stdout.contains(&e));
}
