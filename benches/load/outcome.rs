//! A scenario's figures (request count, errors, latency histogram, client CPU share) and the
//! comparisons between the scenarios of one run that the table, the report and the targets share.

use hdrhistogram::Histogram;

use crate::scenarios::Kind;

/// One scenario's figures.
pub(crate) struct Outcome {
    pub(crate) kind: Kind,
    /// Why it did not run, if it did not.
    pub(crate) skipped: Option<String>,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Errors during the warm-up (not in `errors`, reported apart).
    pub(crate) warmup_errors: u64,
    pub(crate) seconds: f64,
    pub(crate) hist: Histogram<u64>,
    /// A few distinct error messages.
    pub(crate) samples: Vec<String>,
    /// The load generator's share of the CPU time client and server used in the measured
    /// window (of the whole machine against an external server); the mean over the rounds.
    pub(crate) client_cpu: Option<f64>,
    /// Each round's figures, for the spread.
    pub(crate) runs: Vec<Run>,
    /// `me-under-login-flood`: the flood's answers a second (401, 503, anything else).
    pub(crate) flood: Option<[f64; 3]>,
}

/// One round of a scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) p99_ms: f64,
    pub(crate) client_cpu: Option<f64>,
}

/// A client taking more than this share of the CPU measures itself as much as the server: the
/// table marks such a scenario as client-bound.
pub(crate) const CLIENT_BOUND: f64 = 1.0 / 3.0;

impl Outcome {
    pub(crate) fn skipped(kind: Kind, why: impl Into<String>) -> Self {
        Self {
            skipped: Some(why.into()),
            ..Self::empty(kind)
        }
    }

    pub(crate) fn empty(kind: Kind) -> Self {
        Self {
            kind,
            skipped: None,
            requests: 0,
            errors: 0,
            warmup_errors: 0,
            seconds: 0.0,
            hist: new_hist(),
            samples: Vec::new(),
            client_cpu: None,
            runs: Vec::new(),
            flood: None,
        }
    }

    /// Records this outcome's figures as one round (after a single run).
    pub(crate) fn close_run(&mut self) {
        self.runs = vec![Run {
            rate: self.rate(),
            p99_ms: self.ms(0.99),
            client_cpu: self.client_cpu,
        }];
    }

    /// Adds another round of the same scenario: counts and latencies pooled, rounds kept apart.
    pub(crate) fn merge(&mut self, other: Outcome) {
        if other.skipped.is_some() {
            if self.runs.is_empty() {
                self.skipped = other.skipped;
            }
            return;
        }
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.errors += other.errors;
        self.warmup_errors += other.warmup_errors;
        self.seconds += other.seconds;
        for e in other.samples {
            if self.samples.len() < 5 && !self.samples.contains(&e) {
                self.samples.push(e);
            }
        }
        self.runs.extend(other.runs);
        let cpus: Vec<f64> = self.runs.iter().filter_map(|r| r.client_cpu).collect();
        self.client_cpu = (!cpus.is_empty()).then(|| cpus.iter().sum::<f64>() / cpus.len() as f64);
        self.flood = match (self.flood, other.flood) {
            (Some(a), Some(b)) => Some([0, 1, 2].map(|i| (a[i] + b[i]) / 2.0)),
            (a, b) => a.or(b),
        };
        self.skipped = None;
    }

    /// Half the range of the rounds' rates, as a fraction of the mean rate (None for one round).
    pub(crate) fn spread(&self) -> Option<f64> {
        if self.runs.len() < 2 {
            return None;
        }
        let rates = self.runs.iter().map(|r| r.rate);
        let (lo, hi) = rates.fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
        let mean = self.rate();
        (mean > 0.0).then(|| (hi - lo) / 2.0 / mean)
    }

    pub(crate) fn p99_range(&self) -> Option<(f64, f64)> {
        if self.runs.len() < 2 {
            return None;
        }
        let p = self.runs.iter().map(|r| r.p99_ms);
        Some(p.fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        }))
    }

    /// Whether the client took more than [`CLIENT_BOUND`] of the CPU.
    pub(crate) fn client_bound(&self) -> bool {
        self.client_cpu.is_some_and(|c| c > CLIENT_BOUND)
    }

    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A quantile in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }
}

pub(crate) fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 2 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// The scenario `kind` of this run, if it ran and completed anything: only then can it be a base
/// for a ratio.
pub(crate) fn find(outcomes: &[Outcome], kind: Kind) -> Option<&Outcome> {
    outcomes
        .iter()
        .find(|o| o.kind == kind && o.skipped.is_none() && o.requests > 0)
}

/// `o`'s rate as a fraction of scenario `to`'s in the same run.
pub(crate) fn ratio(outcomes: &[Outcome], o: &Outcome, to: Kind) -> Option<f64> {
    if o.kind == to || o.skipped.is_some() {
        return None;
    }
    find(outcomes, to).map(|base| o.rate() / base.rate())
}
