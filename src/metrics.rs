//! Prometheus metrics, in one process-wide registry (the layers that record them, from the
//! flusher thread to the handlers, then need no handle threaded through them).
//!
//! Gauges that describe current state (resident actors, hashing queue depth) are read at scrape
//! time by the `/metrics` handler rather than kept up to date on every change.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub logins: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub resident_actors: IntGauge,
    pub hash_queue_depth: IntGauge,
    pub hash_wait: Histogram,
    pub store_flushes: IntCounter,
    pub store_flush_batch: Histogram,
    pub store_flush_duration: Histogram,
    pub deliveries: IntCounterVec,
    pub sessions_created: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    /// Changes decided on a stale copy of a user (another node wrote it first) and decided
    /// again on the stored state.
    pub store_conflicts: IntCounter,
    /// Other nodes' changes this node was told of, by kind (`user`, `everything`, `keys`).
    pub invalidations: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    let _ = registry.register(Box::new(h.clone()));
    h
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|_| unreachable_metric(name));
    let _ = registry.register(Box::new(h.clone()));
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
    let _ = registry.register(Box::new(g.clone()));
    g
}

/// Metric names and labels here are constants that are valid by construction.
#[allow(clippy::panic)]
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let store_flushes =
            IntCounter::new("bp_store_flushes_total", "Store flushes (fsyncs) completed")
                .unwrap_or_else(|_| unreachable_metric("bp_store_flushes_total"));
        let _ = r.register(Box::new(store_flushes.clone()));
        let store_conflicts = IntCounter::new(
            "bp_store_conflicts_total",
            "Changes decided on a stale copy of a user and decided again",
        )
        .unwrap_or_else(|_| unreachable_metric("bp_store_conflicts_total"));
        let _ = r.register(Box::new(store_conflicts.clone()));
        Self {
            http_requests: counter_vec(
                &r,
                "bp_http_requests_total",
                "HTTP requests by route, method and status",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "bp_http_request_duration_seconds",
                "HTTP request latency by route",
                &["route"],
                LATENCY.to_vec(),
            ),
            logins: counter_vec(
                &r,
                "bp_logins_total",
                "Login attempts by outcome",
                &["outcome"],
            ),
            refreshes: counter_vec(
                &r,
                "bp_refreshes_total",
                "Refresh attempts by outcome",
                &["outcome"],
            ),
            resident_actors: gauge(&r, "bp_resident_actors", "User actors resident in memory"),
            hash_queue_depth: gauge(
                &r,
                "bp_password_hash_queue_depth",
                "Password hashes waiting or running",
            ),
            hash_wait: histogram(
                &r,
                "bp_password_hash_wait_seconds",
                "Time a password hash waited for a thread",
                LATENCY.to_vec(),
            ),
            store_flushes,
            store_flush_batch: histogram(
                &r,
                "bp_store_flush_batch_writes",
                "Writes made durable by one flush",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            store_flush_duration: histogram(
                &r,
                "bp_store_flush_duration_seconds",
                "Duration of one store flush",
                LATENCY.to_vec(),
            ),
            deliveries: counter_vec(
                &r,
                "bp_deliveries_total",
                "Code deliveries by channel and outcome",
                &["channel", "outcome"],
            ),
            sessions_created: counter_vec(
                &r,
                "bp_sessions_created_total",
                "Sessions opened, by how the login was proved",
                &["method"],
            ),
            sessions_ended: counter_vec(
                &r,
                "bp_sessions_revoked_total",
                "Sessions ended, by reason (expired ones when they are pruned)",
                &["reason"],
            ),
            store_conflicts,
            invalidations: counter_vec(
                &r,
                "bp_cluster_invalidations_total",
                "Other nodes' changes this node dropped its cached state for, by kind",
                &["kind"],
            ),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_families() {
        let m = get();
        m.logins.with_label_values(&["success"]).inc();
        m.http_duration
            .with_label_values(&["/healthz"])
            .observe(0.001);
        let text = m.render();
        assert!(text.contains("bp_logins_total{outcome=\"success\"}"));
        assert!(text.contains("bp_http_request_duration_seconds_bucket"));
    }
}
