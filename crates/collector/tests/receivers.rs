//! The OTLP receivers over real sockets on 127.0.0.1: authentication,
//! status codes, size limits, content types, compression, malformed input,
//! TLS and mutual TLS, graceful shutdown, and valid OTLP requests (logs from
//! the otel-audit layer, GenAI spans as OTLP/JSON) delivered to a recording
//! `Ingest`.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_audit_collector::auth::Authenticator;
use otel_audit_collector::config::{AuthSection, Endpoint, TlsSection, TokenEntry, Unmapped};
use otel_audit_collector::convert::ConvertOptions;
use otel_audit_collector::ingest::{Ingest, IngestAck, IngestError, Principal, Rejection};
use otel_audit_collector::metrics::Metrics;
use otel_audit_collector::receiver::{ReceiveError, ReceiverContext, serve_grpc, serve_http};
use otel_audit_event::otlp::{OtlpValue, to_otlp};
use otel_audit_event::{AuditEvent, Category};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

const TOKEN: &str = "acme-token-0123456789";
const TENANT: &str = "acme";

// ---------------------------------------------------------------------------
// A recording Ingest
// ---------------------------------------------------------------------------

/// What the ingest answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    Backpressure,
    Unavailable,
    Internal,
}

/// One `ingest` call.
#[derive(Debug, Clone)]
struct Call {
    principal: Principal,
    events: Vec<(usize, AuditEvent)>,
    rejected: Vec<Rejection>,
}

struct TestIngest {
    mode: Mutex<Mode>,
    /// How long `ingest` takes (to have requests in flight).
    delay: Mutex<Duration>,
    calls: Mutex<Vec<Call>>,
}

impl TestIngest {
    fn new() -> Self {
        TestIngest {
            mode: Mutex::new(Mode::Accept),
            delay: Mutex::new(Duration::ZERO),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Ingest for TestIngest {
    fn ingest(
        &self,
        principal: &Principal,
        events: Vec<(usize, AuditEvent)>,
        rejected_before: Vec<Rejection>,
    ) -> impl Future<Output = Result<IngestAck, IngestError>> + Send {
        let mode = *self.mode.lock().unwrap();
        let delay = *self.delay.lock().unwrap();
        let result = match mode {
            Mode::Accept => {
                let ack = IngestAck {
                    accepted: events.len(),
                    rejected: rejected_before.clone(),
                };
                self.calls.lock().unwrap().push(Call {
                    principal: principal.clone(),
                    events,
                    rejected: rejected_before,
                });
                Ok(ack)
            }
            Mode::Backpressure => Err(IngestError::Backpressure {
                reason: "wal_full".into(),
                retry_after: Duration::from_millis(1500),
            }),
            Mode::Unavailable => Err(IngestError::Unavailable {
                reason: "shutting down".into(),
                retry_after: Duration::from_secs(5),
            }),
            Mode::Internal => Err(IngestError::Internal {
                reason: "fsync failed".into(),
            }),
        };
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            result
        }
    }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    Http,
}

struct Options {
    auth: bool,
    max_message_bytes: u64,
    tls: Option<TlsSection>,
    unmapped: Unmapped,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: false,
            max_message_bytes: 64 * 1024,
            tls: None,
            unmapped: Unmapped::Drop,
        }
    }
}

struct Server {
    addr: SocketAddr,
    ingest: Arc<TestIngest>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ReceiveError>>,
}

impl Server {
    /// Resolves the shutdown future and waits for the server to return.
    async fn stop(mut self) -> Result<(), ReceiveError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within 10 s")
            .expect("the server task does not panic")
    }

    fn requests(&self, transport: &str, signal: &str, status: &str) -> u64 {
        self.metrics.requests.get(&[
            ("transport", transport),
            ("signal", signal),
            ("status", status),
        ])
    }
}

fn authenticator(on: bool) -> Authenticator {
    if !on {
        return Authenticator::default();
    }
    Authenticator::from_config(&AuthSection {
        tokens: vec![TokenEntry {
            name: "acme-app".into(),
            tenant: TENANT.into(),
            token: Some(TOKEN.into()),
            token_file: None,
            token_env: None,
        }],
    })
    .unwrap()
}

fn context(options: &Options) -> (Arc<ReceiverContext<TestIngest>>, Arc<TestIngest>) {
    let ingest = Arc::new(TestIngest::new());
    let ctx = Arc::new(ReceiverContext {
        ingest: ingest.clone(),
        auth: authenticator(options.auth),
        metrics: Arc::new(Metrics::default()),
        convert: ConvertOptions {
            default_tenant: "default".into(),
            unmapped: options.unmapped,
        },
    });
    (ctx, ingest)
}

async fn start(transport: Transport, options: Options) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoint = Endpoint {
        enabled: true,
        endpoint: addr.to_string(),
        max_message_bytes: options.max_message_bytes,
        tls: options.tls.clone(),
    };
    let (ctx, ingest) = context(&options);
    let metrics = ctx.metrics.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(async move {
        match transport {
            Transport::Grpc => serve_grpc(listener, &endpoint, ctx, shutdown).await,
            Transport::Http => serve_http(listener, &endpoint, ctx, shutdown).await,
        }
    });
    Server {
        addr,
        ingest,
        metrics,
        stop: Some(stop),
        task,
    }
}

// ---------------------------------------------------------------------------
// OTLP payloads
// ---------------------------------------------------------------------------

fn any(value: &OtlpValue) -> AnyValue {
    use any_value::Value;
    let value = match value {
        OtlpValue::Str(s) => Value::StringValue(s.clone()),
        OtlpValue::Int(i) => Value::IntValue(*i),
        OtlpValue::Double(d) => Value::DoubleValue(*d),
        OtlpValue::Bool(b) => Value::BoolValue(*b),
        OtlpValue::Bytes(b) => Value::BytesValue(b.clone()),
        OtlpValue::Array(a) => Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        }),
        OtlpValue::KvList(kv) => Value::KvlistValue(KeyValueList {
            values: kv.iter().map(|(k, v)| key_value(k, any(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    key_value(
        key,
        AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        },
    )
}

/// An audit event of tenant `acme`, as the otel-audit layer exports it.
fn audit_event() -> AuditEvent {
    let mut event = AuditEvent::new(TENANT, "chat-api", Category::Inference, "llm.chat");
    event.gen_ai.request_model = Some("gpt-4o".into());
    event
}

fn log_record(event: &AuditEvent) -> LogRecord {
    let log = to_otlp(event);
    LogRecord {
        time_unix_nano: log.time_unix_nano,
        observed_time_unix_nano: log.time_unix_nano,
        severity_number: log.severity_number,
        severity_text: log.severity_text,
        event_name: log.event_name,
        trace_id: log.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: log.span_id.map(|s| s.to_vec()).unwrap_or_default(),
        attributes: log
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, any(v)))
            .collect(),
        ..Default::default()
    }
}

fn logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string("service.name", "chat-api")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A request with a resource but no record: valid OTLP that reaches neither
/// the conversion nor the ingest, so it tests the transport alone.
fn no_records_request() -> ExportLogsServiceRequest {
    logs_request(Vec::new())
}

/// A request of about `bytes` bytes (one record with a large body).
fn large_request(bytes: usize) -> ExportLogsServiceRequest {
    logs_request(vec![LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("a".repeat(bytes))),
        }),
        ..Default::default()
    }])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The OTLP/JSON trace example of the OTLP specification (hex ids, enums as
/// integers, 64-bit integers as strings), with GenAI attributes so that it
/// maps to an audit event.
const SPEC_TRACE_JSON: &str = r#"{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          { "key": "service.name", "value": { "stringValue": "my.service" } }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              { "key": "my.scope.attribute", "value": { "stringValue": "some scope attribute" } }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "chat gpt-4o",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712661000000000",
              "kind": 3,
              "attributes": [
                { "key": "gen_ai.operation.name", "value": { "stringValue": "chat" } },
                { "key": "gen_ai.provider.name", "value": { "stringValue": "openai" } },
                { "key": "gen_ai.request.model", "value": { "stringValue": "gpt-4o" } },
                { "key": "gen_ai.usage.input_tokens", "value": { "intValue": "12" } },
                { "key": "my.span.attr", "value": { "stringValue": "some value" } }
              ],
              "status": { "code": 1 }
            }
          ]
        }
      ]
    }
  ]
}"#;

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

async fn grpc_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

type Body = BoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A body sent with chunked transfer encoding (no `Content-Length`).
fn chunked(chunks: Vec<Vec<u8>>) -> Body {
    let frames = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c)))),
    );
    StreamBody::new(frames).boxed()
}

struct HttpResponse {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl HttpResponse {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The `google.rpc.Status` of an error answer, in its content type.
    fn rpc_status(&self) -> (i32, String) {
        match self.header("content-type") {
            "application/x-protobuf" => {
                let s = tonic_types::pb::Status::decode(self.body.clone()).unwrap();
                (s.code, s.message)
            }
            "application/json" => {
                let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
                (
                    v["code"].as_i64().unwrap() as i32,
                    v["message"].as_str().unwrap().to_owned(),
                )
            }
            other => panic!("unexpected content type {other:?}"),
        }
    }
}

struct HttpRequest<'a> {
    method: Method,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: Body,
}

impl<'a> HttpRequest<'a> {
    fn post(path: &'a str, content_type: &str, body: impl Into<Bytes>) -> Self {
        HttpRequest {
            method: Method::POST,
            path,
            headers: vec![("content-type", content_type.into())],
            body: full(body),
        }
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

async fn http_on<T>(io: T, request: HttpRequest<'_>) -> HttpResponse
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(request.method)
        .uri(request.path)
        .header("host", "localhost");
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let response = sender
        .send_request(builder.body(request.body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn http(addr: SocketAddr, request: HttpRequest<'_>) -> HttpResponse {
    http_on(TcpStream::connect(addr).await.unwrap(), request).await
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

struct Pki {
    dir: tempfile::TempDir,
    ca: rustls::pki_types::CertificateDer<'static>,
    client_cert: rustls::pki_types::CertificateDer<'static>,
    client_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and a client certificate,
    /// all signed by the CA; PEM files in a temporary directory.
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "otel-audit test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca: ca.der().clone(),
            client_cert: client_cert.der().clone(),
            client_key: rustls::pki_types::PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, mutual: bool) -> TlsSection {
        TlsSection {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: mutual.then(|| self.path("ca.pem")),
        }
    }

    /// A client that trusts the CA, presenting the client certificate when
    /// `with_cert`.
    fn connector(&self, with_cert: bool, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = if with_cert {
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], self.client_key.clone_key())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

async fn grpc_tls_channel(
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tls = tls_connect(addr, &connector).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

// ---------------------------------------------------------------------------
// gRPC: transport
// ---------------------------------------------------------------------------

#[tokio::test]
async fn grpc_export_without_records_is_ok_and_skips_the_ingest() {
    let server = start(
        Transport::Grpc,
        Options {
            auth: true,
            ..Options::default()
        },
    )
    .await;
    let channel = grpc_channel(server.addr).await;
    let response = LogsServiceClient::new(channel.clone())
        .export(with_token(no_records_request(), Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);
    let response = TraceServiceClient::new(channel)
        .export(with_token(
            ExportTraceServiceRequest::default(),
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);
    assert!(server.ingest.calls().is_empty());
    assert_eq!(server.requests("grpc", "logs", "ok"), 1);
    assert_eq!(server.requests("grpc", "traces", "ok"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_requires_a_valid_bearer_token() {
    let server = start(
        Transport::Grpc,
        Options {
            auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut client = LogsServiceClient::new(grpc_channel(server.addr).await);
    let e = client
        .export(with_token(no_records_request(), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing authorization"), "{e:?}");
    let e = client
        .export(with_token(
            no_records_request(),
            Some("not-the-token-at-all"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "unknown bearer token");
    let mut request = tonic::Request::new(no_records_request());
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {TOKEN}").parse().unwrap());
    let e = client.export(request).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("malformed"), "{e:?}");
    assert_eq!(server.requests("grpc", "logs", "unauthenticated"), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_oversized_message_is_resource_exhausted() {
    let server = start(
        Transport::Grpc,
        Options {
            max_message_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let mut client = LogsServiceClient::new(grpc_channel(server.addr).await);
    let e = client.export(large_request(10_000)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("4096 bytes"), "{e:?}");
    assert_eq!(server.requests("grpc", "logs", "too_large"), 1);
    // The connection is still usable.
    client.export(no_records_request()).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_gzip_bomb_is_resource_exhausted() {
    let server = start(
        Transport::Grpc,
        Options {
            max_message_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .await;
    // 4 MiB of one letter compresses to a few KiB: small on the wire, far
    // over the limit once inflated.
    let bomb = large_request(4 * 1024 * 1024);
    assert!(gzip(&bomb.encode_to_vec()).len() < 64 * 1024);
    let mut client = LogsServiceClient::new(grpc_channel(server.addr).await)
        .send_compressed(CompressionEncoding::Gzip);
    let e = client.export(bomb).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("65536 bytes"), "{e:?}");
    assert_eq!(server.requests("grpc", "logs", "too_large"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_accepts_gzip_and_zstd_requests() {
    let server = start(Transport::Grpc, Options::default()).await;
    let channel = grpc_channel(server.addr).await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        LogsServiceClient::new(channel.clone())
            .send_compressed(encoding)
            .export(no_records_request())
            .await
            .unwrap();
        TraceServiceClient::new(channel.clone())
            .send_compressed(encoding)
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap();
    }
    assert_eq!(server.requests("grpc", "logs", "ok"), 2);
    server.stop().await.unwrap();
}

/// A message whose field 1 (`resource_logs`, a message) holds bytes that
/// are no protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    resource_logs: Vec<u8>,
}

#[tokio::test]
async fn grpc_undecodable_message_is_invalid_argument() {
    let server = start(Transport::Grpc, Options::default()).await;
    let mut grpc = tonic::client::Grpc::new(grpc_channel(server.addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Garbage, ExportLogsServiceResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    );
    let e = grpc
        .unary(
            tonic::Request::new(Garbage {
                resource_logs: vec![0xff; 12],
            }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("invalid request: "), "{e:?}");
    assert_eq!(server.requests("grpc", "logs", "bad_request"), 1);
    assert!(server.ingest.calls().is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_over_tls_and_mutual_tls() {
    let pki = Pki::new();
    let server = start(
        Transport::Grpc,
        Options {
            tls: Some(pki.tls(false)),
            ..Options::default()
        },
    )
    .await;
    let channel = grpc_tls_channel(server.addr, pki.connector(false, &[b"h2"]))
        .await
        .unwrap();
    LogsServiceClient::new(channel)
        .export(no_records_request())
        .await
        .unwrap();
    // A plain-text client does not get through.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    assert!(
        LogsServiceClient::new(plain)
            .export(no_records_request())
            .await
            .is_err()
    );
    server.stop().await.unwrap();

    let server = start(
        Transport::Grpc,
        Options {
            tls: Some(pki.tls(true)),
            ..Options::default()
        },
    )
    .await;
    let channel = grpc_tls_channel(server.addr, pki.connector(true, &[b"h2"]))
        .await
        .unwrap();
    LogsServiceClient::new(channel)
        .export(no_records_request())
        .await
        .unwrap();
    // Without a client certificate the handshake fails.
    let refused = match grpc_tls_channel(server.addr, pki.connector(false, &[b"h2"])).await {
        Err(_) => true,
        Ok(channel) => LogsServiceClient::new(channel)
            .export(no_records_request())
            .await
            .is_err(),
    };
    assert!(refused, "a client without certificate got through");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_shutdown_closes_the_listener() {
    let server = start(Transport::Grpc, Options::default()).await;
    let addr = server.addr;
    LogsServiceClient::new(grpc_channel(addr).await)
        .export(no_records_request())
        .await
        .unwrap();
    server.stop().await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------
// HTTP: transport
// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_export_without_records_answers_in_the_request_format() {
    let server = start(
        Transport::Http,
        Options {
            auth: true,
            ..Options::default()
        },
    )
    .await;
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/x-protobuf",
            no_records_request().encode_to_vec(),
        )
        .header("authorization", format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/x-protobuf");
    let response = ExportLogsServiceResponse::decode(r.body.clone()).unwrap();
    assert_eq!(response.partial_success, None);

    let r = http(
        server.addr,
        HttpRequest::post("/v1/traces", "application/json; charset=utf-8", "{}")
            .header("authorization", format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    let response: ExportTraceServiceResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(response.partial_success, None);
    assert!(server.ingest.calls().is_empty());
    assert_eq!(server.requests("http", "logs", "ok"), 1);
    assert_eq!(server.requests("http", "traces", "ok"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_requires_a_valid_bearer_token() {
    let server = start(
        Transport::Http,
        Options {
            auth: true,
            ..Options::default()
        },
    )
    .await;
    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "application/json", "{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    let (code, message) = r.rpc_status();
    assert_eq!(code, Code::Unauthenticated as i32);
    assert!(message.contains("missing authorization"), "{message}");

    let r = http(
        server.addr,
        HttpRequest::post("/v1/traces", "application/x-protobuf", Vec::new())
            .header("authorization", "Bearer wrong-token-0123456789"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.rpc_status().1, "unknown bearer token");
    assert_eq!(server.requests("http", "logs", "unauthenticated"), 1);
    assert_eq!(server.requests("http", "traces", "unauthenticated"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_unsupported_media_types_are_415() {
    let server = start(Transport::Http, Options::default()).await;
    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "text/plain", "hello"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.contains("application/x-protobuf") && text.contains("application/json"),
        "{text}"
    );
    let mut no_type = HttpRequest::post("/v1/logs", "", "{}");
    no_type.headers.clear();
    let r = http(server.addr, no_type).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "application/json", "{}").header("content-encoding", "br"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, message) = r.rpc_status();
    assert!(message.contains("gzip"), "{message}");
    assert_eq!(server.requests("http", "logs", "unsupported_media_type"), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_oversized_bodies_are_413() {
    let server = start(
        Transport::Http,
        Options {
            max_message_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    // Declared too large: refused from the Content-Length.
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/x-protobuf",
            large_request(10_000).encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.rpc_status().1.contains("4096 bytes"),
        "{:?}",
        r.rpc_status()
    );

    // Streamed without a length: cut off at the limit.
    let r =
        http(
            server.addr,
            HttpRequest::post("/v1/logs", "application/x-protobuf", Vec::new()).body(chunked(
                vec![vec![0u8; 3000], vec![0u8; 3000], vec![0u8; 3000]],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.rpc_status().1.contains("4096 bytes"),
        "{:?}",
        r.rpc_status()
    );

    // A gzip bomb: 400 bytes on the wire, 1 MiB inflated.
    let bomb = gzip(&large_request(1024 * 1024).encode_to_vec());
    assert!(bomb.len() < 4096);
    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "application/x-protobuf", bomb)
            .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.rpc_status().1.contains("decompressed"),
        "{:?}",
        r.rpc_status()
    );
    assert_eq!(server.requests("http", "logs", "too_large"), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_malformed_bodies_are_400_naming_the_problem() {
    let server = start(Transport::Http, Options::default()).await;
    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "application/x-protobuf", vec![0x0a, 0xff, 0xff]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-type"), "application/x-protobuf");
    let (code, message) = r.rpc_status();
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.starts_with("invalid protobuf: "), "{message}");

    let r = http(
        server.addr,
        HttpRequest::post("/v1/traces", "application/json", r#"{"resourceSpans": [}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-type"), "application/json");
    let (_, message) = r.rpc_status();
    assert!(
        message.starts_with("invalid JSON at line 1 column "),
        "{message}"
    );

    // Valid JSON of the wrong shape: a trace id that is not hex.
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/traces",
            "application/json",
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.rpc_status().1.starts_with("invalid JSON at line 1"));

    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/json",
            b"{\"x\": \"\xc3\x28\"}".to_vec(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.rpc_status().1.starts_with("invalid UTF-8 at byte 7"));

    let r = http(
        server.addr,
        HttpRequest::post("/v1/logs", "application/json", "{}").header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.rpc_status().1.starts_with("invalid gzip body"));
    assert_eq!(server.requests("http", "logs", "bad_request"), 3);
    assert_eq!(server.requests("http", "traces", "bad_request"), 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_gzip_requests_are_accepted() {
    let server = start(Transport::Http, Options::default()).await;
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/json",
            gzip(b"{\"resourceLogs\":[]}"),
        )
        .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"{}");
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/x-protobuf",
            gzip(&no_records_request().encode_to_vec()),
        )
        .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_other_paths_and_methods_are_404_and_405() {
    let server = start(Transport::Http, Options::default()).await;
    let r = http(
        server.addr,
        HttpRequest::post("/v1/metrics", "application/x-protobuf", Vec::new()),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mut get = HttpRequest::post("/v1/logs", "application/json", "");
    get.method = Method::GET;
    let r = http(server.addr, get).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_over_tls_and_mutual_tls() {
    let pki = Pki::new();
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let server = start(
        Transport::Http,
        Options {
            tls: Some(pki.tls(false)),
            ..Options::default()
        },
    )
    .await;
    let tls = tls_connect(server.addr, &pki.connector(false, alpn))
        .await
        .unwrap();
    let r = http_on(tls, HttpRequest::post("/v1/logs", "application/json", "{}")).await;
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await.unwrap();

    let server = start(
        Transport::Http,
        Options {
            tls: Some(pki.tls(true)),
            ..Options::default()
        },
    )
    .await;
    let tls = tls_connect(server.addr, &pki.connector(true, alpn))
        .await
        .unwrap();
    let r = http_on(
        tls,
        HttpRequest::post("/v1/traces", "application/json", "{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Without a client certificate: the handshake, or the first exchange
    // after it (TLS 1.3 reports the refusal late), fails.
    let refused = match tls_connect(server.addr, &pki.connector(false, alpn)).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls
                .write_all(b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            !matches!(
                tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await,
                Ok(n) if n > 0
            )
        }
    };
    assert!(refused, "a client without certificate got an answer");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tls_setup_errors_name_the_file() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ctx, _) = context(&Options::default());
    let mut endpoint = Endpoint {
        tls: Some(TlsSection {
            cert_file: pki.path("missing.pem"),
            key_file: pki.path("server.key"),
            client_ca_file: None,
        }),
        ..Endpoint::default()
    };
    let e = serve_grpc(listener, &endpoint, ctx.clone(), async {})
        .await
        .unwrap_err();
    assert!(matches!(e, ReceiveError::TlsRead { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // A key file given as the certificate: no CERTIFICATE section.
    endpoint.tls = Some(TlsSection {
        cert_file: pki.path("server.key"),
        key_file: pki.path("server.key"),
        client_ca_file: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = serve_http(listener, &endpoint, ctx.clone(), async {})
        .await
        .unwrap_err();
    assert!(matches!(e, ReceiveError::TlsInvalid { .. }), "{e:?}");
    assert!(e.to_string().contains("server.key"), "{e}");

    // A certificate given as the key.
    endpoint.tls = Some(TlsSection {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("ca.pem"),
        client_ca_file: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = serve_http(listener, &endpoint, ctx, async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ca.pem"), "{e}");
}

#[tokio::test]
async fn garbage_on_the_sockets_does_not_take_the_receivers_down() {
    let grpc = start(Transport::Grpc, Options::default()).await;
    let http_server = start(Transport::Http, Options::default()).await;
    let junk: [&[u8]; 4] = [
        b"\x00\x01\x02\x03\xff\xfe\xfd",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\xff\xff\xff\xff",
        b"POST /v1/logs HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: \xff\xff\r\n\r\n",
    ];
    for addr in [grpc.addr, http_server.addr] {
        for bytes in junk {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(bytes).await;
            let _ = s.shutdown().await;
        }
    }
    LogsServiceClient::new(grpc_channel(grpc.addr).await)
        .export(no_records_request())
        .await
        .unwrap();
    let r = http(
        http_server.addr,
        HttpRequest::post("/v1/logs", "application/json", "{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    grpc.stop().await.unwrap();
    http_server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Valid OTLP requests (they go through `convert`)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn grpc_audit_logs_reach_the_ingest_with_the_token_tenant() {
    let server = start(
        Transport::Grpc,
        Options {
            auth: true,
            ..Options::default()
        },
    )
    .await;
    let event = audit_event();
    let response = LogsServiceClient::new(grpc_channel(server.addr).await)
        .send_compressed(CompressionEncoding::Gzip)
        .export(with_token(
            logs_request(vec![log_record(&event)]),
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);
    let calls = server.ingest.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].principal.tenant.as_deref(), Some(TENANT));
    assert_eq!(calls[0].events.len(), 1);
    assert_eq!(calls[0].events[0].0, 0);
    assert_eq!(calls[0].events[0].1.event_id, event.event_id);
    assert_eq!(server.requests("grpc", "logs", "ok"), 1);
    assert_eq!(
        server.metrics.records_received.get(&[("signal", "logs")]),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_rejected_records_are_a_partial_success() {
    let server = start(Transport::Grpc, Options::default()).await;
    // An otel-audit record without its required attributes.
    let broken = LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_number: 9,
        event_name: "audit.inference".into(),
        attributes: vec![string("audit.category", "inference")],
        ..Default::default()
    };
    let response = LogsServiceClient::new(grpc_channel(server.addr).await)
        .export(logs_request(vec![log_record(&audit_event()), broken]))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial
            .error_message
            .starts_with("1 of 2 log records rejected ("),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("#1 "),
        "{}",
        partial.error_message
    );
    let calls = server.ingest.calls();
    assert_eq!(calls[0].events.len(), 1);
    assert_eq!(calls[0].rejected.len(), 1);
    assert_eq!(calls[0].rejected[0].index, 1);
    assert_eq!(server.requests("grpc", "logs", "partial"), 1);
    assert_eq!(server.metrics.records_rejected.total(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_ingest_errors_map_to_status_codes() {
    let server = start(Transport::Grpc, Options::default()).await;
    let mut client = LogsServiceClient::new(grpc_channel(server.addr).await);
    let request = || logs_request(vec![log_record(&audit_event())]);

    server.ingest.set_mode(Mode::Backpressure);
    let e = client.export(request()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("wal_full"), "{e:?}");
    let retry = e.get_details_retry_info().expect("a RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));

    server.ingest.set_mode(Mode::Unavailable);
    let e = client.export(request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.get_details_retry_info().is_some());

    server.ingest.set_mode(Mode::Internal);
    let e = client.export(request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().contains("fsync failed"), "{e:?}");

    assert_eq!(server.requests("grpc", "logs", "backpressure"), 1);
    assert_eq!(server.requests("grpc", "logs", "unavailable"), 1);
    assert_eq!(server.requests("grpc", "logs", "internal"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_shutdown_lets_in_flight_requests_finish() {
    let server = start(Transport::Grpc, Options::default()).await;
    *server.ingest.delay.lock().unwrap() = Duration::from_millis(500);
    let mut client = LogsServiceClient::new(grpc_channel(server.addr).await);
    let in_flight = tokio::spawn(async move {
        client
            .export(logs_request(vec![log_record(&audit_event())]))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ingest = server.ingest.clone();
    server.stop().await.unwrap();
    in_flight.await.unwrap().unwrap();
    assert_eq!(ingest.calls().len(), 1);
}

#[tokio::test]
async fn http_otlp_json_spec_example_reaches_the_ingest() {
    let server = start(Transport::Http, Options::default()).await;
    let r = http(
        server.addr,
        HttpRequest::post("/v1/traces", "application/json", SPEC_TRACE_JSON),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), "application/json");
    let calls = server.ingest.calls();
    assert_eq!(calls.len(), 1);
    let (index, event) = &calls[0].events[0];
    assert_eq!(*index, 0);
    assert_eq!(
        event.trace.trace_id.as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(event.trace.span_id.as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(event.gen_ai.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(
        server.metrics.records_received.get(&[("signal", "traces")]),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_protobuf_logs_reach_the_ingest() {
    let server = start(Transport::Http, Options::default()).await;
    let event = audit_event();
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/logs",
            "application/x-protobuf",
            gzip(&logs_request(vec![log_record(&event)]).encode_to_vec()),
        )
        .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let response = ExportLogsServiceResponse::decode(r.body.clone()).unwrap();
    assert_eq!(response.partial_success, None);
    let calls = server.ingest.calls();
    assert_eq!(calls[0].events[0].1.event_id, event.event_id);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_unmapped_spans_rejected_by_config_are_a_partial_success() {
    let server = start(
        Transport::Http,
        Options {
            unmapped: Unmapped::Reject,
            ..Options::default()
        },
    )
    .await;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "GET /health".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_100_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = http(
        server.addr,
        HttpRequest::post(
            "/v1/traces",
            "application/json",
            serde_json::to_vec(&request).unwrap(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], 1, "{v}");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("1 of 1 spans rejected"),
        "{v}"
    );
    assert_eq!(server.requests("http", "traces", "partial"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_ingest_errors_map_to_status_codes() {
    let server = start(Transport::Http, Options::default()).await;
    let body = logs_request(vec![log_record(&audit_event())]).encode_to_vec();
    let send = || {
        http(
            server.addr,
            HttpRequest::post("/v1/logs", "application/x-protobuf", body.clone()),
        )
    };

    server.ingest.set_mode(Mode::Backpressure);
    let r = send().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "2");
    assert_eq!(r.rpc_status().0, Code::ResourceExhausted as i32);

    server.ingest.set_mode(Mode::Unavailable);
    let r = send().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), "5");

    server.ingest.set_mode(Mode::Internal);
    let r = send().await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.rpc_status().1.contains("fsync failed"));
    assert_eq!(r.header("retry-after"), "");

    assert_eq!(server.requests("http", "logs", "backpressure"), 1);
    assert_eq!(server.requests("http", "logs", "unavailable"), 1);
    assert_eq!(server.requests("http", "logs", "internal"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_shutdown_lets_in_flight_requests_finish() {
    let server = start(Transport::Http, Options::default()).await;
    *server.ingest.delay.lock().unwrap() = Duration::from_millis(500);
    let addr = server.addr;
    let body = logs_request(vec![log_record(&audit_event())]).encode_to_vec();
    let in_flight = tokio::spawn(async move {
        http(
            addr,
            HttpRequest::post("/v1/logs", "application/x-protobuf", body),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ingest = server.ingest.clone();
    server.stop().await.unwrap();
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    assert_eq!(ingest.calls().len(), 1);
    assert!(TcpStream::connect(addr).await.is_err());
}
