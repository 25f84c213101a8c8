//! Records to Arrow record batches and back.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder,
    ListBuilder, MapBuilder, MapFieldNames, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use otel_audit_event::{
    Actor, AuditEvent, ContentDigest, ErrorInfo, GenAi, Record, Redaction, Safety, SealedContent,
    Service, Target, TraceContext,
};

use crate::error::DecodeError;
use crate::schema::{self, content_digest_fields, redaction_fields, sealed_content_fields};

fn list_field(item: DataType) -> Arc<Field> {
    Arc::new(Field::new("element", item, false))
}

/// Converts records into one batch of the stored schema, in the given order.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = records.len();
    let s = |cap: usize| StringBuilder::with_capacity(n, cap);
    let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut event_id = s(n * 36);
    let mut time = ts();
    let mut received_at = ts();
    let mut duration_ns = Int64Builder::with_capacity(n);
    let mut severity = s(n * 5);
    let mut tenant = s(n * 8);
    let mut svc = [s(n * 8), s(n * 4), s(n * 4), s(n * 8)];
    let mut actor = [s(n * 8), s(n * 4), s(n * 4), s(n * 8), s(n * 8)];
    let mut category = s(n * 8);
    let mut action = s(n * 12);
    let mut outcome = s(n * 7);
    let mut target = [s(n * 6), s(n * 8)];
    let mut error = [s(0), s(0)];
    let mut gen_str = [s(n * 6), s(n * 4), s(n * 8), s(n * 8)];
    let mut input_tokens = Int64Builder::with_capacity(n);
    let mut output_tokens = Int64Builder::with_capacity(n);
    let mut gen_str2 = [s(n * 8), s(0), s(0)];
    let mut temperature = Float64Builder::with_capacity(n);
    let mut safety_passed = BooleanBuilder::with_capacity(n);
    let mut detectors =
        ListBuilder::new(StringBuilder::new()).with_field(list_field(DataType::Utf8));
    let mut block_reason = s(0);
    let mut digests = ListBuilder::new(StructBuilder::from_fields(content_digest_fields(), 0))
        .with_field(list_field(DataType::Struct(content_digest_fields())));
    let mut sealed = ListBuilder::new(StructBuilder::from_fields(sealed_content_fields(), 0))
        .with_field(list_field(DataType::Struct(sealed_content_fields())));
    let mut trace = [s(n * 32), s(n * 16), s(n * 16)];
    let mut attributes = MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
    .with_keys_field(Arc::new(Field::new("key", DataType::Utf8, false)))
    .with_values_field(Arc::new(Field::new("value", DataType::Utf8, false)));
    let mut redactions = ListBuilder::new(StructBuilder::from_fields(redaction_fields(), 0))
        .with_field(list_field(DataType::Struct(redaction_fields())));
    let mut chain_id = s(n * 16);
    let mut seq = Int64Builder::with_capacity(n);
    let mut prev_hash = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut hash = FixedSizeBinaryBuilder::with_capacity(n, 32);

    let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    for r in records {
        let e = &r.event;
        event_id.append_value(e.event_id.hyphenated().encode_lower(&mut uuid_text));
        time.append_value(e.time.timestamp_micros());
        received_at.append_value(r.received_at.timestamp_micros());
        duration_ns.append_option(e.duration_ns);
        severity.append_value(e.severity.as_str());
        tenant.append_value(&e.tenant);
        svc[0].append_value(&e.service.name);
        svc[1].append_option(e.service.version.as_deref());
        svc[2].append_option(e.service.environment.as_deref());
        svc[3].append_option(e.service.host.as_deref());
        actor[0].append_option(e.actor.id.as_deref());
        actor[1].append_option(e.actor.kind.map(|k| k.as_str()));
        actor[2].append_option(e.actor.role.as_deref());
        actor[3].append_option(e.actor.ip.as_deref());
        actor[4].append_option(e.actor.session.as_deref());
        category.append_value(e.category.as_str());
        action.append_value(&e.action);
        outcome.append_value(e.outcome.as_str());
        target[0].append_option(e.target.kind.as_deref());
        target[1].append_option(e.target.id.as_deref());
        error[0].append_option(e.error.kind.as_deref());
        error[1].append_option(e.error.message.as_deref());
        let g = &e.gen_ai;
        gen_str[0].append_option(g.provider.as_deref());
        gen_str[1].append_option(g.operation.as_deref());
        gen_str[2].append_option(g.request_model.as_deref());
        gen_str[3].append_option(g.response_model.as_deref());
        input_tokens.append_option(g.input_tokens);
        output_tokens.append_option(g.output_tokens);
        gen_str2[0].append_option(g.conversation_id.as_deref());
        gen_str2[1].append_option(g.agent_name.as_deref());
        gen_str2[2].append_option(g.tool_name.as_deref());
        temperature.append_option(g.temperature);
        safety_passed.append_option(e.safety.passed);
        for d in &e.safety.detectors {
            detectors.values().append_value(d);
        }
        detectors.append(true);
        block_reason.append_option(e.safety.block_reason.as_deref());
        for d in &e.content_digests {
            let b = digests.values();
            str_field(b, 0).append_value(&d.field);
            str_field(b, 1).append_value(d.algorithm.as_str());
            str_field(b, 2).append_option(d.key_id.as_deref());
            b.field_builder::<FixedSizeBinaryBuilder>(3)
                .expect("digest builder")
                .append_value(d.digest)?;
            b.append(true);
        }
        digests.append(true);
        for x in &e.sealed_content {
            let b = sealed.values();
            str_field(b, 0).append_value(&x.field);
            str_field(b, 1).append_value(&x.algorithm);
            str_field(b, 2).append_value(&x.key_id);
            bin_field(b, 3).append_value(&x.nonce);
            bin_field(b, 4).append_value(&x.ciphertext);
            b.append(true);
        }
        sealed.append(true);
        trace[0].append_option(e.trace.trace_id.as_deref());
        trace[1].append_option(e.trace.span_id.as_deref());
        trace[2].append_option(e.trace.parent_span_id.as_deref());
        for (k, v) in &e.attributes {
            attributes.keys().append_value(k);
            attributes.values().append_value(v);
        }
        attributes.append(true)?;
        for x in &e.redactions {
            let b = redactions.values();
            str_field(b, 0).append_value(&x.field);
            str_field(b, 1).append_value(x.method.as_str());
            str_field(b, 2).append_option(x.detector.as_deref());
            str_field(b, 3).append_option(x.key_id.as_deref());
            b.append(true);
        }
        redactions.append(true);
        chain_id.append_value(&r.chain_id);
        seq.append_value(r.seq as i64);
        prev_hash.append_value(r.prev_hash)?;
        hash.append_value(r.hash)?;
    }

    let [svc_name, svc_version, svc_env, svc_host] = svc.map(|mut b| b.finish());
    let [a_id, a_type, a_role, a_ip, a_session] = actor.map(|mut b| b.finish());
    let [t_type, t_id] = target.map(|mut b| b.finish());
    let [err_type, err_msg] = error.map(|mut b| b.finish());
    let [provider, operation, req_model, resp_model] = gen_str.map(|mut b| b.finish());
    let [conversation, agent, tool] = gen_str2.map(|mut b| b.finish());
    let [trace_id, span_id, parent_span_id] = trace.map(|mut b| b.finish());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(time.finish()),
        Arc::new(received_at.finish()),
        Arc::new(duration_ns.finish()),
        Arc::new(severity.finish()),
        Arc::new(tenant.finish()),
        Arc::new(svc_name),
        Arc::new(svc_version),
        Arc::new(svc_env),
        Arc::new(svc_host),
        Arc::new(a_id),
        Arc::new(a_type),
        Arc::new(a_role),
        Arc::new(a_ip),
        Arc::new(a_session),
        Arc::new(category.finish()),
        Arc::new(action.finish()),
        Arc::new(outcome.finish()),
        Arc::new(t_type),
        Arc::new(t_id),
        Arc::new(err_type),
        Arc::new(err_msg),
        Arc::new(provider),
        Arc::new(operation),
        Arc::new(req_model),
        Arc::new(resp_model),
        Arc::new(input_tokens.finish()),
        Arc::new(output_tokens.finish()),
        Arc::new(conversation),
        Arc::new(agent),
        Arc::new(tool),
        Arc::new(temperature.finish()),
        Arc::new(safety_passed.finish()),
        Arc::new(detectors.finish()),
        Arc::new(block_reason.finish()),
        Arc::new(digests.finish()),
        Arc::new(sealed.finish()),
        Arc::new(trace_id),
        Arc::new(span_id),
        Arc::new(parent_span_id),
        Arc::new(attributes.finish()),
        Arc::new(redactions.finish()),
        Arc::new(chain_id.finish()),
        Arc::new(seq.finish()),
        Arc::new(prev_hash.finish()),
        Arc::new(hash.finish()),
    ];
    RecordBatch::try_new(schema::schema(), columns)
}

fn str_field(b: &mut StructBuilder, i: usize) -> &mut StringBuilder {
    b.field_builder::<StringBuilder>(i)
        .expect("struct field is a string")
}

fn bin_field(b: &mut StructBuilder, i: usize) -> &mut BinaryBuilder {
    b.field_builder::<BinaryBuilder>(i)
        .expect("struct field is binary")
}

/// Typed access to one batch's columns, by the stored schema's positions.
struct Cols<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Cols<'a> {
    fn array(&self, name: &'static str) -> &'a ArrayRef {
        self.batch.column(schema::col(name))
    }
    fn opt_str(&self, name: &'static str, row: usize) -> Option<String> {
        let a = self.array(name).as_string::<i32>();
        a.is_valid(row).then(|| a.value(row).to_owned())
    }
    fn req_str(&self, name: &'static str, row: usize) -> Result<String, DecodeError> {
        self.opt_str(name, row).ok_or(DecodeError::Value {
            row,
            column: name,
            reason: "is null".into(),
        })
    }
    fn parse<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(
        &self,
        name: &'static str,
        row: usize,
    ) -> Result<T, DecodeError> {
        self.req_str(name, row)?
            .parse()
            .map_err(|e: E| DecodeError::Value {
                row,
                column: name,
                reason: e.to_string(),
            })
    }
    fn opt_i64(&self, name: &'static str, row: usize) -> Option<i64> {
        let a = self.array(name).as_primitive::<Int64Type>();
        a.is_valid(row).then(|| a.value(row))
    }
    fn time(&self, name: &'static str, row: usize) -> Result<DateTime<Utc>, DecodeError> {
        let a = self.array(name).as_primitive::<TimestampMicrosecondType>();
        if a.is_null(row) {
            return Err(DecodeError::Value {
                row,
                column: name,
                reason: "is null".into(),
            });
        }
        DateTime::from_timestamp_micros(a.value(row)).ok_or(DecodeError::Value {
            row,
            column: name,
            reason: "out of range".into(),
        })
    }
    fn hash(&self, name: &'static str, row: usize) -> Result<[u8; 32], DecodeError> {
        fixed32(self.array(name).as_fixed_size_binary().value(row)).ok_or(DecodeError::Value {
            row,
            column: name,
            reason: "not 32 bytes".into(),
        })
    }
    fn list(&self, name: &'static str, row: usize) -> ArrayRef {
        self.array(name).as_list::<i32>().value(row)
    }
}

/// `batch` with its dictionary-typed text columns turned into plain text
/// columns (a cheap clone of `batch` when there are none).
fn plain_text(batch: &RecordBatch) -> Result<RecordBatch, DecodeError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| schema::is_text_dictionary(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
    for (f, a) in schema.fields().iter().zip(batch.columns()) {
        if schema::is_text_dictionary(f.data_type()) {
            let d = a.as_dictionary::<Int32Type>();
            fields.push(f.as_ref().clone().with_data_type(DataType::Utf8));
            columns.push(arrow_select::take::take(d.values(), d.keys(), None)?);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(a.clone());
        }
    }
    let plain = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(plain, columns)?)
}

fn fixed32(b: &[u8]) -> Option<[u8; 32]> {
    b.try_into().ok()
}

fn struct_str(s: &StructArray, field: usize, i: usize) -> Option<String> {
    let a = s.column(field).as_string::<i32>();
    a.is_valid(i).then(|| a.value(i).to_owned())
}

/// Decodes a batch of the stored schema into records. Top-level text
/// columns may also be dictionaries of text, as verify decodes them.
pub fn batch_to_records(batch: &RecordBatch) -> Result<Vec<Record>, DecodeError> {
    let plain = plain_text(batch)?;
    let batch = &plain;
    schema::check_schema(batch.schema_ref()).map_err(DecodeError::Schema)?;
    let c = Cols { batch };
    let value = |row, column, reason: String| DecodeError::Value {
        row,
        column,
        reason,
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let event_id = c
            .req_str("event_id", row)?
            .parse()
            .map_err(|e: uuid::Error| value(row, "event_id", e.to_string()))?;
        let detectors = c.list("safety_detectors", row);
        let detectors = detectors.as_string::<i32>();
        let digests = c.list("content_digests", row);
        let digests = digests.as_struct();
        let mut content_digests = Vec::with_capacity(digests.len());
        for i in 0..digests.len() {
            content_digests.push(ContentDigest {
                field: struct_str(digests, 0, i).unwrap_or_default(),
                algorithm: struct_str(digests, 1, i)
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: otel_audit_event::ParseEnumError| {
                        value(row, "content_digests", e.to_string())
                    })?,
                key_id: struct_str(digests, 2, i),
                digest: fixed32(digests.column(3).as_fixed_size_binary().value(i))
                    .ok_or_else(|| value(row, "content_digests", "digest not 32 bytes".into()))?,
            });
        }
        let sealed = c.list("sealed_content", row);
        let sealed = sealed.as_struct();
        let sealed_content = (0..sealed.len())
            .map(|i| SealedContent {
                field: struct_str(sealed, 0, i).unwrap_or_default(),
                algorithm: struct_str(sealed, 1, i).unwrap_or_default(),
                key_id: struct_str(sealed, 2, i).unwrap_or_default(),
                nonce: sealed.column(3).as_binary::<i32>().value(i).to_vec(),
                ciphertext: sealed.column(4).as_binary::<i32>().value(i).to_vec(),
            })
            .collect();
        let attrs = c.array("attributes").as_map().value(row);
        let keys = attrs.column(0).as_string::<i32>();
        let vals = attrs.column(1).as_string::<i32>();
        let attributes: BTreeMap<String, String> = (0..attrs.len())
            .map(|i| (keys.value(i).to_owned(), vals.value(i).to_owned()))
            .collect();
        let reds = c.list("redactions", row);
        let reds = reds.as_struct();
        let mut redactions = Vec::with_capacity(reds.len());
        for i in 0..reds.len() {
            redactions.push(Redaction {
                field: struct_str(reds, 0, i).unwrap_or_default(),
                method: struct_str(reds, 1, i).unwrap_or_default().parse().map_err(
                    |e: otel_audit_event::ParseEnumError| value(row, "redactions", e.to_string()),
                )?,
                detector: struct_str(reds, 2, i),
                key_id: struct_str(reds, 3, i),
            });
        }
        let seq = c.opt_i64("seq", row).unwrap_or(-1);
        let seq =
            u64::try_from(seq).map_err(|_| value(row, "seq", format!("{seq} is negative")))?;
        let passed = c.array("safety_passed").as_boolean();
        let temperature = c.array("gen_ai_temperature").as_primitive::<Float64Type>();
        let actor_kind = match c.opt_str("actor_type", row) {
            Some(t) => Some(t.parse().map_err(|e: otel_audit_event::ParseEnumError| {
                value(row, "actor_type", e.to_string())
            })?),
            None => None,
        };
        let event = AuditEvent {
            event_id,
            time: c.time("time", row)?,
            duration_ns: c.opt_i64("duration_ns", row),
            severity: c.parse("severity", row)?,
            tenant: c.req_str("tenant", row)?,
            service: Service {
                name: c.req_str("service_name", row)?,
                version: c.opt_str("service_version", row),
                environment: c.opt_str("service_environment", row),
                host: c.opt_str("service_host", row),
            },
            actor: Actor {
                id: c.opt_str("actor_id", row),
                kind: actor_kind,
                role: c.opt_str("actor_role", row),
                ip: c.opt_str("actor_ip", row),
                session: c.opt_str("actor_session", row),
            },
            category: c.parse("category", row)?,
            action: c.req_str("action", row)?,
            outcome: c.parse("outcome", row)?,
            target: Target {
                kind: c.opt_str("target_type", row),
                id: c.opt_str("target_id", row),
            },
            error: ErrorInfo {
                kind: c.opt_str("error_type", row),
                message: c.opt_str("error_message", row),
            },
            gen_ai: GenAi {
                provider: c.opt_str("gen_ai_provider", row),
                operation: c.opt_str("gen_ai_operation", row),
                request_model: c.opt_str("gen_ai_request_model", row),
                response_model: c.opt_str("gen_ai_response_model", row),
                input_tokens: c.opt_i64("gen_ai_input_tokens", row),
                output_tokens: c.opt_i64("gen_ai_output_tokens", row),
                conversation_id: c.opt_str("gen_ai_conversation_id", row),
                agent_name: c.opt_str("gen_ai_agent_name", row),
                tool_name: c.opt_str("gen_ai_tool_name", row),
                temperature: temperature.is_valid(row).then(|| temperature.value(row)),
            },
            safety: Safety {
                passed: passed.is_valid(row).then(|| passed.value(row)),
                detectors: (0..detectors.len())
                    .map(|i| detectors.value(i).to_owned())
                    .collect(),
                block_reason: c.opt_str("safety_block_reason", row),
            },
            content_digests,
            sealed_content,
            trace: TraceContext {
                trace_id: c.opt_str("trace_id", row),
                span_id: c.opt_str("span_id", row),
                parent_span_id: c.opt_str("parent_span_id", row),
            },
            attributes,
            redactions,
        };
        out.push(Record {
            received_at: c.time("received_at", row)?,
            event,
            chain_id: c.req_str("chain_id", row)?,
            seq,
            prev_hash: c.hash(schema::PREV_HASH, row)?,
            hash: c.hash(schema::HASH, row)?,
        });
    }
    Ok(out)
}
