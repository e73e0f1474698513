//! The performance targets of issue 5 (ratios to the run's own floors, p99 bounds, memory per
//! user), judged on whatever figures this run has; informational, since the machine is shared.

use crate::memory::Memory;
use crate::outcome::{find, ratio, Outcome};
use crate::scenarios::Kind;

/// One target, judged on this run's figures.
pub(crate) struct Target {
    pub(crate) what: String,
    pub(crate) met: bool,
    pub(crate) figure: String,
}

/// The targets of issue 5 that this run's figures can judge.
pub(crate) fn targets(outcomes: &[Outcome], memory: Option<&Memory>) -> Vec<Target> {
    let mut out = Vec::new();
    let mut ratio_target = |kind: Kind, to: Kind, min: f64| {
        if let (Some(o), Some(_)) = (find(outcomes, kind), find(outcomes, to)) {
            let r = ratio(outcomes, o, to).unwrap_or(0.0);
            out.push(Target {
                what: format!("{} >= {:.0}% of {}", kind.name(), min * 100.0, to.name()),
                met: r >= min,
                figure: format!("{:.1}%", r * 100.0),
            });
        }
    };
    ratio_target(Kind::Login, Kind::Argon2Raw, 0.85);
    ratio_target(Kind::Register, Kind::Argon2Raw, 0.80);
    ratio_target(Kind::MeJwt, Kind::Healthz, 0.60);
    ratio_target(Kind::MeApiKey, Kind::Healthz, 0.65);
    ratio_target(Kind::Refresh, Kind::Healthz, 0.15);
    ratio_target(Kind::Refresh, Kind::RefreshPeriodic, 0.60);
    let mut p99_target = |kind: Kind, max_ms: f64| {
        if let Some(o) = find(outcomes, kind) {
            out.push(Target {
                what: format!("{} p99 < {max_ms} ms", kind.name()),
                met: o.ms(0.99) < max_ms,
                figure: format!("{:.2} ms", o.ms(0.99)),
            });
        }
    };
    p99_target(Kind::MeJwt, 5.0);
    p99_target(Kind::Refresh, 10.0);
    if let Some(o) = find(outcomes, Kind::Mixed) {
        out.push(Target {
            what: "mixed with zero errors".into(),
            met: o.errors == 0 && o.warmup_errors == 0,
            figure: format!("{} errors", o.errors + o.warmup_errors),
        });
    }
    if let Some(m) = memory {
        out.push(Target {
            what: "memory per idle loaded user <= 3 KiB".into(),
            met: m.bytes_per_user() <= 3072.0,
            figure: format!("{:.0} bytes ({} users)", m.bytes_per_user(), m.users),
        });
    }
    out
}
