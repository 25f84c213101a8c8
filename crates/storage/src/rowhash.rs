//! Row hashes recomputed straight from Arrow columns.
//!
//! Verification must hash exactly what is stored, including values the event
//! model would refuse (a tampered category text, a negative count), so it
//! encodes columns generically by their Arrow type, in schema order. Tests
//! check that this agrees byte for byte with `Record::canonical_bytes`.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32DictionaryArray,
    Int64Array, ListArray, MapArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;
use otel_audit_event::{begin_row_hash, finish_row_hashes};

use crate::error::DecodeError;
use crate::schema;

/// One column, typed for encoding.
enum Col<'a> {
    Str(&'a StringArray),
    /// Text read as a dictionary: one key per row into the values.
    Dict(&'a Int32DictionaryArray, &'a StringArray),
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
            t if schema::is_text_dictionary(t) => {
                let d = a.as_dictionary::<Int32Type>();
                let values = d.values().as_string::<i32>();
                // Parquet dictionaries hold no nulls (a null row has a null
                // key). A null value would be a null the keys do not show.
                if values.null_count() > 0 {
                    return Err(DecodeError::Schema(
                        "a text dictionary holds a null value".into(),
                    ));
                }
                Col::Dict(d, values)
            }
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
            Col::Dict(a, _) => a.is_valid(i),
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
        match self {
            Col::Str(a) => bytes(a.value(i).as_bytes(), out),
            Col::Dict(a, values) => bytes(values.value(a.keys().value(i) as usize).as_bytes(), out),
            Col::I64(a) => word(a.value(i).to_be_bytes(), out),
            Col::Ts(a) => word(a.value(i).to_be_bytes(), out),
            Col::F64(a) => word(a.value(i).to_bits().to_be_bytes(), out),
            Col::Bool(a) => out.extend_from_slice(&[1, u8::from(a.value(i))]),
            Col::Fixed(a) => bytes(a.value(i), out),
            Col::Bin(a) => bytes(a.value(i), out),
            Col::List(a, child) => {
                let offs = a.value_offsets();
                elements(offs[i] as usize, offs[i + 1] as usize, out, |j, out| {
                    child.encode_element(j, out)
                });
            }
            Col::Struct(fields) => {
                out.push(1);
                fields.iter().for_each(|f| f.encode(i, out));
            }
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

    /// Appends the encoding of rows `start..start + outs.len()`, row `start + k`
    /// to `outs[k]`: the same bytes as [`encode`](Self::encode) row by row, but
    /// the column's type is matched and its buffers looked up once per run of
    /// rows instead of once per value, which was most of verify's encoding time.
    fn encode_rows(&self, start: usize, outs: &mut [Vec<u8>]) {
        match self {
            Col::Str(a) => {
                let (offs, data) = (a.value_offsets(), a.value_data());
                rows(a.nulls(), start, outs, |i, out| {
                    bytes(&data[offs[i] as usize..offs[i + 1] as usize], out)
                });
            }
            Col::Dict(a, values) => {
                let keys = a.keys().values();
                let (offs, data) = (values.value_offsets(), values.value_data());
                rows(a.nulls(), start, outs, |i, out| {
                    // Keys are checked against the dictionary's length when
                    // the array is built (by the Parquet reader, too).
                    let k = keys[i] as usize;
                    bytes(&data[offs[k] as usize..offs[k + 1] as usize], out)
                });
            }
            Col::I64(a) => {
                let v = a.values();
                rows(a.nulls(), start, outs, |i, out| {
                    word(v[i].to_be_bytes(), out)
                });
            }
            Col::Ts(a) => {
                let v = a.values();
                rows(a.nulls(), start, outs, |i, out| {
                    word(v[i].to_be_bytes(), out)
                });
            }
            Col::F64(a) => {
                let v = a.values();
                rows(a.nulls(), start, outs, |i, out| {
                    word(v[i].to_bits().to_be_bytes(), out)
                });
            }
            Col::Bool(a) => {
                let v = a.values();
                rows(a.nulls(), start, outs, |i, out| {
                    out.extend_from_slice(&[1, u8::from(v.value(i))])
                });
            }
            Col::List(a, child) => {
                let offs = a.value_offsets();
                rows(a.nulls(), start, outs, |i, out| {
                    elements(offs[i] as usize, offs[i + 1] as usize, out, |j, out| {
                        child.encode_element(j, out)
                    })
                });
            }
            Col::Map(a, k, v) => {
                let offs = a.value_offsets();
                rows(a.nulls(), start, outs, |i, out| {
                    elements(offs[i] as usize, offs[i + 1] as usize, out, |j, out| {
                        k.encode(j, out);
                        v.encode(j, out);
                    })
                });
            }
            // Not top-level columns of the stored schema.
            Col::Fixed(_) | Col::Bin(_) | Col::Struct(_) => {
                for (k, out) in outs.iter_mut().enumerate() {
                    self.encode(start + k, out);
                }
            }
        }
    }
}

/// For rows `start..start + outs.len()`, one per buffer: `0x00` if null, else
/// `present` (which writes the presence byte and the value).
#[inline(always)]
fn rows(
    nulls: Option<&NullBuffer>,
    start: usize,
    outs: &mut [Vec<u8>],
    mut present: impl FnMut(usize, &mut Vec<u8>),
) {
    let indexed = outs.iter_mut().enumerate().map(|(k, out)| (start + k, out));
    match nulls {
        Some(n) if n.null_count() > 0 => {
            for (i, out) in indexed {
                if n.is_valid(i) {
                    present(i, out);
                } else {
                    out.push(0);
                }
            }
        }
        _ => {
            for (i, out) in indexed {
                present(i, out);
            }
        }
    }
}

// The writers below put the presence byte and the fixed-size head in one
// append, so a value costs fewer appends (each checks the capacity).

/// A present byte string: `0x01`, u32 length, bytes.
#[inline(always)]
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    let mut head = [1u8; 5];
    head[1..].copy_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(b);
}

/// A present 8-byte value: `0x01`, the bytes.
#[inline(always)]
fn word(v: [u8; 8], out: &mut Vec<u8>) {
    let mut w = [1u8; 9];
    w[1..].copy_from_slice(&v);
    out.extend_from_slice(&w);
}

/// A present list or map: `0x01`, u32 count, each element.
fn elements(start: usize, end: usize, out: &mut Vec<u8>, mut f: impl FnMut(usize, &mut Vec<u8>)) {
    let mut head = [1u8; 5];
    head[1..].copy_from_slice(&((end - start) as u32).to_be_bytes());
    out.extend_from_slice(&head);
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

/// Rows encoded together: the per-row buffers of a run this long (about
/// 500 bytes each) stay in the L2 cache while every column appends to them.
const RUN: usize = 128;

/// Recomputes every row's hash in `batch` and returns its chain columns.
/// The batch must have the stored schema (checked), where top-level text
/// columns may also be dictionaries of text
/// ([`TextColumns::KeepDictionaries`](crate::reader::TextColumns)).
pub fn scan_batch(batch: &RecordBatch, out: &mut Vec<RowLink>) -> Result<(), DecodeError> {
    schema::check_decoded_schema(batch.schema_ref()).map_err(DecodeError::Schema)?;
    let cols = content_columns(batch)?;
    let seq = batch.column(schema::col("seq")).as_primitive::<Int64Type>();
    let n_content = cols.len();
    let prev = batch.column(n_content).as_fixed_size_binary();
    let hash = batch.column(n_content + 1).as_fixed_size_binary();
    let n_rows = batch.num_rows();
    let mut bufs: Vec<Vec<u8>> = (0..RUN.min(n_rows))
        .map(|_| Vec::with_capacity(1024))
        .collect();
    out.reserve(n_rows);
    for start in (0..n_rows).step_by(RUN) {
        let run = &mut bufs[..RUN.min(n_rows - start)];
        let first = out.len();
        for (row, buf) in (start..).zip(run.iter_mut()) {
            let prev_hash: [u8; 32] =
                prev.value(row).try_into().map_err(|_| DecodeError::Value {
                    row,
                    column: schema::PREV_HASH,
                    reason: "not 32 bytes".into(),
                })?;
            let stored: [u8; 32] = hash.value(row).try_into().map_err(|_| DecodeError::Value {
                row,
                column: schema::HASH,
                reason: "not 32 bytes".into(),
            })?;
            begin_row_hash(&prev_hash, buf);
            out.push(RowLink {
                seq: seq.value(row),
                prev_hash,
                hash: stored,
                hash_ok: false,
            });
        }
        for c in &cols {
            c.encode_rows(start, run);
        }
        let links = &mut out[first..];
        finish_row_hashes(run, |i, computed| {
            links[i].hash_ok = computed == links[i].hash;
        });
    }
    Ok(())
}

/// The columns the canonical bytes cover: all but `prev_hash` and `hash`.
fn content_columns(batch: &RecordBatch) -> Result<Vec<Col<'_>>, DecodeError> {
    let n_content = batch.num_columns() - 2;
    batch.columns()[..n_content]
        .iter()
        .map(|c| Col::new(c.as_ref()))
        .collect()
}

/// The canonical bytes of row `row` of `batch`, encoded from its columns.
pub fn canonical_from_batch(batch: &RecordBatch, row: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = [Vec::new()];
    for c in content_columns(batch)? {
        c.encode_rows(row, &mut out);
    }
    let [out] = out;
    Ok(out)
}
