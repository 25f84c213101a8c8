//! What an audited call costs the thread that makes it.
//!
//! `cargo bench -p otel-audit --bench span`. Four subscribers, one run, the
//! same five-argument function (user, model, prompt, max tokens,
//! temperature):
//!
//! - `registry_instrument`: `#[tracing::instrument]` under a bare
//!   `tracing_subscriber::registry()` (the floor: a span with five fields);
//! - `otel_instrument`: the same span through `tracing-opentelemetry` into an
//!   `SdkTracerProvider` with the batch span processor and an exporter that
//!   only counts (no network is measured; the processor's queue is);
//! - `audit`: `#[otel_audit::audit]` with the prompt HMAC'd, under
//!   `AuditLayer` with a `BatchExporter` whose function only counts (the
//!   counterpart of the span exporter above): redaction, capture and the
//!   queue handoff are measured; the event is assembled on the exporter's
//!   thread;
//! - `audit_json`: the same with a queued `JsonLinesExporter` writing to
//!   `std::io::sink()`, whose thread also encodes every event as JSON (it
//!   competes with the calling thread for the machine's cores).
//!
//! Each is measured twice: `wall` (elapsed time of the calling thread) and
//! `thread_cpu` (the calling thread's CPU time, `CLOCK_THREAD_CPUTIME_ID`),
//! which leaves out the time the thread waits for a core while the
//! exporter threads and anything else on the machine run. Both background
//! queues are drained (`force_flush`) every 16384 calls, outside the timing,
//! so none overflows; how many spans each exporter received is printed at
//! the end. Read the figures as ratios to `otel_instrument` measured in the
//! same run.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use otel_audit::export::{AuditExporter, BatchExporter, JsonLinesExporter, QueueConfig};
use otel_audit::{AuditEvent, AuditLayer};
use tracing_subscriber::layer::SubscriberExt;

const USER: &str = "user-4711";
const MODEL: &str = "gpt-4o-mini";
const PROMPT: &str = "Summarise the attached claim and list any missing documents.";
const MAX_TOKENS: u32 = 512;
const TEMPERATURE: f64 = 0.2;

/// Both queues hold this many spans, and are drained every `CHUNK` calls:
/// no call meets a full queue (a drop would make the call cheaper, not
/// dearer, and the two SDKs drop differently).
const QUEUE: usize = 1 << 15;
const CHUNK: u64 = 1 << 14;

#[tracing::instrument]
fn chat_instrumented(user: &str, model: &str, prompt: &str, max_tokens: u32, temperature: f64) {
    black_box(prompt.len());
}

#[otel_audit::audit(action = "llm.chat", category = inference, redact(prompt = "hmac"))]
fn chat_audited(user: &str, model: &str, prompt: &str, max_tokens: u32, temperature: f64) {
    black_box(prompt.len());
}

/// A span exporter that only counts, so only the SDK's own work is measured.
#[derive(Debug, Default)]
struct CountingExporter(Arc<AtomicU64>);

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        black_box(batch);
        Ok(())
    }
}

/// A tracer provider with the batch span processor (batches of 512, a queue
/// of QUEUE spans) and the counting exporter.
fn counting_provider(spans: &Arc<AtomicU64>) -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(CountingExporter(Arc::clone(spans)))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build()
}

/// The audit exporters' queue: batches of 512, QUEUE events, DropNewest.
fn audit_queue() -> QueueConfig {
    QueueConfig {
        capacity: QUEUE,
        ..QueueConfig::default()
    }
}

/// A queued audit exporter that only counts, as the span exporter does.
fn counting_exporter(events: &Arc<AtomicU64>) -> BatchExporter {
    let counted = Arc::clone(events);
    BatchExporter::new("count", audit_queue(), move |batch: &[AuditEvent]| {
        counted.fetch_add(batch.len() as u64, Ordering::Relaxed);
        black_box(batch);
        Ok(())
    })
    .expect("exporter")
}

/// The layer every otel-audit variant runs under.
fn audit_layer(exporter: &Arc<dyn AuditExporter>) -> AuditLayer {
    AuditLayer::builder()
        .service_name("bench")
        .tenant("acme")
        .hmac_key("hmac-bench", [7u8; 32])
        .shared_exporter(Arc::clone(exporter))
        .build()
        .expect("layer")
}

/// The calling thread's CPU time: what the call costs this thread, not
/// counting the time it waits for a core on a busy machine.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `iters` calls of `f` and returns (wall time, this thread's CPU
/// time). Every `CHUNK` calls, and at the end, `drain` runs outside the
/// timing, so a long sample (criterion's warm-up makes some) never meets a
/// full queue.
fn timed(iters: u64, f: &mut impl FnMut(), drain: &impl Fn()) -> (Duration, Duration) {
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        let cpu0 = thread_cpu();
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        wall += start.elapsed();
        cpu += thread_cpu() - cpu0;
        drain();
    }
    (wall, cpu)
}

/// Benchmarks `f` twice, by wall-clock time and by calling-thread CPU time;
/// returns how many calls were made.
fn both(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut f: impl FnMut(),
    drain: impl Fn(),
) -> u64 {
    let calls = Cell::new(0u64);
    let mut counted = || {
        calls.set(calls.get() + 1);
        f();
    };
    g.bench_function(format!("{name}/wall"), |b| {
        b.iter_custom(|iters| timed(iters, &mut counted, &drain).0)
    });
    g.bench_function(format!("{name}/thread_cpu"), |b| {
        b.iter_custom(|iters| timed(iters, &mut counted, &drain).1)
    });
    calls.get()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_5_fields");

    // A: bare registry.
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        both(
            &mut g,
            "registry_instrument",
            || chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE),
            || {},
        );
    });

    // B: tracing-opentelemetry, batch span processor (batches of 512, a
    // queue of QUEUE spans), counting no-op exporter.
    let spans = Arc::new(AtomicU64::new(0));
    let provider = counting_provider(&spans);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    let otel_calls = tracing::subscriber::with_default(subscriber, || {
        both(
            &mut g,
            "otel_instrument",
            || chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE),
            || provider.force_flush().expect("flush"),
        )
    });
    provider.shutdown().expect("shutdown");

    // Ours, twice: #[audit] + AuditLayer + a queued exporter (batches of
    // 512, a queue of QUEUE events, DropNewest) that only counts, as the
    // span exporter above; then the same with the JSON-lines exporter to a
    // sink, whose thread also encodes every event.
    let events = Arc::new(AtomicU64::new(0));
    let counting = counting_exporter(&events);
    let json = JsonLinesExporter::with_queue(std::io::sink(), audit_queue()).expect("exporter");
    let mut audit_calls = Vec::new();
    for (name, exporter) in [
        ("audit", Arc::new(counting) as Arc<dyn AuditExporter>),
        ("audit_json", Arc::new(json) as Arc<dyn AuditExporter>),
    ] {
        let subscriber = tracing_subscriber::registry().with(audit_layer(&exporter));
        let calls = tracing::subscriber::with_default(subscriber, || {
            both(
                &mut g,
                name,
                || chat_audited(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE),
                || exporter.force_flush().expect("flush"),
            )
        });
        exporter.shutdown().expect("shutdown");
        audit_calls.push((name, calls, exporter.stats()));
    }
    g.finish();
    eprintln!(
        "tracing-opentelemetry: {otel_calls} spans, {} exported ({} lost at its queue)",
        spans.load(Ordering::Relaxed),
        otel_calls.saturating_sub(spans.load(Ordering::Relaxed)),
    );
    for (name, calls, stats) in audit_calls {
        eprintln!(
            "otel-audit ({name}): {calls} spans, {} exported, {} dropped at its queue, {} failed",
            stats.exported, stats.dropped, stats.failed
        );
    }
    eprintln!(
        "otel-audit (audit): {} events counted by the exporter's function",
        events.load(Ordering::Relaxed)
    );
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}

/// `SPAN_BENCH_CALLS=N`: no criterion; makes N calls under each subscriber,
/// each in its own `calls_*` function, for an instruction count of the
/// calling thread alone that the machine's load cannot move:
///
/// ```sh
/// SPAN_BENCH_CALLS=20000 valgrind --tool=callgrind --toggle-collect='span::calls_audit' <bench binary>
/// ```
fn main() {
    match std::env::var("SPAN_BENCH_CALLS") {
        Ok(n) => counted_calls(n.parse().expect("SPAN_BENCH_CALLS is a number")),
        Err(_) => {
            group::benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}

#[inline(never)]
fn calls_registry(n: u64) {
    // Distinct bodies, so the linker does not fold the functions into one.
    black_box(1);
    for _ in 0..n {
        chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE);
    }
}

#[inline(never)]
fn calls_otel(n: u64) {
    // Distinct bodies, so the linker does not fold the functions into one.
    black_box(2);
    for _ in 0..n {
        chat_instrumented(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE);
    }
}

#[inline(never)]
fn calls_audit(n: u64) {
    // Distinct bodies, so the linker does not fold the functions into one.
    black_box(3);
    for _ in 0..n {
        chat_audited(USER, MODEL, PROMPT, MAX_TOKENS, TEMPERATURE);
    }
}

fn counted_calls(n: u64) {
    tracing::subscriber::with_default(tracing_subscriber::registry(), || calls_registry(n));
    let provider = counting_provider(&Arc::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || calls_otel(n));
    provider.shutdown().expect("shutdown");
    let exporter: Arc<dyn AuditExporter> = Arc::new(counting_exporter(&Arc::default()));
    let subscriber = tracing_subscriber::registry().with(audit_layer(&exporter));
    tracing::subscriber::with_default(subscriber, || calls_audit(n));
    exporter.shutdown().expect("shutdown");
}
