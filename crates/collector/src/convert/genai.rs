//! Spans and log records of other OpenTelemetry SDKs that carry GenAI
//! semantic-convention attributes → audit events.
//!
//! docs/OTLP.md ("Telemetry from other OpenTelemetry SDKs") is the reference
//! for these rules. In short: the GenAI attributes fill the typed columns;
//! every other attribute is kept under its own key as text, so the
//! pipeline's redaction policy applies to it; a value a column cannot hold
//! (wrong type, too long, negative count) is kept as an attribute instead of
//! being cut or rejected.
//!
//! Nothing here redacts: that is the pipeline's job, and it must see content
//! whole (an HMAC of a cut prompt would not match the prompt). Attribute
//! values and the error message are therefore passed on at any length; the
//! policy's `redact_event` cuts what is still too long after redaction.
//! Everything `redact_event` does not touch is made to fit here.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use chrono::{DateTime, Utc};
use otel_audit_event::otlp::{OtlpLog, OtlpValue, keys, severity_from_number};
use otel_audit_event::{
    Actor, AuditEvent, Category, ErrorInfo, GenAi, MAX_ACTION_BYTES, MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTES, MAX_SHORT_BYTES, Outcome, Redaction, RedactionMethod, Safety, Service,
    Severity, Target, TraceContext,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::value::into_text;

/// The older name of `gen_ai.provider.name`.
const GEN_AI_SYSTEM: &str = "gen_ai.system";
/// The older name of `gen_ai.usage.input_tokens`.
const PROMPT_TOKENS: &str = "gen_ai.usage.prompt_tokens";
/// The older name of `gen_ai.usage.output_tokens`.
const COMPLETION_TOKENS: &str = "gen_ai.usage.completion_tokens";
/// OpenLLMetry's operation before `gen_ai.operation.name`.
const LLM_REQUEST_TYPE: &str = "llm.request.type";
/// The older name of `deployment.environment.name`.
const DEPLOYMENT_ENVIRONMENT_OLD: &str = "deployment.environment";
/// Added when attributes had to be left out (count or key length).
pub(crate) const DROPPED_ATTRIBUTES: &str = "otel_audit.dropped_attributes";
/// The service name when the resource has no usable `service.name` (the
/// OpenTelemetry SDKs' own default).
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";
/// The attribute the body of a log record is kept under, unless it is a
/// message event of the older GenAI conventions (see [`body_key`]).
pub(crate) const LOG_BODY: &str = "log.body";

/// Prefixes of attribute families that instrumentations flatten with an
/// index (OpenLLMetry: `gen_ai.prompt.0.role`, `gen_ai.prompt.0.content`,
/// ...). They are gathered into one JSON array under the prefix, so the
/// content policy sees a conversation as the one field it names
/// (`gen_ai.prompt`), and a long conversation does not use up the
/// attribute limit.
const FLATTENED: [&str; 4] = [
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.definitions",
    "llm.request.functions",
];

/// Whether a key is in the GenAI namespace.
pub(crate) fn is_gen_ai_key(key: &str) -> bool {
    key.starts_with("gen_ai.")
}

/// The service of a resource, for GenAI records.
pub(crate) fn service(resource: &[(String, OtlpValue)]) -> Service {
    let mut name = None;
    let mut version = None;
    let mut environment = None;
    let mut environment_old = None;
    let mut host = None;
    for (k, v) in resource {
        let slot = match k.as_str() {
            keys::SERVICE_NAME => &mut name,
            keys::SERVICE_VERSION => &mut version,
            keys::DEPLOYMENT_ENVIRONMENT => &mut environment,
            DEPLOYMENT_ENVIRONMENT_OLD => &mut environment_old,
            keys::HOST_NAME => &mut host,
            _ => continue,
        };
        // Resource attributes are not kept on the event: a value the column
        // cannot hold is left out.
        if let OtlpValue::Str(s) = v
            && s.len() <= MAX_SHORT_BYTES
            && slot.is_none()
        {
            *slot = Some(s.clone());
        }
    }
    Service {
        name: name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned()),
        version,
        environment: environment.or(environment_old),
        host,
    }
}

/// Where a record came from, shared by the records of one resource and scope.
pub(crate) struct Origin<'a> {
    /// The event's tenant.
    pub tenant: &'a str,
    /// From the resource.
    pub service: &'a Service,
    /// The instrumentation scope's name and version (may be empty).
    pub scope: (&'a str, &'a str),
}

/// A span, converted from the protobuf type and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawSpan {
    /// `name`.
    pub name: String,
    /// `trace_id` (required, not all zeros).
    pub trace_id: [u8; 16],
    /// `span_id` (required, not all zeros).
    pub span_id: [u8; 8],
    /// `parent_span_id`; `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// `start_time_unix_nano`.
    pub start: u64,
    /// `end_time_unix_nano`.
    pub end: u64,
    /// `attributes`.
    pub attributes: Vec<(String, OtlpValue)>,
    /// The attributes of each span event, in order.
    pub events: Vec<Vec<(String, OtlpValue)>>,
    /// Whether the status code is `STATUS_CODE_ERROR`.
    pub status_error: bool,
    /// The status message.
    pub status_message: String,
}

/// A log record that is not an otel-audit record, converted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawLog {
    /// The record's fields and attributes.
    pub log: OtlpLog,
    /// The body.
    pub body: Option<OtlpValue>,
}

impl RawLog {
    /// The event name: the record's `event_name`, else the `event.name`
    /// attribute of older SDKs.
    pub(crate) fn name(&self) -> &str {
        if !self.log.event_name.is_empty() {
            return &self.log.event_name;
        }
        self.log
            .attributes
            .iter()
            .find_map(|(k, v)| match v {
                OtlpValue::Str(s) if k == keys::EVENT_NAME => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }
}

/// Maps a GenAI span. Errors are messages that name the field.
pub(crate) fn from_span(span: RawSpan, origin: &Origin<'_>) -> Result<AuditEvent, String> {
    if span.start == 0 {
        return Err("start_time_unix_nano is required".into());
    }
    let time = time(span.start).ok_or("start_time_unix_nano is invalid: after the year 2262")?;
    if span.trace_id == [0; 16] {
        return Err("trace_id is invalid: all zeros".into());
    }
    if span.span_id == [0; 8] {
        return Err("span_id is invalid: all zeros".into());
    }
    // An end before the start, or none, leaves the duration unknown rather
    // than negative.
    let duration_ns = (span.end >= span.start)
        .then(|| i64::try_from(span.end - span.start).ok())
        .flatten();
    let event_id = span_event_id(span.start, &span.trace_id, &span.span_id);

    let mut f = Fields::default();
    for (k, v) in span.attributes {
        f.take(k, v);
    }
    for event in span.events {
        for (k, v) in event {
            f.take_from_span_event(k, v);
        }
    }
    f.resolve_aliases();

    let failed = span.status_error;
    let error_message = (failed && !span.status_message.is_empty()).then_some(span.status_message);
    let base = Base {
        event_id,
        time,
        duration_ns,
        severity: if failed {
            Severity::Error
        } else {
            Severity::Info
        },
        outcome: if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        fallback_action: span.name,
        default_action: "gen_ai.span",
        error_message,
        trace: TraceContext {
            trace_id: Some(hex::encode(span.trace_id)),
            span_id: Some(hex::encode(span.span_id)),
            parent_span_id: span
                .parent_span_id
                .filter(|p| *p != [0; 8])
                .map(hex::encode),
        },
    };
    Ok(f.build(base, origin))
}

/// Maps a GenAI log record. Errors are messages that name the field.
pub(crate) fn from_log(raw: RawLog, origin: &Origin<'_>) -> Result<AuditEvent, String> {
    let log = &raw.log;
    let nanos = match (log.time_unix_nano, log.observed_time_unix_nano) {
        (0, 0) => return Err("time_unix_nano is required".into()),
        (0, observed) => observed,
        (t, _) => t,
    };
    let time = time(nanos).ok_or("time_unix_nano is invalid: after the year 2262")?;
    let event_id = log_event_id(nanos, &raw, origin);
    let severity = severity_from_number(log.severity_number).unwrap_or(Severity::Info);
    let name = raw.name().to_owned();
    let RawLog { log, body } = raw;
    let trace = TraceContext {
        trace_id: log.trace_id.filter(|t| *t != [0; 16]).map(hex::encode),
        span_id: log.span_id.filter(|s| *s != [0; 8]).map(hex::encode),
        parent_span_id: None,
    };

    let mut f = Fields::default();
    for (k, v) in log.attributes {
        f.take(k, v);
    }
    if let Some(body) = body {
        f.attrs.insert(body_key(&name).to_owned(), into_text(body));
    }
    f.resolve_aliases();

    let failed = f.error_kind.is_some() || severity >= Severity::Error;
    let base = Base {
        event_id,
        time,
        duration_ns: None,
        severity: if failed {
            severity.max(Severity::Error)
        } else {
            severity
        },
        outcome: if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        fallback_action: name,
        default_action: "gen_ai.log",
        error_message: None,
        trace,
    };
    Ok(f.build(base, origin))
}

/// The attribute a log record's body is kept under: the per-message events
/// of the older GenAI conventions carry message content in the body, which
/// becomes `gen_ai.input.messages` / `gen_ai.output.messages` so that the
/// default content policy applies to it.
pub(crate) fn body_key(event_name: &str) -> &'static str {
    match event_name {
        "gen_ai.system.message"
        | "gen_ai.user.message"
        | "gen_ai.assistant.message"
        | "gen_ai.tool.message" => "gen_ai.input.messages",
        "gen_ai.choice" => "gen_ai.output.messages",
        _ => LOG_BODY,
    }
}

fn time(nanos: u64) -> Option<DateTime<Utc>> {
    i64::try_from(nanos)
        .ok()
        .map(DateTime::from_timestamp_nanos)
}

/// A UUIDv7 that a retry of the same span reproduces: the timestamp is the
/// span's start (so ids still sort by time, as `AuditEvent::event_id`
/// promises) and the 74 "random" bits come from SHA-256 of the trace and
/// span ids, which identify a span.
fn span_event_id(start_nanos: u64, trace_id: &[u8; 16], span_id: &[u8; 8]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"otel-audit span event id v1\0");
    h.update(trace_id);
    h.update(span_id);
    uuid_v7(start_nanos, &h.finalize())
}

/// As [`span_event_id`] for a log record, which has no id of its own: the
/// bits come from a hash of everything the record carries, its tenant and
/// service, so a retried record gets the same id and two different records
/// do not.
fn log_event_id(nanos: u64, raw: &RawLog, origin: &Origin<'_>) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"otel-audit log event id v1\0");
    hash_str(&mut h, origin.tenant);
    hash_str(&mut h, &origin.service.name);
    let log = &raw.log;
    h.update(log.time_unix_nano.to_le_bytes());
    h.update(log.observed_time_unix_nano.to_le_bytes());
    h.update(log.severity_number.to_le_bytes());
    hash_str(&mut h, &log.severity_text);
    hash_str(&mut h, &log.event_name);
    h.update(log.trace_id.unwrap_or_default());
    h.update(log.span_id.unwrap_or_default());
    h.update((log.attributes.len() as u64).to_le_bytes());
    for (k, v) in &log.attributes {
        hash_str(&mut h, k);
        hash_value(&mut h, v);
    }
    match &raw.body {
        Some(b) => hash_value(&mut h, b),
        None => h.update([0xff]),
    }
    uuid_v7(nanos, &h.finalize())
}

fn uuid_v7(nanos: u64, digest: &[u8]) -> Uuid {
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(nanos / 1_000_000, &bits).into_uuid()
}

/// Length-prefixed, so that concatenations cannot collide.
fn hash_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// A type tag, then the content (length-prefixed).
fn hash_value(h: &mut Sha256, v: &OtlpValue) {
    match v {
        OtlpValue::Str(s) => {
            h.update([1]);
            hash_str(h, s);
        }
        OtlpValue::Int(i) => {
            h.update([2]);
            h.update(i.to_le_bytes());
        }
        OtlpValue::Double(d) => {
            h.update([3]);
            h.update(d.to_bits().to_le_bytes());
        }
        OtlpValue::Bool(b) => h.update([4, u8::from(*b)]),
        OtlpValue::Bytes(b) => {
            h.update([5]);
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        OtlpValue::Array(items) => {
            h.update([6]);
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(h, item);
            }
        }
        OtlpValue::KvList(entries) => {
            h.update([7]);
            h.update((entries.len() as u64).to_le_bytes());
            for (k, v) in entries {
                hash_str(h, k);
                hash_value(h, v);
            }
        }
    }
}

/// What a span and a log record contribute beyond their attributes.
struct Base {
    event_id: Uuid,
    time: DateTime<Utc>,
    duration_ns: Option<i64>,
    severity: Severity,
    outcome: Outcome,
    /// The action when there is no `gen_ai.operation.name`: the span name or
    /// the log's event name.
    fallback_action: String,
    /// The action when that is blank too.
    default_action: &'static str,
    error_message: Option<String>,
    trace: TraceContext,
}

/// The typed fields read so far, and the attributes to keep.
#[derive(Default)]
struct Fields {
    gen_ai: GenAi,
    actor: Actor,
    error_kind: Option<String>,
    attrs: Attrs,
    flat: Flattened,
    /// Older attribute names, applied after the current ones so that the
    /// current name wins whatever the order.
    aliases: Vec<(String, OtlpValue)>,
}

/// Keys that fill typed columns. A span event's copy of one is ignored:
/// events cannot change the columns, and instrumentations repeat
/// `gen_ai.system` on every event.
fn is_column_key(key: &str) -> bool {
    matches!(
        key,
        keys::GEN_AI_OPERATION
            | keys::GEN_AI_PROVIDER
            | keys::GEN_AI_REQUEST_MODEL
            | keys::GEN_AI_RESPONSE_MODEL
            | keys::GEN_AI_INPUT_TOKENS
            | keys::GEN_AI_OUTPUT_TOKENS
            | keys::GEN_AI_CONVERSATION_ID
            | keys::GEN_AI_AGENT_NAME
            | keys::GEN_AI_TOOL_NAME
            | keys::GEN_AI_TEMPERATURE
            | keys::ERROR_TYPE
            | keys::ACTOR_ID
            | keys::ACTOR_SESSION
            | keys::ACTOR_IP
            | GEN_AI_SYSTEM
            | PROMPT_TOKENS
            | COMPLETION_TOKENS
            | LLM_REQUEST_TYPE
    )
}

impl Fields {
    fn take(&mut self, key: String, v: OtlpValue) {
        let attrs = &mut self.attrs;
        let g = &mut self.gen_ai;
        match key.as_str() {
            keys::GEN_AI_OPERATION => text(&mut g.operation, key, v, attrs),
            keys::GEN_AI_PROVIDER => text(&mut g.provider, key, v, attrs),
            keys::GEN_AI_REQUEST_MODEL => text(&mut g.request_model, key, v, attrs),
            keys::GEN_AI_RESPONSE_MODEL => text(&mut g.response_model, key, v, attrs),
            keys::GEN_AI_INPUT_TOKENS => count(&mut g.input_tokens, key, v, attrs),
            keys::GEN_AI_OUTPUT_TOKENS => count(&mut g.output_tokens, key, v, attrs),
            keys::GEN_AI_CONVERSATION_ID => text(&mut g.conversation_id, key, v, attrs),
            keys::GEN_AI_AGENT_NAME => text(&mut g.agent_name, key, v, attrs),
            keys::GEN_AI_TOOL_NAME => text(&mut g.tool_name, key, v, attrs),
            keys::GEN_AI_TEMPERATURE => temperature(&mut g.temperature, key, v, attrs),
            keys::ERROR_TYPE => text(&mut self.error_kind, key, v, attrs),
            keys::ACTOR_ID => text(&mut self.actor.id, key, v, attrs),
            keys::ACTOR_SESSION => text(&mut self.actor.session, key, v, attrs),
            keys::ACTOR_IP => text(&mut self.actor.ip, key, v, attrs),
            GEN_AI_SYSTEM | PROMPT_TOKENS | COMPLETION_TOKENS | LLM_REQUEST_TYPE => {
                self.aliases.push((key, v));
            }
            _ => self.keep(key, v),
        }
    }

    fn take_from_span_event(&mut self, key: String, v: OtlpValue) {
        if !is_column_key(&key) {
            self.keep(key, v);
        }
    }

    /// A free-form attribute: gathered if it is one of a flattened family,
    /// kept under its own key otherwise.
    fn keep(&mut self, key: String, v: OtlpValue) {
        match self.flat.insert(&key, v) {
            Ok(()) => {}
            Err(v) => self.attrs.insert(key, into_text(v)),
        }
    }

    /// Older names fill a column the current name left empty; otherwise
    /// they are kept as attributes.
    fn resolve_aliases(&mut self) {
        let attrs = &mut self.attrs;
        let g = &mut self.gen_ai;
        for (key, v) in self.aliases.drain(..) {
            match key.as_str() {
                GEN_AI_SYSTEM => text(&mut g.provider, key, v, attrs),
                PROMPT_TOKENS => count(&mut g.input_tokens, key, v, attrs),
                COMPLETION_TOKENS => count(&mut g.output_tokens, key, v, attrs),
                LLM_REQUEST_TYPE => match v {
                    OtlpValue::Str(s) if g.operation.is_none() && s.len() <= MAX_SHORT_BYTES => {
                        g.operation = Some(operation_from_request_type(s));
                    }
                    v => attrs.insert(key, into_text(v)),
                },
                _ => attrs.insert(key, into_text(v)),
            }
        }
    }

    fn build(self, base: Base, origin: &Origin<'_>) -> AuditEvent {
        let Fields {
            gen_ai,
            actor,
            mut error_kind,
            mut attrs,
            flat,
            aliases: _,
        } = self;
        for (key, value) in flat.finish() {
            attrs.insert(key, value.to_text());
        }
        let (scope_name, scope_version) = origin.scope;
        if !scope_name.is_empty() {
            attrs.insert_if_absent("otel.scope.name", scope_name);
        }
        if !scope_version.is_empty() {
            attrs.insert_if_absent("otel.scope.version", scope_version);
        }
        let failed = base.outcome == Outcome::Failure;
        if failed && error_kind.is_none() {
            // A span's `exception` event names the error's type when the
            // instrumentation did not set `error.type`.
            error_kind = attrs
                .single("exception.type")
                .filter(|t| t.len() <= MAX_SHORT_BYTES)
                .map(str::to_owned);
        }

        let category = if gen_ai.operation.as_deref() == Some("execute_tool")
            || (gen_ai.tool_name.is_some()
                && gen_ai.request_model.is_none()
                && gen_ai.response_model.is_none())
        {
            Category::Tool
        } else {
            Category::Inference
        };
        let mut redactions = Vec::new();
        let action = match gen_ai.operation.as_deref() {
            Some(op) if !op.trim().is_empty() => format!("gen_ai.{op}"),
            _ if !base.fallback_action.trim().is_empty() => base.fallback_action,
            _ => base.default_action.to_owned(),
        };
        let action = cut_to(action, MAX_ACTION_BYTES, "action", &mut redactions);

        AuditEvent {
            event_id: base.event_id,
            time: base.time,
            duration_ns: base.duration_ns,
            severity: base.severity,
            tenant: origin.tenant.to_owned(),
            service: origin.service.clone(),
            actor,
            category,
            action,
            outcome: base.outcome,
            target: Target::default(),
            error: ErrorInfo {
                kind: error_kind,
                message: base.error_message,
            },
            gen_ai,
            safety: Safety::default(),
            content_digests: Vec::new(),
            sealed_content: Vec::new(),
            trace: base.trace,
            attributes: attrs.finish(),
            redactions,
        }
    }
}

/// OpenLLMetry's `llm.request.type` values in the current convention's
/// words.
fn operation_from_request_type(s: String) -> String {
    match s.as_str() {
        "completion" => "text_completion".to_owned(),
        "embedding" => "embeddings".to_owned(),
        _ => s,
    }
}

/// A string column: set from a string that fits, when not set yet;
/// otherwise the value is kept as an attribute under its key.
fn text(slot: &mut Option<String>, key: String, v: OtlpValue, attrs: &mut Attrs) {
    match v {
        OtlpValue::Str(s) if slot.is_none() && s.len() <= MAX_SHORT_BYTES => *slot = Some(s),
        v => attrs.insert(key, into_text(v)),
    }
}

/// A token count: a non-negative int; otherwise kept as an attribute.
fn count(slot: &mut Option<i64>, key: String, v: OtlpValue, attrs: &mut Attrs) {
    match v {
        OtlpValue::Int(i) if slot.is_none() && i >= 0 => *slot = Some(i),
        v => attrs.insert(key, into_text(v)),
    }
}

/// The temperature: a finite double, or an int (dynamic languages send `1`
/// as an int); otherwise kept as an attribute.
fn temperature(slot: &mut Option<f64>, key: String, v: OtlpValue, attrs: &mut Attrs) {
    match v {
        OtlpValue::Double(d) if slot.is_none() && d.is_finite() => *slot = Some(d),
        OtlpValue::Int(i) if slot.is_none() => *slot = Some(i as f64),
        v => attrs.insert(key, into_text(v)),
    }
}

/// Cuts `text` to `max` bytes on a character boundary, recording the cut.
fn cut_to(mut text: String, max: usize, field: &str, redactions: &mut Vec<Redaction>) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        redactions.push(Redaction {
            field: field.to_owned(),
            method: RedactionMethod::Truncate,
            detector: None,
            key_id: None,
        });
    }
    text
}

/// The free-form attributes being collected.
#[derive(Default)]
struct Attrs {
    map: BTreeMap<String, Slot>,
    /// Attributes left out because their key is blank or too long.
    dropped: usize,
}

enum Slot {
    One(String),
    /// The same key more than once (a repeated attribute, a span event's
    /// attribute with the span's key, a gathered family next to its plain
    /// attribute): every value, in order.
    Many(Vec<String>),
}

impl Attrs {
    fn insert(&mut self, key: String, text: String) {
        if key.trim().is_empty() || key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            // A cut key could collide with another, and its meaning is lost
            // anyway: counted instead.
            self.dropped += 1;
            return;
        }
        match self.map.entry(key) {
            Entry::Vacant(e) => {
                e.insert(Slot::One(text));
            }
            Entry::Occupied(mut e) => match e.get_mut() {
                Slot::Many(all) => all.push(text),
                slot @ Slot::One(_) => {
                    let Slot::One(first) = std::mem::replace(slot, Slot::Many(Vec::new())) else {
                        unreachable!("matched Slot::One above")
                    };
                    *slot = Slot::Many(vec![first, text]);
                }
            },
        }
    }

    fn insert_if_absent(&mut self, key: &str, text: &str) {
        if !self.map.contains_key(key) {
            self.insert(key.to_owned(), text.to_owned());
        }
    }

    /// The value of a key that occurs once.
    fn single(&self, key: &str) -> Option<&str> {
        match self.map.get(key)? {
            Slot::One(s) => Some(s),
            Slot::Many(_) => None,
        }
    }

    /// The attributes within [`MAX_ATTRIBUTES`]: when there are more, the
    /// last keys (in key order) go first, `gen_ai.*` ones only after every
    /// other; the number left out is recorded as
    /// `otel_audit.dropped_attributes`.
    fn finish(self) -> BTreeMap<String, String> {
        let Attrs { map, mut dropped } = self;
        let mut out: BTreeMap<String, String> = map
            .into_iter()
            .map(|(k, slot)| {
                let text = match slot {
                    Slot::One(s) => s,
                    Slot::Many(all) => {
                        OtlpValue::Array(all.into_iter().map(OtlpValue::Str).collect()).to_text()
                    }
                };
                (k, text)
            })
            .collect();
        let over = out.len() > MAX_ATTRIBUTES || (dropped > 0 && out.len() >= MAX_ATTRIBUTES);
        if over {
            // One place stays free for the marker.
            let excess = out.len() - (MAX_ATTRIBUTES - 1);
            let mut remove: Vec<String> = out
                .keys()
                .rev()
                .filter(|k| !is_gen_ai_key(k))
                .take(excess)
                .cloned()
                .collect();
            if remove.len() < excess {
                let more = excess - remove.len();
                remove.extend(
                    out.keys()
                        .rev()
                        .filter(|k| is_gen_ai_key(k))
                        .take(more)
                        .cloned(),
                );
            }
            for k in &remove {
                out.remove(k);
            }
            dropped += remove.len();
        }
        if dropped > 0 {
            out.insert(DROPPED_ATTRIBUTES.to_owned(), dropped.to_string());
        }
        out
    }
}

/// One step of a flattened key: an index, or a name.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Index(u64),
    Name(String),
}

impl Seg {
    fn parse(s: &str) -> Seg {
        match index(s) {
            Some(i) => Seg::Index(i),
            None => Seg::Name(s.to_owned()),
        }
    }
}

/// A decimal index without leading zeros (so `01` and `1` cannot collide).
fn index(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

enum Node {
    Leaf(OtlpValue),
    Branch(BTreeMap<Seg, Node>),
}

/// The flattened families being gathered (see [`FLATTENED`]).
#[derive(Default)]
struct Flattened {
    roots: [Option<BTreeMap<Seg, Node>>; FLATTENED.len()],
}

impl Flattened {
    /// Gathers `key` if it belongs to a family (`<prefix>.<index>[.<name>...]`);
    /// gives the value back when it does not, or when it conflicts with a
    /// value already gathered (`x.0.content` and `x.0.content.type`).
    fn insert(&mut self, key: &str, value: OtlpValue) -> Result<(), OtlpValue> {
        // Longer keys are dropped as attributes anyway; the bound also keeps
        // the tree's depth (and the recursion in `node_value`) small.
        if key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(value);
        }
        let Some((family, rest)) = FLATTENED.iter().enumerate().find_map(|(i, p)| {
            let rest = key.strip_prefix(p)?.strip_prefix('.')?;
            let first = rest.split('.').next()?;
            index(first).map(|_| (i, rest))
        }) else {
            return Err(value);
        };
        let mut segs = rest.split('.').map(Seg::parse);
        let mut map = self.roots[family].get_or_insert_with(BTreeMap::new);
        let Some(mut seg) = segs.next() else {
            return Err(value);
        };
        loop {
            match segs.next() {
                None => {
                    return match map.entry(seg) {
                        Entry::Vacant(e) => {
                            e.insert(Node::Leaf(value));
                            Ok(())
                        }
                        Entry::Occupied(_) => Err(value),
                    };
                }
                Some(next) => {
                    map = match map
                        .entry(seg)
                        .or_insert_with(|| Node::Branch(BTreeMap::new()))
                    {
                        Node::Branch(m) => m,
                        Node::Leaf(_) => return Err(value),
                    };
                    seg = next;
                }
            }
        }
    }

    /// Each gathered family as one value: an array in index order, of
    /// objects whose keys are sorted (so the text does not depend on the
    /// order the attributes came in).
    fn finish(self) -> Vec<(String, OtlpValue)> {
        FLATTENED
            .iter()
            .zip(self.roots)
            .filter_map(|(p, root)| Some(((*p).to_owned(), branch_value(root?))))
            .collect()
    }
}

fn branch_value(map: BTreeMap<Seg, Node>) -> OtlpValue {
    if map.keys().all(|k| matches!(k, Seg::Index(_))) {
        OtlpValue::Array(map.into_values().map(node_value).collect())
    } else {
        OtlpValue::KvList(
            map.into_iter()
                .map(|(k, n)| {
                    let name = match k {
                        Seg::Index(i) => i.to_string(),
                        Seg::Name(s) => s,
                    };
                    (name, node_value(n))
                })
                .collect(),
        )
    }
}

fn node_value(node: Node) -> OtlpValue {
    match node {
        Node::Leaf(v) => v,
        Node::Branch(map) => branch_value(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> OtlpValue {
        OtlpValue::Str(t.to_owned())
    }

    fn origin_service() -> Service {
        Service {
            name: "svc".into(),
            ..Service::default()
        }
    }

    fn span(attributes: Vec<(&str, OtlpValue)>) -> RawSpan {
        RawSpan {
            name: "chat gpt-4o".into(),
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            start: 1_760_000_000_000_000_000,
            end: 1_760_000_000_500_000_000,
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            events: Vec::new(),
            status_error: false,
            status_message: String::new(),
        }
    }

    fn map(span: RawSpan) -> AuditEvent {
        let service = origin_service();
        let origin = Origin {
            tenant: "acme",
            service: &service,
            scope: ("", ""),
        };
        from_span(span, &origin).expect("maps")
    }

    #[test]
    fn current_names_win_over_older_ones_in_any_order() {
        let e = map(span(vec![
            ("gen_ai.system", s("old")),
            ("gen_ai.usage.prompt_tokens", OtlpValue::Int(1)),
            ("gen_ai.provider.name", s("new")),
            ("gen_ai.usage.input_tokens", OtlpValue::Int(2)),
            ("gen_ai.usage.completion_tokens", OtlpValue::Int(3)),
        ]));
        assert_eq!(e.gen_ai.provider.as_deref(), Some("new"));
        assert_eq!(e.gen_ai.input_tokens, Some(2));
        assert_eq!(e.gen_ai.output_tokens, Some(3));
        assert_eq!(e.attributes["gen_ai.system"], "old");
        assert_eq!(e.attributes["gen_ai.usage.prompt_tokens"], "1");
        assert!(!e.attributes.contains_key("gen_ai.usage.completion_tokens"));
    }

    #[test]
    fn values_a_column_cannot_hold_stay_attributes() {
        let long = "m".repeat(MAX_SHORT_BYTES + 1);
        let e = map(span(vec![
            ("gen_ai.request.model", s(&long)),
            ("gen_ai.usage.input_tokens", OtlpValue::Int(-1)),
            ("gen_ai.usage.output_tokens", s("12")),
            ("gen_ai.request.temperature", OtlpValue::Double(f64::NAN)),
            ("gen_ai.agent.name", OtlpValue::Int(7)),
            ("gen_ai.tool.name", s("a")),
            ("gen_ai.tool.name", s("b")),
        ]));
        assert_eq!(e.gen_ai.request_model, None);
        assert_eq!(e.attributes["gen_ai.request.model"], long);
        assert_eq!(e.gen_ai.input_tokens, None);
        assert_eq!(e.attributes["gen_ai.usage.input_tokens"], "-1");
        assert_eq!(e.attributes["gen_ai.usage.output_tokens"], "12");
        assert_eq!(e.attributes["gen_ai.request.temperature"], "NaN");
        assert_eq!(e.attributes["gen_ai.agent.name"], "7");
        assert_eq!(e.gen_ai.tool_name.as_deref(), Some("a"));
        assert_eq!(e.attributes["gen_ai.tool.name"], "b");
        e.validate().expect("valid");
    }

    #[test]
    fn flattened_families_are_gathered() {
        let e = map(span(vec![
            ("gen_ai.prompt.1.content", s("second")),
            ("gen_ai.prompt.0.role", s("system")),
            ("gen_ai.prompt.0.content", s("first")),
            ("gen_ai.prompt.1.role", s("user")),
            ("gen_ai.completion.0.tool_calls.0.name", s("search")),
            ("gen_ai.completion.0.tool_calls.0.arguments", s("{\"q\":1}")),
            ("gen_ai.completion.0.role", s("assistant")),
            // Conflicts with the leaf above: kept as it is.
            ("gen_ai.prompt.0.role.x", s("odd")),
            // Not an index: not a family member.
            ("gen_ai.prompt.tokens", OtlpValue::Int(3)),
            ("gen_ai.prompt.01.role", s("lead")),
        ]));
        assert_eq!(
            e.attributes["gen_ai.prompt"],
            r#"[{"content":"first","role":"system"},{"content":"second","role":"user"}]"#
        );
        assert_eq!(
            e.attributes["gen_ai.completion"],
            r#"[{"role":"assistant","tool_calls":[{"arguments":"{\"q\":1}","name":"search"}]}]"#
        );
        assert_eq!(e.attributes["gen_ai.prompt.0.role.x"], "odd");
        assert_eq!(e.attributes["gen_ai.prompt.tokens"], "3");
        assert_eq!(e.attributes["gen_ai.prompt.01.role"], "lead");
    }

    #[test]
    fn repeated_keys_become_an_array() {
        let mut sp = span(vec![
            ("gen_ai.prompt", s("[{\"role\":\"user\"}]")),
            ("gen_ai.prompt.0.role", s("user")),
            ("x", s("1")),
        ]);
        sp.events = vec![
            vec![("x".into(), s("2")), ("gen_ai.system".into(), s("ignored"))],
            vec![("x".into(), OtlpValue::Int(3))],
        ];
        let e = map(sp);
        assert_eq!(e.attributes["x"], r#"["1","2","3"]"#);
        assert_eq!(
            e.attributes["gen_ai.prompt"],
            r#"["[{\"role\":\"user\"}]","[{\"role\":\"user\"}]"]"#
        );
        assert!(!e.attributes.contains_key("gen_ai.system"));
    }

    #[test]
    fn attribute_limits() {
        let mut attrs: Vec<(&str, OtlpValue)> = vec![("gen_ai.operation.name", s("chat"))];
        let names: Vec<String> = (0..MAX_ATTRIBUTES + 10)
            .map(|i| format!("a.{i:04}"))
            .collect();
        for n in &names {
            attrs.push((n, s("v")));
        }
        let genai: Vec<String> = (0..5).map(|i| format!("gen_ai.x{i}")).collect();
        for n in &genai {
            attrs.push((n, s("v")));
        }
        let long_key = "k".repeat(MAX_ATTRIBUTE_KEY_BYTES + 1);
        attrs.push((&long_key, s("v")));
        attrs.push(("", s("v")));
        let e = map(span(attrs));
        assert_eq!(e.attributes.len(), MAX_ATTRIBUTES);
        // 266 + 5 kept-candidates, 255 kept: 16 cut plus the two bad keys.
        assert_eq!(e.attributes[DROPPED_ATTRIBUTES], "18");
        for n in &genai {
            assert!(e.attributes.contains_key(n), "{n}");
        }
        assert!(e.attributes.contains_key("a.0000"));
        assert!(!e.attributes.contains_key("a.0265"));
        e.validate().expect("valid");
    }

    #[test]
    fn a_long_span_name_is_cut_and_recorded() {
        let mut sp = span(vec![("gen_ai.request.model", s("m"))]);
        sp.name = "é".repeat(MAX_ACTION_BYTES);
        let e = map(sp);
        assert_eq!(e.action.len(), MAX_ACTION_BYTES);
        assert_eq!(e.redactions[0].field, "action");
        assert_eq!(e.redactions[0].method, RedactionMethod::Truncate);
        e.validate().expect("valid");
    }

    #[test]
    fn event_ids_are_deterministic_v7() {
        let a = map(span(vec![("gen_ai.request.model", s("m"))]));
        let b = map(span(vec![("gen_ai.request.model", s("other"))]));
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_id.get_version_num(), 7);
        let mut other = span(vec![]);
        other.span_id = [3; 8];
        assert_ne!(map(other).event_id, a.event_id);
        let ms = a.event_id.get_timestamp().expect("v7").to_unix();
        assert_eq!(ms.0, 1_760_000_000);
    }

    #[test]
    fn resource_service() {
        let s = |k: &str, v: &str| (k.to_owned(), OtlpValue::Str(v.to_owned()));
        let svc = service(&[
            s("deployment.environment", "old"),
            s("service.name", "api"),
            s("host.name", &"h".repeat(MAX_SHORT_BYTES + 1)),
        ]);
        assert_eq!(svc.name, "api");
        assert_eq!(svc.environment.as_deref(), Some("old"));
        assert_eq!(svc.host, None);
        let svc = service(&[
            s("deployment.environment.name", "new"),
            s("deployment.environment", "old"),
            ("service.name".to_owned(), OtlpValue::Int(1)),
        ]);
        assert_eq!(svc.name, UNKNOWN_SERVICE);
        assert_eq!(svc.environment.as_deref(), Some("new"));
    }
}
