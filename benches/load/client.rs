//! The load client: one task per connection, each sending its scenario's next request as soon
//! as the last one answered, recording the latency of those that complete inside the measured
//! window, and the client's share of the CPU over that window.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::http::{login, Chain};
use crate::outcome::{new_hist, Outcome};
use crate::progress::{scenario_bar, tick, Live};
use crate::scenarios::{step, Conn, Kind, Pool};
use crate::Settings;

/// The name of the client runtime's threads, to tell their CPU time from the server's.
pub(crate) const CLIENT_THREAD: &str = "bench-client";

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

/// Runs one HTTP scenario; returns its outcome and the connections' refresh chains.
pub(crate) async fn run_http(
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
        let mut conn = Conn::new(id, chain);
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
