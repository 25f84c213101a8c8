//! The mapping between an [`AuditEvent`] and one OpenTelemetry log record.
//!
//! The audit layer exports every event as one OTLP `LogRecord`; the collector
//! decodes OTLP logs and maps them back with [`from_otlp`], which returns
//! exactly the event that [`to_otlp`] was given (round trip). This module is
//! plain data: it has no dependency on any OpenTelemetry crate, so the SDK side
//! (`otel-audit`) and the collector side (opentelemetry-proto types) convert to
//! and from [`OtlpLog`] / [`OtlpValue`] themselves.
//!
//! `docs/OTLP.md` is the normative description of the mapping, precise enough
//! for another SDK to emit records the collector accepts. In short:
//!
//! - the event time is the record's `time_unix_nano`; the severity is the
//!   record's severity number and text; the trace and span ids are the
//!   record's `trace_id` / `span_id`; the event name is `audit.<category>`;
//! - every other field is a record attribute: OpenTelemetry semantic-convention
//!   names where they exist (`service.name`, `enduser.id`, `gen_ai.*`,
//!   `error.type`, ...), `audit.*` for the rest, and the event's free-form
//!   attributes as `audit.attr.<key>` strings;
//! - `service.*` is carried on every record; a record without `service.name`
//!   takes the service from the resource instead.
//!
//! ```
//! use otel_audit_event::otlp::{from_otlp, to_otlp};
//! use otel_audit_event::{AuditEvent, Category};
//!
//! let mut event = AuditEvent::new("acme", "chat-api", Category::Inference, "llm.chat");
//! event.gen_ai.request_model = Some("gpt-4o".into());
//! let log = to_otlp(&event);
//! assert_eq!(log.event_name, "audit.inference");
//! assert_eq!(from_otlp(&[], &log)?, event);
//! # Ok::<(), otel_audit_event::otlp::MappingError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ParseEnumError;
use crate::model::{
    Actor, AuditEvent, Category, ContentDigest, ErrorInfo, GenAi, Redaction, Safety, SealedContent,
    Service, Severity, Target, TraceContext,
};

/// An OTLP `AnyValue`, without the OpenTelemetry types.
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpValue {
    /// `string_value`.
    Str(String),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `bytes_value`.
    Bytes(Vec<u8>),
    /// `array_value`.
    Array(Vec<OtlpValue>),
    /// `kvlist_value`. Order carries no meaning; keys should be unique.
    KvList(Vec<(String, OtlpValue)>),
}

impl OtlpValue {
    /// The OTLP name of this value's type, as used in [`MappingError::WrongType`].
    pub fn type_name(&self) -> &'static str {
        match self {
            OtlpValue::Str(_) => "string",
            OtlpValue::Int(_) => "int",
            OtlpValue::Double(_) => "double",
            OtlpValue::Bool(_) => "bool",
            OtlpValue::Bytes(_) => "bytes",
            OtlpValue::Array(_) => "array",
            OtlpValue::KvList(_) => "kvlist",
        }
    }

    /// The value as text, for attributes that are kept as free-form strings:
    /// strings as they are, numbers and booleans in their usual notation, bytes
    /// as lower-case hex, arrays and key-value lists as compact JSON.
    pub fn to_text(&self) -> String {
        self.view().to_text()
    }

    /// A borrowed view of this value, for [`from_otlp_ref`].
    pub fn view(&self) -> OtlpValueRef<'_> {
        match self {
            OtlpValue::Str(s) => OtlpValueRef::Str(s),
            OtlpValue::Int(i) => OtlpValueRef::Int(*i),
            OtlpValue::Double(d) => OtlpValueRef::Double(*d),
            OtlpValue::Bool(b) => OtlpValueRef::Bool(*b),
            OtlpValue::Bytes(b) => OtlpValueRef::Bytes(b),
            OtlpValue::Array(items) => OtlpValueRef::Array(items.iter().map(Self::view).collect()),
            OtlpValue::KvList(entries) => OtlpValueRef::KvList(views(entries)),
        }
    }
}

/// An OTLP `AnyValue` whose texts and bytes are borrowed, typically from the
/// protobuf message itself: what a reader that does not copy every string of
/// a request hands to [`from_otlp_ref`]. Only arrays and key-value lists own
/// their (rare) element lists.
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpValueRef<'a> {
    /// `string_value`.
    Str(&'a str),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value`.
    Array(Vec<OtlpValueRef<'a>>),
    /// `kvlist_value`. Order carries no meaning; keys should be unique.
    KvList(Vec<(&'a str, OtlpValueRef<'a>)>),
}

impl OtlpValueRef<'_> {
    /// The OTLP name of this value's type, as used in [`MappingError::WrongType`].
    pub fn type_name(&self) -> &'static str {
        match self {
            OtlpValueRef::Str(_) => "string",
            OtlpValueRef::Int(_) => "int",
            OtlpValueRef::Double(_) => "double",
            OtlpValueRef::Bool(_) => "bool",
            OtlpValueRef::Bytes(_) => "bytes",
            OtlpValueRef::Array(_) => "array",
            OtlpValueRef::KvList(_) => "kvlist",
        }
    }

    /// The value as text, as [`OtlpValue::to_text`] gives it.
    pub fn to_text(&self) -> String {
        match self {
            OtlpValueRef::Str(s) => (*s).to_owned(),
            OtlpValueRef::Int(i) => i.to_string(),
            OtlpValueRef::Double(d) => d.to_string(),
            OtlpValueRef::Bool(b) => b.to_string(),
            OtlpValueRef::Bytes(b) => hex::encode(b),
            other => {
                let mut out = String::new();
                other.write_json(&mut out);
                out
            }
        }
    }

    fn write_json(&self, out: &mut String) {
        match self {
            OtlpValueRef::Str(s) => write_json_string(s, out),
            OtlpValueRef::Int(i) => {
                let _ = write!(out, "{i}");
            }
            OtlpValueRef::Double(d) if d.is_finite() => {
                let _ = write!(out, "{d}");
            }
            OtlpValueRef::Double(d) => write_json_string(&d.to_string(), out),
            OtlpValueRef::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OtlpValueRef::Bytes(b) => {
                out.push('"');
                out.push_str(&hex::encode(b));
                out.push('"');
            }
            OtlpValueRef::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            OtlpValueRef::KvList(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One OTLP log record, without the OpenTelemetry types.
///
/// Body, flags, dropped-attribute counts and the instrumentation scope are not
/// part of the mapping: the exporter leaves them empty and [`from_otlp`]
/// ignores them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OtlpLog {
    /// `time_unix_nano`: when the event happened. `0` means unknown.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`: when the SDK saw it. [`from_otlp`] uses it
    /// only when `time_unix_nano` is `0`; [`to_otlp`] leaves it `0` (the SDK
    /// fills it in).
    pub observed_time_unix_nano: u64,
    /// `severity_number` (OpenTelemetry numbering, 1..=24; 0 = unspecified).
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: String,
    /// `event_name`: `audit.<category>`.
    pub event_name: String,
    /// `trace_id`; `None` when absent (empty or all-zero bytes on the wire).
    pub trace_id: Option<[u8; 16]>,
    /// `span_id`; `None` when absent (empty or all-zero bytes on the wire).
    pub span_id: Option<[u8; 8]>,
    /// `attributes`, in order.
    pub attributes: Vec<(String, OtlpValue)>,
}

/// [`OtlpLog`] with borrowed texts: the input of [`from_otlp_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OtlpLogRef<'s, 'a> {
    /// `time_unix_nano`, as in [`OtlpLog`].
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`, as in [`OtlpLog`].
    pub observed_time_unix_nano: u64,
    /// `severity_number`, as in [`OtlpLog`].
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: &'a str,
    /// `event_name`.
    pub event_name: &'a str,
    /// `trace_id`, as in [`OtlpLog`].
    pub trace_id: Option<[u8; 16]>,
    /// `span_id`, as in [`OtlpLog`].
    pub span_id: Option<[u8; 8]>,
    /// `attributes`, in order.
    pub attributes: &'s [(&'a str, OtlpValueRef<'a>)],
}

/// Key-value pairs with borrowed texts ([`OtlpValue::view`]).
fn views(kvs: &[(String, OtlpValue)]) -> Vec<(&str, OtlpValueRef<'_>)> {
    kvs.iter().map(|(k, v)| (k.as_str(), v.view())).collect()
}

impl OtlpLog {
    /// The record with borrowed texts; `attributes` are the record's
    /// attributes as [`OtlpValue::view`] gives them.
    pub fn view<'s, 'a>(
        &'a self,
        attributes: &'s [(&'a str, OtlpValueRef<'a>)],
    ) -> OtlpLogRef<'s, 'a> {
        OtlpLogRef {
            time_unix_nano: self.time_unix_nano,
            observed_time_unix_nano: self.observed_time_unix_nano,
            severity_number: self.severity_number,
            severity_text: &self.severity_text,
            event_name: &self.event_name,
            trace_id: self.trace_id,
            span_id: self.span_id,
            attributes,
        }
    }
}

/// Why a log record could not be mapped to an [`AuditEvent`]. Every variant
/// names the attribute (or record field) at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    /// A required attribute is absent.
    #[error("{attribute} is required")]
    Missing {
        /// The attribute or record field.
        attribute: String,
    },
    /// An attribute has the wrong OTLP type.
    #[error("{attribute} has type {found}; expected {expected}")]
    WrongType {
        /// The attribute.
        attribute: String,
        /// The expected OTLP type (`string`, `int`, ...).
        expected: &'static str,
        /// The type that was found.
        found: &'static str,
    },
    /// An attribute has the right type but an unusable value.
    #[error("{attribute} is invalid: {reason}")]
    Invalid {
        /// The attribute or record field.
        attribute: String,
        /// What is wrong, and what is expected.
        reason: String,
    },
    /// An attribute's text is not one of its enumeration's values.
    #[error("{attribute}: {source}")]
    Enum {
        /// The attribute.
        attribute: String,
        /// The parse failure, listing the accepted values.
        #[source]
        source: ParseEnumError,
    },
    /// An attribute appears twice (or an event attribute is given two ways).
    #[error("{attribute} appears more than once")]
    Duplicate {
        /// The attribute.
        attribute: String,
    },
    /// An attribute in the reserved `audit.` namespace that the mapping does
    /// not define (usually a typo).
    #[error("{attribute} is not an attribute of the otel-audit mapping")]
    Unknown {
        /// The attribute.
        attribute: String,
    },
}

impl MappingError {
    /// The attribute (or record field) the error is about.
    pub fn attribute(&self) -> &str {
        match self {
            MappingError::Missing { attribute }
            | MappingError::WrongType { attribute, .. }
            | MappingError::Invalid { attribute, .. }
            | MappingError::Enum { attribute, .. }
            | MappingError::Duplicate { attribute }
            | MappingError::Unknown { attribute } => attribute,
        }
    }
}

/// Attribute names of the mapping. `docs/OTLP.md` lists them with their types.
pub mod keys {
    /// `service.name` (string; record or resource).
    pub const SERVICE_NAME: &str = "service.name";
    /// `service.version` (string).
    pub const SERVICE_VERSION: &str = "service.version";
    /// `deployment.environment.name` (string).
    pub const DEPLOYMENT_ENVIRONMENT: &str = "deployment.environment.name";
    /// `host.name` (string).
    pub const HOST_NAME: &str = "host.name";
    /// `audit.event_id` (string, UUID).
    pub const EVENT_ID: &str = "audit.event_id";
    /// `audit.tenant` (string).
    pub const TENANT: &str = "audit.tenant";
    /// `audit.category` (string).
    pub const CATEGORY: &str = "audit.category";
    /// `audit.action` (string).
    pub const ACTION: &str = "audit.action";
    /// `audit.outcome` (string).
    pub const OUTCOME: &str = "audit.outcome";
    /// `audit.duration_ns` (int).
    pub const DURATION_NS: &str = "audit.duration_ns";
    /// `enduser.id` (string): the actor's id.
    pub const ACTOR_ID: &str = "enduser.id";
    /// `audit.actor.type` (string).
    pub const ACTOR_TYPE: &str = "audit.actor.type";
    /// `audit.actor.role` (string).
    pub const ACTOR_ROLE: &str = "audit.actor.role";
    /// `client.address` (string): the actor's address.
    pub const ACTOR_IP: &str = "client.address";
    /// `session.id` (string): the actor's session.
    pub const ACTOR_SESSION: &str = "session.id";
    /// `audit.target.type` (string).
    pub const TARGET_TYPE: &str = "audit.target.type";
    /// `audit.target.id` (string).
    pub const TARGET_ID: &str = "audit.target.id";
    /// `error.type` (string).
    pub const ERROR_TYPE: &str = "error.type";
    /// `audit.error.message` (string).
    pub const ERROR_MESSAGE: &str = "audit.error.message";
    /// `gen_ai.provider.name` (string).
    pub const GEN_AI_PROVIDER: &str = "gen_ai.provider.name";
    /// `gen_ai.operation.name` (string).
    pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
    /// `gen_ai.request.model` (string).
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    /// `gen_ai.response.model` (string).
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    /// `gen_ai.usage.input_tokens` (int).
    pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// `gen_ai.usage.output_tokens` (int).
    pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// `gen_ai.conversation.id` (string).
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// `gen_ai.agent.name` (string).
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    /// `gen_ai.tool.name` (string).
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
    /// `gen_ai.request.temperature` (double; int accepted).
    pub const GEN_AI_TEMPERATURE: &str = "gen_ai.request.temperature";
    /// `audit.safety.passed` (bool).
    pub const SAFETY_PASSED: &str = "audit.safety.passed";
    /// `audit.safety.detectors` (array of string).
    pub const SAFETY_DETECTORS: &str = "audit.safety.detectors";
    /// `audit.safety.block_reason` (string).
    pub const SAFETY_BLOCK_REASON: &str = "audit.safety.block_reason";
    /// `audit.content_digests` (array of kvlist).
    pub const CONTENT_DIGESTS: &str = "audit.content_digests";
    /// `audit.sealed_content` (array of kvlist).
    pub const SEALED_CONTENT: &str = "audit.sealed_content";
    /// `audit.redactions` (array of kvlist).
    pub const REDACTIONS: &str = "audit.redactions";
    /// `audit.trace.parent_span_id` (string, 16 hex digits).
    pub const PARENT_SPAN_ID: &str = "audit.trace.parent_span_id";
    /// `audit.trace.trace_id` (string): only when the trace id cannot be
    /// carried in the record's `trace_id` field (not 32 lower-case hex digits,
    /// or all zeros).
    pub const TRACE_ID_TEXT: &str = "audit.trace.trace_id";
    /// `audit.trace.span_id` (string): as [`TRACE_ID_TEXT`] for the span id.
    pub const SPAN_ID_TEXT: &str = "audit.trace.span_id";
    /// `event.name` (string): older SDKs put the event name here instead of
    /// the record's `event_name` field.
    pub const EVENT_NAME: &str = "event.name";
    /// Prefix of the event's free-form attributes: `audit.attr.<key>` (string).
    pub const ATTR_PREFIX: &str = "audit.attr.";
    /// The reserved namespace: unknown `audit.*` attributes are errors.
    pub const AUDIT_PREFIX: &str = "audit.";
    /// Prefix of [`crate::model::AuditEvent::attributes`] keys set by the otel-audit SDK
    /// itself (`otel_audit.dropped_before`).
    pub const SDK_ATTRIBUTE_PREFIX: &str = "otel_audit.";
}

/// The event name of a category's records: `audit.<category>`.
pub const fn event_name(category: Category) -> &'static str {
    match category {
        Category::Inference => "audit.inference",
        Category::Tool => "audit.tool",
        Category::DataAccess => "audit.data_access",
        Category::Security => "audit.security",
        Category::Governance => "audit.governance",
        Category::Admin => "audit.admin",
        Category::Compliance => "audit.compliance",
        Category::System => "audit.system",
    }
}

/// The OpenTelemetry severity number of a severity: debug 5, info 9, warn 13,
/// error 17, critical 21 (OpenTelemetry's `FATAL`).
pub const fn severity_number(severity: Severity) -> i32 {
    match severity {
        Severity::Debug => 5,
        Severity::Info => 9,
        Severity::Warn => 13,
        Severity::Error => 17,
        Severity::Critical => 21,
    }
}

/// The severity of an OpenTelemetry severity number: 1–8 (trace, debug) →
/// debug, 9–12 → info, 13–16 → warn, 17–20 → error, 21–24 (fatal) → critical;
/// `None` for 0 (unspecified) and numbers outside 0–24.
pub const fn severity_from_number(number: i32) -> Option<Severity> {
    match number {
        1..=8 => Some(Severity::Debug),
        9..=12 => Some(Severity::Info),
        13..=16 => Some(Severity::Warn),
        17..=20 => Some(Severity::Error),
        21..=24 => Some(Severity::Critical),
        _ => None,
    }
}

/// Whether a record looks like one of ours: its event name is `audit.*` or it
/// carries `audit.event_id`. The collector uses this to choose between
/// [`from_otlp`] and its mapping for generic GenAI telemetry.
pub fn is_audit_log(log: &OtlpLog) -> bool {
    is_audit_record(
        &log.event_name,
        log.attributes.iter().any(|(k, _)| k == keys::EVENT_ID),
    )
}

/// [`is_audit_log`]'s rule for a reader that has the record's event name
/// and knows whether an `audit.event_id` attribute is among its attributes
/// (the key counts even when its value is empty).
pub fn is_audit_record(event_name: &str, has_event_id: bool) -> bool {
    event_name.starts_with(keys::AUDIT_PREFIX) || has_event_id
}

/// The resource attributes describing a service: `service.name` and, when
/// set, `service.version`, `deployment.environment.name`, `host.name`.
pub fn resource_attributes(service: &Service) -> Vec<(String, OtlpValue)> {
    let mut out = vec![(keys::SERVICE_NAME.to_owned(), str_value(&service.name))];
    push_opt(&mut out, keys::SERVICE_VERSION, &service.version);
    push_opt(&mut out, keys::DEPLOYMENT_ENVIRONMENT, &service.environment);
    push_opt(&mut out, keys::HOST_NAME, &service.host);
    out
}

fn str_value(s: &str) -> OtlpValue {
    OtlpValue::Str(s.to_owned())
}

fn push_str(out: &mut Vec<(String, OtlpValue)>, key: &str, value: &str) {
    out.push((key.to_owned(), str_value(value)));
}

fn push_opt(out: &mut Vec<(String, OtlpValue)>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        push_str(out, key, v);
    }
}

fn push_int(out: &mut Vec<(String, OtlpValue)>, key: &str, value: Option<i64>) {
    if let Some(v) = value {
        out.push((key.to_owned(), OtlpValue::Int(v)));
    }
}

fn kv(key: &str, value: OtlpValue) -> (String, OtlpValue) {
    (key.to_owned(), value)
}

/// Parses `digits` lower-case hex digits into `N` bytes; `None` when the text
/// is not exactly that, or decodes to all zeros (which OTLP reads as "absent").
fn hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    (out != [0u8; N]).then_some(out)
}

/// Maps an event to one log record. Never fails: every event, valid or not,
/// gets a record that [`from_otlp`] maps back to an equal event, with these
/// exceptions (which [`AuditEvent::validate`] also rejects or never produces):
/// a time before 1970-01-01T00:00:00.000000001Z or after 2262-04-11 cannot be
/// expressed in OTLP and becomes `0` (unknown), which [`from_otlp`] rejects
/// with `time_unix_nano is required`.
///
/// A trace or span id that is not 32 (16) lower-case hex digits, or is all
/// zeros, travels as the string attribute `audit.trace.trace_id`
/// (`audit.trace.span_id`) instead of the record field, so it is never lost or
/// altered; the collector's validation then reports it.
pub fn to_otlp(ev: &AuditEvent) -> OtlpLog {
    let mut a: Vec<(String, OtlpValue)> = Vec::with_capacity(24 + ev.attributes.len());

    push_str(
        &mut a,
        keys::EVENT_ID,
        &ev.event_id.hyphenated().to_string(),
    );
    push_str(&mut a, keys::TENANT, &ev.tenant);
    push_str(&mut a, keys::CATEGORY, ev.category.as_str());
    push_str(&mut a, keys::ACTION, &ev.action);
    push_str(&mut a, keys::OUTCOME, ev.outcome.as_str());
    push_int(&mut a, keys::DURATION_NS, ev.duration_ns);

    a.extend(resource_attributes(&ev.service));

    let actor = &ev.actor;
    push_opt(&mut a, keys::ACTOR_ID, &actor.id);
    if let Some(kind) = actor.kind {
        push_str(&mut a, keys::ACTOR_TYPE, kind.as_str());
    }
    push_opt(&mut a, keys::ACTOR_ROLE, &actor.role);
    push_opt(&mut a, keys::ACTOR_IP, &actor.ip);
    push_opt(&mut a, keys::ACTOR_SESSION, &actor.session);

    push_opt(&mut a, keys::TARGET_TYPE, &ev.target.kind);
    push_opt(&mut a, keys::TARGET_ID, &ev.target.id);
    push_opt(&mut a, keys::ERROR_TYPE, &ev.error.kind);
    push_opt(&mut a, keys::ERROR_MESSAGE, &ev.error.message);

    let g = &ev.gen_ai;
    push_opt(&mut a, keys::GEN_AI_PROVIDER, &g.provider);
    push_opt(&mut a, keys::GEN_AI_OPERATION, &g.operation);
    push_opt(&mut a, keys::GEN_AI_REQUEST_MODEL, &g.request_model);
    push_opt(&mut a, keys::GEN_AI_RESPONSE_MODEL, &g.response_model);
    push_int(&mut a, keys::GEN_AI_INPUT_TOKENS, g.input_tokens);
    push_int(&mut a, keys::GEN_AI_OUTPUT_TOKENS, g.output_tokens);
    push_opt(&mut a, keys::GEN_AI_CONVERSATION_ID, &g.conversation_id);
    push_opt(&mut a, keys::GEN_AI_AGENT_NAME, &g.agent_name);
    push_opt(&mut a, keys::GEN_AI_TOOL_NAME, &g.tool_name);
    if let Some(t) = g.temperature {
        a.push(kv(keys::GEN_AI_TEMPERATURE, OtlpValue::Double(t)));
    }

    let s = &ev.safety;
    if let Some(p) = s.passed {
        a.push(kv(keys::SAFETY_PASSED, OtlpValue::Bool(p)));
    }
    if !s.detectors.is_empty() {
        a.push(kv(
            keys::SAFETY_DETECTORS,
            OtlpValue::Array(s.detectors.iter().map(|d| str_value(d)).collect()),
        ));
    }
    push_opt(&mut a, keys::SAFETY_BLOCK_REASON, &s.block_reason);

    if !ev.content_digests.is_empty() {
        let items = ev
            .content_digests
            .iter()
            .map(|d| {
                let mut e = vec![
                    kv("field", str_value(&d.field)),
                    kv("algorithm", str_value(d.algorithm.as_str())),
                ];
                push_opt(&mut e, "key_id", &d.key_id);
                e.push(kv("digest", OtlpValue::Bytes(d.digest.to_vec())));
                OtlpValue::KvList(e)
            })
            .collect();
        a.push(kv(keys::CONTENT_DIGESTS, OtlpValue::Array(items)));
    }
    if !ev.sealed_content.is_empty() {
        let items = ev
            .sealed_content
            .iter()
            .map(|s| {
                OtlpValue::KvList(vec![
                    kv("field", str_value(&s.field)),
                    kv("algorithm", str_value(&s.algorithm)),
                    kv("key_id", str_value(&s.key_id)),
                    kv("nonce", OtlpValue::Bytes(s.nonce.clone())),
                    kv("ciphertext", OtlpValue::Bytes(s.ciphertext.clone())),
                ])
            })
            .collect();
        a.push(kv(keys::SEALED_CONTENT, OtlpValue::Array(items)));
    }
    if !ev.redactions.is_empty() {
        let items = ev
            .redactions
            .iter()
            .map(|r| {
                let mut e = vec![
                    kv("field", str_value(&r.field)),
                    kv("method", str_value(r.method.as_str())),
                ];
                push_opt(&mut e, "detector", &r.detector);
                push_opt(&mut e, "key_id", &r.key_id);
                OtlpValue::KvList(e)
            })
            .collect();
        a.push(kv(keys::REDACTIONS, OtlpValue::Array(items)));
    }

    let trace_id = ev.trace.trace_id.as_deref().and_then(hex_id::<16>);
    if trace_id.is_none() {
        push_opt(&mut a, keys::TRACE_ID_TEXT, &ev.trace.trace_id);
    }
    let span_id = ev.trace.span_id.as_deref().and_then(hex_id::<8>);
    if span_id.is_none() {
        push_opt(&mut a, keys::SPAN_ID_TEXT, &ev.trace.span_id);
    }
    push_opt(&mut a, keys::PARENT_SPAN_ID, &ev.trace.parent_span_id);

    for (k, v) in &ev.attributes {
        a.push((format!("{}{k}", keys::ATTR_PREFIX), str_value(v)));
    }

    OtlpLog {
        time_unix_nano: ev
            .time
            .timestamp_nanos_opt()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        observed_time_unix_nano: 0,
        severity_number: severity_number(ev.severity),
        severity_text: ev.severity.as_str().to_owned(),
        event_name: event_name(ev.category).to_owned(),
        trace_id,
        span_id,
        attributes: a,
    }
}

// ---------------------------------------------------------------------------
// from_otlp

fn wrong(attribute: &str, expected: &'static str, found: &OtlpValueRef<'_>) -> MappingError {
    MappingError::WrongType {
        attribute: attribute.to_owned(),
        expected,
        found: found.type_name(),
    }
}

fn invalid(attribute: &str, reason: impl Into<String>) -> MappingError {
    MappingError::Invalid {
        attribute: attribute.to_owned(),
        reason: reason.into(),
    }
}

fn missing(attribute: &str) -> MappingError {
    MappingError::Missing {
        attribute: attribute.to_owned(),
    }
}

fn duplicate(attribute: &str) -> MappingError {
    MappingError::Duplicate {
        attribute: attribute.to_owned(),
    }
}

fn get_str(attribute: &str, v: &OtlpValueRef<'_>) -> Result<String, MappingError> {
    match v {
        OtlpValueRef::Str(s) => Ok((*s).to_owned()),
        other => Err(wrong(attribute, "string", other)),
    }
}

fn borrow_str<'a>(attribute: &str, v: &OtlpValueRef<'a>) -> Result<&'a str, MappingError> {
    match v {
        OtlpValueRef::Str(s) => Ok(s),
        other => Err(wrong(attribute, "string", other)),
    }
}

fn get_int(attribute: &str, v: &OtlpValueRef<'_>) -> Result<i64, MappingError> {
    match v {
        OtlpValueRef::Int(i) => Ok(*i),
        other => Err(wrong(attribute, "int", other)),
    }
}

fn get_enum<T: std::str::FromStr<Err = ParseEnumError>>(
    attribute: &str,
    v: &OtlpValueRef<'_>,
) -> Result<T, MappingError> {
    match v {
        OtlpValueRef::Str(s) => s.parse().map_err(|source| MappingError::Enum {
            attribute: attribute.to_owned(),
            source,
        }),
        other => Err(wrong(attribute, "string", other)),
    }
}

fn get_array<'v, 'a>(
    attribute: &str,
    v: &'v OtlpValueRef<'a>,
) -> Result<&'v [OtlpValueRef<'a>], MappingError> {
    match v {
        OtlpValueRef::Array(items) => Ok(items),
        other => Err(wrong(attribute, "array", other)),
    }
}

/// The entries of one kvlist element of an array attribute, by name, with
/// unknown and repeated keys rejected.
struct Entry<'v, 'a> {
    name: String,
    fields: [Option<&'v OtlpValueRef<'a>>; 5],
    names: &'static [&'static str],
}

impl<'v, 'a> Entry<'v, 'a> {
    fn parse(
        attribute: &str,
        index: usize,
        v: &'v OtlpValueRef<'a>,
        names: &'static [&'static str],
    ) -> Result<Self, MappingError> {
        let name = format!("{attribute}[{index}]");
        let OtlpValueRef::KvList(entries) = v else {
            return Err(wrong(&name, "kvlist", v));
        };
        let mut fields = [None; 5];
        for (k, value) in entries {
            let Some(pos) = names.iter().position(|n| n == k) else {
                return Err(MappingError::Unknown {
                    attribute: format!("{name}.{k}"),
                });
            };
            if fields[pos].replace(value).is_some() {
                return Err(duplicate(&format!("{name}.{k}")));
            }
        }
        Ok(Entry {
            name,
            fields,
            names,
        })
    }

    fn attr(&self, pos: usize) -> String {
        format!("{}.{}", self.name, self.names[pos])
    }

    fn opt_str(&self, pos: usize) -> Result<Option<String>, MappingError> {
        self.fields[pos]
            .map(|v| get_str(&self.attr(pos), v))
            .transpose()
    }

    fn req(&self, pos: usize) -> Result<&'v OtlpValueRef<'a>, MappingError> {
        self.fields[pos].ok_or_else(|| missing(&self.attr(pos)))
    }

    fn req_str(&self, pos: usize) -> Result<String, MappingError> {
        get_str(&self.attr(pos), self.req(pos)?)
    }

    fn req_bytes(&self, pos: usize) -> Result<Vec<u8>, MappingError> {
        match self.req(pos)? {
            OtlpValueRef::Bytes(b) => Ok(b.to_vec()),
            other => Err(wrong(&self.attr(pos), "bytes", other)),
        }
    }

    fn req_enum<T: std::str::FromStr<Err = ParseEnumError>>(
        &self,
        pos: usize,
    ) -> Result<T, MappingError> {
        get_enum(&self.attr(pos), self.req(pos)?)
    }
}

const DIGEST_KEYS: &[&str] = &["field", "algorithm", "key_id", "digest"];
const SEALED_KEYS: &[&str] = &["field", "algorithm", "key_id", "nonce", "ciphertext"];
const REDACTION_KEYS: &[&str] = &["field", "method", "detector", "key_id"];

fn content_digests(v: &OtlpValueRef<'_>) -> Result<Vec<ContentDigest>, MappingError> {
    let attribute = keys::CONTENT_DIGESTS;
    get_array(attribute, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let e = Entry::parse(attribute, i, item, DIGEST_KEYS)?;
            let bytes = e.req_bytes(3)?;
            let digest: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                invalid(
                    &e.attr(3),
                    format!("expected 32 bytes, got {}", bytes.len()),
                )
            })?;
            Ok(ContentDigest {
                field: e.req_str(0)?,
                algorithm: e.req_enum(1)?,
                key_id: e.opt_str(2)?,
                digest,
            })
        })
        .collect()
}

fn sealed_content(v: &OtlpValueRef<'_>) -> Result<Vec<SealedContent>, MappingError> {
    let attribute = keys::SEALED_CONTENT;
    get_array(attribute, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let e = Entry::parse(attribute, i, item, SEALED_KEYS)?;
            Ok(SealedContent {
                field: e.req_str(0)?,
                algorithm: e.req_str(1)?,
                key_id: e.req_str(2)?,
                nonce: e.req_bytes(3)?,
                ciphertext: e.req_bytes(4)?,
            })
        })
        .collect()
}

fn redactions(v: &OtlpValueRef<'_>) -> Result<Vec<Redaction>, MappingError> {
    let attribute = keys::REDACTIONS;
    get_array(attribute, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let e = Entry::parse(attribute, i, item, REDACTION_KEYS)?;
            Ok(Redaction {
                field: e.req_str(0)?,
                method: e.req_enum(1)?,
                detector: e.opt_str(2)?,
                key_id: e.opt_str(3)?,
            })
        })
        .collect()
}

fn detectors(v: &OtlpValueRef<'_>) -> Result<Vec<String>, MappingError> {
    let attribute = keys::SAFETY_DETECTORS;
    get_array(attribute, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| get_str(&format!("{attribute}[{i}]"), item))
        .collect()
}

/// Sets an `Option` once; a second value for the same attribute is an error.
fn set<T>(slot: &mut Option<T>, attribute: &str, value: T) -> Result<(), MappingError> {
    if slot.replace(value).is_some() {
        return Err(duplicate(attribute));
    }
    Ok(())
}

/// Everything read from the record's attributes before assembly.
#[derive(Default)]
struct Parts<'a> {
    /// Parsed once every attribute was read (a bad id is reported after a
    /// repeated attribute, as it always was).
    event_id: Option<&'a str>,
    tenant: Option<String>,
    category: Option<Category>,
    action: Option<String>,
    outcome: Option<crate::model::Outcome>,
    duration_ns: Option<i64>,
    service_name: Option<String>,
    service_version: Option<String>,
    service_environment: Option<String>,
    service_host: Option<String>,
    actor: Actor,
    actor_seen: [bool; 5],
    target: Target,
    target_seen: [bool; 2],
    error: ErrorInfo,
    error_seen: [bool; 2],
    gen_ai: GenAi,
    gen_ai_seen: [bool; 10],
    safety: Safety,
    safety_seen: [bool; 3],
    content_digests: Option<Vec<ContentDigest>>,
    sealed_content: Option<Vec<SealedContent>>,
    redactions: Option<Vec<Redaction>>,
    trace_id_text: Option<String>,
    span_id_text: Option<String>,
    parent_span_id: Option<String>,
    event_name_attr: Option<&'a str>,
    attributes: BTreeMap<String, String>,
}

/// Marks an attribute as seen; a second sighting is an error.
fn once(seen: &mut bool, attribute: &str) -> Result<(), MappingError> {
    if std::mem::replace(seen, true) {
        return Err(duplicate(attribute));
    }
    Ok(())
}

impl<'a> Parts<'a> {
    fn take(&mut self, key: &str, v: &OtlpValueRef<'a>) -> Result<(), MappingError> {
        let opt_str = |key: &str| get_str(key, v).map(Some);
        match key {
            keys::EVENT_ID => set(&mut self.event_id, key, borrow_str(key, v)?),
            keys::TENANT => set(&mut self.tenant, key, get_str(key, v)?),
            keys::CATEGORY => set(&mut self.category, key, get_enum(key, v)?),
            keys::ACTION => set(&mut self.action, key, get_str(key, v)?),
            keys::OUTCOME => set(&mut self.outcome, key, get_enum(key, v)?),
            keys::DURATION_NS => set(&mut self.duration_ns, key, get_int(key, v)?),
            keys::SERVICE_NAME => set(&mut self.service_name, key, get_str(key, v)?),
            keys::SERVICE_VERSION => set(&mut self.service_version, key, get_str(key, v)?),
            keys::DEPLOYMENT_ENVIRONMENT => {
                set(&mut self.service_environment, key, get_str(key, v)?)
            }
            keys::HOST_NAME => set(&mut self.service_host, key, get_str(key, v)?),
            keys::ACTOR_ID => {
                once(&mut self.actor_seen[0], key)?;
                self.actor.id = opt_str(key)?;
                Ok(())
            }
            keys::ACTOR_TYPE => {
                once(&mut self.actor_seen[1], key)?;
                self.actor.kind = Some(get_enum(key, v)?);
                Ok(())
            }
            keys::ACTOR_ROLE => {
                once(&mut self.actor_seen[2], key)?;
                self.actor.role = opt_str(key)?;
                Ok(())
            }
            keys::ACTOR_IP => {
                once(&mut self.actor_seen[3], key)?;
                self.actor.ip = opt_str(key)?;
                Ok(())
            }
            keys::ACTOR_SESSION => {
                once(&mut self.actor_seen[4], key)?;
                self.actor.session = opt_str(key)?;
                Ok(())
            }
            keys::TARGET_TYPE => {
                once(&mut self.target_seen[0], key)?;
                self.target.kind = opt_str(key)?;
                Ok(())
            }
            keys::TARGET_ID => {
                once(&mut self.target_seen[1], key)?;
                self.target.id = opt_str(key)?;
                Ok(())
            }
            keys::ERROR_TYPE => {
                once(&mut self.error_seen[0], key)?;
                self.error.kind = opt_str(key)?;
                Ok(())
            }
            keys::ERROR_MESSAGE => {
                once(&mut self.error_seen[1], key)?;
                self.error.message = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_PROVIDER => {
                once(&mut self.gen_ai_seen[0], key)?;
                self.gen_ai.provider = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_OPERATION => {
                once(&mut self.gen_ai_seen[1], key)?;
                self.gen_ai.operation = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_REQUEST_MODEL => {
                once(&mut self.gen_ai_seen[2], key)?;
                self.gen_ai.request_model = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_RESPONSE_MODEL => {
                once(&mut self.gen_ai_seen[3], key)?;
                self.gen_ai.response_model = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_INPUT_TOKENS => {
                once(&mut self.gen_ai_seen[4], key)?;
                self.gen_ai.input_tokens = Some(get_int(key, v)?);
                Ok(())
            }
            keys::GEN_AI_OUTPUT_TOKENS => {
                once(&mut self.gen_ai_seen[5], key)?;
                self.gen_ai.output_tokens = Some(get_int(key, v)?);
                Ok(())
            }
            keys::GEN_AI_CONVERSATION_ID => {
                once(&mut self.gen_ai_seen[6], key)?;
                self.gen_ai.conversation_id = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_AGENT_NAME => {
                once(&mut self.gen_ai_seen[7], key)?;
                self.gen_ai.agent_name = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_TOOL_NAME => {
                once(&mut self.gen_ai_seen[8], key)?;
                self.gen_ai.tool_name = opt_str(key)?;
                Ok(())
            }
            keys::GEN_AI_TEMPERATURE => {
                once(&mut self.gen_ai_seen[9], key)?;
                self.gen_ai.temperature = Some(match v {
                    OtlpValueRef::Double(d) => *d,
                    // SDKs of dynamic languages send `temperature=1` as an int.
                    OtlpValueRef::Int(i) => *i as f64,
                    other => return Err(wrong(key, "double", other)),
                });
                Ok(())
            }
            keys::SAFETY_PASSED => {
                once(&mut self.safety_seen[0], key)?;
                self.safety.passed = Some(match v {
                    OtlpValueRef::Bool(b) => *b,
                    other => return Err(wrong(key, "bool", other)),
                });
                Ok(())
            }
            keys::SAFETY_DETECTORS => {
                once(&mut self.safety_seen[1], key)?;
                self.safety.detectors = detectors(v)?;
                Ok(())
            }
            keys::SAFETY_BLOCK_REASON => {
                once(&mut self.safety_seen[2], key)?;
                self.safety.block_reason = opt_str(key)?;
                Ok(())
            }
            keys::CONTENT_DIGESTS => set(&mut self.content_digests, key, content_digests(v)?),
            keys::SEALED_CONTENT => set(&mut self.sealed_content, key, sealed_content(v)?),
            keys::REDACTIONS => set(&mut self.redactions, key, redactions(v)?),
            keys::TRACE_ID_TEXT => set(&mut self.trace_id_text, key, get_str(key, v)?),
            keys::SPAN_ID_TEXT => set(&mut self.span_id_text, key, get_str(key, v)?),
            keys::PARENT_SPAN_ID => set(&mut self.parent_span_id, key, get_str(key, v)?),
            keys::EVENT_NAME => set(&mut self.event_name_attr, key, borrow_str(key, v)?),
            _ => {
                let (name, value) = if let Some(name) = key.strip_prefix(keys::ATTR_PREFIX) {
                    (name, v.to_text())
                } else if key.starts_with(keys::AUDIT_PREFIX) {
                    return Err(MappingError::Unknown {
                        attribute: key.to_owned(),
                    });
                } else {
                    // Telemetry from other SDKs: kept under its own name as text.
                    (key, v.to_text())
                };
                if self.attributes.insert(name.to_owned(), value).is_some() {
                    return Err(duplicate(key));
                }
                Ok(())
            }
        }
    }
}

/// Reads the service from the resource: all four fields, or an error naming
/// the resource attribute.
fn service_from_resource(resource: &[(&str, OtlpValueRef<'_>)]) -> Result<Service, MappingError> {
    let mut name = None;
    let mut version = None;
    let mut environment = None;
    let mut host = None;
    for (k, v) in resource {
        let slot = match *k {
            keys::SERVICE_NAME => &mut name,
            keys::SERVICE_VERSION => &mut version,
            keys::DEPLOYMENT_ENVIRONMENT => &mut environment,
            keys::HOST_NAME => &mut host,
            _ => continue,
        };
        // The error's name for the attribute is only made for an error
        // (formatting it for every record was a tenth of the mapping).
        let attribute = || format!("resource {k}");
        let OtlpValueRef::Str(text) = v else {
            return Err(wrong(&attribute(), "string", v));
        };
        if slot.replace((*text).to_owned()).is_some() {
            return Err(duplicate(&attribute()));
        }
    }
    Ok(Service {
        name: name.ok_or_else(|| missing(keys::SERVICE_NAME))?,
        version,
        environment,
        host,
    })
}

/// Maps one log record (and its resource's attributes) back to an event.
///
/// Required: `time_unix_nano` (or `observed_time_unix_nano` when it is 0),
/// a severity (number, or text when the number is 0), `audit.event_id`,
/// `audit.tenant`, `audit.category` (or an `audit.<category>` event name),
/// `audit.action`, `audit.outcome` and `service.name` (on the record or the
/// resource). Attributes the mapping does not name are kept as event
/// attributes under their own key, as text — except unknown `audit.*` names,
/// which are errors. See `docs/OTLP.md`.
pub fn from_otlp(
    resource: &[(String, OtlpValue)],
    log: &OtlpLog,
) -> Result<AuditEvent, MappingError> {
    let attributes = views(&log.attributes);
    from_otlp_ref(&views(resource), &log.view(&attributes))
}

/// [`from_otlp`] on borrowed input: the same mapping and the same errors,
/// for a reader that takes texts straight from the protobuf message (the
/// collector's receivers), so that only what the event keeps is copied.
pub fn from_otlp_ref(
    resource: &[(&str, OtlpValueRef<'_>)],
    log: &OtlpLogRef<'_, '_>,
) -> Result<AuditEvent, MappingError> {
    let mut p = Parts::default();
    for (key, value) in log.attributes {
        p.take(key, value)?;
    }

    let time_nanos = match (log.time_unix_nano, log.observed_time_unix_nano) {
        (0, 0) => return Err(missing("time_unix_nano")),
        (0, observed) => observed,
        (t, _) => t,
    };
    let time_nanos = i64::try_from(time_nanos)
        .map_err(|_| invalid("time_unix_nano", format!("{time_nanos} is after year 2262")))?;
    let time: DateTime<Utc> = DateTime::from_timestamp_nanos(time_nanos);

    let severity = match log.severity_number {
        0 if log.severity_text.is_empty() => return Err(missing("severity_number")),
        0 => parse_severity_text(log.severity_text).ok_or_else(|| {
            invalid(
                "severity_text",
                format!(
                    "{:?} is not a severity (debug, info, warn, error, critical)",
                    cut(log.severity_text)
                ),
            )
        })?,
        n => severity_from_number(n)
            .ok_or_else(|| invalid("severity_number", format!("{n} is outside 1 to 24")))?,
    };

    // The category: audit.category, else the event name; both must agree.
    let name = if log.event_name.is_empty() {
        p.event_name_attr.unwrap_or("")
    } else {
        log.event_name
    };
    let name_attribute = if log.event_name.is_empty() {
        keys::EVENT_NAME
    } else {
        "event_name"
    };
    let from_name = match name.strip_prefix(keys::AUDIT_PREFIX) {
        Some(c) => Some(c.parse::<Category>().map_err(|source| MappingError::Enum {
            attribute: name_attribute.to_owned(),
            source,
        })?),
        None => None,
    };
    let category = match (p.category, from_name) {
        (Some(c), Some(n)) if c != n => {
            return Err(invalid(
                name_attribute,
                format!("{name:?} disagrees with audit.category {:?}", c.as_str()),
            ));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(missing(keys::CATEGORY)),
    };

    let event_id_text = p.event_id.ok_or_else(|| missing(keys::EVENT_ID))?;
    let event_id = Uuid::try_parse(event_id_text).map_err(|e| {
        invalid(
            keys::EVENT_ID,
            format!("{:?} is not a UUID: {e}", cut(event_id_text)),
        )
    })?;

    let service = match p.service_name {
        Some(name) => Service {
            name,
            version: p.service_version,
            environment: p.service_environment,
            host: p.service_host,
        },
        None => {
            if p.service_version.is_some()
                || p.service_environment.is_some()
                || p.service_host.is_some()
            {
                // A partial service on the record would be silently mixed with the resource's.
                return Err(missing(keys::SERVICE_NAME));
            }
            service_from_resource(resource)?
        }
    };

    let trace_id = match (log.trace_id.filter(|t| *t != [0; 16]), p.trace_id_text) {
        (Some(_), Some(_)) => return Err(duplicate(keys::TRACE_ID_TEXT)),
        (Some(t), None) => Some(lower_hex(&t)),
        (None, text) => text,
    };
    let span_id = match (log.span_id.filter(|s| *s != [0; 8]), p.span_id_text) {
        (Some(_), Some(_)) => return Err(duplicate(keys::SPAN_ID_TEXT)),
        (Some(s), None) => Some(lower_hex(&s)),
        (None, text) => text,
    };

    Ok(AuditEvent {
        event_id,
        time,
        duration_ns: p.duration_ns,
        severity,
        tenant: p.tenant.ok_or_else(|| missing(keys::TENANT))?,
        service,
        actor: p.actor,
        category,
        action: p.action.ok_or_else(|| missing(keys::ACTION))?,
        outcome: p.outcome.ok_or_else(|| missing(keys::OUTCOME))?,
        target: p.target,
        error: p.error,
        gen_ai: p.gen_ai,
        safety: p.safety,
        content_digests: p.content_digests.unwrap_or_default(),
        sealed_content: p.sealed_content.unwrap_or_default(),
        trace: TraceContext {
            trace_id,
            span_id,
            parent_span_id: p.parent_span_id,
        },
        attributes: p.attributes,
        redactions: p.redactions.unwrap_or_default(),
    })
}

/// `bytes` as lower-case hex. `hex::encode` collects a `String` one `char`
/// at a time: for the two ids of every record that was a tenth of the
/// mapping's cost.
fn lower_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    crate::redact::push_hex(&mut s, bytes);
    s
}

fn parse_severity_text(text: &str) -> Option<Severity> {
    let lower = text.trim().to_ascii_lowercase();
    let base = lower.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match base {
        "trace" | "debug" => Severity::Debug,
        "info" | "information" | "notice" => Severity::Info,
        "warn" | "warning" => Severity::Warn,
        "error" | "err" => Severity::Error,
        "critical" | "crit" | "fatal" | "alert" | "emergency" | "emerg" => Severity::Critical,
        _ => return None,
    })
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        assert_eq!(hex_id::<2>("0a0b"), Some([10, 11]));
        assert_eq!(hex_id::<2>("0A0B"), None);
        assert_eq!(hex_id::<2>("0000"), None);
        assert_eq!(hex_id::<2>("0a0"), None);
    }

    #[test]
    fn text_rendering() {
        let v = OtlpValue::KvList(vec![
            (
                "a".into(),
                OtlpValue::Array(vec![OtlpValue::Int(1), OtlpValue::Bool(true)]),
            ),
            ("b\"".into(), OtlpValue::Bytes(vec![0xab])),
            ("c".into(), OtlpValue::Double(f64::NAN)),
        ]);
        assert_eq!(v.to_text(), r#"{"a":[1,true],"b\"":"ab","c":"NaN"}"#);
        assert_eq!(OtlpValue::Bytes(vec![1, 2]).to_text(), "0102");
        assert_eq!(OtlpValue::Double(1.5).to_text(), "1.5");
    }

    #[test]
    fn severity_numbers_round_trip() {
        for s in Severity::ALL {
            assert_eq!(severity_from_number(severity_number(*s)), Some(*s));
            assert_eq!(parse_severity_text(s.as_str()), Some(*s));
        }
        assert_eq!(severity_from_number(0), None);
        assert_eq!(severity_from_number(25), None);
        assert_eq!(parse_severity_text("WARNING"), Some(Severity::Warn));
        assert_eq!(parse_severity_text("Info2"), Some(Severity::Info));
    }
}
