//! The password-hashing pool: long-lived threads, off the async workers and the actors, each
//! reusing one argon2 memory block, behind a bounded queue.
//!
//! argon2id at OWASP's parameters costs ~17 ms of one core. Letting hashes queue without bound
//! would let one login flood raise every login's latency without limit, so a full queue answers
//! [`HashPoolError::Overloaded`] at once (503 with `Retry-After`) instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::domain::password::{HashError, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum HashPoolError {
    #[error("too many password hashes waiting")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

type Reply<T> = oneshot::Sender<Result<T, HashPoolError>>;

struct Job {
    queued: std::time::Instant,
    password: Zeroizing<Vec<u8>>,
    kind: Kind,
}

enum Kind {
    Hash(Reply<String>),
    Verify { phc: Arc<str>, reply: Reply<bool> },
}

impl Kind {
    /// The requester has gone (its future was dropped): nobody would read the answer.
    fn abandoned(&self) -> bool {
        match self {
            Self::Hash(reply) => reply.is_closed(),
            Self::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

/// A handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    queue: SyncSender<Job>,
    /// Jobs submitted and not yet finished (waiting or running).
    in_flight: Arc<AtomicUsize>,
    /// A hash of a random password, checked for unknown emails so that they cost the same.
    dummy: Arc<str>,
}

impl HashPool {
    /// Starts `threads` hashing threads (0 = one per core) at `priority`, with room for
    /// `max_queue` waiting jobs.
    pub fn start(
        hasher: Hasher,
        threads: usize,
        max_queue: usize,
        priority: Priority,
    ) -> Result<Self, HashPoolError> {
        let threads = if threads == 0 {
            thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(max_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        for i in 0..threads {
            let rx = rx.clone();
            let hasher = hasher.clone();
            let in_flight = in_flight.clone();
            thread::Builder::new()
                .name(format!("bp-hash-{i}"))
                .spawn(move || {
                    priority.apply();
                    worker(&hasher, &rx, &in_flight)
                })
                .map_err(|e| HashPoolError::Failed(e.to_string()))?;
        }
        let dummy_secret = crate::domain::secrets::random_32();
        let dummy = hasher
            .hash(&dummy_secret, &mut hasher.scratch())
            .map_err(|e| HashPoolError::Failed(e.to_string()))?;
        Ok(Self {
            queue: tx,
            in_flight,
            dummy: dummy.into(),
        })
    }

    /// Jobs waiting or running now.
    pub fn depth(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn submit(&self, job: Job) -> Result<(), HashPoolError> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Err(HashPoolError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Err(HashPoolError::Failed("hashing threads have stopped".into()))
            }
        }
    }

    /// Queues one job for `password` and waits for its answer.
    async fn ask<T>(
        &self,
        password: &str,
        kind: impl FnOnce(Reply<T>) -> Kind,
    ) -> Result<T, HashPoolError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job {
            queued: std::time::Instant::now(),
            password: Zeroizing::new(password.as_bytes().to_vec()),
            kind: kind(reply),
        })?;
        rx.await
            .map_err(|_| HashPoolError::Failed("hashing thread dropped the job".into()))?
    }

    /// A new PHC hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, HashPoolError> {
        self.ask(password, Kind::Hash).await
    }

    /// Whether `password` matches `phc`; with `None` (an unknown user), checks against the dummy
    /// hash and answers false, at the same cost.
    pub async fn verify(
        &self,
        password: &str,
        phc: Option<Arc<str>>,
    ) -> Result<bool, HashPoolError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.clone());
        let matched = self
            .ask(password, |reply| Kind::Verify { phc, reply })
            .await?;
        Ok(known && matched)
    }
}

/// How the hashing threads yield to the rest of the server (`password.hash_nice`,
/// `password.hash_idle`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Priority {
    /// The nice value, 0–19.
    pub nice: i32,
    /// `SCHED_IDLE` (Linux).
    pub idle: bool,
}

impl Priority {
    /// Applies to the calling thread. On Linux the nice value and the policy are a thread's
    /// own (the `PRIO_PROCESS` of "this process", 0, names the calling thread), so only the
    /// calling thread (a hashing thread, the store's prewarm) yields; lowering either needs no
    /// privilege. A thread that cannot is logged and runs at the normal priority.
    pub(crate) fn apply(self) {
        if self.nice > 0 {
            if let Err(e) = rustix::process::setpriority_process(None, self.nice) {
                tracing::warn!(error = %e, nice = self.nice, "thread keeps its nice value");
            }
        }
        #[cfg(target_os = "linux")]
        if self.idle {
            use thread_priority::unix::{
                set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
                ThreadSchedulePolicy,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            let set = set_thread_priority_and_policy(
                thread_native_id(),
                thread_priority::ThreadPriority::Min,
                idle,
            );
            if let Err(e) = set {
                tracing::warn!(error = ?e, "thread keeps its scheduling policy");
            }
        }
    }
}

fn record_wait(queued: std::time::Instant) {
    crate::metrics::get()
        .hash_wait
        .observe(queued.elapsed().as_secs_f64());
}

/// Runs jobs until the pool is dropped. The count of jobs in flight is kept by the threads, not
/// the callers, so a request abandoned by its client (its future dropped) is counted until its
/// job leaves the queue; a job whose requester has already gone is skipped, not computed for
/// nobody.
fn worker(hasher: &Hasher, rx: &Mutex<std::sync::mpsc::Receiver<Job>>, in_flight: &AtomicUsize) {
    let mut scratch = hasher.scratch();
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        run(hasher, job, &mut scratch, in_flight);
    }
}

fn run(hasher: &Hasher, job: Job, scratch: &mut [argon2::Block], in_flight: &AtomicUsize) {
    // Done before replying, so a caller that has its answer never sees its own job counted.
    let done = || in_flight.fetch_sub(1, Ordering::Relaxed);
    let Job {
        queued,
        password,
        kind,
    } = job;
    if kind.abandoned() {
        done();
        return;
    }
    record_wait(queued);
    let failed = |e: HashError| HashPoolError::Failed(e.to_string());
    match kind {
        Kind::Hash(reply) => {
            let r = hasher.hash(&password, scratch).map_err(failed);
            done();
            let _ = reply.send(r);
        }
        Kind::Verify { phc, reply } => {
            let r = hasher.verify(&password, &phc, scratch).map_err(failed);
            done();
            let _ = reply.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_verifies_off_thread() {
        let pool = HashPool::start(
            Hasher::new(19_456, 2, 1).unwrap(),
            1,
            4,
            Priority {
                nice: 19,
                idle: true,
            },
        )
        .unwrap();
        let phc: Arc<str> = pool.hash("correct horse").await.unwrap().into();
        assert!(pool
            .verify("correct horse", Some(phc.clone()))
            .await
            .unwrap());
        assert!(!pool.verify("wrong", Some(phc)).await.unwrap());
        assert!(!pool.verify("anything", None).await.unwrap());
        assert_eq!(pool.depth(), 0);
    }

    #[tokio::test]
    async fn abandoned_jobs_are_skipped_and_not_counted_forever() {
        let pool = HashPool::start(
            Hasher::new(19_456, 2, 1).unwrap(),
            1,
            8,
            Priority::default(),
        )
        .unwrap();
        let first = {
            let p = pool.clone();
            tokio::spawn(async move { p.hash("correct horse").await })
        };
        tokio::task::yield_now().await;
        for _ in 0..4 {
            let p = pool.clone();
            let abandoned = tokio::spawn(async move { p.hash("gone before it ran").await });
            tokio::task::yield_now().await;
            abandoned.abort();
        }
        first.await.unwrap().unwrap();
        for _ in 0..200 {
            if pool.depth() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("depth stuck at {}", pool.depth());
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once() {
        let pool = HashPool::start(
            Hasher::new(19_456, 2, 1).unwrap(),
            1,
            1,
            Priority {
                nice: 10,
                idle: false,
            },
        )
        .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let p = pool.clone();
            tasks.push(tokio::spawn(async move { p.hash("correct horse").await }));
        }
        let mut shed = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(HashPoolError::Overloaded)) {
                shed += 1;
            }
        }
        assert!(shed >= 1, "at most 1 running + 1 waiting of 8");
    }
}
