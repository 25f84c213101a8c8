//! opentelemetry-proto values and ids → the event crate's plain OTLP types
//! ([`OtlpValue`]): by value (moving) for records, by reference (cloning)
//! for what several records share (resource attributes).
//!
//! An `AnyValue` without a value (OTLP's "empty" value, JSON `null`) and the
//! profiling-only `string_value_strindex` are treated as absent: an attribute
//! holding one is skipped, and so is such a kvlist entry or array element.
//! `OtlpValue` has no "null", and `to_otlp` never sends one, so nothing an
//! otel-audit SDK sends is lost.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use otel_audit_event::otlp::{MappingError, OtlpValue};

/// Converts a value, cloning.
pub(crate) fn value_ref(v: &AnyValue) -> Option<OtlpValue> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => OtlpValue::Str(s.clone()),
        Value::BoolValue(b) => OtlpValue::Bool(*b),
        Value::IntValue(i) => OtlpValue::Int(*i),
        Value::DoubleValue(d) => OtlpValue::Double(*d),
        Value::BytesValue(b) => OtlpValue::Bytes(b.clone()),
        Value::ArrayValue(a) => OtlpValue::Array(array_ref(&a.values)),
        Value::KvlistValue(l) => OtlpValue::KvList(attributes_ref(&l.values)),
        Value::StringValueStrindex(_) => return None,
    })
}

/// Converts a value, moving its strings and bytes.
pub(crate) fn value_owned(v: AnyValue) -> Option<OtlpValue> {
    Some(match v.value? {
        Value::StringValue(s) => OtlpValue::Str(s),
        Value::BoolValue(b) => OtlpValue::Bool(b),
        Value::IntValue(i) => OtlpValue::Int(i),
        Value::DoubleValue(d) => OtlpValue::Double(d),
        Value::BytesValue(b) => OtlpValue::Bytes(b),
        Value::ArrayValue(a) => OtlpValue::Array(array_owned(a.values)),
        Value::KvlistValue(l) => OtlpValue::KvList(attributes_owned(l.values)),
        Value::StringValueStrindex(_) => return None,
    })
}

/// Converts an attribute list, cloning; attributes without a value are
/// skipped.
pub(crate) fn attributes_ref(kvs: &[KeyValue]) -> Vec<(String, OtlpValue)> {
    // Sized up front: collecting a `filter_map` would grow the vector
    // several times, and allocation is most of this step's cost.
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        // The value first: a skipped attribute costs no key clone.
        if let Some(v) = kv.value.as_ref().and_then(value_ref) {
            out.push((kv.key.clone(), v));
        }
    }
    out
}

/// Converts an attribute list, moving; attributes without a value are
/// skipped.
pub(crate) fn attributes_owned(kvs: Vec<KeyValue>) -> Vec<(String, OtlpValue)> {
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        if let Some(v) = kv.value.and_then(value_owned) {
            out.push((kv.key, v));
        }
    }
    out
}

/// Converts array elements, cloning; elements without a value are skipped.
fn array_ref(values: &[AnyValue]) -> Vec<OtlpValue> {
    let mut out = Vec::with_capacity(values.len());
    out.extend(values.iter().filter_map(value_ref));
    out
}

/// Converts array elements, moving; elements without a value are skipped.
fn array_owned(values: Vec<AnyValue>) -> Vec<OtlpValue> {
    let mut out = Vec::with_capacity(values.len());
    out.extend(values.into_iter().filter_map(value_owned));
    out
}

/// A trace id (16 bytes) or span id (8 bytes) field: empty means absent; any
/// other length is an error naming the field (`trace_id is invalid: expected
/// 16 bytes, got 5`). All-zero ids are returned as they are (callers treat
/// them as absent).
pub(crate) fn id<const N: usize>(
    field: &str,
    bytes: &[u8],
) -> Result<Option<[u8; N]>, MappingError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match <[u8; N]>::try_from(bytes) {
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(MappingError::Invalid {
            attribute: field.to_owned(),
            reason: format!("expected {N} bytes, got {}", bytes.len()),
        }),
    }
}

/// The value as text for a free-form attribute, moving a string instead of
/// copying it (see [`OtlpValue::to_text`] for the rendering of the rest).
pub(crate) fn into_text(v: OtlpValue) -> String {
    match v {
        OtlpValue::Str(s) => s,
        other => other.to_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    fn kv(key: &str, v: Option<Value>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: v }),
            key_strindex: 0,
        }
    }

    fn nested() -> AnyValue {
        any(Value::KvlistValue(KeyValueList {
            values: vec![
                kv("s", Some(Value::StringValue("x".into()))),
                kv("null", None),
                kv("strindex", Some(Value::StringValueStrindex(3))),
                kv(
                    "a",
                    Some(Value::ArrayValue(ArrayValue {
                        values: vec![
                            any(Value::IntValue(1)),
                            AnyValue { value: None },
                            any(Value::BoolValue(true)),
                            any(Value::DoubleValue(0.5)),
                            any(Value::BytesValue(vec![0xab])),
                        ],
                    })),
                ),
            ],
        }))
    }

    #[test]
    fn every_type_converts_by_reference_and_by_value_alike() {
        let expected = OtlpValue::KvList(vec![
            ("s".into(), OtlpValue::Str("x".into())),
            (
                "a".into(),
                OtlpValue::Array(vec![
                    OtlpValue::Int(1),
                    OtlpValue::Bool(true),
                    OtlpValue::Double(0.5),
                    OtlpValue::Bytes(vec![0xab]),
                ]),
            ),
        ]);
        assert_eq!(value_ref(&nested()), Some(expected.clone()));
        assert_eq!(value_owned(nested()), Some(expected));
        assert_eq!(value_ref(&AnyValue { value: None }), None);
    }

    #[test]
    fn attributes_without_values_are_skipped() {
        let kvs = vec![
            kv("a", Some(Value::IntValue(1))),
            kv("b", None),
            KeyValue {
                key: "c".into(),
                value: None,
                key_strindex: 0,
            },
        ];
        let expected = vec![("a".to_owned(), OtlpValue::Int(1))];
        assert_eq!(attributes_ref(&kvs), expected);
        assert_eq!(attributes_owned(kvs), expected);
    }

    #[test]
    fn ids_check_their_length() {
        assert_eq!(id::<8>("span_id", &[]), Ok(None));
        assert_eq!(id::<8>("span_id", &[1; 8]), Ok(Some([1; 8])));
        assert_eq!(id::<8>("span_id", &[0; 8]), Ok(Some([0; 8])));
        let err = id::<16>("trace_id", &[1; 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trace_id is invalid: expected 16 bytes, got 5"
        );
    }
}
