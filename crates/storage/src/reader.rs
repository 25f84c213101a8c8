//! Listing partitions (pruned by time) and reading data files back.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use otel_audit_event::Record;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
};
use parquet::arrow::{ProjectionMask, parquet_to_arrow_field_levels};
use parquet::basic::Encoding;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sha2::{Digest, Sha256};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, FieldRef, Schema};

use crate::batch::batch_to_records;
use crate::error::{DecodeError, ReadError};
use crate::layout::{DataFile, Partition, parse_date_dir, parse_hour_dir};
use crate::store::Store;
use crate::writer::FooterMeta;

/// A half-open time range `[from, to)` over the collector's receive time.
/// Either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// Everything.
    pub fn all() -> Self {
        TimeRange::default()
    }

    /// Whether neither end is set.
    pub fn is_unbounded(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether the hour `[start, end)` overlaps the range.
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| end > f) && self.to.is_none_or(|t| start < t)
    }

    /// The range for messages: empty when unbounded, else
    /// ` between <from> and <to>`.
    pub fn describe(&self) -> String {
        match (self.from, self.to) {
            (None, None) => String::new(),
            (f, t) => format!(
                " between {} and {}",
                f.map_or("the beginning".into(), |d| d.to_rfc3339()),
                t.map_or("now".into(), |d| d.to_rfc3339())
            ),
        }
    }

    /// Whether `t` is in the range.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
    }
}

/// A data file found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Its identity from the path.
    pub file: DataFile,
    /// Its path relative to the store root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Data files, sorted by path.
    pub files: Vec<ListedFile>,
    /// Objects inside the partition tree that are not data files (relative paths).
    pub unexpected: Vec<String>,
}

fn store_err(store: &Store, path: &Path) -> impl FnOnce(object_store::Error) -> ReadError {
    let url = store.url().to_owned();
    let path = path.to_string();
    move |source| ReadError::Store { url, path, source }
}

async fn list_dir(store: &Store, dir: &Path) -> Result<(Vec<Path>, Vec<ObjectMeta>), ReadError> {
    let prefix = (!dir.as_ref().is_empty()).then_some(dir);
    let r = store
        .object_store()
        .list_with_delimiter(prefix)
        .await
        .map_err(store_err(store, dir))?;
    Ok((r.common_prefixes, r.objects))
}

fn last_segment(p: &Path) -> String {
    p.parts()
        .next_back()
        .map(|s| s.as_ref().to_owned())
        .unwrap_or_default()
}

/// Lists the data files whose hour partition overlaps `range`, pruning by the
/// `tenant=/date=/hour=` directories so only matching partitions are listed.
/// Top-level names starting with `_` (such as `_digests/`) are not data.
pub async fn list_files(store: &Store, range: &TimeRange) -> Result<Listing, ReadError> {
    let root = store.prefix().clone();
    let (tenants, top_objects) = list_dir(store, &root).await?;
    let mut listing = Listing::default();
    for o in top_objects {
        let name = last_segment(&o.location);
        if !name.starts_with('_') && !name.starts_with('.') {
            listing
                .unexpected
                .push(store.relative(&o.location).unwrap_or(name));
        }
    }
    let mut hour_dirs: Vec<Path> = Vec::new();
    for t in tenants {
        let seg = last_segment(&t);
        if seg.starts_with('_') || seg.starts_with('.') {
            continue;
        }
        let valid_tenant = seg.strip_prefix("tenant=").is_some_and(|t| {
            otel_audit_event::check_path_token(t, otel_audit_event::MAX_TENANT_BYTES).is_ok()
        });
        if !valid_tenant {
            listing
                .unexpected
                .push(store.relative(&t).unwrap_or(seg) + "/");
            continue;
        }
        let (dates, objs) = list_dir(store, &t).await?;
        listing
            .unexpected
            .extend(objs.iter().filter_map(|o| store.relative(&o.location)));
        for d in dates {
            let Some(date) = parse_date_dir(&last_segment(&d)) else {
                listing
                    .unexpected
                    .push(store.relative(&d).unwrap_or_default() + "/");
                continue;
            };
            let day = Partition {
                tenant: String::new(),
                date,
                hour: 0,
            };
            if range.overlaps(day.start(), day.start() + chrono::Duration::days(1)) {
                hour_dirs.push(d);
            }
        }
    }
    // Dates → hours → files, listed concurrently: on S3 each level is a request.
    let hours: Vec<(Vec<Path>, Vec<ObjectMeta>)> = stream::iter(hour_dirs)
        .map(|d| async move { list_dir(store, &d).await })
        .buffered(16)
        .try_collect()
        .await?;
    let mut file_dirs = Vec::new();
    for (hs, objs) in hours {
        listing
            .unexpected
            .extend(objs.iter().filter_map(|o| store.relative(&o.location)));
        for h in hs {
            let Some(hour) = parse_hour_dir(&last_segment(&h)) else {
                listing
                    .unexpected
                    .push(store.relative(&h).unwrap_or_default() + "/");
                continue;
            };
            let rel = store.relative(&h).unwrap_or_default();
            let date = rel
                .split('/')
                .nth(1)
                .and_then(parse_date_dir)
                .expect("parent was parsed as a date");
            let p = Partition {
                tenant: String::new(),
                date,
                hour,
            };
            if range.overlaps(p.start(), p.end()) {
                file_dirs.push(h);
            }
        }
    }
    let files: Vec<(Vec<Path>, Vec<ObjectMeta>)> = stream::iter(file_dirs)
        .map(|d| async move { list_dir(store, &d).await })
        .buffered(16)
        .try_collect()
        .await?;
    for (subdirs, objs) in files {
        for s in subdirs {
            listing
                .unexpected
                .push(store.relative(&s).unwrap_or_default() + "/");
        }
        for o in objs {
            let rel = store.relative(&o.location).unwrap_or_default();
            match DataFile::parse(&rel) {
                Ok(file) => listing.files.push(ListedFile {
                    file,
                    path: rel,
                    size: o.size,
                }),
                Err(_) => listing.unexpected.push(rel),
            }
        }
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    listing.unexpected.sort();
    Ok(listing)
}

/// Fetches a file's bytes.
pub async fn fetch(store: &Store, path: &str) -> Result<Bytes, ReadError> {
    let loc = store.location(path);
    store
        .object_store()
        .get(&loc)
        .await
        .map_err(store_err(store, &loc))?
        .bytes()
        .await
        .map_err(store_err(store, &loc))
}

/// A decoded data file.
#[derive(Debug, Clone)]
pub struct DecodedFile {
    /// What the footer says, or which key is missing or malformed.
    pub footer: Result<FooterMeta, String>,
    /// The rows, as stored.
    pub batches: Vec<RecordBatch>,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
}

/// A data file opened for decoding: its footer is read, its rows come from
/// [`batches`](Self::batches) on demand.
#[derive(Debug)]
pub struct OpenedFile {
    /// What the footer says, or which key is missing or malformed.
    pub footer: Result<FooterMeta, String>,
    /// The file's Parquet metadata (row groups, column statistics).
    pub metadata: Arc<parquet::file::metadata::ParquetMetaData>,
    /// The rows, as stored, `batch_size` at a time.
    pub batches: ParquetRecordBatchReader,
}

/// How [`open_decoder`] returns text columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextColumns {
    /// As `Utf8` arrays, exactly the stored schema.
    Plain,
    /// A top-level text column whose pages are all dictionary-encoded as a
    /// `Dictionary(Int32, Utf8)` array (its values are the same strings);
    /// any other column as with [`Plain`](Self::Plain).
    ///
    /// The decoder then hands out the file's dictionary and one key per row
    /// instead of copying the string of every row into a new buffer, which
    /// was a tenth of verify's CPU time. Only for readers that take either
    /// type ([`scan_batch`](crate::scan_batch)).
    KeepDictionaries,
}

/// Opens a data file's bytes for decoding in batches of `batch_size` rows,
/// after checking its schema. CPU-bound.
///
/// A caller that processes each batch and drops it (verify) keeps the
/// decoded columns small enough to stay in the CPU caches while it reads
/// them, instead of decoding a whole file into memory first.
pub fn open_decoder(
    bytes: Bytes,
    batch_size: usize,
    text: TextColumns,
) -> Result<OpenedFile, DecodeError> {
    let mut meta = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())?;
    let footer = FooterMeta::from_key_values(meta.metadata().file_metadata().key_value_metadata());
    crate::schema::check_schema(meta.schema()).map_err(DecodeError::Schema)?;
    if text == TextColumns::KeepDictionaries
        && let Some(m) = with_dictionaries(&meta)
    {
        meta = m;
    }
    // The same reader `ParquetRecordBatchReaderBuilder` builds, over pages
    // that `FileChunks` decompresses (see there why).
    let levels = parquet_to_arrow_field_levels(
        meta.parquet_schema(),
        ProjectionMask::all(),
        Some(meta.schema().fields()),
    )?;
    let chunks = crate::pages::FileChunks::new(bytes, meta.metadata().clone());
    let batches =
        ParquetRecordBatchReader::try_new_with_row_groups(&levels, &chunks, batch_size, None)?;
    Ok(OpenedFile {
        footer,
        metadata: meta.metadata().clone(),
        batches,
    })
}

/// The reader metadata with every top-level text column whose pages are all
/// dictionary-encoded (in every row group) typed `Dictionary(Int32, Utf8)`,
/// or `None` when there is no such column or the reader refuses the hint.
///
/// Columns with plain pages stay `Utf8`: the reader would otherwise build a
/// dictionary from their values by hashing each one.
fn with_dictionaries(meta: &ArrowReaderMetadata) -> Option<ArrowReaderMetadata> {
    let parquet = meta.metadata();
    let descr = parquet.file_metadata().schema_descr();
    let all_dictionary = |leaf: usize| {
        parquet.row_groups().iter().all(|rg| {
            let c = rg.column(leaf);
            c.dictionary_page_offset().is_some()
                && c.page_encoding_stats_mask().is_some_and(|m| {
                    m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
                })
        })
    };
    let schema = meta.schema();
    let mut changed = false;
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            // A top-level primitive column is the leaf whose path is its name alone.
            let leaf = (0..descr.num_columns()).find(|&j| {
                let column = descr.column(j);
                let parts = column.path().parts();
                parts.len() == 1 && parts[0] == *f.name()
            });
            match leaf {
                Some(j) if *f.data_type() == DataType::Utf8 && all_dictionary(j) => {
                    changed = true;
                    let dict =
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                    Arc::new(f.as_ref().clone().with_data_type(dict))
                }
                _ => f.clone(),
            }
        })
        .collect();
    if !changed {
        return None;
    }
    let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    // A refused hint (a foreign writer's field metadata, say) only costs the
    // copies this saves: decode as stored.
    ArrowReaderMetadata::try_new(
        parquet.clone(),
        ArrowReaderOptions::new().with_schema(hinted),
    )
    .ok()
}

/// Decodes a data file's bytes. CPU-bound.
pub fn decode(bytes: Bytes) -> Result<DecodedFile, DecodeError> {
    let sha256 = Sha256::digest(&bytes).into();
    let opened = open_decoder(bytes, 64 * 1024, TextColumns::Plain)?;
    Ok(DecodedFile {
        footer: opened.footer,
        batches: opened.batches.collect::<Result<Vec<_>, _>>()?,
        sha256,
    })
}

/// Reads only the footer metadata of a data file's bytes.
pub fn footer_of(bytes: Bytes) -> Result<FooterMeta, String> {
    let r = SerializedFileReader::new(bytes).map_err(|e| e.to_string())?;
    FooterMeta::from_key_values(r.metadata().file_metadata().key_value_metadata())
}

/// Reads one data file's records.
pub async fn read_file(store: &Store, path: &str) -> Result<Vec<Record>, ReadError> {
    Ok(read_file_with_bytes(store, path).await?.1)
}

/// Reads one data file: its bytes (to hash or measure) and its records,
/// decoded on the blocking pool.
pub async fn read_file_with_bytes(
    store: &Store,
    path: &str,
) -> Result<(Bytes, Vec<Record>), ReadError> {
    let bytes = fetch(store, path).await?;
    let p = path.to_owned();
    let b = bytes.clone();
    let records = tokio::task::spawn_blocking(move || {
        let decoded = decode(b)?;
        let mut out = Vec::new();
        for b in &decoded.batches {
            out.extend(batch_to_records(b)?);
        }
        Ok::<_, DecodeError>(out)
    })
    .await
    .expect("decoding task panicked")
    .map_err(|source| ReadError::Decode { path: p, source })?;
    Ok((bytes, records))
}

/// Streams the records of every data file overlapping `range`, file by file in
/// path order (tenant, date, hour, chain, seq), keeping only rows received in
/// the range.
pub fn read_records<'a>(
    store: &'a Store,
    range: TimeRange,
) -> impl futures::Stream<Item = Result<Record, ReadError>> + 'a {
    stream::once(async move { list_files(store, &range).await })
        .map_ok(move |listing| {
            stream::iter(listing.files)
                .map(move |f| async move { read_file(store, &f.path).await })
                .buffered(4)
                .map_ok(move |records| {
                    stream::iter(
                        records
                            .into_iter()
                            .filter(move |r| range.contains(r.received_at))
                            .map(Ok),
                    )
                })
                .try_flatten()
        })
        .try_flatten()
}

/// A stored event and where it is: its file, its row index in that file, and
/// all the file's records (proofs need its neighbours' hashes).
#[derive(Debug, Clone)]
pub struct FoundEvent {
    /// The file holding the event.
    pub file: ListedFile,
    /// The event's row index in the file.
    pub index: usize,
    /// Every record of the file, in row order.
    pub records: Vec<Record>,
}

impl FoundEvent {
    /// The event's record.
    pub fn record(&self) -> &Record {
        &self.records[self.index]
    }
}

/// How far from the time in a UUIDv7 event id the first search looks:
/// events are received moments after they are created, so an hour before
/// (clock skew) to a few hours after (WAL replay after an outage) covers
/// nearly every event without listing the whole store.
const ID_WINDOW_BEFORE_HOURS: i64 = 1;
const ID_WINDOW_AFTER_HOURS: i64 = 3;

/// The creation time in a UUIDv7 (its first 48 bits, Unix milliseconds).
pub fn uuid_v7_time(id: uuid::Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let b = id.as_bytes();
    let ms = b[..6]
        .iter()
        .fold(0i64, |acc, &x| (acc << 8) | i64::from(x));
    DateTime::from_timestamp_millis(ms)
}

/// Finds the stored row of `event_id` among the files overlapping `range`.
///
/// Event ids minted by otel-audit are UUIDv7, which carry their creation
/// time: the partitions around that time are searched first, and the rest of
/// the range only when the event is not there (a clock far off, or an id
/// minted elsewhere). `Ok(None)` when no file in the range holds it.
pub async fn find_event(
    store: &Store,
    event_id: uuid::Uuid,
    range: &TimeRange,
) -> Result<Option<FoundEvent>, ReadError> {
    let mut searched = std::collections::HashSet::new();
    if let Some(t) = uuid_v7_time(event_id) {
        let near = TimeRange {
            from: Some(max_opt(
                t - chrono::Duration::hours(ID_WINDOW_BEFORE_HOURS),
                range.from,
            )),
            to: Some(min_opt(
                t + chrono::Duration::hours(ID_WINDOW_AFTER_HOURS),
                range.to,
            )),
        };
        if near.from < near.to {
            let files = list_files(store, &near).await?.files;
            searched.extend(files.iter().map(|f| f.path.clone()));
            if let Some(found) = search_files(store, event_id, files).await? {
                return Ok(Some(found));
            }
        }
    }
    let rest: Vec<ListedFile> = list_files(store, range)
        .await?
        .files
        .into_iter()
        .filter(|f| !searched.contains(&f.path))
        .collect();
    search_files(store, event_id, rest).await
}

fn max_opt(t: DateTime<Utc>, bound: Option<DateTime<Utc>>) -> DateTime<Utc> {
    bound.map_or(t, |b| b.max(t))
}

fn min_opt(t: DateTime<Utc>, bound: Option<DateTime<Utc>>) -> DateTime<Utc> {
    bound.map_or(t, |b| b.min(t))
}

async fn search_files(
    store: &Store,
    event_id: uuid::Uuid,
    files: Vec<ListedFile>,
) -> Result<Option<FoundEvent>, ReadError> {
    let found = stream::iter(files)
        .map(|file| async move {
            let records = read_file(store, &file.path).await?;
            Ok::<_, ReadError>(
                records
                    .iter()
                    .position(|r| r.event.event_id == event_id)
                    .map(|index| FoundEvent {
                        file,
                        index,
                        records,
                    }),
            )
        })
        .buffer_unordered(4)
        .try_filter_map(|x| async move { Ok(x) });
    futures::pin_mut!(found);
    found.try_next().await
}
