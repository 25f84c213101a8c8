//! OTLP requests → audit events: exact round trips of otel-audit records,
//! GenAI spans and logs as other SDKs emit them, tenants, unmapped records,
//! malformed ids, limits, and rejection messages that never carry a value.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use otel_audit_collector::config::Unmapped;
use otel_audit_collector::convert::{self, ConvertOptions, Converted, logs, traces};
use otel_audit_collector::ingest::{Principal, Rejection};
use otel_audit_event::otlp::{OtlpLog, OtlpValue, resource_attributes, to_otlp};
use otel_audit_event::redact::{Redacted, Redactor};
use otel_audit_event::{
    ActorType, AuditEvent, Category, ContentDigest, DigestAlgorithm, MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES, Outcome, Redaction, RedactionMethod, SealedContent, Severity,
};
use uuid::Uuid;

const CANARY: &str = "CANARY-d41d8cd9";
const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const PARENT_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];
/// 2025-10-09T08:53:20.123456789Z.
const START: u64 = 1_760_000_000_123_456_789;

// ---------------------------------------------------------------------------
// Building requests

fn any(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn str_value(s: &str) -> AnyValue {
    any(Value::StringValue(s.into()))
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        key_strindex: 0,
    }
}

fn kvs(key: &str, s: &str) -> KeyValue {
    kv(key, str_value(s))
}

fn kvi(key: &str, i: i64) -> KeyValue {
    kv(key, any(Value::IntValue(i)))
}

fn kvd(key: &str, d: f64) -> KeyValue {
    kv(key, any(Value::DoubleValue(d)))
}

fn kvb(key: &str, b: bool) -> KeyValue {
    kv(key, any(Value::BoolValue(b)))
}

fn array(values: Vec<AnyValue>) -> AnyValue {
    any(Value::ArrayValue(ArrayValue { values }))
}

fn kvlist(values: Vec<KeyValue>) -> AnyValue {
    any(Value::KvlistValue(KeyValueList { values }))
}

/// The protobuf form of a plain OTLP value, as an SDK sends it.
fn proto_value(v: &OtlpValue) -> AnyValue {
    any(match v {
        OtlpValue::Str(s) => Value::StringValue(s.clone()),
        OtlpValue::Int(i) => Value::IntValue(*i),
        OtlpValue::Double(d) => Value::DoubleValue(*d),
        OtlpValue::Bool(b) => Value::BoolValue(*b),
        OtlpValue::Bytes(b) => Value::BytesValue(b.clone()),
        OtlpValue::Array(items) => Value::ArrayValue(ArrayValue {
            values: items.iter().map(proto_value).collect(),
        }),
        OtlpValue::KvList(entries) => Value::KvlistValue(KeyValueList {
            values: proto_attributes(entries),
        }),
    })
}

fn proto_attributes(entries: &[(String, OtlpValue)]) -> Vec<KeyValue> {
    entries.iter().map(|(k, v)| kv(k, proto_value(v))).collect()
}

/// The protobuf form of a mapped record.
fn proto_log(log: &OtlpLog) -> LogRecord {
    LogRecord {
        time_unix_nano: log.time_unix_nano,
        observed_time_unix_nano: log.observed_time_unix_nano,
        severity_number: log.severity_number,
        severity_text: log.severity_text.clone(),
        body: None,
        attributes: proto_attributes(&log.attributes),
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: log.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: log.span_id.map(|s| s.to_vec()).unwrap_or_default(),
        event_name: log.event_name.clone(),
    }
}

fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes,
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    })
}

fn scope(name: &str, version: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: version.into(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    })
}

fn logs_request(groups: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(res, records)| ResourceLogs {
                resource: resource(res),
                scope_logs: vec![ScopeLogs {
                    scope: scope("otel-audit", "0.1.0"),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn traces_request(
    res: Vec<KeyValue>,
    scope_name: &str,
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(res),
            scope_spans: vec![ScopeSpans {
                scope: scope(scope_name, "2.1b0"),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        trace_state: String::new(),
        parent_span_id: PARENT_ID.to_vec(),
        flags: 0x301,
        name: name.into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: START,
        end_time_unix_nano: START + 842_000_000,
        attributes,
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: None,
    }
}

fn python_resource() -> Vec<KeyValue> {
    vec![
        kvs("telemetry.sdk.language", "python"),
        kvs("telemetry.sdk.name", "opentelemetry"),
        kvs("telemetry.sdk.version", "1.37.0"),
        kvs("service.name", "support-bot"),
        kvs("service.version", "3.2.1"),
        kvs("deployment.environment.name", "production"),
        kvs("host.name", "ip-10-0-3-17"),
    ]
}

fn options(unmapped: Unmapped) -> ConvertOptions {
    ConvertOptions {
        default_tenant: "default".into(),
        unmapped,
    }
}

fn anonymous() -> Principal {
    Principal::default()
}

fn authenticated(tenant: &str) -> Principal {
    Principal {
        tenant: Some(tenant.into()),
        token_name: Some("ci".into()),
    }
}

fn convert_logs(
    request: &ExportLogsServiceRequest,
    principal: &Principal,
    options: &ConvertOptions,
) -> Converted {
    logs(request.clone(), principal, options)
}

fn convert_traces(
    request: &ExportTraceServiceRequest,
    principal: &Principal,
    options: &ConvertOptions,
) -> Converted {
    traces(request.clone(), principal, options)
}

/// The one event of a request that must convert.
fn only_event(c: Converted) -> AuditEvent {
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    assert_eq!(c.events.len(), 1, "{:?}", c.events);
    let (index, event) = c.events.into_iter().next().expect("one event");
    assert_eq!(index, 0);
    event
}

fn only_rejection(c: Converted) -> Rejection {
    assert!(c.events.is_empty(), "{:?}", c.events);
    assert_eq!(c.rejected.len(), 1, "{:?}", c.rejected);
    c.rejected.into_iter().next().expect("one rejection")
}

// ---------------------------------------------------------------------------
// otel-audit records

fn rich_event() -> AuditEvent {
    let mut e = AuditEvent::new("acme-prod", "chat-api", Category::Inference, "llm.chat");
    e.event_id = Uuid::parse_str("0194f3a2-7b1c-7def-8abc-0123456789ab").expect("uuid");
    e.time = Utc
        .timestamp_opt(1_760_000_000, 123_456_789)
        .single()
        .expect("time");
    e.duration_ns = Some(1_234_567);
    e.severity = Severity::Warn;
    e.service.version = Some("1.4.2".into());
    e.service.environment = Some("production".into());
    e.service.host = Some("web-3".into());
    e.actor.id = Some("user-17".into());
    e.actor.kind = Some(ActorType::User);
    e.actor.role = Some("analyst".into());
    e.actor.ip = Some("203.0.113.9".into());
    e.actor.session = Some("sess-9".into());
    e.outcome = Outcome::Blocked;
    e.target.kind = Some("document".into());
    e.target.id = Some("doc-42".into());
    e.error.kind = Some("SafetyBlocked".into());
    e.error.message = Some("blocked by policy".into());
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.operation = Some("chat".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.response_model = Some("gpt-4o-2024-08-06".into());
    e.gen_ai.input_tokens = Some(152);
    e.gen_ai.output_tokens = Some(0);
    e.gen_ai.conversation_id = Some("conv-1".into());
    e.gen_ai.agent_name = Some("support-bot".into());
    e.gen_ai.tool_name = Some("search".into());
    e.gen_ai.temperature = Some(0.7);
    e.safety.passed = Some(false);
    e.safety.detectors = vec!["email".into(), "payment_card".into()];
    e.safety.block_reason = Some("PII in prompt".into());
    e.content_digests = vec![
        ContentDigest {
            field: "gen_ai.input.messages".into(),
            algorithm: DigestAlgorithm::HmacSha256,
            key_id: Some("k1".into()),
            digest: [7; 32],
        },
        ContentDigest {
            field: "arg.query".into(),
            algorithm: DigestAlgorithm::Sha256,
            key_id: None,
            digest: [0xfe; 32],
        },
    ];
    e.sealed_content = vec![SealedContent {
        field: "gen_ai.output.messages".into(),
        algorithm: "aes-256-gcm".into(),
        key_id: "enc-2025".into(),
        nonce: vec![1; 12],
        ciphertext: vec![0xaa; 48],
    }];
    e.redactions = vec![
        Redaction {
            field: "gen_ai.input.messages".into(),
            method: RedactionMethod::Hmac,
            detector: None,
            key_id: Some("k1".into()),
        },
        Redaction {
            field: "arg.email".into(),
            method: RedactionMethod::Mask,
            detector: Some("email".into()),
            key_id: None,
        },
    ];
    e.trace.trace_id = Some(hex::encode(TRACE_ID));
    e.trace.span_id = Some(hex::encode(SPAN_ID));
    e.trace.parent_span_id = Some(hex::encode(PARENT_ID));
    e.attributes = BTreeMap::from([
        ("http.route".into(), "/v1/chat".into()),
        ("otel_audit.dropped_before".into(), "3".into()),
        ("note".into(), "ünïcödé \"quoted\"\n".into()),
    ]);
    e
}

fn audit_record(e: &AuditEvent) -> LogRecord {
    proto_log(&to_otlp(e))
}

#[test]
fn otel_audit_records_round_trip_exactly() {
    let rich = rich_event();
    let minimal = {
        let mut e = AuditEvent::new("acme-prod", "billing", Category::Admin, "project.delete");
        e.time = Utc.timestamp_opt(1_700_000_000, 1).single().expect("time");
        e
    };
    let odd_trace = {
        // Ids that cannot travel in the record fields go as attributes.
        let mut e = rich_event();
        e.event_id = Uuid::now_v7();
        e.trace.trace_id = Some("NOT-HEX".into());
        e.trace.span_id = Some("0000000000000000".into());
        e
    };
    let tool = {
        let mut e = AuditEvent::new("acme-prod", "agent", Category::Tool, "tool.run");
        e.gen_ai.tool_name = Some("get_weather".into());
        e.gen_ai.temperature = Some(1.0);
        e.attributes.insert(
            "gen_ai.tool.call.arguments".into(),
            "{\"city\":\"Oslo\"}".into(),
        );
        e
    };
    let events = [rich, minimal, odd_trace, tool];
    let records = events.iter().map(audit_record).collect();
    let request = logs_request(vec![(Vec::new(), records)]);
    let c = convert_logs(&request, &anonymous(), &options(Unmapped::Reject));
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    assert_eq!(c.records, events.len());
    let got: Vec<AuditEvent> = c.events.into_iter().map(|(_, e)| e).collect();
    assert_eq!(got, events);
}

#[test]
fn service_from_the_resource_when_the_record_has_none() {
    let e = rich_event();
    let mut log = to_otlp(&e);
    let service_keys = [
        "service.name",
        "service.version",
        "deployment.environment.name",
        "host.name",
    ];
    log.attributes
        .retain(|(k, _)| !service_keys.contains(&k.as_str()));
    let res = proto_attributes(&resource_attributes(&e.service));
    let request = logs_request(vec![(res, vec![proto_log(&log)])]);
    let got = only_event(convert_logs(
        &request,
        &anonymous(),
        &options(Unmapped::Drop),
    ));
    assert_eq!(got, e);
}

#[test]
fn indexes_count_records_across_resources_and_scopes() {
    let a = rich_event();
    let mut b = rich_event();
    b.event_id = Uuid::now_v7();
    let noise = LogRecord {
        time_unix_nano: START,
        severity_number: 9,
        body: Some(str_value("GET /health 200")),
        attributes: vec![kvs("http.route", "/health")],
        ..LogRecord::default()
    };
    let mut bad = to_otlp(&a);
    bad.attributes.retain(|(k, _)| k != "audit.action");
    let mut request = logs_request(vec![
        (Vec::new(), vec![noise.clone(), audit_record(&a)]),
        (Vec::new(), vec![proto_log(&bad)]),
    ]);
    // A second scope in the second resource.
    request.resource_logs[1].scope_logs.push(ScopeLogs {
        scope: None,
        log_records: vec![noise, audit_record(&b)],
        schema_url: String::new(),
    });
    let c = convert_logs(&request, &anonymous(), &options(Unmapped::Reject));
    assert_eq!(c.records, 5);
    let indexes: Vec<usize> = c.events.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [1, 4]);
    assert_eq!(c.events[0].1, a);
    assert_eq!(c.events[1].1, b);
    let rejected: Vec<(usize, &str)> = c.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(rejected, [(0, "unmapped"), (2, "mapping"), (3, "unmapped")]);
    assert_eq!(c.rejected[1].message, "audit.action is required");
}

#[test]
fn tenants_of_otel_audit_records() {
    let e = rich_event();
    let request = logs_request(vec![(Vec::new(), vec![audit_record(&e)])]);
    let opts = options(Unmapped::Drop);

    // No authenticated tenant: the payload's tenant stands.
    assert_eq!(
        only_event(convert_logs(&request, &anonymous(), &opts)).tenant,
        "acme-prod"
    );
    // The authenticated tenant, named by the payload: accepted.
    assert_eq!(
        only_event(convert_logs(&request, &authenticated("acme-prod"), &opts)),
        e
    );
    // Another tenant: rejected, naming both.
    let r = only_rejection(convert_logs(&request, &authenticated("globex"), &opts));
    assert_eq!(r.reason, convert::reason::TENANT_MISMATCH);
    assert_eq!(
        r.message,
        "audit.tenant \"acme-prod\" differs from the authenticated tenant \"globex\""
    );
}

#[test]
fn tenants_of_genai_telemetry() {
    let request = traces_request(
        python_resource(),
        "x",
        vec![span("chat m", vec![kvs("gen_ai.request.model", "m")])],
    );
    let opts = options(Unmapped::Drop);
    let e = only_event(convert_traces(&request, &anonymous(), &opts));
    assert_eq!(e.tenant, "default");
    let e = only_event(convert_traces(&request, &authenticated("acme"), &opts));
    assert_eq!(e.tenant, "acme");
}

// ---------------------------------------------------------------------------
// GenAI telemetry of other SDKs

/// A chat completion span as opentelemetry-instrumentation-openai-v2 (Python)
/// emits it.
fn openai_v2_chat_span() -> Span {
    span(
        "chat gpt-4o-mini",
        vec![
            kvs("gen_ai.operation.name", "chat"),
            kvs("gen_ai.system", "openai"),
            kvs("gen_ai.request.model", "gpt-4o-mini"),
            kvd("gen_ai.request.temperature", 0.2),
            kvi("gen_ai.request.max_tokens", 256),
            kvs("server.address", "api.openai.com"),
            kvi("server.port", 443),
            kvs("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            kvs("gen_ai.response.id", "chatcmpl-AbC123"),
            kv(
                "gen_ai.response.finish_reasons",
                array(vec![str_value("stop")]),
            ),
            kvs("gen_ai.openai.response.service_tier", "default"),
            kvi("gen_ai.usage.input_tokens", 24),
            kvi("gen_ai.usage.output_tokens", 7),
        ],
    )
}

#[test]
fn openai_v2_chat_span_fills_the_typed_columns() {
    let request = traces_request(
        python_resource(),
        "opentelemetry.instrumentation.openai_v2",
        vec![openai_v2_chat_span()],
    );
    let e = only_event(convert_traces(
        &request,
        &authenticated("acme"),
        &options(Unmapped::Drop),
    ));
    e.validate().expect("valid");
    assert_eq!(e.category, Category::Inference);
    assert_eq!(e.action, "gen_ai.chat");
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(e.tenant, "acme");
    assert_eq!(e.time.timestamp_nanos_opt(), Some(START as i64));
    assert_eq!(e.duration_ns, Some(842_000_000));
    assert_eq!(e.service.name, "support-bot");
    assert_eq!(e.service.version.as_deref(), Some("3.2.1"));
    assert_eq!(e.service.environment.as_deref(), Some("production"));
    assert_eq!(e.service.host.as_deref(), Some("ip-10-0-3-17"));
    let g = &e.gen_ai;
    assert_eq!(g.operation.as_deref(), Some("chat"));
    assert_eq!(g.provider.as_deref(), Some("openai"));
    assert_eq!(g.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(g.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(g.input_tokens, Some(24));
    assert_eq!(g.output_tokens, Some(7));
    assert_eq!(g.temperature, Some(0.2));
    assert_eq!(
        e.trace.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(e.trace.span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(e.trace.parent_span_id.as_deref(), Some("53995c3f42cd8ad8"));
    let expected: BTreeMap<String, String> = [
        ("gen_ai.openai.response.service_tier", "default"),
        ("gen_ai.request.max_tokens", "256"),
        ("gen_ai.response.finish_reasons", "[\"stop\"]"),
        ("gen_ai.response.id", "chatcmpl-AbC123"),
        ("otel.scope.name", "opentelemetry.instrumentation.openai_v2"),
        ("otel.scope.version", "2.1b0"),
        ("server.address", "api.openai.com"),
        ("server.port", "443"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(e.attributes, expected);
    assert!(e.redactions.is_empty());
    assert_eq!(e.event_id.get_version_num(), 7);
}

#[test]
fn a_retried_span_keeps_its_event_id() {
    let request = traces_request(python_resource(), "x", vec![openai_v2_chat_span()]);
    let opts = options(Unmapped::Drop);
    let a = only_event(convert_traces(&request, &anonymous(), &opts));
    let b = only_event(convert_traces(&request, &anonymous(), &opts));
    assert_eq!(a.event_id, b.event_id);
    let mut other = openai_v2_chat_span();
    other.span_id = vec![9; 8];
    let c = only_event(convert_traces(
        &traces_request(python_resource(), "x", vec![other]),
        &anonymous(),
        &opts,
    ));
    assert_ne!(a.event_id, c.event_id);
}

/// The message events opentelemetry-instrumentation-openai-v2 emits as log
/// records, with the content in the body.
#[test]
fn openai_v2_message_events() {
    let record = |name: &str, body: AnyValue| LogRecord {
        time_unix_nano: START,
        observed_time_unix_nano: START + 10,
        severity_number: 9,
        body: Some(body),
        attributes: vec![kvs("gen_ai.system", "openai")],
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        event_name: name.into(),
        ..LogRecord::default()
    };
    let user = record(
        "gen_ai.user.message",
        kvlist(vec![kvs("content", "What is the weather in Oslo?")]),
    );
    let choice = record(
        "gen_ai.choice",
        kvlist(vec![
            kvi("index", 0),
            kvs("finish_reason", "stop"),
            kv(
                "message",
                kvlist(vec![
                    kvs("role", "assistant"),
                    kvs("content", "Sunny, 21 °C."),
                ]),
            ),
        ]),
    );
    let request = logs_request(vec![(python_resource(), vec![user.clone(), choice])]);
    let c = convert_logs(&request, &anonymous(), &options(Unmapped::Reject));
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    let events: Vec<AuditEvent> = c.events.into_iter().map(|(_, e)| e).collect();
    assert_eq!(events.len(), 2);
    let (u, ch) = (&events[0], &events[1]);
    for e in &events {
        e.validate().expect("valid");
        assert_eq!(e.category, Category::Inference);
        assert_eq!(e.gen_ai.provider.as_deref(), Some("openai"));
        assert_eq!(e.service.name, "support-bot");
        assert_eq!(e.trace.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(e.trace.parent_span_id, None);
        assert_eq!(e.duration_ns, None);
    }
    assert_eq!(u.action, "gen_ai.user.message");
    assert_eq!(
        u.attributes["gen_ai.input.messages"],
        r#"{"content":"What is the weather in Oslo?"}"#
    );
    assert_eq!(ch.action, "gen_ai.choice");
    assert_eq!(
        ch.attributes["gen_ai.output.messages"],
        r#"{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Sunny, 21 °C."}}"#
    );
    assert_ne!(u.event_id, ch.event_id);
    // A retried record gets the same id.
    let again = logs_request(vec![(python_resource(), vec![user])]);
    let u2 = only_event(convert_logs(&again, &anonymous(), &options(Unmapped::Drop)));
    assert_eq!(u2.event_id, u.event_id);
}

/// An OpenLLMetry (traceloop) span: older attribute names, and the
/// conversation flattened into indexed attributes.
fn openllmetry_span() -> Span {
    span(
        "openai.chat",
        vec![
            kvs("llm.request.type", "chat"),
            kvs("gen_ai.system", "openai"),
            kvs("gen_ai.request.model", "gpt-4"),
            kvs("gen_ai.response.model", "gpt-4-0613"),
            kvs("gen_ai.openai.api_base", "https://api.openai.com/v1/"),
            kvb("llm.is_streaming", false),
            kvs("gen_ai.prompt.0.role", "system"),
            kvs("gen_ai.prompt.0.content", "You are a helpful assistant."),
            kvs("gen_ai.prompt.1.role", "user"),
            kvs("gen_ai.prompt.1.content", &format!("My card is {CANARY}")),
            kvs("gen_ai.completion.0.role", "assistant"),
            kvs("gen_ai.completion.0.finish_reason", "stop"),
            kvs("gen_ai.completion.0.content", &format!("Noted: {CANARY}")),
            kvi("gen_ai.usage.prompt_tokens", 30),
            kvi("gen_ai.usage.completion_tokens", 12),
            kvi("llm.usage.total_tokens", 42),
            kvs("traceloop.workflow.name", "support"),
            kvs("traceloop.entity.path", "answer"),
        ],
    )
}

fn redactor() -> Redactor {
    Redactor::default_with_key("k1", &[0x42; 32]).expect("redactor")
}

#[test]
fn openllmetry_span_fills_the_typed_columns_and_its_content_is_redacted() {
    let request = traces_request(
        vec![kvs("service.name", "rag-api")],
        "opentelemetry.instrumentation.openai",
        vec![openllmetry_span()],
    );
    let mut e = only_event(convert_traces(
        &request,
        &anonymous(),
        &options(Unmapped::Drop),
    ));
    assert_eq!(e.action, "gen_ai.chat");
    assert_eq!(e.gen_ai.operation.as_deref(), Some("chat"));
    assert_eq!(e.gen_ai.provider.as_deref(), Some("openai"));
    assert_eq!(e.gen_ai.request_model.as_deref(), Some("gpt-4"));
    assert_eq!(e.gen_ai.response_model.as_deref(), Some("gpt-4-0613"));
    assert_eq!(e.gen_ai.input_tokens, Some(30));
    assert_eq!(e.gen_ai.output_tokens, Some(12));
    assert_eq!(e.attributes["llm.usage.total_tokens"], "42");
    assert_eq!(e.attributes["llm.is_streaming"], "false");
    assert_eq!(
        e.attributes["gen_ai.prompt"],
        format!(
            r#"[{{"content":"You are a helpful assistant.","role":"system"}},{{"content":"My card is {CANARY}","role":"user"}}]"#
        )
    );
    let prompt = e.attributes["gen_ai.prompt"].clone();
    assert!(!e.attributes.keys().any(|k| k.starts_with("gen_ai.prompt.")));

    // The pipeline's default policy digests the gathered conversation.
    let r = redactor();
    r.redact_event(&mut e);
    e.validate().expect("valid");
    assert!(!format!("{e:?}").contains(CANARY));
    let fields: Vec<&str> = e.content_digests.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["gen_ai.completion", "gen_ai.prompt"]);
    let Redacted::Digest(d) = r.redact_field("gen_ai.prompt", &prompt).value else {
        panic!("content is digested");
    };
    assert_eq!(e.content_digests[1], d);
}

#[test]
fn tool_spans() {
    let arguments = kvlist(vec![
        kvs("city", "Oslo"),
        kv("days", any(Value::IntValue(3))),
    ]);
    let execute = span(
        "execute_tool get_weather",
        vec![
            kvs("gen_ai.operation.name", "execute_tool"),
            kvs("gen_ai.tool.name", "get_weather"),
            kvs("gen_ai.tool.call.id", "call_8s7d"),
            kvs("gen_ai.tool.type", "function"),
            kv("gen_ai.tool.call.arguments", arguments),
            kvs("gen_ai.tool.call.result", "{\"temp\":21}"),
            kvs("gen_ai.agent.name", "travel-agent"),
            kvs("gen_ai.conversation.id", "conv_5j66UpCpwteGg4YSxUnt7lPY"),
        ],
    );
    // No operation, a tool name and no model: a tool event named by the span.
    let mut bare = span(
        "weather lookup",
        vec![kvs("gen_ai.tool.name", "get_weather")],
    );
    bare.span_id = vec![7; 8];
    let request = traces_request(python_resource(), "agents", vec![execute, bare]);
    let c = convert_traces(&request, &anonymous(), &options(Unmapped::Drop));
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    let e = &c.events[0].1;
    e.validate().expect("valid");
    assert_eq!(e.category, Category::Tool);
    assert_eq!(e.action, "gen_ai.execute_tool");
    assert_eq!(e.gen_ai.tool_name.as_deref(), Some("get_weather"));
    assert_eq!(e.gen_ai.agent_name.as_deref(), Some("travel-agent"));
    assert_eq!(
        e.gen_ai.conversation_id.as_deref(),
        Some("conv_5j66UpCpwteGg4YSxUnt7lPY")
    );
    assert_eq!(
        e.attributes["gen_ai.tool.call.arguments"],
        r#"{"city":"Oslo","days":3}"#
    );
    assert_eq!(e.attributes["gen_ai.tool.call.result"], "{\"temp\":21}");
    assert_eq!(e.attributes["gen_ai.tool.call.id"], "call_8s7d");
    let bare = &c.events[1].1;
    assert_eq!(bare.category, Category::Tool);
    assert_eq!(bare.action, "weather lookup");
}

#[test]
fn error_spans() {
    let mut failed = openai_v2_chat_span();
    failed.attributes.push(kvs("error.type", "RateLimitError"));
    failed.status = Some(Status {
        message: "Error code: 429 - rate limit reached".into(),
        code: StatusCode::Error as i32,
    });
    // An error status with only an `exception` event.
    let mut thrown = span("chat gpt-4o", vec![kvs("gen_ai.operation.name", "chat")]);
    thrown.span_id = vec![5; 8];
    thrown.status = Some(Status {
        message: String::new(),
        code: StatusCode::Error as i32,
    });
    thrown.events.push(Event {
        time_unix_nano: START + 5,
        name: "exception".into(),
        attributes: vec![
            kvs("exception.type", "openai.APITimeoutError"),
            kvs("exception.message", "Request timed out."),
            kvs(
                "exception.stacktrace",
                "Traceback (most recent call last): ...",
            ),
        ],
        dropped_attributes_count: 0,
    });
    // An OK status with a message: the message is not an error.
    let mut ok = openai_v2_chat_span();
    ok.span_id = vec![6; 8];
    ok.status = Some(Status {
        message: "fine".into(),
        code: StatusCode::Ok as i32,
    });
    let request = traces_request(python_resource(), "x", vec![failed, thrown, ok]);
    let c = convert_traces(&request, &anonymous(), &options(Unmapped::Drop));
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    let e = &c.events[0].1;
    e.validate().expect("valid");
    assert_eq!(e.outcome, Outcome::Failure);
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.error.kind.as_deref(), Some("RateLimitError"));
    assert_eq!(
        e.error.message.as_deref(),
        Some("Error code: 429 - rate limit reached")
    );
    let t = &c.events[1].1;
    assert_eq!(t.outcome, Outcome::Failure);
    assert_eq!(t.error.kind.as_deref(), Some("openai.APITimeoutError"));
    assert_eq!(t.error.message, None);
    assert_eq!(t.attributes["exception.message"], "Request timed out.");
    let ok = &c.events[2].1;
    assert_eq!(ok.outcome, Outcome::Success);
    assert_eq!(ok.error.message, None);
}

#[test]
fn genai_log_records_without_an_event_name() {
    let failed = LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: START,
        severity_number: 13,
        body: Some(str_value("model call failed")),
        attributes: vec![
            kvs("gen_ai.request.model", "claude-sonnet-4"),
            kvs("error.type", "overloaded_error"),
        ],
        ..LogRecord::default()
    };
    let request = logs_request(vec![(python_resource(), vec![failed])]);
    let e = only_event(convert_logs(
        &request,
        &anonymous(),
        &options(Unmapped::Drop),
    ));
    e.validate().expect("valid");
    assert_eq!(e.action, "gen_ai.log");
    assert_eq!(e.time.timestamp_nanos_opt(), Some(START as i64));
    assert_eq!(e.outcome, Outcome::Failure);
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.error.kind.as_deref(), Some("overloaded_error"));
    assert_eq!(e.attributes["log.body"], "model call failed");
    assert_eq!(e.trace.trace_id, None);
}

// ---------------------------------------------------------------------------
// Unmapped, malformed, over the limits

#[test]
fn unmapped_records_are_dropped_or_rejected() {
    let plain_span = span("GET /health", vec![kvs("http.request.method", "GET")]);
    let genai = openai_v2_chat_span();
    let traces_req = traces_request(python_resource(), "x", vec![plain_span, genai]);
    let plain_log = LogRecord {
        time_unix_nano: START,
        body: Some(str_value("hello")),
        ..LogRecord::default()
    };
    let logs_req = logs_request(vec![(
        python_resource(),
        vec![plain_log.clone(), plain_log],
    )]);

    let c = convert_traces(&traces_req, &anonymous(), &options(Unmapped::Drop));
    assert_eq!((c.records, c.unmapped, c.events.len()), (2, 1, 1));
    assert!(c.rejected.is_empty());
    assert_eq!(c.events[0].0, 1);
    let c = convert_logs(&logs_req, &anonymous(), &options(Unmapped::Drop));
    assert_eq!((c.records, c.unmapped, c.events.len()), (2, 2, 0));

    let c = convert_traces(&traces_req, &anonymous(), &options(Unmapped::Reject));
    assert_eq!(c.unmapped, 0);
    assert_eq!(c.rejected.len(), 1);
    assert_eq!(c.rejected[0].index, 0);
    assert_eq!(c.rejected[0].reason, convert::reason::UNMAPPED);
    assert_eq!(c.rejected[0].message, "span has no gen_ai.* attributes");
    let c = convert_logs(&logs_req, &anonymous(), &options(Unmapped::Reject));
    let indexes: Vec<usize> = c.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1]);
    assert!(c.rejected.iter().all(|r| r.reason == "unmapped"));
}

#[test]
fn malformed_ids_are_rejected_naming_the_field() {
    let opts = options(Unmapped::Drop);
    let mut log = audit_record(&rich_event());
    log.trace_id = vec![1; 5];
    let r = only_rejection(convert_logs(
        &logs_request(vec![(Vec::new(), vec![log])]),
        &anonymous(),
        &opts,
    ));
    assert_eq!(r.reason, "mapping");
    assert_eq!(r.message, "trace_id is invalid: expected 16 bytes, got 5");

    let mut log = audit_record(&rich_event());
    log.span_id = vec![1; 16];
    let r = only_rejection(convert_logs(
        &logs_request(vec![(Vec::new(), vec![log])]),
        &anonymous(),
        &opts,
    ));
    assert_eq!(r.message, "span_id is invalid: expected 8 bytes, got 16");

    type BreakIt = fn(&mut Span);
    let cases: Vec<(BreakIt, &str)> = vec![
        (
            |s| s.span_id = vec![1; 3],
            "span_id is invalid: expected 8 bytes, got 3",
        ),
        (|s| s.trace_id.clear(), "trace_id is required"),
        (
            |s| s.trace_id = vec![0; 16],
            "trace_id is invalid: all zeros",
        ),
        (
            |s| s.parent_span_id = vec![1; 9],
            "parent_span_id is invalid: expected 8 bytes, got 9",
        ),
        (
            |s| s.start_time_unix_nano = 0,
            "start_time_unix_nano is required",
        ),
    ];
    for (break_it, message) in cases {
        let mut s = openai_v2_chat_span();
        break_it(&mut s);
        let r = only_rejection(convert_traces(
            &traces_request(python_resource(), "x", vec![s]),
            &anonymous(),
            &opts,
        ));
        assert_eq!((r.reason, r.message.as_str()), ("mapping", message));
    }
    // All-zero ids on a log record mean "none".
    let mut log = audit_record(&rich_event());
    log.trace_id = vec![0; 16];
    log.span_id = vec![0; 8];
    let e = only_event(convert_logs(
        &logs_request(vec![(Vec::new(), vec![log])]),
        &anonymous(),
        &opts,
    ));
    assert_eq!((e.trace.trace_id, e.trace.span_id), (None, None));
}

#[test]
fn over_limit_telemetry_is_kept_within_the_limits() {
    let big = format!(
        "[{{\"role\":\"user\",\"content\":\"{CANARY} {}\"}}]",
        "x".repeat(40_000)
    );
    let long_text = "y".repeat(MAX_ATTRIBUTE_VALUE_BYTES + 100);
    let mut attributes = vec![
        kvs("gen_ai.operation.name", "chat"),
        kvs("gen_ai.request.model", &"m".repeat(300)),
        kvs("gen_ai.input.messages", &big),
        kvs("a.notes", &long_text),
        kvs(&"k".repeat(300), "v"),
    ];
    for i in 0..MAX_ATTRIBUTES - 3 {
        attributes.push(kvs(&format!("custom.{i:03}"), "v"));
    }
    let mut s = span(&"s".repeat(400), attributes);
    s.status = Some(Status {
        message: "e".repeat(10_000),
        code: StatusCode::Error as i32,
    });
    let request = traces_request(python_resource(), "x", vec![s]);
    let mut e = only_event(convert_traces(
        &request,
        &anonymous(),
        &options(Unmapped::Drop),
    ));

    // Converted: within the count limit (the long key, the scope's two
    // attributes and the last custom one are left out, `gen_ai.*` are
    // kept), values whole for the policy.
    assert_eq!(e.attributes.len(), MAX_ATTRIBUTES);
    assert!(!e.attributes.contains_key("custom.252"));
    assert!(!e.attributes.contains_key("otel.scope.name"));
    assert_eq!(e.attributes["otel_audit.dropped_attributes"], "4");
    assert_eq!(e.action, "gen_ai.chat");
    assert_eq!(e.gen_ai.request_model, None);
    assert_eq!(e.attributes["gen_ai.request.model"], "m".repeat(300));
    assert_eq!(e.attributes["gen_ai.input.messages"], big);
    assert_eq!(e.attributes["a.notes"], long_text);

    // After the pipeline's policy: valid; the content digest covers the
    // whole value; the long plain value is cut and recorded.
    let r = redactor();
    r.redact_event(&mut e);
    e.validate().expect("valid after the policy");
    let Redacted::Digest(d) = r.redact_field("gen_ai.input.messages", &big).value else {
        panic!("content is digested");
    };
    assert_eq!(e.content_digests, [d]);
    assert_eq!(e.attributes["a.notes"].len(), MAX_ATTRIBUTE_VALUE_BYTES);
    assert!(
        e.redactions
            .iter()
            .any(|r| r.field == "a.notes" && r.method == RedactionMethod::Truncate)
    );
    assert!(!format!("{e:?}").contains(CANARY));

    // A long span name (no operation) is cut to the action's limit.
    let request = traces_request(
        python_resource(),
        "x",
        vec![span(&"s".repeat(400), vec![kvs("gen_ai.system", "openai")])],
    );
    let e = only_event(convert_traces(
        &request,
        &anonymous(),
        &options(Unmapped::Drop),
    ));
    e.validate().expect("valid");
    assert_eq!(e.action, "s".repeat(256));
    assert_eq!(e.redactions[0].field, "action");
}

/// Every rejection of records whose values hold the canary: the messages
/// name attributes and fields, never the values.
#[test]
fn rejection_messages_never_contain_values() {
    let base = rich_event();
    let mut records: Vec<LogRecord> = Vec::new();
    let mut with = |key: &str, value: OtlpValue| {
        let mut log = to_otlp(&base);
        match log.attributes.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => log.attributes.push((key.to_owned(), value)),
        }
        log.attributes
            .push(("note.secret".into(), OtlpValue::Str(CANARY.into())));
        records.push(proto_log(&log));
    };
    let s = |t: &str| OtlpValue::Str(t.to_owned());
    let canary = s(CANARY);
    with("audit.event_id", canary.clone());
    with("audit.outcome", canary.clone());
    with("audit.category", canary.clone());
    with("audit.actor.type", canary.clone());
    with("audit.tenant", OtlpValue::Int(7));
    with("audit.duration_ns", canary.clone());
    with("audit.typo", canary.clone());
    with("audit.safety.passed", canary.clone());
    with(
        "audit.safety.detectors",
        OtlpValue::Array(vec![OtlpValue::Int(1), canary.clone()]),
    );
    with(
        "audit.redactions",
        OtlpValue::Array(vec![OtlpValue::KvList(vec![
            ("field".into(), s("f")),
            ("method".into(), canary.clone()),
        ])]),
    );
    with(
        "audit.content_digests",
        OtlpValue::Array(vec![OtlpValue::KvList(vec![
            ("field".into(), canary.clone()),
            ("algorithm".into(), s("sha256")),
            (
                "digest".into(),
                OtlpValue::Bytes(CANARY.as_bytes().to_vec()),
            ),
        ])]),
    );
    with(
        "audit.sealed_content",
        OtlpValue::Array(vec![OtlpValue::KvList(vec![(
            "field".into(),
            canary.clone(),
        )])]),
    );
    with("audit.attr.note.secret", canary.clone());
    with("http.route", canary.clone());
    with("service.name", OtlpValue::Array(vec![canary.clone()]));
    let mut odd_name = to_otlp(&base);
    odd_name.event_name = format!("audit.{CANARY}");
    records.push(proto_log(&odd_name));
    let mut disagreeing = to_otlp(&base);
    disagreeing.event_name = "audit.tool".into();
    records.push(proto_log(&disagreeing));
    let mut severity = to_otlp(&base);
    severity.severity_number = 0;
    severity.severity_text = CANARY.into();
    records.push(proto_log(&severity));
    let mut no_time = to_otlp(&base);
    no_time.time_unix_nano = 0;
    records.push(proto_log(&no_time));
    let mut bad_ids = audit_record(&base);
    bad_ids.trace_id = CANARY.as_bytes().to_vec();
    records.push(bad_ids);
    let mut genai_no_time = LogRecord {
        body: Some(str_value(CANARY)),
        attributes: vec![kvs("gen_ai.prompt", CANARY)],
        ..LogRecord::default()
    };
    records.push(genai_no_time.clone());
    genai_no_time.time_unix_nano = START;
    genai_no_time.span_id = CANARY.as_bytes().to_vec();
    records.push(genai_no_time);
    let n = records.len();
    let request = logs_request(vec![(Vec::new(), records)]);
    let c = convert_logs(&request, &anonymous(), &options(Unmapped::Reject));
    assert_eq!(c.rejected.len(), n, "{:?}", c.events);

    let mut bad_span = openai_v2_chat_span();
    bad_span.attributes.push(kvs("gen_ai.prompt", CANARY));
    bad_span.trace_id = CANARY.as_bytes().to_vec();
    let mut unmapped = span(CANARY, vec![kvs("x", CANARY)]);
    unmapped.trace_id = CANARY.as_bytes().to_vec();
    let t = convert_traces(
        &traces_request(python_resource(), "x", vec![bad_span, unmapped]),
        &authenticated("acme"),
        &options(Unmapped::Reject),
    );
    assert_eq!(t.rejected.len(), 2);

    for r in c.rejected.iter().chain(&t.rejected) {
        assert!(!r.message.contains(CANARY), "{r:?}");
        assert!(!r.message.is_empty());
    }
    // And they say what is wrong.
    let messages: Vec<&str> = c.rejected.iter().map(|r| r.message.as_str()).collect();
    assert!(messages.contains(&"audit.event_id is invalid: not a UUID"));
    assert!(messages.contains(&"audit.typo is not an attribute of the otel-audit mapping"));
    assert!(messages.contains(&"http.route appears more than once"));
    assert!(messages.contains(&"time_unix_nano is required"));
}

// ---------------------------------------------------------------------------
// Requests converted straight from their protobuf bytes

use prost::Message as _;

/// What the receivers do with a protobuf body: the in-place reader, else
/// prost and [`logs`]. `Err` is prost's decoding error.
fn convert_bytes(
    bytes: &[u8],
    principal: &Principal,
    options: &ConvertOptions,
) -> (bool, Result<String, String>) {
    match convert::logs_from_wire(bytes, principal, options) {
        Some(c) => (true, Ok(format!("{c:?}"))),
        None => (
            false,
            ExportLogsServiceRequest::decode(bytes)
                .map(|r| format!("{:?}", logs(r, principal, options)))
                .map_err(|e| e.to_string()),
        ),
    }
}

/// The reference: prost, then [`logs`].
fn convert_decoded(
    bytes: &[u8],
    principal: &Principal,
    options: &ConvertOptions,
) -> Result<String, String> {
    ExportLogsServiceRequest::decode(bytes)
        .map(|r| format!("{:?}", logs(r, principal, options)))
        .map_err(|e| e.to_string())
}

/// Requests of otel-audit records of every shape: several resources (the
/// service on the record or only on the resource), every attribute type,
/// records that fail their mapping, and empty values.
fn audit_requests() -> Vec<ExportLogsServiceRequest> {
    let rich = audit_record(&rich_event());
    let mut plain = AuditEvent::new("acme-prod", "svc", Category::Admin, "user.create");
    plain.time = Utc.timestamp_opt(1_760_000_001, 0).single().expect("time");
    let plain = audit_record(&plain);
    // Service only on the resource.
    let mut no_service = plain.clone();
    no_service
        .attributes
        .retain(|kv| !kv.key.starts_with("service."));
    // A bad span id (the mapping rejects the record, not the request).
    let mut bad_id = plain.clone();
    bad_id.span_id = vec![1, 2, 3];
    // An unknown audit.* attribute, an attribute of every type, an empty
    // value and a string index (both skipped), a body, flags.
    let mut odd = rich.clone();
    odd.attributes.push(kvs("audit.nonsense", "x"));
    let mut typed = plain.clone();
    typed.attributes.extend([
        kvi("retries", -3),
        kvd("score", 0.25),
        kvb("cached", true),
        kv("blob", any(Value::BytesValue(vec![0, 0xff]))),
        kv("list", array(vec![str_value("a"), any(Value::IntValue(2))])),
        kv("map", kvlist(vec![kvs("k", "v"), kvi("n", 1)])),
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            key_strindex: 0,
        },
        KeyValue {
            key: "absent".into(),
            value: None,
            key_strindex: 0,
        },
        kv("strindex", any(Value::StringValueStrindex(4))),
    ]);
    typed.body = Some(str_value("a body"));
    typed.flags = 1;
    typed.dropped_attributes_count = 2;
    // Text beyond ASCII in keys and values, next to values whose bytes are
    // not text (a double, a negative int).
    let mut intl = plain.clone();
    intl.attributes.extend([
        kvs("café", "naïve – 日本語 🚀"),
        kvd("ratio", f64::from_bits(0xc3a9_c3a9_c3a9_c3a9)),
        kvs("é", ""),
        kvi("delta", -1),
        kvs("ascii", "plain"),
        // Lengths on either side of a one-byte varint, and ints of one
        // and ten bytes.
        kvs("len127", &"x".repeat(127)),
        kvs("len128", &"y".repeat(128)),
        kvs(&"k".repeat(128), "long key"),
        kvi("zero", 0),
        kvi("min", i64::MIN),
        kv(
            "nested",
            kvlist(vec![kvs("ключ", "значение"), kvd("x", -0.5)]),
        ),
    ]);
    // Recognised by its audit.event_id only (no event name).
    let mut by_id = plain.clone();
    by_id.event_name = String::new();
    by_id.attributes.push(kvs("otel_audit.category", "admin"));
    // Another tenant (rejected when authenticated as acme-prod).
    let mut other = AuditEvent::new("globex", "svc", Category::Tool, "tool.run");
    other.time = Utc.timestamp_opt(1_760_000_002, 0).single().expect("time");
    let other = audit_record(&other);
    let service = resource_attributes(&rich_event().service)
        .iter()
        .map(|(k, v)| kv(k, proto_value(v)))
        .collect::<Vec<_>>();
    vec![
        logs_request(vec![(service.clone(), vec![rich.clone()])]),
        logs_request(vec![
            (
                service.clone(),
                vec![rich, plain.clone(), no_service.clone()],
            ),
            (python_resource(), vec![no_service.clone(), bad_id, odd]),
            (Vec::new(), vec![no_service, typed, by_id, other, intl]),
        ]),
        logs_request(vec![(python_resource(), vec![plain; 5])]),
        ExportLogsServiceRequest::default(),
    ]
}

#[test]
fn protobuf_bytes_convert_as_the_decoded_request_does() {
    let options = options(Unmapped::Reject);
    for principal in [anonymous(), authenticated("acme-prod")] {
        for (i, request) in audit_requests().iter().enumerate() {
            let bytes = request.encode_to_vec();
            let (in_place, got) = convert_bytes(&bytes, &principal, &options);
            assert!(in_place, "request {i} should be converted in place");
            assert_eq!(
                got,
                convert_decoded(&bytes, &principal, &options),
                "request {i}"
            );
        }
    }
}

/// A request of one resource and one scope holding the encoded log record
/// `record` (which may be one prost would not write).
fn request_of_record(record: &[u8]) -> Vec<u8> {
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &record.to_vec(), &mut scope);
    let mut rl = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut rl);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rl, &mut req);
    req
}

#[test]
fn requests_the_reader_does_not_handle_are_left_to_prost() {
    let options = options(Unmapped::Drop);
    let principal = anonymous();
    let audit = audit_record(&rich_event());
    let genai = LogRecord {
        attributes: vec![kvs("gen_ai.operation.name", "chat")],
        time_unix_nano: START,
        ..LogRecord::default()
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a GenAI record among audit records",
            logs_request(vec![(python_resource(), vec![audit.clone(), genai])]).encode_to_vec(),
        ),
        (
            "an unmapped record",
            logs_request(vec![(Vec::new(), vec![LogRecord::default()])]).encode_to_vec(),
        ),
    ];
    let one = logs_request(vec![(python_resource(), vec![audit])]).encode_to_vec();
    // The same ResourceLogs twice over is fine; a record whose event_name
    // field is repeated (protobuf keeps the last) is not for the reader.
    let mut twice = one.clone();
    twice.extend_from_slice(&one);
    cases.push(("two resource_logs", twice));
    let record = LogRecord {
        event_name: "audit.admin".into(),
        ..LogRecord::default()
    };
    let mut rec_bytes = record.encode_to_vec();
    rec_bytes.extend_from_slice(&[0x62, 0x01, b'x']); // field 12 again: "x"
    cases.push(("a repeated singular field", request_of_record(&rec_bytes)));
    let mut invalid = one.clone();
    let at = invalid
        .windows(6)
        .position(|w| w == b"acme-p")
        .expect("tenant in the bytes");
    invalid[at] = 0xff;
    cases.push(("invalid UTF-8", invalid));
    // A key ending in half a character (C3) followed by an unknown field 16,
    // whose tag 82 01 completes it to `Â`: the key alone is not UTF-8.
    let mut kv_bytes = Vec::new();
    prost::encoding::bytes::encode(1, &b"ab\xc3".to_vec(), &mut kv_bytes);
    kv_bytes.extend_from_slice(&[0x82, 0x01, 0x00]);
    prost::encoding::bytes::encode(2, &str_value("v").encode_to_vec(), &mut kv_bytes);
    assert!(
        std::str::from_utf8(&kv_bytes).is_ok(),
        "UTF-8 across the boundary"
    );
    // The rich record with one more attribute, `KeyValue` bytes as given.
    let with_attribute = |kv_bytes: &Vec<u8>| {
        let mut rec_bytes = audit_record(&rich_event()).encode_to_vec();
        prost::encoding::bytes::encode(6, kv_bytes, &mut rec_bytes);
        request_of_record(&rec_bytes)
    };
    cases.push((
        "a key ending in half a character",
        with_attribute(&kv_bytes),
    ));
    // An attribute of the usual shape (a short key, one short text), read
    // with one UTF-8 check of the whole: invalid in the key, in the text,
    // a text beginning or ending in the middle of a character.
    for (what, key, text) in [
        (
            "a short key that is not UTF-8",
            &b"k\xffey"[..],
            &b"value"[..],
        ),
        (
            "a short text that is not UTF-8",
            &b"key"[..],
            &b"val\xfeue"[..],
        ),
        (
            "a text starting mid-character",
            &b"key"[..],
            &b"\xa9t\xc3\xa9"[..],
        ),
        (
            "a text ending in half a character",
            &b"key"[..],
            &b"t\xc3"[..],
        ),
        (
            "a key ending in half a character before its text",
            &b"k\xc3"[..],
            &b"v"[..],
        ),
    ] {
        let mut value = Vec::new();
        prost::encoding::bytes::encode(1, &text.to_vec(), &mut value);
        let mut kv_bytes = Vec::new();
        prost::encoding::bytes::encode(1, &key.to_vec(), &mut kv_bytes);
        prost::encoding::bytes::encode(2, &value, &mut kv_bytes);
        cases.push((what, with_attribute(&kv_bytes)));
    }
    // A value whose oneof is set twice (protobuf keeps the last): an int
    // then a string, a string then a string.
    for (what, value) in [
        ("an int then a string", &[0x18, 0x01, 0x0a, 0x01, b'x'][..]),
        ("two strings", &[0x0a, 0x01, b'x', 0x0a, 0x01, b'y'][..]),
    ] {
        let mut kv_bytes = Vec::new();
        prost::encoding::bytes::encode(1, &b"twice".to_vec(), &mut kv_bytes);
        prost::encoding::bytes::encode(2, &value.to_vec(), &mut kv_bytes);
        cases.push((what, with_attribute(&kv_bytes)));
    }
    cases.push(("truncated", one[..one.len() - 3].to_vec()));
    for (what, bytes) in cases {
        let (in_place, got) = convert_bytes(&bytes, &principal, &options);
        if what == "two resource_logs" {
            assert!(in_place, "{what}");
        } else {
            assert!(!in_place, "{what}: the reader should give up");
        }
        assert_eq!(got, convert_decoded(&bytes, &principal, &options), "{what}");
    }
}

/// Random damage to valid requests: whatever the reader accepts, prost
/// decodes to the same events; whatever prost refuses, the reader refuses.
#[test]
fn damaged_requests_never_convert_differently() {
    let options = options(Unmapped::Reject);
    let principal = anonymous();
    let originals: Vec<Vec<u8>> = audit_requests()
        .iter()
        .map(prost::Message::encode_to_vec)
        .filter(|b| !b.is_empty())
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut in_place, mut total) = (0, 0);
    for round in 0..3000 {
        let original = &originals[round % originals.len()];
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] = next() as u8,
                1 => bytes[at] ^= 1 << (next() % 8),
                2 => bytes.truncate(at.max(1)),
                _ => bytes.insert(at, next() as u8),
            }
        }
        let (fast, got) = convert_bytes(&bytes, &principal, &options);
        total += 1;
        in_place += usize::from(fast);
        assert_eq!(
            got,
            convert_decoded(&bytes, &principal, &options),
            "round {round}"
        );
    }
    // The damage must leave many requests for the reader, or this test
    // would not exercise it.
    assert!(in_place * 10 > total, "{in_place} of {total} in place");
}
