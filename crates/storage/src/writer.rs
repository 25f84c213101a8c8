//! Writing chained records as zstd Parquet files, create-only.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use otel_audit_event::merkle::merkle_root;
use otel_audit_event::{FORMAT_VERSION, Record};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::batch::records_to_batch;
use crate::error::SinkError;
use crate::layout::{DataFile, Partition};
use crate::schema::meta;
use crate::store::Store;

/// How files are encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterOptions {
    /// zstd level, 1 (fast) to 22 (small). Default 3.
    pub zstd_level: i32,
    /// Rows per row group. Default 131072.
    pub max_row_group_rows: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 3,
            max_row_group_rows: 128 * 1024,
        }
    }
}

/// What a data file holds, as its footer records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FooterMeta {
    /// Format version.
    pub format_version: u32,
    /// The chain.
    pub chain_id: String,
    /// Seq of the first row.
    pub first_seq: u64,
    /// Seq of the last row.
    pub last_seq: u64,
    /// Number of rows.
    pub row_count: u64,
    /// `prev_hash` of the first row.
    #[serde(with = "otel_audit_event::hex32")]
    pub prev_hash: [u8; 32],
    /// `hash` of the last row.
    #[serde(with = "otel_audit_event::hex32")]
    pub last_hash: [u8; 32],
    /// Merkle root of the row hashes.
    #[serde(with = "otel_audit_event::hex32")]
    pub merkle_root: [u8; 32],
}

impl FooterMeta {
    /// Computes the footer of a run of rows given their `(seq, prev_hash, hash)`.
    pub fn compute(chain_id: &str, rows: &[(u64, [u8; 32], [u8; 32])]) -> Option<Self> {
        let first = rows.first()?;
        let last = rows.last()?;
        let hashes: Vec<[u8; 32]> = rows.iter().map(|r| r.2).collect();
        Some(FooterMeta {
            format_version: FORMAT_VERSION,
            chain_id: chain_id.to_owned(),
            first_seq: first.0,
            last_seq: last.0,
            row_count: rows.len() as u64,
            prev_hash: first.1,
            last_hash: last.2,
            merkle_root: merkle_root(&hashes),
        })
    }

    /// The footer as Parquet key-value metadata.
    pub fn to_key_values(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new(meta::FORMAT_VERSION.into(), self.format_version.to_string()),
            KeyValue::new(meta::CHAIN_ID.into(), self.chain_id.clone()),
            KeyValue::new(meta::FIRST_SEQ.into(), self.first_seq.to_string()),
            KeyValue::new(meta::LAST_SEQ.into(), self.last_seq.to_string()),
            KeyValue::new(meta::ROW_COUNT.into(), self.row_count.to_string()),
            KeyValue::new(meta::PREV_HASH.into(), hex::encode(self.prev_hash)),
            KeyValue::new(meta::LAST_HASH.into(), hex::encode(self.last_hash)),
            KeyValue::new(meta::MERKLE_ROOT.into(), hex::encode(self.merkle_root)),
        ]
    }

    /// Reads the footer from Parquet key-value metadata; the error names the
    /// missing or malformed key.
    pub fn from_key_values(kv: Option<&Vec<KeyValue>>) -> Result<Self, String> {
        let map: BTreeMap<&str, &str> = kv
            .into_iter()
            .flatten()
            .filter_map(|k| Some((k.key.as_str(), k.value.as_deref()?)))
            .collect();
        let get = |key: &str| {
            map.get(key)
                .copied()
                .ok_or_else(|| format!("{key} is missing"))
        };
        // Only the canonical spelling is accepted: the footer is evidence, and
        // "0727", "+55" or upper-case hex are not what a writer of this format emits.
        let num = |key: &str| -> Result<u64, String> {
            let v = get(key)?;
            let canonical = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && (v == "0" || !v.starts_with('0'));
            canonical
                .then(|| v.parse().ok())
                .flatten()
                .ok_or_else(|| format!("{key} {v:?} is not a plain decimal number"))
        };
        let h = |key: &str| -> Result<[u8; 32], String> {
            let v = get(key)?;
            let mut out = [0u8; 32];
            let lower = v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !lower || hex::decode_to_slice(v, &mut out).is_err() {
                return Err(format!("{key} is not 64 lower-case hex digits"));
            }
            Ok(out)
        };
        Ok(FooterMeta {
            format_version: u32::try_from(num(meta::FORMAT_VERSION)?)
                .map_err(|_| format!("{} is out of range", meta::FORMAT_VERSION))?,
            chain_id: get(meta::CHAIN_ID)?.to_owned(),
            first_seq: num(meta::FIRST_SEQ)?,
            last_seq: num(meta::LAST_SEQ)?,
            row_count: num(meta::ROW_COUNT)?,
            prev_hash: h(meta::PREV_HASH)?,
            last_hash: h(meta::LAST_HASH)?,
            merkle_root: h(meta::MERKLE_ROOT)?,
        })
    }
}

/// A data file ready to be put into a store.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    /// Where it goes.
    pub file: DataFile,
    /// What its footer says.
    pub footer: FooterMeta,
    /// The Parquet bytes.
    pub bytes: Bytes,
}

impl EncodedFile {
    /// SHA-256 of the file's bytes (what digests record).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
}

/// Whether a put created the file or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The file was created.
    Written,
    /// An identical file was already there (a retry after a crash); nothing changed.
    AlreadyPresent,
}

/// Columns whose values rarely repeat within a file.
const HIGH_CARDINALITY: [&str; 4] = [
    "event_id",
    "duration_ns",
    "actor_session",
    "gen_ai_conversation_id",
];

/// Columns of hashes, digests and other random bytes.
const RANDOM_BYTES: [&str; 8] = [
    "prev_hash",
    "hash",
    "trace_id",
    "span_id",
    "parent_span_id",
    "content_digests.list.element.digest",
    "sealed_content.list.element.nonce",
    "sealed_content.list.element.ciphertext",
];

fn writer_properties(
    opts: &WriterOptions,
    footer: &FooterMeta,
) -> Result<WriterProperties, SinkError> {
    let level = ZstdLevel::try_new(opts.zstd_level).map_err(|source| SinkError::Encode {
        path: String::new(),
        source,
    })?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.max_row_group_rows.max(1)))
        .set_key_value_metadata(Some(footer.to_key_values()));
    // Unique or nearly unique per row: a dictionary only costs time (every
    // value is interned, then the dictionary is abandoned) and space.
    for col in HIGH_CARDINALITY {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), false);
    }
    // Random bytes: min/max statistics cannot prune anything and cost a
    // comparison per value.
    for col in RANDOM_BYTES {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    // Monotonic integers: deltas are tiny.
    for col in ["seq", "received_at", "time"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(b.build())
}

/// Checks that `records` are one linked run of one chain, in one partition.
fn check_run(records: &[Record]) -> Result<DataFile, SinkError> {
    let first = records.first().ok_or(SinkError::Empty)?;
    let file = DataFile::new(Partition::of(first), &first.chain_id, first.seq);
    let fail = |reason: String| SinkError::NotContiguous {
        path: file.path(),
        reason,
    };
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.chain_id != a.chain_id {
            return Err(fail(format!(
                "chain {} follows chain {}",
                b.chain_id, a.chain_id
            )));
        }
        if b.seq != a.seq + 1 || b.prev_hash != a.hash {
            return Err(fail(format!(
                "seq {} does not link to seq {}",
                b.seq, a.seq
            )));
        }
        if Partition::of(b) != file.partition {
            return Err(fail(format!(
                "seq {} belongs to partition {}",
                b.seq,
                Partition::of(b).dir()
            )));
        }
    }
    Ok(file)
}

/// Encodes one linked run of records (one chain, one partition) as a Parquet
/// file. CPU-bound: call it off the async executor.
pub fn encode_file(records: &[Record], opts: &WriterOptions) -> Result<EncodedFile, SinkError> {
    let file = check_run(records)?;
    let rows: Vec<(u64, [u8; 32], [u8; 32])> = records
        .iter()
        .map(|r| (r.seq, r.prev_hash, r.hash))
        .collect();
    let footer = FooterMeta::compute(&file.chain_id, &rows).ok_or(SinkError::Empty)?;
    let enc = |source| SinkError::Encode {
        path: file.path(),
        source,
    };
    let props = writer_properties(opts, &footer)?;
    let batch = records_to_batch(records).map_err(|e| enc(e.into()))?;
    let mut buf = Vec::with_capacity(records.len() * 128 + 4096);
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(enc)?;
    w.write(&batch).map_err(enc)?;
    w.close().map_err(enc)?;
    Ok(EncodedFile {
        file,
        footer,
        bytes: Bytes::from(buf),
    })
}

/// Puts an encoded file into the store, never overwriting: if the name is
/// taken by the same rows (a retry), that is reported as `AlreadyPresent`; if by
/// other rows, as [`SinkError::Conflict`].
pub async fn put_file(store: &Store, file: &EncodedFile) -> Result<WriteOutcome, SinkError> {
    let path = file.file.path();
    let location = store.location(&path);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let os = store.object_store();
    match os
        .put_opts(&location, PutPayload::from_bytes(file.bytes.clone()), opts)
        .await
    {
        Ok(_) => Ok(WriteOutcome::Written),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = os
                .get(&location)
                .await
                .map_err(|source| SinkError::Store {
                    path: path.clone(),
                    source,
                })?
                .bytes()
                .await
                .map_err(|source| SinkError::Store {
                    path: path.clone(),
                    source,
                })?;
            if existing == file.bytes {
                return Ok(WriteOutcome::AlreadyPresent);
            }
            // Same rows encoded by another writer version still count as the same file.
            match crate::reader::footer_of(existing) {
                Ok(footer) if footer == file.footer => Ok(WriteOutcome::AlreadyPresent),
                Ok(footer) => Err(SinkError::Conflict {
                    path,
                    reason: format!(
                        "existing seq {}..={} merkle root {}, new seq {}..={} merkle root {}",
                        footer.first_seq,
                        footer.last_seq,
                        hex::encode(footer.merkle_root),
                        file.footer.first_seq,
                        file.footer.last_seq,
                        hex::encode(file.footer.merkle_root)
                    ),
                }),
                Err(e) => Err(SinkError::Conflict {
                    path,
                    reason: format!("existing file is unreadable: {e}"),
                }),
            }
        }
        Err(source) => Err(SinkError::Store { path, source }),
    }
}

/// Encodes (on the blocking pool) and puts one linked run of records.
pub async fn write_file(
    store: &Store,
    records: Vec<Record>,
    opts: &WriterOptions,
) -> Result<(EncodedFile, WriteOutcome), SinkError> {
    let opts = opts.clone();
    let encoded = tokio::task::spawn_blocking(move || encode_file(&records, &opts))
        .await
        .expect("encoding task panicked")?;
    let outcome = put_file(store, &encoded).await?;
    Ok((encoded, outcome))
}

/// Splits chained records (in seq order per chain) into runs that each fit one
/// file: one chain, one partition, at most `max_rows` rows.
pub fn split_runs(records: Vec<Record>, max_rows: usize) -> Vec<Vec<Record>> {
    let mut runs: Vec<Vec<Record>> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        let idx = open.get(&r.chain_id).copied().filter(|&i| {
            let run = &runs[i];
            let last = run.last().expect("runs are never empty");
            run.len() < max_rows.max(1)
                && last.seq + 1 == r.seq
                && Partition::of(last) == Partition::of(&r)
        });
        match idx {
            Some(i) => runs[i].push(r),
            None => {
                open.insert(r.chain_id.clone(), runs.len());
                runs.push(vec![r]);
            }
        }
    }
    runs
}
