//! The test harness: the real server on port 0 with a temporary data dir, driven over HTTP.
//!
//! `spawn_app` runs the server in this process (fast, and the test can reach the data dir's
//! keys to forge tokens); `ServerProcess` runs the real binary, for restarts and SIGKILL. Both
//! are a `Server`, whose methods are the requests the tests make. Logs are printed only when
//! `TEST_LOG` is set.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bp_auth::config::Config;
use bp_auth::domain::tokens::KeyPair;
use bp_auth::startup::Application;
use data_encoding::{BASE32, BASE32_NOPAD};
use ed25519_dalek::Signer;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Response};
use serde_json::{json, Value};
use sha1::Sha1;
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
    // Most tests read the outbox for one code of their own; the registration email is tested
    // (on, as by default) in tests/api/lifecycle.rs.
    c.registration.send_verification_email = false;
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
        client: jar_client(),
        data_dir,
        handle,
    }
}

/// A client with a cookie jar and no redirects.
fn jar_client() -> Client {
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

/// The answer is `status` (`what` names the request in the failure, with the body); returns
/// the JSON body.
pub async fn expect_status(res: Response, status: u16, what: &str) -> Value {
    let got = res.status().as_u16();
    let v = json_of(res).await;
    assert_eq!(got, status, "{what}: {v}");
    v
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

/// A running server, in this process ([`TestApp`]) or the real binary ([`ServerProcess`]), and
/// the requests the tests make of it. Requests with a token or key go through a client without
/// a cookie jar, so only the credential given is sent.
pub trait Server {
    /// `http://127.0.0.1:<port>`.
    fn address(&self) -> &str;

    /// The client that registers, logs in and refreshes: a [`TestApp`]'s own (whose cookie jar
    /// keeps each login's cookie), or a fresh one for a [`ServerProcess`].
    fn client(&self) -> Client;

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address(), path)
    }

    async fn register_raw(&self, body: &Value) -> Response {
        self.client()
            .post(self.url("/api/auth/register"))
            .json(body)
            .send()
            .await
            .expect("register")
    }

    /// Registers `email` with [`PASSWORD`]; panics unless 201.
    async fn register(&self, email: &str) -> Value {
        let res = self
            .register_raw(&json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 201, "register {email}");
        json_of(res).await
    }

    async fn login_raw(&self, email: &str, password: &str) -> Response {
        self.client()
            .post(self.url("/api/auth/token"))
            .form(&[("username", email), ("password", password)])
            .send()
            .await
            .expect("login")
    }

    /// Logs in; panics unless 200.
    async fn login(&self, email: &str) -> Tokens {
        let res = self.login_raw(email, PASSWORD).await;
        assert_eq!(res.status(), 200, "login {email}");
        Tokens::from_json(&json_of(res).await)
    }

    /// Registers a new user and logs in.
    async fn new_user(&self) -> (String, Tokens) {
        let e = email();
        self.register(&e).await;
        let t = self.login(&e).await;
        (e, t)
    }

    /// Registers a user with `phone` and logs in.
    async fn new_user_with_phone(&self, phone: &str) -> (String, Tokens) {
        let e = email();
        let res = self
            .register_raw(&json!({"email": e, "password": PASSWORD, "phone": phone}))
            .await;
        assert_eq!(res.status(), 201, "register {e} with {phone}");
        let t = self.login(&e).await;
        (e, t)
    }

    async fn refresh_raw(&self, refresh: &str) -> Response {
        self.client()
            .post(self.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .expect("refresh")
    }

    /// Logs `email` in through a new client with a cookie jar of its own, which then holds the
    /// login's `bp_token` cookie; panics unless 200. Returns that client and the tokens.
    async fn cookie_login(&self, email: &str) -> (Client, Tokens) {
        let jar = jar_client();
        let res = jar
            .post(self.url("/api/auth/token"))
            .form(&[("username", email), ("password", PASSWORD)])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 200, "cookie login {email}");
        (jar, Tokens::from_json(&json_of(res).await))
    }

    /// `GET path` with no credentials.
    async fn get(&self, path: &str) -> Response {
        Client::new().get(self.url(path)).send().await.expect("get")
    }

    /// `POST path` with a JSON body and no credentials.
    async fn post_json(&self, path: &str, body: &Value) -> Response {
        Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post")
    }

    /// `POST path` with raw bytes of `content_type` and no credentials.
    async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        Client::new()
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post")
    }

    /// `method path` with a bearer token (a JWT or an API key) and an optional JSON body.
    async fn send_bearer(
        &self,
        method: Method,
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

    /// `GET path` with a bearer token.
    async fn get_bearer(&self, path: &str, token: &str) -> Response {
        self.send_bearer(Method::GET, path, token, None).await
    }

    /// `POST path` with a bearer token and an optional JSON body.
    async fn post_bearer(&self, path: &str, token: &str, body: Option<&Value>) -> Response {
        self.send_bearer(Method::POST, path, token, body).await
    }

    /// `GET path` with `X-API-Key: key`.
    async fn get_with_api_key(&self, path: &str, key: &str) -> Response {
        Client::new()
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("get with an API key")
    }

    async fn me(&self, token: &str) -> Response {
        self.get_bearer("/api/auth/me", token).await
    }

    /// `GET /api/auth/me`; panics unless 200; returns the profile.
    async fn profile(&self, token: &str) -> Value {
        expect_status(self.me(token).await, 200, "GET /api/auth/me").await
    }

    /// `PATCH /api/auth/me` with a bearer token.
    async fn patch_me(&self, token: &str, body: &Value) -> Response {
        self.send_bearer(Method::PATCH, "/api/auth/me", token, Some(body))
            .await
    }

    /// `GET /api/auth/api-key` with a bearer token; panics unless 200; returns the body.
    async fn api_key(&self, token: &str) -> Value {
        let res = self.get_bearer("/api/auth/api-key", token).await;
        assert_eq!(res.status(), 200, "GET /api/auth/api-key");
        json_of(res).await
    }

    /// The first `GET /api/auth/api-key`, which creates the key; returns the full key.
    async fn new_api_key(&self, token: &str) -> String {
        let v = self.api_key(token).await;
        v["key"]
            .as_str()
            .unwrap_or_else(|| panic!("the first answer holds the full key: {v}"))
            .to_string()
    }

    /// `POST /api/auth/verify-phone/request`.
    async fn phone_request(&self, token: &str) -> Response {
        self.post_bearer("/api/auth/verify-phone/request", token, None)
            .await
    }

    /// `POST /api/auth/verify-phone/confirm` with `code`.
    async fn phone_confirm(&self, token: &str, code: &str) -> Response {
        self.post_bearer(
            "/api/auth/verify-phone/confirm",
            token,
            Some(&json!({ "code": code })),
        )
        .await
    }

    /// `POST /api/auth/logout` with an optional bearer token and a JSON body.
    async fn logout_bearer(&self, token: Option<&str>, body: &Value) -> Response {
        let mut req = Client::new().post(self.url("/api/auth/logout")).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("logout")
    }

    /// `GET /.well-known/jwks.json`; panics unless 200.
    async fn jwks(&self) -> Value {
        let res = self.get("/.well-known/jwks.json").await;
        assert_eq!(res.status(), 200, "jwks");
        json_of(res).await
    }
}

impl Server for TestApp {
    fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Server for ServerProcess {
    fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> Client {
        Client::new()
    }
}

impl TestApp {
    /// The keyring the server signs with, read from its data dir, to forge test tokens.
    pub fn keyring(&self) -> bp_auth::domain::tokens::Keyring {
        bp_auth::startup::load_keyring(&self.config, self.config.server.data_dir.as_path())
            .expect("keyring")
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
        Self::spawn_at(free_port(), data_dir, env, stdout, stderr).await
    }

    async fn spawn_at(
        port: u16,
        data_dir: &Path,
        env: &[(&str, &str)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bp-auth"));
        cmd.arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("BP_AUTH__COOKIE__SECURE", "false")
            .env("BP_AUTH__SERVER__WORKERS", "2")
            // As in `test_config`: each test reads the outbox for its own codes.
            .env("BP_AUTH__REGISTRATION__SEND_VERIFICATION_EMAIL", "false")
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

    /// SIGKILL: no drain, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("-TERM")
    }

    /// SIGINT (Ctrl-C), then the exit status.
    pub fn interrupt(self) -> std::process::ExitStatus {
        self.signal("-INT")
    }

    fn signal(mut self, which: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(which)
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

/// Runs `cmd` (the binary, expected to stop by itself) to completion with its output captured;
/// kills it and panics if it runs longer than `limit`.
pub fn run_to_exit(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bp-auth");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

// ---------------------------------------------------------------------------------------------
// Shared assertions and token tools for the contract modules.
// ---------------------------------------------------------------------------------------------

/// Now, in Unix seconds, from the server's own clock.
pub fn now_secs() -> i64 {
    bp_auth::clock::now().0
}

fn b64url_json(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
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
pub fn signing_key(data_dir: &Path) -> KeyPair {
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

/// `v` as JSON, base64url without padding: a JWS segment.
pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A compact JWS of `header` and `claims` signed with `pair`'s Ed25519 key.
pub fn sign_with(pair: &KeyPair, header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let sig = pair.signing.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// `GET /api/auth/me` with `token` is 401 `invalid_token`; `what` names the case.
pub async fn assert_invalid_token(app: &TestApp, token: &str, what: &str) {
    let res = app.me(token).await;
    let status = res.status().as_u16();
    assert_eq!(status, 401, "{what}: got {status}");
    let body = expect_error(res, 401, "invalid_token").await;
    assert_eq!(body["code"], "invalid_token", "{what}");
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

/// The answer is `status` and carries the headers every answer must; returns its headers and
/// its JSON body.
async fn error_answer(res: Response, status: u16) -> (HeaderMap, Value) {
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let body = json_of(res).await;
    assert_eq!(got, status, "status (body {body})");
    assert_common_headers(&headers);
    (headers, body)
}

/// An error answer: the status, FastAPI's `{"detail": "...", "code": ...}` and, for a 401,
/// `WWW-Authenticate: Bearer`. Returns the body.
pub async fn expect_error(res: Response, status: u16, code: &str) -> Value {
    let (headers, body) = error_answer(res, status).await;
    assert_eq!(body["code"], code, "code (body {body})");
    assert!(body["detail"].is_string(), "detail is a string: {body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "only detail and code: {body}"
    );
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

/// `POST /api/auth/refresh` with `refresh` is a 401 `code` (as [`expect_error`]); returns the
/// body.
pub async fn expect_refresh_error(server: &impl Server, refresh: &str, code: &str) -> Value {
    expect_error(server.refresh_raw(refresh).await, 401, code).await
}

/// A 422 in pydantic v2's list shape about the body; returns the `detail` entries.
pub async fn expect_validation(res: Response) -> Vec<Value> {
    expect_validation_at(res, "body").await
}

/// A 422 in pydantic v2's list shape, every `loc` starting at `part` (`body`, `query`).
pub async fn expect_validation_at(res: Response, part: &str) -> Vec<Value> {
    let (_, body) = error_answer(res, 422).await;
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
        assert_eq!(loc.first(), Some(&json!(part)), "loc starts at {part}: {d}");
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

/// A 422 whose entries are exactly `expected` (as [`assert_issues`]); returns them.
pub async fn expect_issues(res: Response, expected: &[(&str, &[&str])]) -> Vec<Value> {
    let detail = expect_validation(res).await;
    assert_issues(&detail, expected);
    detail
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

/// A raw HTTP/1.1 `POST path` of `content_type`, sent with `Transfer-Encoding: chunked` and
/// `Connection: close`, then `chunks` as chunks, so the body's size is never declared. Returns
/// the whole raw response, head included.
pub async fn chunked_post(port: u16, path: &str, content_type: &str, chunks: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nHost: 127.0.0.1:{port}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
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

/// A raw response is `status` with the error code `code` in its body.
pub fn expect_raw_error(raw: &str, status: u16, code: &str) {
    assert_eq!(raw_status(raw), status, "{raw}");
    assert!(raw.contains(&format!(r#""code":"{code}""#)), "{raw}");
}

/// A streamed body over the 16 KiB limit: `head`, then 20 KiB of `x` in 4 KiB chunks, then
/// `tail` unless it is empty.
pub fn oversized_chunks(head: &[u8], tail: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = vec![head.to_vec()];
    chunks.extend((0..5).map(|_| vec![b'x'; 4096]));
    if !tail.is_empty() {
        chunks.push(tail.to_vec());
    }
    chunks
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

    /// [`ServerProcess::start_logged`] on `port` (a test that must know the address before the
    /// server starts, to name it in the server's own configuration).
    pub async fn start_logged_at(
        port: u16,
        data_dir: &Path,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file")
        };
        Self::spawn_at(port, data_dir, env, open().into(), open().into()).await
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
    wait_for_len("the outbox's lines", n, || read_outbox(data_dir)).await
}

/// Polls `fetch` every 25 ms for up to 5 s until it returns at least `n` items (`what` names
/// them); returns them all.
pub async fn wait_for_len<T: std::fmt::Debug>(
    what: &str,
    n: usize,
    mut fetch: impl FnMut() -> Vec<T>,
) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = fetch();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} after 5 s, expected {n}: {got:?}",
            got.len()
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
    let (_, body) = error_answer(res, 400).await;
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

/// The `Retry-After` of an answer, in whole seconds; panics unless there is a numeric one.
pub fn retry_after(headers: &HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a numeric Retry-After: {headers:?}"))
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

// ---------------------------------------------------------------------------------------------
// TOTP, written here from RFC 4226/6238 (HMAC-SHA-1 over the big-endian step counter, dynamic
// truncation, 30 s steps), never taken from the server's code.
// ---------------------------------------------------------------------------------------------

const STEP_SECONDS: u64 = 30;

/// RFC 4226 HOTP with HMAC-SHA-1: the `digits` low decimal digits of the dynamically
/// truncated MAC of the 8-byte big-endian `counter`, zero-padded.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    let code = binary % 10u32.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// RFC 6238 TOTP at Unix time `t` (30 s steps from T0 = 0).
fn totp_at(key: &[u8], t: u64, digits: u32) -> String {
    hotp(key, t / STEP_SECONDS, digits)
}

/// The wall clock, read here rather than through the server's clock module.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// The server's base32 TOTP secret, decoded (padded or not).
pub fn decode_base32(secret: &str) -> Vec<u8> {
    let decoded = if secret.contains('=') {
        BASE32.decode(secret.as_bytes())
    } else {
        BASE32_NOPAD.decode(secret.as_bytes())
    };
    decoded.unwrap_or_else(|e| panic!("secret {secret:?} is not base32: {e}"))
}

/// The user's authenticator app: the secret and the last step whose code it has given out. A
/// code is usable once, and the server accepts one step either side of now.
pub struct Authenticator {
    key: Vec<u8>,
    pub last_step: u64,
}

impl Authenticator {
    pub fn new(secret: &str) -> Self {
        Self {
            key: decode_base32(secret),
            last_step: 0,
        }
    }

    pub fn code_at_step(&self, step: u64) -> String {
        hotp(&self.key, step, 6)
    }

    /// A code of a step not used yet: the current one, or the next one (which the server
    /// accepts, ±1 step) if the current one is used; waits for the next step boundary when
    /// both are used. The code's step counts as used from now on.
    pub async fn fresh_code(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now.as_secs() / STEP_SECONDS;
            let step = (self.last_step + 1).max(current);
            if step <= current + 1 {
                self.last_step = step;
                return self.code_at_step(step);
            }
            // Not a speed assertion: a code is good once, so wait until `step` is the next one.
            let boundary = Duration::from_secs((step - 1) * STEP_SECONDS);
            tokio::time::sleep(boundary.saturating_sub(now) + Duration::from_millis(50)).await;
        }
    }

    /// Six digits that are no code of any step the server could accept around now.
    pub fn wrong_code(&self, seed: u32) -> String {
        let current = unix_now().as_secs() / STEP_SECONDS;
        let near: Vec<String> = (current - 2..=current + 3)
            .map(|s| self.code_at_step(s))
            .collect();
        (seed..)
            .map(|n| format!("{:06}", n.wrapping_mul(104_729) % 1_000_000))
            .find(|c| !near.contains(c))
            .expect("a wrong code")
    }

    /// The code of a step outside the ±1 window around now (`offset` steps away, |offset| ≥ 3),
    /// unless it happens to equal a code the server could accept.
    pub fn out_of_window_code(&self, offset: i64) -> Option<String> {
        let current = unix_now().as_secs() / STEP_SECONDS;
        let step = current.checked_add_signed(offset).expect("a step");
        let code = self.code_at_step(step);
        let near: Vec<String> = (current - 2..=current + 2)
            .map(|s| self.code_at_step(s))
            .collect();
        (!near.contains(&code)).then_some(code)
    }
}

#[test]
fn the_tests_totp_matches_rfc_6238() {
    let seed = b"12345678901234567890";
    // RFC 6238 appendix B, SHA-1, 8 digits.
    for (t, code) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp_at(seed, t, 8), code, "T = {t}");
    }
    // RFC 4226 appendix D, 6 digits: counter 0 and 1.
    assert_eq!(hotp(seed, 0, 6), "755224");
    assert_eq!(hotp(seed, 1, 6), "287082");
    // The same seed as an authenticator app would receive it.
    assert_eq!(
        decode_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        seed.to_vec()
    );
}
