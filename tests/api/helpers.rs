//! The test harness: the real server on port 0 with a temporary data dir, driven over HTTP.
//!
//! `spawn_app` runs the server in this process (fast, and the test can reach the data dir's
//! keys to forge tokens); `ServerProcess` runs the real binary, for restarts and SIGKILL.
//! Logs are printed only when `TEST_LOG` is set.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use bp_auth::config::Config;
use bp_auth::startup::Application;
use reqwest::header::HeaderMap;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

static TRACING: Once = Once::new();

fn init_logs() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            bp_auth::telemetry::init(&Default::default());
        }
    });
}

/// The configuration every test starts from: port 0, a fresh data dir, real hashing
/// parameters, and the cookie without `Secure` so that the client's cookie jar sends it over
/// plain HTTP (one test checks the default `Secure`).
pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::default_with_plans();
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = data_dir.to_path_buf();
    c.server.workers = 2;
    c.cookie.secure = false;
    c
}

pub struct TestApp {
    pub address: String,
    #[allow(dead_code)]
    pub port: u16,
    pub config: Config,
    pub client: Client,
    pub data_dir: TempDir,
    handle: actix_web::dev::ServerHandle,
}

/// Starts the server in-process with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server in-process after `tweak` has adjusted the configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(data_dir.path());
    tweak(&mut config);
    let app = Application::build(config.clone()).expect("server builds");
    let port = app.port();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        config,
        client: client(),
        data_dir,
        handle,
    }
}

/// A client with a cookie jar and no redirects.
pub fn client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A fresh, unique email.
pub fn email() -> String {
    format!("user-{}@example.com", uuid::Uuid::now_v7().simple())
}

pub async fn json_of(res: Response) -> Value {
    let text = res.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

/// Tokens as a login or refresh returns them.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_json(v: &Value) -> Self {
        Self {
            access: v["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: v["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
        }
    }
}

/// What every response must carry.
pub fn assert_common_headers(headers: &HeaderMap) {
    assert_eq!(
        headers
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff")
    );
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn register_raw(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/api/auth/register"))
            .json(body)
            .send()
            .await
            .expect("register")
    }

    /// Registers `email` with [`PASSWORD`]; panics unless 201.
    pub async fn register(&self, email: &str) -> Value {
        let res = self
            .register_raw(&json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 201, "register {email}");
        json_of(res).await
    }

    pub async fn login_raw(&self, email: &str, password: &str) -> Response {
        self.client
            .post(self.url("/api/auth/token"))
            .form(&[("username", email), ("password", password)])
            .send()
            .await
            .expect("login")
    }

    /// Logs in; panics unless 200.
    pub async fn login(&self, email: &str) -> Tokens {
        let res = self.login_raw(email, PASSWORD).await;
        assert_eq!(res.status(), 200, "login {email}");
        Tokens::from_json(&json_of(res).await)
    }

    /// Registers a new user and logs in.
    pub async fn new_user(&self) -> (String, Tokens) {
        let e = email();
        self.register(&e).await;
        let t = self.login(&e).await;
        (e, t)
    }

    pub async fn refresh_raw(&self, refresh: &str) -> Response {
        self.client
            .post(self.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .expect("refresh")
    }

    /// `GET path` with a bearer token, through a client without the cookie jar.
    pub async fn get_bearer(&self, path: &str, token: &str) -> Response {
        Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
    }

    pub async fn me(&self, token: &str) -> Response {
        self.get_bearer("/api/auth/me", token).await
    }

    /// The keyring the server signs with, read from its data dir, to forge test tokens.
    pub fn keyring(&self) -> bp_auth::domain::tokens::Keyring {
        bp_auth::startup::load_keyring(&self.config).expect("keyring")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the data dir is removed when `data_dir` drops.
        drop(self.handle.stop(false));
    }
}

/// The real binary, started on a data dir that outlives it (for restarts and SIGKILL).
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    /// Starts `bp-auth serve` on `data_dir` with extra environment and waits for `/readyz`.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let stderr = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::spawn(data_dir, env, Stdio::null(), stderr).await
    }

    async fn spawn(data_dir: &Path, env: &[(&str, &str)], stdout: Stdio, stderr: Stdio) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bp-auth"));
        cmd.arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("BP_AUTH__COOKIE__SECURE", "false")
            .env("BP_AUTH__SERVER__WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn bp-auth");
        let server = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = Client::new()
                .get(format!("{}/readyz", self.address))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bp-auth did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Shared assertions and token tools for the contract modules.
// ---------------------------------------------------------------------------------------------

/// Now, in Unix seconds, from the server's own clock.
pub fn now_secs() -> i64 {
    bp_auth::clock::now().0
}

fn b64url_json(segment: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|e| panic!("segment {segment:?} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("segment is not JSON: {e}"))
}

/// The decoded header of a JWT.
pub fn jwt_header(token: &str) -> Value {
    b64url_json(token.split('.').next().expect("header segment"))
}

/// The decoded claims of a JWT.
pub fn jwt_claims(token: &str) -> Value {
    b64url_json(token.split('.').nth(1).expect("payload segment"))
}

/// `sub`, `tid` and `sid` of a genuine access token, typed, to forge tokens for that session.
pub fn session_of(
    token: &str,
) -> (
    bp_auth::domain::ids::UserId,
    bp_auth::domain::ids::TenantId,
    bp_auth::domain::ids::SessionId,
) {
    let c = jwt_claims(token);
    let s = |k: &str| {
        c[k].as_str()
            .unwrap_or_else(|| panic!("claim {k}"))
            .to_string()
    };
    (
        s("sub").parse().expect("sub"),
        s("tid").parse().expect("tid"),
        s("sid").parse().expect("sid"),
    )
}

/// The server's active signing key pair, read from its data dir with the server's loader.
pub fn signing_key(data_dir: &Path) -> bp_auth::domain::tokens::KeyPair {
    let loaded = bp_auth::keys::load_or_create_signing_keys(data_dir, bp_auth::clock::now())
        .expect("signing keys");
    loaded.active().cloned().expect("an active key")
}

/// A keyring with the server's active key and its configured issuer, audience and leeway, to
/// forge tokens the server should accept (or refuse, once a claim is changed).
pub fn forging_keyring(app: &TestApp) -> bp_auth::domain::tokens::Keyring {
    let t = &app.config.tokens;
    bp_auth::domain::tokens::Keyring::new(
        signing_key(app.data_dir.path()),
        vec![],
        t.issuer.clone(),
        t.audience.clone(),
        t.leeway_seconds,
    )
}

/// A lowercase, hyphenated UUIDv7.
pub fn assert_uuid_v7(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    let u = uuid::Uuid::parse_str(s).unwrap_or_else(|_| panic!("{what} is not a UUID: {s}"));
    assert_eq!(u.get_version_num(), 7, "{what} is not a UUIDv7: {s}");
    assert_eq!(
        s,
        u.hyphenated().to_string(),
        "{what} is not lowercase hyphenated: {s}"
    );
}

/// An error answer: the status, FastAPI's `{"detail": "...", "code": ...}` and, for a 401,
/// `WWW-Authenticate: Bearer`. Returns the body.
pub async fn expect_error(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let body = json_of(res).await;
    assert_eq!(got, status, "status (body {body})");
    assert_eq!(body["code"], code, "code (body {body})");
    assert!(body["detail"].is_string(), "detail is a string: {body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "only detail and code: {body}"
    );
    assert_common_headers(&headers);
    if status == 401 {
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "a 401 says WWW-Authenticate: Bearer"
        );
    }
    body
}

/// A 422 in pydantic v2's list shape; returns the `detail` entries.
pub async fn expect_validation(res: Response) -> Vec<Value> {
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let body = json_of(res).await;
    assert_eq!(got, 422, "status (body {body})");
    assert_common_headers(&headers);
    assert_eq!(body["code"], "validation_error", "{body}");
    let detail = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is a list: {body}"))
        .clone();
    assert!(!detail.is_empty(), "detail names the problem: {body}");
    for d in &detail {
        assert!(d["type"].is_string(), "type: {d}");
        assert!(d["msg"].is_string(), "msg: {d}");
        let loc = d["loc"]
            .as_array()
            .unwrap_or_else(|| panic!("loc is a list: {d}"));
        assert_eq!(loc.first(), Some(&json!("body")), "loc starts at body: {d}");
    }
    detail
}

fn loc_value(loc: &[&str]) -> Value {
    Value::Array(loc.iter().map(|s| json!(s)).collect())
}

/// The 422's entries are exactly these `(type, loc)` pairs, in any order; a type of `"*"`
/// matches any type.
pub fn assert_issues(detail: &[Value], expected: &[(&str, &[&str])]) {
    assert_eq!(
        detail.len(),
        expected.len(),
        "expected {expected:?}, got {detail:?}"
    );
    for (kind, loc) in expected {
        let loc = loc_value(loc);
        assert!(
            detail
                .iter()
                .any(|d| d["loc"] == loc && (*kind == "*" || d["type"] == *kind)),
            "no {kind} at {loc} in {detail:?}"
        );
    }
}

/// One `Set-Cookie`, parsed.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attribute names lowercased, with their values as sent.
    pub attrs: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Self {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|nv| nv.split_once('='))
            .unwrap_or_else(|| panic!("bad Set-Cookie {raw:?}"));
        let attrs = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
            .collect();
        Self {
            name: name.to_string(),
            value: value.to_string(),
            attrs,
        }
    }

    pub fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == attr)
    }

    pub fn get(&self, attr: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == attr)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// The one `Set-Cookie` for `bp_token` in `headers`; panics if there is not exactly one.
pub fn bp_token_cookie(headers: &HeaderMap) -> SetCookie {
    let cookies: Vec<SetCookie> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| SetCookie::parse(v.to_str().expect("ascii Set-Cookie")))
        .filter(|c| c.name == "bp_token")
        .collect();
    assert_eq!(
        cookies.len(),
        1,
        "exactly one bp_token Set-Cookie: {cookies:?}"
    );
    cookies.into_iter().next().expect("one cookie")
}

/// `bp_token` is cleared: empty, `Max-Age=0`, `Path=/`.
pub fn assert_clears_cookie(headers: &HeaderMap) {
    let c = bp_token_cookie(headers);
    assert_eq!(c.value, "", "cleared cookie is empty: {c:?}");
    assert_eq!(c.get("max-age"), Some("0"), "{c:?}");
    assert_eq!(c.get("path"), Some("/"), "{c:?}");
}

/// `Cache-Control: no-store` and `Pragma: no-cache`.
pub fn assert_no_store(headers: &HeaderMap) {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    assert_eq!(get("cache-control"), Some("no-store"));
    assert_eq!(get("pragma"), Some("no-cache"));
}

/// The token response's exact shape with default lifetimes; returns the tokens.
pub fn assert_token_response(v: &Value, access_ttl: u64) -> Tokens {
    let obj = v.as_object().unwrap_or_else(|| panic!("object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_expires_in",
            "refresh_token",
            "token_type"
        ],
        "{v}"
    );
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], access_ttl);
    assert_eq!(v["refresh_expires_in"], 2_592_000);
    let t = Tokens::from_json(v);
    assert!(t.refresh.starts_with("bprt_"), "{}", t.refresh);
    assert_eq!(t.access.split('.').count(), 3, "a JWS compact token");
    t
}

impl TestApp {
    /// `POST /api/auth/logout` with an optional bearer token and a JSON body, without a jar.
    pub async fn logout_bearer(&self, token: Option<&str>, body: &Value) -> Response {
        let mut req = Client::new().post(self.url("/api/auth/logout")).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("logout")
    }
}

/// A raw HTTP/1.1 exchange: `head` (request line and headers, without the blank line) is sent
/// with `Transfer-Encoding: chunked` and `Connection: close`, then `chunks` as chunks, so the
/// body's size is never declared. Returns the whole raw response, lowercased head included.
pub async fn chunked_request(port: u16, head: &str, chunks: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut out = format!(
        "{head}\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything: a failed write is fine.
    for piece in out.chunks(4096) {
        if stream.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The status code of a raw HTTP response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

impl ServerProcess {
    /// Like [`ServerProcess::start`], with the server's stdout and stderr appended to the file
    /// `log` (for assertions on its log lines); waits for `/readyz`.
    pub async fn start_logged(data_dir: &Path, env: &[(&str, &str)], log: &Path) -> Self {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file")
        };
        Self::spawn(data_dir, env, open().into(), open().into()).await
    }
}

// ---------------------------------------------------------------------------------------------
// Codes, the outbox and account helpers (API keys, entitlements, phone, deactivation, webhook).
// ---------------------------------------------------------------------------------------------

/// `<data_dir>/outbox.jsonl`.
pub fn outbox_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("outbox.jsonl")
}

/// Every line of the outbox, parsed; empty if there is no outbox yet. Each line must be one
/// complete JSON object.
pub fn read_outbox(data_dir: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(outbox_path(data_dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("outbox unreadable: {e}"),
    };
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("outbox line not JSON: {l:?}")))
        .collect()
}

/// Polls the outbox for up to 5 s until it has at least `n` lines; returns them all. Codes
/// sent after the answer (reactivation) appear in the background.
pub async fn wait_outbox_len(data_dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = read_outbox(data_dir);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox has {} lines after 5 s, expected {n}: {lines:?}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A six-digit code, as a string.
pub fn assert_six_digits(v: &Value, what: &str) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(
        s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()),
        "{what} is not six digits: {s:?}"
    );
    s.to_string()
}

/// An RFC 3339 UTC timestamp with the `Z` suffix, e.g. `2026-11-28T06:15:51Z` (fractions
/// allowed).
pub fn assert_rfc3339_z(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.last() == Some(&b'Z')
        && (b.len() == 20 || (b[19] == b'.' && b.len() > 21 && digits(20..b.len() - 1)));
    assert!(ok, "{what} is not RFC 3339 UTC with Z: {s:?}");
}

/// A wrong code: **400** `invalid_code` with `attempts_left` (when given) and nothing else.
pub async fn expect_invalid_code(res: Response, attempts_left: Option<u64>) -> Value {
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let body = json_of(res).await;
    assert_eq!(got, 400, "status (body {body})");
    assert_common_headers(&headers);
    assert_eq!(body["code"], "invalid_code", "{body}");
    assert!(body["detail"].is_string(), "detail is a string: {body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    match attempts_left {
        Some(n) => {
            assert_eq!(keys, ["attempts_left", "code", "detail"], "{body}");
            assert_eq!(body["attempts_left"], n, "{body}");
        }
        None => assert_eq!(keys, ["code", "detail"], "{body}"),
    }
    body
}

impl TestApp {
    /// `method path` with a bearer token (a JWT or an API key) and an optional JSON body,
    /// without the cookie jar.
    pub async fn send_bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut req = Client::new()
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("request")
    }

    /// `POST path` with a bearer token and an optional JSON body.
    pub async fn post_bearer(&self, path: &str, token: &str, body: Option<&Value>) -> Response {
        self.send_bearer(reqwest::Method::POST, path, token, body)
            .await
    }

    /// `POST path` with a JSON body and no credentials.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post")
    }

    /// `PATCH /api/auth/me` with a bearer token.
    pub async fn patch_me(&self, token: &str, body: &Value) -> Response {
        self.send_bearer(reqwest::Method::PATCH, "/api/auth/me", token, Some(body))
            .await
    }

    /// `GET /api/auth/api-key` with a bearer token; panics unless 200; returns the body.
    pub async fn api_key(&self, token: &str) -> Value {
        let res = self.get_bearer("/api/auth/api-key", token).await;
        assert_eq!(res.status(), 200, "GET /api/auth/api-key");
        json_of(res).await
    }

    /// `POST /api/auth/verify-phone/request`.
    pub async fn phone_request(&self, token: &str) -> Response {
        self.post_bearer("/api/auth/verify-phone/request", token, None)
            .await
    }

    /// `POST /api/auth/verify-phone/confirm` with `code`.
    pub async fn phone_confirm(&self, token: &str, code: &str) -> Response {
        self.post_bearer(
            "/api/auth/verify-phone/confirm",
            token,
            Some(&json!({ "code": code })),
        )
        .await
    }

    /// Registers a user with `phone` and logs in.
    pub async fn new_user_with_phone(&self, phone: &str) -> (String, Tokens) {
        let e = email();
        let res = self
            .register_raw(&json!({"email": e, "password": PASSWORD, "phone": phone}))
            .await;
        assert_eq!(res.status(), 201, "register {e} with {phone}");
        let t = self.login(&e).await;
        (e, t)
    }

    /// The lines of this app's outbox.
    pub fn outbox(&self) -> Vec<Value> {
        read_outbox(self.data_dir.path())
    }

    /// Polls this app's outbox until it has at least `n` lines.
    pub async fn wait_outbox(&self, n: usize) -> Vec<Value> {
        wait_outbox_len(self.data_dir.path(), n).await
    }
}

/// Asserts an outbox line has exactly the contract's fields and values; returns its code.
pub fn assert_outbox_line(
    line: &Value,
    channel: &str,
    purpose: &str,
    to: &str,
    user_id: &Value,
) -> String {
    let obj = line.as_object().unwrap_or_else(|| panic!("object: {line}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["channel", "code", "purpose", "sent_at", "to", "user_id"],
        "{line}"
    );
    assert_eq!(line["channel"], channel, "{line}");
    assert_eq!(line["purpose"], purpose, "{line}");
    assert_eq!(line["to"], to, "{line}");
    assert_eq!(&line["user_id"], user_id, "{line}");
    assert_rfc3339_z(&line["sent_at"], "sent_at");
    assert_six_digits(&line["code"], "code")
}

/// A code that is certainly not `code`.
pub fn other_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// An access token for the session of the genuine `token`, signed with the server's key,
/// issued `issued_ago` seconds ago and lasting `ttl` seconds.
pub fn forge_for_session(app: &TestApp, token: &str, issued_ago: i64, ttl: u64) -> String {
    let (sub, tid, sid) = session_of(token);
    let ring = forging_keyring(app);
    let c = ring.claims(
        sub,
        tid,
        Some(sid),
        "owner",
        bp_auth::domain::time::Timestamp(now_secs() - issued_ago),
        ttl,
    );
    ring.sign(&c, "at+jwt")
}
