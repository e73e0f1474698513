//! Hostile input: oversized passwords refused before any hash, credentials in the URL ignored,
//! forged JWT headers and signatures refused, header floods, slow clients and garbage on the
//! socket cut off without a server error, pathological JSON answered 422, the cross-site
//! defences (Origin check, CORS, nosniff, HSTS), and the login and registration throttles.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bp_auth::domain::tokens::KeyPair;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::header::HeaderMap;
use reqwest::{Client, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const MB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Local tools: raw sockets and metrics.
// ---------------------------------------------------------------------------------------------

/// What became of a raw exchange.
struct Raw {
    /// Everything the server sent before closing or before the wait ran out.
    response: Vec<u8>,
    /// The server closed the connection (read returned 0 or an error) within the wait.
    closed: bool,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.response).into_owned()
    }

    /// The status of the first response, if any arrived.
    fn status(&self) -> Option<u16> {
        let t = self.text();
        t.starts_with("HTTP/")
            .then(|| t.split_whitespace().nth(1).and_then(|s| s.parse().ok()))
            .flatten()
    }
}

/// Writes `bytes` (tolerating a server that closes early), then reads until the server closes
/// or `wait` has passed.
async fn raw_exchange(port: u16, bytes: &[u8], wait: Duration) -> Raw {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    for piece in bytes.chunks(8192) {
        if stream.write_all(piece).await.is_err() {
            break;
        }
    }
    read_until_closed(&mut stream, wait).await
}

async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Raw {
    let deadline = tokio::time::Instant::now() + wait;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Raw {
                    response,
                    closed: true,
                }
            }
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Raw {
                    response,
                    closed: false,
                }
            }
        }
    }
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// The value of an unlabelled sample in Prometheus text (0 if absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn metrics_of(base: &str) -> String {
    let res = Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    res.text().await.expect("metrics text")
}

async fn assert_healthy(base: &str) {
    let res = Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(res.status(), 200, "/healthz still answers");
}

/// 429 `rate_limited` with a `Retry-After` of at least one second and at most the window.
async fn expect_rate_limited(res: Response, window: u64) {
    let wait = retry_after(res.headers());
    assert!((1..=window).contains(&wait), "Retry-After {wait}");
    expect_error(res, 429, "rate_limited").await;
}

fn login_form_with_password(email: &str, password_len: usize) -> Vec<u8> {
    let mut body = format!("username={}&password=", email.replace('@', "%40")).into_bytes();
    body.resize(body.len() + password_len, b'a');
    body
}

fn register_json_with_password(password_len: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"email": email(), "password": "p".repeat(password_len)}))
        .expect("json")
}

// ---------------------------------------------------------------------------------------------
// Oversized passwords: refused before any hash.
// ---------------------------------------------------------------------------------------------

/// Against its own process, so that the process-wide hashing metrics count only this test:
/// 1 MB passwords (declared and streamed, register and login) are 413 and a 10,000-character
/// one that fits the body limit is refused too, all without one hash queued or computed.
#[actix_web::test]
async fn a_one_megabyte_password_is_refused_without_hashing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let port = port_of(&server.address);
    let base = server.address.clone();
    let before = metrics_of(&base).await;
    let hashes_before = metric(&before, "bp_password_hash_wait_seconds_count");

    // Declared length.
    let res = server
        .post_body(
            "/api/auth/register",
            "application/json",
            register_json_with_password(MB),
        )
        .await;
    expect_error(res, 413, "payload_too_large").await;
    let res = server
        .post_body(
            "/api/auth/token",
            "application/x-www-form-urlencoded",
            login_form_with_password("someone@example.com", MB),
        )
        .await;
    expect_error(res, 413, "payload_too_large").await;

    // Streamed (chunked, no declared length).
    let chunks: Vec<Vec<u8>> = register_json_with_password(MB)
        .chunks(64 * 1024)
        .map(<[u8]>::to_vec)
        .collect();
    let raw = chunked_post(port, "/api/auth/register", "application/json", &chunks).await;
    assert_eq!(raw_status(&raw), 413, "streamed register: {raw:.300}");
    let chunks: Vec<Vec<u8>> = login_form_with_password("someone@example.com", MB)
        .chunks(64 * 1024)
        .map(<[u8]>::to_vec)
        .collect();
    let raw = chunked_post(
        port,
        "/api/auth/token",
        "application/x-www-form-urlencoded",
        &chunks,
    )
    .await;
    assert_eq!(raw_status(&raw), 413, "streamed login: {raw:.300}");

    // Long, but inside the body limit: still never hashed.
    let res = server
        .register_raw(&json!({"email": email(), "password": "p".repeat(10_000)}))
        .await;
    expect_issues(res, &[("string_too_long", &["body", "password"])]).await;
    let res = server
        .login_raw("someone@example.com", &"p".repeat(10_000))
        .await;
    expect_error(res, 401, "invalid_credentials").await;

    let after = metrics_of(&base).await;
    assert_eq!(
        metric(&after, "bp_password_hash_wait_seconds_count"),
        hashes_before,
        "no password was hashed"
    );
    assert_eq!(metric(&after, "bp_password_hash_queue_depth"), 0.0);

    // The metric does count hashes: one ordinary login moves it by one.
    let res = server.login_raw("someone@example.com", PASSWORD).await;
    assert_eq!(res.status(), 401);
    let control = metrics_of(&base).await;
    assert_eq!(
        metric(&control, "bp_password_hash_wait_seconds_count"),
        hashes_before + 1.0,
        "the control login is counted"
    );
    assert_healthy(&base).await;
}

#[actix_web::test]
async fn a_one_megabyte_password_in_the_login_form_is_413() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = app
        .post_body(
            "/api/auth/token",
            "application/x-www-form-urlencoded",
            login_form_with_password(&e, MB),
        )
        .await;
    expect_error(res, 413, "payload_too_large").await;
    // The account is not counted as failing, and logs in normally.
    app.login(&e).await;
}

// ---------------------------------------------------------------------------------------------
// Credentials in the URL.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn tokens_in_the_query_string_do_not_authenticate() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let key = app.new_api_key(&t.access).await;
    // The credentials themselves are good.
    assert_eq!(app.me(&t.access).await.status(), 200);
    let with_key = app.get_with_api_key("/api/auth/me", &key).await;
    assert_eq!(with_key.status(), 200);

    let client = Client::new(); // no cookie jar
    for (param, value) in [
        ("access_token", t.access.as_str()),
        ("token", t.access.as_str()),
        ("bp_token", t.access.as_str()),
        ("jwt", t.access.as_str()),
        ("authorization", &format!("Bearer {}", t.access)),
        ("api_key", key.as_str()),
        ("x-api-key", key.as_str()),
        ("apikey", key.as_str()),
        ("access_token", key.as_str()),
    ] {
        for path in ["/api/auth/me", "/api/auth/me/entitlements"] {
            let res = client
                .get(app.url(path))
                .query(&[(param, value)])
                .send()
                .await
                .expect("me");
            let body = expect_error(res, 401, "not_authenticated").await;
            assert_eq!(body["code"], "not_authenticated", "{path}?{param}=");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forged JWTs.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_jwt_with_an_embedded_jwk_is_refused() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let server = forging_keyring(&app);
    let server_kid = server.active_kid().to_string();
    let claims = jwt_claims(&t.access);
    let attacker = KeyPair::from_seed(&[7; 32]);
    let jwk = attacker.jwk();
    let cases = [
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid, "jwk": jwk}),
            "the attacker's kid and key",
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": server_kid, "jwk": jwk}),
            "the server's kid, the attacker's embedded key",
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": jwk}),
            "an embedded key and no kid",
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid,
                   "jku": "https://evil.example/jwks.json"}),
            "a jku",
        ),
    ];
    for (header, what) in cases {
        assert_invalid_token(&app, &sign_with(&attacker, &header, &claims), what).await;
    }
    assert_eq!(app.me(&t.access).await.status(), 200);
}

#[actix_web::test]
async fn a_jwt_with_a_path_traversal_kid_is_refused() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let pair = signing_key(app.data_dir.path());
    let claims = jwt_claims(&t.access);
    for kid in [
        "../x".to_string(),
        "../../../../../../etc/passwd".to_string(),
        format!("../{}", pair.kid),
        format!("ed25519-{}.json", pair.kid),
        format!("./{}", pair.kid),
        "/dev/null".to_string(),
        String::new(),
    ] {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        // Signed with the server's real key: only the kid is wrong.
        assert_invalid_token(&app, &sign_with(&pair, &header, &claims), &kid).await;
    }
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": pair.kid});
    assert_eq!(
        app.me(&sign_with(&pair, &header, &claims)).await.status(),
        200,
        "the same token with the real kid is good"
    );
}

#[actix_web::test]
async fn a_jwt_with_one_bit_of_its_signature_flipped_is_refused() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let (head, sig) = t.access.rsplit_once('.').expect("three parts");
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
    assert_eq!(sig.len(), 64);
    for (byte, bit) in [
        (0, 0),
        (0, 7),
        (13, 3),
        (31, 7),
        (32, 0),
        (47, 5),
        (63, 1),
        (63, 6),
    ] {
        let mut flipped = sig.clone();
        flipped[byte] ^= 1 << bit;
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&flipped));
        assert_invalid_token(&app, &forged, &format!("bit {bit} of byte {byte}")).await;
    }
    // Flipping a bit of the signing input instead.
    let mut bytes = t.access.clone().into_bytes();
    let mid = head.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).expect("ascii");
    assert_invalid_token(&app, &forged, "signing input changed").await;
    assert_eq!(app.me(&t.access).await.status(), 200, "the genuine token");
}

// ---------------------------------------------------------------------------------------------
// Header floods, slow clients, garbage.
// ---------------------------------------------------------------------------------------------

/// A refusal at the protocol level: a 4xx, or the connection closed without an answer.
fn assert_refused(raw: &Raw, what: &str) {
    match raw.status() {
        Some(s) => assert!(
            (400..500).contains(&s),
            "{what}: refused with a 4xx, got {s}: {:.300}",
            raw.text()
        ),
        None => assert!(
            raw.closed,
            "{what}: no answer and the connection still open: {:.300}",
            raw.text()
        ),
    }
}

#[actix_web::test]
async fn a_flood_of_200_headers_is_refused() {
    let app = spawn_app().await;
    let mut req = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", app.port);
    for i in 0..200 {
        req.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let raw = raw_exchange(app.port, req.as_bytes(), Duration::from_secs(10)).await;
    assert_refused(&raw, "200 headers");
    if let Some(s) = raw.status() {
        assert_eq!(s, 431, "431 Request Header Fields Too Large");
    }
    assert_healthy(&app.address).await;
}

#[actix_web::test]
async fn one_64_kib_header_is_refused() {
    let app = spawn_app().await;
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        app.port,
        "a".repeat(64 * 1024)
    );
    let raw = raw_exchange(app.port, req.as_bytes(), Duration::from_secs(10)).await;
    assert_refused(&raw, "one 64 KiB header");
    assert_healthy(&app.address).await;
}

#[actix_web::test]
async fn headers_larger_than_the_read_buffer_are_refused() {
    let app = spawn_app().await;
    let mut req = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", app.port);
    for i in 0..40 {
        req.push_str(&format!("X-Big-{i}: {}\r\n", "b".repeat(8 * 1024)));
    }
    req.push_str("Connection: close\r\n\r\n");
    let raw = raw_exchange(app.port, req.as_bytes(), Duration::from_secs(10)).await;
    assert_refused(&raw, "320 KiB of headers");
    assert_healthy(&app.address).await;
}

/// Trickles `first` then one byte of `rest` a second; returns how long the server took to
/// answer or close (None if it did neither within `limit`), and what it sent.
async fn trickle(port: u16, first: &[u8], rest: &[u8], limit: Duration) -> (Option<Duration>, Raw) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(first).await.expect("first bytes");
    let mut rest = rest.iter();
    while start.elapsed() < limit {
        let raw = read_until_closed(&mut stream, Duration::from_secs(1)).await;
        if raw.closed || !raw.response.is_empty() {
            return (Some(start.elapsed()), raw);
        }
        if let Some(b) = rest.next() {
            if stream.write_all(&[*b]).await.is_err() {
                return (
                    Some(start.elapsed()),
                    Raw {
                        response: Vec::new(),
                        closed: true,
                    },
                );
            }
        }
    }
    (
        None,
        Raw {
            response: Vec::new(),
            closed: false,
        },
    )
}

#[actix_web::test]
async fn a_slow_body_is_cut_off_by_the_client_request_timeout() {
    let app = spawn_app().await;
    let head = format!(
        "POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"em",
        app.port
    );
    let (took, raw) = trickle(
        app.port,
        head.as_bytes(),
        b"ail\": \"slow@example.com\"",
        Duration::from_secs(16),
    )
    .await;
    println!("slow body: cut off after {took:?}: {:.200}", raw.text());
    let took = took.unwrap_or_else(|| {
        panic!("a body trickled a byte a second was not cut off within 16 s (client request timeout 10 s)")
    });
    assert!(took <= Duration::from_secs(15), "cut off after {took:?}");
    if let Some(s) = raw.status() {
        assert!((400..500).contains(&s) && s != 422, "cut off with {s}");
    }
    assert_healthy(&app.address).await;
}

#[actix_web::test]
async fn slow_headers_are_cut_off_by_the_client_request_timeout() {
    let app = spawn_app().await;
    let head = format!(
        "POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        app.port
    );
    let rest: Vec<u8> = (0..40)
        .flat_map(|i| format!("X-{i}: y\r\n").into_bytes())
        .collect();
    let (took, raw) = trickle(app.port, head.as_bytes(), &rest, Duration::from_secs(16)).await;
    println!("slow headers: cut off after {took:?}: {:.200}", raw.text());
    let took = took.expect("trickled headers are cut off within 16 s");
    assert!(took <= Duration::from_secs(15), "cut off after {took:?}");
    if let Some(s) = raw.status() {
        assert_eq!(s, 408, "408 Request Timeout");
    }
    assert_healthy(&app.address).await;
}

/// Against a real process, so a crash would show as the process exiting.
#[actix_web::test]
async fn garbage_on_the_socket_does_not_crash_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path(), &[]).await;
    let port = port_of(&server.address);
    let seed: u64 = rand::thread_rng().gen();
    println!("garbage seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for _ in 0..24 {
        let mut b = vec![0u8; rng.gen_range(1..32 * 1024)];
        rng.fill_bytes(&mut b);
        payloads.push(b);
    }
    for _ in 0..8 {
        // A plausible start, then noise.
        let mut b = b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\n".to_vec();
        let mut noise = vec![0u8; rng.gen_range(1..4096)];
        rng.fill_bytes(&mut noise);
        b.extend(noise);
        payloads.push(b);
    }
    for fixed in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /api/auth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzzzz\r\n",
        b"POST /api/auth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /api/auth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"GET /\x00\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\xff\xfe: \xff\r\n\r\n",
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n",
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nCookie: bp_token=\xff\xfe; bp_token=\r\nConnection: close\r\n\r\n",
        b"POST /api/auth/api-key/rotate HTTP/1.1\r\nHost: x\r\nOrigin: \xff\xfe\r\nCookie: bp_token=a.b.c\r\nConnection: close\r\n\r\n",
    ] {
        payloads.push(fixed.to_vec());
    }
    let answers = futures_util::future::join_all(
        payloads
            .iter()
            .map(|p| raw_exchange(port, p, Duration::from_secs(3))),
    )
    .await;
    for (p, raw) in payloads.iter().zip(&answers) {
        if let Some(s) = raw.status() {
            assert!(
                s < 500,
                "a server error for garbage {:?}: {:.300}",
                String::from_utf8_lossy(&p[..p.len().min(80)]),
                raw.text()
            );
        }
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the server process is still running"
    );
    assert_healthy(&server.address).await;
    let res = server
        .register_raw(&json!({"email": email(), "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 201, "the server still works");
}

// ---------------------------------------------------------------------------------------------
// Pathological JSON.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn deeply_nested_json_is_422_not_500() {
    let app = spawn_app().await;
    for path in [
        "/api/auth/register",
        "/api/auth/refresh",
        "/api/auth/logout",
    ] {
        for body in [
            "[".repeat(16_000),
            format!("{}{}", "[".repeat(8_000), "]".repeat(8_000)),
            "{\"a\":".repeat(3_000),
            format!(
                "{{\"email\": {}1{}, \"password\": \"x\"}}",
                "[".repeat(5_000),
                "]".repeat(5_000)
            ),
            format!("{{\"refresh_token\": {}}}", "{\"a\":".repeat(2_000)),
        ] {
            assert!(body.len() <= 16_384);
            let res = app
                .post_body(path, "application/json", body.into_bytes())
                .await;
            let detail = expect_validation(res).await;
            assert!(!detail.is_empty(), "{path}");
        }
        // Past the body limit, the size answers first: 413, still not a 500.
        let res = app
            .post_body(path, "application/json", "[".repeat(100_000).into_bytes())
            .await;
        expect_error(res, 413, "payload_too_large").await;
    }
    assert_healthy(&app.address).await;
}

#[actix_web::test]
async fn invalid_utf8_in_json_strings_is_422() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let mut register = b"{\"email\": \"ab".to_vec();
    register.extend_from_slice(b"\xff\xfe@example.com\", \"password\": \"");
    register.extend_from_slice(PASSWORD.as_bytes());
    register.extend_from_slice(b"\"}");
    let res = app
        .post_body("/api/auth/register", "application/json", register)
        .await;
    expect_issues(res, &[("json_invalid", &["body"])]).await;

    let refresh = [&b"{\"refresh_token\": \"bprt_\xc3\x28\"}"[..]].concat();
    let res = app
        .post_body("/api/auth/refresh", "application/json", refresh)
        .await;
    expect_issues(res, &[("json_invalid", &["body"])]).await;

    // An overlong encoding and a lone surrogate's bytes.
    for bad in [&b"\xc0\xaf"[..], b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"] {
        let body = [&b"{\"full_name\": \"x"[..], bad, b"\"}"].concat();
        let res = Client::new()
            .patch(app.url("/api/auth/me"))
            .bearer_auth(&t.access)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("patch");
        expect_issues(res, &[("json_invalid", &["body"])]).await;
    }
    // An escaped lone surrogate is valid JSON text but not a valid string.
    let res = app
        .post_body(
            "/api/auth/register",
            "application/json",
            br#"{"email": "a\ud800@example.com", "password": "correct horse battery staple"}"#
                .to_vec(),
        )
        .await;
    assert_eq!(res.status(), 422);

    // A form with bytes that are not UTF-8: refused as credentials or as input, never a 500.
    let res = app
        .post_body(
            "/api/auth/token",
            "application/x-www-form-urlencoded",
            b"username=a%FF%FE%40example.com&password=\xff\xfe\xfd".to_vec(),
        )
        .await;
    let status = res.status().as_u16();
    assert!(status == 401 || status == 422, "got {status}");
    assert_healthy(&app.address).await;
}

// ---------------------------------------------------------------------------------------------
// Cross-site defences.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_cookie_authenticated_change_from_another_origin_is_403() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, t) = app.cookie_login(&e).await;
    let rotate = |origin: Option<&str>| {
        let mut req = jar.post(app.url("/api/auth/api-key/rotate"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for evil in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "http://127.0.0.1:1",
        "https://127.0.0.1",
    ] {
        let res = rotate(Some(evil)).await.expect("rotate");
        let body = expect_error(res, 403, "origin_not_allowed").await;
        assert_eq!(body["code"], "origin_not_allowed", "{evil}");
    }
    let own = format!("http://127.0.0.1:{}", app.port);
    let res = rotate(Some(&own)).await.expect("rotate");
    assert_eq!(res.status(), 200, "the server's own origin");
    assert_common_headers(res.headers());
    let res = rotate(None).await.expect("rotate");
    assert_eq!(res.status(), 200, "no Origin at all");
    // A PATCH is a change too.
    let res = jar
        .patch(app.url("/api/auth/me"))
        .header("origin", "https://evil.example")
        .json(&json!({"full_name": "Mallory"}))
        .send()
        .await
        .expect("patch");
    expect_error(res, 403, "origin_not_allowed").await;
    // Reads are not changes.
    let res = jar
        .get(app.url("/api/auth/me"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
    // A bearer token is not sent by browsers on their own: no Origin check.
    let res = Client::new()
        .post(app.url("/api/auth/api-key/rotate"))
        .bearer_auth(&t.access)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status(), 200);
    // Logout still clears the cookie from anywhere.
    let res = jar
        .post(app.url("/api/auth/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    assert_clears_cookie(res.headers());
}

fn access_control_headers(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[actix_web::test]
async fn cors_answers_only_the_configured_origins() {
    const LISTED: &str = "https://app.example.com";
    let app = spawn_app_with(|c| c.cors.allowed_origins = vec![LISTED.into()]).await;
    let e = email();
    app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let get = |origin: &'static str| {
        Client::new()
            .get(app.url("/healthz"))
            .header("origin", origin)
            .send()
    };
    let res = get(LISTED).await.expect("healthz");
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], LISTED);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_common_headers(h);

    for other in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let res = get(other).await.expect("healthz");
        assert_eq!(res.status(), 200);
        assert_eq!(
            access_control_headers(res.headers()),
            Vec::<String>::new(),
            "{other}"
        );
    }

    // Preflight from the listed origin.
    let res = Client::new()
        .request(
            reqwest::Method::OPTIONS,
            app.url("/api/auth/api-key/rotate"),
        )
        .header("origin", LISTED)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], LISTED);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("content-type") && allowed.contains("authorization"),
        "{allowed}"
    );
    assert_common_headers(h);

    // Preflight from another origin: no CORS headers, and never a server error.
    let res = Client::new()
        .request(
            reqwest::Method::OPTIONS,
            app.url("/api/auth/api-key/rotate"),
        )
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(res.status().as_u16() < 500);
    assert_eq!(access_control_headers(res.headers()), Vec::<String>::new());

    // The listed origin passes the cookie Origin check, and its answers carry CORS headers.
    let res = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .header("origin", LISTED)
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], LISTED);
    let res = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("rotate");
    assert_eq!(access_control_headers(res.headers()), Vec::<String>::new());
    expect_error(res, 403, "origin_not_allowed").await;
}

#[actix_web::test]
async fn every_answer_carries_nosniff_and_hsts_only_when_configured() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let c = Client::new();
    let responses = vec![
        c.get(app.url("/healthz")).send().await,
        c.get(app.url("/readyz")).send().await,
        c.get(app.url("/metrics")).send().await,
        c.get(app.url("/openapi.json")).send().await,
        c.get(app.url("/.well-known/jwks.json")).send().await,
        c.get(app.url("/no/such/path")).send().await,
        c.delete(app.url("/api/auth/token")).send().await,
        c.get(app.url("/api/auth/me")).send().await,
        c.get(app.url("/api/auth/me"))
            .bearer_auth(&t.access)
            .send()
            .await,
        c.get(app.url("/api/auth/me"))
            .bearer_auth("garbage")
            .send()
            .await,
        c.post(app.url("/api/auth/register"))
            .body("{")
            .header("content-type", "application/json")
            .send()
            .await,
        c.post(app.url("/api/auth/register"))
            .body(vec![b'x'; 20_000])
            .send()
            .await,
        c.post(app.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": t.refresh}))
            .send()
            .await,
        c.post(app.url("/api/auth/logout")).send().await,
        c.request(reqwest::Method::OPTIONS, app.url("/api/auth/token"))
            .send()
            .await,
    ];
    for r in responses {
        let r = r.expect("answer");
        let what = format!("{} {}", r.status(), r.url().path());
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
        assert!(
            r.headers().get("strict-transport-security").is_none(),
            "{what}: no HSTS by default"
        );
    }

    let hsts = spawn_app_with(|c| c.server.hsts = true).await;
    for path in ["/healthz", "/no/such/path", "/api/auth/me"] {
        let r = c.get(hsts.url(path)).send().await.expect("answer");
        let v = r
            .headers()
            .get("strict-transport-security")
            .unwrap_or_else(|| panic!("HSTS on {path}"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(v.contains("max-age="), "{v}");
        let age: u64 = v
            .split(';')
            .find_map(|p| p.trim().strip_prefix("max-age="))
            .and_then(|a| a.parse().ok())
            .expect("numeric max-age");
        assert!(age > 0);
        assert_common_headers(r.headers());
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling.
// ---------------------------------------------------------------------------------------------

async fn login_as(app: &TestApp, email: &str, password: &str, xff: Option<&str>) -> Response {
    let mut req = Client::new()
        .post(app.url("/api/auth/token"))
        .form(&[("username", email), ("password", password)]);
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.expect("login")
}

const WRONG: &str = "definitely not the password";

#[actix_web::test]
async fn ten_failures_for_one_account_back_off_with_429() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    for i in 0..10 {
        let res = login_as(&app, &e, WRONG, None).await;
        assert_eq!(res.status(), 401, "failure {}", i + 1);
    }
    // The 11th attempt, even with the right password.
    let res = login_as(&app, &e, PASSWORD, None).await;
    expect_rate_limited(res, 900).await;
    let res = login_as(&app, &e.to_uppercase(), PASSWORD, None).await;
    expect_rate_limited(res, 900).await;
    // Other accounts are unaffected.
    let other = email();
    app.register(&other).await;
    app.login(&other).await;
}

#[actix_web::test]
async fn a_success_before_the_limit_resets_the_count() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    for _ in 0..9 {
        assert_eq!(login_as(&app, &e, WRONG, None).await.status(), 401);
    }
    app.login(&e).await;
    for _ in 0..9 {
        assert_eq!(login_as(&app, &e, WRONG, None).await.status(), 401);
    }
    app.login(&e).await;
    // From zero again: ten more failures are needed before the back-off.
    for _ in 0..10 {
        assert_eq!(login_as(&app, &e, WRONG, None).await.status(), 401);
    }
    expect_rate_limited(login_as(&app, &e, PASSWORD, None).await, 900).await;
}

#[actix_web::test]
async fn failures_from_one_address_back_off_across_accounts() {
    let app = spawn_app_with(|c| c.rate_limit.login_failures_per_ip = 4).await;
    let e = email();
    app.register(&e).await;
    for _ in 0..4 {
        let res = login_as(&app, &email(), WRONG, None).await;
        assert_eq!(res.status(), 401);
    }
    // A different account, the right password: the address is backing off.
    expect_rate_limited(login_as(&app, &e, PASSWORD, None).await, 900).await;
}

#[actix_web::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let trusted = spawn_app_with(|c| {
        c.rate_limit.login_failures_per_ip = 3;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let e = email();
    trusted.register(&e).await;
    for _ in 0..3 {
        let res = login_as(&trusted, &email(), WRONG, Some("203.0.113.7")).await;
        assert_eq!(res.status(), 401);
    }
    expect_rate_limited(
        login_as(&trusted, &e, PASSWORD, Some("203.0.113.7")).await,
        900,
    )
    .await;
    // The right-most untrusted entry names the client.
    expect_rate_limited(
        login_as(
            &trusted,
            &e,
            PASSWORD,
            Some("198.51.100.1, 203.0.113.7, 127.0.0.1"),
        )
        .await,
        900,
    )
    .await;
    // Other clients behind the same proxy are counted separately.
    assert_eq!(
        login_as(&trusted, &e, PASSWORD, Some("203.0.113.8"))
            .await
            .status(),
        200
    );
    assert_eq!(
        login_as(&trusted, &e, PASSWORD, Some("203.0.113.7, 203.0.113.9"))
            .await
            .status(),
        200
    );
    assert_eq!(login_as(&trusted, &e, PASSWORD, None).await.status(), 200);

    // Without a trusted proxy the header is ignored: every attempt is the TCP peer's.
    let direct = spawn_app_with(|c| c.rate_limit.login_failures_per_ip = 3).await;
    let e = email();
    direct.register(&e).await;
    for i in 0..3 {
        let xff = format!("203.0.113.{}", 10 + i);
        let res = login_as(&direct, &email(), WRONG, Some(&xff)).await;
        assert_eq!(res.status(), 401);
    }
    expect_rate_limited(
        login_as(&direct, &e, PASSWORD, Some("198.51.100.99")).await,
        900,
    )
    .await;
    expect_rate_limited(login_as(&direct, &e, PASSWORD, None).await, 900).await;
}

#[actix_web::test]
async fn throttling_off_never_answers_429() {
    let app = spawn_app_with(|c| c.rate_limit.enabled = false).await;
    let e = email();
    app.register(&e).await;
    for i in 0..20 {
        let res = login_as(&app, &e, WRONG, None).await;
        assert_eq!(res.status(), 401, "failure {}", i + 1);
    }
    app.login(&e).await;
    for _ in 0..25 {
        app.register(&email()).await;
    }
}

#[actix_web::test]
async fn registrations_per_address_are_limited() {
    let app = spawn_app_with(|c| c.rate_limit.registrations_per_ip = 3).await;
    for _ in 0..3 {
        app.register(&email()).await;
    }
    let e = email();
    let res = app
        .register_raw(&json!({"email": e, "password": PASSWORD}))
        .await;
    expect_rate_limited(res, 900).await;
    // Not registered.
    assert_eq!(app.login_raw(&e, PASSWORD).await.status(), 401);
}
