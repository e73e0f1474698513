//! Memory under a flood of failed logins (issue 11): `--failed-logins` requests, each from an
//! email that names no account and a client address seen once, sent to a separate `bp-auth`
//! process (the real binary, see `child.rs`) with rate limits on and `127.0.0.1` as a trusted
//! proxy, so that each `X-Forwarded-For` counts as a client of its own. Every table the server
//! keys by client input is then offered a new key per request; its VmRSS must stay within
//! [`GROWTH_BOUND_MIB`] of its figure after the warm-up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bp_auth::config::RateLimitConfig;
use bp_auth::domain::backoff::Attempts;
use reqwest::Client;
use serde_json::{json, Value};

use crate::child::{rss_kib, ChildServer};
use crate::http::{client, fan_out};
use crate::{Res, Settings};

/// How far the server's VmRSS may rise above its figure after the warm-up, at its peak.
///
/// What this flood can make the server hold is fixed when it starts: two tables (client
/// addresses; emails that name no account) of `rate_limit.max_tracked_addresses` (100,000)
/// slots of a `Mutex<Attempts>` (40 bytes; ~7.6 MiB for both), and, bounded by the same slot
/// numbers though logins do not touch them, governor's three keyed limiters (at most 100,000
/// keys each, a few MiB each) and the verified-token cache's fixed table.
/// That is under 24 MiB even if every page of it were first touched after the warm-up; the rest
/// of the bound is the allocator's slack (per-thread arenas, the buffers of `--connections`
/// connections). A table that kept an entry per key instead (64 bytes or more each, for two
/// keys a request) would grow by more than 120 MiB over a standard run's 1,000,000 requests, so
/// the bound tells the two apart there; `--quick`'s 20,000 cannot, and only show the scenario
/// runs.
pub(crate) const GROWTH_BOUND_MIB: u64 = 64;

/// Readings of VmRSS between the warm-up and the end, each after a tenth of the requests.
const CHECKPOINTS: usize = 10;

/// Requests not started by then are not sent (the run is then reported as cut short), so that
/// a stalled server cannot keep the harness going.
const MAX_WALL: Duration = Duration::from_secs(30 * 60);

/// Any password the rules accept (long enough to be hashed), never an account's.
const WRONG_PASSWORD: &str = "bench: a wrong password, on purpose";

/// The answers, by what they mean here.
#[derive(Default, Clone, Copy)]
pub(crate) struct Answers {
    /// `401 invalid_credentials`: what a failed login should answer.
    pub(crate) unauthorized: u64,
    /// `429`: colliding emails that filled a shared slot (the tables err towards throttling);
    /// [`FailedLogins::expected_rate_limited`] says how many to expect.
    pub(crate) rate_limited: u64,
    /// Any other status below 500.
    pub(crate) other: u64,
    /// 5xx or no answer.
    pub(crate) failures: u64,
}

impl Answers {
    fn total(&self) -> u64 {
        self.unauthorized + self.rate_limited + self.other + self.failures
    }
}

/// The scenario's figures.
pub(crate) struct FailedLogins {
    /// Requests asked for, warm-up included.
    pub(crate) requests: usize,
    pub(crate) warmup: usize,
    pub(crate) connections: usize,
    /// `rate_limit.max_tracked_addresses` of the server (its default).
    pub(crate) slots: usize,
    /// `rate_limit.login_failures_per_account` of the server (its default), which an unknown
    /// email's slot follows too.
    pub(crate) account_limit: u32,
    /// Whether the server counted forwarded addresses (checked before the flood).
    pub(crate) forwarded_believed: bool,
    pub(crate) answers: Answers,
    /// A few distinct answers that were neither 401 nor 429.
    pub(crate) samples: Vec<String>,
    pub(crate) rss_started_kib: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_peak_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// (requests sent so far, VmRSS) after each tenth of the measured requests.
    pub(crate) checkpoints: Vec<(usize, u64)>,
    /// The requests after the warm-up, and how long they took.
    pub(crate) measured: usize,
    pub(crate) measured_seconds: f64,
    /// From starting the server to the last reading.
    pub(crate) wall_seconds: f64,
    /// Whether [`MAX_WALL`] stopped the run before every request was sent.
    pub(crate) cut_short: bool,
}

impl FailedLogins {
    pub(crate) fn rate(&self) -> f64 {
        self.measured as f64 / self.measured_seconds.max(1e-9)
    }

    pub(crate) fn growth_kib(&self) -> i64 {
        self.rss_after_kib as i64 - self.rss_before_kib as i64
    }

    pub(crate) fn peak_growth_kib(&self) -> i64 {
        self.rss_peak_kib as i64 - self.rss_before_kib as i64
    }

    pub(crate) fn bound_held(&self) -> bool {
        self.peak_growth_kib() <= (GROWTH_BOUND_MIB * 1024) as i64
    }

    /// The 429s that collisions alone explain: each of the distinct emails lands in one of
    /// `slots` slots, so a slot holds X ~ Poisson(requests / slots) of them, and all but the
    /// first `account_limit` of a slot's failures answer 429 (while the run is shorter than
    /// `rate_limit.window_seconds`, 15 minutes).
    pub(crate) fn expected_rate_limited(&self) -> f64 {
        let lambda = self.answers.total() as f64 / self.slots.max(1) as f64;
        if lambda <= 0.0 {
            return 0.0;
        }
        let limit = f64::from(self.account_limit);
        // In log space: e^-lambda underflows for a large lambda.
        let (mut log_p, mut excess) = (-lambda, 0.0);
        let last = (lambda + 20.0 * lambda.sqrt() + 50.0) as u64;
        for k in 1..=last {
            log_p += lambda.ln() - (k as f64).ln();
            excess += (k as f64 - limit).max(0.0) * log_p.exp();
        }
        excess * self.slots as f64
    }

    /// The fixed tables for addresses and unknown emails, as the server allocates them.
    fn tables_bytes(&self) -> usize {
        2 * self.slots * std::mem::size_of::<Mutex<Attempts>>()
    }

    /// Its section of the table on stdout.
    pub(crate) fn render(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let smib = |kib: i64| kib as f64 / 1024.0;
        let a = &self.answers;
        let mut t = format!(
            "\nfailed logins (issue 11): {} logins with wrong passwords, each from its own unknown \
             email and client address (X-Forwarded-For from a trusted proxy; half IPv4, half \
             IPv6 in distinct /64s), rate limits on, {} connections{}\n",
            a.total(),
            self.connections,
            if self.cut_short {
                format!(" (cut short after {} s)", MAX_WALL.as_secs())
            } else {
                String::new()
            },
        );
        t += &format!(
            "        argon2id at 8 KiB and 1 iteration: this measures memory, not hashing\n\
             \x20       {:.0} req/s after the warm-up ({} requests in {:.1} s; {:.1} s in all); \
             401: {}, 429: {} (slots shared by emails predict {:.0}), other: {}, 5xx or no \
             answer: {}{}\n",
            self.rate(),
            self.measured,
            self.measured_seconds,
            self.wall_seconds,
            a.unauthorized,
            a.rate_limited,
            self.expected_rate_limited(),
            a.other,
            a.failures,
            if self.samples.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {})", self.samples.join(" | "))
            },
        );
        t += &format!(
            "        VmRSS: {:.1} MiB at start, {:.1} MiB after the warm-up ({} requests), peak \
             {:.1} MiB, {:.1} MiB after: growth {:+.1} MiB, peak {:+.1} MiB ({:.1} bytes per \
             measured request)\n",
            mib(self.rss_started_kib),
            mib(self.rss_before_kib),
            self.warmup,
            mib(self.rss_peak_kib),
            mib(self.rss_after_kib),
            smib(self.growth_kib()),
            smib(self.peak_growth_kib()),
            self.peak_growth_kib() as f64 * 1024.0 / self.measured.max(1) as f64,
        );
        let points: Vec<String> = self
            .checkpoints
            .iter()
            .map(|(done, kib)| format!("{}k {:.1}", done / 1000, mib(*kib)))
            .collect();
        t += &format!("        checkpoints (sent, MiB): {}\n", points.join(", "));
        t +=
            &format!(
            "        [{}] peak growth <= {GROWTH_BOUND_MIB} MiB (the fixed tables for addresses \
             and unknown emails: 2 x {} slots x {} B = {:.1} MiB, allocated at start){}",
            if self.bound_held() { "held" } else { "EXCEEDED" },
            self.slots,
            std::mem::size_of::<Mutex<Attempts>>(),
            self.tables_bytes() as f64 / (1024.0 * 1024.0),
            if self.forwarded_believed {
                "\n        forwarded addresses counted apart: checked first (one filled its \
                 address limit and got 429, the next address 401)"
            } else {
                "\n        WARNING: the server did not count X-Forwarded-For addresses apart, \
                 so the address table was not exercised"
            },
        );
        t
    }

    /// Its part of `report.json`.
    pub(crate) fn json(&self) -> Value {
        let a = &self.answers;
        json!({
            "requests": a.total(),
            "requests_asked": self.requests,
            "warmup_requests": self.warmup,
            "measured_requests": self.measured,
            "measured_seconds": (self.measured_seconds * 1000.0).round() / 1000.0,
            "wall_seconds": (self.wall_seconds * 1000.0).round() / 1000.0,
            "rps": self.rate().round(),
            "connections": self.connections,
            "cut_short": self.cut_short,
            "answers": {
                "401": a.unauthorized,
                "429": a.rate_limited,
                "429_expected_from_collisions": self.expected_rate_limited().round(),
                "other": a.other,
                "5xx_or_none": a.failures,
            },
            "samples": self.samples,
            "forwarded_addresses_counted": self.forwarded_believed,
            "rss_server_started_kib": self.rss_started_kib,
            "rss_before_kib": self.rss_before_kib,
            "rss_peak_kib": self.rss_peak_kib,
            "rss_after_kib": self.rss_after_kib,
            "growth_kib": self.growth_kib(),
            "peak_growth_kib": self.peak_growth_kib(),
            "checkpoints": self.checkpoints.iter().map(|(done, kib)| json!({"sent": done, "rss_kib": kib})).collect::<Vec<_>>(),
            "bound_mib": GROWTH_BOUND_MIB,
            "bound_held": self.bound_held(),
            "max_tracked_addresses": self.slots,
            "fixed_tables_bytes": self.tables_bytes(),
            "method": "a separate bp-auth process, rate limits on, 127.0.0.1 a trusted proxy; POST /api/auth/token with a wrong password for ghost-<i>@bench.example from X-Forwarded-For address i (even i IPv4, odd i IPv6 in its own /64); VmRSS after the warm-up (1%), after each tenth, sampled every 100 ms for the peak, and at the end; argon2id at 8 KiB and 1 iteration because this measures memory, not hashing",
        })
    }
}

/// Client address `i`, distinct for every `i`: even ones IPv4 from 100.64.0.0 up (the shared
/// address space holds 4,194,304, so 8,388,608 requests before the range runs out: beyond it
/// they are still distinct), odd ones IPv6 in a /64 of their own under 2001:db8::/32. They are
/// only ever header values: nothing is sent to them.
fn address(i: u64) -> IpAddr {
    let n = i / 2;
    if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x6440_0000u32.wrapping_add(n as u32)))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            (n >> 16) as u16,
            n as u16,
            0,
            0,
            0,
            1,
        ))
    }
}

async fn failed_login(c: &Client, base: &str, email: &str, from: IpAddr) -> Result<u16, String> {
    let res = c
        .post(format!("{base}/api/auth/token"))
        .header("x-forwarded-for", from.to_string())
        .form(&[("username", email), ("password", WRONG_PASSWORD)])
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    Ok(status)
}

/// Whether the server counts forwarded addresses apart: `limit` failures from one forwarded
/// address fill its count, so its next attempt answers 429 while another forwarded address still
/// gets 401. Were `X-Forwarded-For` not believed, both would count as 127.0.0.1 and answer 429;
/// with rate limits off, both would answer 401.
async fn probe_forwarded(base: &str, limit: u32) -> Res<bool> {
    let c = client();
    let one: IpAddr = "192.0.2.1".parse()?;
    let other: IpAddr = "192.0.2.2".parse()?;
    for k in 0..limit {
        failed_login(&c, base, &format!("probe-{k}@bench.example"), one).await?;
    }
    let again = failed_login(&c, base, "probe-again@bench.example", one).await?;
    let elsewhere = failed_login(&c, base, "probe-elsewhere@bench.example", other).await?;
    Ok(again == 429 && elsewhere == 401)
}

/// Sends requests `range` over `connections` connections and sorts the answers.
async fn flood(
    base: &Arc<str>,
    range: std::ops::Range<usize>,
    connections: usize,
    msg: &str,
    answers: &mut Answers,
    samples: &mut Vec<String>,
) {
    let base = base.clone();
    let results = fan_out(range.collect(), connections, msg, move |c, i: usize| {
        let base = base.clone();
        async move {
            let email = format!("ghost-{i}@bench.example");
            failed_login(&c, &base, &email, address(i as u64)).await
        }
    })
    .await;
    for r in results {
        let sample = match r {
            Ok(401) => {
                answers.unauthorized += 1;
                None
            }
            Ok(429) => {
                answers.rate_limited += 1;
                None
            }
            Ok(s) if s < 500 => {
                answers.other += 1;
                Some(format!("HTTP {s}"))
            }
            Ok(s) => {
                answers.failures += 1;
                Some(format!("HTTP {s}"))
            }
            Err(e) => {
                answers.failures += 1;
                Some(e)
            }
        };
        if let Some(e) = sample {
            if samples.len() < 3 && !samples.contains(&e) {
                samples.push(e);
            }
        }
    }
}

/// Starts the server on a data dir of its own under `dir` and floods it with failed logins.
pub(crate) async fn measure_failed_logins(dir: &Path, s: &Settings) -> Res<FailedLogins> {
    let wall = Instant::now();
    let limits = RateLimitConfig::default();
    let server = ChildServer::start(
        &dir.join("failed-logins"),
        &[
            ("BP_AUTH__RATE_LIMIT__ENABLED", "true"),
            ("BP_AUTH__SERVER__TRUSTED_PROXIES", r#"["127.0.0.1"]"#),
            // The cheapest argon2id there is: this run is about the memory the throttles
            // keep, and at the real parameters hashing alone would make 1,000,000 logins take
            // hours on two cores. The report says so.
            ("BP_AUTH__PASSWORD__ARGON2_MEMORY_KIB", "8"),
            ("BP_AUTH__PASSWORD__ARGON2_ITERATIONS", "1"),
        ],
    )
    .await?;
    let base: Arc<str> = server.base.as_str().into();
    let rss_started_kib = server.rss_kib()?;
    let forwarded_believed = probe_forwarded(&base, limits.login_failures_per_ip).await?;

    // Readings at the checkpoints alone could miss a rise that is given back before the next.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, pid) = (peak.clone(), server.pid());
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let n = s.failed_logins;
    let conns = s.connections;
    let warmup = (n / 100).clamp(1.min(n), n);
    let mut answers = Answers::default();
    let mut samples = Vec::new();
    flood(
        &base,
        0..warmup,
        conns,
        "failed logins: warm-up",
        &mut answers,
        &mut samples,
    )
    .await;
    // Lets the last answers' buffers go back before the reading that the rest is compared with.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib()?;
    peak.store(rss_before_kib, Ordering::Relaxed);

    let started = Instant::now();
    let mut checkpoints = Vec::with_capacity(CHECKPOINTS);
    let mut sent = warmup;
    let mut cut_short = false;
    for k in 1..=CHECKPOINTS {
        if wall.elapsed() > MAX_WALL {
            cut_short = true;
            break;
        }
        let end = warmup + (n - warmup) * k / CHECKPOINTS;
        let msg = format!("failed logins {k}/{CHECKPOINTS}");
        flood(&base, sent..end, conns, &msg, &mut answers, &mut samples).await;
        sent = end;
        let kib = server.rss_kib()?;
        peak.fetch_max(kib, Ordering::Relaxed);
        checkpoints.push((sent, kib));
        eprintln!(
            "failed logins: {sent}/{n} sent, server VmRSS {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    let measured_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = server.rss_kib()?;
    sampler.abort();
    let rss_peak_kib = peak.load(Ordering::Relaxed).max(rss_after_kib);
    drop(server);
    Ok(FailedLogins {
        requests: n,
        warmup,
        connections: conns,
        slots: limits.max_tracked_addresses,
        account_limit: limits.login_failures_per_account,
        forwarded_believed,
        answers,
        samples,
        rss_started_kib,
        rss_before_kib,
        rss_peak_kib,
        rss_after_kib,
        checkpoints,
        measured: sent - warmup,
        measured_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
        cut_short,
    })
}
