//! The events the generator sends, built and encoded before the clock starts.
//!
//! Every event is an `inference` audit event as the otel-audit SDK emits it
//! (`otel_audit_event::otlp::to_otlp`): tenant, service, actor, GenAI provider,
//! models, token counts and conversation, W3C trace and span ids, and the raw
//! prompt as the free-form attribute `gen_ai.input.messages`, which the
//! collector's server-side policy replaces by an HMAC digest. That is 15 record
//! attributes and ≈ 650 bytes per encoded `LogRecord` (the issue asks for ≈ 15
//! and ≈ 600).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otel_audit_event::otlp::{OtlpLog, OtlpValue, resource_attributes, to_otlp};
use otel_audit_event::{AuditEvent, Category, Service};
use prost::Message as _;

/// One pre-encoded `ExportLogsServiceRequest`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The protobuf bytes, exactly as sent.
    pub bytes: Bytes,
    /// How many log records (events) it holds.
    pub events: u32,
}

/// Everything the generator sends.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The requests, in sending order.
    pub requests: Vec<Request>,
    /// Total events.
    pub events: u64,
    /// Average encoded size of one `LogRecord`, in bytes.
    pub record_bytes: f64,
    /// Attributes per record.
    pub attributes_per_record: usize,
}

/// The tenant of request `index` when there are `tenants` tenants.
pub fn tenant_name(index: usize, tenants: usize) -> String {
    format!("loadgen-{:02}", index % tenants.max(1))
}

/// Builds `events` events in requests of `batch`, request `i` belonging to
/// tenant `i % tenants`. Deterministic for a given `seed`, except the event
/// ids (UUIDv7) and times, which are the current ones.
pub fn build(events: u64, batch: usize, tenants: usize, seed: u64) -> Workload {
    let mut rng = Rng(seed);
    let service = Service {
        name: "chat-api".into(),
        version: Some("2.14.0".into()),
        environment: Some("production".into()),
        host: Some("chat-api-7d9f8c6b5-x2k4q".into()),
    };
    let resource = Resource {
        attributes: resource_attributes(&service)
            .into_iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "otel-audit".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut requests = Vec::with_capacity(events.div_ceil(batch as u64) as usize);
    let (mut left, mut record_bytes, mut attributes) = (events, 0u64, 0usize);
    while left > 0 {
        let n = left.min(batch as u64) as usize;
        left -= n as u64;
        let tenant = tenant_name(requests.len(), tenants);
        let log_records: Vec<LogRecord> = (0..n)
            .map(|_| log_record(to_otlp(&inference_event(&mut rng, &tenant, &service.name))))
            .collect();
        for r in &log_records {
            record_bytes += r.encoded_len() as u64;
            attributes = r.attributes.len();
        }
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        requests.push(Request {
            bytes: Bytes::from(request.encode_to_vec()),
            events: n as u32,
        });
    }
    Workload {
        requests,
        events,
        record_bytes: record_bytes as f64 / events.max(1) as f64,
        attributes_per_record: attributes,
    }
}

const MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4"),
    ("aws.bedrock", "amazon.nova-pro-v1"),
    ("gcp.vertex_ai", "gemini-2.5-flash"),
];

const PROMPTS: &[&str] = &[
    "Summarise support ticket",
    "Draft a reply to ticket",
    "Translate into German: ticket",
    "Status update for incident",
    "Extract the total of invoice",
];

/// One inference event as an application instrumented with `#[audit]` (or a
/// GenAI instrumentation) produces it, before the collector's policy.
fn inference_event(rng: &mut Rng, tenant: &str, service: &str) -> AuditEvent {
    let mut ev = AuditEvent::new(tenant, service, Category::Inference, "llm.chat");
    let user = rng.below(5000);
    ev.actor.id = Some(format!("user-{user:05}"));
    ev.duration_ns = Some(150_000_000 + rng.below(4_000_000_000) as i64);
    let (provider, model) = MODELS[rng.below(MODELS.len() as u64) as usize];
    let g = &mut ev.gen_ai;
    g.provider = Some(provider.into());
    g.operation = Some("chat".into());
    g.request_model = Some(model.into());
    g.input_tokens = Some(20 + rng.below(4000) as i64);
    g.output_tokens = Some(5 + rng.below(1500) as i64);
    g.conversation_id = Some(format!("conv-{:010x}", rng.next() >> 24));
    ev.trace.trace_id = Some(format!("{:016x}{:016x}", rng.next(), rng.next()));
    ev.trace.span_id = Some(format!("{:016x}", rng.next() | 1));
    let prompt = PROMPTS[rng.below(PROMPTS.len() as u64) as usize];
    ev.attributes.insert(
        "gen_ai.input.messages".into(),
        format!(
            r#"[{{"role":"user","content":"{prompt} {}"}}]"#,
            rng.below(1_000_000)
        ),
    );
    ev
}

/// The OTLP log record of an event mapped by `to_otlp`.
pub fn log_record(log: OtlpLog) -> LogRecord {
    LogRecord {
        time_unix_nano: log.time_unix_nano,
        observed_time_unix_nano: log.observed_time_unix_nano,
        severity_number: log.severity_number,
        severity_text: log.severity_text,
        event_name: log.event_name,
        trace_id: log.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: log.span_id.map(|s| s.to_vec()).unwrap_or_default(),
        attributes: log
            .attributes
            .into_iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        ..Default::default()
    }
}

fn key_value(key: String, value: OtlpValue) -> KeyValue {
    KeyValue {
        key,
        value: Some(any(value)),
        ..Default::default()
    }
}

fn any(value: OtlpValue) -> AnyValue {
    use any_value::Value;
    AnyValue {
        value: Some(match value {
            OtlpValue::Str(s) => Value::StringValue(s),
            OtlpValue::Int(i) => Value::IntValue(i),
            OtlpValue::Double(d) => Value::DoubleValue(d),
            OtlpValue::Bool(b) => Value::BoolValue(b),
            OtlpValue::Bytes(b) => Value::BytesValue(b),
            OtlpValue::Array(items) => Value::ArrayValue(ArrayValue {
                values: items.into_iter().map(any).collect(),
            }),
            OtlpValue::KvList(entries) => Value::KvlistValue(KeyValueList {
                values: entries.into_iter().map(|(k, v)| key_value(k, v)).collect(),
            }),
        }),
    }
}

/// SplitMix64: small, fast and good enough for synthetic field values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_audit_event::otlp::from_otlp;

    fn back(v: &AnyValue) -> OtlpValue {
        use any_value::Value;
        match v.value.as_ref().expect("value") {
            Value::StringValue(s) => OtlpValue::Str(s.clone()),
            Value::IntValue(i) => OtlpValue::Int(*i),
            Value::DoubleValue(d) => OtlpValue::Double(*d),
            Value::BoolValue(b) => OtlpValue::Bool(*b),
            Value::BytesValue(b) => OtlpValue::Bytes(b.clone()),
            Value::ArrayValue(a) => OtlpValue::Array(a.values.iter().map(back).collect()),
            Value::KvlistValue(l) => OtlpValue::KvList(
                l.values
                    .iter()
                    .map(|kv| (kv.key.clone(), back(kv.value.as_ref().unwrap())))
                    .collect(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn attrs(kvs: &[KeyValue]) -> Vec<(String, OtlpValue)> {
        kvs.iter()
            .map(|kv| (kv.key.clone(), back(kv.value.as_ref().unwrap())))
            .collect()
    }

    #[test]
    fn requests_decode_back_to_the_events() {
        let w = build(25, 10, 2, 7);
        assert_eq!(w.requests.len(), 3);
        assert_eq!(
            w.requests.iter().map(|r| r.events).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        for (i, r) in w.requests.iter().enumerate() {
            let req = ExportLogsServiceRequest::decode(r.bytes.clone()).unwrap();
            let rl = &req.resource_logs[0];
            let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
            for rec in &rl.scope_logs[0].log_records {
                let log = OtlpLog {
                    time_unix_nano: rec.time_unix_nano,
                    observed_time_unix_nano: rec.observed_time_unix_nano,
                    severity_number: rec.severity_number,
                    severity_text: rec.severity_text.clone(),
                    event_name: rec.event_name.clone(),
                    trace_id: rec.trace_id.as_slice().try_into().ok(),
                    span_id: rec.span_id.as_slice().try_into().ok(),
                    attributes: attrs(&rec.attributes),
                };
                let ev = from_otlp(&resource, &log).unwrap();
                ev.validate().unwrap();
                assert_eq!(ev.tenant, tenant_name(i, 2));
                assert!(ev.attributes.contains_key("gen_ai.input.messages"));
                assert!(ev.trace.trace_id.is_some() && ev.trace.span_id.is_some());
            }
        }
    }

    #[test]
    fn records_have_the_documented_shape() {
        let w = build(200, 100, 1, 1);
        assert_eq!(w.attributes_per_record, 15);
        assert!(
            (560.0..660.0).contains(&w.record_bytes),
            "{} bytes per record",
            w.record_bytes
        );
    }
}
