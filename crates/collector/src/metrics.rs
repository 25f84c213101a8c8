//! The collector's own metrics, rendered in the Prometheus text format on
//! `/metrics`.
//!
//! Counters are plain atomics (or a small map for labelled families) so the
//! hot path pays one relaxed add; gauges that other parts already know (WAL
//! bytes, chain heads) are read when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter family with labels (`name{a="x",b="y"} n`).
#[derive(Debug, Default)]
pub struct Family {
    values: Mutex<BTreeMap<Vec<(&'static str, String)>, u64>>,
}

impl Family {
    /// Adds `n` to the series with these labels.
    pub fn add(&self, labels: &[(&'static str, &str)], n: u64) {
        if n == 0 {
            return;
        }
        let key: Vec<(&'static str, String)> =
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *values.entry(key).or_default() += n;
    }

    /// The value of one series (0 when never added to).
    pub fn get(&self, labels: &[(&'static str, &str)]) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .iter()
            .find(|(k, _)| {
                k.len() == labels.len()
                    && k.iter()
                        .zip(labels)
                        .all(|((a, b), (c, d))| a == c && b == d)
            })
            .map_or(0, |(_, v)| *v)
    }

    /// The sum over every series.
    pub fn total(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.values().sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, v) in values.iter() {
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {v}");
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A plain counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram (Prometheus `histogram`: cumulative `_bucket{le}`
/// series, `_sum` and `_count`). Observing is a few relaxed adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS_SECS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS_SECS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Renders the histogram as `name` in the Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        let bounds = LATENCY_BUCKETS_SECS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_owned()]);
        for (le, b) in bounds.zip(&self.buckets) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Every counter of the collector. Shared (`Arc`) by receivers, pipeline and
/// sink.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by `transport` (grpc/http), `signal` (logs/traces)
    /// and `status` (ok, partial, bad_request, unauthenticated, too_large,
    /// unsupported_media_type, backpressure, unavailable, internal).
    pub requests: Family,
    /// Records (log records or spans) received, by `signal`.
    pub records_received: Family,
    /// Events accepted (durable in the WAL), by `tenant`.
    pub events_accepted: Family,
    /// Records rejected, by `reason`.
    pub records_rejected: Family,
    /// Records neither from otel-audit nor carrying GenAI attributes, dropped
    /// by the `unmapped: drop` setting, by `signal`.
    pub records_unmapped: Family,
    /// Requests refused with a retryable status, by `reason` (wal_full,
    /// queue_full, ...).
    pub backpressure: Family,
    /// Parquet files written, by `tenant`.
    pub files_written: Family,
    /// Bytes of Parquet written.
    pub bytes_written: Counter,
    /// Rows written to Parquet.
    pub rows_written: Counter,
    /// Failed store operations (each is retried), by `op`.
    pub store_errors: Family,
    /// Store retries.
    pub store_retries: Counter,
    /// Times the sink fell behind its in-memory buffer and read back from
    /// the WAL.
    pub sink_catch_ups: Counter,
    /// Signed digests written to the store.
    pub digests_written: Counter,
    /// Files and digests deleted by retention.
    pub retention_deletions: Counter,
    /// Time from a decoded request to its answer: mapping, policy, chain
    /// and the wait for the WAL's fsync (everything the collector adds to
    /// the client's acknowledgement latency after decoding).
    pub request_seconds: Histogram,
    /// The part of `request_seconds` spent waiting for the WAL group commit
    /// that holds the request's records.
    pub wal_wait_seconds: Histogram,
    /// The part of `request_seconds` spent waiting for room in the sink's
    /// in-memory feed (0 unless the sink is behind).
    pub feed_wait_seconds: Histogram,
    /// Time from a gRPC request's headers to its decoded message: receiving
    /// the body and protobuf decoding (before `request_seconds` starts).
    pub grpc_receive_seconds: Histogram,
}

impl Metrics {
    /// Renders the counters, then `extra` (gauges rendered by the caller).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP otel_audit_build_info Always 1; the version label names the build.\n\
             # TYPE otel_audit_build_info gauge\n\
             otel_audit_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let families: [(&Family, &str, &str); 8] = [
            (
                &self.requests,
                "otel_audit_requests_total",
                "OTLP requests answered, by transport, signal and status.",
            ),
            (
                &self.records_received,
                "otel_audit_records_received_total",
                "Log records and spans received.",
            ),
            (
                &self.events_accepted,
                "otel_audit_events_accepted_total",
                "Events made durable and acknowledged.",
            ),
            (
                &self.records_rejected,
                "otel_audit_records_rejected_total",
                "Records rejected, by reason.",
            ),
            (
                &self.records_unmapped,
                "otel_audit_records_unmapped_total",
                "Records neither from otel-audit nor GenAI, dropped.",
            ),
            (
                &self.backpressure,
                "otel_audit_backpressure_total",
                "Requests refused with a retryable status, by reason.",
            ),
            (
                &self.files_written,
                "otel_audit_files_written_total",
                "Parquet files written to the store.",
            ),
            (
                &self.store_errors,
                "otel_audit_store_errors_total",
                "Failed store operations (retried), by operation.",
            ),
        ];
        for (family, name, help) in families {
            family.render(&mut out, name, help);
        }
        let counters: [(&Counter, &str, &str); 6] = [
            (
                &self.bytes_written,
                "otel_audit_bytes_written_total",
                "Bytes of Parquet written to the store.",
            ),
            (
                &self.rows_written,
                "otel_audit_rows_written_total",
                "Rows written to the store.",
            ),
            (
                &self.store_retries,
                "otel_audit_store_retries_total",
                "Store operations retried.",
            ),
            (
                &self.sink_catch_ups,
                "otel_audit_sink_catch_ups_total",
                "Times the sink read back from the WAL after falling behind.",
            ),
            (
                &self.digests_written,
                "otel_audit_digests_written_total",
                "Signed digests written to the store.",
            ),
            (
                &self.retention_deletions,
                "otel_audit_retention_deletions_total",
                "Files and digests deleted by retention (each recorded in its chain first).",
            ),
        ];
        for (c, name, help) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        self.grpc_receive_seconds.render(
            &mut out,
            "otel_audit_grpc_receive_seconds",
            "Time from an OTLP/gRPC request's headers to its decoded message (body and protobuf decoding).",
        );
        self.request_seconds.render(
            &mut out,
            "otel_audit_request_duration_seconds",
            "Time from a decoded OTLP request to its answer (mapping, policy, chain, WAL wait).",
        );
        self.wal_wait_seconds.render(
            &mut out,
            "otel_audit_wal_wait_seconds",
            "Time a request waited for the WAL group commit (write and fsync) holding its records.",
        );
        self.feed_wait_seconds.render(
            &mut out,
            "otel_audit_feed_wait_seconds",
            "Time a request waited for room in the sink's in-memory feed after its WAL commit.",
        );
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_micros(300));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(20));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("# TYPE x_seconds histogram"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 20.0033\n"), "{out}");
    }

    #[test]
    fn renders_labelled_series_escaped() {
        let m = Metrics::default();
        m.requests.add(
            &[("transport", "grpc"), ("signal", "logs"), ("status", "ok")],
            2,
        );
        m.records_rejected.add(&[("reason", "a\"b")], 1);
        m.bytes_written.add(10);
        let text = m.render("");
        assert!(text.contains(
            "otel_audit_requests_total{transport=\"grpc\",signal=\"logs\",status=\"ok\"} 2"
        ));
        assert!(text.contains("otel_audit_records_rejected_total{reason=\"a\\\"b\"} 1"));
        assert!(text.contains("otel_audit_bytes_written_total 10"));
        assert_eq!(
            m.requests
                .get(&[("transport", "grpc"), ("signal", "logs"), ("status", "ok")]),
            2
        );
    }
}
