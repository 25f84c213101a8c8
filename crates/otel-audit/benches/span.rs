//! What an audited call costs the thread that makes it.
//!
//! `cargo bench -p otel-audit --bench span`. Three subscribers, one run, the
//! same five-argument function (user, model, prompt, max tokens,
//! temperature):
//!
//! - `registry_instrument`: `#[tracing::instrument]` under a bare
//!   `tracing_subscriber::registry()` (the floor: a span with five fields);
//! - `otel_instrument`: the same span through `tracing-opentelemetry` into an
//!   `SdkTracerProvider` with the batch span processor and an exporter that
//!   does nothing (no network is measured; the processor's queue is);
//! - `audit`: `#[otel_audit::audit]` with the prompt HMAC'd, under
//!   `AuditLayer` with a queued `JsonLinesExporter` writing to
//!   `std::io::sink()` (redaction, event building and the queue handoff are
//!   measured; JSON encoding runs on the exporter's thread).
//!
//! Each sample is timed on the calling thread only; both background queues
//! are drained (`force_flush`) between samples, outside the timing, so no
//! sample runs into a full queue. Queue drops, if any, are printed at the end.
//! Read the figures as ratios to `otel_instrument` measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use otel_audit::AuditLayer;
use otel_audit::export::{AuditExporter, FullQueuePolicy, JsonLinesExporter, QueueConfig};
use tracing_subscriber::layer::SubscriberExt;

const USER: &str = "user-4711";
const MODEL: &str = "gpt-4o-mini";
const PROMPT: &str = "Summarise the attached claim and list any missing documents.";
const MAX_TOKENS: u32 = 512;
const TEMPERATURE: f64 = 0.2;

/// Room for every call of the longest sample, so no sample meets a full queue.
const QUEUE: usize = 1 << 20;

#[tracing::instrument]
fn chat_instrumented(user: &str, model: &str, prompt: &str, max_tokens: u32, temperature: f64) {
    black_box(prompt.len());
}

#[otel_audit::audit(action = "llm.chat", category = inference, redact(prompt = "hmac"))]
fn chat_audited(user: &str, model: &str, prompt: &str, max_tokens: u32, temperature: f64) {
    black_box(prompt.len());
}

/// A span exporter that does nothing, so only the SDK's own work is measured.
#[derive(Debug)]
struct NoopExporter;

impl SpanExporter for NoopExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

/// Times `iters` calls of `f`, then runs `drain` outside the timing.
fn timed(iters: u64, mut f: impl FnMut(), drain: impl FnOnce()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    drain();
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_5_fields");

    // A: bare registry.
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("registry_instrument", |b| {
            b.iter(|| chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE))
        });
    });

    // B: tracing-opentelemetry, batch span processor, no-op exporter.
    let processor = BatchSpanProcessor::builder(NoopExporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("bench");
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("otel_instrument", |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE),
                    || provider.force_flush().expect("flush"),
                )
            })
        });
    });
    provider.shutdown().expect("shutdown");

    // Ours: #[audit] + AuditLayer + queued JSON-lines exporter to a sink.
    let exporter = std::sync::Arc::new(
        JsonLinesExporter::with_queue(
            std::io::sink(),
            QueueConfig {
                capacity: QUEUE,
                full_queue_policy: FullQueuePolicy::DropNewest,
                ..QueueConfig::default()
            },
        )
        .expect("exporter"),
    );
    let layer = AuditLayer::builder()
        .service_name("bench")
        .tenant("acme")
        .hmac_key("hmac-bench", [7u8; 32])
        .shared_exporter(exporter.clone())
        .build()
        .expect("layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("audit", |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || chat_audited(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE),
                    || exporter.force_flush().expect("flush"),
                )
            })
        });
    });
    g.finish();
    exporter.shutdown().expect("shutdown");
    let stats = exporter.stats();
    eprintln!(
        "audit exporter: {} exported, {} dropped, {} failed",
        stats.exported, stats.dropped, stats.failed
    );
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
