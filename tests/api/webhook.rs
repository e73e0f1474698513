//! Code delivery through an HTTP webhook: the outbox line's JSON POSTed with
//! `X-BP-Signature: sha256=<hex HMAC-SHA256 of the body>`, and what a failed delivery leaves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bp_auth::config::DeliveryKind;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const SECRET: &str = "test-secret";
const PHONE: &str = "+447700900123";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("body is JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// A tiny HTTP receiver on 127.0.0.1: records each request and answers 500 to the first
/// `fail_first` of them, 200 to the rest.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = task_log.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, log, seen, fail_first).await;
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/codes"),
            log,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, records it, answers, closes.
async fn serve(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    seen: Arc<AtomicUsize>,
    fail_first: usize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
    });
    let status = if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`, computed here.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn spawn_with_webhook(
    url: &str,
    tweak: impl FnOnce(&mut bp_auth::config::Config),
) -> TestApp {
    let url = url.to_string();
    spawn_app_with(move |c| {
        c.delivery.kind = DeliveryKind::Webhook;
        c.delivery.webhook_url = url;
        c.delivery.webhook_secret = SECRET.into();
        tweak(c);
    })
    .await
}

/// A signed POST of the code message; returns its body.
fn assert_signed_delivery(r: &Received) -> Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/codes");
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{r:?}"
    );
    let timestamp = r
        .header("x-bp-timestamp")
        .expect("X-BP-Timestamp")
        .to_string();
    let sent_at: i64 = timestamp.parse().expect("unix seconds");
    assert!(
        (sent_at - now_secs()).abs() <= 5,
        "X-BP-Timestamp is the time of sending: {timestamp}"
    );
    assert_eq!(
        r.header("x-bp-signature"),
        Some(expected_signature(SECRET, &timestamp, &r.body).as_str()),
        "X-BP-Signature is the HMAC of \"<timestamp>.<body>\" as sent"
    );
    let body = r.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["channel", "code", "purpose", "sent_at", "to", "user_id"],
        "{body}"
    );
    assert_six_digits(&body["code"], "code");
    assert_rfc3339_z(&body["sent_at"], "sent_at");
    body
}

#[actix_web::test]
async fn phone_codes_are_posted_signed() {
    let receiver = Receiver::start(0).await;
    let app = spawn_with_webhook(&receiver.url, |_| {}).await;
    let e = email();
    let res = app
        .register_raw(&json!({"email": e, "password": PASSWORD, "phone": PHONE}))
        .await;
    assert_eq!(res.status(), 201);
    let id = json_of(res).await["id"].clone();
    let t = app.login(&e).await;

    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        json_of(res).await,
        json!({"sent": true, "destination": "+44*******123", "expires_in": 600, "resend_after": 60})
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one delivery, before the answer: {got:?}");
    let body = assert_signed_delivery(&got[0]);
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["purpose"], "verify_phone");
    assert_eq!(body["to"], PHONE);
    assert_eq!(body["user_id"], id);
    assert!(app.outbox().is_empty(), "the webhook replaces the outbox");

    let code = body["code"].as_str().unwrap();
    let res = app.phone_confirm(&t.access, code).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"phone_verified": true}));
}

#[actix_web::test]
async fn reactivation_codes_are_posted_signed() {
    let receiver = Receiver::start(0).await;
    let app = spawn_with_webhook(&receiver.url, |_| {}).await;
    let e = email();
    let id = app.register(&e).await["id"].clone();
    let t = app.login(&e).await;
    let res = app
        .post_bearer(
            "/api/auth/deactivate",
            &t.access,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(res.status(), 204);

    let res = app
        .post_json("/api/auth/reactivate/request", &json!({"email": e}))
        .await;
    assert_eq!(res.status(), 204);
    let got = wait_for_len("the receiver's requests", 1, || receiver.received()).await;
    let body = assert_signed_delivery(&got[0]);
    assert_eq!(body["channel"], "email");
    assert_eq!(body["purpose"], "reactivate");
    assert_eq!(body["to"], e);
    assert_eq!(body["user_id"], id);

    let res = app
        .post_json(
            "/api/auth/reactivate/confirm",
            &json!({"email": e, "code": body["code"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await, json!({"status": "active"}));
}

#[actix_web::test]
async fn a_failing_webhook_is_502_and_leaves_no_code() {
    let receiver = Receiver::start(usize::MAX).await;
    let app = spawn_with_webhook(&receiver.url, |_| {}).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;

    let res = app.phone_request(&t.access).await;
    expect_error(res, 502, "delivery_failed").await;
    // delivery.webhook_retries = 2: three attempts, each the same signed message.
    let got = receiver.received();
    assert_eq!(got.len(), 3, "{got:?}");
    let first = assert_signed_delivery(&got[0]);
    for r in &got[1..] {
        assert_eq!(assert_signed_delivery(r), first);
    }

    // No code is pending: not even the one that was attempted.
    let code = first["code"].as_str().unwrap();
    let res = app.phone_confirm(&t.access, code).await;
    expect_error(res, 400, "code_expired").await;
    let res = app.me(&t.access).await;
    assert_eq!(json_of(res).await["phone_verified"], false);
}

#[actix_web::test]
async fn a_failed_delivery_uses_up_no_resend_allowance() {
    // Fails the three attempts of the first request, then accepts.
    let receiver = Receiver::start(3).await;
    let app = spawn_with_webhook(&receiver.url, |_| {}).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;

    let res = app.phone_request(&t.access).await;
    expect_error(res, 502, "delivery_failed").await;
    assert_eq!(receiver.received().len(), 3);
    let res = app.phone_confirm(&t.access, "000000").await;
    expect_error(res, 400, "code_expired").await;

    // With the default 60 s resend interval, a recorded send would make this a 429.
    let res = app.phone_request(&t.access).await;
    assert_eq!(res.status(), 200);
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    let body = assert_signed_delivery(&got[3]);
    let res = app
        .phone_confirm(&t.access, body["code"].as_str().unwrap())
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn an_unreachable_webhook_is_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/codes");
    let app = spawn_with_webhook(&url, |c| c.delivery.webhook_timeout_ms = 1_000).await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let res = app.phone_request(&t.access).await;
    expect_error(res, 502, "delivery_failed").await;
    let res = app.phone_confirm(&t.access, "123456").await;
    expect_error(res, 400, "code_expired").await;
    // Nothing was recorded against the resend limits either.
    let res = app.phone_request(&t.access).await;
    expect_error(res, 502, "delivery_failed").await;
}

#[actix_web::test]
async fn a_webhook_that_never_answers_times_out_into_502() {
    // Accepts connections and reads, but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let url = format!("http://127.0.0.1:{port}/hooks/codes");
    let app = spawn_with_webhook(&url, |c| {
        c.delivery.webhook_timeout_ms = 300;
        c.delivery.webhook_retries = 1;
    })
    .await;
    let (_, t) = app.new_user_with_phone(PHONE).await;
    let res = app.phone_request(&t.access).await;
    expect_error(res, 502, "delivery_failed").await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "one try and one retry");
    let res = app.phone_confirm(&t.access, "123456").await;
    expect_error(res, 400, "code_expired").await;
    task.abort();
}
