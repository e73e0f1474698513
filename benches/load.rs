//! The HTTP load harness: `cargo bench --bench load -- [--quick] [--url URL] [--users N]
//! [--duration SECS] [--connections N] [--scenarios a,b,c] [--memory-users N]`.
//!
//! Unless `--url` names a running server, it seeds `--users` accounts directly through the store
//! on a temporary data dir (one argon2id hash of a known password, reused for every account),
//! starts bp-auth in this process on a free port, and drives it over keep-alive HTTP/1.1: one
//! client (so one connection) per `--connections`, each a task sending its next request as soon
//! as the last one answered. Each scenario runs a short warm-up, then `--duration` seconds
//! measured: a request counts if it completes inside the measured window; every answer that is
//! not 2xx (or no answer) is an error. `argon2-raw` is the machine's own password-hash rate at
//! the configured parameters, one thread per core, measured in the same run, so that `login` and
//! `register` can be read as a fraction of what the hardware allows.
//!
//! Results: a table on stdout, `report.json` and `chart.svg` under `target/bench-report/`.
//!
//! Memory per idle loaded user (`--memory-users`, in-process runs only) is measured on a
//! separate `bp-auth` process (the real binary) started on its own seeded data dir, so that
//! neither this process's client nor memory freed by the earlier phases blurs the figure: its
//! VmRSS is read before and after every seeded user has been loaded into its actor, by a
//! refresh with a well-formed token of that user whose secret is random (the actor loads, finds
//! no such session, and the answer is 401).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_auth::config::{Config, Durability};
use bp_auth::domain::apikey::ApiKey;
use bp_auth::domain::credentials::Email;
use bp_auth::domain::ids::{SessionId, UserId};
use bp_auth::domain::password::Hasher;
use bp_auth::domain::secrets::{random_32, RefreshToken};
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::startup::Application;
use bp_auth::store::sled::SledStore;
use bp_auth::store::{Created, IndexChange, Store};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Client;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

/// The password of every seeded and registered account: long, not a common one, not an email.
const PASSWORD: &str = "bench: correct horse battery staple";

#[derive(Parser, Debug)]
#[command(
    name = "load",
    about = "HTTP load harness for bp-auth: throughput and latency per flow, as ratios of the \
             machine's own limits (healthz, argon2-raw) measured in the same run"
)]
struct Args {
    /// A short run (2 s a scenario, 200 users, 16 connections, 2,000 memory users).
    #[arg(long)]
    quick: bool,
    /// Drive a running server instead of starting one in this process (`http://127.0.0.1:8080`).
    /// Accounts are then registered over HTTP, and `refresh-periodic` and the memory figure,
    /// which need a server of their own, are skipped.
    #[arg(long)]
    url: Option<String>,
    /// Accounts seeded before the scenarios [default: 1000; quick: 200].
    #[arg(long)]
    users: Option<usize>,
    /// Measured seconds per scenario, after a warm-up of a quarter of it (at most 2 s)
    /// [default: 10; quick: 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent keep-alive connections [default: 64; quick: 16].
    #[arg(long)]
    connections: Option<usize>,
    /// Scenarios to run, comma-separated [default: all]: healthz, me-jwt, me-apikey,
    /// entitlements, login, register, refresh, refresh-periodic, mixed, argon2-raw.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Idle users loaded to measure resident memory per user; 0 skips it
    /// [default: 100000; quick: 2000].
    #[arg(long)]
    memory_users: Option<usize>,
    /// Where report.json and chart.svg go [default: target/bench-report].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`. Without it (`cargo test --benches` runs bench targets that way)
    /// the harness only smoke-tests itself: a fraction of a second per scenario, no report
    /// unless `--out` is given.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How long and how large a run is, before explicit options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Standard,
    Quick,
    /// Run by `cargo test`, not `cargo bench`: proves the harness works, measures nothing.
    Smoke,
}

impl Mode {
    fn pick<T>(self, standard: T, quick: T, smoke: T) -> T {
        match self {
            Mode::Standard => standard,
            Mode::Quick => quick,
            Mode::Smoke => smoke,
        }
    }

    fn name(self) -> &'static str {
        self.pick("standard", "quick", "smoke test")
    }
}

/// The resolved settings of a run.
#[derive(Debug, Clone)]
struct Settings {
    mode: Mode,
    url: Option<String>,
    users: usize,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    scenarios: Vec<Kind>,
    memory_users: usize,
    /// Where the report goes; `None` writes none (smoke tests).
    out: Option<PathBuf>,
    cores: usize,
}

impl Settings {
    fn from_args(a: Args) -> Res<Self> {
        let mode = match (a.bench, a.quick) {
            (false, _) => Mode::Smoke,
            (true, true) => Mode::Quick,
            (true, false) => Mode::Standard,
        };
        let duration = Duration::from_secs_f64(a.duration.unwrap_or(mode.pick(10.0, 2.0, 0.3)));
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        let scenarios = match a.scenarios {
            None => Kind::ALL.to_vec(),
            Some(names) => {
                let mut picked = Vec::new();
                for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                    let k = Kind::parse(n).ok_or_else(|| {
                        format!(
                            "unknown scenario {n:?}; known: {}",
                            Kind::ALL.map(Kind::name).join(", ")
                        )
                    })?;
                    if !picked.contains(&k) {
                        picked.push(k);
                    }
                }
                // Always in the canonical order, so runs compare line by line.
                Kind::ALL
                    .into_iter()
                    .filter(|k| picked.contains(k))
                    .collect()
            }
        };
        let default_out = || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
                .join("bench-report")
        };
        let out = match (a.out, mode) {
            (Some(out), _) => Some(out),
            (None, Mode::Smoke) => None,
            (None, _) => Some(default_out()),
        };
        let connections = a.connections.unwrap_or(mode.pick(64, 16, 4)).max(1);
        Ok(Self {
            mode,
            url: a.url.map(|u| u.trim_end_matches('/').to_string()),
            users: a.users.unwrap_or(mode.pick(1_000, 200, 50)).max(1),
            warmup: (duration / 4).min(Duration::from_secs(2)),
            duration,
            connections,
            scenarios,
            memory_users: a.memory_users.unwrap_or(mode.pick(100_000, 2_000, 200)),
            out,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    fn in_process(&self) -> bool {
        self.url.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthz,
    MeJwt,
    MeApiKey,
    Entitlements,
    Login,
    Register,
    Refresh,
    RefreshPeriodic,
    Mixed,
    Argon2Raw,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Healthz,
        Kind::MeJwt,
        Kind::MeApiKey,
        Kind::Entitlements,
        Kind::Login,
        Kind::Register,
        Kind::Refresh,
        Kind::RefreshPeriodic,
        Kind::Mixed,
        Kind::Argon2Raw,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::MeJwt => "me-jwt",
            Kind::MeApiKey => "me-apikey",
            Kind::Entitlements => "entitlements",
            Kind::Login => "login",
            Kind::Register => "register",
            Kind::Refresh => "refresh",
            Kind::RefreshPeriodic => "refresh-periodic",
            Kind::Mixed => "mixed",
            Kind::Argon2Raw => "argon2-raw",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// What one operation is, for the table's notes.
    fn what(self) -> &'static str {
        match self {
            Kind::Healthz => "GET /healthz (the floor: routing, middleware, JSON)",
            Kind::MeJwt => "GET /api/auth/me, bearer access tokens from setup logins",
            Kind::MeApiKey => "GET /api/auth/me, X-API-Key",
            Kind::Entitlements => "GET /api/auth/me/entitlements, bearer",
            Kind::Login => "POST /api/auth/token (form), argon2id verify + durable session",
            Kind::Register => "POST /api/auth/register, argon2id hash + durable create",
            Kind::Refresh => "POST /api/auth/refresh, one chain per connection, flush durability",
            Kind::RefreshPeriodic => "the same on a second server with periodic durability",
            Kind::Mixed => "~90% /me, ~8% refresh, ~2% login",
            Kind::Argon2Raw => "argon2id hashes, one thread per core, no HTTP",
        }
    }
}

// -------------------------------------------------------------------------------------------
// Results
// -------------------------------------------------------------------------------------------

/// One scenario's figures.
struct Outcome {
    kind: Kind,
    /// Why it did not run, if it did not.
    skipped: Option<String>,
    requests: u64,
    errors: u64,
    /// Errors during the warm-up (not in `errors`, reported apart).
    warmup_errors: u64,
    seconds: f64,
    hist: Histogram<u64>,
    /// A few distinct error messages.
    samples: Vec<String>,
    /// This harness's share of the process's CPU time in the measured window, when the server
    /// runs in this process (the rest is the server's).
    client_cpu: Option<f64>,
}

impl Outcome {
    fn skipped(kind: Kind, why: impl Into<String>) -> Self {
        Self {
            skipped: Some(why.into()),
            ..Self::empty(kind)
        }
    }

    fn empty(kind: Kind) -> Self {
        Self {
            kind,
            skipped: None,
            requests: 0,
            errors: 0,
            warmup_errors: 0,
            seconds: 0.0,
            hist: new_hist(),
            samples: Vec::new(),
            client_cpu: None,
        }
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A quantile in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 2 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

struct Memory {
    users: usize,
    warmup_users: usize,
    rss_started_kib: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    unexpected: u64,
    /// The server's own count (`bp_resident_actors` on `/metrics`), when it exposes one.
    resident_actors: Option<u64>,
    seconds: f64,
}

impl Memory {
    fn bytes_per_user(&self) -> f64 {
        let loaded = self.users.saturating_sub(self.warmup_users).max(1);
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) * 1024) as f64 / loaded as f64
    }
}

// -------------------------------------------------------------------------------------------
// Seeding and the in-process server
// -------------------------------------------------------------------------------------------

fn server_config(data_dir: &Path, durability: Durability) -> Config {
    let mut c = Config::default_with_plans();
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = data_dir.to_path_buf();
    c.rate_limit.enabled = false;
    c.log.level = "warn".into();
    c.cookie.secure = false;
    c.storage.durability = durability;
    c
}

fn hasher(config: &Config) -> Res<Hasher> {
    let p = &config.password;
    Ok(Hasher::new(
        p.argon2_memory_kib,
        p.argon2_iterations,
        p.argon2_parallelism,
    )?)
}

/// Accounts written straight to the store.
struct Seeded {
    emails: Vec<String>,
    ids: Vec<UserId>,
    api_keys: Vec<String>,
}

fn counter_bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:32}] {pos}/{len} ({per_sec}, {eta})")
            .expect("bar template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

/// Seeds `n` accounts under `<data_dir>/db` with the one PHC string, optionally each with an
/// API key (the key is in the snapshot and in the key index, as `GET /api-key` would leave it).
fn seed(
    config: &Config,
    phc: &str,
    prefix: &str,
    n: usize,
    with_keys: bool,
) -> Res<(Seeded, Duration)> {
    let start = Instant::now();
    let store = SledStore::open(&config.server.data_dir.join("db"), &config.storage)?;
    let pb = counter_bar(n as u64, format!("seeding {prefix} accounts"));
    let now = bp_auth::clock::now();
    let mut seeded = Seeded {
        emails: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        api_keys: Vec::new(),
    };
    for i in 0..n {
        let email = format!("{prefix}-{i}@bench.example.com");
        let mut user = UserState::register(
            NewUser {
                email: Email::parse(&email).map_err(|e| format!("{email}: {e:?}"))?,
                full_name: None,
                phone: None,
                password_hash: phc.to_string(),
            },
            now,
        );
        let key = with_keys.then(|| ApiKey::generate(now));
        if let Some(k) = &key {
            user.api_key = Some(k.record.clone());
        }
        match store.create_user(&user)? {
            Created::Yes(_) => {}
            Created::EmailTaken => return Err(format!("{email} seeded twice").into()),
        }
        if let Some(k) = key {
            store.save_user(&user, &[IndexChange::ApiKeyPut(k.record.digest)])?;
            seeded.api_keys.push(k.secret);
        }
        seeded.emails.push(email);
        seeded.ids.push(user.id);
        if i % 256 == 0 {
            pb.set_position(i as u64);
        }
    }
    pb.finish_and_clear();
    // Dropping the store flushes it and releases the data dir for the server.
    drop(store);
    Ok((seeded, start.elapsed()))
}

/// bp-auth running on its own thread, in an actix system, as `main` runs it.
struct InProcess {
    base: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

fn start_in_process(config: Config) -> Res<InProcess> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bp-auth-server".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                match Application::build(config) {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.handle())));
                        if let Err(e) = app.run_until_stopped().await {
                            eprintln!("bp-auth stopped with an error: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        })?;
    let (port, handle) = rx.recv()??;
    Ok(InProcess {
        base: format!("http://127.0.0.1:{port}"),
        handle,
        thread,
    })
}

impl InProcess {
    async fn stop(self) {
        self.handle.stop(false).await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// A keep-alive client: one per connection, so one TCP connection each.
fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

async fn wait_ready(base: &str) -> Res<()> {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{base} did not become ready").into())
}

// -------------------------------------------------------------------------------------------
// Requests
// -------------------------------------------------------------------------------------------

/// The body of a 2xx answer, or why there was none.
async fn body_2xx(
    res: reqwest::Result<reqwest::Response>,
) -> Result<impl AsRef<[u8]> + Send, String> {
    let res = res.map_err(|e| format!("transport: {e}"))?;
    let status = res.status();
    let body = res.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        Err(format!("HTTP {}: {text}", status.as_u16()))
    }
}

/// The tokens of a login or refresh.
#[derive(Clone)]
struct Chain {
    email: String,
    access: String,
    refresh: String,
}

fn tokens_of(body: &[u8], email: &str) -> Result<Chain, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("token JSON: {e}"))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no {k} in {v}"))
    };
    Ok(Chain {
        email: email.to_string(),
        access: field("access_token")?,
        refresh: field("refresh_token")?,
    })
}

async fn login(client: &Client, base: &str, email: &str) -> Result<Chain, String> {
    let res = client
        .post(format!("{base}/api/auth/token"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await;
    let body = body_2xx(res).await?;
    tokens_of(body.as_ref(), email)
}

async fn register(client: &Client, base: &str, email: &str) -> Result<(), String> {
    let res = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await;
    body_2xx(res).await.map(drop)
}

/// Runs `f` over `items` with `concurrency` in flight, one client per slot, with a progress bar.
async fn fan_out<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    msg: &str,
    f: F,
) -> Vec<Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Client, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, String>> + Send + 'static,
{
    let pb = counter_bar(items.len() as u64, msg);
    let clients: Vec<Client> = (0..concurrency.max(1)).map(|_| client()).collect();
    let f = Arc::new(f);
    let results = futures_util::stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| {
            let c = clients[i % clients.len()].clone();
            let f = f.clone();
            let pb = pb.clone();
            async move {
                let r = tokio::spawn(f(c, item))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                pb.inc(1);
                r
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    pb.finish_and_clear();
    results
}

/// What the HTTP scenarios draw on.
struct Pool {
    base: String,
    /// Access tokens of distinct users, from logins made during setup.
    jwts: Vec<String>,
    api_keys: Vec<String>,
    /// Accounts that log in with [`PASSWORD`].
    emails: Vec<String>,
    /// Distinguishes this run's registrations from any earlier run's.
    run_id: String,
}

/// One connection's state inside a scenario.
struct Conn {
    id: usize,
    client: Client,
    rng: u64,
    chain: Option<Chain>,
    chain_broken: bool,
    registered: u64,
}

impl Conn {
    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, len: usize) -> usize {
        (self.next_u64() % len.max(1) as u64) as usize
    }
}

async fn step(kind: Kind, pool: &Pool, conn: &mut Conn) -> Result<(), String> {
    let base = &pool.base;
    match kind {
        Kind::Healthz => body_2xx(conn.client.get(format!("{base}/healthz")).send().await)
            .await
            .map(drop),
        Kind::MeJwt => me_jwt(pool, conn, "/api/auth/me").await,
        Kind::Entitlements => me_jwt(pool, conn, "/api/auth/me/entitlements").await,
        Kind::MeApiKey => {
            let key = &pool.api_keys[conn.pick(pool.api_keys.len())];
            let res = conn
                .client
                .get(format!("{base}/api/auth/me"))
                .header("x-api-key", key)
                .send()
                .await;
            body_2xx(res).await.map(drop)
        }
        Kind::Login => {
            let email = &pool.emails[conn.pick(pool.emails.len())];
            login(&conn.client, base, email).await.map(drop)
        }
        Kind::Register => {
            conn.registered += 1;
            let email = format!(
                "reg-{}-{}-{}@bench.example.com",
                pool.run_id, conn.id, conn.registered
            );
            register(&conn.client, base, &email).await
        }
        Kind::Refresh | Kind::RefreshPeriodic => refresh(pool, conn).await,
        Kind::Mixed => match conn.next_u64() % 100 {
            0..=89 => me_jwt(pool, conn, "/api/auth/me").await,
            90..=97 => refresh(pool, conn).await,
            _ => {
                let email = &pool.emails[conn.pick(pool.emails.len())];
                login(&conn.client, base, email).await.map(drop)
            }
        },
        Kind::Argon2Raw => Err("argon2-raw is not an HTTP scenario".into()),
    }
}

async fn me_jwt(pool: &Pool, conn: &mut Conn, path: &str) -> Result<(), String> {
    let token = &pool.jwts[conn.pick(pool.jwts.len())];
    let res = conn
        .client
        .get(format!("{}{path}", pool.base))
        .bearer_auth(token)
        .send()
        .await;
    body_2xx(res).await.map(drop)
}

async fn refresh(pool: &Pool, conn: &mut Conn) -> Result<(), String> {
    let Some(chain) = conn.chain.as_mut() else {
        conn.chain_broken = true;
        return Err("no refresh chain".into());
    };
    let res = conn
        .client
        .post(format!("{}/api/auth/refresh", pool.base))
        .json(&json!({"refresh_token": chain.refresh}))
        .send()
        .await;
    let next = match body_2xx(res).await {
        Ok(body) => tokens_of(body.as_ref(), &chain.email),
        Err(e) => Err(e),
    };
    match next {
        Ok(next) => {
            *chain = next;
            Ok(())
        }
        Err(e) => {
            conn.chain_broken = true;
            Err(e)
        }
    }
}

/// The name of the client runtime's threads, to tell their CPU time from the server's.
const CLIENT_THREAD: &str = "bench-client";

/// CPU time (clock ticks) of this process's client threads (the runtime's and the main
/// thread) and of all its other threads, from `/proc/self/task`.
fn cpu_split() -> Option<(u64, u64)> {
    let pid = std::process::id().to_string();
    let (mut client, mut other) = (0u64, 0u64);
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // the thread has ended
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        // After the name come fields 3.. of proc(5); utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
            .unwrap_or(0);
        if name.starts_with(CLIENT_THREAD) || entry.file_name().to_str() == Some(pid.as_str()) {
            client += ticks;
        } else {
            other += ticks;
        }
    }
    Some((client, other))
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
}

/// Runs one HTTP scenario; returns its outcome and the connections' refresh chains.
async fn run_http(
    kind: Kind,
    pool: Arc<Pool>,
    chains: Vec<Option<Chain>>,
    s: &Settings,
) -> (Outcome, Vec<Option<Chain>>) {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + s.warmup;
    let deadline = measure_from + s.duration;
    let pb = scenario_bar(kind, s.warmup + s.duration);
    let ticker = tick(pb.clone(), live.clone(), start);

    let mut tasks = Vec::with_capacity(chains.len());
    for (id, chain) in chains.into_iter().enumerate() {
        let pool = pool.clone();
        let live = live.clone();
        let mut conn = Conn {
            id,
            client: client(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            chain,
            chain_broken: false,
            registered: 0,
        };
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut n, mut errors, mut warm_errors) = (0u64, 0u64, 0u64);
            let mut samples: Vec<String> = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let r = step(kind, &pool, &mut conn).await;
                let t1 = Instant::now();
                let measured = t1 >= measure_from && t1 <= deadline;
                if measured {
                    n += 1;
                    hist.saturating_record(t1.duration_since(t0).as_micros() as u64);
                    live.done.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = r {
                    if measured {
                        errors += 1;
                        live.errors.fetch_add(1, Ordering::Relaxed);
                    } else if t1 < measure_from {
                        warm_errors += 1;
                    }
                    if samples.len() < 3 && !samples.contains(&e) {
                        samples.push(e);
                    }
                }
                if conn.chain_broken {
                    // A broken chain (an error) is replaced by a fresh login, outside the timing.
                    if let Some(email) = conn.chain.as_ref().map(|c| c.email.clone()) {
                        conn.chain = login(&conn.client, &pool.base, &email).await.ok();
                    }
                    conn.chain_broken = false;
                }
            }
            (hist, n, errors, warm_errors, samples, conn.chain)
        }));
    }
    // CPU time of the client's threads and of everything else (the in-process servers), over
    // the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = cpu_split();
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_to = cpu_split();
    let mut out = Outcome::empty(kind);
    out.seconds = s.duration.as_secs_f64();
    if let (Some(a), Some(b), true) = (cpu_from, cpu_to, s.in_process()) {
        let client = b.0.saturating_sub(a.0) as f64;
        let server = b.1.saturating_sub(a.1) as f64;
        if client + server > 0.0 {
            out.client_cpu = Some(client / (client + server));
        }
    }
    let mut chains = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok((hist, n, errors, warm, samples, chain)) => {
                let _ = out.hist.add(&hist);
                out.requests += n;
                out.errors += errors;
                out.warmup_errors += warm;
                for e in samples {
                    if out.samples.len() < 5 && !out.samples.contains(&e) {
                        out.samples.push(e);
                    }
                }
                chains.push(chain);
            }
            Err(e) => {
                out.samples.push(format!("connection task failed: {e}"));
                chains.push(None);
            }
        }
    }
    ticker.abort();
    pb.finish_and_clear();
    (out, chains)
}

fn scenario_bar(kind: Kind, total: Duration) -> ProgressBar {
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:32}] {elapsed:>3} {msg}")
            .expect("bar template")
            .progress_chars("=> "),
    );
    pb.set_prefix(kind.name());
    pb
}

fn tick(pb: ProgressBar, live: Arc<Live>, start: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let elapsed = start.elapsed();
            pb.set_position(elapsed.as_millis() as u64);
            let done = live.done.load(Ordering::Relaxed);
            let errors = live.errors.load(Ordering::Relaxed);
            pb.set_message(format!("{done} measured, {errors} errors"));
        }
    })
}

/// The raw argon2id rate: one thread per core, each with its own scratch block, for the
/// scenario's warm-up and duration, counting hashes that complete in the measured window.
async fn run_argon2(config: &Config, s: &Settings) -> Res<Outcome> {
    let h = hasher(config)?;
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + s.warmup;
    let deadline = measure_from + s.duration;
    let pb = scenario_bar(Kind::Argon2Raw, s.warmup + s.duration);
    let ticker = tick(pb.clone(), live.clone(), start);
    let threads: Vec<_> = (0..s.cores)
        .map(|i| {
            let h = h.clone();
            let live = live.clone();
            std::thread::Builder::new()
                .name(format!("argon2-raw-{i}"))
                .spawn(move || {
                    let mut scratch = h.scratch();
                    let mut hist = new_hist();
                    let (mut n, mut errors) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let ok = h.hash(PASSWORD.as_bytes(), &mut scratch).is_ok();
                        let t1 = Instant::now();
                        if t1 >= measure_from && t1 <= deadline {
                            n += 1;
                            errors += u64::from(!ok);
                            hist.saturating_record(t1.duration_since(t0).as_micros() as u64);
                            live.done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (hist, n, errors)
                })
        })
        .collect::<Result<_, _>>()?;
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| "argon2 thread panicked".to_string()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    ticker.abort();
    pb.finish_and_clear();
    let mut out = Outcome::empty(Kind::Argon2Raw);
    out.seconds = s.duration.as_secs_f64();
    for (hist, n, errors) in joined {
        let _ = out.hist.add(&hist);
        out.requests += n;
        out.errors += errors;
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------
// Setup per target
// -------------------------------------------------------------------------------------------

/// Logs in `count` accounts spread over `emails` (setup, not measured).
async fn setup_logins(
    base: &str,
    emails: &[String],
    count: usize,
    offset: usize,
    s: &Settings,
    msg: &str,
) -> Res<Vec<Chain>> {
    let n = emails.len();
    let picked: Vec<String> = (0..count)
        .map(|i| emails[(offset + i * n / count.max(1)) % n].clone())
        .collect();
    let base = base.to_string();
    let results = fan_out(picked, s.connections.min(16), msg, move |c, email| {
        let base = base.clone();
        async move { login(&c, &base, &email).await }
    })
    .await;
    let mut chains = Vec::with_capacity(results.len());
    for r in results {
        chains.push(r.map_err(|e| format!("setup login failed: {e}"))?);
    }
    Ok(chains)
}

/// Whether `path` is served (anything but 404 to a GET with `token`).
async fn route_served(base: &str, path: &str, token: &str) -> bool {
    match client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => r.status() != reqwest::StatusCode::NOT_FOUND,
        Err(_) => false,
    }
}

/// Everything a target needs before its scenarios: accounts, tokens, keys, chains.
struct Prepared {
    pool: Arc<Pool>,
    chains: Vec<Option<Chain>>,
    entitlements_served: bool,
    notes: Vec<String>,
}

async fn prepare(
    base: &str,
    emails: Vec<String>,
    api_keys: Vec<String>,
    s: &Settings,
) -> Res<Prepared> {
    let mut notes = Vec::new();
    let token_users = emails.len().min((4 * s.connections).max(64));
    let started = Instant::now();
    let tokens = setup_logins(base, &emails, token_users, 0, s, "logging in (tokens)").await?;
    // Each connection's own refresh chain, on accounts after the token holders.
    let chains = setup_logins(
        base,
        &emails,
        s.connections,
        token_users,
        s,
        "logging in (refresh chains)",
    )
    .await?;
    notes.push(format!(
        "setup: {} logins for access tokens and {} for refresh chains in {:.1} s",
        tokens.len(),
        chains.len(),
        started.elapsed().as_secs_f64()
    ));
    let jwts: Vec<String> = tokens.iter().map(|c| c.access.clone()).collect();
    let mut api_keys = api_keys;
    if api_keys.is_empty() {
        // Against a running server: each token holder's key, as a client would obtain it.
        if route_served(base, "/api/auth/api-key", &jwts[0]).await {
            let b = base.to_string();
            let results = fan_out(
                jwts.clone(),
                s.connections.min(16),
                "fetching API keys",
                move |c, t| {
                    let b = b.clone();
                    async move {
                        let res = c
                            .get(format!("{b}/api/auth/api-key"))
                            .bearer_auth(&t)
                            .send()
                            .await;
                        let body = body_2xx(res).await?;
                        let v: Value =
                            serde_json::from_slice(body.as_ref()).map_err(|e| e.to_string())?;
                        v["key"].as_str().map(str::to_string).ok_or_else(|| {
                            "the key was issued before: no secret in the answer".to_string()
                        })
                    }
                },
            )
            .await;
            api_keys = results.into_iter().filter_map(Result::ok).collect();
        } else {
            notes.push("GET /api/auth/api-key answers 404: me-apikey skipped".into());
        }
    }
    let entitlements_served = route_served(base, "/api/auth/me/entitlements", &jwts[0]).await;
    let run_id = format!(
        "{:08x}",
        u32::from_le_bytes(random_32()[..4].try_into().expect("4 bytes"))
    );
    Ok(Prepared {
        pool: Arc::new(Pool {
            base: base.to_string(),
            jwts,
            api_keys,
            emails,
            run_id,
        }),
        chains: chains.into_iter().map(Some).collect(),
        entitlements_served,
        notes,
    })
}

// -------------------------------------------------------------------------------------------
// Memory per idle loaded user
// -------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `bp_resident_actors` gauge of the server's Prometheus metrics, if it serves them.
async fn resident_actors(base: &str) -> Option<u64> {
    let res = client().get(format!("{base}/metrics")).send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    let text = res.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("bp_resident_actors "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

struct ChildServer(Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure_memory(dir: &Path, phc: &str, s: &Settings) -> Res<Memory> {
    let data_dir = dir.join("memory");
    let config = server_config(&data_dir, Durability::Flush);
    let (seeded, took) = seed(&config, phc, "mem", s.memory_users, false)?;
    eprintln!(
        "memory: seeded {} idle accounts in {:.1} s",
        seeded.ids.len(),
        took.as_secs_f64()
    );
    let port = free_port()?;
    let child = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data_dir)
        .current_dir(&data_dir)
        .env("BP_AUTH__RATE_LIMIT__ENABLED", "false")
        .env("BP_AUTH__COOKIE__SECURE", "false")
        .env("BP_AUTH__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let child = ChildServer(child);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await?;
    let rss = || rss_kib(pid).ok_or("cannot read the server's VmRSS");
    let rss_started_kib = rss()?;
    let started = Instant::now();

    // A refresh with a well-formed token of the user and a random secret: the directory loads
    // the user's actor, which finds no such session; the answer is 401 and nothing is written.
    let load = |ids: Vec<UserId>, msg: &'static str| {
        let base = base.clone();
        fan_out(ids, s.connections, msg, move |c, id| {
            let base = base.clone();
            async move {
                let token = RefreshToken {
                    user: id,
                    session: SessionId::generate(),
                    generation: 0,
                    secret: random_32(),
                }
                .encode();
                let res = c
                    .post(format!("{base}/api/auth/refresh"))
                    .json(&json!({ "refresh_token": token }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status();
                let _ = res.bytes().await;
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
        })
    };
    // Warm up the server (connections, allocator, caches) on the first few users, then measure
    // the rest.
    let mut ids = seeded.ids;
    let warmup_users = (ids.len() / 20).clamp(1.min(ids.len()), 1_000);
    let rest = ids.split_off(warmup_users);
    let mut unexpected = load(ids, "memory: warming up")
        .await
        .iter()
        .filter(|r| r.is_err())
        .count() as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = rss()?;
    unexpected += load(rest, "memory: loading idle users")
        .await
        .iter()
        .filter(|r| r.is_err())
        .count() as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = rss()?;
    let resident_actors = resident_actors(&base).await;
    drop(child);
    Ok(Memory {
        users: s.memory_users,
        warmup_users,
        rss_started_kib,
        rss_before_kib,
        rss_after_kib,
        unexpected,
        resident_actors,
        seconds: started.elapsed().as_secs_f64(),
    })
}

// -------------------------------------------------------------------------------------------
// The run
// -------------------------------------------------------------------------------------------

fn main() -> Res<()> {
    let settings = Settings::from_args(Args::parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.cores)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    runtime.block_on(run(settings))
}

async fn run(s: Settings) -> Res<()> {
    let config = server_config(Path::new("."), Durability::Flush);
    // The in-process servers log warnings and errors only (RUST_LOG overrides).
    bp_auth::telemetry::init(&config.log);
    let tmp = tempfile::tempdir()?;
    let mut notes: Vec<String> = Vec::new();
    let http_wanted = s.scenarios.iter().any(|k| *k != Kind::Argon2Raw);
    let total = Instant::now();

    let phc = {
        let h = hasher(&config)?;
        h.hash(PASSWORD.as_bytes(), &mut h.scratch())?
    };

    // The main target: seeded and started here, or a running server.
    let mut server = None;
    let mut prepared = None;
    if http_wanted {
        let (base, emails, keys) = match &s.url {
            None => {
                let config = server_config(&tmp.path().join("main"), Durability::Flush);
                let (seeded, took) = seed(&config, &phc, "user", s.users, true)?;
                notes.push(format!(
                    "seeded {} accounts (each with an API key) through the store in {:.1} s",
                    s.users,
                    took.as_secs_f64()
                ));
                let srv = start_in_process(config)?;
                let base = srv.base.clone();
                server = Some(srv);
                (base, seeded.emails, seeded.api_keys)
            }
            Some(url) => {
                wait_ready(url).await?;
                let run_id = format!("{:08x}", u32::from_le_bytes(random_32()[..4].try_into()?));
                let emails: Vec<String> = (0..s.users)
                    .map(|i| format!("user-{run_id}-{i}@bench.example.com"))
                    .collect();
                let started = Instant::now();
                let b = url.clone();
                let results = fan_out(
                    emails.clone(),
                    s.connections,
                    "registering accounts",
                    move |c, e| {
                        let b = b.clone();
                        async move { register(&c, &b, &e).await }
                    },
                )
                .await;
                if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                    return Err(format!("registering the bench accounts failed: {e}").into());
                }
                notes.push(format!(
                    "registered {} accounts over HTTP in {:.1} s",
                    s.users,
                    started.elapsed().as_secs_f64()
                ));
                (url.clone(), emails, Vec::new())
            }
        };
        let p = prepare(&base, emails, keys, &s).await?;
        notes.extend(p.notes.iter().cloned());
        prepared = Some(p);
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    for &kind in &s.scenarios {
        let outcome = match kind {
            Kind::Argon2Raw => run_argon2(&config, &s).await?,
            Kind::RefreshPeriodic => match &s.url {
                Some(_) => {
                    Outcome::skipped(kind, "needs a server of its own: in-process runs only")
                }
                None => run_periodic(tmp.path(), &phc, &s, &mut notes).await?,
            },
            _ => {
                let p = prepared.as_mut().ok_or("no HTTP target prepared")?;
                if kind == Kind::MeApiKey && p.pool.api_keys.is_empty() {
                    Outcome::skipped(kind, "no API keys (GET /api/auth/api-key not served)")
                } else if kind == Kind::Entitlements && !p.entitlements_served {
                    Outcome::skipped(kind, "GET /api/auth/me/entitlements answers 404")
                } else {
                    let chains = std::mem::take(&mut p.chains);
                    let (o, chains) = run_http(kind, p.pool.clone(), chains, &s).await;
                    p.chains = chains;
                    o
                }
            }
        };
        eprintln!("{}", progress_line(&outcome));
        outcomes.push(outcome);
    }
    drop(prepared);
    if let Some(srv) = server {
        srv.stop().await;
    }

    let memory = if s.in_process() && s.memory_users > 0 {
        match measure_memory(tmp.path(), &phc, &s).await {
            Ok(m) => Some(m),
            Err(e) => {
                notes.push(format!("memory measurement failed: {e}"));
                None
            }
        }
    } else {
        if s.memory_users > 0 {
            notes.push("memory per user: measured on in-process runs only".into());
        }
        None
    };
    let elapsed = total.elapsed();

    let date = bp_auth::clock::now().rfc3339();
    let table = render_table(&s, &outcomes, memory.as_ref(), &notes, &date, elapsed);
    println!("{table}");
    let Some(out) = &s.out else {
        println!("(smoke test: no report written; run it with `cargo bench --bench load`)");
        return Ok(());
    };
    std::fs::create_dir_all(out)?;
    let report = report_json(&s, &outcomes, memory.as_ref(), &notes, &date, elapsed);
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    chart(&out.join("chart.svg"), &outcomes, &date, &s)?;
    println!(
        "report: {}\nchart:  {}",
        out.join("report.json").display(),
        out.join("chart.svg").display()
    );
    Ok(())
}

/// `refresh-periodic`: a second server with `storage.durability = "periodic"`, its own accounts.
async fn run_periodic(
    dir: &Path,
    phc: &str,
    s: &Settings,
    notes: &mut Vec<String>,
) -> Res<Outcome> {
    let config = server_config(&dir.join("periodic"), Durability::Periodic);
    let (seeded, _) = seed(&config, phc, "periodic", s.connections, false)?;
    let srv = start_in_process(config)?;
    let chains = setup_logins(
        &srv.base,
        &seeded.emails,
        s.connections,
        0,
        s,
        "logging in (periodic server)",
    )
    .await?;
    notes.push(format!(
        "refresh-periodic: a second in-process server, {} accounts, one chain per connection",
        seeded.emails.len()
    ));
    let pool = Arc::new(Pool {
        base: srv.base.clone(),
        jwts: Vec::new(),
        api_keys: Vec::new(),
        emails: seeded.emails,
        run_id: String::new(),
    });
    let (outcome, _) = run_http(
        Kind::RefreshPeriodic,
        pool,
        chains.into_iter().map(Some).collect(),
        s,
    )
    .await;
    srv.stop().await;
    Ok(outcome)
}

// -------------------------------------------------------------------------------------------
// Output
// -------------------------------------------------------------------------------------------

fn find(outcomes: &[Outcome], kind: Kind) -> Option<&Outcome> {
    outcomes
        .iter()
        .find(|o| o.kind == kind && o.skipped.is_none() && o.requests > 0)
}

fn ratio(outcomes: &[Outcome], o: &Outcome, to: Kind) -> Option<f64> {
    if o.kind == to || o.skipped.is_some() {
        return None;
    }
    find(outcomes, to).map(|base| o.rate() / base.rate())
}

fn argon2_relevant(kind: Kind) -> bool {
    matches!(kind, Kind::Login | Kind::Register)
}

fn progress_line(o: &Outcome) -> String {
    match &o.skipped {
        Some(why) => format!("{:>18}: skipped ({why})", o.kind.name()),
        None => format!(
            "{:>18}: {:.0}/s, p99 {:.2} ms, {} errors",
            o.kind.name(),
            o.rate(),
            o.ms(0.99),
            o.errors
        ),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn render_table(
    s: &Settings,
    outcomes: &[Outcome],
    memory: Option<&Memory>,
    notes: &[String],
    date: &str,
    elapsed: Duration,
) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nbp-auth load ({}) {date}: {} cores, {} connections, {} s measured per scenario \
         (+{} s warm-up), {} users, {}",
        s.mode.name(),
        s.cores,
        s.connections,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.users,
        s.url.as_deref().unwrap_or("in-process server"),
    );
    let _ = writeln!(
        t,
        "{:<17} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "scenario",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "/healthz",
        "/argon2",
        "client cpu"
    );
    let _ = writeln!(t, "{}", "-".repeat(17 + 11 + 40 + 9 + 33));
    for o in outcomes {
        if let Some(why) = &o.skipped {
            let _ = writeln!(t, "{:<17} skipped: {why}", o.kind.name());
            continue;
        }
        let vs_argon = if argon2_relevant(o.kind) {
            pct(ratio(outcomes, o, Kind::Argon2Raw))
        } else {
            "-".into()
        };
        let vs_health = if o.kind == Kind::Argon2Raw {
            "-".into()
        } else {
            pct(ratio(outcomes, o, Kind::Healthz))
        };
        let _ = writeln!(
            t,
            "{:<17} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>10} {:>10} {:>10}",
            o.kind.name(),
            o.rate(),
            o.ms(0.50),
            o.ms(0.90),
            o.ms(0.99),
            o.ms(0.999),
            o.errors,
            vs_health,
            vs_argon,
            pct(o.client_cpu)
        );
    }
    if let Some(m) = memory {
        let _ = writeln!(
            t,
            "\nmemory: {} idle users loaded into actors: VmRSS {:.1} MiB -> {:.1} MiB \
             (server at start {:.1} MiB), {:.0} bytes per loaded user{}",
            m.users - m.warmup_users,
            m.rss_before_kib as f64 / 1024.0,
            m.rss_after_kib as f64 / 1024.0,
            m.rss_started_kib as f64 / 1024.0,
            m.bytes_per_user(),
            if m.unexpected > 0 {
                format!(" ({} loads answered other than 401)", m.unexpected)
            } else {
                String::new()
            }
        );
        if let Some(n) = m.resident_actors {
            let _ = writeln!(
                t,
                "        the server reports {n} resident actors after loading"
            );
        }
    }
    let targets = targets(outcomes, memory);
    if !targets.is_empty() {
        let _ = writeln!(
            t,
            "\ntargets (issue 5; informational, this machine is shared):"
        );
        for tg in &targets {
            let _ = writeln!(
                t,
                "  [{}] {:<44} {}",
                if tg.met { "met " } else { "MISS" },
                tg.what,
                tg.figure
            );
        }
    }
    let errors: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.errors > 0 || o.warmup_errors > 0)
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(t, "\nerrors:");
        for o in errors {
            let _ = writeln!(
                t,
                "  {}: {} measured, {} during warm-up; e.g. {}",
                o.kind.name(),
                o.errors,
                o.warmup_errors,
                o.samples.join(" | ")
            );
        }
    }
    let _ = writeln!(t, "\nnotes:");
    for n in notes {
        let _ = writeln!(t, "  {n}");
    }
    let _ = writeln!(
        t,
        "  req/s counts every request completed in the measured window (errors included); \
         latencies are per request, client side; ratios are to healthz and argon2-raw of this run"
    );
    if s.in_process() {
        let _ = writeln!(
            t,
            "  client cpu: the load generator's share of the CPU time used in the window; it \
             shares the cores with the server, so the server had the rest"
        );
    }
    let _ = write!(t, "  total run time {:.1} s", elapsed.as_secs_f64());
    t
}

struct Target {
    what: String,
    met: bool,
    figure: String,
}

/// The targets of issue 5 that this run's figures can judge.
fn targets(outcomes: &[Outcome], memory: Option<&Memory>) -> Vec<Target> {
    let mut out = Vec::new();
    let mut ratio_target = |kind: Kind, to: Kind, min: f64| {
        if let (Some(o), Some(_)) = (find(outcomes, kind), find(outcomes, to)) {
            let r = ratio(outcomes, o, to).unwrap_or(0.0);
            out.push(Target {
                what: format!("{} >= {:.0}% of {}", kind.name(), min * 100.0, to.name()),
                met: r >= min,
                figure: format!("{:.1}%", r * 100.0),
            });
        }
    };
    ratio_target(Kind::Login, Kind::Argon2Raw, 0.85);
    ratio_target(Kind::Register, Kind::Argon2Raw, 0.80);
    ratio_target(Kind::MeJwt, Kind::Healthz, 0.60);
    ratio_target(Kind::MeApiKey, Kind::Healthz, 0.65);
    ratio_target(Kind::Refresh, Kind::Healthz, 0.15);
    ratio_target(Kind::Refresh, Kind::RefreshPeriodic, 0.60);
    let mut p99_target = |kind: Kind, max_ms: f64| {
        if let Some(o) = find(outcomes, kind) {
            out.push(Target {
                what: format!("{} p99 < {max_ms} ms", kind.name()),
                met: o.ms(0.99) < max_ms,
                figure: format!("{:.2} ms", o.ms(0.99)),
            });
        }
    };
    p99_target(Kind::MeJwt, 5.0);
    p99_target(Kind::Refresh, 10.0);
    if let Some(o) = find(outcomes, Kind::Mixed) {
        out.push(Target {
            what: "mixed with zero errors".into(),
            met: o.errors == 0 && o.warmup_errors == 0,
            figure: format!("{} errors", o.errors + o.warmup_errors),
        });
    }
    if let Some(m) = memory {
        out.push(Target {
            what: "memory per idle loaded user <= 3 KiB".into(),
            met: m.bytes_per_user() <= 3072.0,
            figure: format!("{:.0} bytes ({} users)", m.bytes_per_user(), m.users),
        });
    }
    out
}

fn report_json(
    s: &Settings,
    outcomes: &[Outcome],
    memory: Option<&Memory>,
    notes: &[String],
    date: &str,
    elapsed: Duration,
) -> Value {
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let scenarios: Vec<Value> = outcomes
        .iter()
        .map(|o| match &o.skipped {
            Some(why) => json!({"name": o.kind.name(), "what": o.kind.what(), "skipped": why}),
            None => json!({
                "name": o.kind.name(),
                "what": o.kind.what(),
                "requests": o.requests,
                "errors": o.errors,
                "warmup_errors": o.warmup_errors,
                "seconds": o.seconds,
                "rps": round(o.rate()),
                "latency_ms": {
                    "p50": o.ms(0.50),
                    "p90": o.ms(0.90),
                    "p99": o.ms(0.99),
                    "p99_9": o.ms(0.999),
                    "max": o.hist.max() as f64 / 1000.0,
                    "mean": round(o.hist.mean() / 1000.0),
                },
                "ratio_to_healthz": if o.kind == Kind::Argon2Raw { None } else { ratio(outcomes, o, Kind::Healthz).map(round) },
                "ratio_to_argon2_raw": if argon2_relevant(o.kind) { ratio(outcomes, o, Kind::Argon2Raw).map(round) } else { None },
                "error_samples": o.samples,
                "client_cpu_share": o.client_cpu.map(round),
            }),
        })
        .collect();
    let targets: Vec<Value> = targets(outcomes, memory)
        .into_iter()
        .map(|t| json!({"target": t.what, "met": t.met, "figure": t.figure}))
        .collect();
    let memory = memory.map(|m| {
        json!({
            "users": m.users,
            "warmup_users": m.warmup_users,
            "measured_users": m.users - m.warmup_users,
            "rss_server_started_kib": m.rss_started_kib,
            "rss_before_kib": m.rss_before_kib,
            "rss_after_kib": m.rss_after_kib,
            "bytes_per_user": round(m.bytes_per_user()),
            "loads_not_401": m.unexpected,
            "resident_actors_after": m.resident_actors,
            "seconds": round(m.seconds),
            "method": "a separate bp-auth process; VmRSS before and after a refresh with a random-secret token for each user (loads its actor, answers 401)",
        })
    });
    json!({
        "date": date,
        "mode": s.mode.name(),
        "target": s.url.as_deref().unwrap_or("in-process"),
        "machine": {"cores": s.cores},
        "settings": {
            "users": s.users,
            "connections": s.connections,
            "duration_s": s.duration.as_secs_f64(),
            "warmup_s": s.warmup.as_secs_f64(),
            "memory_users": s.memory_users,
        },
        "scenarios": scenarios,
        "memory": memory,
        "targets": targets,
        "notes": notes,
        "total_seconds": round(elapsed.as_secs_f64()),
    })
}

/// Two bar charts, one above the other: throughput and p99 latency per scenario (log scales).
fn chart(path: &Path, outcomes: &[Outcome], date: &str, s: &Settings) -> Res<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let ran: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.skipped.is_none() && o.requests > 0)
        .collect();
    let root = SVGBackend::new(path, (1100, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "bp-auth load, {date}: {} cores, {} connections, {} s per scenario",
        s.cores,
        s.connections,
        s.duration.as_secs_f64()
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    if ran.is_empty() {
        root.present()?;
        return Ok(());
    }
    let (top, bottom) = root.split_vertically(400);
    let names: Vec<String> = ran.iter().map(|o| o.kind.name().to_string()).collect();
    let panels = [
        (
            &top,
            "throughput (requests/s; argon2-raw: hashes/s), log scale",
            ran.iter().map(|o| o.rate()).collect::<Vec<f64>>(),
            RGBColor(0x2b, 0x6c, 0xb0),
        ),
        (
            &bottom,
            "p99 latency (ms), log scale",
            ran.iter().map(|o| o.ms(0.99)).collect::<Vec<f64>>(),
            RGBColor(0xc0, 0x55, 0x21),
        ),
    ];
    for (area, caption, values, color) in panels {
        let max = values.iter().cloned().fold(0.0, f64::max).max(1e-3);
        let min = values
            .iter()
            .cloned()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .min(max);
        let lo = 10f64.powf((min.log10() - 0.5).floor());
        let hi = 10f64.powf((max.log10() + 0.3).ceil());
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            // An integer range is inclusive as a segmented axis: one segment per scenario.
            .build_cartesian_2d(
                (0..ran.len().saturating_sub(1)).into_segmented(),
                (lo..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(ran.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v}")
                }
            })
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), lo),
                    (SegmentValue::Exact(i + 1), v.max(lo)),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let label = if *v >= 100.0 {
                format!("{v:.0}")
            } else if *v >= 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            };
            Text::new(
                label,
                (SegmentValue::CenterOf(i), v.max(lo) * 1.04),
                ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
