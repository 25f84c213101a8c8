//! From OTLP requests to audit events.
//!
//! Log records written by otel-audit's layer (docs/OTLP.md) map back exactly;
//! spans and log records from other SDKs that carry OpenTelemetry GenAI
//! attributes become inference or tool events; everything else is
//! "unmapped" and handled per `receivers.unmapped`.
//!
//! - A log record is an otel-audit record when its `event_name` starts with
//!   `audit.` or it has an `audit.event_id` attribute (the rule of
//!   [`otlp::is_audit_log`], checked on the protobuf record so that other
//!   records are not copied first). It is mapped by [`otlp::from_otlp`]; an
//!   error is a [`Rejection`] with reason [`reason::MAPPING`] whose message
//!   names the attribute and never quotes its value. With an authenticated
//!   tenant, a record naming another tenant is rejected
//!   ([`reason::TENANT_MISMATCH`]); without one, the record's tenant stands.
//! - Any other log record, and any span, with a `gen_ai.*` attribute (or a
//!   `gen_ai.*` event name) is mapped by the rules of docs/OTLP.md,
//!   "Telemetry from other OpenTelemetry SDKs"; its tenant is the
//!   authenticated one, else [`ConvertOptions::default_tenant`].
//! - The rest is counted in [`Converted::unmapped`] or rejected
//!   ([`reason::UNMAPPED`]), per [`ConvertOptions::unmapped`].
//!
//! Nothing is redacted here: the pipeline applies the server-side policy to
//! every event afterwards, and it must see content whole (so attribute values
//! and error messages are passed on at any length; the policy cuts what is
//! still too long after redaction).
//!
//! [`otlp::is_audit_log`]: otel_audit_event::otlp::is_audit_log
//! [`otlp::from_otlp`]: otel_audit_event::otlp::from_otlp

mod genai;
mod message;
mod value;
mod wire;

pub use wire::logs as logs_from_wire;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};
use otel_audit_event::otlp::{MappingError, OtlpLog, OtlpValue, from_otlp, is_audit_record, keys};
use otel_audit_event::{AuditEvent, Service};

use crate::config::Unmapped;
use crate::ingest::{Principal, Rejection};

use genai::{Origin, RawLog, RawSpan, is_gen_ai_key};
use value::{attributes_owned, id, value_owned, value_ref};

/// The [`Rejection::reason`]s this module gives.
pub mod reason {
    /// The record could not be mapped: a missing, mistyped or invalid
    /// attribute or field (the message names it).
    pub const MAPPING: &str = "mapping";
    /// An otel-audit record names another tenant than the authenticated one.
    pub const TENANT_MISMATCH: &str = "tenant_mismatch";
    /// Neither an otel-audit record nor GenAI telemetry, with
    /// `receivers.unmapped: reject`.
    pub const UNMAPPED: &str = "unmapped";
}

/// How requests are converted.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Tenant of events whose payload names none, when no authenticated
    /// tenant applies.
    pub default_tenant: String,
    /// What happens to records that are not audit data.
    pub unmapped: Unmapped,
}

/// The events of one request, and what could not be converted.
#[derive(Debug, Default)]
pub struct Converted {
    /// Events with their record index in the request.
    pub events: Vec<(usize, AuditEvent)>,
    /// Records rejected (mapping errors, tenant mismatch, unmapped with
    /// `reject`).
    pub rejected: Vec<Rejection>,
    /// Records dropped as unmapped (`drop`).
    pub unmapped: usize,
    /// Records in the request.
    pub records: usize,
}

/// Converts an OTLP logs request. It takes the request by value and moves
/// its strings into the events: on the receive path the decoded request is
/// dropped right after, and copying every string cost a third more.
pub fn logs(
    request: ExportLogsServiceRequest,
    principal: &Principal,
    options: &ConvertOptions,
) -> Converted {
    let records = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let mut sink = Sink::new(records, principal, options);
    for rl in request.resource_logs {
        let resource = ResourceCtx::new(rl.resource.as_ref());
        for sl in rl.scope_logs {
            let scope = scope_ref(sl.scope.as_ref());
            for rec in sl.log_records {
                let kind = classify_log(&rec.event_name, &rec.attributes);
                sink.log(kind, &resource, scope, || raw_log(rec, kind));
            }
        }
    }
    sink.finish()
}

/// Converts an OTLP traces request, by value like [`logs`].
pub fn traces(
    request: ExportTraceServiceRequest,
    principal: &Principal,
    options: &ConvertOptions,
) -> Converted {
    let records = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut sink = Sink::new(records, principal, options);
    for rs in request.resource_spans {
        let resource = ResourceCtx::new(rs.resource.as_ref());
        for ss in rs.scope_spans {
            let scope = scope_ref(ss.scope.as_ref());
            for span in ss.spans {
                let gen_ai = span.attributes.iter().any(|kv| is_gen_ai_key(&kv.key));
                sink.span(gen_ai, &resource, scope, || raw_span(span));
            }
        }
    }
    sink.finish()
}

/// What a log record is, decided on the protobuf record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogKind {
    /// Written by otel-audit: mapped by `from_otlp`.
    Audit,
    /// GenAI telemetry of another SDK.
    GenAi,
    /// Neither.
    Other,
}

/// [`otel_audit_event::otlp::is_audit_record`], on the protobuf record;
/// then the GenAI rule: a `gen_ai.*` event name (field or `event.name`
/// attribute) or attribute.
fn classify_log(event_name: &str, attributes: &[KeyValue]) -> LogKind {
    if is_audit_record(
        event_name,
        attributes.iter().any(|kv| kv.key == keys::EVENT_ID),
    ) {
        return LogKind::Audit;
    }
    let gen_ai_name = |kv: &KeyValue| {
        kv.key == keys::EVENT_NAME
            && matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s))
                    if is_gen_ai_key(s)
            )
    };
    if is_gen_ai_key(event_name)
        || attributes
            .iter()
            .any(|kv| is_gen_ai_key(&kv.key) || gen_ai_name(kv))
    {
        LogKind::GenAi
    } else {
        LogKind::Other
    }
}

/// The resource's service attributes, read once per resource.
struct ResourceCtx {
    /// For `from_otlp`, which reads the service from the resource when a
    /// record carries none. Only the service keys are copied: `from_otlp`
    /// reads nothing else from the resource.
    audit: Vec<(String, OtlpValue)>,
    /// For GenAI records.
    service: Service,
}

/// Resource attributes `from_otlp` or the GenAI mapping read.
const SERVICE_KEYS: [&str; 5] = [
    keys::SERVICE_NAME,
    keys::SERVICE_VERSION,
    keys::DEPLOYMENT_ENVIRONMENT,
    "deployment.environment",
    keys::HOST_NAME,
];

impl ResourceCtx {
    fn new(resource: Option<&Resource>) -> Self {
        let audit: Vec<(String, OtlpValue)> = resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter(|kv| SERVICE_KEYS.contains(&kv.key.as_str()))
                    .filter_map(|kv| Some((kv.key.clone(), value_ref(kv.value.as_ref()?)?)))
                    .collect()
            })
            .unwrap_or_default();
        let service = genai::service(&audit);
        ResourceCtx { audit, service }
    }
}

fn scope_ref(scope: Option<&InstrumentationScope>) -> (&str, &str) {
    scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()))
}

/// Where converted records go.
struct Sink<'a> {
    out: Converted,
    next_index: usize,
    principal: &'a Principal,
    options: &'a ConvertOptions,
}

impl<'a> Sink<'a> {
    fn new(records: usize, principal: &'a Principal, options: &'a ConvertOptions) -> Self {
        Sink {
            out: Converted {
                events: Vec::with_capacity(records),
                records,
                ..Converted::default()
            },
            next_index: 0,
            principal,
            options,
        }
    }

    fn finish(self) -> Converted {
        debug_assert_eq!(self.next_index, self.out.records);
        self.out
    }

    fn tenant(&self) -> &'a str {
        self.principal
            .tenant
            .as_deref()
            .unwrap_or(&self.options.default_tenant)
    }

    fn reject(&mut self, index: usize, reason: &'static str, message: String) {
        self.out.rejected.push(Rejection {
            index,
            reason,
            message,
        });
    }

    fn unmapped(&mut self, index: usize, message: &str) {
        match self.options.unmapped {
            Unmapped::Drop => self.out.unmapped += 1,
            Unmapped::Reject => self.reject(index, reason::UNMAPPED, message.to_owned()),
        }
    }

    fn log(
        &mut self,
        kind: LogKind,
        resource: &ResourceCtx,
        scope: (&str, &str),
        raw: impl FnOnce() -> Result<RawLog, String>,
    ) {
        let index = self.next();
        if kind == LogKind::Other {
            self.unmapped(
                index,
                "log record is neither an otel-audit record (event_name audit.*, \
                 audit.event_id) nor GenAI telemetry (gen_ai.* attributes)",
            );
            return;
        }
        let raw = match raw() {
            Ok(raw) => raw,
            Err(message) => return self.reject(index, reason::MAPPING, message),
        };
        if kind == LogKind::Audit {
            return self.audit(index, from_otlp(&resource.audit, &raw.log));
        }
        let origin = Origin {
            tenant: self.tenant(),
            service: &resource.service,
            scope,
        };
        match genai::from_log(raw, &origin) {
            Ok(event) => self.out.events.push((index, event)),
            Err(message) => self.reject(index, reason::MAPPING, message),
        }
    }

    /// The next record's index in the request.
    fn next(&mut self) -> usize {
        self.next_index += 1;
        self.next_index - 1
    }

    /// An otel-audit record's mapping, checked against the authenticated
    /// tenant.
    fn audit(&mut self, index: usize, mapped: Result<AuditEvent, MappingError>) {
        let event = match mapped {
            Ok(event) => event,
            Err(e) => return self.reject(index, reason::MAPPING, message::describe(&e)),
        };
        if let Some(tenant) = &self.principal.tenant
            && event.tenant != *tenant
        {
            let message = format!(
                "audit.tenant {} differs from the authenticated tenant {}",
                message::tenant(&event.tenant),
                message::tenant(tenant)
            );
            return self.reject(index, reason::TENANT_MISMATCH, message);
        }
        self.out.events.push((index, event));
    }

    fn span(
        &mut self,
        gen_ai: bool,
        resource: &ResourceCtx,
        scope: (&str, &str),
        raw: impl FnOnce() -> Result<RawSpan, String>,
    ) {
        let index = self.next();
        if !gen_ai {
            self.unmapped(index, "span has no gen_ai.* attributes");
            return;
        }
        let origin = Origin {
            tenant: self.tenant(),
            service: &resource.service,
            scope,
        };
        match raw().and_then(|raw| genai::from_span(raw, &origin)) {
            Ok(event) => self.out.events.push((index, event)),
            Err(message) => self.reject(index, reason::MAPPING, message),
        }
    }
}

/// A log record's trace and span ids, each optional.
type LogIds = (Option<[u8; 16]>, Option<[u8; 8]>);

/// A span's trace id, span id and parent span id.
type SpanIds = ([u8; 16], [u8; 8], Option<[u8; 8]>);

/// The record's trace and span ids; a wrong length names the field (the
/// message carries lengths only).
fn log_ids(rec: &LogRecord) -> Result<LogIds, String> {
    let trace_id = id::<16>("trace_id", &rec.trace_id).map_err(|e| e.to_string())?;
    let span_id = id::<8>("span_id", &rec.span_id).map_err(|e| e.to_string())?;
    Ok((trace_id, span_id))
}

fn raw_log(rec: LogRecord, kind: LogKind) -> Result<RawLog, String> {
    let (trace_id, span_id) = log_ids(&rec)?;
    Ok(RawLog {
        log: OtlpLog {
            time_unix_nano: rec.time_unix_nano,
            observed_time_unix_nano: rec.observed_time_unix_nano,
            severity_number: rec.severity_number,
            severity_text: rec.severity_text,
            event_name: rec.event_name,
            trace_id,
            span_id,
            attributes: attributes_owned(rec.attributes),
        },
        body: match kind {
            LogKind::Audit => None,
            _ => rec.body.and_then(value_owned),
        },
    })
}

/// The span's ids: trace and span id are required for a span.
fn span_ids(span: &Span) -> Result<SpanIds, String> {
    let trace_id = id::<16>("trace_id", &span.trace_id)
        .map_err(|e| e.to_string())?
        .ok_or("trace_id is required")?;
    let span_id = id::<8>("span_id", &span.span_id)
        .map_err(|e| e.to_string())?
        .ok_or("span_id is required")?;
    let parent = id::<8>("parent_span_id", &span.parent_span_id).map_err(|e| e.to_string())?;
    Ok((trace_id, span_id, parent))
}

fn is_error(status: Option<&Status>) -> bool {
    status.is_some_and(|s| s.code == StatusCode::Error as i32)
}

fn raw_span(span: Span) -> Result<RawSpan, String> {
    let (trace_id, span_id, parent_span_id) = span_ids(&span)?;
    let status_error = is_error(span.status.as_ref());
    Ok(RawSpan {
        name: span.name,
        trace_id,
        span_id,
        parent_span_id,
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
        attributes: attributes_owned(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|e| attributes_owned(e.attributes))
            .collect(),
        status_error,
        status_message: match span.status {
            Some(s) if status_error => s.message,
            _ => String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use otel_audit_event::otlp::is_audit_log;

    fn kv(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        }
    }

    /// The protobuf-level check and `is_audit_log` agree.
    #[test]
    fn classification_follows_is_audit_log() {
        let cases: Vec<(&str, Vec<KeyValue>)> = vec![
            ("audit.inference", vec![]),
            ("audit.", vec![]),
            ("", vec![kv("audit.event_id", "x")]),
            ("gen_ai.choice", vec![kv("audit.event_id", "x")]),
            ("", vec![kv("event.name", "audit.tool")]),
            ("", vec![kv("audit.tenant", "t")]),
            ("auditx", vec![kv("gen_ai.system", "openai")]),
            ("", vec![]),
        ];
        for (name, attributes) in cases {
            let kind = classify_log(name, &attributes);
            let log = OtlpLog {
                event_name: name.into(),
                attributes: value::attributes_ref(&attributes),
                ..OtlpLog::default()
            };
            assert_eq!(kind == LogKind::Audit, is_audit_log(&log), "{name} {log:?}");
        }
        assert_eq!(
            classify_log("", &[kv("event.name", "gen_ai.user.message")]),
            LogKind::GenAi
        );
        assert_eq!(classify_log("gen_ai.choice", &[]), LogKind::GenAi);
        assert_eq!(
            classify_log("http.request", &[kv("x", "y")]),
            LogKind::Other
        );
    }
}
