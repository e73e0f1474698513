//! Group commit: one flusher thread makes writes durable in batches.
//!
//! A writer applies its change to the engine, takes a [`Ticket`], and (in `flush` mode) awaits
//! the first flush that *starts* after its write. Every writer that arrives while a flush runs
//! shares the next one, so durability costs one fsync per batch rather than per request. sled
//! 0.34's `flush_async` is deliberately not used: it hangs under concurrent callers (sled#1241).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::StoreError;
use crate::config::Durability;

/// The position of a write in the commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What the flusher has made durable so far.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    upto: u64,
    /// A flush has failed: from then on nothing is promised durable (see [`GroupCommit::failed`]).
    failed: bool,
}

type FlushFn = dyn Fn() -> Result<usize, StoreError> + Send + Sync;

struct Shared {
    written: AtomicU64,
    flushed: watch::Sender<Flushed>,
    stop: AtomicBool,
    flush: Box<FlushFn>,
    mode: Durability,
    interval: Duration,
}

/// The committer; dropping it (or [`GroupCommit::shutdown`]) flushes one last time.
pub struct GroupCommit {
    shared: Arc<Shared>,
    /// The flusher, woken by writers in `flush` mode.
    waker: thread::Thread,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the flusher thread around `flush`, the engine's blocking flush.
    pub fn start(
        mode: Durability,
        interval: Duration,
        flush: Box<FlushFn>,
    ) -> Result<Self, StoreError> {
        let (tx, _rx) = watch::channel(Flushed::default());
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            flushed: tx,
            stop: AtomicBool::new(false),
            flush,
            mode,
            interval,
        });
        let worker = shared.clone();
        let handle = thread::Builder::new()
            .name("bp-flusher".into())
            .spawn(move || flusher(&worker))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Self {
            shared,
            waker: handle.thread().clone(),
            thread: std::sync::Mutex::new(Some(handle)),
        })
    }

    /// Records that a write has been applied to the engine; call after the write.
    pub fn written(&self) -> Ticket {
        let t = Ticket(self.shared.written.fetch_add(1, Ordering::SeqCst) + 1);
        if self.shared.mode == Durability::Flush {
            self.waker.unpark();
        }
        t
    }

    /// Whether a flush has failed. It stays set: after a failed fsync the engine's memory holds
    /// writes that were answered as failed and may still reach disk with a later flush, so
    /// nothing the engine says can be trusted until a restart re-reads the disk.
    pub fn failed(&self) -> bool {
        self.shared.flushed.borrow().failed
    }

    /// Resolves when `ticket` is durable as the configured mode promises: at once in
    /// `periodic` mode, after a flush that began after the write in `flush` mode. Fails, in
    /// either mode, once a flush has failed.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let failed = || StoreError::Io("a flush failed; restart after fixing the disk".into());
        if self.shared.mode == Durability::Periodic {
            return if self.failed() { Err(failed()) } else { Ok(()) };
        }
        let mut rx = self.shared.flushed.subscribe();
        let state = rx
            .wait_for(|f| f.failed || f.upto >= ticket.0)
            .await
            .map_err(|_| StoreError::Io("the flusher has stopped".into()))?;
        if state.failed {
            Err(failed())
        } else {
            Ok(())
        }
    }

    /// Stops the flusher after one final flush of everything written.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn flusher(shared: &Shared) {
    let mut last_periodic = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let target = shared.written.load(Ordering::SeqCst);
        let done = shared.flushed.borrow().upto;
        let due = match shared.mode {
            Durability::Flush => target > done,
            Durability::Periodic => {
                target > done && (stopping || last_periodic.elapsed() >= shared.interval)
            }
        };
        if due {
            last_periodic = Instant::now();
            let started = Instant::now();
            match (shared.flush)() {
                Ok(_) => {
                    let m = crate::metrics::get();
                    m.store_flushes.inc();
                    m.store_flush_batch.observe((target - done) as f64);
                    m.store_flush_duration
                        .observe(started.elapsed().as_secs_f64());
                    shared.flushed.send_modify(|f| f.upto = target);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store flush failed");
                    shared.flushed.send_modify(|f| f.failed = true);
                    if stopping {
                        // Nothing more can be done for these writes; their waiters were told.
                        return;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        }
        if stopping {
            return;
        }
        match shared.mode {
            // Woken by writers; the timeout only bounds a missed wake-up.
            Durability::Flush => thread::park_timeout(Duration::from_millis(100)),
            Durability::Periodic => {
                thread::park_timeout(shared.interval.min(Duration::from_millis(100)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn writers_share_flushes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let gc = Arc::new(
            GroupCommit::start(
                Durability::Flush,
                Duration::from_millis(500),
                Box::new(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(5));
                    Ok(0)
                }),
            )
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move {
                let t = gc.written();
                gc.durable(t).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushes = calls.load(Ordering::SeqCst);
        assert!(
            (1..50).contains(&flushes),
            "{flushes} flushes for 50 writes"
        );
    }

    #[tokio::test]
    async fn a_failed_flush_is_reported() {
        let gc = GroupCommit::start(
            Durability::Flush,
            Duration::from_millis(500),
            Box::new(|| Err(StoreError::Io("disk full".into()))),
        )
        .unwrap();
        let t = gc.written();
        assert!(gc.durable(t).await.is_err());
    }

    #[tokio::test]
    async fn a_failed_flush_poisons_the_committer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        // Only the first flush fails: the disk "recovers", the committer must not.
        let gc = GroupCommit::start(
            Durability::Flush,
            Duration::from_millis(500),
            Box::new(move || {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(StoreError::Io("disk full".into()))
                } else {
                    Ok(0)
                }
            }),
        )
        .unwrap();
        assert!(!gc.failed());
        let t = gc.written();
        assert!(gc.durable(t).await.is_err());
        assert!(gc.failed());
        let later = gc.written();
        let answer = tokio::time::timeout(Duration::from_secs(5), gc.durable(later)).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "a ticket after the failure is refused, not made durable: {answer:?}"
        );
        assert!(gc.failed(), "the flag stays set");
    }

    #[tokio::test]
    async fn periodic_mode_is_poisoned_too() {
        let gc = GroupCommit::start(
            Durability::Periodic,
            Duration::from_millis(1),
            Box::new(|| Err(StoreError::Io("disk full".into()))),
        )
        .unwrap();
        gc.written();
        for _ in 0..200 {
            if gc.failed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gc.failed());
        let t = gc.written();
        assert!(gc.durable(t).await.is_err());
    }
}
