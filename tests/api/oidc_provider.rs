//! A real OpenID Connect provider for the tests: panva's `oidc-provider` (OpenID Certified),
//! from `tests/oidc/` (its `package-lock.json` pins it; `.ci/run` installs it with `npm ci`),
//! started once per test binary run on a loopback port it picks and prints. It runs under this
//! process's pipe on its standard input: when the test binary exits, however it exits, the pipe
//! closes and the provider stops, so none outlives its tests.
//!
//! Each bp-auth under test registers a client of its own by Dynamic Client Registration (its
//! exact redirect URI), and each test makes accounts of its own (`POST /__test/accounts`), so
//! tests running in parallel share the provider and nothing else. Missing `node_modules` is a
//! failure with a message, never a silent pass.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

pub struct Provider {
    pub issuer: String,
    _child: Mutex<(Child, ChildStdin)>,
}

static PROVIDER: OnceLock<Result<Provider, String>> = OnceLock::new();

/// The shared provider, started on first use; panics with the reason it cannot be.
pub fn provider() -> &'static Provider {
    match PROVIDER.get_or_init(start) {
        Ok(p) => p,
        Err(why) => panic!("OpenID Connect tests cannot run: {why}"),
    }
}

fn start() -> Result<Provider, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        return Err(format!(
            "{}/node_modules is missing: run `npm ci` there (.ci/run does)",
            dir.display()
        ));
    }
    let stderr = if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = Command::new("node")
        .arg("provider.js")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run node (Node.js 20 or later is needed): {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The first line is the port; the rest (the development interactions log to stdout) is
    // drained for as long as the provider runs, so that it never writes into a closed pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = tx.send(first);
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the provider did not start within 30 s".to_string())?;
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("the provider said {line:?}, not \"listening <port>\""))?;
    Ok(Provider {
        issuer: format!("http://127.0.0.1:{port}"),
        _child: Mutex::new((child, stdin)),
    })
}

/// How the provider treats an account's ID tokens (see `tests/oidc/provider.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// Re-signed with another key under the genuine `kid`.
    Resign,
    /// Re-signed with another key under a `kid` its JWKS lacks.
    UnknownKid,
    /// Another `nonce`, signed with the genuine key.
    Nonce,
}

impl Provider {
    /// Registers a confidential client for `redirect_uri`; returns its id and secret.
    pub async fn register_client(&self, redirect_uri: &str) -> (String, String) {
        let res = Client::new()
            .post(format!("{}/reg", self.issuer))
            .json(&json!({
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }))
            .send()
            .await
            .expect("client registration");
        assert_eq!(res.status(), 201, "client registration");
        let v: Value = res.json().await.expect("registration JSON");
        (
            v["client_id"].as_str().expect("client_id").to_string(),
            v["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_string(),
        )
    }

    /// Makes (or replaces) the account `sub`, whose login at the provider's form is `sub`.
    pub async fn account(&self, sub: &str, email: &str, email_verified: bool, tamper: Tamper) {
        let tamper = match tamper {
            Tamper::None => Value::Null,
            Tamper::Resign => json!("resign"),
            Tamper::UnknownKid => json!("kid"),
            Tamper::Nonce => json!("nonce"),
        };
        let res = Client::new()
            .post(format!("{}/__test/accounts", self.issuer))
            .json(&json!({
                "sub": sub, "email": email, "email_verified": email_verified,
                "name": "Test Person", "tamper": tamper,
            }))
            .send()
            .await
            .expect("account");
        assert_eq!(res.status(), 204, "account {sub}");
    }
}
