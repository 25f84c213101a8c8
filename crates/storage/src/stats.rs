//! A file's column statistics checked against the rows they describe.
//!
//! Readers prune with them: DuckDB skips a row group whose `min`/`max` rule
//! out a filter's value, or whose null count rules out `IS NULL`. None of
//! them is covered by the row hashes or the format's footer keys, so a
//! statistic narrowed by hand would hide rows from every such query while
//! the chain still verifies. Verify therefore checks, for every top-level
//! column and row group with statistics, that the null count is the rows'
//! and that `min` and `max` bound every value (bound, not equal: a writer
//! may truncate long texts, rounding `min` down and `max` up, and a wider
//! range only makes a reader read more).

use std::cmp::Ordering;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

/// A statistic's value, in the order Parquet defines for the column: bytes
/// unsigned lexicographically (texts and fixed-size binaries), integers and
/// timestamps signed, floats by value, `false` before `true`.
#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    fn cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    fn show(&self) -> String {
        const MAX_CHARS: usize = 40;
        match self {
            Value::Bytes(b) => {
                let text = String::from_utf8_lossy(b);
                if text.chars().count() > MAX_CHARS {
                    let cut: String = text.chars().take(MAX_CHARS).collect();
                    format!("{cut:?}…")
                } else {
                    format!("{text:?}")
                }
            }
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }
}

/// What a row group's statistics say about one column.
#[derive(Debug)]
struct Said {
    null_count: Option<u64>,
    min: Option<Value>,
    max: Option<Value>,
}

impl Said {
    fn of(stats: &Statistics) -> Option<Said> {
        fn pair<T>(
            s: &parquet::file::statistics::ValueStatistics<T>,
            f: impl Fn(&T) -> Value,
        ) -> (Option<Value>, Option<Value>) {
            (s.min_opt().map(&f), s.max_opt().map(&f))
        }
        let (min, max) = match stats {
            Statistics::Boolean(s) => pair(s, |v| Value::Bool(*v)),
            Statistics::Int32(s) => pair(s, |v| Value::Int(i64::from(*v))),
            Statistics::Int64(s) => pair(s, |v| Value::Int(*v)),
            Statistics::Float(s) => pair(s, |v| Value::Float(f64::from(*v))),
            Statistics::Double(s) => pair(s, |v| Value::Float(*v)),
            Statistics::ByteArray(s) => pair(s, |v| Value::Bytes(v.data().to_vec())),
            Statistics::FixedLenByteArray(s) => pair(s, |v| Value::Bytes(v.data().to_vec())),
            // No column of the format has this type; a reader has no order
            // for it either.
            Statistics::Int96(_) => (None, None),
        };
        let said = Said {
            null_count: stats.null_count_opt(),
            min,
            max,
        };
        (said.null_count.is_some() || said.min.is_some() || said.max.is_some()).then_some(said)
    }
}

/// What the rows of one row group hold in one column.
#[derive(Debug, Default)]
struct Held {
    nulls: u64,
    min: Option<Value>,
    max: Option<Value>,
}

impl Held {
    /// Takes in the least and greatest value of a batch.
    fn merge(&mut self, lo: Value, hi: Value) {
        if self
            .min
            .as_ref()
            .is_none_or(|m| lo.cmp(m) == Some(Ordering::Less))
        {
            self.min = Some(lo);
        }
        if self
            .max
            .as_ref()
            .is_none_or(|m| hi.cmp(m) == Some(Ordering::Greater))
        {
            self.max = Some(hi);
        }
    }

    /// Texts are compared borrowed; only the batch's least and greatest are
    /// copied, once per batch.
    fn merge_bytes<'a>(&mut self, values: impl Iterator<Item = &'a [u8]>) {
        if let Some((lo, hi)) = min_max(values) {
            self.merge(Value::Bytes(lo.to_vec()), Value::Bytes(hi.to_vec()));
        }
    }

    fn add_array(&mut self, a: &ArrayRef, used: &mut Vec<bool>) {
        self.nulls += a.null_count() as u64;
        match a.data_type() {
            DataType::Utf8 => {
                self.merge_bytes(a.as_string::<i32>().iter().flatten().map(str::as_bytes));
            }
            DataType::Binary => self.merge_bytes(a.as_binary::<i32>().iter().flatten()),
            DataType::FixedSizeBinary(_) => {
                self.merge_bytes(a.as_fixed_size_binary().iter().flatten());
            }
            // Each distinct value once: the keys the rows use are marked,
            // then the marked values compared.
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = a.as_dictionary::<Int32Type>();
                let values = d.values().as_string::<i32>();
                used.clear();
                used.resize(values.len(), false);
                let keys = d.keys().values();
                let mut mark = |k: i32| {
                    if let Some(u) = usize::try_from(k).ok().and_then(|k| used.get_mut(k)) {
                        *u = true;
                    }
                };
                match d.keys().nulls() {
                    None => keys.iter().for_each(|&k| mark(k)),
                    Some(n) => n.valid_indices().for_each(|i| mark(keys[i])),
                }
                self.merge_bytes(
                    (0..values.len())
                        .filter(|&i| used[i] && values.is_valid(i))
                        .map(|i| values.value(i).as_bytes()),
                );
            }
            DataType::Int64 => {
                let ints = a.as_primitive::<Int64Type>();
                if let Some((lo, hi)) = range_of(ints.values(), ints.nulls()) {
                    self.merge(Value::Int(lo), Value::Int(hi));
                }
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let ints = a.as_primitive::<TimestampMicrosecondType>();
                if let Some((lo, hi)) = range_of(ints.values(), ints.nulls()) {
                    self.merge(Value::Int(lo), Value::Int(hi));
                }
            }
            DataType::Float64 => {
                let floats = a.as_primitive::<arrow_array::types::Float64Type>();
                // NaN has no place in the order; writers leave it out.
                if let Some((lo, hi)) = min_max(floats.iter().flatten().filter(|v| !v.is_nan())) {
                    self.merge(Value::Float(lo), Value::Float(hi));
                }
            }
            DataType::Boolean => {
                let b = a.as_boolean();
                let trues = b.true_count();
                let falses = b.len() - b.null_count() - trues;
                if trues + falses > 0 {
                    self.merge(Value::Bool(falses == 0), Value::Bool(trues > 0));
                }
            }
            // Lists, maps and structs are not top-level leaves (no statistics
            // of their own here); nothing else is in the format.
            _ => {}
        }
    }
}

/// The least and greatest of `values`, `None` when there are none.
fn min_max<T: PartialOrd + Copy>(values: impl Iterator<Item = T>) -> Option<(T, T)> {
    values.fold(None, |range, v| {
        Some(match range {
            None => (v, v),
            Some((lo, hi)) => (if v < lo { v } else { lo }, if v > hi { v } else { hi }),
        })
    })
}

/// [`min_max`] of the valid `values`.
fn range_of<T: Copy + Ord>(
    values: &[T],
    nulls: Option<&arrow_buffer::NullBuffer>,
) -> Option<(T, T)> {
    match nulls.filter(|n| n.null_count() > 0) {
        // Two plain passes, which the compiler vectorises.
        None => Some((*values.iter().min()?, *values.iter().max()?)),
        Some(n) => min_max(n.valid_indices().map(|i| values[i])),
    }
}

/// One checked column: its place in the batches and, per row group, what
/// the statistics say (if anything) and what the rows hold.
#[derive(Debug)]
struct Column {
    name: String,
    index: usize,
    groups: Vec<Option<(Said, Held)>>,
}

/// Collects, batch by batch, what the rows hold in every top-level column
/// that has statistics, and compares at the end.
#[derive(Debug)]
pub(crate) struct StatsCheck {
    columns: Vec<Column>,
    /// First row of each row group, and one past the last row of the file.
    group_starts: Vec<u64>,
    next_row: u64,
    used: Vec<bool>,
}

impl StatsCheck {
    /// The columns of `batch_schema` (top-level fields, in file order) that
    /// have statistics in `meta`.
    pub(crate) fn new(meta: &ParquetMetaData, batch_schema: &arrow_schema::Schema) -> StatsCheck {
        let descr = meta.file_metadata().schema_descr();
        let mut group_starts = vec![0u64];
        for rg in meta.row_groups() {
            let last = *group_starts.last().expect("starts with 0");
            group_starts.push(last + u64::try_from(rg.num_rows()).unwrap_or(0));
        }
        let columns = batch_schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(index, field)| {
                let leaf = (0..descr.num_columns()).find(|&j| {
                    let column = descr.column(j);
                    let parts = column.path().parts();
                    parts.len() == 1 && parts[0] == *field.name()
                })?;
                let groups: Vec<Option<(Said, Held)>> = meta
                    .row_groups()
                    .iter()
                    .map(|rg| {
                        let said = rg.column(leaf).statistics().and_then(Said::of)?;
                        Some((said, Held::default()))
                    })
                    .collect();
                groups.iter().any(Option::is_some).then(|| Column {
                    name: field.name().clone(),
                    index,
                    groups,
                })
            })
            .collect();
        StatsCheck {
            columns,
            group_starts,
            next_row: 0,
            used: Vec::new(),
        }
    }

    /// Takes in the next batch of the file's rows.
    pub(crate) fn observe(&mut self, batch: &RecordBatch) {
        let (first, n) = (self.next_row, batch.num_rows() as u64);
        self.next_row += n;
        if self.columns.is_empty() {
            return;
        }
        for g in 0..self.group_starts.len() - 1 {
            let (start, end) = (self.group_starts[g], self.group_starts[g + 1]);
            let (lo, hi) = (start.max(first), end.min(first + n));
            if lo >= hi {
                continue;
            }
            let (offset, len) = ((lo - first) as usize, (hi - lo) as usize);
            for c in &mut self.columns {
                if let Some((_, held)) = &mut c.groups[g] {
                    let a = batch.column(c.index).slice(offset, len);
                    held.add_array(&a, &mut self.used);
                }
            }
        }
    }

    /// The first disagreement, described; `None` when every statistic
    /// bounds its rows.
    pub(crate) fn finish(self) -> Option<String> {
        self.columns.iter().find_map(|c| {
            c.groups.iter().enumerate().find_map(|(g, group)| {
                let (said, held) = group.as_ref()?;
                let (what, stat, rows) = disagreement(said, held)?;
                Some(format!(
                    "column statistics disagree with the rows: {} in row group {g} says {what} {stat}, the rows hold {rows}",
                    c.name
                ))
            })
        })
    }
}

/// How a row group's statistics of a column fail to bound its rows: the
/// statistic, what it says and what the rows hold.
fn disagreement(said: &Said, held: &Held) -> Option<(&'static str, String, String)> {
    if let Some(n) = said.null_count
        && n != held.nulls
    {
        return Some(("null count", n.to_string(), format!("{} nulls", held.nulls)));
    }
    if let (Some(s), Some(h)) = (&said.min, &held.min)
        && matches!(h.cmp(s), Some(Ordering::Less) | None)
    {
        return Some(("min", s.show(), h.show()));
    }
    if let (Some(s), Some(h)) = (&said.max, &held.max)
        && matches!(h.cmp(s), Some(Ordering::Greater) | None)
    {
        return Some(("max", s.show(), h.show()));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{BooleanArray, DictionaryArray, Float64Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    type Row = (Option<&'static str>, Option<i64>, Option<f64>, Option<bool>);

    fn rows() -> Vec<Row> {
        (0..12)
            .map(|i| {
                let texts = ["m", "k", "x", "q"];
                (
                    (i % 5 != 3).then_some(texts[i % 4]),
                    (i != 10).then_some(10 + i as i64 * 3),
                    (i != 4).then_some(0.5 * i as f64),
                    Some(i >= 6),
                )
            })
            .collect()
    }

    fn batch(rows: &[Row], dictionary: bool) -> RecordBatch {
        let a: ArrayRef = if dictionary {
            Arc::new(
                rows.iter()
                    .map(|r| r.0)
                    .collect::<DictionaryArray<Int32Type>>(),
            )
        } else {
            Arc::new(rows.iter().map(|r| r.0).collect::<StringArray>())
        };
        let a_type = a.data_type().clone();
        let schema = Schema::new(vec![
            Field::new("a", a_type, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Float64, true),
            Field::new("d", DataType::Boolean, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                a,
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
                Arc::new(rows.iter().map(|r| r.3).collect::<BooleanArray>()),
            ],
        )
        .unwrap()
    }

    /// The metadata of a file of `rows` in row groups of 5.
    fn written(rows: &[Row]) -> Arc<ParquetMetaData> {
        let b = batch(rows, false);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(5))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, b.schema(), Some(props)).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let r = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        assert_eq!(r.metadata().num_row_groups(), 3);
        Arc::new(r.metadata().clone())
    }

    /// The check of `meta` against `rows` fed `per_batch` at a time.
    fn check(meta: &ParquetMetaData, rows: &[Row], per_batch: usize, dict: bool) -> Option<String> {
        let mut c = StatsCheck::new(meta, &batch(rows, dict).schema());
        assert_eq!(c.columns.len(), 4);
        for chunk in rows.chunks(per_batch) {
            c.observe(&batch(chunk, dict));
        }
        c.finish()
    }

    #[test]
    fn the_writers_statistics_bound_its_rows_in_any_batching() {
        let meta = written(&rows());
        for per_batch in [1, 2, 4, 5, 7, 12] {
            for dict in [false, true] {
                assert_eq!(
                    check(&meta, &rows(), per_batch, dict),
                    None,
                    "{per_batch} {dict}"
                );
            }
        }
    }

    #[test]
    fn rows_outside_their_statistics_are_named() {
        let meta = written(&rows());
        let changed = |f: &dyn Fn(&mut Vec<Row>)| {
            let mut r = rows();
            f(&mut r);
            r
        };
        let cases: Vec<(Vec<Row>, &str)> = vec![
            (
                changed(&|r| r[7].0 = Some("a")),
                "a in row group 1 says min \"k\", the rows hold \"a\"",
            ),
            (
                changed(&|r| r[11].0 = Some("z")),
                "a in row group 2 says max \"x\", the rows hold \"z\"",
            ),
            (
                changed(&|r| r[2].1 = Some(1000)),
                "b in row group 0 says max 22, the rows hold 1000",
            ),
            (
                changed(&|r| r[9].2 = None),
                "c in row group 1 says null count 0, the rows hold 1 nulls",
            ),
            (
                changed(&|r| r[0].3 = Some(true)),
                "d in row group 0 says max false, the rows hold true",
            ),
        ];
        for (rows, expected) in cases {
            for (per_batch, dict) in [(3, false), (12, true)] {
                let got = check(&meta, &rows, per_batch, dict).expect(expected);
                assert!(got.ends_with(expected), "{got}");
            }
        }
    }
}
