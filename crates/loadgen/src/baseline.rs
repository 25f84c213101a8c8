//! The same-run baselines, both from issue 4's references, timed on one core
//! over the very requests the generator sends:
//!
//! - [`prost_decode`]: prost decoding into `ExportLogsServiceRequest`. The
//!   collector has to do at least this per event, so "collector events per
//!   CPU-second ÷ prost decode records per CPU-second" is a ratio that
//!   carries across machines and across noisy runs.
//! - [`naive_path`]: the naive single-thread design the issue measured
//!   (decode → canonical JSON → chain → Parquet), with none of what the
//!   collector adds: no typed columns, no policy, no WAL or fsync, no server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use prost::Message as _;
use rustix::time::{ClockId, clock_gettime};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::workload::Request;

/// The baseline's result.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Log records decoded per second of this thread's CPU time.
    pub records_per_cpu_second: f64,
    /// Records decoded in total (whole passes over the requests).
    pub records: u64,
    /// CPU time spent.
    pub cpu: Duration,
}

/// This thread's CPU time so far.
pub fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Decodes every request, pass after pass, until at least `min_cpu` of this
/// thread's CPU time has gone (at least one pass), and returns the rate.
pub fn prost_decode(requests: &[Request], min_cpu: Duration) -> anyhow::Result<Baseline> {
    let start = thread_cpu();
    let mut records = 0u64;
    loop {
        for r in requests {
            let decoded = ExportLogsServiceRequest::decode(r.bytes.clone())?;
            let n: usize = decoded
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum();
            records += n as u64;
            std::hint::black_box(decoded);
        }
        let cpu = thread_cpu().saturating_sub(start);
        if cpu >= min_cpu || requests.is_empty() {
            return Ok(Baseline {
                records_per_cpu_second: records as f64 / cpu.as_secs_f64().max(1e-9),
                records,
                cpu,
            });
        }
    }
}

/// The naive design, one core: each request decoded with prost; each record
/// turned into canonical JSON (object keys sorted: its time, severity, event
/// name, trace context, resource and record attributes); chained as
/// `SHA-256(prev_hash || json)`; written as one Parquet file per pass (seq,
/// time, event name, the JSON text, prev_hash, hash; zstd(3), parquet-rs's
/// defaults otherwise), a batch per request. Runs whole passes until at
/// least `min_cpu` of this thread's CPU time has gone, like
/// [`prost_decode`]; `bytes_per_event` is the Parquet file's size per row.
pub fn naive_path(requests: &[Request], min_cpu: Duration) -> anyhow::Result<NaiveBaseline> {
    let start = thread_cpu();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut out = Vec::new();
    loop {
        out.clear();
        naive_pass(requests, &mut records, &mut out)?;
        bytes += out.len() as u64;
        let cpu = thread_cpu().saturating_sub(start);
        if cpu >= min_cpu || requests.is_empty() {
            return Ok(NaiveBaseline {
                events_per_cpu_second: records as f64 / cpu.as_secs_f64().max(1e-9),
                bytes_per_event: bytes as f64 / records.max(1) as f64,
            });
        }
    }
}

/// The naive baseline's result.
#[derive(Debug, Clone, Copy)]
pub struct NaiveBaseline {
    /// Events chained and written per second of this thread's CPU time.
    pub events_per_cpu_second: f64,
    /// Parquet bytes per event.
    pub bytes_per_event: f64,
}

/// One pass over the requests into one Parquet file, written to `out`.
fn naive_pass(requests: &[Request], records: &mut u64, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new("prev_hash", DataType::FixedSizeBinary(32), false),
        Field::new("hash", DataType::FixedSizeBinary(32), false),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    let mut prev = [0u8; 32];
    let mut seq = 0i64;
    let mut json = Vec::new();
    for r in requests {
        let decoded = ExportLogsServiceRequest::decode(r.bytes.clone())?;
        let n = r.events as usize;
        let mut seqs = Int64Builder::with_capacity(n);
        let mut times = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut names = StringBuilder::new();
        let mut texts = StringBuilder::new();
        let mut prevs = FixedSizeBinaryBuilder::with_capacity(n, 32);
        let mut hashes = FixedSizeBinaryBuilder::with_capacity(n, 32);
        for rl in &decoded.resource_logs {
            let resource: BTreeMap<&str, Json<'_>> = rl
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| (kv.key.as_str(), Json(kv.value.as_ref())))
                .collect();
            for lr in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                let row = Row {
                    attributes: lr
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.as_str(), Json(kv.value.as_ref())))
                        .collect(),
                    event_name: &lr.event_name,
                    observed_time_unix_nano: lr.observed_time_unix_nano,
                    resource: &resource,
                    severity_number: lr.severity_number,
                    severity_text: &lr.severity_text,
                    span_id: Hex(&lr.span_id),
                    time_unix_nano: lr.time_unix_nano,
                    trace_id: Hex(&lr.trace_id),
                };
                json.clear();
                serde_json::to_writer(&mut json, &row)?;
                let mut h = Sha256::new();
                h.update(prev);
                h.update(&json);
                let hash: [u8; 32] = h.finalize().into();
                seqs.append_value(seq);
                times.append_value(lr.time_unix_nano as i64);
                names.append_value(&lr.event_name);
                texts.append_value(std::str::from_utf8(&json)?);
                prevs.append_value(prev)?;
                hashes.append_value(hash)?;
                prev = hash;
                seq += 1;
                *records += 1;
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(seqs.finish()),
            Arc::new(times.finish()),
            Arc::new(names.finish()),
            Arc::new(texts.finish()),
            Arc::new(prevs.finish()),
            Arc::new(hashes.finish()),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    writer.close()?;
    Ok(())
}

/// A record as canonical JSON: fields in name order, attribute maps sorted
/// by key.
#[derive(Serialize)]
struct Row<'a> {
    attributes: BTreeMap<&'a str, Json<'a>>,
    event_name: &'a str,
    observed_time_unix_nano: u64,
    resource: &'a BTreeMap<&'a str, Json<'a>>,
    severity_number: i32,
    severity_text: &'a str,
    span_id: Hex<'a>,
    time_unix_nano: u64,
    trace_id: Hex<'a>,
}

/// Bytes as lower-case hex text.
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        let text = buf.get_mut(..self.0.len() * 2).ok_or_else(|| {
            serde::ser::Error::custom("ids longer than 32 bytes are not expected")
        })?;
        hex::encode_to_slice(self.0, text).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(text).map_err(serde::ser::Error::custom)?)
    }
}

/// An OTLP `AnyValue` as JSON, borrowed: bytes as hex, kvlists as objects
/// with sorted keys.
struct Json<'a>(Option<&'a AnyValue>);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.and_then(|v| v.value.as_ref()) {
            None => s.serialize_unit(),
            Some(any_value::Value::StringValue(v)) => s.serialize_str(v),
            Some(any_value::Value::BoolValue(v)) => s.serialize_bool(*v),
            Some(any_value::Value::IntValue(v)) => s.serialize_i64(*v),
            Some(any_value::Value::DoubleValue(v)) => s.serialize_f64(*v),
            Some(any_value::Value::BytesValue(v)) => s.serialize_str(&hex::encode(v)),
            // An index into a profile's string table: meaningless outside one.
            Some(any_value::Value::StringValueStrindex(v)) => s.serialize_i32(*v),
            Some(any_value::Value::ArrayValue(a)) => {
                s.collect_seq(a.values.iter().map(|v| Json(Some(v))))
            }
            Some(any_value::Value::KvlistValue(l)) => {
                let sorted: BTreeMap<&str, Json<'_>> = l
                    .values
                    .iter()
                    .map(|kv| (kv.key.as_str(), Json(kv.value.as_ref())))
                    .collect();
                s.collect_map(sorted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_record() {
        let w = crate::workload::build(50, 20, 1, 3);
        let b = prost_decode(&w.requests, Duration::ZERO).unwrap();
        assert_eq!(b.records, 50);
        assert!(b.records_per_cpu_second > 0.0);
    }

    #[test]
    fn naive_path_chains_and_writes_every_record() {
        let w = crate::workload::build(50, 20, 1, 3);
        let mut records = 0;
        let mut out = Vec::new();
        naive_pass(&w.requests, &mut records, &mut out).unwrap();
        assert_eq!(records, 50);
        // Read the file back: every record is a row, the chain links up,
        // and each row's JSON carries the record's attributes.
        let file = bytes::Bytes::from(out);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut prev = [0u8; 32];
        let mut rows = 0;
        for batch in reader {
            let batch = batch.unwrap();
            use arrow_array::cast::AsArray;
            let text = batch.column(3).as_string::<i32>();
            let prevs = batch.column(4).as_fixed_size_binary();
            let hashes = batch.column(5).as_fixed_size_binary();
            for i in 0..batch.num_rows() {
                assert_eq!(prevs.value(i), prev);
                let mut h = Sha256::new();
                h.update(prev);
                h.update(text.value(i).as_bytes());
                assert_eq!(hashes.value(i), h.finalize().as_slice());
                prev = hashes.value(i).try_into().unwrap();
                let row: serde_json::Value = serde_json::from_str(text.value(i)).unwrap();
                assert!(row["attributes"]["audit.event_id"].is_string(), "{row}");
                assert_eq!(row["trace_id"].as_str().map(str::len), Some(32), "{row}");
                let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
                assert!(keys.is_sorted(), "{keys:?}");
                rows += 1;
            }
        }
        assert_eq!(rows, 50);
    }
}
