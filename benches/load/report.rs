//! What a run reports: the progress line per scenario, the table on stdout and `report.json`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::abuse_memory::FailedLogins;
use crate::memory::Memory;
use crate::outcome::{ratio, Outcome};
use crate::scenarios::Kind;
use crate::targets::targets;
use crate::Settings;

/// The memory figures of a run, each taken on a server process of its own.
pub(crate) struct Memories<'a> {
    /// Per idle loaded user.
    pub(crate) idle: Option<&'a Memory>,
    /// Under a flood of failed logins from distinct emails and addresses.
    pub(crate) failed_logins: Option<&'a FailedLogins>,
}

/// Only the hashing flows are compared with the raw hash rate; for the others it means nothing.
fn argon2_relevant(kind: Kind) -> bool {
    kind.hashes() > 0
}

/// Hashes a second as a fraction of `argon2-raw`'s (a password change is two hashes).
fn vs_argon2(outcomes: &[Outcome], o: &Outcome) -> Option<f64> {
    ratio(outcomes, o, Kind::Argon2Raw).map(|r| r * f64::from(o.kind.hashes()))
}

/// One scenario's line on stderr as soon as it ends, before the table.
pub(crate) fn progress_line(o: &Outcome) -> String {
    match &o.skipped {
        Some(why) => format!("{:>20}: skipped ({why})", o.kind.name()),
        None => format!(
            "{:>20}: {:.0}/s, p99 {:.2} ms, {} errors, client cpu {}",
            o.kind.name(),
            o.rate(),
            o.ms(0.99),
            o.errors,
            pct(o.client_cpu)
        ),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// The table on stdout: a line a scenario, then memory, targets, errors and notes.
pub(crate) fn render_table(
    s: &Settings,
    outcomes: &[Outcome],
    memories: &Memories<'_>,
    notes: &[String],
    date: &str,
    elapsed: Duration,
) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nbp-auth load ({}) {date}: {} cores, {} connections, {} s measured per scenario \
         (+{} s warm-up), {} users, {}",
        s.mode.name(),
        s.cores,
        s.connections,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.users,
        s.target_name(),
    );
    // A run of the memory figures alone (`--scenarios none`) has no scenario to head.
    if !outcomes.is_empty() {
        let _ = writeln!(
            t,
            "{:<20} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10} {:>11}",
            "scenario",
            "req/s",
            "spread",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "/healthz",
            "/argon2",
            "client cpu"
        );
        let _ = writeln!(t, "{}", "-".repeat(20 + 11 + 8 + 40 + 9 + 34));
    }
    for o in outcomes {
        if let Some(why) = &o.skipped {
            let _ = writeln!(t, "{:<20} skipped: {why}", o.kind.name());
            continue;
        }
        let vs_argon = if argon2_relevant(o.kind) {
            pct(vs_argon2(outcomes, o))
        } else {
            "-".into()
        };
        let vs_health = if o.kind == Kind::Argon2Raw {
            "-".into()
        } else {
            pct(ratio(outcomes, o, Kind::Healthz))
        };
        let cpu = match o.client_cpu {
            Some(_) if o.client_bound() => format!("{} !", pct(o.client_cpu)),
            c => pct(c),
        };
        let _ = writeln!(
            t,
            "{:<20} {:>10.1} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>10} {:>10} {:>11}",
            o.kind.name(),
            o.rate(),
            o.spread()
                .map_or_else(|| "-".into(), |x| format!("±{:.1}%", x * 100.0)),
            o.ms(0.50),
            o.ms(0.90),
            o.ms(0.99),
            o.ms(0.999),
            o.errors,
            vs_health,
            vs_argon,
            cpu
        );
    }
    let bound: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.skipped.is_none() && o.client_bound())
        .map(|o| o.kind.name())
        .collect();
    if !bound.is_empty() {
        let _ = writeln!(
            t,
            "! client-bound: the load generator took more than a third of the CPU in {}: \
             these figures measure the client as much as the server",
            bound.join(", ")
        );
    }
    for o in outcomes {
        if let Some([unauthorized, shed, other]) = o.flood {
            let _ = writeln!(
                t,
                "{}: the flood was answered {unauthorized:.0}/s 401, {shed:.0}/s 503 (shed), \
                 {other:.0}/s otherwise",
                o.kind.name()
            );
        }
    }
    let memory = memories.idle;
    if let Some(m) = memory {
        let _ = writeln!(
            t,
            "\nmemory: {} idle users loaded into actors: VmRSS {:.1} MiB -> {:.1} MiB \
             (server at start {:.1} MiB), {:.0} bytes per loaded user{}",
            m.users - m.warmup_users,
            m.rss_before_kib as f64 / 1024.0,
            m.rss_after_kib as f64 / 1024.0,
            m.rss_started_kib as f64 / 1024.0,
            m.bytes_per_user(),
            if m.unexpected > 0 {
                format!(" ({} loads answered other than 401)", m.unexpected)
            } else {
                String::new()
            }
        );
        if let Some(n) = m.resident_actors {
            let _ = writeln!(
                t,
                "        the server reports {n} resident actors after loading"
            );
        }
    }
    if let Some(f) = memories.failed_logins {
        let _ = writeln!(t, "{}", f.render());
    }
    let targets = targets(outcomes, memory);
    if !targets.is_empty() {
        let _ = writeln!(
            t,
            "\ntargets (issues 5 and 16; informational, this machine is shared):"
        );
        for tg in &targets {
            let _ = writeln!(
                t,
                "  [{}] {:<56} {}",
                if tg.met { "met " } else { "MISS" },
                tg.what,
                tg.figure
            );
        }
    }
    let errors: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.errors > 0 || o.warmup_errors > 0)
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(t, "\nerrors:");
        for o in errors {
            let _ = writeln!(
                t,
                "  {}: {} measured, {} during warm-up; e.g. {}",
                o.kind.name(),
                o.errors,
                o.warmup_errors,
                o.samples.join(" | ")
            );
        }
    }
    let _ = writeln!(t, "\nnotes:");
    for n in notes {
        let _ = writeln!(t, "  {n}");
    }
    let _ = writeln!(
        t,
        "  req/s counts every request completed in the measured window (errors included); \
         latencies are per request, client side; ratios are to healthz and argon2-raw of this run"
    );
    if s.in_process() {
        let _ = writeln!(
            t,
            "  client cpu: the load generator's share of the CPU time client and server used in \
             the window (they share the cores: the server had the rest); over a third is marked !"
        );
    } else {
        let _ = writeln!(
            t,
            "  client cpu: the load generator's share of this machine's CPU in the window (the \
             server's own is not visible from here)"
        );
    }
    let _ = write!(t, "  total run time {:.1} s", elapsed.as_secs_f64());
    t
}

/// `report.json`: the table's figures, and the settings they were taken with.
pub(crate) fn report_json(
    s: &Settings,
    outcomes: &[Outcome],
    memories: &Memories<'_>,
    notes: &[String],
    date: &str,
    elapsed: Duration,
) -> Value {
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let scenarios: Vec<Value> = outcomes
        .iter()
        .map(|o| match &o.skipped {
            Some(why) => json!({"name": o.kind.name(), "what": o.kind.what(), "skipped": why}),
            None => json!({
                "name": o.kind.name(),
                "what": o.kind.what(),
                "requests": o.requests,
                "errors": o.errors,
                "warmup_errors": o.warmup_errors,
                "seconds": o.seconds,
                "rps": round(o.rate()),
                "latency_ms": {
                    "p50": o.ms(0.50),
                    "p90": o.ms(0.90),
                    "p99": o.ms(0.99),
                    "p99_9": o.ms(0.999),
                    "max": o.hist.max() as f64 / 1000.0,
                    "mean": round(o.hist.mean() / 1000.0),
                },
                "ratio_to_healthz": if o.kind == Kind::Argon2Raw { None } else { ratio(outcomes, o, Kind::Healthz).map(round) },
                "ratio_to_argon2_raw": if argon2_relevant(o.kind) { vs_argon2(outcomes, o).map(round) } else { None },
                "error_samples": o.samples,
                "client_cpu_share": o.client_cpu.map(round),
                "client_bound": o.client_bound(),
                "rounds": o.runs.iter().map(|r| json!({"rps": round(r.rate), "p99_ms": r.p99_ms, "client_cpu_share": r.client_cpu.map(round)})).collect::<Vec<_>>(),
                "spread": o.spread().map(round),
                "p99_range_ms": o.p99_range().map(|(lo, hi)| [lo, hi]),
                "flood_per_s": o.flood.map(|[u, sh, ot]| json!({"401": round(u), "503": round(sh), "other": round(ot)})),
            }),
        })
        .collect();
    let memory = memories.idle;
    let targets: Vec<Value> = targets(outcomes, memory)
        .into_iter()
        .map(|t| json!({"target": t.what, "met": t.met, "figure": t.figure}))
        .collect();
    let memory = memory.map(|m| {
        json!({
            "users": m.users,
            "warmup_users": m.warmup_users,
            "measured_users": m.users - m.warmup_users,
            "rss_server_started_kib": m.rss_started_kib,
            "rss_before_kib": m.rss_before_kib,
            "rss_after_kib": m.rss_after_kib,
            "bytes_per_user": round(m.bytes_per_user()),
            "loads_not_401": m.unexpected,
            "resident_actors_after": m.resident_actors,
            "seconds": round(m.seconds),
            "method": "a separate bp-auth process; VmRSS before and after a refresh with a random-secret token for each user (loads its actor, answers 401)",
        })
    });
    json!({
        "date": date,
        "mode": s.mode.name(),
        "target": s.target_name(),
        "machine": {"cores": s.cores},
        "settings": {
            "users": s.users,
            "connections": s.connections,
            "duration_s": s.duration.as_secs_f64(),
            "rounds": s.repeat,
            "warmup_s": s.warmup.as_secs_f64(),
            "memory_users": s.memory_users,
            "failed_logins": s.failed_logins,
        },
        "scenarios": scenarios,
        "memory": memory,
        "failed_logins": memories.failed_logins.map(FailedLogins::json),
        "targets": targets,
        "notes": notes,
        "total_seconds": round(elapsed.as_secs_f64()),
    })
}
