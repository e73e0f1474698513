//! A login flood against a small hashing pool (one thread, four waiting): the excess is shed
//! at once with 503 `overloaded` and `Retry-After`, never a 500, while `/healthz` and `/me`
//! (which hash nothing) keep answering. The p99 of `/me` under the flood and alone is printed
//! for the closing note; no assertion is made on speed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Client;

use crate::helpers::*;

const CONCURRENT_LOGINS: usize = 64;
const SAMPLES: usize = 500;
const FLOOD_SECONDS: Duration = Duration::from_secs(4);

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort_unstable();
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// One login's outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    overloaded: usize,
    other: usize,
    server_errors: usize,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.ok += t.ok;
        self.overloaded += t.overloaded;
        self.other += t.other;
        self.server_errors += t.server_errors;
    }

    fn total(&self) -> usize {
        self.ok + self.overloaded + self.other + self.server_errors
    }
}

async fn one_login(client: &Client, base: &str, email: &str) -> Tally {
    let res = match client
        .post(format!("{base}/api/auth/token"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            println!("flood: a login got no answer: {e}");
            return Tally {
                other: 1,
                ..Tally::default()
            };
        }
    };
    let status = res.status().as_u16();
    let mut t = Tally::default();
    match status {
        200 => t.ok = 1,
        503 => {
            let retry = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = res.text().await.unwrap_or_default();
            if retry.is_some_and(|r| r >= 1) && body.contains("\"overloaded\"") {
                t.overloaded = 1;
            } else {
                println!("flood: a 503 without Retry-After or code overloaded: {retry:?} {body}");
                t.server_errors = 1;
            }
        }
        s if s >= 500 => {
            println!(
                "flood: a login answered {s}: {}",
                res.text().await.unwrap_or_default()
            );
            t.server_errors = 1;
        }
        s => {
            println!("flood: a login answered {s}");
            t.other = 1;
        }
    }
    t
}

/// `CONCURRENT_LOGINS` clients logging in back to back (a shed one waits 20 ms, as a client
/// honouring nothing but a short back-off would) until `stop`, on their own runtime and thread
/// so that the measuring client is not starved by them.
fn flood(base: String, email: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("flood runtime");
        rt.block_on(async move {
            let client = Client::builder()
                .pool_max_idle_per_host(CONCURRENT_LOGINS)
                .build()
                .expect("client");
            let tasks = (0..CONCURRENT_LOGINS).map(|_| {
                let (client, base, email, stop) =
                    (client.clone(), base.clone(), email.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut total = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let t = one_login(&client, &base, &email).await;
                        total.add(t);
                        if t.overloaded > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    total
                })
            });
            let mut total = Tally::default();
            for t in join_all(tasks).await {
                total.add(t.expect("flood task"));
            }
            total
        })
    })
}

/// `n` timed `GET /me` with `token`; every answer must be 200.
async fn time_me(app: &TestApp, client: &Client, token: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let res = client
            .get(app.url("/api/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("/me answers");
        assert_eq!(res.status(), 200, "/me during the flood");
        let _ = res.bytes().await;
        out.push(start.elapsed());
    }
    out
}

#[actix_web::test]
async fn logins_saturating_the_hash_pool_are_shed_and_me_keeps_answering() {
    let app = spawn_app_with(|c| {
        c.password.max_queue = 4;
        c.password.hash_threads = 1;
        // Failures are not what this measures; keep the login throttle out of the way, and
        // the cap per account too (the flood logs one account in; tests/api/abuse.rs shows the
        // cap keeping the pool for others).
        c.rate_limit.enabled = false;
        c.password.max_in_flight_per_account = 1_000;
    })
    .await;
    let e = email();
    app.register(&e).await;
    // The probe is another user: the flood's own logins soon pass `tokens.max_sessions_per_user`
    // and end that account's oldest sessions, as they should.
    let (_, probe_tokens) = app.new_user().await;
    let token = probe_tokens.access;
    let probe = Client::new();

    // /me alone (after a warm-up that also fills the token cache).
    time_me(&app, &probe, &token, 20).await;
    let alone = time_me(&app, &probe, &token, SAMPLES).await;

    // The flood, while /me and /healthz are measured for FLOOD_SECONDS.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(app.address.clone(), e.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut under = Vec::new();
    let mut health = 0;
    while started.elapsed() < FLOOD_SECONDS {
        under.extend(time_me(&app, &probe, &token, 10).await);
        let res = probe
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("/healthz answers");
        assert_eq!(res.status(), 200, "/healthz during the flood");
        health += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = flooder.join().expect("flood thread");

    let p50_alone = percentile(alone.clone(), 0.50);
    let p99_alone = percentile(alone, 0.99);
    let p50_flood = percentile(under.clone(), 0.50);
    let p99_flood = percentile(under.clone(), 0.99);
    println!(
        "flood: {CONCURRENT_LOGINS} clients logging in back to back for {:.1} s (hash_threads 1, max_queue 4): \
         {} logins, {} ok, {} shed with 503 overloaded, {} other, {} server errors",
        FLOOD_SECONDS.as_secs_f64(),
        total.total(),
        total.ok, total.overloaded, total.other, total.server_errors
    );
    println!(
        "flood: GET /me alone: p50 {:.2} ms, p99 {:.2} ms ({SAMPLES} requests)",
        p50_alone.as_secs_f64() * 1e3,
        p99_alone.as_secs_f64() * 1e3
    );
    println!(
        "flood: GET /me under the login flood: p50 {:.2} ms, p99 {:.2} ms ({} requests, {health} /healthz all 200)",
        p50_flood.as_secs_f64() * 1e3,
        p99_flood.as_secs_f64() * 1e3,
        under.len()
    );
    assert_eq!(total.server_errors, 0, "no 5xx other than 503 overloaded");
    assert_eq!(total.other, 0, "every login is 200 or 503");
    assert!(
        total.overloaded > 0,
        "a saturated pool sheds logins with 503"
    );
    assert!(total.ok > 0, "logins that got a hashing slot succeed");
    // After the flood, logins work again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.login(&e).await;
}
