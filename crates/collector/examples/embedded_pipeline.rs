//! Embedding the collector's durable stage ("plugin" use): a Rust program
//! that already has its events — from its own transport, a queue, a batch
//! import — runs the policy → chain → WAL → Parquet stage in-process, with the
//! same guarantees as the collector service: an `ingest` that returns `Ok`
//! means the events are fsynced in the WAL; the store receives them as
//! hash-chained, hive-partitioned Parquet.
//!
//! Run: `cargo run -p otel-audit-collector --example embedded_pipeline [DIR]`
//! then `cargo run -p otel-audit-cli -- verify DIR/store`.

use std::sync::Arc;

use otel_audit_collector::config::Config;
use otel_audit_collector::ingest::{Ingest, Principal};
use otel_audit_collector::metrics::Metrics;
use otel_audit_collector::service::Collector;
use otel_audit_event::{AuditEvent, Category, Outcome};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/embedded-pipeline".into());
    // The same configuration as the service; only the receivers go unused.
    let config = Config::load(
        None,
        &[
            format!("storage.url={dir}/store"),
            format!("wal.dir={dir}/wal"),
            "collector.instance_id=importer-1".into(),
        ],
    )?;
    let collector = Collector::start(&config, Arc::new(Metrics::default())).await?;

    let events: Vec<(usize, AuditEvent)> = (0..1000)
        .map(|i| {
            let mut e = AuditEvent::new(
                "acme",
                "batch-importer",
                Category::DataAccess,
                "record.read",
            );
            e.actor.id = Some(format!("analyst-{}", i % 5));
            e.target.kind = Some("patient_record".into());
            e.target.id = Some(format!("rec-{i}"));
            e.outcome = Outcome::Success;
            // Content fields are HMAC'd by the server-side policy before the
            // WAL sees them.
            e.attributes.insert(
                "query".into(),
                format!("SELECT * FROM records WHERE id = {i}"),
            );
            (i, e)
        })
        .collect();
    let ack = collector
        .pipeline()
        .ingest(&Principal::default(), events, Vec::new())
        .await?;
    println!(
        "{} events durable ({} rejected)",
        ack.accepted,
        ack.rejected.len()
    );

    // Flushes every open file and leaves the WAL empty.
    let report = collector.shutdown().await?;
    println!(
        "stored under {dir}/store (WAL drained: {}); verify with: otel-audit verify {dir}/store",
        report.drained
    );
    Ok(())
}
