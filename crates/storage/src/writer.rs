//! Writing chained records as zstd Parquet files, create-only.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use otel_audit_event::merkle::{leaf_hash, merkle_root, node_hash, subtree_of_four};
use otel_audit_event::{FORMAT_VERSION, Record};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, ArrowWriter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::batch::rows_to_batch;
use crate::error::SinkError;
use crate::layout::{DataFile, Partition};
use crate::row::{ChainTag, StoredRow};
use crate::schema::meta;
use crate::store::Store;

/// How files are encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterOptions {
    /// zstd level, 1 (fast) to 22 (small). Default 1: on this format's pages
    /// (mostly random hashes and digests, plus dictionary-encoded text) it
    /// writes faster than 3 and the files come out no larger (docs/BENCHMARKS.md).
    pub zstd_level: i32,
    /// Rows per row group. Default 131072.
    pub max_row_group_rows: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 1,
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

/// Texts that are random identifiers: their min/max statistics cannot prune
/// anything (they span the whole range in any file) and cost a comparison per
/// value.
const RANDOM_TEXT: [&str; 3] = ["event_id", "actor_session", "gen_ai_conversation_id"];

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

/// Columns no codec shrinks, stored uncompressed so that the writer neither
/// sets up a compressor for them (parquet-rs creates one per column chunk,
/// about 15 µs in a virtual machine) nor searches them for matches, and a
/// reader does not copy them out of a decompressor: SHA-256 outputs and
/// ciphertext (random), and the tenant and chain id (one value per file).
/// Delta-packed times are not among them: a collector receives events in
/// batches, and their runs of equal deltas still compress.
const INCOMPRESSIBLE: [&str; 7] = [
    "prev_hash",
    "hash",
    "content_digests.list.element.digest",
    "sealed_content.list.element.nonce",
    "sealed_content.list.element.ciphertext",
    "tenant",
    "chain_id",
];

/// A column's path from its dotted name: a nested column has one part per
/// level (`ColumnPath::from` of a dotted string is one part, which matches no
/// nested column).
fn column_path(dotted: &str) -> ColumnPath {
    ColumnPath::new(dotted.split('.').map(str::to_owned).collect())
}

fn writer_properties(opts: &WriterOptions, path: &str) -> Result<WriterProperties, SinkError> {
    let level = ZstdLevel::try_new(opts.zstd_level).map_err(|source| SinkError::Encode {
        path: path.to_owned(),
        source,
    })?;
    // Statistics per row group and for top-level columns only: verify
    // checks those against the rows (FORMAT.md §6), and they are what DuckDB
    // prunes by. Per-page bounds (a page index) and bounds of list and map
    // elements would be pruning data no check covers.
    let mut b = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::None)
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.max_row_group_rows.max(1)));
    for field in crate::schema::schema().fields() {
        if !field.data_type().is_nested() {
            b = b
                .set_column_statistics_enabled(column_path(field.name()), EnabledStatistics::Chunk);
        }
    }
    // Unique or nearly unique per row: a dictionary only costs time (every
    // value is interned, then the dictionary is abandoned) and space.
    for col in HIGH_CARDINALITY {
        b = b.set_column_dictionary_enabled(column_path(col), false);
    }
    for col in RANDOM_TEXT {
        b = b.set_column_statistics_enabled(column_path(col), EnabledStatistics::None);
    }
    // Random bytes: min/max statistics cannot prune anything and cost a
    // comparison per value.
    for col in RANDOM_BYTES {
        b = b
            .set_column_dictionary_enabled(column_path(col), false)
            .set_column_statistics_enabled(column_path(col), EnabledStatistics::None);
    }
    for col in INCOMPRESSIBLE {
        b = b.set_column_compression(column_path(col), Compression::UNCOMPRESSED);
    }
    // Monotonic integers: deltas are tiny.
    for col in ["seq", "received_at", "time"] {
        b = b
            .set_column_dictionary_enabled(column_path(col), false)
            .set_column_encoding(column_path(col), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(b.build())
}

/// The `ARROW:schema` footer entry an [`ArrowWriter`] adds for the stored
/// schema. The encoder writes it itself, after the format's keys, so the
/// footer lists its keys in the same order as when the format's keys were
/// given up front (they used to be, and readers of either kind of file see
/// the same key-value list).
fn arrow_schema_key_value() -> &'static KeyValue {
    static KV: OnceLock<KeyValue> = OnceLock::new();
    KV.get_or_init(|| {
        let mut props = WriterProperties::default();
        add_encoded_arrow_schema_to_metadata(&crate::schema::schema(), &mut props);
        props
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == ARROW_SCHEMA_META_KEY))
            .cloned()
            .expect("add_encoded_arrow_schema_to_metadata adds ARROW:schema")
    })
}

/// RFC 6962 Merkle tree hash computed row by row in O(log n) memory: the
/// roots of the perfect subtrees covering the rows so far, one per set bit of
/// the row count, largest (leftmost) first. Gives exactly
/// [`merkle_root`] of all the hashes pushed.
#[derive(Debug, Clone, Default)]
struct MerkleAccumulator {
    /// `(subtree root, leaves under it)`, leaf counts strictly decreasing powers of two.
    subtrees: Vec<([u8; 32], u64)>,
}

impl MerkleAccumulator {
    fn push(&mut self, row_hash: &[u8; 32]) {
        self.push_subtree(leaf_hash(row_hash), 1);
    }

    /// Pushes the rows' hashes in order: four at a time while the tree's
    /// size is a multiple of four (their perfect subtree is then a subtree
    /// of the tree, and its hashes go two at a time: see
    /// [`subtree_of_four`]), one at a time around that.
    fn push_all<'a>(&mut self, row_hashes: impl IntoIterator<Item = &'a [u8; 32]>) {
        let mut singles = (4 - self.leaves() % 4) % 4;
        let (mut four, mut n) = ([[0u8; 32]; 4], 0);
        for h in row_hashes {
            if singles > 0 {
                self.push(h);
                singles -= 1;
                continue;
            }
            four[n] = *h;
            n += 1;
            if n == 4 {
                self.push_subtree(subtree_of_four(&four), 4);
                n = 0;
            }
        }
        four[..n].iter().for_each(|h| self.push(h));
    }

    /// Leaves pushed so far.
    fn leaves(&self) -> u64 {
        self.subtrees.iter().map(|(_, n)| n).sum()
    }

    /// Adds a perfect subtree of `size` leaves at the right, joining it with
    /// the subtrees of its size on its left.
    fn push_subtree(&mut self, mut node: [u8; 32], mut size: u64) {
        while let Some(&(left, left_size)) = self.subtrees.last()
            && left_size == size
        {
            self.subtrees.pop();
            node = node_hash(&left, &node);
            size *= 2;
        }
        self.subtrees.push((node, size));
    }

    /// `MTH(D[0..n)) = node(MTH(D[0..k)), MTH(D[k..n)))` with `k` the largest
    /// power of two below `n`: the left subtree is the largest perfect one, so
    /// the root folds the subtrees from the right.
    fn root(&self) -> [u8; 32] {
        let mut from_right = self.subtrees.iter().rev();
        match from_right.next() {
            None => merkle_root(&[]),
            Some(&(last, _)) => from_right.fold(last, |acc, (left, _)| node_hash(left, &acc)),
        }
    }
}

/// Rows to hand a [`FileEncoder`] per [`push`](FileEncoder::push): large
/// enough to amortise building an Arrow batch, small enough that a chunk's
/// records are still in the CPU's caches when they are encoded and that
/// encoding one never takes a core for long.
pub const ENCODER_CHUNK_ROWS: usize = 2048;

/// Encodes one data file row chunk by row chunk into an in-memory Parquet
/// writer, so a sink need not hold a file's records until it is closed: each
/// chunk is turned into Arrow columns and handed to the Parquet writer (which
/// cuts a row group every [`WriterOptions::max_row_group_rows`] rows), and
/// only the row count, the first row's `prev_hash`, the last row's seq and
/// hash and an O(log n) Merkle accumulator are kept of the rows themselves.
///
/// [`FileEncoder::finish`] returns the same [`EncodedFile`] (name, footer,
/// rows) as [`encode_file`] over all the rows; pushing them in one chunk gives
/// byte-identical output, smaller chunks may cut data pages at other rows.
/// CPU-bound: call it off the async executor.
#[derive(Debug)]
pub struct FileEncoder {
    file: DataFile,
    /// `file.path()`, for errors.
    path: String,
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
    /// `prev_hash` of the first row.
    prev_hash: [u8; 32],
    /// Seq and hash of the last row; `None` only before the first push of
    /// [`encode_file`].
    last: Option<(u64, [u8; 32])>,
    merkle: MerkleAccumulator,
    /// Set when the Parquet writer failed mid-write: the file may hold part of
    /// a chunk, so nothing more is accepted.
    broken: bool,
    /// The tag of a row found to be of the file's chain: rows with it are
    /// of the chain without reading their ids (see [`ChainTag`]).
    chain_tag: Option<ChainTag>,
}

impl FileEncoder {
    /// Starts the file whose first row will be `first` (its chain, seq and
    /// partition name the file). Nothing is written yet: the first
    /// [`push`](Self::push) must start with that row.
    pub fn new<R: StoredRow>(first: &R, opts: &WriterOptions) -> Result<FileEncoder, SinkError> {
        Self::with_capacity(first, opts, 0)
    }

    /// [`new`](Self::new), with room for `capacity` output bytes reserved
    /// at once. The output grows by doubling otherwise: a 14 MB file is
    /// copied about 20 times on the way and touches twice its size in fresh
    /// memory. The room counts in [`memory_bytes`](Self::memory_bytes).
    pub fn with_capacity<R: StoredRow>(
        first: &R,
        opts: &WriterOptions,
        capacity: usize,
    ) -> Result<Self, SinkError> {
        let file = DataFile::new(Partition::of(first), first.chain_id(), first.seq());
        let path = file.path();
        let props = writer_properties(opts, &path)?;
        // The Arrow schema entry is appended by `finish`, after the footer keys.
        let options = ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(true);
        let writer = ArrowWriter::try_new_with_options(
            Vec::with_capacity(capacity),
            crate::schema::schema(),
            options,
        )
        .map_err(|source| SinkError::Encode {
            path: path.clone(),
            source,
        })?;
        Ok(FileEncoder {
            file,
            path,
            writer,
            rows: 0,
            prev_hash: *first.prev_hash(),
            last: None,
            merkle: MerkleAccumulator::default(),
            broken: false,
            chain_tag: None,
        })
    }

    fn encode_error(&self, source: ParquetError) -> SinkError {
        SinkError::Encode {
            path: self.path.clone(),
            source,
        }
    }

    fn check_usable(&self) -> Result<(), SinkError> {
        if self.broken {
            return Err(self.encode_error(ParquetError::General(
                "an earlier write failed part-way; the file is incomplete".into(),
            )));
        }
        Ok(())
    }

    /// Checks that `records` continue the file's run: same chain, next seq,
    /// `prev_hash` = the previous row's hash, same partition. Returns the
    /// tag of the file's chain, if a row had one.
    fn check_links<R: StoredRow>(&self, records: &[R]) -> Result<Option<ChainTag>, SinkError> {
        let fail = |reason: String| SinkError::NotContiguous {
            path: self.path.clone(),
            reason,
        };
        let mut prev = self.last;
        let mut known = self.chain_tag;
        for r in records {
            let seq_r = r.seq();
            // A row tagged as a row found to be of the file's chain and
            // tenant is of them too, and its bytes are not read: this pass
            // would otherwise be the first to touch every row (see
            // `ChainTag`), a cache miss each, before the columns read the
            // rows in order.
            let by_tag = r.has_tag(known);
            if !by_tag && !r.is_of_chain(&self.file.chain_id) {
                return Err(fail(format!(
                    "seq {seq_r} of chain {} follows chain {}",
                    r.chain_id(),
                    self.file.chain_id
                )));
            }
            match prev {
                None if seq_r != self.file.first_seq => {
                    return Err(fail(format!(
                        "seq {seq_r} is not the file's first seq {}",
                        self.file.first_seq
                    )));
                }
                Some((seq, _)) if seq.checked_add(1) != Some(seq_r) => {
                    return Err(fail(format!(
                        "seq {seq_r} follows seq {seq} (expected seq {})",
                        seq.wrapping_add(1)
                    )));
                }
                Some((seq, hash)) if *r.prev_hash() != hash => {
                    return Err(fail(format!(
                        "seq {seq_r} does not link to seq {seq}: its prev_hash is not that row's hash"
                    )));
                }
                _ => {}
            }
            let partition = &self.file.partition;
            let held = if by_tag {
                partition.holds_time(r.received_at())
            } else {
                partition.holds(r)
            };
            if !held {
                return Err(fail(format!(
                    "seq {seq_r} belongs to partition {}, not {}",
                    Partition::of(r).dir(),
                    partition.dir()
                )));
            }
            if !by_tag {
                known = r.chain_tag().or(known);
            }
            prev = Some((seq_r, *r.hash()));
        }
        Ok(known)
    }

    /// Appends rows; they must continue the run: same chain, seq + 1,
    /// `prev_hash` = previous hash, same partition — else
    /// [`SinkError::NotContiguous`] naming the file and the offending seq, and
    /// nothing of the chunk is written (the encoder stays usable with the
    /// earlier rows). After a [`SinkError::Encode`] the file may hold part of
    /// the chunk, and every later call fails: discard the encoder.
    pub fn push<R: StoredRow>(&mut self, records: &[R]) -> Result<(), SinkError> {
        self.check_usable()?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        self.chain_tag = self.check_links(records)?;
        let batch = rows_to_batch(records).map_err(|e| self.encode_error(e.into()))?;
        if let Err(e) = self.writer.write(&batch) {
            self.broken = true;
            return Err(self.encode_error(e));
        }
        if self.last.is_none() {
            self.prev_hash = *first.prev_hash();
        }
        self.merkle.push_all(records.iter().map(StoredRow::hash));
        self.rows += records.len() as u64;
        self.last = Some((last.seq(), *last.hash()));
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Seq of the first row (the one the file is named after).
    pub fn first_seq(&self) -> u64 {
        self.file.first_seq
    }

    /// Seq and hash of the last row written; `None` before the first push.
    pub fn last(&self) -> Option<(u64, [u8; 32])> {
        self.last
    }

    /// The file being written: partition, chain and first seq.
    pub fn file(&self) -> &DataFile {
        &self.file
    }

    /// Approximate bytes held, for memory accounting: the encoded bytes in the
    /// output buffer (its allocated capacity, at least the bytes written, plus
    /// the Parquet writer's 8 KiB write buffer), the in-progress row group's
    /// column writers (buffered pages, dictionaries, encoder state: about
    /// 300 KiB as soon as a row group holds a row) and the Merkle accumulator.
    pub fn memory_bytes(&self) -> u64 {
        /// `std::io::BufWriter`'s default capacity, which the Parquet writer uses.
        const WRITE_BUFFER: usize = 8 * 1024;
        let output = self
            .writer
            .inner()
            .capacity()
            .max(self.writer.bytes_written())
            + WRITE_BUFFER;
        let merkle = self.merkle.subtrees.capacity() * std::mem::size_of::<([u8; 32], u64)>();
        (output + self.writer.memory_size() + merkle) as u64
    }

    /// Closes the file: writes the last row group and the footer — format
    /// version, chain, first and last seq, row count, `prev_hash` of the first
    /// row, hash of the last row and Merkle root of the row hashes, exactly
    /// what [`FooterMeta::compute`] gives over the rows — and returns the
    /// encoded file. [`SinkError::Empty`] if no row was written.
    pub fn finish(mut self) -> Result<EncodedFile, SinkError> {
        self.check_usable()?;
        let Some((last_seq, last_hash)) = self.last else {
            return Err(SinkError::Empty);
        };
        let footer = FooterMeta {
            format_version: FORMAT_VERSION,
            chain_id: self.file.chain_id.clone(),
            first_seq: self.file.first_seq,
            last_seq,
            row_count: self.rows,
            prev_hash: self.prev_hash,
            last_hash,
            merkle_root: self.merkle.root(),
        };
        for kv in footer.to_key_values() {
            self.writer.append_key_value_metadata(kv);
        }
        self.writer
            .append_key_value_metadata(arrow_schema_key_value().clone());
        // Flushes the last row group, writes the footer, returns the buffer.
        let FileEncoder {
            file, path, writer, ..
        } = self;
        let bytes = writer
            .into_inner()
            .map_err(|source| SinkError::Encode { path, source })?;
        Ok(EncodedFile {
            file,
            footer,
            bytes: Bytes::from(bytes),
        })
    }
}

/// Encodes one linked run of records (one chain, one partition) as a Parquet
/// file, in one chunk through a [`FileEncoder`]. CPU-bound: call it off the
/// async executor.
pub fn encode_file(records: &[Record], opts: &WriterOptions) -> Result<EncodedFile, SinkError> {
    let first = records.first().ok_or(SinkError::Empty)?;
    // Room for the whole file up front: growing the buffer copies it. The
    // synthetic workload takes ~166 bytes per row.
    let mut enc = FileEncoder::with_capacity(first, opts, records.len() * 176 + 4096)?;
    enc.push(records)?;
    enc.finish()
}

/// Puts an encoded file into the store, never overwriting: if the name is
/// taken by the same rows (a retry), that is reported as `AlreadyPresent`; if by
/// other rows, as [`SinkError::Conflict`].
pub async fn put_file(store: &Store, file: &EncodedFile) -> Result<WriteOutcome, SinkError> {
    let path = file.file.path();
    let existing = match store.put_new(&path, file.bytes.clone()).await {
        Ok(None) => return Ok(WriteOutcome::Written),
        Ok(Some(existing)) => existing,
        Err(source) => return Err(SinkError::Store { path, source }),
    };
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use otel_audit_event::{AuditEvent, Category, Chain};

    use super::*;

    fn run(n: u64) -> Vec<Record> {
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap();
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        (0..n)
            .map(|i| {
                let mut e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
                e.time = t;
                e.actor.id = Some(format!("user-{}", i % 7));
                chain.append(t, e).unwrap()
            })
            .collect()
    }

    /// `encode_file` as it was before `FileEncoder`: the footer given up front
    /// through the writer properties, all rows in one batch.
    fn encode_file_before_streaming(records: &[Record], opts: &WriterOptions) -> Bytes {
        let rows: Vec<_> = records
            .iter()
            .map(|r| (r.seq, r.prev_hash, r.hash))
            .collect();
        let footer = FooterMeta::compute(&records[0].chain_id, &rows).unwrap();
        let props = WriterProperties::into_builder(writer_properties(opts, "").unwrap())
            .set_key_value_metadata(Some(footer.to_key_values()))
            .build();
        let batch = rows_to_batch(records).unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(buf)
    }

    #[test]
    fn merkle_accumulator_equals_merkle_root() {
        let hashes: Vec<[u8; 32]> = (0..300u32)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect();
        let mut acc = MerkleAccumulator::default();
        assert_eq!(acc.root(), merkle_root(&[]));
        for (n, h) in hashes.iter().enumerate() {
            acc.push(h);
            assert_eq!(acc.root(), merkle_root(&hashes[..=n]), "{} rows", n + 1);
            // One subtree per set bit of the row count.
            assert_eq!(acc.subtrees.len(), (n + 1).count_ones() as usize);
        }
        // Chunks of every size from every start (four at a time where the
        // size allows), as the encoder pushes them.
        for start in 0..9 {
            for chunk in [1, 2, 3, 4, 5, 7, 8, 13, 64] {
                let mut acc = MerkleAccumulator::default();
                hashes[..start].iter().for_each(|h| acc.push(h));
                let mut n = start;
                for c in hashes[start..].chunks(chunk).take(6) {
                    acc.push_all(c.iter());
                    n += c.len();
                    assert_eq!(acc.root(), merkle_root(&hashes[..n]), "{start} + {chunk}s");
                    assert_eq!(acc.leaves(), n as u64);
                }
            }
        }
    }

    #[test]
    fn one_chunk_is_byte_identical_to_the_encoder_before_streaming() {
        let records = run(2500);
        for max_rows in [1000, 128 * 1024] {
            let opts = WriterOptions {
                max_row_group_rows: max_rows,
                ..WriterOptions::default()
            };
            for n in [1, 2, 1000, 2500] {
                let new = encode_file(&records[..n], &opts).unwrap();
                let old = encode_file_before_streaming(&records[..n], &opts);
                assert!(new.bytes == old, "{n} rows, row groups of {max_rows}");
            }
        }
    }

    /// The per-column settings name nested columns by their dotted paths;
    /// each must match a column of the file (a one-part `ColumnPath` of a
    /// dotted name matches none, and the setting is silently ignored).
    #[test]
    fn column_settings_reach_their_columns() {
        let records = run(3);
        let file = encode_file(&records, &WriterOptions::default()).unwrap();
        let r = parquet::file::reader::SerializedFileReader::new(file.bytes).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&r);
        let columns = meta.row_group(0).columns();
        let column = |name: &str| {
            columns
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"))
        };
        for name in HIGH_CARDINALITY.iter().chain(&RANDOM_BYTES) {
            let c = column(name);
            assert!(
                !c.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
                "{name} is dictionary-encoded"
            );
        }
        for name in RANDOM_TEXT.iter().chain(&RANDOM_BYTES) {
            assert!(column(name).statistics().is_none(), "{name} has statistics");
        }
        for name in [
            "action",
            "time",
            "seq",
            "gen_ai_temperature",
            "safety_passed",
        ] {
            assert!(
                column(name).statistics().is_some(),
                "{name} has no statistics"
            );
        }
        for c in columns {
            let name = c.column_path().string();
            assert_eq!(c.column_index_offset(), None, "{name} has a page index");
            // No statistic escapes verify's check of top-level columns.
            if name.contains('.') {
                assert!(c.statistics().is_none(), "{name} has statistics");
            }
            let expected = if INCOMPRESSIBLE.contains(&name.as_str()) {
                Compression::UNCOMPRESSED
            } else {
                Compression::ZSTD(ZstdLevel::try_new(WriterOptions::default().zstd_level).unwrap())
            };
            assert_eq!(c.compression(), expected, "{name}");
        }
    }

    #[test]
    fn footer_key_values_keep_their_order() {
        let records = run(3);
        let file = encode_file(&records, &WriterOptions::default()).unwrap();
        let r = parquet::file::reader::SerializedFileReader::new(file.bytes).unwrap();
        let kv = parquet::file::reader::FileReader::metadata(&r)
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .clone();
        let mut want = file.footer.to_key_values();
        want.push(arrow_schema_key_value().clone());
        assert_eq!(kv, want);
    }

    #[test]
    fn accessors_follow_the_rows() {
        let records = run(10);
        let mut enc = FileEncoder::new(&records[3], &WriterOptions::default()).unwrap();
        assert_eq!(enc.rows(), 0);
        assert_eq!(enc.last(), None);
        assert_eq!(enc.first_seq(), 3);
        enc.push(&records[3..4]).unwrap();
        assert_eq!(enc.last(), Some((3, records[3].hash)));
        assert_eq!(
            enc.file().path(),
            DataFile::new(Partition::of(&records[3]), "c1.acme", 3).path()
        );
        let before = enc.memory_bytes();
        assert!(before > 0);
        enc.push(&records[4..10]).unwrap();
        enc.push::<Record>(&[]).unwrap();
        assert_eq!(enc.rows(), 7);
        assert_eq!(enc.last(), Some((9, records[9].hash)));
        assert!(enc.memory_bytes() >= before);
    }

    #[test]
    fn encode_file_refuses_an_empty_or_broken_run() {
        let records = run(4);
        let opts = WriterOptions::default();
        assert!(matches!(encode_file(&[], &opts), Err(SinkError::Empty)));
        let gap = [records[0].clone(), records[2].clone()];
        let err = encode_file(&gap, &opts).unwrap_err();
        assert!(matches!(err, SinkError::NotContiguous { .. }), "{err}");
        assert!(err.to_string().contains("seq 2 follows seq 0"), "{err}");
    }

    #[test]
    fn a_bad_zstd_level_names_the_file() {
        let records = run(1);
        let opts = WriterOptions {
            zstd_level: 99,
            ..WriterOptions::default()
        };
        let err = FileEncoder::new(&records[0], &opts).unwrap_err();
        assert!(
            matches!(&err, SinkError::Encode { path, .. } if path.ends_with(".parquet")),
            "{err}"
        );
    }
}
