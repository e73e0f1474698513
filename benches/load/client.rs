//! The load client: one task per connection, each sending its scenario's next request as soon
//! as the last one answered, recording the latency of those that complete inside the measured
//! window, and the client's share of the CPU over that window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::outcome::{new_hist, Outcome};
use crate::progress::{scenario_bar, tick, Live};
use crate::scenarios::{exhausted, flood_login, login, step, Conn, Kind, Pool, Slot};
use crate::{Settings, PASSWORD};

/// The name of the client runtime's threads, to tell their CPU time from the server's.
pub(crate) const CLIENT_THREAD: &str = "bench-client";

/// Clock ticks a second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux the harness runs
/// on).
const TICKS: f64 = 100.0;

/// utime + stime (clock ticks) from a `/proc/…/stat` line.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat[open + 1..close].to_string();
    // After the name come fields 3.. of proc(5); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some((name, ticks))
}

/// Where the CPU time of a scenario is read: this process's threads (the client's, and an
/// in-process server's), and a server process of its own when there is one.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuProbe {
    /// A server in a child process (`child.rs`), whose whole CPU time is the server's.
    pub(crate) server_pid: Option<u32>,
    /// Whether a server runs in this process (its threads are then the server's).
    pub(crate) in_process: bool,
}

/// CPU ticks of the client and of the server(s) at one instant.
#[derive(Clone, Copy)]
struct CpuSample {
    client: u64,
    server: u64,
    at: Instant,
}

impl CpuProbe {
    fn sample(&self) -> Option<CpuSample> {
        let pid = std::process::id().to_string();
        let (mut client, mut server) = (0u64, 0u64);
        for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // the thread has ended
            };
            let Some((name, ticks)) = stat_ticks(&stat) else {
                continue;
            };
            if name.starts_with(CLIENT_THREAD) || entry.file_name().to_str() == Some(pid.as_str()) {
                client += ticks;
            } else if self.in_process {
                server += ticks;
            }
        }
        if let Some(p) = self.server_pid {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            server += stat_ticks(&stat)?.1;
        }
        Some(CpuSample {
            client,
            server,
            at: Instant::now(),
        })
    }

    /// The client's share: of the CPU time client and server used together when the server's
    /// is known, else of the whole machine over the window (an external server).
    fn share(&self, a: CpuSample, b: CpuSample, cores: usize) -> Option<f64> {
        let client = b.client.saturating_sub(a.client) as f64;
        if self.in_process || self.server_pid.is_some() {
            let server = b.server.saturating_sub(a.server) as f64;
            (client + server > 0.0).then(|| client / (client + server))
        } else {
            let wall = b.at.duration_since(a.at).as_secs_f64() * TICKS * cores as f64;
            (wall > 0.0).then(|| client / wall)
        }
    }
}

/// What the flood connections of `me-under-login-flood` were answered.
#[derive(Default)]
struct Flood {
    unauthorized: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
}

/// Runs one round of an HTTP scenario; returns its outcome and the connections' slots.
pub(crate) async fn run_http(
    kind: Kind,
    pool: Arc<Pool>,
    slots: Vec<Slot>,
    s: &Settings,
    probe: CpuProbe,
) -> (Outcome, Vec<Slot>) {
    let live = Arc::new(Live::default());
    let flood = Arc::new(Flood::default());
    let start = Instant::now();
    let measure_from = start + s.warmup;
    let deadline = measure_from + s.duration;
    let pb = scenario_bar(kind, s.warmup + s.duration);
    let ticker = tick(pb.clone(), live.clone(), start);

    // The flood's connections come after the measured ones and are not measured.
    let flooders = if kind == Kind::MeUnderLoginFlood {
        s.connections
    } else {
        0
    };
    let measured_conns = slots.len();
    let mut slots = slots;
    slots.extend((0..flooders).map(|_| Slot::default()));
    let mut tasks = Vec::with_capacity(slots.len());
    for (id, slot) in slots.into_iter().enumerate() {
        let pool = pool.clone();
        let live = live.clone();
        let flood = flood.clone();
        let mut conn = Conn::new(id, &pool, slot);
        let flooder = id >= measured_conns;
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut n, mut errors, mut warm_errors) = (0u64, 0u64, 0u64);
            let mut samples: Vec<String> = Vec::new();
            // When the last measured request completed, for a connection that ran out early.
            let mut last = None;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline || exhausted(kind, &conn) {
                    break;
                }
                if flooder {
                    let counter = match flood_login(&mut conn).await {
                        Ok(401) => &flood.unauthorized,
                        Ok(503) => &flood.shed,
                        _ => &flood.other,
                    };
                    if Instant::now() >= measure_from {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let r = step(kind, &pool, &mut conn).await;
                let t1 = Instant::now();
                let measured = t1 >= measure_from && t1 <= deadline;
                if measured {
                    n += 1;
                    last = Some(t1);
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
                    if let Some(email) = conn.slot.chain.as_ref().map(|c| c.email.clone()) {
                        conn.slot.chain = login(&mut conn.wire, &email, PASSWORD).await.ok();
                    }
                    conn.chain_broken = false;
                }
            }
            let ran_out = exhausted(kind, &conn).then_some(last).flatten();
            (
                hist,
                n,
                errors,
                warm_errors,
                samples,
                conn.slot,
                flooder,
                ran_out,
            )
        }));
    }
    // CPU time of the client's threads and of the server's, over the measured window (or
    // until every connection has run out of requests).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = probe.sample();
    let all_done = async {
        for t in &tasks {
            while !t.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = all_done => {}
    }
    let cpu_to = probe.sample();
    let mut out = Outcome::empty(kind);
    out.seconds = s.duration.as_secs_f64();
    if let (Some(a), Some(b)) = (cpu_from, cpu_to) {
        out.client_cpu = probe.share(a, b, s.cores);
    }
    let mut slots = Vec::with_capacity(measured_conns);
    let mut ended_early: Option<Instant> = None;
    let mut all_ran_out = true;
    for t in tasks {
        match t.await {
            Ok((hist, n, errors, warm, samples, slot, flooder, ran_out)) => {
                match ran_out {
                    Some(at) if !flooder => {
                        ended_early = Some(ended_early.map_or(at, |e| e.max(at)));
                    }
                    _ if !flooder => all_ran_out = false,
                    _ => {}
                }
                let _ = out.hist.add(&hist);
                out.requests += n;
                out.errors += errors;
                out.warmup_errors += warm;
                for e in samples {
                    if out.samples.len() < 5 && !out.samples.contains(&e) {
                        out.samples.push(e);
                    }
                }
                if !flooder {
                    slots.push(slot);
                }
            }
            Err(e) => {
                out.samples.push(format!("connection task failed: {e}"));
                slots.push(Slot::default());
            }
        }
    }
    if let (true, Some(end)) = (all_ran_out, ended_early) {
        // Every connection ran out of requests before the deadline: the window ends there.
        out.seconds = end.duration_since(measure_from).as_secs_f64().max(1e-3);
    }
    if flooders > 0 {
        let secs = s.duration.as_secs_f64();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / secs;
        out.flood = Some([
            get(&flood.unauthorized),
            get(&flood.shed),
            get(&flood.other),
        ]);
    }
    ticker.abort();
    pb.finish_and_clear();
    out.close_run();
    (out, slots)
}
