//! The Arrow schema of a stored row and the footer metadata keys.
//!
//! The column order is part of the format: the canonical encoding walks the
//! columns in this order (docs/FORMAT.md).

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Name of the `prev_hash` column.
pub const PREV_HASH: &str = "prev_hash";
/// Name of the `hash` column.
pub const HASH: &str = "hash";

/// Footer key-value metadata keys written into every data file.
pub mod meta {
    /// The format version (`1`).
    pub const FORMAT_VERSION: &str = "otel_audit.format_version";
    /// The chain the file's rows belong to.
    pub const CHAIN_ID: &str = "otel_audit.chain_id";
    /// The seq of the first row.
    pub const FIRST_SEQ: &str = "otel_audit.first_seq";
    /// The seq of the last row.
    pub const LAST_SEQ: &str = "otel_audit.last_seq";
    /// How many rows the file holds.
    pub const ROW_COUNT: &str = "otel_audit.row_count";
    /// The `prev_hash` of the first row (hex).
    pub const PREV_HASH: &str = "otel_audit.prev_hash";
    /// The `hash` of the last row (hex).
    pub const LAST_HASH: &str = "otel_audit.last_hash";
    /// The RFC 6962 Merkle root of the rows' `hash` values, in row order (hex).
    pub const MERKLE_ROOT: &str = "otel_audit.merkle_root";
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn hash32() -> DataType {
    DataType::FixedSizeBinary(32)
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// A list whose items are never null, with Parquet's `element` item name.
fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", item, false)))
}

/// Fields of a `content_digests` entry.
pub fn content_digest_fields() -> Fields {
    Fields::from(vec![
        utf8("field", false),
        utf8("algorithm", false),
        utf8("key_id", true),
        Field::new("digest", hash32(), false),
    ])
}

/// Fields of a `sealed_content` entry.
pub fn sealed_content_fields() -> Fields {
    Fields::from(vec![
        utf8("field", false),
        utf8("algorithm", false),
        utf8("key_id", false),
        Field::new("nonce", DataType::Binary, false),
        Field::new("ciphertext", DataType::Binary, false),
    ])
}

/// Fields of a `redactions` entry.
pub fn redaction_fields() -> Fields {
    Fields::from(vec![
        utf8("field", false),
        utf8("method", false),
        utf8("detector", true),
        utf8("key_id", true),
    ])
}

/// The entries field of the `attributes` map, with Parquet's names.
pub fn attributes_entries() -> Arc<Field> {
    Arc::new(Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![utf8("key", false), utf8("value", false)])),
        false,
    ))
}

/// The stored row's schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                utf8("event_id", false),
                Field::new("time", utc_micros(), false),
                Field::new("received_at", utc_micros(), false),
                Field::new("duration_ns", DataType::Int64, true),
                utf8("severity", false),
                utf8("tenant", false),
                utf8("service_name", false),
                utf8("service_version", true),
                utf8("service_environment", true),
                utf8("service_host", true),
                utf8("actor_id", true),
                utf8("actor_type", true),
                utf8("actor_role", true),
                utf8("actor_ip", true),
                utf8("actor_session", true),
                utf8("category", false),
                utf8("action", false),
                utf8("outcome", false),
                utf8("target_type", true),
                utf8("target_id", true),
                utf8("error_type", true),
                utf8("error_message", true),
                utf8("gen_ai_provider", true),
                utf8("gen_ai_operation", true),
                utf8("gen_ai_request_model", true),
                utf8("gen_ai_response_model", true),
                Field::new("gen_ai_input_tokens", DataType::Int64, true),
                Field::new("gen_ai_output_tokens", DataType::Int64, true),
                utf8("gen_ai_conversation_id", true),
                utf8("gen_ai_agent_name", true),
                utf8("gen_ai_tool_name", true),
                Field::new("gen_ai_temperature", DataType::Float64, true),
                Field::new("safety_passed", DataType::Boolean, true),
                Field::new("safety_detectors", list_of(DataType::Utf8), false),
                utf8("safety_block_reason", true),
                Field::new(
                    "content_digests",
                    list_of(DataType::Struct(content_digest_fields())),
                    false,
                ),
                Field::new(
                    "sealed_content",
                    list_of(DataType::Struct(sealed_content_fields())),
                    false,
                ),
                utf8("trace_id", true),
                utf8("span_id", true),
                utf8("parent_span_id", true),
                Field::new(
                    "attributes",
                    DataType::Map(attributes_entries(), false),
                    false,
                ),
                Field::new(
                    "redactions",
                    list_of(DataType::Struct(redaction_fields())),
                    false,
                ),
                utf8("chain_id", false),
                Field::new("seq", DataType::Int64, false),
                Field::new(PREV_HASH, hash32(), false),
                Field::new(HASH, hash32(), false),
            ]))
        })
        .clone()
}

/// Index of a column in [`schema`]. Panics on an unknown name: a programming error.
pub fn col(name: &str) -> usize {
    schema()
        .index_of(name)
        .unwrap_or_else(|_| panic!("no column {name} in the stored schema"))
}

/// Checks that `found` has the stored schema's column names and types, in order.
/// Nullability and field metadata are not compared: other writers (pyarrow,
/// DuckDB) may relax them without changing any value.
pub fn check_schema(found: &Schema) -> Result<(), String> {
    check(found, false)
}

/// As [`check_schema`], but a top-level text column may also be a
/// `Dictionary(Int32, Utf8)` array (same values, decoded without copying:
/// [`TextColumns::KeepDictionaries`](crate::reader::TextColumns)).
pub fn check_decoded_schema(found: &Schema) -> Result<(), String> {
    check(found, true)
}

/// Whether `t` is a dictionary of text with 32-bit keys.
pub fn is_text_dictionary(t: &DataType) -> bool {
    matches!(t, DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8)
}

fn check(found: &Schema, dictionaries: bool) -> Result<(), String> {
    let expected = schema();
    if found.fields().len() != expected.fields().len() {
        return Err(format!(
            "{} columns, expected {}",
            found.fields().len(),
            expected.fields().len()
        ));
    }
    for (f, e) in found.fields().iter().zip(expected.fields()) {
        if f.name() != e.name() {
            return Err(format!(
                "column {:?} where {:?} belongs",
                f.name(),
                e.name()
            ));
        }
        let dictionary_text =
            dictionaries && *e.data_type() == DataType::Utf8 && is_text_dictionary(f.data_type());
        if !dictionary_text && !same_shape(f.data_type(), e.data_type()) {
            return Err(format!(
                "column {} has type {}, expected {}",
                e.name(),
                f.data_type(),
                e.data_type()
            ));
        }
    }
    Ok(())
}

fn same_shape(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    match (a, b) {
        (Timestamp(ua, ta), Timestamp(ub, tb)) => {
            ua == ub
                && ta.is_some()
                && tb.is_some()
                && is_utc(ta.as_deref()) == is_utc(tb.as_deref())
        }
        (List(fa), List(fb)) => same_shape(fa.data_type(), fb.data_type()),
        (Struct(fa), Struct(fb)) => {
            fa.len() == fb.len()
                && fa
                    .iter()
                    .zip(fb.iter())
                    .all(|(x, y)| x.name() == y.name() && same_shape(x.data_type(), y.data_type()))
        }
        (Map(ea, _), Map(eb, _)) => match (ea.data_type(), eb.data_type()) {
            (Struct(fa), Struct(fb)) => {
                fa.len() == 2
                    && fb.len() == 2
                    && fa
                        .iter()
                        .zip(fb.iter())
                        .all(|(x, y)| same_shape(x.data_type(), y.data_type()))
            }
            _ => false,
        },
        _ => a == b,
    }
}

fn is_utc(tz: Option<&str>) -> bool {
    matches!(tz, Some("+00:00" | "UTC" | "Z" | "utc" | "Etc/UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_columns_come_last() {
        let s = schema();
        let n = s.fields().len();
        assert_eq!(s.field(n - 4).name(), "chain_id");
        assert_eq!(s.field(n - 3).name(), "seq");
        assert_eq!(s.field(n - 2).name(), PREV_HASH);
        assert_eq!(s.field(n - 1).name(), HASH);
        check_schema(&s).unwrap();
    }
}
