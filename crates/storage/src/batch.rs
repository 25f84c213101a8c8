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
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use otel_audit_event::{
    Actor, AuditEvent, CanonicalReader, ContentDigest, DecodeCanonicalError, ErrorInfo, GenAi,
    Record, Redaction, Safety, SealedContent, Service, Target, TraceContext,
};

use crate::error::DecodeError;
use crate::row::StoredRow;
use crate::schema::{self, content_digest_fields, redaction_fields, sealed_content_fields};

fn list_field(item: DataType) -> Arc<Field> {
    Arc::new(Field::new("element", item, false))
}

/// Converts rows (records, or rows held as their canonical bytes) into one
/// batch of the stored schema, in the given order.
pub fn rows_to_batch<R: StoredRow>(rows: &[R]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = BatchBuilder::with_capacity(rows.len());
    for r in rows {
        r.append_to(&mut b)?;
    }
    b.finish()
}

/// The column builders of one batch of the stored schema, filled a row at a
/// time from a [`Record`] or from a row's canonical bytes (the same values
/// either way: the canonical encoding is the stored columns in order).
#[derive(Debug)]
pub struct BatchBuilder {
    event_id: TextBuilder,
    time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    duration_ns: Int64Builder,
    severity: TextBuilder,
    tenant: TextBuilder,
    svc: [TextBuilder; 4],
    actor: [TextBuilder; 5],
    category: TextBuilder,
    action: TextBuilder,
    outcome: TextBuilder,
    target: [TextBuilder; 2],
    error: [TextBuilder; 2],
    gen_str: [TextBuilder; 4],
    input_tokens: Int64Builder,
    output_tokens: Int64Builder,
    gen_str2: [TextBuilder; 3],
    temperature: Float64Builder,
    safety_passed: BooleanBuilder,
    detectors: ListBuilder<StringBuilder>,
    block_reason: TextBuilder,
    digests: ListBuilder<StructBuilder>,
    sealed: ListBuilder<StructBuilder>,
    trace: [TextBuilder; 3],
    attributes: MapBuilder<TextBuilder, TextBuilder>,
    redactions: ListBuilder<StructBuilder>,
    chain_id: TextBuilder,
    seq: Int64Builder,
    prev_hash: FixedSizeBinaryBuilder,
    hash: FixedSizeBinaryBuilder,
}

impl BatchBuilder {
    /// Builders with room for `n` rows of typical size.
    pub fn with_capacity(n: usize) -> Self {
        let s = |cap: usize| TextBuilder::with_capacity(n, cap);
        let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        BatchBuilder {
            event_id: s(n * 36),
            time: ts(),
            received_at: ts(),
            duration_ns: Int64Builder::with_capacity(n),
            severity: s(n * 5),
            tenant: s(n * 8),
            svc: [s(n * 8), s(n * 4), s(n * 4), s(n * 8)],
            actor: [s(n * 8), s(n * 4), s(n * 4), s(n * 8), s(n * 8)],
            category: s(n * 8),
            action: s(n * 12),
            outcome: s(n * 7),
            target: [s(n * 6), s(n * 8)],
            error: [s(0), s(0)],
            gen_str: [s(n * 6), s(n * 4), s(n * 8), s(n * 8)],
            input_tokens: Int64Builder::with_capacity(n),
            output_tokens: Int64Builder::with_capacity(n),
            gen_str2: [s(n * 8), s(0), s(0)],
            temperature: Float64Builder::with_capacity(n),
            safety_passed: BooleanBuilder::with_capacity(n),
            detectors: ListBuilder::new(StringBuilder::new())
                .with_field(list_field(DataType::Utf8)),
            block_reason: s(0),
            digests: ListBuilder::new(StructBuilder::from_fields(content_digest_fields(), 0))
                .with_field(list_field(DataType::Struct(content_digest_fields()))),
            sealed: ListBuilder::new(StructBuilder::from_fields(sealed_content_fields(), 0))
                .with_field(list_field(DataType::Struct(sealed_content_fields()))),
            trace: [s(n * 32), s(n * 16), s(n * 16)],
            attributes: MapBuilder::new(
                Some(MapFieldNames {
                    entry: "key_value".into(),
                    key: "key".into(),
                    value: "value".into(),
                }),
                TextBuilder::new(),
                TextBuilder::new(),
            )
            .with_keys_field(Arc::new(Field::new("key", DataType::Binary, false)))
            .with_values_field(Arc::new(Field::new("value", DataType::Binary, false))),
            redactions: ListBuilder::new(StructBuilder::from_fields(redaction_fields(), 0))
                .with_field(list_field(DataType::Struct(redaction_fields()))),
            chain_id: s(n * 16),
            seq: Int64Builder::with_capacity(n),
            prev_hash: FixedSizeBinaryBuilder::with_capacity(n, 32),
            hash: FixedSizeBinaryBuilder::with_capacity(n, 32),
        }
    }

    /// Appends `r` as the next row.
    pub fn push_record(&mut self, r: &Record) -> Result<(), arrow_schema::ArrowError> {
        let e = &r.event;
        let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(e.event_id.hyphenated().encode_lower(&mut uuid_text));
        self.time.append_value(e.time.timestamp_micros());
        self.received_at
            .append_value(r.received_at.timestamp_micros());
        self.duration_ns.append_option(e.duration_ns);
        self.severity.append_value(e.severity.as_str());
        self.tenant.append_value(&e.tenant);
        let svc = &mut self.svc;
        svc[0].append_value(&e.service.name);
        svc[1].append_option(e.service.version.as_deref());
        svc[2].append_option(e.service.environment.as_deref());
        svc[3].append_option(e.service.host.as_deref());
        let actor = &mut self.actor;
        actor[0].append_option(e.actor.id.as_deref());
        actor[1].append_option(e.actor.kind.map(|k| k.as_str()));
        actor[2].append_option(e.actor.role.as_deref());
        actor[3].append_option(e.actor.ip.as_deref());
        actor[4].append_option(e.actor.session.as_deref());
        self.category.append_value(e.category.as_str());
        self.action.append_value(&e.action);
        self.outcome.append_value(e.outcome.as_str());
        self.target[0].append_option(e.target.kind.as_deref());
        self.target[1].append_option(e.target.id.as_deref());
        self.error[0].append_option(e.error.kind.as_deref());
        self.error[1].append_option(e.error.message.as_deref());
        let g = &e.gen_ai;
        let gen_str = &mut self.gen_str;
        gen_str[0].append_option(g.provider.as_deref());
        gen_str[1].append_option(g.operation.as_deref());
        gen_str[2].append_option(g.request_model.as_deref());
        gen_str[3].append_option(g.response_model.as_deref());
        self.input_tokens.append_option(g.input_tokens);
        self.output_tokens.append_option(g.output_tokens);
        let gen_str2 = &mut self.gen_str2;
        gen_str2[0].append_option(g.conversation_id.as_deref());
        gen_str2[1].append_option(g.agent_name.as_deref());
        gen_str2[2].append_option(g.tool_name.as_deref());
        self.temperature.append_option(g.temperature);
        self.safety_passed.append_option(e.safety.passed);
        for d in &e.safety.detectors {
            self.detectors.values().append_value(d);
        }
        self.detectors.append(true);
        self.block_reason
            .append_option(e.safety.block_reason.as_deref());
        for d in &e.content_digests {
            let b = self.digests.values();
            str_field(b, 0).append_value(&d.field);
            str_field(b, 1).append_value(d.algorithm.as_str());
            str_field(b, 2).append_option(d.key_id.as_deref());
            fixed_field(b, 3).append_value(d.digest)?;
            b.append(true);
        }
        self.digests.append(true);
        for x in &e.sealed_content {
            let b = self.sealed.values();
            str_field(b, 0).append_value(&x.field);
            str_field(b, 1).append_value(&x.algorithm);
            str_field(b, 2).append_value(&x.key_id);
            bin_field(b, 3).append_value(&x.nonce);
            bin_field(b, 4).append_value(&x.ciphertext);
            b.append(true);
        }
        self.sealed.append(true);
        self.trace[0].append_option(e.trace.trace_id.as_deref());
        self.trace[1].append_option(e.trace.span_id.as_deref());
        self.trace[2].append_option(e.trace.parent_span_id.as_deref());
        for (k, v) in &e.attributes {
            self.attributes.keys().append_value(k);
            self.attributes.values().append_value(v);
        }
        self.attributes.append(true)?;
        for x in &e.redactions {
            let b = self.redactions.values();
            str_field(b, 0).append_value(&x.field);
            str_field(b, 1).append_value(x.method.as_str());
            str_field(b, 2).append_option(x.detector.as_deref());
            str_field(b, 3).append_option(x.key_id.as_deref());
            b.append(true);
        }
        self.redactions.append(true);
        self.chain_id.append_value(&r.chain_id);
        self.seq.append_value(r.seq as i64);
        self.prev_hash.append_value(r.prev_hash)?;
        self.hash.append_value(r.hash)?;
        Ok(())
    }

    /// Appends the row whose canonical bytes are `canonical` (the output of
    /// [`Record::canonical_bytes`]) and whose stored hashes are `prev_hash`
    /// and `hash`, reading each field once, in order, straight into its
    /// column: no [`Record`] is built. Texts are copied as they are
    /// (enumeration values included), so bytes that are not a canonical
    /// encoding fail here only as far as their structure goes: check their
    /// hash first. On an error the builders hold part of the row: discard
    /// them.
    pub fn push_canonical(
        &mut self,
        canonical: &[u8],
        prev_hash: &[u8; 32],
        hash: &[u8; 32],
    ) -> Result<(), arrow_schema::ArrowError> {
        self.read_canonical(canonical)
            .map_err(|e| arrow_schema::ArrowError::ExternalError(Box::new(e)))?;
        self.prev_hash.append_value(prev_hash)?;
        self.hash.append_value(hash)
    }

    /// The canonical fields of [`push_canonical`](Self::push_canonical).
    /// What a builder could refuse (a digest of another size) the reader
    /// refuses first.
    fn read_canonical(&mut self, canonical: &[u8]) -> Result<(), DecodeCanonicalError> {
        let mut d = CanonicalReader::new(canonical);
        self.event_id.append_value(d.text_bytes("event_id")?);
        self.time.append_value(d.integer("time")?);
        self.received_at.append_value(d.integer("received_at")?);
        self.duration_ns
            .append_option(d.opt_integer("duration_ns")?);
        self.severity.append_value(d.text_bytes("severity")?);
        self.tenant.append_value(d.text_bytes("tenant")?);
        let svc = &mut self.svc;
        svc[0].append_value(d.text_bytes("service_name")?);
        svc[1].append_option(d.opt_text_bytes("service_version")?);
        svc[2].append_option(d.opt_text_bytes("service_environment")?);
        svc[3].append_option(d.opt_text_bytes("service_host")?);
        let actor = &mut self.actor;
        actor[0].append_option(d.opt_text_bytes("actor_id")?);
        actor[1].append_option(d.opt_text_bytes("actor_type")?);
        actor[2].append_option(d.opt_text_bytes("actor_role")?);
        actor[3].append_option(d.opt_text_bytes("actor_ip")?);
        actor[4].append_option(d.opt_text_bytes("actor_session")?);
        self.category.append_value(d.text_bytes("category")?);
        self.action.append_value(d.text_bytes("action")?);
        self.outcome.append_value(d.text_bytes("outcome")?);
        self.target[0].append_option(d.opt_text_bytes("target_type")?);
        self.target[1].append_option(d.opt_text_bytes("target_id")?);
        self.error[0].append_option(d.opt_text_bytes("error_type")?);
        self.error[1].append_option(d.opt_text_bytes("error_message")?);
        let gen_str = &mut self.gen_str;
        gen_str[0].append_option(d.opt_text_bytes("gen_ai_provider")?);
        gen_str[1].append_option(d.opt_text_bytes("gen_ai_operation")?);
        gen_str[2].append_option(d.opt_text_bytes("gen_ai_request_model")?);
        gen_str[3].append_option(d.opt_text_bytes("gen_ai_response_model")?);
        self.input_tokens
            .append_option(d.opt_integer("gen_ai_input_tokens")?);
        self.output_tokens
            .append_option(d.opt_integer("gen_ai_output_tokens")?);
        let gen_str2 = &mut self.gen_str2;
        gen_str2[0].append_option(d.opt_text_bytes("gen_ai_conversation_id")?);
        gen_str2[1].append_option(d.opt_text_bytes("gen_ai_agent_name")?);
        gen_str2[2].append_option(d.opt_text_bytes("gen_ai_tool_name")?);
        self.temperature
            .append_option(d.opt_float("gen_ai_temperature")?);
        self.safety_passed
            .append_option(d.opt_boolean("safety_passed")?);
        for _ in 0..d.list_len("safety_detectors")? {
            self.detectors
                .values()
                .append_value(d.text("safety_detectors")?);
        }
        self.detectors.append(true);
        self.block_reason
            .append_option(d.opt_text_bytes("safety_block_reason")?);
        for _ in 0..d.list_len("content_digests")? {
            let b = self.digests.values();
            str_field(b, 0).append_value(d.text("content_digests.field")?);
            str_field(b, 1).append_value(d.text("content_digests.algorithm")?);
            str_field(b, 2).append_option(d.opt_text("content_digests.key_id")?);
            let digest = d.digest("content_digests.digest")?;
            fixed_field(b, 3)
                .append_value(digest)
                .expect("32 bytes, the column's width");
            b.append(true);
        }
        self.digests.append(true);
        for _ in 0..d.list_len("sealed_content")? {
            let b = self.sealed.values();
            str_field(b, 0).append_value(d.text("sealed_content.field")?);
            str_field(b, 1).append_value(d.text("sealed_content.algorithm")?);
            str_field(b, 2).append_value(d.text("sealed_content.key_id")?);
            bin_field(b, 3).append_value(d.byte_string("sealed_content.nonce")?);
            bin_field(b, 4).append_value(d.byte_string("sealed_content.ciphertext")?);
            b.append(true);
        }
        self.sealed.append(true);
        self.trace[0].append_option(d.opt_text_bytes("trace_id")?);
        self.trace[1].append_option(d.opt_text_bytes("span_id")?);
        self.trace[2].append_option(d.opt_text_bytes("parent_span_id")?);
        for _ in 0..d.list_len("attributes")? {
            self.attributes
                .keys()
                .append_value(d.text_bytes("attributes.key")?);
            self.attributes
                .values()
                .append_value(d.text_bytes("attributes.value")?);
        }
        self.attributes
            .append(true)
            .expect("a value was appended for every key");
        for _ in 0..d.list_len("redactions")? {
            let b = self.redactions.values();
            str_field(b, 0).append_value(d.text("redactions.field")?);
            str_field(b, 1).append_value(d.text("redactions.method")?);
            str_field(b, 2).append_option(d.opt_text("redactions.detector")?);
            str_field(b, 3).append_option(d.opt_text("redactions.key_id")?);
            b.append(true);
        }
        self.redactions.append(true);
        self.chain_id.append_value(d.text_bytes("chain_id")?);
        self.seq.append_value(d.integer("seq")?);
        d.finish()
    }

    /// The batch of every row appended.
    pub fn finish(mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let [svc_name, svc_version, svc_env, svc_host] = texts(self.svc)?;
        let [a_id, a_type, a_role, a_ip, a_session] = texts(self.actor)?;
        let [t_type, t_id] = texts(self.target)?;
        let [err_type, err_msg] = texts(self.error)?;
        let [provider, operation, req_model, resp_model] = texts(self.gen_str)?;
        let [conversation, agent, tool] = texts(self.gen_str2)?;
        let [trace_id, span_id, parent_span_id] = texts(self.trace)?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(text(&mut self.event_id)?),
            Arc::new(self.time.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(text(&mut self.severity)?),
            Arc::new(text(&mut self.tenant)?),
            Arc::new(svc_name),
            Arc::new(svc_version),
            Arc::new(svc_env),
            Arc::new(svc_host),
            Arc::new(a_id),
            Arc::new(a_type),
            Arc::new(a_role),
            Arc::new(a_ip),
            Arc::new(a_session),
            Arc::new(text(&mut self.category)?),
            Arc::new(text(&mut self.action)?),
            Arc::new(text(&mut self.outcome)?),
            Arc::new(t_type),
            Arc::new(t_id),
            Arc::new(err_type),
            Arc::new(err_msg),
            Arc::new(provider),
            Arc::new(operation),
            Arc::new(req_model),
            Arc::new(resp_model),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(conversation),
            Arc::new(agent),
            Arc::new(tool),
            Arc::new(self.temperature.finish()),
            Arc::new(self.safety_passed.finish()),
            Arc::new(self.detectors.finish()),
            Arc::new(text(&mut self.block_reason)?),
            Arc::new(self.digests.finish()),
            Arc::new(self.sealed.finish()),
            Arc::new(trace_id),
            Arc::new(span_id),
            Arc::new(parent_span_id),
            Arc::new(text_map(self.attributes.finish())?),
            Arc::new(self.redactions.finish()),
            Arc::new(text(&mut self.chain_id)?),
            Arc::new(self.seq.finish()),
            Arc::new(self.prev_hash.finish()),
            Arc::new(self.hash.finish()),
        ];
        RecordBatch::try_new(schema::schema(), columns)
    }
}

/// Texts are gathered as bytes and checked as UTF-8 a whole column at a
/// time when the batch is finished: checked one by one as each row's
/// canonical bytes were read, the check was 6% of the collector's CPU (some
/// 50 short texts per row, each paying the check's fixed cost).
type TextBuilder = BinaryBuilder;

/// The text column of `b`'s bytes; fails unless they are all UTF-8.
fn text(b: &mut TextBuilder) -> Result<StringArray, arrow_schema::ArrowError> {
    StringArray::try_from_binary(b.finish())
}

fn texts<const N: usize>(
    builders: [TextBuilder; N],
) -> Result<[StringArray; N], arrow_schema::ArrowError> {
    let mut out = Vec::with_capacity(N);
    for mut b in builders {
        out.push(text(&mut b)?);
    }
    Ok(out.try_into().expect("one column per builder"))
}

/// The `attributes` map of the stored schema from the builder's map of
/// byte strings.
fn text_map(map: MapArray) -> Result<MapArray, arrow_schema::ArrowError> {
    let (_, offsets, entries, nulls, ordered) = map.into_parts();
    let (_, columns, entry_nulls) = entries.into_parts();
    let [keys, values] = <[ArrayRef; 2]>::try_from(columns).expect("a map entry has two fields");
    let text_of = |a: ArrayRef| -> Result<ArrayRef, arrow_schema::ArrowError> {
        Ok(Arc::new(StringArray::try_from_binary(
            a.as_binary::<i32>().clone(),
        )?))
    };
    let entries_field = schema::attributes_entries();
    let DataType::Struct(fields) = entries_field.data_type() else {
        unreachable!("the attributes entries are a struct")
    };
    let entries = StructArray::try_new(
        fields.clone(),
        vec![text_of(keys)?, text_of(values)?],
        entry_nulls,
    )?;
    MapArray::try_new(entries_field, offsets, entries, nulls, ordered)
}

fn str_field(b: &mut StructBuilder, i: usize) -> &mut StringBuilder {
    b.field_builder::<StringBuilder>(i)
        .expect("struct field is a string")
}

fn bin_field(b: &mut StructBuilder, i: usize) -> &mut BinaryBuilder {
    b.field_builder::<BinaryBuilder>(i)
        .expect("struct field is binary")
}

fn fixed_field(b: &mut StructBuilder, i: usize) -> &mut FixedSizeBinaryBuilder {
    b.field_builder::<FixedSizeBinaryBuilder>(i)
        .expect("struct field is fixed-size binary")
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
