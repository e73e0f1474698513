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
    ratio_target(Kind::Refresh, Kind::Healthz, 0.25);
    ratio_target(Kind::Refresh, Kind::RefreshPeriodic, 0.60);
    ratio_target(Kind::MeUnderLoginFlood, Kind::MeJwt, 0.75);
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
    if let Some(o) = find(outcomes, Kind::Refresh) {
        out.push(Target {
            what: "refresh p99.9 < 20 ms".into(),
            met: o.ms(0.999) < 20.0,
            figure: format!("{:.2} ms", o.ms(0.999)),
        });
    }
    if let (Some(f), Some(me)) = (
        find(outcomes, Kind::MeUnderLoginFlood),
        find(outcomes, Kind::MeJwt),
    ) {
        let x = f.ms(0.99) / me.ms(0.99).max(1e-3);
        out.push(Target {
            what: "me-under-login-flood p99 <= 1.5x me-jwt's".into(),
            met: x <= 1.5,
            figure: format!("{x:.2}x ({:.2} vs {:.2} ms)", f.ms(0.99), me.ms(0.99)),
        });
    }
    // The harness measures the server: its client at most a third of the CPU, and nothing
    // faster than the floor beyond the noise of the two figures.
    let ran = || {
        outcomes
            .iter()
            .filter(|o| o.skipped.is_none() && o.requests > 0)
    };
    if let Some(worst) = ran().filter(|o| o.client_cpu.is_some()).max_by(|a, b| {
        a.client_cpu
            .partial_cmp(&b.client_cpu)
            .unwrap_or(std::cmp::Ordering::Equal)
    }) {
        let c = worst.client_cpu.unwrap_or(0.0);
        out.push(Target {
            what: "client cpu <= 1/3 in every scenario".into(),
            met: c <= crate::outcome::CLIENT_BOUND,
            figure: format!("at most {:.1}% ({})", c * 100.0, worst.kind.name()),
        });
    }
    if let Some(h) = find(outcomes, Kind::Healthz) {
        let over: Vec<String> = ran()
            .filter(|o| o.kind != Kind::Healthz && o.kind != Kind::Argon2Raw)
            .filter_map(|o| {
                let r = o.rate() / h.rate();
                let noise = o.spread().unwrap_or(0.0) + h.spread().unwrap_or(0.0);
                (r > 1.0 + noise).then(|| format!("{} {:.1}%", o.kind.name(), r * 100.0))
            })
            .collect();
        out.push(Target {
            what: "no ratio to healthz above 100% beyond the spread".into(),
            met: over.is_empty(),
            figure: if over.is_empty() {
                "none".into()
            } else {
                over.join(", ")
            },
        });
    }
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
