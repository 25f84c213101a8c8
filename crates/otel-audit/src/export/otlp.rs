//! OTLP logs export through `opentelemetry-otlp`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::{InstrumentationScope, Key, KeyValue, SpanId, TraceId};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use otel_audit_event::otlp::{OtlpValue, event_name, to_otlp};
use otel_audit_event::{AuditEvent, Service, Severity};

use super::queue::{QueueConfig, Queued, Sink, queued_exporter, quiet_thread};
use super::{ExportError, RetryPolicy};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (tonic); default endpoint `http://localhost:4317`.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (reqwest); default endpoint
    /// `http://localhost:4318/v1/logs`.
    HttpProtobuf,
}

impl Protocol {
    /// The protocol named by `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`, else
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`); `None` when
    /// neither is set.
    pub fn from_env() -> Result<Option<Protocol>, ExportError> {
        for var in [
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_PROTOCOL,
        ] {
            let Ok(text) = std::env::var(var) else {
                continue;
            };
            return match text.trim() {
                "" => continue,
                "grpc" => Ok(Some(Protocol::Grpc)),
                "http/protobuf" => Ok(Some(Protocol::HttpProtobuf)),
                other => Err(ExportError::Config {
                    setting: var,
                    reason: format!(
                        "{other:?} is not supported; use \"grpc\" or \"http/protobuf\""
                    ),
                }),
            };
        }
        Ok(None)
    }
}

/// Exports audit events as OTLP log records (one record per event, mapped by
/// [`otel_audit_event::otlp::to_otlp`]; see `docs/OTLP.md`).
///
/// Events go through a bounded queue (see [`QueueConfig`]) to a dedicated
/// thread, which batches them and sends each batch as one OTLP export
/// request with `opentelemetry-otlp`'s exporter (its retry policy applies).
/// That thread drives the transport (tonic, or an async reqwest client) on a
/// one-worker tokio runtime of its own, so the exporter works the same
/// whether or not it is built or called inside the application's tokio
/// runtime, and never needs the application's runtime.
///
/// ```no_run
/// use otel_audit::export::{AuditExporter, OtlpExporter, Protocol};
///
/// let exporter = OtlpExporter::builder()
///     .with_protocol(Protocol::Grpc)
///     .with_endpoint("http://collector:4317")
///     .with_header("authorization", "Bearer s3cr3t")
///     .with_service_name("chat-api")
///     .build()?;
/// // ... hand it to the AuditLayer; at exit:
/// exporter.shutdown()?;
/// # Ok::<(), otel_audit::export::ExportError>(())
/// ```
pub struct OtlpExporter {
    queue: Queued,
    protocol: Protocol,
}

impl OtlpExporter {
    /// A builder with everything unset: protocol, endpoint, headers and
    /// timeout then come from the `OTEL_EXPORTER_OTLP_*` variables, or the
    /// OTLP defaults.
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// The transport in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

queued_exporter!(OtlpExporter, protocol);

/// Configures an [`OtlpExporter`]. Settings made here win over the
/// environment; unset ones come from the standard variables
/// (`OTEL_EXPORTER_OTLP_LOGS_*`, then `OTEL_EXPORTER_OTLP_*`), then the OTLP
/// defaults.
#[derive(Debug, Clone, Default)]
pub struct OtlpExporterBuilder {
    protocol: Option<Protocol>,
    endpoint: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    service: Option<Service>,
    resource: Vec<(String, String)>,
    queue: Option<QueueConfig>,
}

impl OtlpExporterBuilder {
    /// The transport. Default: `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL` /
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The receiver's URL. For gRPC, `http://host:4317`. For HTTP the full
    /// URL of the logs endpoint; a URL without a path gets `/v1/logs`
    /// appended. Default: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` (used as is),
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/logs` appended for HTTP),
    /// else `http://localhost:4317` / `http://localhost:4318/v1/logs`.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// A header (gRPC metadata) sent with every request, e.g. `authorization`.
    /// Added to those of `OTEL_EXPORTER_OTLP_LOGS_HEADERS` /
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`k1=v1,k2=v2`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The timeout of one export request. Default:
    /// `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (ms),
    /// else 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How failed requests are retried. Default: `opentelemetry-otlp`'s
    /// recommended policy (3 retries, exponential backoff from 100 ms).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The service in the resource (`service.name`, `service.version`,
    /// `deployment.environment.name`, `host.name`). Every record also carries
    /// its event's own service attributes, so this only informs other
    /// OpenTelemetry tooling. Default: `OTEL_SERVICE_NAME` /
    /// `OTEL_RESOURCE_ATTRIBUTES`, as the OpenTelemetry SDK reads them.
    pub fn with_service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    /// Shorthand for [`with_service`](Self::with_service) with only a name.
    pub fn with_service_name(self, name: impl Into<String>) -> Self {
        self.with_service(Service {
            name: name.into(),
            ..Service::default()
        })
    }

    /// Another resource attribute.
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// Queue, batching and timeouts. Default: [`QueueConfig::from_env`].
    pub fn with_queue(mut self, config: QueueConfig) -> Self {
        self.queue = Some(config);
        self
    }

    /// Starts the export thread and builds the OTLP exporter on it. Fails on
    /// invalid settings (including environment variables); never contacts
    /// the receiver (connections are made when the first batch is sent).
    pub fn build(self) -> Result<OtlpExporter, ExportError> {
        let protocol = match self.protocol {
            Some(p) => p,
            None => Protocol::from_env()?.unwrap_or(Protocol::Grpc),
        };
        let queue_config = match self.queue.clone() {
            Some(q) => q,
            None => QueueConfig::from_env()?,
        };
        let queue = Queued::start("OTLP", queue_config, move || OtlpSink::new(self, protocol))?;
        Ok(OtlpExporter { queue, protocol })
    }

    fn resource(&self) -> Resource {
        let mut attributes: Vec<KeyValue> = Vec::new();
        if let Some(service) = &self.service {
            for (key, value) in otel_audit_event::otlp::resource_attributes(service) {
                if let OtlpValue::Str(v) = value {
                    attributes.push(KeyValue::new(key, v));
                }
            }
        }
        for (key, value) in &self.resource {
            attributes.push(KeyValue::new(key.clone(), value.clone()));
        }
        Resource::builder().with_attributes(attributes).build()
    }

    fn build_grpc(self) -> Result<opentelemetry_otlp::LogExporter, ExportError> {
        let mut b = opentelemetry_otlp::LogExporter::builder().with_tonic();
        if let Some(endpoint) = self.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(timeout) = self.timeout {
            b = b.with_timeout(timeout);
        }
        if let Some(retry) = self.retry {
            b = b.with_retry_policy(retry);
        }
        if !self.headers.is_empty() {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &self.headers {
                let key = tonic::metadata::AsciiMetadataKey::from_bytes(
                    name.to_ascii_lowercase().as_bytes(),
                )
                .map_err(|_| ExportError::Config {
                    setting: "with_header",
                    reason: format!("{name:?} is not a valid gRPC metadata name"),
                })?;
                let value = tonic::metadata::AsciiMetadataValue::try_from(value.as_str()).map_err(
                    |_| ExportError::Config {
                        setting: "with_header",
                        reason: format!("the value of {name:?} is not a valid header value"),
                    },
                )?;
                metadata.append(key, value);
            }
            b = b.with_metadata(metadata);
        }
        b.build().map_err(|source| ExportError::Build { source })
    }

    fn build_http(self) -> Result<opentelemetry_otlp::LogExporter, ExportError> {
        // Our own async client, run on the export thread's runtime: the
        // blocking client would run hyper on a reqwest-owned thread that logs
        // through `tracing`.
        let client = reqwest::Client::builder()
            .timeout(self.request_timeout())
            .build()
            .map_err(|source| ExportError::HttpClient { source })?;
        let mut b = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(client);
        if let Some(endpoint) = self.endpoint {
            b = b.with_endpoint(http_logs_url(&endpoint));
        }
        if let Some(timeout) = self.timeout {
            b = b.with_timeout(timeout);
        }
        if let Some(retry) = self.retry {
            b = b.with_retry_policy(retry);
        }
        if !self.headers.is_empty() {
            b = b.with_headers(self.headers.into_iter().collect::<HashMap<_, _>>());
        }
        b.build().map_err(|source| ExportError::Build { source })
    }
}

impl OtlpExporterBuilder {
    /// The timeout of one request, resolved as `opentelemetry-otlp` does.
    fn request_timeout(&self) -> Duration {
        if let Some(timeout) = self.timeout {
            return timeout;
        }
        [
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT,
        ]
        .into_iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<u64>().ok())
        .map_or(
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT,
            Duration::from_millis,
        )
    }
}

/// `http://host:4318` → `http://host:4318/v1/logs`; URLs with a path are kept.
fn http_logs_url(endpoint: &str) -> String {
    let after_scheme = endpoint.find("://").map_or(0, |i| i + 3);
    match endpoint[after_scheme..].find('/') {
        None => format!("{endpoint}/v1/logs"),
        Some(i) if after_scheme + i + 1 == endpoint.len() => format!("{endpoint}v1/logs"),
        Some(_) => endpoint.to_owned(),
    }
}

/// Lives on the export thread.
struct OtlpSink {
    exporter: opentelemetry_otlp::LogExporter,
    /// Drives tonic or reqwest; ours alone, its threads quiet.
    runtime: Option<tokio::runtime::Runtime>,
    logger: SdkLogger,
    /// Kept so the logger stays valid; it has no processors.
    _provider: SdkLoggerProvider,
    scope: InstrumentationScope,
}

impl OtlpSink {
    fn new(builder: OtlpExporterBuilder, protocol: Protocol) -> Result<Self, ExportError> {
        let resource = builder.resource();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-audit-io")
            .on_thread_start(|| {
                // Runtime threads live as long as the runtime: stay quiet for good.
                std::mem::forget(quiet_thread());
            })
            .enable_all()
            .build()
            .map_err(|source| ExportError::Runtime { source })?;
        let mut exporter = {
            // tonic's lazily connecting channel spawns onto the current runtime.
            let _enter = runtime.enter();
            match protocol {
                Protocol::Grpc => builder.build_grpc()?,
                Protocol::HttpProtobuf => builder.build_http()?,
            }
        };
        let runtime = Some(runtime);
        exporter.set_resource(&resource);
        // Records are made by an SDK logger (the only way to create them) but
        // never emitted through it: emitting would attach whatever span is
        // current on the emitting thread, and the SDK's batch processor drops
        // silently when full. We batch and count ourselves.
        let provider = SdkLoggerProvider::builder().with_resource(resource).build();
        let scope = InstrumentationScope::builder("otel-audit")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let logger = provider.logger_with_scope(scope.clone());
        Ok(OtlpSink {
            exporter,
            runtime,
            logger,
            _provider: provider,
            scope,
        })
    }

    fn record(&self, event: &AuditEvent, observed: SystemTime) -> SdkLogRecord {
        let log = to_otlp(event);
        let mut record = self.logger.create_log_record();
        record.set_event_name(event_name(event.category));
        if log.time_unix_nano != 0 {
            record.set_timestamp(UNIX_EPOCH + Duration::from_nanos(log.time_unix_nano));
        }
        // Required: the SDK's OTLP encoder unwraps it.
        record.set_observed_timestamp(observed);
        record.set_severity_number(match event.severity {
            Severity::Debug => opentelemetry::logs::Severity::Debug,
            Severity::Info => opentelemetry::logs::Severity::Info,
            Severity::Warn => opentelemetry::logs::Severity::Warn,
            Severity::Error => opentelemetry::logs::Severity::Error,
            Severity::Critical => opentelemetry::logs::Severity::Fatal,
        });
        record.set_severity_text(event.severity.as_str());
        if log.trace_id.is_some() || log.span_id.is_some() {
            record.set_trace_context(
                log.trace_id.map_or(TraceId::INVALID, TraceId::from_bytes),
                log.span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
                None,
            );
        }
        for (key, value) in log.attributes {
            record.add_attribute(Key::new(key), any_value(value));
        }
        record
    }
}

fn any_value(value: OtlpValue) -> AnyValue {
    match value {
        OtlpValue::Str(s) => AnyValue::String(s.into()),
        OtlpValue::Int(i) => AnyValue::Int(i),
        OtlpValue::Double(d) => AnyValue::Double(d),
        OtlpValue::Bool(b) => AnyValue::Boolean(b),
        OtlpValue::Bytes(b) => AnyValue::Bytes(Box::new(b)),
        OtlpValue::Array(items) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(any_value).collect()))
        }
        OtlpValue::KvList(entries) => AnyValue::Map(Box::new(
            entries
                .into_iter()
                .map(|(k, v)| (Key::new(k), any_value(v)))
                .collect(),
        )),
    }
}

impl Sink for OtlpSink {
    fn write(&mut self, batch: &[AuditEvent]) -> Result<(), ExportError> {
        let observed = SystemTime::now();
        let records: Vec<SdkLogRecord> = batch.iter().map(|e| self.record(e, observed)).collect();
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        let export = self.exporter.export(LogBatch::new(&pairs));
        let result = match &self.runtime {
            Some(runtime) => runtime.block_on(export),
            None => Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown),
        };
        result.map_err(|source| ExportError::Otlp {
            count: batch.len(),
            source,
        })
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        let result = self
            .exporter
            .shutdown_with_timeout(Duration::from_secs(5))
            .map_err(|source| ExportError::Shutdown { source });
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::http_logs_url;

    #[test]
    fn http_urls_get_the_logs_path() {
        assert_eq!(http_logs_url("http://h:4318"), "http://h:4318/v1/logs");
        assert_eq!(http_logs_url("http://h:4318/"), "http://h:4318/v1/logs");
        assert_eq!(
            http_logs_url("http://h:4318/custom"),
            "http://h:4318/custom"
        );
        assert_eq!(http_logs_url("http://h/v1/logs"), "http://h/v1/logs");
    }
}
