//! JSON-lines and in-memory exporters, and the queue's behaviour with a
//! failing writer.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otel_audit::export::{
    AuditExporter, BatchExporter, DROPPED_BEFORE_ATTRIBUTE, ExportError, FullQueuePolicy,
    InMemoryExporter, JsonLinesExporter, QueueConfig,
};
use otel_audit::{ActorType, AuditEvent, Category, Outcome};

fn sample_event(i: usize) -> AuditEvent {
    let mut e = AuditEvent::new(
        "acme",
        "svc",
        Category::ALL[i % Category::ALL.len()],
        format!("user.update.{i}"),
    );
    e.outcome = Outcome::ALL[i % Outcome::ALL.len()];
    if i % 2 == 1 {
        e.actor.id = Some(format!("user-{i}"));
        e.actor.kind = Some(ActorType::Service);
        e.gen_ai.temperature = Some(0.1 * i as f64);
        e.gen_ai.input_tokens = Some(i as i64);
        e.safety.detectors = vec!["email".into()];
        e.trace.trace_id = Some(format!("{:032x}", i + 1));
        e.attributes = BTreeMap::from([("line".into(), "a\nb \"c\" ü".into())]);
    }
    e
}

fn config() -> QueueConfig {
    QueueConfig {
        capacity: 1024,
        max_batch_size: 16,
        batch_delay: Duration::from_millis(20),
        full_queue_policy: FullQueuePolicy::DropNewest,
        flush_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(60),
        warn_interval: Duration::from_secs(10),
    }
}

/// A queue whose batches go out only on `force_flush` or `shutdown`.
fn flush_only_config() -> QueueConfig {
    QueueConfig {
        batch_delay: Duration::from_secs(3600),
        ..config()
    }
}

/// Exports the first two of `sent`, whose batch must fail on `force_flush`;
/// returns what the exporter reported as the cause.
fn first_batch_fails(exporter: &dyn AuditExporter, sent: &[AuditEvent]) -> Arc<ExportError> {
    exporter.export(sent[0].clone());
    exporter.export(sent[1].clone());
    let err = exporter.force_flush().unwrap_err();
    assert!(err.to_string().contains("2 audit events"), "{err}");
    match err {
        ExportError::Delivery {
            count: 2, source, ..
        } => source,
        other => panic!("unexpected {other:?}"),
    }
}

/// `e` as delivered after `dropped` events were lost before it.
fn marked(e: &AuditEvent, dropped: u64) -> AuditEvent {
    let mut e = e.clone();
    e.attributes
        .insert(DROPPED_BEFORE_ATTRIBUTE.into(), dropped.to_string());
    e
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn events(&self) -> Vec<AuditEvent> {
        let bytes = self.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "partial line: {text:?}"
        );
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

#[test]
fn json_lines_round_trip() {
    let buffer = SharedBuffer::default();
    let exporter = JsonLinesExporter::with_queue(buffer.clone(), config()).unwrap();
    let sent: Vec<AuditEvent> = (0..100).map(sample_event).collect();
    for e in &sent {
        exporter.export(e.clone());
    }
    exporter.force_flush().unwrap();
    // One object per line, and every line reads back to the same event.
    // (Reading floats back exactly needs serde_json's `float_roundtrip`.)
    let got = buffer.events();
    assert_eq!(got.len(), sent.len());
    for (got, sent) in got.iter().zip(&sent) {
        assert_eq!(got, sent);
    }
    exporter.shutdown().unwrap();
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (100, 0, 0));
}

#[test]
fn json_lines_to_a_file_append() {
    let path = std::env::temp_dir().join(format!(
        "otel-audit-export-{}-{:?}.jsonl",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let sent = vec![sample_event(0), sample_event(1)];
    for e in &sent {
        // A new exporter each time: the file is appended to, not truncated.
        let exporter = JsonLinesExporter::file(&path).unwrap();
        exporter.export(e.clone());
        exporter.shutdown().unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events, sent);

    let err = JsonLinesExporter::file("/nonexistent-dir/x.jsonl").unwrap_err();
    assert!(matches!(err, ExportError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent-dir/x.jsonl"),
        "{err}"
    );
}

#[test]
fn json_lines_to_stdout() {
    let exporter = JsonLinesExporter::stdout().unwrap();
    exporter.export(sample_event(0));
    exporter.shutdown().unwrap();
    assert_eq!(exporter.stats().exported, 1);
}

#[test]
fn events_after_shutdown_are_dropped() {
    let buffer = SharedBuffer::default();
    let exporter = JsonLinesExporter::with_queue(buffer.clone(), config()).unwrap();
    exporter.export(sample_event(0));
    exporter.shutdown().unwrap();
    exporter.export(sample_event(1));
    exporter.export(sample_event(2));
    assert_eq!(buffer.events().len(), 1);
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped), (1, 2));
    exporter.shutdown().unwrap();
    exporter.force_flush().unwrap();
}

/// Fails the first `fail` batches (each batch ends with one flush).
struct FlakyWriter {
    fail: Arc<AtomicUsize>,
    out: SharedBuffer,
    pending: Vec<u8>,
}

impl Write for FlakyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("disk on fire"));
        }
        self.out.write_all(&pending)
    }
}

#[test]
fn failed_writes_are_counted_reported_and_marked() {
    let out = SharedBuffer::default();
    let fail = Arc::new(AtomicUsize::new(1));
    let writer = FlakyWriter {
        fail: Arc::clone(&fail),
        out: out.clone(),
        pending: Vec::new(),
    };
    let exporter = JsonLinesExporter::with_queue(writer, flush_only_config()).unwrap();
    let sent: Vec<AuditEvent> = (0..4).map(sample_event).collect();
    let source = first_batch_fails(&exporter, &sent);
    assert!(
        matches!(*source, ExportError::Write { count: 2, .. }),
        "{source:?}"
    );
    assert_eq!(exporter.stats().failed, 2);
    exporter.force_flush().unwrap(); // reported once
    exporter.export(sent[2].clone());
    exporter.export(sent[3].clone());
    exporter.shutdown().unwrap();
    assert_eq!(out.events(), vec![marked(&sent[2], 2), sent[3].clone()]);
}

/// Holds every write until released, so the queue fills deterministically.
struct GatedWriter {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    entered: Arc<AtomicUsize>,
    out: SharedBuffer,
}

impl Write for GatedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let (lock, cond) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cond.wait(open).unwrap();
        }
        Ok(())
    }
}

#[test]
fn drops_accumulate_into_one_marker_and_counts_add_up() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let entered = Arc::new(AtomicUsize::new(0));
    let out = SharedBuffer::default();
    let writer = GatedWriter {
        gate: Arc::clone(&gate),
        entered: Arc::clone(&entered),
        out: out.clone(),
    };
    let mut cfg = config();
    cfg.capacity = 3;
    cfg.max_batch_size = 1;
    let exporter = Arc::new(JsonLinesExporter::with_queue(writer, cfg).unwrap());
    exporter.export(sample_event(0));
    while entered.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The writer holds event 0; 3 fit in the queue; the rest, from many threads, are dropped.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ex = Arc::clone(&exporter);
            std::thread::spawn(move || {
                for i in 0..25 {
                    ex.export(sample_event(1 + t * 25 + i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = exporter.stats();
    assert_eq!((stats.queued, stats.dropped), (3, 97));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    exporter.force_flush().unwrap();
    exporter.export(sample_event(200));
    exporter.shutdown().unwrap();
    let events = out.events();
    assert_eq!(events.len(), 5);
    let markers: Vec<Option<&String>> = events
        .iter()
        .map(|e| e.attributes.get(DROPPED_BEFORE_ATTRIBUTE))
        .collect();
    assert_eq!(
        markers,
        vec![None, None, None, None, Some(&"97".to_string())]
    );
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (5, 97, 0));
}

#[test]
fn invalid_queue_settings_are_errors() {
    let mut cfg = config();
    cfg.max_batch_size = 0;
    let err = JsonLinesExporter::with_queue(io::sink(), cfg).unwrap_err();
    assert!(matches!(err, ExportError::Config { .. }), "{err:?}");
}

#[test]
fn in_memory_exporter_shares_events_between_clones() {
    let exporter = InMemoryExporter::new();
    let handle = exporter.clone();
    let shared: Arc<dyn AuditExporter> = Arc::new(exporter);
    for i in 0..3 {
        shared.export(sample_event(i));
    }
    shared.force_flush().unwrap();
    assert_eq!(handle.len(), 3);
    assert_eq!(handle.events()[2].action, "user.update.2");
    assert_eq!(handle.take().len(), 3);
    assert!(handle.is_empty());
    shared.export(sample_event(3));
    handle.clear();
    shared.shutdown().unwrap();
    shared.export(sample_event(4));
    assert!(handle.is_empty());
    let stats = shared.stats();
    assert_eq!((stats.exported, stats.dropped), (4, 1));
}

#[test]
fn batch_exporter_delivers_in_order_and_reports_a_failed_batch() {
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&delivered);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let exporter = BatchExporter::new("bus", flush_only_config(), move |batch: &[AuditEvent]| {
        // The first batch fails, as a broker that is down would.
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("broker unavailable".into());
        }
        seen.lock().unwrap().extend_from_slice(batch);
        Ok(())
    })
    .unwrap();
    let sent: Vec<AuditEvent> = (0..5).map(sample_event).collect();
    let source = first_batch_fails(&exporter, &sent);
    assert!(
        matches!(
            *source,
            ExportError::Deliver {
                exporter: "bus",
                count: 2,
                ..
            }
        ),
        "{source:?}"
    );
    let cause = std::error::Error::source(&*source).unwrap().to_string();
    assert_eq!(cause, "broker unavailable");
    for e in &sent[2..] {
        exporter.export(e.clone());
    }
    exporter.shutdown().unwrap();
    assert_eq!(
        *delivered.lock().unwrap(),
        vec![marked(&sent[2], 2), sent[3].clone(), sent[4].clone()]
    );
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.failed, stats.dropped), (3, 2, 0));
}

#[test]
fn audited_calls_are_assembled_on_the_exporter_thread_as_in_memory() {
    use tracing_subscriber::layer::SubscriberExt;

    #[otel_audit::audit(action = "llm.chat", category = inference, actor = user, redact(prompt = "hmac"))]
    fn chat(user: &str, prompt: &str, max_tokens: u32) -> Result<(), std::io::Error> {
        otel_audit::current().input_tokens(7).response_model("m-2");
        if max_tokens == 0 {
            return Err(std::io::Error::other("no budget for jane@example.com"));
        }
        Ok(())
    }

    // The same calls through an exporter that assembles on its own thread
    // and through one that assembles on the calling thread.
    let queued = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&queued);
    let batch = Arc::new(
        BatchExporter::new("assemble", config(), move |b: &[AuditEvent]| {
            seen.lock().unwrap().extend_from_slice(b);
            Ok(())
        })
        .unwrap(),
    );
    let memory = InMemoryExporter::default();
    for exporter in [
        Arc::clone(&batch) as Arc<dyn AuditExporter>,
        Arc::new(memory.clone()) as Arc<dyn AuditExporter>,
    ] {
        let layer = otel_audit::AuditLayer::builder()
            .service_name("svc")
            .tenant("acme")
            .hmac_key("k1", [5u8; 32])
            .shared_exporter(exporter)
            .build()
            .unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            chat("user-1", "my card is 4111 1111 1111 1111", 16).unwrap();
            chat("user-2", "hello", 0).unwrap_err();
        });
    }
    batch.shutdown().unwrap();
    let normalise = |mut events: Vec<AuditEvent>| {
        for e in &mut events {
            e.event_id = uuid::Uuid::nil();
            e.time = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
            e.duration_ns = None;
            e.trace = Default::default();
        }
        events
    };
    let queued = queued.lock().unwrap().clone();
    for e in &queued {
        e.validate().unwrap();
        assert_eq!(e.trace.trace_id.as_deref().map(str::len), Some(32));
    }
    let queued = normalise(queued);
    let direct = normalise(memory.events());
    assert_eq!(queued.len(), 2);
    assert_eq!(queued, direct);
    let ok = &queued[0];
    assert_eq!(ok.actor.id.as_deref(), Some("user-1"));
    assert_eq!(ok.gen_ai.input_tokens, Some(7));
    assert_eq!(ok.gen_ai.response_model.as_deref(), Some("m-2"));
    assert_eq!(ok.content_digests[0].field, "prompt");
    assert_eq!(ok.attributes["max_tokens"], "16");
    let failed = &queued[1];
    assert_eq!(failed.outcome, Outcome::Failure);
    let message = failed.error.message.as_deref().unwrap();
    assert!(!message.contains("jane@example.com"), "{message}");
}
