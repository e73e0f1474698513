//! The test harness: the real server on port 0 with a temporary data dir, driven over HTTP.
//!
//! `spawn_app` runs the server in this process (fast, and the test can reach the data dir's
//! keys to forge tokens); `ServerProcess` runs the real binary, for restarts and SIGKILL.
//! Logs are printed only when `TEST_LOG` is set.

use std::path::{Path, PathBuf};
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
        let _ = self.handle.stop(false);
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
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
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
