//! Email by SMTP (`delivery.email = "smtp"`) against a real SMTP server on a loopback port:
//! aiosmtpd (PyPI), run by the test with a handler that records each message it receives, as
//! Python's `email` package parses it, one JSON line a message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bp_auth::config::{Config, DeliveryKind};
use reqwest::Response;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::*;

const FROM_ADDRESS: &str = "no-reply@blitzpulse.example";
const FROM: &str = "BlitzPulse <no-reply@blitzpulse.example>";
const PHONE: &str = "+447700900123";
const REACTIVATE_SUBJECT: &str = "Your code to reactivate your account";

/// Records every message as `{mail_from, rcpt_tos, headers: [[name, value]], content_type,
/// parts: [{content_type, charset, text}], defects, raw}`.
const RELAY: &str = r#"
import asyncio, email, json, sys
from email import policy
try:
    from aiosmtpd.smtp import SMTP
except ImportError:
    print("NO_AIOSMTPD", flush=True)
    sys.exit(3)

class Record:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        parts = [
            {"content_type": p.get_content_type(), "charset": p.get_content_charset(),
             "text": p.get_content()}
            for p in msg.walk() if not p.is_multipart()
        ]
        line = json.dumps({
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "content_type": msg.get_content_type(), "parts": parts,
            "defects": [repr(d) for d in msg.defects] + [repr(d) for p in msg.walk() for d in p.defects],
            "raw": raw.decode("utf-8", "replace"),
        })
        with open(self.path, "a") as f:
            f.write(line + "\n")
        return "250 Message accepted for delivery"

async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Record(path)), "127.0.0.1", port)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// An aiosmtpd server on 127.0.0.1, stopped when dropped.
struct Relay {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Relay {
    /// On a port of the system's choosing.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("relay.py"), RELAY).expect("write relay.py");
        let mut relay = Self {
            child: None,
            port: 0,
            dir,
        };
        relay.restart();
        relay
    }

    /// Starts the server again, on the same port once it has one; what it received stays.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the relay is running");
        let stderr = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = Command::new("python3")
            .arg(self.dir.path().join("relay.py"))
            .arg(self.port.to_string())
            .arg(self.received_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("python3 runs (the SMTP tests need python3 with aiosmtpd)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read");
        if line.trim() == "NO_AIOSMTPD" {
            let _ = child.wait();
            panic!(
                "the SMTP tests need aiosmtpd: python3 -m pip install 'aiosmtpd==1.4.*' \
                 (.ci/run installs it)"
            );
        }
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the relay did not start: {line:?} (run with TEST_LOG=1 to see why)")
            });
        self.port = port;
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn received_path(&self) -> PathBuf {
        self.dir.path().join("received.jsonl")
    }

    /// The messages received so far (complete lines only).
    fn received(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.received_path()).unwrap_or_default();
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    async fn wait(&self, n: usize) -> Vec<Value> {
        wait_for_len("messages received by SMTP", n, || self.received()).await
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Email by SMTP through `relay`; SMS stays with the default outbox.
fn email_by_smtp(c: &mut Config, relay: &Relay) {
    c.delivery.email = Some(DeliveryKind::Smtp);
    c.delivery.smtp_url = relay.url();
    c.delivery.smtp_from = FROM.into();
    c.delivery.smtp_timeout_ms = 5_000;
}

/// The value of the message's only header `name`.
fn header<'a>(mail: &'a Value, name: &str) -> &'a str {
    let found: Vec<&str> = mail["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().expect("a string"))
        .collect();
    assert_eq!(found.len(), 1, "one {name} header: {mail}");
    found[0]
}

/// The six-digit numbers in `text`.
fn six_digit_runs(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 6)
        .map(str::to_string)
        .collect()
}

/// Asserts `mail` is the reactivation email to `to` with both parts; returns its code.
fn assert_reactivation_email(mail: &Value, to: &str) -> String {
    assert_eq!(mail["mail_from"], FROM_ADDRESS, "envelope sender");
    assert_eq!(mail["rcpt_tos"], json!([to]), "envelope recipients");
    assert_eq!(header(mail, "From"), FROM);
    assert_eq!(header(mail, "To"), to);
    assert_eq!(header(mail, "Subject"), REACTIVATE_SUBJECT);
    assert_eq!(header(mail, "MIME-Version"), "1.0");
    assert!(!header(mail, "Date").is_empty());
    let id = header(mail, "Message-ID");
    assert!(
        id.starts_with('<') && id.ends_with("@blitzpulse.example>"),
        "{id}"
    );
    assert_eq!(mail["content_type"], "multipart/alternative");
    assert_eq!(mail["defects"], json!([]), "a well-formed message");

    let parts = mail["parts"].as_array().expect("parts");
    let types: Vec<&str> = parts
        .iter()
        .map(|p| p["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"], "{mail}");
    let text = parts[0]["text"].as_str().unwrap();
    let html = parts[1]["text"].as_str().unwrap();
    let codes = six_digit_runs(text);
    assert_eq!(codes.len(), 1, "one code in the text: {text}");
    let code = codes[0].clone();
    assert!(html.contains(&code), "the HTML shows the code too: {html}");
    assert!(html.contains("<html") && html.contains("</html>"), "{html}");

    let raw = mail["raw"].as_str().unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(!head.contains(&code), "no code in the headers: {head}");
    code
}

/// The received message's headers, for the test's output (no body: it holds the code).
fn print_headers(mail: &Value) {
    let raw = mail["raw"].as_str().unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    println!(
        "MAIL FROM:<{}> RCPT TO:{}\n{head}",
        mail["mail_from"].as_str().unwrap(),
        mail["rcpt_tos"]
    );
}

async fn reactivate_request(server: &impl Server, email: &str) -> Response {
    server
        .post_json("/api/auth/reactivate/request", &json!({ "email": email }))
        .await
}

async fn reactivate_confirm(server: &impl Server, email: &str, code: &str) -> Response {
    server
        .post_json(
            "/api/auth/reactivate/confirm",
            &json!({ "email": email, "code": code }),
        )
        .await
}

/// Registers, logs in and deactivates; returns the email.
async fn deactivated_user(server: &impl Server) -> String {
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    deactivate(server, &t.access).await;
    e
}

async fn deactivate(server: &impl Server, access: &str) {
    let res = server
        .post_bearer(
            "/api/auth/deactivate",
            access,
            Some(&json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(res.status(), 204);
}

#[actix_web::test]
async fn the_reactivation_code_arrives_by_smtp_and_reactivates() {
    let relay = Relay::start();
    let app = spawn_app_with(|c| email_by_smtp(c, &relay)).await;
    let e = deactivated_user(&app).await;

    let res = reactivate_request(&app, &e).await;
    assert_eq!(res.status(), 204);
    let mail = relay.wait(1).await.remove(0);
    let code = assert_reactivation_email(&mail, &e);
    print_headers(&mail);
    assert!(
        app.outbox().is_empty(),
        "email no longer goes to the outbox"
    );

    let res = reactivate_confirm(&app, &e, &code).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"status": "active"}));
    let t = app.login(&e).await;
    let res = app.me(&t.access).await;
    assert_eq!(json_of(res).await["status"], "active");
    // The code was spent.
    let res = reactivate_confirm(&app, &e, &code).await;
    expect_invalid_code(res, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(relay.received().len(), 1);
}

#[actix_web::test]
async fn sms_stays_in_the_outbox_while_email_goes_by_smtp() {
    let relay = Relay::start();
    let app = spawn_app_with(|c| email_by_smtp(c, &relay)).await;
    let (e, t) = app.new_user_with_phone(PHONE).await;
    let id = json_of(app.me(&t.access).await).await["id"].clone();

    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    let lines = app.outbox();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let sms_code = assert_outbox_line(&lines[0], "sms", "verify_phone", PHONE, &id);
    let res = app.phone_confirm(&t.access, &sms_code).await;
    assert_eq!(res.status(), 200);
    assert!(relay.received().is_empty(), "no SMS by email");

    deactivate(&app, &t.access).await;
    let res = reactivate_request(&app, &e).await;
    assert_eq!(res.status(), 204);
    let mail = relay.wait(1).await.remove(0);
    let code = assert_reactivation_email(&mail, &e);
    assert_eq!(app.outbox().len(), 1, "no email in the outbox");
    let res = reactivate_confirm(&app, &e, &code).await;
    assert_eq!(res.status(), 200);
}

/// `bp_deliveries_total{channel, outcome}` of `server`.
async fn deliveries(server: &ServerProcess, channel: &str, outcome: &str) -> u64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    let series = format!("bp_deliveries_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[actix_web::test]
async fn a_stopped_smtp_server_gets_nothing_and_nothing_is_left_behind() {
    // The real binary, configured through the environment, for a metrics registry of its own.
    let mut relay = Relay::start();
    relay.stop();
    let data = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let url = relay.url();
    let env = [
        ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
        ("BP_AUTH__DELIVERY__SMTP_URL", url.as_str()),
        ("BP_AUTH__DELIVERY__SMTP_FROM", FROM),
        ("BP_AUTH__DELIVERY__SMTP_TIMEOUT_MS", "3000"),
    ];
    let data = data.path();
    let server = ServerProcess::start_logged(data, &env, &log).await;
    let e = deactivated_user(&server).await;

    // The request answers 204 whatever happens next (the delivery runs after the answer).
    let res = reactivate_request(&server, &e).await;
    assert_eq!(res.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries(&server, "email", "failed").await == 0 {
        assert!(Instant::now() < deadline, "the failed send is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deliveries(&server, "email", "sent").await, 0);
    assert!(read_outbox(data).is_empty(), "no fallback to the outbox");
    let res = reactivate_confirm(&server, &e, "123456").await;
    expect_invalid_code(res, None).await;

    // With the relay back, a new request sends at once: the failed one was not recorded
    // against codes.resend_seconds (60 s), nor did it leave a code.
    relay.restart();
    let res = reactivate_request(&server, &e).await;
    assert_eq!(res.status(), 204);
    let mail = relay.wait(1).await.remove(0);
    let code = assert_reactivation_email(&mail, &e);
    assert_eq!(deliveries(&server, "email", "sent").await, 1);
    let res = reactivate_confirm(&server, &e, &code).await;
    assert_eq!(res.status(), 200);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("127.0.0.1"),
        "the relay's host is logged: {logged}"
    );
    assert!(!logged.contains(&code), "no code in the log: {logged}");
    assert!(
        !logged.contains("smtp://"),
        "no SMTP URL in the log: {logged}"
    );
}

/// Starts the binary with `env` on a throwaway data dir; it must refuse to start. Its stderr.
fn refused_start(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bp-auth"));
    cmd.arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_to_exit(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "refused: {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[actix_web::test]
async fn incomplete_smtp_settings_stop_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = refused_start(dir.path(), &[("BP_AUTH__DELIVERY__EMAIL", "smtp")]);
    assert!(stderr.contains("delivery.smtp_url"), "{stderr}");
    let stderr = refused_start(
        dir.path(),
        &[
            ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
            ("BP_AUTH__DELIVERY__SMTP_URL", "smtp://mail.example:587"),
        ],
    );
    assert!(stderr.contains("delivery.smtp_from"), "{stderr}");
    let stderr = refused_start(
        dir.path(),
        &[
            ("BP_AUTH__DELIVERY__EMAIL", "smtp"),
            (
                "BP_AUTH__DELIVERY__SMTP_URL",
                "smtp://bp:hunter2@mail.example:25?tls=none",
            ),
            ("BP_AUTH__DELIVERY__SMTP_FROM", FROM),
        ],
    );
    assert!(stderr.contains("in clear"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // SMTP for SMS too: refused, with the way out.
    let stderr = refused_start(dir.path(), &[("BP_AUTH__DELIVERY__KIND", "smtp")]);
    assert!(stderr.contains("delivery.sms"), "{stderr}");
    let stderr = refused_start(dir.path(), &[("BP_AUTH__DELIVERY__SMS", "smtp")]);
    assert!(stderr.contains("delivery.sms"), "{stderr}");
}

#[actix_web::test]
async fn a_verification_email_by_smtp_and_502_with_the_relay_down() {
    let mut relay = Relay::start();
    let app = spawn_app_with(|c| email_by_smtp(c, &relay)).await;
    let (e, tokens) = app.new_user().await;

    let res = app
        .post_bearer("/api/auth/verify-email/request", &tokens.access, None)
        .await;
    assert_eq!(res.status(), 200);
    let mail = relay.wait(1).await.remove(0);
    assert_eq!(header(&mail, "From"), FROM);
    assert_eq!(header(&mail, "To"), e);
    let subject = header(&mail, "Subject").to_string();
    assert!(!subject.is_empty());
    let text: String = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap_or("").to_string())
        .collect();
    let codes = six_digit_runs(&text);
    assert!(!codes.is_empty(), "the code is in the body");
    let code = codes[0].clone();
    print_headers(&mail);

    // With the relay down, a request that must send answers 502 and leaves no code behind.
    relay.stop();
    let (_, other) = app.new_user().await;
    let res = app
        .post_bearer("/api/auth/verify-email/request", &other.access, None)
        .await;
    expect_error(res, 502, "delivery_failed").await;
    let res = app
        .post_bearer(
            "/api/auth/verify-email/confirm",
            &other.access,
            Some(&json!({"code": "000000"})),
        )
        .await;
    expect_error(res, 400, "code_expired").await;

    // The first user's code still confirms.
    let res = app
        .post_bearer(
            "/api/auth/verify-email/confirm",
            &tokens.access,
            Some(&json!({ "code": code })),
        )
        .await;
    assert_eq!(json_of(res).await, json!({"email_verified": true}));
}
