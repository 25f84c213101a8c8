//! The export threads never emit `tracing` events, so an exporter can never
//! feed the subscriber (and audit layer) it serves. One test per binary: it
//! installs a global subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use otel_audit::export::{
    AuditExporter, FullQueuePolicy, JsonLinesExporter, OtlpExporter, Protocol, QueueConfig,
    RetryPolicy,
};
use otel_audit::{AuditEvent, Category};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, registry};

/// Records the thread name of every event and span, at every level.
#[derive(Clone, Default)]
struct ThreadRecorder(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for ThreadRecorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .lock()
            .unwrap()
            .push((thread, event.metadata().target().to_owned()));
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .lock()
            .unwrap()
            .push((thread, attrs.metadata().target().to_owned()));
    }
}

#[test]
fn export_threads_emit_no_tracing_events() {
    let recorder = ThreadRecorder::default();
    tracing::subscriber::set_global_default(registry().with(recorder.clone())).unwrap();
    // Prove the recorder sees events from other threads at all.
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(|| tracing::trace!(target: "probe", "hello"))
        .unwrap()
        .join()
        .unwrap();

    let config = QueueConfig {
        batch_delay: Duration::from_millis(10),
        flush_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(60),
        full_queue_policy: FullQueuePolicy::DropNewest,
        ..QueueConfig::default()
    };
    // Nobody listens on this port: connection attempts and failures are the
    // noisiest path through tonic, hyper and the OTLP exporter.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let exporter = OtlpExporter::builder()
            .with_protocol(protocol)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_retry_policy(RetryPolicy::disabled())
            .with_timeout(Duration::from_secs(5))
            .with_queue(config.clone())
            .build()
            .unwrap();
        exporter.export(AuditEvent::new("t", "s", Category::System, "x"));
        assert!(exporter.force_flush().is_err());
        let _ = exporter.shutdown();
    }
    let json = JsonLinesExporter::with_queue(std::io::sink(), config).unwrap();
    json.export(AuditEvent::new("t", "s", Category::System, "x"));
    json.shutdown().unwrap();

    let seen = recorder.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(thread, _)| thread == "probe"),
        "the recorder does not work: {seen:?}"
    );
    // Everything but the probe: the exporters' threads, any thread a
    // dependency starts for them, and this test's thread.
    let others: Vec<_> = seen
        .iter()
        .filter(|(thread, _)| thread != "probe")
        .collect();
    assert!(others.is_empty(), "the export path emitted: {others:?}");
}
