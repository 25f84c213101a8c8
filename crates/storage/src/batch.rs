//! Records to Arrow record batches and back.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder,
    ListBuilder, MapBuilder, MapFieldNames, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
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

/// A top-level text column's value in a record. The buffer is room for
/// texts the record does not hold as such (the event id, a UUID).
pub(crate) type TextOf = for<'a> fn(&'a Record, &'a mut [u8; 36]) -> Option<&'a str>;

/// The top-level text columns of the stored schema, in schema order, and
/// where each one's value is in a record. The file encoder writes these
/// itself (`textcol`); every other column goes through Arrow
/// ([`other_columns`]).
pub(crate) const TEXT_COLUMNS: [(&str, TextOf); 31] = [
    ("event_id", |r, b| {
        Some(r.event.event_id.hyphenated().encode_lower(b))
    }),
    ("severity", |r, _| Some(r.event.severity.as_str())),
    ("tenant", |r, _| Some(&r.event.tenant)),
    ("service_name", |r, _| Some(&r.event.service.name)),
    ("service_version", |r, _| r.event.service.version.as_deref()),
    ("service_environment", |r, _| {
        r.event.service.environment.as_deref()
    }),
    ("service_host", |r, _| r.event.service.host.as_deref()),
    ("actor_id", |r, _| r.event.actor.id.as_deref()),
    ("actor_type", |r, _| r.event.actor.kind.map(|k| k.as_str())),
    ("actor_role", |r, _| r.event.actor.role.as_deref()),
    ("actor_ip", |r, _| r.event.actor.ip.as_deref()),
    ("actor_session", |r, _| r.event.actor.session.as_deref()),
    ("category", |r, _| Some(r.event.category.as_str())),
    ("action", |r, _| Some(&r.event.action)),
    ("outcome", |r, _| Some(r.event.outcome.as_str())),
    ("target_type", |r, _| r.event.target.kind.as_deref()),
    ("target_id", |r, _| r.event.target.id.as_deref()),
    ("error_type", |r, _| r.event.error.kind.as_deref()),
    ("error_message", |r, _| r.event.error.message.as_deref()),
    ("gen_ai_provider", |r, _| r.event.gen_ai.provider.as_deref()),
    ("gen_ai_operation", |r, _| {
        r.event.gen_ai.operation.as_deref()
    }),
    ("gen_ai_request_model", |r, _| {
        r.event.gen_ai.request_model.as_deref()
    }),
    ("gen_ai_response_model", |r, _| {
        r.event.gen_ai.response_model.as_deref()
    }),
    ("gen_ai_conversation_id", |r, _| {
        r.event.gen_ai.conversation_id.as_deref()
    }),
    ("gen_ai_agent_name", |r, _| {
        r.event.gen_ai.agent_name.as_deref()
    }),
    ("gen_ai_tool_name", |r, _| {
        r.event.gen_ai.tool_name.as_deref()
    }),
    ("safety_block_reason", |r, _| {
        r.event.safety.block_reason.as_deref()
    }),
    ("trace_id", |r, _| r.event.trace.trace_id.as_deref()),
    ("span_id", |r, _| r.event.trace.span_id.as_deref()),
    ("parent_span_id", |r, _| {
        r.event.trace.parent_span_id.as_deref()
    }),
    ("chain_id", |r, _| Some(&r.chain_id)),
];

/// The stored schema without its top-level text columns: the columns
/// [`other_columns`] builds, in schema order.
pub(crate) fn other_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let full = schema::schema();
            Arc::new(Schema::new(
                full.fields()
                    .iter()
                    .filter(|f| !is_text_column(f.name()))
                    .cloned()
                    .collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// Whether `name` is one of [`TEXT_COLUMNS`].
pub(crate) fn is_text_column(name: &str) -> bool {
    TEXT_COLUMNS.iter().any(|(n, _)| *n == name)
}

/// Converts records into one batch of the stored schema, in the given order.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut uuid_text = [0u8; 36];
    let mut builders: Vec<StringBuilder> = TEXT_COLUMNS
        .iter()
        .map(|_| StringBuilder::with_capacity(records.len(), records.len() * 8))
        .collect();
    // A run of records at a time, as the file encoder goes: their texts stay
    // in the CPU's caches while every column reads them.
    for run in records.chunks(64) {
        for (b, (_, text_of)) in builders.iter_mut().zip(&TEXT_COLUMNS) {
            for r in run {
                b.append_option(text_of(r, &mut uuid_text));
            }
        }
    }
    let mut texts = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef);
    let mut others = other_columns(records)?.into_iter();
    let columns = schema::schema()
        .fields()
        .iter()
        .map(|f| {
            if is_text_column(f.name()) {
                texts.next()
            } else {
                others.next()
            }
            .expect("one column per field")
        })
        .collect();
    RecordBatch::try_new(schema::schema(), columns)
}

/// The columns of [`other_schema`] for `records`, in its order.
pub(crate) fn other_columns(records: &[Record]) -> Result<Vec<ArrayRef>, arrow_schema::ArrowError> {
    let n = records.len();
    let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut time = ts();
    let mut received_at = ts();
    let mut duration_ns = Int64Builder::with_capacity(n);
    let mut input_tokens = Int64Builder::with_capacity(n);
    let mut output_tokens = Int64Builder::with_capacity(n);
    let mut temperature = Float64Builder::with_capacity(n);
    let mut safety_passed = BooleanBuilder::with_capacity(n);
    let mut detectors =
        ListBuilder::new(StringBuilder::new()).with_field(list_field(DataType::Utf8));
    let mut digests = ListBuilder::new(StructBuilder::from_fields(content_digest_fields(), 0))
        .with_field(list_field(DataType::Struct(content_digest_fields())));
    let mut sealed = ListBuilder::new(StructBuilder::from_fields(sealed_content_fields(), 0))
        .with_field(list_field(DataType::Struct(sealed_content_fields())));
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
    let mut seq = Int64Builder::with_capacity(n);
    let mut prev_hash = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut hash = FixedSizeBinaryBuilder::with_capacity(n, 32);

    for r in records {
        let e = &r.event;
        time.append_value(e.time.timestamp_micros());
        received_at.append_value(r.received_at.timestamp_micros());
        duration_ns.append_option(e.duration_ns);
        let g = &e.gen_ai;
        input_tokens.append_option(g.input_tokens);
        output_tokens.append_option(g.output_tokens);
        temperature.append_option(g.temperature);
        safety_passed.append_option(e.safety.passed);
        for d in &e.safety.detectors {
            detectors.values().append_value(d);
        }
        detectors.append(true);
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
        seq.append_value(r.seq as i64);
        prev_hash.append_value(r.prev_hash)?;
        hash.append_value(r.hash)?;
    }

    Ok(vec![
        Arc::new(time.finish()),
        Arc::new(received_at.finish()),
        Arc::new(duration_ns.finish()),
        Arc::new(input_tokens.finish()),
        Arc::new(output_tokens.finish()),
        Arc::new(temperature.finish()),
        Arc::new(safety_passed.finish()),
        Arc::new(detectors.finish()),
        Arc::new(digests.finish()),
        Arc::new(sealed.finish()),
        Arc::new(attributes.finish()),
        Arc::new(redactions.finish()),
        Arc::new(seq.finish()),
        Arc::new(prev_hash.finish()),
        Arc::new(hash.finish()),
    ])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder writes [`TEXT_COLUMNS`] into the leaves the schema has
    /// for its top-level texts, in order: a column added to the schema, or
    /// moved, must be added or moved there too.
    #[test]
    fn text_columns_are_the_schemas_top_level_texts_in_order() {
        let schema = schema::schema();
        let texts: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| f.data_type() == &DataType::Utf8)
            .map(|f| f.name().as_str())
            .collect();
        let ours: Vec<&str> = TEXT_COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(ours, texts);
        assert_eq!(
            other_schema().fields().len() + TEXT_COLUMNS.len(),
            schema::schema().fields().len()
        );
        assert!(
            other_schema()
                .fields()
                .iter()
                .all(|f| f.data_type() != &DataType::Utf8)
        );
    }
}
