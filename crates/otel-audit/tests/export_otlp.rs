//! OTLP export against in-process receivers on real loopback sockets: a tonic
//! `LogsService` (gRPC) and a minimal HTTP/1.1 server (OTLP/HTTP protobuf).
//! Every received record is decoded and mapped back with `from_otlp`; the
//! events must equal what was exported.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use otel_audit::export::{
    AuditExporter, DROPPED_BEFORE_ATTRIBUTE, ExportError, FullQueuePolicy, OtlpExporter, Protocol,
    QueueConfig, RetryPolicy,
};
use otel_audit::{ActorType, AuditEvent, Category, Outcome, Severity};
use otel_audit_event::otlp::{OtlpLog, OtlpValue, from_otlp};
use otel_audit_event::{ContentDigest, DigestAlgorithm, Redaction, RedactionMethod, SealedContent};
use prost::Message;

/// Generous: a loaded 2-core CI machine must never hit it.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Events

fn sample_event(i: usize) -> AuditEvent {
    let category = Category::ALL[i % Category::ALL.len()];
    let mut e = AuditEvent::new("acme", "chat-api", category, format!("llm.chat.{i}"));
    e.severity = Severity::ALL[i % Severity::ALL.len()];
    e.outcome = Outcome::ALL[i % Outcome::ALL.len()];
    if i.is_multiple_of(3) {
        return e; // minimal
    }
    e.duration_ns = Some(1000 + i as i64);
    e.service.version = Some("1.2.3".into());
    e.service.environment = Some("test".into());
    e.service.host = Some("host-1".into());
    e.actor.id = Some(format!("user-{i}"));
    e.actor.kind = Some(ActorType::User);
    e.actor.role = Some("admin".into());
    e.actor.ip = Some("127.0.0.1".into());
    e.actor.session = Some("s-1".into());
    e.target.kind = Some("project".into());
    e.target.id = Some(format!("p-{i}"));
    e.error.kind = Some("Timeout".into());
    e.error.message = Some("upstream timed out — retried".into());
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.operation = Some("chat".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.response_model = Some("gpt-4o-2024".into());
    e.gen_ai.input_tokens = Some(i as i64 * 7);
    e.gen_ai.output_tokens = Some(i as i64 * 3);
    e.gen_ai.conversation_id = Some("c-1".into());
    e.gen_ai.agent_name = Some("agent".into());
    e.gen_ai.tool_name = Some("search".into());
    e.gen_ai.temperature = Some(0.25 * i as f64);
    e.safety.passed = Some(i.is_multiple_of(2));
    e.safety.detectors = vec!["email".into(), "jwt".into()];
    e.safety.block_reason = Some("pii".into());
    e.content_digests = vec![ContentDigest {
        field: "gen_ai.input.messages".into(),
        algorithm: DigestAlgorithm::HmacSha256,
        key_id: Some("k1".into()),
        digest: [i as u8; 32],
    }];
    e.sealed_content = vec![SealedContent {
        field: "gen_ai.output.messages".into(),
        algorithm: "aes-256-gcm".into(),
        key_id: "e1".into(),
        nonce: vec![3; 12],
        ciphertext: vec![i as u8, 0, 255],
    }];
    e.redactions = vec![Redaction {
        field: "prompt".into(),
        method: RedactionMethod::Hmac,
        detector: None,
        key_id: Some("k1".into()),
    }];
    e.trace.trace_id = Some(format!("{:032x}", 0xabcdef00 + i));
    e.trace.span_id = Some(format!("{:016x}", 0x1234 + i));
    e.trace.parent_span_id = Some("00000000000000ff".into());
    e.attributes = BTreeMap::from([
        ("http.route".into(), "/v1/chat".into()),
        ("i".into(), i.to_string()),
    ]);
    e
}

fn with_marker(mut e: AuditEvent, n: u64) -> AuditEvent {
    e.attributes
        .insert(DROPPED_BEFORE_ATTRIBUTE.into(), n.to_string());
    e
}

// ---------------------------------------------------------------------------
// Decoding what a receiver got

fn otlp_value(v: &AnyValue) -> OtlpValue {
    match &v.value {
        Some(Value::StringValue(s)) => OtlpValue::Str(s.clone()),
        Some(Value::BoolValue(b)) => OtlpValue::Bool(*b),
        Some(Value::IntValue(i)) => OtlpValue::Int(*i),
        Some(Value::DoubleValue(d)) => OtlpValue::Double(*d),
        Some(Value::BytesValue(b)) => OtlpValue::Bytes(b.clone()),
        Some(Value::ArrayValue(a)) => OtlpValue::Array(a.values.iter().map(otlp_value).collect()),
        Some(Value::KvlistValue(kv)) => OtlpValue::KvList(attributes(&kv.values)),
        Some(Value::StringValueStrindex(_)) | None => OtlpValue::Str(String::new()),
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, OtlpValue)> {
    kvs.iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .map_or(OtlpValue::Str(String::new()), otlp_value);
            (kv.key.clone(), value)
        })
        .collect()
}

fn otlp_log(r: &LogRecord) -> OtlpLog {
    OtlpLog {
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number: r.severity_number,
        severity_text: r.severity_text.clone(),
        event_name: r.event_name.clone(),
        trace_id: r.trace_id.as_slice().try_into().ok(),
        span_id: r.span_id.as_slice().try_into().ok(),
        attributes: attributes(&r.attributes),
    }
}

/// One received record, mapped back.
#[derive(Debug, Clone)]
struct Received {
    resource: Vec<(String, OtlpValue)>,
    event: AuditEvent,
    observed_time_unix_nano: u64,
}

#[derive(Default)]
struct Inbox {
    records: Mutex<Vec<Received>>,
    requests: Mutex<Vec<Request>>,
    changed: Condvar,
    /// The receiver answers the first `fail_first` requests with an error.
    fail_first: AtomicUsize,
    /// While closed, requests wait (after being counted) before they are processed.
    gate: Mutex<bool>,
    gate_changed: Condvar,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
}

impl Inbox {
    fn new(stalled: bool) -> Arc<Self> {
        let inbox = Inbox::default();
        *inbox.gate.lock().unwrap() = !stalled;
        Arc::new(inbox)
    }

    /// Handles one export request; `Err(reason)` when told to fail it.
    fn handle(&self, request: Request, body: ExportLogsServiceRequest) -> Result<(), String> {
        self.requests.lock().unwrap().push(request);
        self.changed.notify_all();
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.gate_changed.wait(open).unwrap();
        }
        drop(open);
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("told to fail".into());
        }
        let mut got = Vec::new();
        for rl in &body.resource_logs {
            let resource = rl
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for sl in &rl.scope_logs {
                for record in &sl.log_records {
                    let log = otlp_log(record);
                    let event = from_otlp(&resource, &log)
                        .unwrap_or_else(|e| panic!("received record does not map back: {e}"));
                    got.push(Received {
                        resource: resource.clone(),
                        event,
                        observed_time_unix_nano: log.observed_time_unix_nano,
                    });
                }
            }
        }
        self.records.lock().unwrap().extend(got);
        self.changed.notify_all();
        Ok(())
    }

    fn open_gate(&self) {
        *self.gate.lock().unwrap() = true;
        self.gate_changed.notify_all();
    }

    fn wait_records(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        let mut records = self.records.lock().unwrap();
        while records.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "receiver got {} of {n} records",
                records.len()
            );
            records = self
                .changed
                .wait_timeout(records, deadline - now)
                .unwrap()
                .0;
        }
        records.clone()
    }

    fn wait_requests(&self, n: usize) -> Vec<Request> {
        let deadline = Instant::now() + WAIT;
        let mut requests = self.requests.lock().unwrap();
        while requests.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "receiver got {} of {n} requests",
                requests.len()
            );
            requests = self
                .changed
                .wait_timeout(requests, deadline - now)
                .unwrap()
                .0;
        }
        requests.clone()
    }

    fn events(&self) -> Vec<AuditEvent> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.event.clone())
            .collect()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.open_gate();
    }
}

// ---------------------------------------------------------------------------
// gRPC receiver: tonic LogsService on its own runtime and thread.

struct GrpcService(Arc<Inbox>);

#[tonic::async_trait]
impl LogsService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let meta = Request {
            path: "grpc".into(),
            headers,
        };
        let inbox = Arc::clone(&self.0);
        let body = request.into_inner();
        // The gate blocks: keep it off the runtime's workers.
        let result = tokio::task::spawn_blocking(move || inbox.handle(meta, body))
            .await
            .unwrap();
        match result {
            Ok(()) => Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: None,
            })),
            Err(reason) => Err(tonic::Status::invalid_argument(reason)),
        }
    }
}

struct GrpcReceiver {
    inbox: Arc<Inbox>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcReceiver {
    fn start(stalled: bool) -> Self {
        let inbox = Inbox::new(stalled);
        let service = GrpcService(Arc::clone(&inbox));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let incoming =
                    tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                        .unwrap();
                addr_tx.send(incoming.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        GrpcReceiver {
            inbox,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for GrpcReceiver {
    fn drop(&mut self) {
        self.inbox.open_gate();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP receiver: hand-written HTTP/1.1 on std sockets, one thread per connection.

struct HttpReceiver {
    inbox: Arc<Inbox>,
    addr: SocketAddr,
}

impl HttpReceiver {
    fn start(stalled: bool) -> Self {
        let inbox = Inbox::new(stalled);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_inbox = Arc::clone(&inbox);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let inbox = Arc::clone(&accept_inbox);
                std::thread::spawn(move || serve_http(conn, &inbox));
            }
        });
        HttpReceiver { inbox, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve_http(conn: TcpStream, inbox: &Inbox) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return; // connection closed
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .expect("OTLP/HTTP request without content-length")
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(method, "POST");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        let request = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
        let response = match inbox.handle(Request { path, headers }, request) {
            Ok(()) => {
                let body = ExportLogsServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec();
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                out.extend_from_slice(&body);
                out
            }
            Err(_) => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec(),
        };
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn queue(capacity: usize, max_batch_size: usize, policy: FullQueuePolicy) -> QueueConfig {
    QueueConfig {
        capacity,
        max_batch_size,
        batch_delay: Duration::from_millis(20),
        full_queue_policy: policy,
        flush_timeout: WAIT,
        shutdown_timeout: WAIT,
        warn_interval: Duration::from_secs(10),
    }
}

fn grpc_exporter(receiver: &GrpcReceiver, config: QueueConfig) -> OtlpExporter {
    OtlpExporter::builder()
        .with_protocol(Protocol::Grpc)
        .with_endpoint(receiver.url())
        .with_timeout(WAIT)
        .with_service_name("chat-api")
        .with_resource_attribute("test.case", "grpc")
        .with_header("x-audit-token", "t0ken")
        .with_queue(config)
        .build()
        .unwrap()
}

fn http_exporter(receiver: &HttpReceiver, config: QueueConfig) -> OtlpExporter {
    OtlpExporter::builder()
        .with_protocol(Protocol::HttpProtobuf)
        .with_endpoint(receiver.url())
        .with_timeout(WAIT)
        .with_service_name("chat-api")
        .with_header("x-audit-token", "t0ken")
        .with_queue(config)
        .build()
        .unwrap()
}

fn resource_str<'a>(resource: &'a [(String, OtlpValue)], key: &str) -> Option<&'a str> {
    resource.iter().find_map(|(k, v)| match v {
        OtlpValue::Str(s) if k == key => Some(s.as_str()),
        _ => None,
    })
}

/// Exports `n` sample events, shuts down, and checks the receiver got exactly them.
fn round_trip(exporter: &OtlpExporter, inbox: &Inbox, n: usize) {
    let sent: Vec<AuditEvent> = (0..n).map(sample_event).collect();
    for e in &sent {
        exporter.export(e.clone());
    }
    exporter.force_flush().unwrap();
    let got = inbox.wait_records(n);
    let events: Vec<AuditEvent> = got.iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, sent);
    for r in &got {
        assert_eq!(resource_str(&r.resource, "service.name"), Some("chat-api"));
        assert_ne!(r.observed_time_unix_nano, 0);
    }
    exporter.shutdown().unwrap();
    let stats = exporter.stats();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed),
        (n as u64, 0, 0)
    );
    let requests = inbox.wait_requests(1);
    assert!(
        requests
            .iter()
            .all(|r| r.headers.get("x-audit-token").map(String::as_str) == Some("t0ken")),
        "{requests:?}"
    );
}

// ---------------------------------------------------------------------------
// Round trips, inside and outside a tokio runtime

#[test]
fn grpc_round_trip_from_a_plain_thread() {
    let receiver = GrpcReceiver::start(false);
    let exporter = grpc_exporter(&receiver, queue(1024, 16, FullQueuePolicy::DropNewest));
    assert_eq!(exporter.protocol(), Protocol::Grpc);
    round_trip(&exporter, &receiver.inbox, 40);
    let got = receiver.inbox.wait_records(40);
    assert_eq!(resource_str(&got[0].resource, "test.case"), Some("grpc"));
}

#[tokio::test(flavor = "current_thread")]
async fn grpc_round_trip_inside_a_current_thread_runtime() {
    let receiver = GrpcReceiver::start(false);
    let exporter = grpc_exporter(&receiver, queue(1024, 16, FullQueuePolicy::DropNewest));
    round_trip(&exporter, &receiver.inbox, 25);
    drop(exporter); // dropping inside the runtime must not panic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_round_trip_inside_a_multi_thread_runtime() {
    let receiver = GrpcReceiver::start(false);
    let exporter = grpc_exporter(&receiver, queue(1024, 16, FullQueuePolicy::DropNewest));
    // Export from runtime tasks too.
    let exporter = Arc::new(exporter);
    let sent: Vec<AuditEvent> = (0..10).map(sample_event).collect();
    for e in sent.clone() {
        let ex = Arc::clone(&exporter);
        tokio::spawn(async move { ex.export(e) }).await.unwrap();
    }
    exporter.shutdown().unwrap();
    assert_eq!(receiver.inbox.wait_records(10).len(), 10);
    assert_eq!(receiver.inbox.events(), sent);
}

#[test]
fn http_round_trip_from_a_plain_thread() {
    let receiver = HttpReceiver::start(false);
    let exporter = http_exporter(&receiver, queue(1024, 16, FullQueuePolicy::DropNewest));
    assert_eq!(exporter.protocol(), Protocol::HttpProtobuf);
    round_trip(&exporter, &receiver.inbox, 40);
    let requests = receiver.inbox.wait_requests(1);
    assert!(
        requests.iter().all(|r| r.path == "/v1/logs"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn http_round_trip_inside_a_tokio_runtime() {
    let receiver = HttpReceiver::start(false);
    let exporter = http_exporter(&receiver, queue(1024, 16, FullQueuePolicy::DropNewest));
    round_trip(&exporter, &receiver.inbox, 25);
    drop(exporter);
}

// ---------------------------------------------------------------------------
// Shutdown flushes everything queued

#[test]
fn grpc_shutdown_flushes_everything() {
    let receiver = GrpcReceiver::start(false);
    // A long batch delay: only shutdown makes the last partial batch go.
    let mut config = queue(4096, 128, FullQueuePolicy::DropNewest);
    config.batch_delay = Duration::from_secs(3600);
    let exporter = grpc_exporter(&receiver, config);
    let sent: Vec<AuditEvent> = (0..1000).map(sample_event).collect();
    for e in &sent {
        exporter.export(e.clone());
    }
    exporter.shutdown().unwrap();
    // Everything was delivered before shutdown returned.
    assert_eq!(receiver.inbox.events(), sent);
    let stats = exporter.stats();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed, stats.queued),
        (1000, 0, 0, 0)
    );
    // Later events are dropped and counted.
    exporter.export(sample_event(1));
    assert_eq!(exporter.stats().dropped, 1);
    exporter.shutdown().unwrap(); // again: nothing to do
}

#[test]
fn http_shutdown_flushes_everything() {
    let receiver = HttpReceiver::start(false);
    let mut config = queue(4096, 100, FullQueuePolicy::DropNewest);
    config.batch_delay = Duration::from_secs(3600);
    let exporter = http_exporter(&receiver, config);
    let sent: Vec<AuditEvent> = (0..1000).map(sample_event).collect();
    for e in &sent {
        exporter.export(e.clone());
    }
    exporter.shutdown().unwrap();
    assert_eq!(receiver.inbox.events(), sent);
    assert_eq!(exporter.stats().exported, 1000);
}

#[test]
fn dropping_the_exporter_flushes() {
    let receiver = GrpcReceiver::start(false);
    let mut config = queue(4096, 64, FullQueuePolicy::DropNewest);
    config.batch_delay = Duration::from_secs(3600);
    let exporter = grpc_exporter(&receiver, config);
    for i in 0..100 {
        exporter.export(sample_event(i));
    }
    drop(exporter);
    assert_eq!(receiver.inbox.events().len(), 100);
}

// ---------------------------------------------------------------------------
// Full queue

#[test]
fn drop_newest_counts_drops_and_marks_the_next_event() {
    let receiver = GrpcReceiver::start(true);
    let exporter = grpc_exporter(&receiver, queue(2, 1, FullQueuePolicy::DropNewest));
    let sent: Vec<AuditEvent> = (0..12).map(sample_event).collect();

    // e0 goes out and the receiver holds the request: the export thread is stuck.
    exporter.export(sent[0].clone());
    receiver.inbox.wait_requests(1);
    // e1, e2 fill the queue (capacity 2); e3..e9 are dropped.
    for e in &sent[1..10] {
        exporter.export(e.clone());
    }
    let stats = exporter.stats();
    assert_eq!((stats.dropped, stats.queued, stats.exported), (7, 2, 0));

    receiver.inbox.open_gate();
    exporter.force_flush().unwrap();
    // The next event that is queued carries the gap; the one after does not.
    exporter.export(sent[10].clone());
    exporter.export(sent[11].clone());
    exporter.shutdown().unwrap();

    let want = vec![
        sent[0].clone(),
        sent[1].clone(),
        sent[2].clone(),
        with_marker(sent[10].clone(), 7),
        sent[11].clone(),
    ];
    assert_eq!(receiver.inbox.events(), want);
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (5, 7, 0));
}

#[test]
fn block_policy_waits_then_drops() {
    let receiver = GrpcReceiver::start(true);
    let wait = Duration::from_millis(300);
    let exporter = grpc_exporter(
        &receiver,
        queue(1, 1, FullQueuePolicy::Block { timeout: wait }),
    );
    let sent: Vec<AuditEvent> = (0..4).map(sample_event).collect();
    exporter.export(sent[0].clone()); // in flight, held by the receiver
    receiver.inbox.wait_requests(1);
    exporter.export(sent[1].clone()); // fills the queue

    let started = Instant::now();
    exporter.export(sent[2].clone()); // waits for room, then gives up
    assert!(started.elapsed() >= wait, "returned before its timeout");
    let stats = exporter.stats();
    assert_eq!((stats.dropped, stats.queued), (1, 1));

    receiver.inbox.open_gate();
    exporter.force_flush().unwrap();
    exporter.export(sent[3].clone());
    exporter.shutdown().unwrap();
    assert_eq!(
        receiver.inbox.events(),
        vec![
            sent[0].clone(),
            sent[1].clone(),
            with_marker(sent[3].clone(), 1)
        ]
    );
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped), (3, 1));
}

#[test]
fn block_policy_gets_room_when_the_receiver_lets_go() {
    let receiver = GrpcReceiver::start(true);
    let exporter = Arc::new(grpc_exporter(
        &receiver,
        queue(1, 1, FullQueuePolicy::Block { timeout: WAIT }),
    ));
    let sent: Vec<AuditEvent> = (0..3).map(sample_event).collect();
    exporter.export(sent[0].clone());
    receiver.inbox.wait_requests(1);
    exporter.export(sent[1].clone()); // queue full now
    let ex = Arc::clone(&exporter);
    let e2 = sent[2].clone();
    let blocked = std::thread::spawn(move || ex.export(e2));
    std::thread::sleep(Duration::from_millis(50));
    receiver.inbox.open_gate();
    blocked.join().unwrap();
    exporter.shutdown().unwrap();
    assert_eq!(receiver.inbox.events(), sent);
    assert_eq!(exporter.stats().dropped, 0);
}

// ---------------------------------------------------------------------------
// Failed delivery

#[test]
fn failed_delivery_is_reported_and_marked() {
    let receiver = GrpcReceiver::start(false);
    receiver.inbox.fail_first.store(1, Ordering::SeqCst);
    let exporter = OtlpExporter::builder()
        .with_protocol(Protocol::Grpc)
        .with_endpoint(receiver.url())
        .with_retry_policy(RetryPolicy::disabled())
        .with_queue(QueueConfig {
            // Only force_flush sends: e0 and e1 go in one request.
            batch_delay: Duration::from_secs(3600),
            ..queue(64, 8, FullQueuePolicy::DropNewest)
        })
        .build()
        .unwrap();
    let sent: Vec<AuditEvent> = (0..3).map(sample_event).collect();
    exporter.export(sent[0].clone());
    exporter.export(sent[1].clone());
    let err = exporter.force_flush().unwrap_err();
    match &err {
        ExportError::Delivery { count, source, .. } => {
            assert_eq!(*count, 2);
            assert!(
                matches!(**source, ExportError::Otlp { count: 2, .. }),
                "{source:?}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(exporter.stats().failed, 2);
    // The failure was reported once.
    exporter.force_flush().unwrap();
    exporter.export(sent[2].clone());
    exporter.shutdown().unwrap();
    assert_eq!(
        receiver.inbox.events(),
        vec![with_marker(sent[2].clone(), 2)]
    );
}

#[test]
fn unreachable_receiver_fails_without_blocking_the_caller() {
    // A port with nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exporter = OtlpExporter::builder()
        .with_protocol(Protocol::HttpProtobuf)
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/logs"))
        .with_retry_policy(RetryPolicy::disabled())
        .with_timeout(Duration::from_secs(5))
        .with_queue(queue(16, 4, FullQueuePolicy::DropNewest))
        .build()
        .unwrap();
    for i in 0..3 {
        exporter.export(sample_event(i));
    }
    let err = exporter.shutdown().unwrap_err();
    assert!(
        matches!(err, ExportError::Delivery { count: 3, .. }),
        "{err:?}"
    );
    assert_eq!(exporter.stats().failed, 3);
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn invalid_settings_are_errors() {
    let err = OtlpExporter::builder()
        .with_protocol(Protocol::Grpc)
        .with_endpoint("not a url")
        .build()
        .unwrap_err();
    assert!(matches!(err, ExportError::Build { .. }), "{err:?}");
    let err = OtlpExporter::builder()
        .with_protocol(Protocol::Grpc)
        .with_header("bad header", "x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("with_header"), "{err}");
    let err = OtlpExporter::builder()
        .with_protocol(Protocol::Grpc)
        .with_queue(QueueConfig {
            capacity: 0,
            ..QueueConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("queue capacity"), "{err}");
}

/// Runs this test binary again with `filter` and the given environment (and
/// no other `OTEL_*` variables); the child test does the exporting.
fn run_child(filter: &str, env: &[(&str, String)]) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        filter,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("OTEL_AUDIT_TEST_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child test did not run:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "run in a child process by the env_* tests"]
fn child_exports_with_environment_configuration() {
    if std::env::var_os("OTEL_AUDIT_TEST_CHILD").is_none() {
        return;
    }
    let expected = match std::env::var("EXPECT_PROTOCOL").unwrap().as_str() {
        "grpc" => Protocol::Grpc,
        _ => Protocol::HttpProtobuf,
    };
    let exporter = OtlpExporter::builder().build().unwrap();
    assert_eq!(exporter.protocol(), expected);
    for i in 0..3 {
        exporter.export(sample_event(i));
    }
    exporter.shutdown().unwrap();
    assert_eq!(exporter.stats().exported, 3);
}

#[test]
fn env_configures_http_endpoint_protocol_headers_and_resource() {
    let receiver = HttpReceiver::start(false);
    run_child(
        "child_exports_with_environment_configuration",
        &[
            ("EXPECT_PROTOCOL", "http".into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            // The generic endpoint is a base URL: /v1/logs is appended.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-audit-token=from-env".into(),
            ),
            ("OTEL_SERVICE_NAME", "env-service".into()),
        ],
    );
    let got = receiver.inbox.wait_records(3);
    let events: Vec<_> = got.iter().map(|r| r.event.clone()).collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].action, sample_event(1).action);
    assert_eq!(
        resource_str(&got[0].resource, "service.name"),
        Some("env-service")
    );
    let requests = receiver.inbox.wait_requests(1);
    assert_eq!(requests[0].path, "/v1/logs");
    assert_eq!(
        requests[0].headers.get("x-audit-token").map(String::as_str),
        Some("from-env")
    );
}

#[test]
fn env_configures_grpc_endpoint_and_headers() {
    let receiver = GrpcReceiver::start(false);
    run_child(
        "child_exports_with_environment_configuration",
        &[
            ("EXPECT_PROTOCOL", "grpc".into()),
            // No protocol variable: gRPC is the default.
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.url()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-audit-token=grpc-env".into(),
            ),
        ],
    );
    assert_eq!(receiver.inbox.wait_records(3).len(), 3);
    let requests = receiver.inbox.wait_requests(1);
    assert_eq!(
        requests[0].headers.get("x-audit-token").map(String::as_str),
        Some("grpc-env")
    );
}

#[test]
fn env_protocol_must_be_supported() {
    // Checked in a child so this process's environment stays untouched.
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_rejects_unsupported_protocol",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ]);
    cmd.env("OTEL_AUDIT_TEST_CHILD", "1");
    cmd.env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

#[test]
#[ignore = "run in a child process by env_protocol_must_be_supported"]
fn child_rejects_unsupported_protocol() {
    if std::env::var_os("OTEL_AUDIT_TEST_CHILD").is_none() {
        return;
    }
    let err = OtlpExporter::builder().build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid exporter setting OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: \"http/json\" is not supported; use \"grpc\" or \"http/protobuf\""
    );
}
