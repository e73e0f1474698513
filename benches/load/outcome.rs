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
    /// This harness's share of the process's CPU time in the measured window, when the server
    /// runs in this process (the rest is the server's).
    pub(crate) client_cpu: Option<f64>,
}

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
        }
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
