//! Operating bp-auth (issue 7): Prometheus metrics, request ids in responses and logs, signing
//! key rotation with SIGHUP, the admin CLI on a stopped server's data dir, export and import.
//! (The admin CLI against a running server is tests/api/admin_live.rs.)
//!
//! The CLI is the real binary, run to completion; servers are either in-process (`spawn_app`)
//! or the real binary (`ServerProcess`) when the test needs a data dir that outlives a stop.
//! Metrics live in one process-wide registry shared by every in-process app, so counts are
//! asserted as lower bounds only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const PHONE: &str = "+447700900123";

// ---------------------------------------------------------------------------------------------
// Requests, to the in-process server or the real binary.
// ---------------------------------------------------------------------------------------------

/// A full (not MFA-pending) login; panics otherwise.
pub(crate) async fn full_login(t: &impl Server, email: &str) -> Tokens {
    let res = t.login_raw(email, PASSWORD).await;
    let v = expect_status(res, 200, &format!("login {email}")).await;
    assert_eq!(v["token_type"], "bearer", "a full login: {v}");
    Tokens::from_json(&v)
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("keys is a list: {jwks}"))
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

fn kid_of(token: &str) -> String {
    jwt_header(token)["kid"]
        .as_str()
        .expect("the token names its key")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// MFA enrolment and challenges, with the helpers' TOTP.
// ---------------------------------------------------------------------------------------------

/// Enrols TOTP for the session of `access`; returns the secret and the authenticator.
async fn enrol_mfa(t: &impl Server, access: &str) -> (String, Authenticator) {
    let res = t
        .post_bearer("/api/auth/mfa/totp/setup", access, None)
        .await;
    let v = expect_status(res, 200, "totp setup").await;
    let secret = v["secret"].as_str().expect("secret").to_string();
    let mut auth = Authenticator::new(&secret);
    let code = auth.fresh_code().await;
    let res = t
        .post_bearer(
            "/api/auth/mfa/totp/verify",
            access,
            Some(&json!({ "code": code })),
        )
        .await;
    let v = expect_status(res, 200, "totp verify").await;
    assert_eq!(v["mfa_enabled"], true, "{v}");
    (secret, auth)
}

/// A login of an MFA user: the MFA-pending token.
async fn login_pending_at(t: &impl Server, email: &str) -> String {
    let res = t.login_raw(email, PASSWORD).await;
    let v = expect_status(res, 200, &format!("login {email}")).await;
    assert_eq!(v["token_type"], "mfa_pending", "MFA is still required: {v}");
    v["access_token"]
        .as_str()
        .expect("pending token")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The CLI.
// ---------------------------------------------------------------------------------------------

pub(crate) struct CliRun {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success={} stdout={:?} stderr={:?}",
            self.success, self.stdout, self.stderr
        )
    }
}

/// `bp-auth ARGS --data-dir DIR`, run from `DIR` (so no `config.toml` is picked up), to
/// completion; killed after 60 s.
pub(crate) fn bp_auth(data_dir: &Path, args: &[&str]) -> CliRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bp-auth"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(data_dir);
    let out = run_to_exit(cmd, Duration::from_secs(60));
    CliRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI and expects it to succeed.
pub(crate) fn bp_auth_ok(data_dir: &Path, args: &[&str]) -> CliRun {
    let run = bp_auth(data_dir, args);
    assert!(run.success, "bp-auth {args:?} succeeds: {run:?}");
    run
}

/// `admin user show EMAIL` as JSON.
pub(crate) fn admin_show(data_dir: &Path, email: &str) -> Value {
    let run = bp_auth_ok(data_dir, &["admin", "user", "show", email]);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("user show prints JSON ({e}): {:?}", run.stdout))
}

// ---------------------------------------------------------------------------------------------
// A Prometheus text-format parser (exposition format 0.0.4).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name to type.
    types: HashMap<String, String>,
    helps: HashSet<String>,
    samples: Vec<Sample>,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() && chars[i] != '{' && !chars[i].is_whitespace() {
        i += 1;
    }
    let name: String = chars[..i].iter().collect();
    if !valid_metric_name(&name) {
        return Err(format!("metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    if chars.get(i) == Some(&'{') {
        i += 1;
        loop {
            while chars.get(i).is_some_and(|c| c.is_whitespace()) {
                i += 1;
            }
            match chars.get(i) {
                Some('}') => {
                    i += 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let start = i;
            while chars.get(i).is_some_and(|c| *c != '=') {
                i += 1;
            }
            let label: String = chars[start..i].iter().collect::<String>().trim().into();
            if !valid_label_name(&label) {
                return Err(format!("label name {label:?}"));
            }
            i += 1; // '='
            if chars.get(i) != Some(&'"') {
                return Err(format!("label {label} value is not quoted"));
            }
            i += 1;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated value of label {label}")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape \\{other:?}")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label {label} repeated"));
            }
            while chars.get(i).is_some_and(|c| c.is_whitespace()) {
                i += 1;
            }
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {}
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    let rest: String = chars[i..].iter().collect();
    let mut parts = rest.split_whitespace();
    let value = parse_value(parts.next().ok_or("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses the whole exposition; panics naming the first line that does not parse.
fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if let Some(rest) = comment.strip_prefix("HELP ") {
                let name = rest.split_whitespace().next().unwrap_or("");
                assert!(valid_metric_name(name), "line {}: HELP of {name:?}", n + 1);
                assert!(e.helps.insert(name.into()), "line {}: second HELP", n + 1);
            } else if let Some(rest) = comment.strip_prefix("TYPE ") {
                let mut it = rest.split_whitespace();
                let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                assert!(valid_metric_name(name), "line {}: TYPE of {name:?}", n + 1);
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "line {}: type {kind:?}",
                    n + 1
                );
                assert!(
                    e.types.insert(name.into(), kind.into()).is_none(),
                    "line {}: second TYPE of {name}",
                    n + 1
                );
            }
            continue;
        }
        let sample =
            parse_sample(line).unwrap_or_else(|err| panic!("line {}: {err}: {line:?}", n + 1));
        e.samples.push(sample);
    }
    // Every sample belongs to a declared family.
    for s in &e.samples {
        assert!(
            e.family_of(&s.name).is_some(),
            "sample {} has no # TYPE line",
            s.name
        );
    }
    e
}

impl Exposition {
    /// The declared family a sample name belongs to.
    fn family_of(&self, sample: &str) -> Option<String> {
        if self.types.contains_key(sample) {
            return Some(sample.into());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            matches!(
                self.types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
            .then(|| base.to_string())
        })
    }

    /// Samples named `name` whose labels include `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the matching samples, or `None` if there is none.
    fn total(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let m = self.matching(name, labels);
        (!m.is_empty()).then(|| m.iter().map(|s| s.value).sum())
    }

    /// Every histogram's buckets are cumulative, and its `+Inf` bucket equals its count.
    fn histogram_problems(&self, family: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in self.matching(&format!("{family}_bucket"), &[]) {
            let mut key = s.labels.clone();
            let Some(le) = key.remove("le") else {
                problems.push(format!("{family}_bucket without le: {s:?}"));
                continue;
            };
            match parse_value(&le) {
                Ok(le) => series.entry(key).or_default().push((le, s.value)),
                Err(e) => problems.push(format!("{family}_bucket le: {e}")),
            }
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                problems.push(format!("{family}{labels:?}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = self
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                .map(|s| s.value);
            if inf.is_none() || inf != count {
                problems.push(format!(
                    "{family}{labels:?}: +Inf bucket {inf:?} != count {count:?}"
                ));
            }
        }
        problems
    }
}

#[test]
fn the_prometheus_parser_reads_the_text_format() {
    let text = "# HELP a_total A counter\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\na_total{x=\"2\"} 4 1700000000000\n\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n# TYPE g gauge\ng -1.5e3\n";
    let e = parse_exposition(text);
    assert_eq!(e.total("a_total", &[]), Some(7.0));
    assert_eq!(
        e.matching("a_total", &[("x", "1")])[0].labels["y"],
        "q\"\\\n"
    );
    assert_eq!(e.total("g", &[]), Some(-1500.0));
    assert_eq!(e.family_of("h_bucket").as_deref(), Some("h"));
    assert!(e.histogram_problems("h").is_empty());
    for bad in ["a b c", "a{x=1} 2", "a{x=\"1\" 2", "1a 2", "a{x=\"1\"} two"] {
        assert!(parse_sample(bad).is_err(), "{bad:?} is refused");
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------------

/// Register, login, refresh, a failed login, a profile phone and a phone code request.
async fn traffic(app: &TestApp) {
    let (email, tokens) = app.new_user().await;
    let res = app.refresh_raw(&tokens.refresh).await;
    assert_eq!(res.status(), 200, "refresh");
    let tokens = Tokens::from_json(&json_of(res).await);
    let res = app.login_raw(&email, "not the password at all").await;
    assert_eq!(res.status(), 401, "a failed login");
    let res = app
        .patch_me(&tokens.access, &json!({ "phone": PHONE }))
        .await;
    assert_eq!(res.status(), 200, "a phone on the profile");
    let res = app
        .post_bearer("/api/auth/verify-phone/request", &tokens.access, None)
        .await;
    expect_status(res, 200, "a phone code sent").await;
}

async fn scrape(url: &str) -> Exposition {
    let res = Client::new().get(url).send().await.expect("metrics");
    assert_eq!(res.status(), 200, "GET {url}");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "text/plain: {ct:?}");
    parse_exposition(&res.text().await.expect("body"))
}

#[actix_web::test]
async fn metrics_hold_every_family_with_plausible_counts_after_traffic() {
    let app = spawn_app().await;
    traffic(&app).await;
    let m = scrape(&app.url("/metrics")).await;

    let mut problems: Vec<String> = Vec::new();
    for (family, kind) in [
        ("bp_http_requests_total", "counter"),
        ("bp_http_request_duration_seconds", "histogram"),
        ("bp_logins_total", "counter"),
        ("bp_refreshes_total", "counter"),
        ("bp_resident_actors", "gauge"),
        ("bp_password_hash_queue_depth", "gauge"),
        ("bp_password_hash_wait_seconds", "histogram"),
        ("bp_store_flushes_total", "counter"),
        ("bp_store_flush_batch_writes", "histogram"),
        ("bp_store_flush_duration_seconds", "histogram"),
        ("bp_deliveries_total", "counter"),
    ] {
        match m.types.get(family) {
            Some(k) if k == kind => {}
            other => problems.push(format!("family {family}: type {other:?}, want {kind}")),
        }
        if !m.helps.contains(family) {
            problems.push(format!("family {family}: no HELP"));
        }
        if kind == "histogram" {
            problems.extend(m.histogram_problems(family));
        }
    }
    // Each count at least this much (a lower bound: the registry is shared by every app).
    for (name, labels, min) in [
        (
            "bp_http_requests_total",
            &[("route", "/api/auth/token")][..],
            2.0,
        ),
        (
            "bp_http_requests_total",
            &[
                ("route", "/api/auth/token"),
                ("method", "POST"),
                ("status", "200"),
            ][..],
            1.0,
        ),
        (
            "bp_http_requests_total",
            &[
                ("route", "/api/auth/token"),
                ("method", "POST"),
                ("status", "401"),
            ][..],
            1.0,
        ),
        (
            "bp_http_requests_total",
            &[("route", "/api/auth/verify-phone/request")][..],
            1.0,
        ),
        (
            "bp_http_request_duration_seconds_count",
            &[("route", "/api/auth/token")][..],
            2.0,
        ),
        ("bp_logins_total", &[("outcome", "success")][..], 1.0),
        (
            "bp_logins_total",
            &[("outcome", "invalid_credentials")][..],
            1.0,
        ),
        ("bp_refreshes_total", &[("outcome", "rotated")][..], 1.0),
        ("bp_resident_actors", &[][..], 1.0),
        ("bp_password_hash_queue_depth", &[][..], 0.0),
        ("bp_password_hash_wait_seconds_count", &[][..], 3.0),
        ("bp_store_flushes_total", &[][..], 1.0),
        ("bp_store_flush_batch_writes_count", &[][..], 1.0),
        ("bp_store_flush_batch_writes_sum", &[][..], 1.0),
        ("bp_store_flush_duration_seconds_count", &[][..], 1.0),
        (
            "bp_deliveries_total",
            &[("channel", "sms"), ("outcome", "sent")][..],
            1.0,
        ),
    ] {
        let got = m.total(name, labels);
        if !got.is_some_and(|v| v >= min) {
            let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let what = if shown.is_empty() {
                name.to_string()
            } else {
                format!("{name}{{{}}}", shown.join(","))
            };
            problems.push(format!("{what}: {got:?}, want >= {min}"));
        }
    }
    assert!(
        problems.is_empty(),
        "metrics problems:\n{}",
        problems.join("\n")
    );
}

#[actix_web::test]
async fn metrics_bind_serves_them_on_a_separate_listener_only() {
    let port = free_port();
    let app = spawn_app_with(|c| c.metrics.bind = format!("127.0.0.1:{port}")).await;
    let (email, _) = app.new_user().await;
    let m = scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        m.total("bp_logins_total", &[("outcome", "success")])
            .is_some_and(|v| v >= 1.0),
        "the login is counted: {:?}",
        m.matching("bp_logins_total", &[])
    );
    assert!(m.types.contains_key("bp_resident_actors"));
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 404, "not on the API listener");
    // The API listener still works.
    full_login(&app, &email).await;
}

#[actix_web::test]
async fn metrics_disabled_are_not_served() {
    let app = spawn_app_with(|c| c.metrics.enabled = false).await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Request ids.
// ---------------------------------------------------------------------------------------------

fn request_id_of(res: &Response) -> Option<String> {
    res.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[actix_web::test]
async fn request_id_sent_is_echoed_and_one_is_made_otherwise() {
    let app = spawn_app().await;
    // Echoed on a success, an error and an unknown path alike.
    for path in ["/healthz", "/api/auth/me", "/no/such/path"] {
        let res = Client::new()
            .get(app.url(path))
            .header("X-Request-Id", "test-123")
            .send()
            .await
            .expect("get");
        assert_eq!(
            request_id_of(&res).as_deref(),
            Some("test-123"),
            "{path} ({})",
            res.status()
        );
    }
    let mut seen = HashSet::new();
    for path in ["/healthz", "/healthz", "/api/auth/me"] {
        let res = app.get(path).await;
        let id = request_id_of(&res).unwrap_or_else(|| panic!("{path}: an id is made"));
        assert!(!id.trim().is_empty(), "a non-empty id");
        assert!(seen.insert(id.clone()), "a fresh id per request: {id}");
    }
}

#[actix_web::test]
async fn request_id_is_on_the_json_log_lines_of_its_request() {
    let data = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("bp-auth.log");
    let server = ServerProcess::start_logged(
        data.path(),
        &[("BP_AUTH__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
        &log,
    )
    .await;
    let e = email();
    server.register(&e).await;
    let res = Client::new()
        .post(server.url("/api/auth/token"))
        .header("X-Request-Id", "trace-me-42")
        .form(&[("username", e.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    assert_eq!(request_id_of(&res).as_deref(), Some("trace-me-42"));

    // The request's completion line and the login's audit line both carry the id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, tagged) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tagged: Vec<String> = text
            .lines()
            .filter(|l| l.contains("trace-me-42"))
            .map(str::to_string)
            .collect();
        let audit = tagged.iter().any(|l| l.contains("bp_auth::audit"));
        if (tagged.len() >= 2 && audit) || Instant::now() > deadline {
            break (text, tagged);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);
    assert!(
        !tagged.is_empty(),
        "a log line mentions trace-me-42; the log:\n{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|err| {
            panic!("log.format = json, yet a line is not JSON ({err}): {line}")
        });
    }
    let audit = tagged
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|v| v["target"] == "bp_auth::audit" && v["fields"]["event"] == "login");
    assert!(
        audit.is_some(),
        "the login's audit line carries the request id; lines with it:\n{}",
        tagged.join("\n")
    );
    assert!(
        tagged.len() >= 2,
        "every line of the request carries the id:\n{}",
        tagged.join("\n")
    );
    assert!(!text.contains(PASSWORD), "the password is never logged");
}

// ---------------------------------------------------------------------------------------------
// Signing keys.
// ---------------------------------------------------------------------------------------------

/// The kids of the signing key files in the data dir.
fn key_files(data_dir: &Path) -> Vec<String> {
    let mut kids: Vec<String> = std::fs::read_dir(data_dir.join("keys"))
        .expect("keys dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_prefix("ed25519-")?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    kids.sort();
    kids
}

/// `created_at` of the signing key file of `kid`.
fn key_created_at(data_dir: &Path, kid: &str) -> i64 {
    let path = data_dir.join("keys").join(format!("ed25519-{kid}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).expect("key file")).expect("JSON");
    v["created_at"].as_i64().expect("created_at")
}

/// `keys rotate` makes the new key the active one, even when the previous key was made in the
/// same second (a first start followed at once by a rotation, or two rotations in a row).
/// Eight rotations at one instant: each new key must be the active one.
#[test]
fn a_key_rotated_within_the_same_second_is_the_active_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = bp_auth::clock::now();
    bp_auth::keys::load_or_create_signing_keys(dir.path(), now).expect("first key");
    let mut not_active = Vec::new();
    for n in 1..=8 {
        let new = bp_auth::keys::generate_signing_key(dir.path(), now).expect("rotate");
        let keys = bp_auth::keys::load_or_create_signing_keys(dir.path(), now).expect("keys");
        let active = keys.active().expect("an active key").kid.clone();
        if active != new.kid {
            not_active.push(format!("rotation {n}: new {} but active {active}", new.kid));
        }
    }
    assert!(
        not_active.is_empty(),
        "the newest key is not the active one:\n{}",
        not_active.join("\n")
    );
}

#[actix_web::test]
async fn keys_rotate_and_sighup_switch_the_signing_key_and_keep_old_tokens_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let a = full_login(&server, &e).await;
    let old_kid = kid_of(&a.access);
    assert_eq!(jwks_kids(&server.jwks().await), [old_kid.as_str()]);
    assert_eq!(key_files(dir.path()), [old_kid.as_str()]);

    // Key ages have one-second resolution: rotate in a later second than the first key's (a
    // rotation within the same second is the subject of its own test below).
    let created = key_created_at(dir.path(), &old_kid);
    while bp_auth::clock::now().0 <= created {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = bp_auth_ok(dir.path(), &["keys", "rotate"]);
    let files = key_files(dir.path());
    assert_eq!(files.len(), 2, "a new key file: {files:?}");
    let new_kid = files
        .iter()
        .find(|k| **k != old_kid)
        .expect("the new kid")
        .clone();
    assert!(
        run.stdout.contains(&new_kid),
        "rotate names the new key {new_kid}: {run:?}"
    );

    // Requests keep being answered while the keys are reloaded.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let url = server.url("/api/auth/me");
        let token = a.access.clone();
        actix_web::rt::spawn(async move {
            let client = Client::new();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) || statuses.is_empty() {
                let status = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                statuses.push(status);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let kids = loop {
        let kids = jwks_kids(&server.jwks().await);
        if kids.len() >= 2 || Instant::now() > deadline {
            break kids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.expect("load task");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no request dropped or refused during the reload: {statuses:?}"
    );
    let mut sorted = kids.clone();
    sorted.sort();
    assert_eq!(sorted, files, "the JWKS lists both keys after SIGHUP");

    // A token signed by the old key still works; new tokens carry the new kid.
    assert_eq!(server.me(&a.access).await.status(), 200);
    let b = full_login(&server, &e).await;
    assert_ne!(kid_of(&b.access), old_kid);
    assert_eq!(kid_of(&b.access), new_kid);
    assert_eq!(server.me(&b.access).await.status(), 200);
    let res = server.refresh_raw(&a.refresh).await;
    assert_eq!(
        res.status(),
        200,
        "a session from before the rotation refreshes"
    );
    let refreshed = Tokens::from_json(&json_of(res).await);
    assert_eq!(kid_of(&refreshed.access), new_kid);

    let run = bp_auth_ok(dir.path(), &["keys", "list"]);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "one line per key: {run:?}");
    let line_of = |kid: &str| {
        lines
            .iter()
            .find(|l| l.contains(kid))
            .unwrap_or_else(|| panic!("keys list names {kid}: {run:?}"))
            .to_string()
    };
    let new_line = line_of(&new_kid);
    let old_line = line_of(&old_kid);
    assert!(
        new_line.contains("active") && !new_line.contains("retir"),
        "the new key is active: {new_line}"
    );
    assert!(
        old_line.contains("retiring") && !old_line.contains("active"),
        "the old key is retiring: {old_line}"
    );
    let mut server = server;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "SIGHUP did not stop the server"
    );
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// The admin CLI.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn admin_commands_on_an_unknown_email_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    server.register(&email()).await;
    server.terminate();
    let nobody = "nobody@example.com";
    for args in [
        &["admin", "user", "show", nobody][..],
        &["admin", "user", "deactivate", nobody],
        &["admin", "user", "reactivate", nobody],
        &["admin", "user", "set-plan", nobody, "pro"],
        &["admin", "sessions", "revoke", nobody],
        &["admin", "mfa", "reset", nobody],
    ] {
        let run = bp_auth(dir.path(), args);
        assert!(!run.success, "{args:?} fails: {run:?}");
        assert!(
            run.stderr.contains(nobody),
            "{args:?} names the email: {run:?}"
        );
    }
}

#[actix_web::test]
async fn admin_user_show_prints_the_account_without_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    let profile = server.register(&e).await;
    let t = full_login(&server, &e).await;
    let key = server.new_api_key(&t.access).await;
    server.terminate();

    let run = bp_auth_ok(dir.path(), &["admin", "user", "show", &e.to_uppercase()]);
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("JSON ({err}): {:?}", run.stdout));
    assert_eq!(v["email"], e, "{v}");
    assert_eq!(v["id"], profile["id"], "{v}");
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["plan"], "free", "{v}");
    assert_eq!(v["mfa_enabled"], false, "{v}");
    assert!(v["api_key"].is_object(), "the API key's metadata: {v}");
    let lower = run.stdout.to_lowercase();
    for secret in ["$argon2", "password", "hash", "digest", "seed"] {
        assert!(!lower.contains(secret), "no {secret} in {}", run.stdout);
    }
    assert!(!run.stdout.contains(&key), "not the API key");
    assert!(!run.stdout.contains(&t.refresh), "not the refresh token");
}

#[actix_web::test]
async fn admin_user_deactivate_and_reactivate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = full_login(&server, &e).await;
    let key = server.new_api_key(&t.access).await;
    server.terminate();

    bp_auth_ok(dir.path(), &["admin", "user", "deactivate", &e]);
    assert_eq!(admin_show(dir.path(), &e)["status"], "deactivated");
    let server = ServerProcess::start(dir.path(), &[]).await;
    expect_error(
        server.login_raw(&e, PASSWORD).await,
        403,
        "account_deactivated",
    )
    .await;
    assert_ne!(
        server.get_with_api_key("/api/auth/me", &key).await.status(),
        200,
        "the API key of a deactivated account is refused"
    );
    assert_ne!(
        server.refresh_raw(&t.refresh).await.status(),
        200,
        "the sessions of a deactivated account are over"
    );
    server.terminate();

    bp_auth_ok(dir.path(), &["admin", "user", "reactivate", &e]);
    assert_eq!(admin_show(dir.path(), &e)["status"], "active");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let t = full_login(&server, &e).await;
    assert_eq!(server.profile(&t.access).await["status"], "active");
    server.terminate();
}

#[actix_web::test]
async fn admin_user_set_plan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    server.terminate();

    let run = bp_auth(
        dir.path(),
        &["admin", "user", "set-plan", &e, "no-such-plan"],
    );
    assert!(!run.success, "an unknown plan is refused: {run:?}");
    assert!(run.stderr.contains("no-such-plan"), "{run:?}");
    bp_auth_ok(dir.path(), &["admin", "user", "set-plan", &e, "pro"]);
    assert_eq!(admin_show(dir.path(), &e)["plan"], "pro");

    let server = ServerProcess::start(dir.path(), &[]).await;
    let t = full_login(&server, &e).await;
    assert_eq!(server.profile(&t.access).await["plan"], "pro");
    let res = server
        .get_bearer("/api/auth/me/entitlements", &t.access)
        .await;
    let ent = expect_status(res, 200, "entitlements").await;
    assert_eq!(ent["plan"], "pro", "{ent}");
    assert!(
        ent["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "api_access")),
        "pro grants api_access: {ent}"
    );
    server.terminate();
}

#[actix_web::test]
async fn admin_sessions_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t1 = full_login(&server, &e).await;
    let t2 = full_login(&server, &e).await;
    server.terminate();
    assert_eq!(admin_show(dir.path(), &e)["live_sessions"], 2);

    bp_auth_ok(dir.path(), &["admin", "sessions", "revoke", &e]);
    assert_eq!(admin_show(dir.path(), &e)["live_sessions"], 0);
    let server = ServerProcess::start(dir.path(), &[]).await;
    for t in [&t1, &t2] {
        expect_refresh_error(&server, &t.refresh, "invalid_refresh_token").await;
        assert_eq!(
            server.me(&t.access).await.status(),
            401,
            "the access token of a revoked session"
        );
    }
    // The account itself is fine.
    let t = full_login(&server, &e).await;
    assert_eq!(server.me(&t.access).await.status(), 200);
    server.terminate();
}

#[actix_web::test]
async fn admin_mfa_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = full_login(&server, &e).await;
    enrol_mfa(&server, &t.access).await;
    login_pending_at(&server, &e).await;
    server.terminate();
    assert_eq!(admin_show(dir.path(), &e)["mfa_enabled"], true);

    bp_auth_ok(dir.path(), &["admin", "mfa", "reset", &e]);
    assert_eq!(admin_show(dir.path(), &e)["mfa_enabled"], false);
    let server = ServerProcess::start(dir.path(), &[]).await;
    // A plain login again, without a second factor.
    let t = full_login(&server, &e).await;
    assert_eq!(server.profile(&t.access).await["mfa_enabled"], false);
    // And MFA can be enrolled afresh.
    enrol_mfa(&server, &t.access).await;
    login_pending_at(&server, &e).await;
    server.terminate();
}

// ---------------------------------------------------------------------------------------------
// Export and import.
// ---------------------------------------------------------------------------------------------

/// Copies `from/keys/*` into `to/keys/`, owner-only.
pub(crate) fn copy_keys(from: &Path, to: &Path) {
    let dest = to.join("keys");
    std::fs::create_dir_all(&dest).expect("keys dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    for entry in std::fs::read_dir(from.join("keys")).expect("source keys") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name())).expect("copy key");
        }
    }
}

#[actix_web::test]
async fn export_then_import_into_a_fresh_data_dir_keeps_users_api_keys_and_mfa() {
    let src = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(src.path(), &[]).await;
    let (e1, e2) = (email(), email());
    server.register(&e1).await;
    server.register(&e2).await;
    let t1 = full_login(&server, &e1).await;
    let key = server.new_api_key(&t1.access).await;
    let t2 = full_login(&server, &e2).await;
    let (secret, mut auth) = enrol_mfa(&server, &t2.access).await;
    server.terminate();

    let files = tempfile::tempdir().expect("temp dir");
    let export = files.path().join("export.jsonl");
    let export_s = export.to_str().expect("utf-8 path");
    bp_auth_ok(src.path(), &["admin", "export", "--out", export_s]);
    let text = std::fs::read_to_string(&export).expect("export file");
    let lines: Vec<&str> = text.lines().collect();
    let header: Value = serde_json::from_str(lines.first().expect("a first line"))
        .unwrap_or_else(|e| panic!("the header is JSON ({e}): {text}"));
    assert_eq!(header["type"], "header", "{header}");
    assert_eq!(header["format"], "bp-auth-export", "{header}");
    assert_eq!(header["version"], 1, "{header}");
    for (n, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is JSON ({e}): {line}", n + 1));
        assert!(v["type"].is_string(), "line {} has a type: {line}", n + 1);
        assert!(!line.contains(PASSWORD), "no plaintext password: {line}");
        assert!(!line.contains(&key), "no plaintext API key: {line}");
        assert!(
            !line.contains(secret.trim_end_matches('=')),
            "no plaintext TOTP secret: {line}"
        );
    }
    assert!(
        lines.len() > 1 && lines[1..].iter().all(|l| !l.contains("\"header\"")),
        "one header, then the records"
    );
    for e in [&e1, &e2] {
        assert!(text.contains(e.as_str()), "{e} is exported");
    }

    let dest = tempfile::tempdir().expect("temp dir");
    copy_keys(src.path(), dest.path());
    bp_auth_ok(dest.path(), &["admin", "import", "--in", export_s]);

    let server = ServerProcess::start(dest.path(), &[]).await;
    let t = full_login(&server, &e1).await;
    assert_eq!(server.profile(&t.access).await["email"], e1.as_str());
    let res = server.get_with_api_key("/api/auth/me", &key).await;
    let me = expect_status(res, 200, "the API key still authenticates").await;
    assert_eq!(me["email"], e1.as_str());
    // The MFA user still needs, and passes, the second factor.
    let pending = login_pending_at(&server, &e2).await;
    let code = auth.fresh_code().await;
    let res = server
        .post_bearer(
            "/api/auth/mfa/challenge",
            &pending,
            Some(&json!({ "code": code })),
        )
        .await;
    let v = expect_status(res, 200, "the TOTP secret survived").await;
    let t2 = Tokens::from_json(&v);
    assert_eq!(server.profile(&t2.access).await["mfa_enabled"], true);
    server.terminate();

    // Only into an empty data dir.
    let run = bp_auth(dest.path(), &["admin", "import", "--in", export_s]);
    assert!(
        !run.success,
        "import into a non-empty data dir fails: {run:?}"
    );
    assert!(!run.stderr.trim().is_empty(), "with a message: {run:?}");
    // And only an export.
    let empty = tempfile::tempdir().expect("temp dir");
    let junk = files.path().join("junk.jsonl");
    std::fs::write(&junk, "{\"hello\":1}\n").expect("write");
    let run = bp_auth(
        empty.path(),
        &["admin", "import", "--in", junk.to_str().expect("utf-8")],
    );
    assert!(!run.success, "a file that is no export is refused: {run:?}");
}
