//! The load client: one task per connection, each sending its scenario's next request as soon
//! as the last one answered, recording the latency of those that complete inside the measured
//! window, and the client's share of the CPU over that window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::outcome::{new_hist, Outcome};
use crate::progress::{scenario_bar, tick, Live};
use crate::scenarios::{
    exhausted, flood_login, login, pipelinable, step, step_pipelined, Conn, Kind, Pool, Slot,
};
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

/// The runtimes the measuring connections run on: `cores / 2` threads (at least one), each a
/// single-threaded tokio runtime owning its share of the connections.
///
/// Why not the harness's multi-threaded runtime: on two cores shared with the server, its work
/// stealing woke an idle worker (a futex call, a context switch) for most answers, and that was
/// a good part of the client's CPU. A connection here is polled by the thread whose socket
/// became readable, and nothing else wakes. With half the cores, the client can never take more
/// than half the machine from the server.
fn io_handles() -> &'static [tokio::runtime::Handle] {
    static HANDLES: std::sync::OnceLock<Vec<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..(cores / 2).max(1))
            .filter_map(|i| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("{CLIENT_THREAD}-io-{i}"))
                    .spawn(move || {
                        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        else {
                            return;
                        };
                        let _ = tx.send(rt.handle().clone());
                        // Runs the spawned connections until the process ends.
                        rt.block_on(std::future::pending::<()>());
                    })
                    .ok()?;
                rx.recv().ok()
            })
            .collect()
    })
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
    let io = io_handles();
    for (id, slot) in slots.into_iter().enumerate() {
        let pool = pool.clone();
        let live = live.clone();
        let flood = flood.clone();
        let mut conn = Conn::new(id, &pool, slot);
        conn.wire.guarded = false;
        let flooder = id >= measured_conns;
        let depth = if pipelinable(kind) { s.pipeline } else { 1 };
        let on = match io.get(id % io.len().max(1)) {
            Some(h) => h.clone(),
            None => tokio::runtime::Handle::current(),
        };
        tasks.push(on.spawn(async move {
            let mut hist = new_hist();
            let (mut n, mut errors, mut warm_errors) = (0u64, 0u64, 0u64);
            let mut samples: Vec<String> = Vec::new();
            let mut statuses: Vec<u16> = Vec::with_capacity(depth);
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
                if depth > 1 {
                    // Pipelined: every answer of the batch is timed from the batch's write.
                    let r = step_pipelined(kind, &pool, &mut conn, depth, &mut statuses).await;
                    let t1 = Instant::now();
                    let measured = t1 >= measure_from && t1 <= deadline;
                    let answered = statuses.len() as u64;
                    let bad = statuses.iter().filter(|s| !(200..300).contains(*s)).count() as u64;
                    if measured {
                        n += answered;
                        last = Some(t1);
                        let us = t1.duration_since(t0).as_micros() as u64;
                        let _ = hist.record_n(us.max(1), answered);
                        live.done.fetch_add(answered, Ordering::Relaxed);
                        errors += bad + u64::from(r.is_err());
                    } else if t1 < measure_from {
                        warm_errors += bad + u64::from(r.is_err());
                    }
                    let e = match r {
                        Err(e) => Some(e),
                        Ok(()) if bad > 0 => Some(format!(
                            "HTTP {}",
                            statuses
                                .iter()
                                .find(|s| !(200..300).contains(*s))
                                .unwrap_or(&0)
                        )),
                        Ok(()) => None,
                    };
                    if let Some(e) = e {
                        if samples.len() < 3 && !samples.contains(&e) {
                            samples.push(e);
                        }
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
    // A connection still waiting for an answer well after the window (a stalled server) is
    // given up, so that the run ends.
    let give_up = tokio::time::Instant::from(deadline) + std::time::Duration::from_secs(30);
    for mut t in tasks {
        let joined = tokio::select! {
            r = &mut t => r,
            _ = tokio::time::sleep_until(give_up) => {
                t.abort();
                out.samples.push("a connection got no answer 30 s after the window".into());
                slots.push(Slot::default());
                continue;
            }
        };
        match joined {
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
