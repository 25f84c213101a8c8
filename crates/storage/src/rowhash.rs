//! Row hashes recomputed straight from Arrow columns.
//!
//! Verification must hash exactly what is stored, including values the event
//! model would refuse (a tampered category text, a negative count), so it
//! encodes columns generically by their Arrow type, in schema order. Tests
//! check that this agrees byte for byte with `Record::canonical_bytes`.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array, ListArray,
    MapArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use otel_audit_event::row_hash;

use crate::error::DecodeError;
use crate::schema;

/// One column, typed for encoding.
enum Col<'a> {
    Str(&'a StringArray),
    I64(&'a Int64Array),
    Ts(&'a TimestampMicrosecondArray),
    F64(&'a Float64Array),
    Bool(&'a BooleanArray),
    Fixed(&'a FixedSizeBinaryArray),
    Bin(&'a BinaryArray),
    List(&'a ListArray, Box<Col<'a>>),
    Struct(Vec<Col<'a>>),
    Map(&'a MapArray, Box<Col<'a>>, Box<Col<'a>>),
}

impl<'a> Col<'a> {
    fn new(a: &'a dyn Array) -> Result<Self, DecodeError> {
        Ok(match a.data_type() {
            DataType::Utf8 => Col::Str(a.as_string::<i32>()),
            DataType::Int64 => Col::I64(a.as_primitive::<Int64Type>()),
            DataType::Timestamp(_, _) => Col::Ts(
                a.as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| DecodeError::Schema("timestamps must be microseconds".into()))?,
            ),
            DataType::Float64 => Col::F64(a.as_primitive::<Float64Type>()),
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::FixedSizeBinary(_) => Col::Fixed(a.as_fixed_size_binary()),
            DataType::Binary => Col::Bin(a.as_binary::<i32>()),
            DataType::List(_) => {
                let l = a.as_list::<i32>();
                Col::List(l, Box::new(Col::new(l.values().as_ref())?))
            }
            DataType::Struct(_) => Col::Struct(
                a.as_struct()
                    .columns()
                    .iter()
                    .map(|c| Col::new(c.as_ref()))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Map(_, _) => {
                let m = a.as_map();
                Col::Map(
                    m,
                    Box::new(Col::new(m.keys().as_ref())?),
                    Box::new(Col::new(m.values().as_ref())?),
                )
            }
            other => {
                return Err(DecodeError::Schema(format!(
                    "unexpected column type {other}"
                )));
            }
        })
    }

    fn is_valid(&self, i: usize) -> bool {
        match self {
            Col::Str(a) => a.is_valid(i),
            Col::I64(a) => a.is_valid(i),
            Col::Ts(a) => a.is_valid(i),
            Col::F64(a) => a.is_valid(i),
            Col::Bool(a) => a.is_valid(i),
            Col::Fixed(a) => a.is_valid(i),
            Col::Bin(a) => a.is_valid(i),
            Col::List(a, _) => a.is_valid(i),
            // Struct elements of lists are encoded field by field; a null
            // struct element cannot be written by otel-audit and is encoded as
            // its (null) fields, which cannot reproduce a valid hash.
            Col::Struct(_) => true,
            Col::Map(a, _, _) => a.is_valid(i),
        }
    }

    /// Presence byte, then the value (docs/FORMAT.md, "Canonical encoding").
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        if !self.is_valid(i) {
            out.push(0);
            return;
        }
        out.push(1);
        match self {
            Col::Str(a) => bytes(a.value(i).as_bytes(), out),
            Col::I64(a) => out.extend_from_slice(&a.value(i).to_be_bytes()),
            Col::Ts(a) => out.extend_from_slice(&a.value(i).to_be_bytes()),
            Col::F64(a) => out.extend_from_slice(&a.value(i).to_bits().to_be_bytes()),
            Col::Bool(a) => out.push(u8::from(a.value(i))),
            Col::Fixed(a) => bytes(a.value(i), out),
            Col::Bin(a) => bytes(a.value(i), out),
            Col::List(a, child) => {
                let offs = a.value_offsets();
                elements(offs[i] as usize, offs[i + 1] as usize, out, |j, out| {
                    child.encode_element(j, out)
                });
            }
            Col::Struct(fields) => fields.iter().for_each(|f| f.encode(i, out)),
            Col::Map(a, k, v) => {
                let offs = a.value_offsets();
                elements(offs[i] as usize, offs[i + 1] as usize, out, |j, out| {
                    k.encode(j, out);
                    v.encode(j, out);
                });
            }
        }
    }

    /// A list element: struct elements are their fields in order, others a value.
    fn encode_element(&self, j: usize, out: &mut Vec<u8>) {
        match self {
            Col::Struct(fields) => fields.iter().for_each(|f| f.encode(j, out)),
            other => other.encode(j, out),
        }
    }
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn elements(start: usize, end: usize, out: &mut Vec<u8>, mut f: impl FnMut(usize, &mut Vec<u8>)) {
    out.extend_from_slice(&((end - start) as u32).to_be_bytes());
    for j in start..end {
        f(j, out);
    }
}

/// The chain columns of one row, and whether its stored hash is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLink {
    /// The stored `seq`.
    pub seq: i64,
    /// The stored `prev_hash`.
    pub prev_hash: [u8; 32],
    /// The stored `hash`.
    pub hash: [u8; 32],
    /// Whether recomputing the hash from the row's content gives `hash`.
    pub hash_ok: bool,
}

/// Recomputes every row's hash in `batch` and returns its chain columns.
/// The batch must have the stored schema (checked).
pub fn scan_batch(batch: &RecordBatch, out: &mut Vec<RowLink>) -> Result<(), DecodeError> {
    schema::check_schema(batch.schema_ref()).map_err(DecodeError::Schema)?;
    let n_content = batch.num_columns() - 2;
    let cols = batch.columns()[..n_content]
        .iter()
        .map(|c| Col::new(c.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let seq = batch.column(schema::col("seq")).as_primitive::<Int64Type>();
    let prev = batch.column(n_content).as_fixed_size_binary();
    let hash = batch.column(n_content + 1).as_fixed_size_binary();
    let mut buf = Vec::with_capacity(1024);
    out.reserve(batch.num_rows());
    for row in 0..batch.num_rows() {
        buf.clear();
        for c in &cols {
            c.encode(row, &mut buf);
        }
        let prev_hash: [u8; 32] = prev.value(row).try_into().map_err(|_| DecodeError::Value {
            row,
            column: schema::PREV_HASH,
            reason: "not 32 bytes".into(),
        })?;
        let stored: [u8; 32] = hash.value(row).try_into().map_err(|_| DecodeError::Value {
            row,
            column: schema::HASH,
            reason: "not 32 bytes".into(),
        })?;
        out.push(RowLink {
            seq: seq.value(row),
            prev_hash,
            hash: stored,
            hash_ok: row_hash(&prev_hash, &buf) == stored,
        });
    }
    Ok(())
}

/// The canonical bytes of row `row` of `batch`, encoded from its columns.
pub fn canonical_from_batch(batch: &RecordBatch, row: usize) -> Result<Vec<u8>, DecodeError> {
    let n_content = batch.num_columns() - 2;
    let mut out = Vec::new();
    for c in &batch.columns()[..n_content] {
        Col::new(c.as_ref())?.encode(row, &mut out);
    }
    Ok(out)
}
