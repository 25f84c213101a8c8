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
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
