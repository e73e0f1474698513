//! Progress bars on stderr: a counter for setup work (seeding, logins, registrations) and a
//! timed bar per scenario, fed by live counters, so that a long run shows it is moving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::scenarios::Kind;

pub(crate) fn counter_bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:32}] {pos}/{len} ({per_sec}, {eta})")
            .expect("bar template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

/// Live counters for the progress bar.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) done: AtomicU64,
    pub(crate) errors: AtomicU64,
}

pub(crate) fn scenario_bar(kind: Kind, total: Duration) -> ProgressBar {
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:32}] {elapsed:>3} {msg}")
            .expect("bar template")
            .progress_chars("=> "),
    );
    pb.set_prefix(kind.name());
    pb
}

/// Redraws `pb` from `live` until aborted; the workers only bump atomics, so the bar costs
/// the measured loop nothing but a relaxed increment.
pub(crate) fn tick(
    pb: ProgressBar,
    live: Arc<Live>,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
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
