//! The contract's "Abuse resistance" rules and the mismatches found from outside, each tried
//! the way an attacker or a careless client would.

use std::time::Duration;

use reqwest::{Client, Response};
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

// ---------------------------------------------------------------------------------------------
// One account, one count; every password check counts; second factors; client addresses.
// ---------------------------------------------------------------------------------------------

const WRONG: &str = "definitely not the password";

/// A login through a client of its own, optionally naming the client in `X-Forwarded-For`.
async fn login_from(
    server: &TestApp,
    username: &str,
    password: &str,
    xff: Option<&str>,
) -> Response {
    let mut req = Client::new()
        .post(server.url("/api/auth/token"))
        .form(&[("username", username), ("password", password)]);
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.expect("login")
}

async fn expect_429(res: Response, what: &str) {
    let wait = retry_after(res.headers());
    assert!((1..=900).contains(&wait), "{what}: Retry-After {wait}");
    expect_error(res, 429, "rate_limited").await;
}

/// The spellings an attacker tried: case and surrounding whitespace.
fn variants(email: &str) -> Vec<String> {
    let upper = email.to_uppercase();
    vec![
        format!(" {email}"),
        format!("{email}\t"),
        format!("\n{email}"),
        format!("  {upper}  "),
        upper.clone(),
        format!("{email} "),
        format!("\t{upper}"),
        format!("{email}\r\n"),
        format!(" {email} "),
        format!("{}{} ", email[..1].to_uppercase(), &email[1..]),
    ]
}

#[actix_web::test]
async fn every_spelling_of_an_account_shares_one_count() {
    let app = spawn_app().await;
    let victim = email();
    app.register(&victim).await;
    for (i, v) in variants(&victim).iter().enumerate() {
        let res = login_from(&app, v, WRONG, None).await;
        assert_eq!(res.status(), 401, "failure {} as {v:?}", i + 1);
    }
    // Over the limit, however it is spelt, the right password too.
    for v in [victim.clone(), format!(" {victim}"), victim.to_uppercase()] {
        expect_429(login_from(&app, &v, PASSWORD, None).await, &v).await;
    }
}

#[actix_web::test]
async fn unknown_emails_are_throttled_exactly_like_accounts() {
    let app = spawn_app().await;
    let known = email();
    app.register(&known).await;
    let ghost = email();
    for who in [&known, &ghost] {
        for (i, v) in variants(who).iter().enumerate() {
            let res = login_from(&app, v, WRONG, None).await;
            let body = expect_error(res, 401, "invalid_credentials").await;
            assert_eq!(body["detail"], "Incorrect email or password", "{i}");
        }
    }
    let a = login_from(&app, &known, WRONG, None).await;
    let b = login_from(&app, &ghost, WRONG, None).await;
    assert!(
        retry_after(a.headers()).abs_diff(retry_after(b.headers())) <= 2,
        "the same back-off for both"
    );
    let (a, b) = (json_of(a).await, json_of(b).await);
    assert_eq!(a, b, "a 429 does not tell which email is an account");
    assert_eq!(a["code"], "rate_limited");
}

#[actix_web::test]
async fn parallel_wrong_passwords_get_at_most_the_limit_of_401s() {
    // Limits off but the account's: 30 at once must not slip past a check that saw none of the
    // others. The address limit is raised so that only the account's counts.
    let app = spawn_app_with(|c| c.rate_limit.login_failures_per_ip = 1_000).await;
    for known in [true, false] {
        let who = email();
        if known {
            app.register(&who).await;
        }
        let tries = (0..30).map(|_| login_from(&app, &who, WRONG, None));
        let statuses: Vec<u16> = futures_util::future::join_all(tries)
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
        let failed = statuses.iter().filter(|&&s| s == 401).count();
        let throttled = statuses.iter().filter(|&&s| s == 429).count();
        assert!(
            failed <= 10,
            "known {known}: {failed} 401s of 30: {statuses:?}"
        );
        assert_eq!(failed + throttled, 30, "known {known}: {statuses:?}");
        // Keep going until the account's window is full: the 11th failure never comes.
        let mut more = 0;
        for _ in 0..30 {
            match login_from(&app, &who, WRONG, None).await.status().as_u16() {
                401 => more += 1,
                429 => {}
                s => panic!("known {known}: status {s}"),
            }
        }
        assert!(
            failed + more <= 10,
            "known {known}: {} failures",
            failed + more
        );
        if known {
            expect_429(
                login_from(&app, &who, PASSWORD, None).await,
                "right password",
            )
            .await;
        }
    }
}

async fn deactivate(app: &TestApp, token: &str, password: &str) -> Response {
    app.post_bearer(
        "/api/auth/deactivate",
        token,
        Some(&json!({ "password": password })),
    )
    .await
}

#[actix_web::test]
async fn wrong_passwords_on_deactivation_count_against_the_account() {
    let app = spawn_app().await;
    let (victim, tokens) = app.new_user().await;
    for i in 0..5 {
        let res = deactivate(&app, &tokens.access, WRONG).await;
        expect_error(res, 403, "invalid_credentials").await;
        let res = login_from(&app, &victim, WRONG, None).await;
        assert_eq!(res.status(), 401, "login failure {}", i + 1);
    }
    // Ten failures in all, five by each route: both are closed, the right password too.
    expect_429(login_from(&app, &victim, PASSWORD, None).await, "login").await;
    expect_429(
        deactivate(&app, &tokens.access, PASSWORD).await,
        "deactivate",
    )
    .await;
    assert_eq!(app.me(&tokens.access).await.status(), 200, "still active");
}

#[actix_web::test]
async fn one_account_cannot_fill_the_hashing_queue() {
    // Limits off, so only the cap on hashes in flight per account is in play; one hashing
    // thread and a short queue, so 80 checks in flight would shed everyone else with 503.
    let app = spawn_app_with(|c| {
        c.rate_limit.enabled = false;
        c.password.hash_threads = 1;
        c.password.max_queue = 8;
    })
    .await;
    let (_, attacker) = app.new_user().await;
    let other = email();
    app.register(&other).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..80 {
        let (app_url, token, stop) = (app.address.clone(), attacker.access.clone(), stop.clone());
        flood.push(actix_web::rt::spawn(async move {
            let client = Client::new();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client
                    .post(format!("{app_url}/api/auth/deactivate"))
                    .bearer_auth(&token)
                    .json(&json!({ "password": WRONG }))
                    .send()
                    .await
                    .expect("deactivate");
                seen.push(res.status().as_u16());
            }
            seen
        }));
    }
    // Let the flood reach the server before the other user logs in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut logins = Vec::new();
    for _ in 0..3 {
        logins.push(
            login_from(&app, &other, PASSWORD, None)
                .await
                .status()
                .as_u16(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = Vec::new();
    for task in flood {
        statuses.extend(task.await.expect("flood task"));
    }
    assert_eq!(logins, [200, 200, 200], "the other user logs in");
    let wrong = statuses.iter().filter(|&&s| s == 403).count();
    let capped = statuses.iter().filter(|&&s| s == 429).count();
    assert!(capped > 0, "checks past the cap answer 429");
    assert_eq!(
        wrong + capped,
        statuses.len(),
        "only 403 and 429: {statuses:?}"
    );
}

#[actix_web::test]
async fn wrong_second_factors_count_per_account_across_pending_tokens() {
    let app = spawn_app().await;
    let (victim, _, mut auth, recovery) = crate::mfa::enrolled_user(&app).await;
    // Two pending tokens at a time, five wrong answers each: ten wrong in all.
    for round in 0..2 {
        let a = crate::mfa::login_pending(&app, &victim).await;
        let b = crate::mfa::login_pending(&app, &victim).await;
        for i in 0..5 {
            let token = if i % 2 == 0 { &a } else { &b };
            let wrong = auth.wrong_code(round * 10 + i);
            let res = crate::mfa::challenge(&app, token, &json!({ "code": wrong })).await;
            assert_eq!(res.status(), 401, "round {round} wrong answer {i}");
        }
    }
    let fresh = crate::mfa::login_pending(&app, &victim).await;
    let code = auth.fresh_code().await;
    let res = crate::mfa::challenge(&app, &fresh, &json!({ "code": code })).await;
    expect_429(res, "the right code").await;
    let res = crate::mfa::challenge(&app, &fresh, &json!({ "recovery_code": recovery[0] })).await;
    expect_429(res, "a recovery code").await;
}

#[actix_web::test]
async fn wrong_codes_on_totp_verify_and_disable_are_limited() {
    let app = spawn_app().await;
    // Enrolment: ten wrong codes, then even the right one is refused.
    let (e, tokens) = app.new_user().await;
    let secret = crate::mfa::setup(&app, &e, &tokens.access).await;
    let mut auth = Authenticator::new(&secret);
    for i in 0..10 {
        let body = json!({ "code": auth.wrong_code(i) });
        let res = app
            .post_bearer(crate::mfa::VERIFY, &tokens.access, Some(&body))
            .await;
        expect_error(res, 400, "invalid_code").await;
    }
    let body = json!({ "code": auth.fresh_code().await });
    expect_429(
        app.post_bearer(crate::mfa::VERIFY, &tokens.access, Some(&body))
            .await,
        "verify",
    )
    .await;

    // Disabling: the same.
    let (_, tokens, mut auth, _) = crate::mfa::enrolled_user(&app).await;
    for i in 0..10 {
        let body = json!({ "code": auth.wrong_code(i) });
        let res = app
            .post_bearer(crate::mfa::DISABLE, &tokens.access, Some(&body))
            .await;
        expect_error(res, 400, "invalid_code").await;
    }
    let body = json!({ "code": auth.fresh_code().await });
    expect_429(
        app.post_bearer(crate::mfa::DISABLE, &tokens.access, Some(&body))
            .await,
        "disable",
    )
    .await;
}

#[actix_web::test]
async fn ipv6_clients_count_by_their_64() {
    let app = spawn_app_with(|c| {
        c.rate_limit.login_failures_per_ip = 3;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for ip in [
        "2001:db8:5:6::1",
        "2001:db8:5:6::2",
        "2001:db8:5:6:ffff:1:2:3",
    ] {
        let res = login_from(&app, &email(), WRONG, Some(ip)).await;
        assert_eq!(res.status(), 401, "{ip}");
    }
    let same_64 = login_from(&app, &email(), WRONG, Some("2001:db8:5:6:abcd::9")).await;
    expect_429(same_64, "another address of the same /64").await;
    let next_64 = login_from(&app, &email(), WRONG, Some("2001:db8:5:7::1")).await;
    assert_eq!(next_64.status(), 401, "the next /64 is another client");
}

#[actix_web::test]
async fn only_json_whitespace_counts_as_an_empty_body() {
    // Found by schemathesis: a form feed is whitespace to Rust, not to JSON.
    let app = spawn_app().await;
    for body in ["\u{c}", "\u{b}", "\u{a0}"] {
        let res = Client::new()
            .post(app.url("/api/auth/logout"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_issues(res, &[("json_invalid", &["body"])]).await;
    }
    let res = Client::new()
        .post(app.url("/api/auth/logout"))
        .header("content-type", "application/json")
        .body(" \t\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "JSON whitespace alone is no body");
}
