//! `argon2-raw`: the machine's own argon2id rate at the server's parameters, with no HTTP, so
//! that `login` and `register` read as a fraction of what the hardware allows in the same run.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bp_auth::config::Config;

use crate::outcome::{new_hist, Outcome};
use crate::progress::{scenario_bar, tick, Live};
use crate::scenarios::Kind;
use crate::server::hasher;
use crate::{Res, Settings, PASSWORD};

/// The raw argon2id rate: one thread per core, each with its own scratch block, for the
/// scenario's warm-up and duration, counting hashes that complete in the measured window.
pub(crate) async fn run_argon2(config: &Config, s: &Settings) -> Res<Outcome> {
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
    out.close_run();
    Ok(out)
}
