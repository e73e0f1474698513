//! The HTTP load harness: `cargo bench --bench load -- [--quick] [--url URL] [--users N]
//! [--duration SECS] [--connections N] [--scenarios a,b,c|none] [--memory-users N]
//! [--failed-logins N] [--backup-users N]`.
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
//!
//! Memory under abuse (`--failed-logins`, issue 11, in-process runs only) is read on another
//! such process, with rate limits on and `127.0.0.1` a trusted proxy: that many logins with a
//! wrong password, each from an email that names no account and a client address of its own
//! (`X-Forwarded-For`), so that every table keyed by client input is offered a new key per
//! request. Its VmRSS after a warm-up, at its peak and at the end are compared with a stated
//! bound (`abuse_memory::GROWTH_BOUND_MIB`), reported as held or exceeded. Its argon2id is the
//! cheapest there is, since it measures memory, not hashing. `--scenarios none
//! --memory-users 0` runs this part alone.
//!
//! The backup figure (`--backup-users`, issue 13, in-process runs only, off unless asked for):
//! that many accounts seeded on a data dir of their own, then the wall time of `bp-auth admin
//! backup` against the real binary serving it (through its admin socket), of the same command
//! on the stopped data dir, and of `admin import` of the backup into an empty one.
//! `--scenarios none --memory-users 0 --failed-logins 0 --backup-users 100000` runs it alone.
//!
//! This file: the flags and their defaults per mode, and the run in order (seeding and starting
//! the servers, the scenarios, the memory figure, the output); the modules below do the work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse_memory;
mod argon2_raw;
mod backup;
mod child;
mod client;
mod http;
mod memory;
mod outcome;
mod passkey;
mod plot;
mod progress;
mod report;
mod scale;
mod scenarios;
mod seed;
mod server;
mod setup;
mod targets;
mod wire;

/// The binary's allocator, so that the server measured in this process allocates as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_auth::config::Durability;
use clap::Parser;

use crate::abuse_memory::measure_failed_logins;
use crate::argon2_raw::run_argon2;
use crate::backup::measure_backup;
use crate::client::{run_http, CpuProbe, CLIENT_THREAD};
use crate::memory::measure_memory;
use crate::outcome::Outcome;
use crate::plot::{chart, scale_chart};
use crate::report::{progress_line, render_table, report_json, Memories};
use crate::scale::measure_scale;
use crate::scenarios::{Kind, Pool, Prebuilt, Slot};
use crate::seed::{seed, Profile};
use crate::server::{hasher, server_config, start_in_process};
use crate::setup::{prepare, register_accounts, setup_logins};
use crate::wire::{Target, Wire};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

/// The password of every seeded and registered account: long, not a common one, not an email.
const PASSWORD: &str = "bench: correct horse battery staple";
/// The password `password-change` alternates with [`PASSWORD`].
const PASSWORD_ALT: &str = "bench: another horse, another staple";

#[derive(Parser, Debug)]
#[command(
    name = "load",
    about = "HTTP load harness for bp-auth: throughput and latency per flow, as ratios of the \
             machine's own limits (healthz, argon2-raw) measured in the same run"
)]
struct Args {
    /// A short run (2 s a scenario, 200 users, 16 connections, 2,000 memory users, 20,000
    /// failed logins).
    #[arg(long)]
    quick: bool,
    /// Drive a running server instead of starting one in this process (`http://127.0.0.1:8080`);
    /// repeated, drive several nodes of one deployment (two bp-auth on one PostgreSQL, say):
    /// setup runs against the first, and each scenario's connections go to them in turn.
    /// Accounts are then registered over HTTP, and `refresh-periodic` and the memory figures,
    /// which need a server of their own, are skipped.
    #[arg(long)]
    url: Vec<String>,
    /// Requests a connection sends at once in the GET scenarios (healthz, me-*, entitlements,
    /// sessions-list): HTTP/1.1 pipelining, so that the client's syscalls and wake-ups are
    /// shared by that many requests [default: 1, one at a time]. Refresh, login and every
    /// other change are never pipelined (each waits for the answer before it), so with N > 1
    /// their ratios to healthz compare unlike with like: the default keeps every scenario to
    /// one request in flight a connection, as wrk and real clients measure.
    #[arg(long)]
    pipeline: Option<usize>,
    /// Rounds of every scenario, interleaved (all scenarios once, then again), so that the
    /// machine's other load falls on all of them alike; the table gives the mean and the
    /// spread [default: 3; quick: 1].
    #[arg(long)]
    repeat: Option<usize>,
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
    /// entitlements, sessions-list, login, register, password-change, passkey-login, refresh,
    /// refresh-periodic, mixed, me-under-login-flood, argon2-raw; `none` runs only the
    /// memory figures.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Idle users loaded to measure resident memory per user; 0 skips it
    /// [default: 100000; quick: 2000].
    #[arg(long)]
    memory_users: Option<usize>,
    /// Failed logins from distinct unknown emails and client addresses, to read the server's
    /// memory under them (issue 11); 0 skips it [default: 1000000; quick: 20000].
    #[arg(long)]
    failed_logins: Option<usize>,
    /// Accounts to back up with `bp-auth admin backup` (server running, then stopped) and
    /// restore with `admin import`, timing each (issue 13); 0 skips it [default: 0; smoke: 200].
    #[arg(long)]
    backup_users: Option<usize>,
    /// Cost curves: data dir sizes (accounts, comma-separated) to measure the real binary on,
    /// e.g. `10000,100000,1000000`: start-up to the first `/me`, warm and cold `/me` and
    /// refresh, login, memory; a table, `scale.json` and `scale.svg` [default: none].
    /// Seeded dirs are kept under `target/bench-data/` (a million accounts: ~1 GiB).
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
    /// Measured seconds per cost-curve scenario [default: 5; quick: 2].
    #[arg(long)]
    scale_duration: Option<f64>,
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
    urls: Vec<String>,
    pipeline: usize,
    repeat: usize,
    users: usize,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    scenarios: Vec<Kind>,
    memory_users: usize,
    failed_logins: usize,
    backup_users: usize,
    scale: Vec<usize>,
    scale_duration: Duration,
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
                let names = names.iter().map(|n| n.trim());
                for n in names.filter(|n| !n.is_empty() && *n != "none") {
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
            urls: a
                .url
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            repeat: a.repeat.unwrap_or(mode.pick(3, 1, 1)).max(1),
            pipeline: a.pipeline.unwrap_or(1).clamp(1, 64),
            users: a.users.unwrap_or(mode.pick(1_000, 200, 100)).max(1),
            warmup: (duration / 4).min(Duration::from_secs(2)),
            duration,
            connections,
            scenarios,
            memory_users: a.memory_users.unwrap_or(mode.pick(100_000, 2_000, 200)),
            failed_logins: a
                .failed_logins
                .unwrap_or(mode.pick(1_000_000, 20_000, 1_000)),
            backup_users: a.backup_users.unwrap_or(mode.pick(0, 0, 200)),
            scale: a.scale.into_iter().filter(|n| *n > 0).collect(),
            scale_duration: Duration::from_secs_f64(
                a.scale_duration
                    .unwrap_or(mode.pick(5.0, 2.0, 0.3))
                    .max(0.1),
            ),
            out,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    fn in_process(&self) -> bool {
        self.urls.is_empty()
    }

    /// The targets as the table names them.
    fn target_name(&self) -> String {
        if self.in_process() {
            "in-process server".into()
        } else {
            self.urls.join(" + ")
        }
    }
}

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

    // The main target: seeded and started here, or running servers.
    let mut server = None;
    let mut prepared = None;
    if http_wanted {
        let (bases, emails, keys) = if s.in_process() {
            let config = server_config(&tmp.path().join("main"), Durability::Flush);
            let (seeded, took) = seed(
                &config,
                &phc,
                "user",
                s.users,
                Profile {
                    api_key: true,
                    lived_in: true,
                    session: false,
                },
            )?;
            notes.push(format!(
                "seeded {} accounts (each with an API key, 3 other sessions and a full history of 100 \
                 events, as an account in use for a while) through the store in {:.1} s",
                s.users,
                took.as_secs_f64()
            ));
            let srv = start_in_process(config)?;
            let base = srv.base.clone();
            server = Some(srv);
            (vec![base], seeded.emails, seeded.api_keys)
        } else {
            let emails = register_accounts(&s.urls[0], &s, &mut notes).await?;
            (s.urls.clone(), emails, Vec::new())
        };
        let p = prepare(&bases, emails, keys, &s).await?;
        notes.extend(p.notes.iter().cloned());
        prepared = Some(p);
    }
    let probe = CpuProbe {
        server_pid: None,
        in_process: s.in_process(),
    };

    // Rounds interleaved: every scenario once, then again, so that whatever else the machine
    // does falls on all of them alike.
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut periodic = None;
    for round in 0..s.repeat {
        for &kind in &s.scenarios {
            let outcome = match kind {
                Kind::Argon2Raw => run_argon2(&config, &s).await?,
                Kind::RefreshPeriodic if !s.in_process() => {
                    Outcome::skipped(kind, "needs a server of its own: in-process runs only")
                }
                Kind::RefreshPeriodic => {
                    if periodic.is_none() {
                        periodic = Some(Periodic::start(tmp.path(), &phc, &s, &mut notes).await?);
                    }
                    let p = periodic.as_mut().ok_or("no periodic server")?;
                    p.round(&s, probe).await
                }
                _ => {
                    let p = prepared.as_mut().ok_or("no HTTP target prepared")?;
                    if kind == Kind::MeApiKey && !p.api_keys_served {
                        Outcome::skipped(kind, "no API keys (GET /api/auth/api-key not served)")
                    } else if kind == Kind::Entitlements && !p.entitlements_served {
                        Outcome::skipped(kind, "GET /api/auth/me/entitlements answers 404")
                    } else if kind == Kind::PasskeyLogin
                        && p.slots.iter().all(|sl| sl.passkey.is_none())
                    {
                        Outcome::skipped(kind, "no passkey could be registered in setup")
                    } else if kind == Kind::PasswordChange
                        && p.slots.iter().all(|sl| sl.pw.is_none())
                    {
                        Outcome::skipped(kind, "no accounts of their own for the connections")
                    } else {
                        let slots = std::mem::take(&mut p.slots);
                        let (o, slots) = run_http(kind, p.pool.clone(), slots, &s, probe).await;
                        p.slots = slots;
                        if kind == Kind::PasswordChange {
                            restore_passwords(&p.pool, &mut p.slots).await;
                        }
                        o
                    }
                }
            };
            let line = progress_line(&outcome);
            if s.repeat > 1 {
                eprintln!("round {}/{}: {line}", round + 1, s.repeat);
            } else {
                eprintln!("{line}");
            }
            match outcomes.iter_mut().find(|o| o.kind == kind) {
                Some(o) => o.merge(outcome),
                None => outcomes.push(outcome),
            }
        }
    }
    if s.repeat > 1 {
        notes.push(format!(
            "{} rounds of every scenario, interleaved; req/s is their mean, spread half their \
             range (as a share of the mean), p99 over all rounds' requests",
            s.repeat
        ));
    }
    drop(prepared);
    if let Some(p) = periodic {
        p.srv.stop().await;
    }
    if let Some(srv) = server {
        srv.stop().await;
    }

    let memory = measurement(
        s.memory_users,
        "memory per user",
        &s,
        &mut notes,
        measure_memory(tmp.path(), &phc, &s),
    )
    .await;
    let failed_logins = measurement(
        s.failed_logins,
        "memory under failed logins",
        &s,
        &mut notes,
        measure_failed_logins(tmp.path(), &s),
    )
    .await;
    let backup = measurement(
        s.backup_users,
        "backup",
        &s,
        &mut notes,
        measure_backup(tmp.path(), &phc, &s),
    )
    .await;
    let scale_points = if s.scale.is_empty() {
        None
    } else {
        let scaled = Settings {
            duration: s.scale_duration,
            warmup: (s.scale_duration / 4).min(Duration::from_secs(1)),
            ..s.clone()
        };
        measurement(
            1,
            "cost curves",
            &s,
            &mut notes,
            measure_scale(tmp.path(), &phc, &s.scale, &scaled),
        )
        .await
    };
    let elapsed = total.elapsed();

    let date = bp_auth::clock::now().rfc3339();
    let memory = Memories {
        idle: memory.as_ref(),
        failed_logins: failed_logins.as_ref(),
    };
    let mut table = render_table(&s, &outcomes, &memory, &notes, &date, elapsed);
    if let Some(b) = &backup {
        table.push_str(&b.render());
    }
    if let Some(points) = &scale_points {
        table.push_str(&scale::render(points));
        for (what, met, figure) in scale::targets(points) {
            table.push_str(&format!(
                "  [{}] {what:<56} {figure}\n",
                if met { "met " } else { "MISS" }
            ));
        }
    }
    println!("{table}");
    let Some(out) = &s.out else {
        println!("(smoke test: no report written; run it with `cargo bench --bench load`)");
        return Ok(());
    };
    std::fs::create_dir_all(out)?;
    let mut report = report_json(&s, &outcomes, &memory, &notes, &date, elapsed);
    if let Some(b) = &backup {
        report["backup"] = b.json();
    }
    if let Some(points) = &scale_points {
        report["scale"] = scale::json(points);
        scale_chart(&out.join("scale.svg"), points, &date)?;
        println!("cost curves: {}", out.join("scale.svg").display());
    }
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    chart(&out.join("chart.svg"), &outcomes, &date, &s)?;
    println!(
        "report: {}\nchart:  {}",
        out.join("report.json").display(),
        out.join("chart.svg").display()
    );
    Ok(())
}

/// One of the figures taken on a server of its own: run if asked for (`count` > 0) and the run
/// is in-process; `None`, with a note saying why, otherwise or if it failed.
async fn measurement<T>(
    count: usize,
    what: &str,
    s: &Settings,
    notes: &mut Vec<String>,
    measure: impl std::future::Future<Output = Res<T>>,
) -> Option<T> {
    if count == 0 {
        return None;
    }
    if !s.in_process() {
        notes.push(format!("{what}: measured on in-process runs only"));
        return None;
    }
    match measure.await {
        Ok(figure) => Some(figure),
        Err(e) => {
            notes.push(format!("{what}: measurement failed: {e}"));
            None
        }
    }
}

/// `refresh-periodic`: a second server with `storage.durability = "periodic"`, its own accounts,
/// kept for every round.
struct Periodic {
    srv: server::InProcess,
    pool: Arc<Pool>,
    slots: Vec<Slot>,
}

impl Periodic {
    async fn start(dir: &Path, phc: &str, s: &Settings, notes: &mut Vec<String>) -> Res<Self> {
        let config = server_config(&dir.join("periodic"), Durability::Periodic);
        let (seeded, _) = seed(
            &config,
            phc,
            "periodic",
            s.connections,
            Profile {
                api_key: false,
                lived_in: true,
                session: false,
            },
        )?;
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
        let target = Target::resolve(&srv.base).await?;
        let pool = Arc::new(Pool {
            prebuilt: vec![Prebuilt::new(&target, &[], &[])],
            targets: vec![target],
            emails: seeded.emails,
            run_id: String::new(),
            connections: s.connections,
        });
        let slots = chains
            .into_iter()
            .map(|c| Slot {
                chain: Some(c),
                ..Slot::default()
            })
            .collect();
        Ok(Self { srv, pool, slots })
    }

    async fn round(&mut self, s: &Settings, probe: CpuProbe) -> Outcome {
        let slots = std::mem::take(&mut self.slots);
        let (o, slots) = run_http(Kind::RefreshPeriodic, self.pool.clone(), slots, s, probe).await;
        self.slots = slots;
        o
    }
}

/// After a `password-change` round, sets back [`PASSWORD`] on the accounts left with the other
/// one, so that every account logs in with it again (outside any timing).
async fn restore_passwords(pool: &Pool, slots: &mut [Slot]) {
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some((chain, alt)) = slot.pw.as_mut() else {
            continue;
        };
        if !*alt {
            continue;
        }
        let t = &pool.targets[i % pool.targets.len()];
        let body = serde_json::json!({"current_password": PASSWORD_ALT,
            "new_password": PASSWORD, "revoke_other_sessions": false});
        let req = t.post_json("/api/auth/password/change", &body, Some(&chain.access));
        let mut wire = Wire::new(t.clone());
        match wire.send_2xx(&req).await {
            Ok(()) => *alt = false,
            Err(e) => eprintln!("password-change: could not set the password back: {e}"),
        }
    }
}
