//! Cost curves (`--scale 10000,100000,1000000`, in-process runs only, off unless asked for):
//! for each data dir size, the real binary (`child.rs`) on a data dir of that many accounts,
//! and what stays the same or grows with it:
//!
//! - start-up: from spawning the process to the first answered `GET /me` (of a user whose
//!   actor is not loaded: the store opened, keys read, the user loaded);
//! - `me-warm` and `refresh-warm`: `/me` over 1,000 users already loaded, refresh chains of
//!   the connections; `me-cold` and `refresh-cold`: each request the first of its user since
//!   the start (the actor loaded from its snapshot), up to 100,000 users for `/me`;
//!   `login`: password logins of users drawn from every account; `healthz`, the floor, in the
//!   same run;
//! - resident memory after the start and after `me-cold` has touched its users.
//!
//! Seeding a million accounts takes minutes, so each size's seeded data dir is kept under
//! `<target>/bench-data/` (its accounts are fixed: emails by number, a session each, opened
//! with the data dir's own server key, so that its refresh token and an access token can be
//! made again without a login) and copied afresh for every run, so that each run starts from
//! the same bytes. A copy older than [`CACHE_DAYS`] is seeded again (its sessions would end).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_auth::config::Durability;
use bp_auth::domain::ids::{SessionId, TenantId, UserId};
use bp_auth::domain::secrets::RefreshToken;
use bp_auth::domain::tokens::TYP_ACCESS;
use bp_auth::store::codec::{FORMAT_VERSION, SPLIT_FLAG};
use serde_json::{json, Value};

use crate::child::ChildServer;
use crate::client::{run_http, CpuProbe};
use crate::outcome::Outcome;
use crate::scenarios::{login, Kind, Pool, Prebuilt, Slot};
use crate::seed::{email, seed, Profile};
use crate::server::server_config;
use crate::wire::{Target, Wire};
use crate::{Res, Settings, PASSWORD};

/// How old a cached data dir may be before it is seeded again: its sessions last 30 days.
const CACHE_DAYS: u64 = 20;
/// Users `me-warm` reads (loaded during its warm-up).
const WARM_USERS: usize = 1_000;
/// At most this many users are touched by `me-cold` (and so counted in the memory figure).
const COLD_ME_MAX: usize = 100_000;
/// At most this many users get their first refresh in `refresh-cold`.
const COLD_REFRESH_MAX: usize = 25_000;

/// One seeded account of a cached data dir.
#[derive(Clone, Copy)]
struct Account {
    id: UserId,
    tenant: TenantId,
    session: SessionId,
}

/// The figures of one data dir size.
pub(crate) struct Point {
    pub(crate) users: usize,
    pub(crate) db_bytes: u64,
    /// Seconds it took to seed, when this run seeded it (not cached).
    pub(crate) seeded_secs: Option<f64>,
    pub(crate) startup: Duration,
    pub(crate) rss_start_kib: u64,
    pub(crate) rss_touched_kib: u64,
    /// Users loaded when `rss_touched_kib` was read.
    pub(crate) touched: usize,
    pub(crate) outcomes: Vec<Outcome>,
}

/// The scenarios of a point, in order, as the table names them.
pub(crate) const SCENARIOS: [(Kind, &str); 6] = [
    (Kind::Healthz, "healthz"),
    (Kind::MeJwt, "me-warm"),
    (Kind::MeCold, "me-cold"),
    (Kind::RefreshCold, "refresh-cold"),
    (Kind::Refresh, "refresh-warm"),
    (Kind::Login, "login"),
];

pub(crate) fn label(kind: Kind) -> &'static str {
    SCENARIOS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind.name(), |(_, l)| l)
}

fn cache_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-data")
}

/// The cached data dir of `n` accounts (seeded now if missing or old) and its accounts.
fn cached(n: usize, phc: &str) -> Res<(PathBuf, Vec<Account>, Option<f64>)> {
    // Named after the snapshot format, so that a change of it seeds anew.
    let dir = cache_root().join(format!("scale-{n}-format{}", FORMAT_VERSION | SPLIT_FLAG));
    let marker = dir.join("seeded");
    let fresh = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(CACHE_DAYS * 86_400));
    let accounts_file = dir.join("accounts.bin");
    if fresh {
        if let Ok(bytes) = std::fs::read(&accounts_file) {
            let accounts = decode_accounts(&bytes);
            if accounts.len() == n {
                return Ok((dir, accounts, None));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = server_config(&dir, Durability::Flush);
    let profile = Profile {
        session: true,
        ..Profile::default()
    };
    let (seeded, took) = seed(&config, phc, "scale", n, profile)?;
    // The signing keys too, so that every copy signs and verifies with the same ones.
    bp_auth::startup::load_keyring(&config, config.server.data_dir.as_path())?;
    let accounts: Vec<Account> = seeded
        .ids
        .iter()
        .zip(&seeded.sessions)
        .map(|(&id, &(tenant, session))| Account {
            id,
            tenant,
            session,
        })
        .collect();
    std::fs::write(&accounts_file, encode_accounts(&accounts))?;
    std::fs::write(&marker, format!("{n} accounts\n"))?;
    eprintln!(
        "scale: seeded {n} accounts in {:.1} s (kept in {})",
        took.as_secs_f64(),
        dir.display()
    );
    Ok((dir, accounts, Some(took.as_secs_f64())))
}

fn encode_accounts(accounts: &[Account]) -> Vec<u8> {
    let mut out = Vec::with_capacity(accounts.len() * 48);
    for a in accounts {
        out.extend_from_slice(a.id.as_bytes());
        out.extend_from_slice(a.tenant.as_bytes());
        out.extend_from_slice(a.session.as_bytes());
    }
    out
}

fn decode_accounts(bytes: &[u8]) -> Vec<Account> {
    let part = |c: &[u8]| -> [u8; 16] { c.try_into().unwrap_or([0; 16]) };
    bytes
        .chunks_exact(48)
        .map(|c| Account {
            id: UserId::from_bytes(part(&c[..16])),
            tenant: TenantId::from_bytes(part(&c[16..32])),
            session: SessionId::from_bytes(part(&c[32..])),
        })
        .collect()
}

/// The bytes under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `count` indexes spread evenly over `0..n` from `offset`: users all over the key space.
fn spread(n: usize, count: usize, offset: usize) -> Vec<usize> {
    let count = count.min(n);
    (0..count)
        .map(|i| (offset + i * (n / count.max(1))) % n)
        .collect()
}

/// Every size in `sizes`, one after the other.
pub(crate) async fn measure_scale(
    dir: &Path,
    phc: &str,
    sizes: &[usize],
    s: &Settings,
) -> Res<Vec<Point>> {
    let mut points = Vec::new();
    for &n in sizes {
        points.push(measure_one(dir, phc, n, s).await?);
    }
    Ok(points)
}

async fn measure_one(tmp: &Path, phc: &str, n: usize, s: &Settings) -> Res<Point> {
    let (cache, accounts, seeded_secs) = cached(n, phc)?;
    let work = tmp.join(format!("scale-{n}"));
    let _ = std::fs::remove_dir_all(&work);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&work)
        .status()?;
    if !copied.success() {
        return Err(format!("cannot copy {} to {}", cache.display(), work.display()).into());
    }
    let db_bytes = du(&work.join("db"));

    // Tokens made as the server would have made them: access tokens signed with its key, the
    // seeded sessions' first refresh tokens derived from its server key.
    let config = server_config(&work, Durability::Flush);
    let keyring = bp_auth::startup::load_keyring(&config, config.server.data_dir.as_path())?;
    let server_key = bp_auth::keys::load_or_create_server_key(&work)?;
    let now = bp_auth::clock::now();
    let access = |a: &Account| {
        let claims = keyring.claims(a.id, a.tenant, Some(a.session), "owner", now, 900);
        keyring.sign(&claims, TYP_ACCESS)
    };
    let refresh = |a: &Account| {
        RefreshToken {
            user: a.id,
            session: a.session,
            generation: 0,
            secret: server_key.refresh_secret(a.session, 0),
        }
        .encode()
    };
    let warm = spread(n, WARM_USERS, 0);
    let cold_me = spread(n, COLD_ME_MAX.min(n / 2), 1);
    let cold_refresh = spread(n, COLD_REFRESH_MAX.min(n / 4), 2);
    let chains = spread(n, s.connections, 3);
    let jwts: Vec<String> = warm.iter().map(|&i| access(&accounts[i])).collect();

    // Start-up: spawn, then ask for /me until it is answered.
    let started = Instant::now();
    let server = ChildServer::spawn(&work, &[("BP_AUTH__RATE_LIMIT__ENABLED", "false")])?;
    let target = Target::resolve(&server.base).await?;
    let first = target.get(
        "/api/auth/me",
        &[("Authorization", &format!("Bearer {}", jwts[0]))],
    );
    let mut wire = Wire::new(target.clone());
    loop {
        if let Ok(200) = wire.send(&first).await {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{n} users: no /me answered within 120 s of the start").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let startup = started.elapsed();
    let rss_start_kib = server.rss_kib()?;
    eprintln!(
        "scale {n}: first /me answered {:.0} ms after the start ({:.0} MiB data dir)",
        startup.as_secs_f64() * 1e3,
        db_bytes as f64 / 1048576.0
    );

    let emails: Vec<String> = spread(n, 10_000, 4)
        .into_iter()
        .map(|i| email("scale", i))
        .collect();
    let pool = Arc::new(Pool {
        prebuilt: vec![Prebuilt::new(&target, &jwts, &[])],
        targets: vec![target.clone()],
        emails,
        run_id: String::new(),
        connections: s.connections,
    });
    let probe = CpuProbe {
        server_pid: Some(server.pid()),
        in_process: false,
    };
    // Each connection's share of the users to touch once, as ready requests.
    let queues = |users: &[usize], make: &dyn Fn(&Account) -> Vec<u8>| -> Vec<Slot> {
        let mut slots: Vec<Slot> = (0..s.connections).map(|_| Slot::default()).collect();
        for (k, &i) in users.iter().enumerate() {
            slots[k % s.connections].queue.push(make(&accounts[i]));
        }
        slots
    };
    let me_req = |a: &Account| {
        target.get(
            "/api/auth/me",
            &[("Authorization", &format!("Bearer {}", access(a)))],
        )
    };
    let refresh_req = |a: &Account| {
        target.post_json(
            "/api/auth/refresh",
            &json!({ "refresh_token": refresh(a) }),
            None,
        )
    };
    let cold = Settings {
        warmup: Duration::ZERO,
        ..s.clone()
    };
    let mut outcomes = Vec::new();
    let mut rss_touched_kib = rss_start_kib;
    let mut touched = 1;
    for (kind, _) in SCENARIOS {
        let (o, _) = match kind {
            Kind::MeCold => {
                let slots = queues(&cold_me, &me_req);
                let r = run_http(kind, pool.clone(), slots, &cold, probe).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                rss_touched_kib = server.rss_kib()?;
                touched = warm.len() + r.0.requests as usize;
                r
            }
            Kind::RefreshCold => {
                let slots = queues(&cold_refresh, &refresh_req);
                run_http(kind, pool.clone(), slots, &cold, probe).await
            }
            Kind::Refresh => {
                let mut slots = Vec::new();
                for &i in &chains {
                    let chain = login(&mut wire, &email("scale", i), PASSWORD).await?;
                    slots.push(Slot {
                        chain: Some(chain),
                        ..Slot::default()
                    });
                }
                run_http(kind, pool.clone(), slots, s, probe).await
            }
            _ => {
                let slots = (0..s.connections).map(|_| Slot::default()).collect();
                run_http(kind, pool.clone(), slots, s, probe).await
            }
        };
        eprintln!(
            "scale {n}: {}: {:.0}/s, p99 {:.2} ms, {} errors",
            label(kind),
            o.rate(),
            o.ms(0.99),
            o.errors
        );
        outcomes.push(o);
    }
    server.terminate()?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(Point {
        users: n,
        db_bytes,
        seeded_secs,
        startup,
        rss_start_kib,
        rss_touched_kib,
        touched,
        outcomes,
    })
}

/// How far `x` may be from the smallest size's figure and still count as flat.
pub(crate) const FLAT: f64 = 0.20;

/// The table of the cost curves.
pub(crate) fn render(points: &[Point]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    if points.is_empty() {
        return t;
    }
    let _ = writeln!(
        t,
        "\ncost curves (the real binary on a data dir of each size; rates in req/s, p99 in ms):"
    );
    let _ = write!(t, "{:<14}", "users");
    for p in points {
        let _ = write!(t, " {:>22}", p.users);
    }
    let _ = writeln!(t, " {:>12}", "last/first");
    let row = |t: &mut String, name: &str, cells: Vec<String>, change: String| {
        let _ = write!(t, "{name:<14}");
        for c in cells {
            let _ = write!(t, " {c:>22}");
        }
        let _ = writeln!(t, " {change:>12}");
    };
    let change = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:+.1}%", (b / a - 1.0) * 100.0)
        } else {
            "-".into()
        }
    };
    let (first, last) = (&points[0], &points[points.len() - 1]);
    row(
        &mut t,
        "data dir MiB",
        points
            .iter()
            .map(|p| format!("{:.0}", p.db_bytes as f64 / 1048576.0))
            .collect(),
        change(first.db_bytes as f64, last.db_bytes as f64),
    );
    row(
        &mut t,
        "start->/me ms",
        points
            .iter()
            .map(|p| format!("{:.0}", p.startup.as_secs_f64() * 1e3))
            .collect(),
        change(first.startup.as_secs_f64(), last.startup.as_secs_f64()),
    );
    for (i, (_, name)) in SCENARIOS.iter().enumerate() {
        let cell = |p: &Point| {
            let o = &p.outcomes[i];
            format!("{:.0} / {:.2}", o.rate(), o.ms(0.99))
        };
        let rate = |p: &Point| p.outcomes[i].rate();
        row(
            &mut t,
            name,
            points.iter().map(cell).collect(),
            change(rate(first), rate(last)),
        );
    }
    row(
        &mut t,
        "RSS start MiB",
        points
            .iter()
            .map(|p| format!("{:.0}", p.rss_start_kib as f64 / 1024.0))
            .collect(),
        change(first.rss_start_kib as f64, last.rss_start_kib as f64),
    );
    row(
        &mut t,
        "RSS touched",
        points
            .iter()
            .map(|p| {
                format!(
                    "{:.0} MiB, {}k users",
                    p.rss_touched_kib as f64 / 1024.0,
                    p.touched / 1000
                )
            })
            .collect(),
        change(first.rss_touched_kib as f64, last.rss_touched_kib as f64),
    );
    let _ = writeln!(
        t,
        "  each cell: rate / p99; last/first: the largest size's rate against the smallest's; the \
         targets below compare each size's rates as shares of its own healthz (flat within {:.0}%)",
        FLAT * 100.0
    );
    for p in points.iter().filter(|p| p.seeded_secs.is_some()) {
        let _ = writeln!(
            t,
            "  {} accounts seeded in this run in {:.1} s",
            p.users,
            p.seeded_secs.unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        t,
        "  seeded data dirs are kept under {} and copied for each run",
        cache_root().display()
    );
    t
}

/// The targets of the cost curves: flat rates and p99 from the smallest size to the largest,
/// and a start-up under 2 s at every size.
pub(crate) fn targets(points: &[Point]) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return out;
    };
    for p in points {
        out.push((
            format!("start to first /me < 2 s ({} users)", p.users),
            p.startup < Duration::from_secs(2),
            format!("{:.0} ms", p.startup.as_secs_f64() * 1e3),
        ));
    }
    if points.len() < 2 {
        return out;
    }
    // Each size's rates as a share of its own healthz: the machine is shared, and what others
    // run moves every figure of a size alike.
    let floor = |p: &Point| p.outcomes[0].rate().max(1e-9);
    for (i, (kind, name)) in SCENARIOS.iter().enumerate() {
        if *kind == Kind::Healthz {
            continue;
        }
        let (a, b) = (&first.outcomes[i], &last.outcomes[i]);
        let (ra, rb) = (a.rate() / floor(first), b.rate() / floor(last));
        let r = rb / ra.max(1e-9);
        out.push((
            format!(
                "{name} rate within 20% ({} -> {} users)",
                first.users, last.users
            ),
            r >= 1.0 - FLAT,
            format!(
                "{:.1}% -> {:.1}% of healthz ({:+.0}%)",
                ra * 100.0,
                rb * 100.0,
                (r - 1.0) * 100.0
            ),
        ));
        let q = b.ms(0.99) / a.ms(0.99).max(1e-3);
        out.push((
            format!(
                "{name} p99 within 20% ({} -> {} users)",
                first.users, last.users
            ),
            q <= 1.0 + FLAT,
            format!("{:.2} -> {:.2} ms", a.ms(0.99), b.ms(0.99)),
        ));
    }
    out
}

pub(crate) fn json(points: &[Point]) -> Value {
    Value::Array(
        points
            .iter()
            .map(|p| {
                json!({
                    "users": p.users,
                    "db_bytes": p.db_bytes,
                    "seeded_seconds": p.seeded_secs,
                    "startup_to_first_me_ms": p.startup.as_secs_f64() * 1e3,
                    "rss_start_kib": p.rss_start_kib,
                    "rss_touched_kib": p.rss_touched_kib,
                    "touched_users": p.touched,
                    "scenarios": p.outcomes.iter().map(|o| json!({
                        "name": label(o.kind),
                        "rps": o.rate(),
                        "p50_ms": o.ms(0.5),
                        "p99_ms": o.ms(0.99),
                        "p99_9_ms": o.ms(0.999),
                        "requests": o.requests,
                        "errors": o.errors,
                        "client_cpu_share": o.client_cpu,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
