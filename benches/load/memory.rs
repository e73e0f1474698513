//! Memory per idle loaded user, measured on a separate `bp-auth` process (the real binary, see
//! `child.rs`) on its own seeded data dir.

use std::path::Path;
use std::time::{Duration, Instant};

use bp_auth::config::Durability;
use bp_auth::domain::ids::{SessionId, UserId};
use bp_auth::domain::secrets::{random_32, RefreshToken};
use serde_json::json;

use crate::child::ChildServer;
use crate::http::{client, fan_out};
use crate::seed::{seed, Profile};
use crate::server::server_config;
use crate::{Res, Settings};

/// The memory figure: the server's VmRSS around loading the idle users.
pub(crate) struct Memory {
    pub(crate) users: usize,
    /// Users loaded before the first reading, not counted in the figure.
    pub(crate) warmup_users: usize,
    pub(crate) rss_started_kib: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// Loads answered other than 401.
    pub(crate) unexpected: u64,
    /// The server's own count (`bp_resident_actors` on `/metrics`), when it exposes one.
    pub(crate) resident_actors: Option<u64>,
    pub(crate) seconds: f64,
}

impl Memory {
    pub(crate) fn bytes_per_user(&self) -> f64 {
        let loaded = self.users.saturating_sub(self.warmup_users).max(1);
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) * 1024) as f64 / loaded as f64
    }
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

/// Seeds `s.memory_users` accounts, starts the real binary on them, and loads each user once.
pub(crate) async fn measure_memory(dir: &Path, phc: &str, s: &Settings) -> Res<Memory> {
    let data_dir = dir.join("memory");
    let config = server_config(&data_dir, Durability::Flush);
    let (seeded, took) = seed(&config, phc, "mem", s.memory_users, Profile::default())?;
    eprintln!(
        "memory: seeded {} idle accounts in {:.1} s",
        seeded.ids.len(),
        took.as_secs_f64()
    );
    let server =
        ChildServer::start(&data_dir, &[("BP_AUTH__RATE_LIMIT__ENABLED", "false")]).await?;
    let base = server.base.clone();
    let rss_started_kib = server.rss_kib()?;
    let started = Instant::now();

    // A refresh with a well-formed token of the user and a random secret: the directory loads
    // the user's actor, which finds no such session; the answer is 401 and nothing is written.
    let load = |ids: Vec<UserId>, msg: &'static str| {
        let base = base.clone();
        let results = fan_out(ids, s.connections, msg, move |c, id| {
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
        });
        async move { results.await.iter().filter(|r| r.is_err()).count() as u64 }
    };
    // Warm up the server (connections, allocator, caches) on the first few users, then measure
    // the rest.
    let mut ids = seeded.ids;
    let warmup_users = (ids.len() / 20).clamp(1.min(ids.len()), 1_000);
    let rest = ids.split_off(warmup_users);
    let mut unexpected = load(ids, "memory: warming up").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib()?;
    unexpected += load(rest, "memory: loading idle users").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = server.rss_kib()?;
    let resident_actors = resident_actors(&base).await;
    drop(server);
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
