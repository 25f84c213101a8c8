//! Integrity verification of a store: every row hash, every link, every file.
//!
//! Files are read in chain and seq order with bounded read-ahead (hashing runs
//! on the blocking pool, several files at once) and walked one by one, so
//! memory holds a few files' chain columns, not the store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use futures::{StreamExt, stream};
use otel_audit_event::GENESIS_HASH;
use serde::Serialize;
use sha2::{Digest, Sha256};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType};
use arrow_array::{Array, Int32DictionaryArray, RecordBatch, RecordBatchReader, StringArray};

use crate::error::{DecodeError, ReadError};
use crate::keys::PublicKeys;
use crate::reader::{ListedFile, TextColumns, TimeRange, fetch, list_files, open_decoder};
use crate::retention::{TOMBSTONE_ACTION, Tombstone};
use crate::rowhash::{RowLink, scan_batch};
use crate::schema;
use crate::stats::StatsCheck;
use crate::store::Store;
use crate::writer::FooterMeta;

/// What kind of integrity problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A row's content does not match its hash.
    ModifiedRow,
    /// Rows are missing inside a file (or at its start or end).
    MissingRows,
    /// A row that does not belong to the chain sits between linked rows.
    InsertedRow,
    /// Rows are stored out of seq order.
    ReorderedRows,
    /// A row's `prev_hash` is not the hash of the row before it.
    BrokenLink,
    /// A file's footer metadata does not match its rows.
    BadFooter,
    /// A whole file of the chain is missing.
    MissingFile,
    /// A second copy of a file.
    DuplicateFile,
    /// A file sits in a partition or under a name its rows do not belong to.
    MisplacedFile,
    /// A file cannot be read as this format's Parquet.
    UnreadableFile,
    /// An object in the partition tree that is not a data file.
    UnexpectedObject,
    /// A digest is missing: a gap in a chain's digest seqs, or none made
    /// when one was due.
    MissingDigest,
    /// A digest object cannot be read as a digest, or contradicts its name.
    BadDigest,
    /// A digest's signature is not valid for its content and key.
    BadSignature,
    /// A digest names a key that is not among the trusted public keys.
    UnknownKey,
    /// A digest's link to the previous one does not match it.
    BrokenDigestLink,
    /// A file's bytes differ from what its digest records.
    ModifiedFile,
    /// A file that no digest lists although its rows are older than the
    /// newest digest of its chain.
    UndigestedFile,
}

impl ProblemKind {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::ModifiedRow => "modified_row",
            ProblemKind::MissingRows => "missing_rows",
            ProblemKind::InsertedRow => "inserted_row",
            ProblemKind::ReorderedRows => "reordered_rows",
            ProblemKind::BrokenLink => "broken_link",
            ProblemKind::BadFooter => "bad_footer",
            ProblemKind::MissingFile => "missing_file",
            ProblemKind::DuplicateFile => "duplicate_file",
            ProblemKind::MisplacedFile => "misplaced_file",
            ProblemKind::UnreadableFile => "unreadable_file",
            ProblemKind::UnexpectedObject => "unexpected_object",
            ProblemKind::MissingDigest => "missing_digest",
            ProblemKind::BadDigest => "bad_digest",
            ProblemKind::BadSignature => "bad_signature",
            ProblemKind::UnknownKey => "unknown_key",
            ProblemKind::BrokenDigestLink => "broken_digest_link",
            ProblemKind::ModifiedFile => "modified_file",
            ProblemKind::UndigestedFile => "undigested_file",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One integrity problem and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The chain, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The file (relative to the store root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The row index in the file (0-based, in stored order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The last row of a run of consecutive rows with the same problem, inclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_end: Option<u64>,
    /// The seq concerned (first of a range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The last seq of a range, inclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_end: Option<u64>,
    /// For a gap in a chain's digests: the missing digest seqs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_seqs: Option<(u64, u64)>,
    /// A sentence saying what is wrong.
    pub detail: String,
}

impl Problem {
    /// A problem of a chain (and a file, or seqs), not of particular rows.
    pub(crate) fn new(
        kind: ProblemKind,
        chain: &str,
        path: Option<&str>,
        seq: Option<(u64, u64)>,
        detail: String,
    ) -> Problem {
        Problem {
            kind,
            chain_id: Some(chain.to_owned()),
            path: path.map(str::to_owned),
            row: None,
            row_end: None,
            seq: seq.map(|s| s.0),
            seq_end: seq.map(|s| s.1),
            digest_seqs: None,
            detail,
        }
    }

    /// An object that does not belong where it is.
    pub(crate) fn unexpected(path: &str, detail: &str) -> Problem {
        Problem {
            kind: ProblemKind::UnexpectedObject,
            chain_id: None,
            path: Some(path.to_owned()),
            row: None,
            row_end: None,
            seq: None,
            seq_end: None,
            digest_seqs: None,
            detail: detail.to_owned(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        } else if let Some(c) = &self.chain_id {
            write!(f, " chain {c}")?;
        }
        match (self.row, self.row_end) {
            (Some(a), Some(b)) if a != b => write!(f, " rows {a}..={b}")?,
            (Some(a), _) => write!(f, " row {a}")?,
            _ => {}
        }
        match (self.seq, self.seq_end) {
            (Some(a), Some(b)) if a != b => write!(f, " seq {a}..={b}")?,
            (Some(a), _) => write!(f, " seq {a}")?,
            _ => {}
        }
        write!(f, ": {}", self.detail)
    }
}

/// What was verified of one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// The chain.
    pub chain_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Files read.
    pub files: u64,
    /// Rows read.
    pub events: u64,
    /// Lowest seq seen.
    pub first_seq: Option<u64>,
    /// Highest seq seen.
    pub last_seq: Option<u64>,
    /// Hash of the row with the highest seq.
    #[serde(serialize_with = "hex_opt")]
    pub head_hash: Option<[u8; 32]>,
}

fn hex_opt<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(h) => s.serialize_str(&hex::encode(h)),
        None => s.serialize_none(),
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The store verified.
    pub store: String,
    /// Chains found, by id.
    pub chains: Vec<ChainSummary>,
    /// Data files read.
    pub files_verified: u64,
    /// Rows whose hash was recomputed.
    pub events_verified: u64,
    /// Bytes read.
    pub bytes_verified: u64,
    /// What the digests showed.
    pub digests: DigestSummary,
    /// Files and digests that tombstone events record as deleted by retention.
    pub deletions_recorded: u64,
    /// Gaps (missing files, digests) that those recorded deletions explain.
    pub gaps_explained_by_deletions: u64,
    /// Every problem found, in chain and seq order.
    pub problems: Vec<Problem>,
}

/// What was verified of the signed digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DigestSummary {
    /// Digests read.
    pub digests: u64,
    /// Digests with no problem (signature, link, listed files).
    pub digests_valid: u64,
    /// Whether signatures were checked (public keys were given).
    pub signatures_checked: bool,
    /// Data files that a digest lists.
    pub files_in_digests: u64,
    /// Data files newer than their chain's newest digest (not yet digested).
    pub files_pending: u64,
    /// Chains with data and no digest at all.
    pub chains_without_digests: u64,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// Data files with no problem reported on their path.
    pub fn files_valid(&self) -> u64 {
        let bad: std::collections::HashSet<&str> = self
            .problems
            .iter()
            .filter(|p| p.path.as_deref().is_some_and(|p| !p.starts_with('_')))
            .filter_map(|p| p.path.as_deref())
            .collect();
        self.files_verified.saturating_sub(bad.len() as u64)
    }
}

/// Errors that stop verification before it can give an answer.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store could not be listed or read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store (or the range) holds no audit data at all.
    #[error("no audit data found in {url}{range}: check the store URL and the time range")]
    NothingToVerify {
        /// The store.
        url: String,
        /// A description of the time range, empty when unbounded.
        range: String,
    },
}

/// Receives progress while verification runs (a progress bar, say).
pub trait Progress: Send + Sync {
    /// The work ahead is known.
    fn start(&self, _files: u64, _bytes: u64) {}
    /// One more file was verified.
    fn file_done(&self, _bytes: u64, _rows: u64) {}
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only partitions overlapping this range. With a start, chains are not
    /// required to begin at seq 0 and the first file's incoming link is not checked.
    pub range: TimeRange,
    /// Files fetched ahead of the one being walked (default: 2 × CPUs, at
    /// least 4), so a remote store's latency overlaps the hashing.
    pub read_ahead: usize,
    /// Files decoded and hashed at once (default: the number of CPUs).
    pub scan_threads: usize,
    /// The trusted public keys for digest signatures; when empty, signatures
    /// are not checked (everything else about digests is).
    pub keys: PublicKeys,
    /// The moment by which digests must have been made (default: now). A
    /// copy of a store taken earlier is verified as of when it was taken.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this tenant's files, chains and digests (a tenant's auditor
    /// verifies what is theirs); `None`: the whole store.
    pub tenant: Option<String>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        VerifyOptions {
            range: TimeRange::all(),
            read_ahead: (2 * cpus).max(4),
            scan_threads: cpus,
            keys: PublicKeys::new(),
            as_of: None,
            tenant: None,
        }
    }
}

/// A file as the walk sees it.
struct Scanned {
    listed: ListedFile,
    /// `Err` = unreadable, with the reason.
    content: Result<Content, String>,
}

struct Content {
    footer: Result<FooterMeta, String>,
    /// The footer as the rows give it (`None` for a file without rows).
    computed: Option<FooterMeta>,
    /// Deletions recorded by tombstone rows of this file.
    tombstones: Vec<Tombstone>,
    rows: Vec<RowLink>,
    /// Why the rows do not belong where the file is (only for rows whose hash is intact).
    misplaced: Option<String>,
    /// SHA-256 of the file's bytes, when something compares it: a digest
    /// (the store holds some) or another file claiming the same place.
    sha256: Option<[u8; 32]>,
    /// How the column statistics disagree with the rows, if they do.
    statistics: Option<String>,
}

/// Rows decoded at a time while scanning a file. Each batch is hashed right
/// after it is decoded and then dropped: at ~1 KiB of Arrow buffers per row,
/// a batch this size stays in the CPU's caches between the Parquet decoder
/// writing it and the row hashing reading it, where a whole file (~14,000
/// rows in a 1 M-event store) did not, and the buffers are small enough for
/// the allocator to reuse instead of mapping fresh pages for every file.
const SCAN_BATCH_ROWS: usize = 2048;

/// A top-level text column as decoded: plain, or a dictionary of text
/// ([`TextColumns::KeepDictionaries`]).
enum Text<'a> {
    Plain(&'a StringArray),
    Dict(&'a Int32DictionaryArray, &'a StringArray),
}

impl<'a> Text<'a> {
    /// Column `name` of `batch`, a batch scan_batch has accepted.
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Self, DecodeError> {
        let a = batch.column(schema::col(name));
        if schema::is_text_dictionary(a.data_type()) {
            let d = a.as_dictionary::<Int32Type>();
            Ok(Text::Dict(d, d.values().as_string::<i32>()))
        } else {
            a.as_string_opt::<i32>()
                .map(Text::Plain)
                .ok_or_else(|| DecodeError::Schema(format!("column {name} is not text")))
        }
    }

    /// The value of row `i`, `None` when null.
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Text::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Dict(d, values) => d.key(i).map(|k| values.value(k)),
        }
    }

    /// The value of row `i`, empty when null (as a plain column holds it).
    fn value(&self, i: usize) -> &'a str {
        self.get(i).unwrap_or_default()
    }
}

/// Decodes and checks one file's rows: everything about a file that needs
/// only the file, so it runs on the blocking pool, several files at once.
fn scan_bytes(
    listed: &ListedFile,
    bytes: bytes::Bytes,
    hash_file: bool,
) -> Result<Content, DecodeError> {
    // A file's SHA-256 is 5% of verify's work; a store without digests
    // compares it only between copies of one file.
    let sha256 = hash_file.then(|| Sha256::digest(&bytes).into());
    let opened = open_decoder(bytes, SCAN_BATCH_ROWS, TextColumns::KeepDictionaries)?;
    let mut stats = StatsCheck::new(&opened.metadata, &opened.batches.schema());
    let mut rows = Vec::new();
    let mut misplaced = None;
    let mut tombstones = Vec::new();
    let part = &listed.file.partition;
    let (start, end) = (
        part.start().timestamp_micros(),
        part.end().timestamp_micros(),
    );
    for b in opened.batches {
        let b = b?;
        let base = rows.len();
        scan_batch(&b, &mut rows)?;
        stats.observe(&b);
        // Tombstones are rare: decode a batch fully only when it holds one.
        let action = Text::of(&b, "action")?;
        if (0..b.num_rows()).any(|i| action.get(i) == Some(TOMBSTONE_ACTION)) {
            for (i, r) in crate::batch_to_records(&b)?.iter().enumerate() {
                if rows[base + i].hash_ok
                    && let Some(t) = Tombstone::of(r)
                {
                    tombstones.push(t);
                }
            }
        }
        if misplaced.is_some() {
            continue;
        }
        let tenant = Text::of(&b, "tenant")?;
        let chain = Text::of(&b, "chain_id")?;
        let recv = b
            .column(schema::col("received_at"))
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if !rows[base + i].hash_ok {
                continue;
            }
            let t = recv.value(i);
            misplaced = if tenant.value(i) != part.tenant {
                Some(format!(
                    "rows belong to tenant {:?}, not to this partition's {:?}",
                    tenant.value(i),
                    part.tenant
                ))
            } else if chain.value(i) != listed.file.chain_id {
                Some(format!(
                    "rows belong to chain {:?}, not to {:?} as the file name says",
                    chain.value(i),
                    listed.file.chain_id
                ))
            } else if t < start || t >= end {
                let at = chrono::DateTime::from_timestamp_micros(t)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| t.to_string());
                Some(format!(
                    "rows were received at {at}, outside this partition's hour {}",
                    part.dir()
                ))
            } else {
                None
            };
            if misplaced.is_some() {
                break;
            }
        }
    }
    // The footer the rows give, Merkle root included (three SHA-256 blocks
    // per row): computed here, in parallel with other files, rather than in
    // the walk, which runs on one thread for the whole store.
    let chain_rows: Vec<(u64, [u8; 32], [u8; 32])> = rows
        .iter()
        .map(|r| (r.seq.max(0) as u64, r.prev_hash, r.hash))
        .collect();
    Ok(Content {
        footer: opened.footer,
        computed: FooterMeta::compute(&listed.file.chain_id, &chain_rows),
        tombstones,
        rows,
        misplaced,
        sha256,
        statistics: stats.finish(),
    })
}

/// Decodes and checks fetched bytes on the blocking pool.
async fn scan(listed: ListedFile, bytes: bytes::Bytes, hash_file: bool) -> Scanned {
    let l = listed.clone();
    let content = tokio::task::spawn_blocking(move || scan_bytes(&l, bytes, hash_file))
        .await
        .expect("verification task panicked")
        .map_err(|e| e.to_string());
    Scanned { listed, content }
}

/// A file walked, waiting for its footer check until the next file of its
/// chain has been walked (which may reveal rows missing from its end).
struct Walked {
    path: String,
    footer: Result<FooterMeta, String>,
    computed: Option<FooterMeta>,
    name_first_seq: u64,
    row_problem: bool,
    /// How the column statistics disagree with the rows, if they do.
    statistics: Option<String>,
}

struct ChainWalk {
    chain_id: String,
    check_start: bool,
    last: Option<(u64, [u8; 32])>,
    prev_file: Option<Walked>,
    summary: ChainSummary,
}

struct Verifier {
    problems: Vec<Problem>,
    range: TimeRange,
    /// Every data file walked, by path.
    seen: HashMap<String, SeenFile>,
    /// Deletions recorded in the chains.
    tombstones: Vec<Tombstone>,
}

/// A data file as the walk found it, for the digest checks.
pub(crate) struct SeenFile {
    pub(crate) chain_id: String,
    /// `None` when unreadable.
    pub(crate) sha256: Option<[u8; 32]>,
    /// Seqs of its rows (from the rows, not the footer).
    pub(crate) seqs: Option<(u64, u64)>,
    /// The partition's end: rows were received before it.
    pub(crate) partition_end: chrono::DateTime<chrono::Utc>,
}

impl Verifier {
    fn push(
        &mut self,
        kind: ProblemKind,
        chain: &str,
        path: Option<&str>,
        row: Option<usize>,
        seq: Option<(u64, u64)>,
        detail: String,
    ) {
        // Consecutive rows with the same problem are one finding, not thousands of lines.
        if let (Some(last), Some(row), Some((lo, hi))) = (self.problems.last_mut(), row, seq) {
            let follows = last.kind == kind
                && last.path.as_deref() == path
                && last.row_end.or(last.row).map(|r| r + 1) == Some(row as u64)
                && last.seq_end.map(|s| s + 1) == Some(lo);
            if follows {
                last.row_end = Some(row as u64);
                last.seq_end = Some(hi);
                return;
            }
        }
        self.problems.push(Problem {
            kind,
            chain_id: Some(chain.to_owned()),
            path: path.map(str::to_owned),
            row: row.map(|r| r as u64),
            row_end: None,
            seq: seq.map(|s| s.0),
            seq_end: seq.map(|s| s.1),
            digest_seqs: None,
            detail,
        });
    }

    fn finish_file(&mut self, chain: &str, w: Walked) {
        let footer = match w.footer {
            Ok(f) => f,
            Err(reason) => {
                self.push(
                    ProblemKind::BadFooter,
                    chain,
                    Some(&w.path),
                    None,
                    None,
                    reason,
                );
                return;
            }
        };
        if w.row_problem {
            return;
        }
        let Some(computed) = w.computed else { return };
        if footer.last_seq > computed.last_seq && footer.first_seq == computed.first_seq {
            let range = (computed.last_seq + 1, footer.last_seq);
            self.push(
                ProblemKind::MissingRows,
                chain,
                Some(&w.path),
                Some(computed.row_count as usize),
                Some(range),
                format!(
                    "the footer says the file ends at seq {}, its rows end at seq {}: rows were cut from its end",
                    footer.last_seq, computed.last_seq
                ),
            );
            return;
        }
        let mut diffs = Vec::new();
        if footer.format_version != computed.format_version {
            diffs.push(format!(
                "format_version {} (this verifier reads {})",
                footer.format_version, computed.format_version
            ));
        }
        if footer.chain_id != chain {
            diffs.push(format!(
                "chain_id {:?} (file name says {chain:?})",
                footer.chain_id
            ));
        }
        if footer.first_seq != w.name_first_seq {
            diffs.push(format!(
                "first_seq {} (file name says {})",
                footer.first_seq, w.name_first_seq
            ));
        }
        let pairs = [
            (
                "first_seq",
                footer.first_seq.to_string(),
                computed.first_seq.to_string(),
            ),
            (
                "last_seq",
                footer.last_seq.to_string(),
                computed.last_seq.to_string(),
            ),
            (
                "row_count",
                footer.row_count.to_string(),
                computed.row_count.to_string(),
            ),
            (
                "prev_hash",
                hex::encode(footer.prev_hash),
                hex::encode(computed.prev_hash),
            ),
            (
                "last_hash",
                hex::encode(footer.last_hash),
                hex::encode(computed.last_hash),
            ),
            (
                "merkle_root",
                hex::encode(footer.merkle_root),
                hex::encode(computed.merkle_root),
            ),
        ];
        for (key, says, rows) in pairs {
            if says != rows {
                diffs.push(format!("{key} {says} (rows give {rows})"));
            }
        }
        let mut details = Vec::new();
        if !diffs.is_empty() {
            details.push(format!(
                "footer disagrees with the rows: {}",
                diffs.join("; ")
            ));
        }
        // Readers skip row groups by these statistics, which no hash covers.
        details.extend(w.statistics);
        if !details.is_empty() {
            self.push(
                ProblemKind::BadFooter,
                chain,
                Some(&w.path),
                None,
                None,
                details.join("; "),
            );
        }
    }

    /// Walks one file's rows on from the chain's state.
    fn walk(&mut self, cw: &mut ChainWalk, file: Scanned) {
        let path = file.listed.path.clone();
        let chain = cw.chain_id.clone();
        self.seen.insert(
            path.clone(),
            SeenFile {
                chain_id: chain.clone(),
                sha256: file.content.as_ref().ok().and_then(|c| c.sha256),
                seqs: file.content.as_ref().ok().and_then(|c| {
                    let lo = c.rows.iter().map(|r| r.seq).min()?;
                    let hi = c.rows.iter().map(|r| r.seq).max()?;
                    Some((lo.max(0) as u64, hi.max(0) as u64))
                }),
                partition_end: file.listed.file.partition.end(),
            },
        );
        let content = match file.content {
            Ok(c) => c,
            Err(reason) => {
                self.push(
                    ProblemKind::UnreadableFile,
                    &chain,
                    Some(&path),
                    None,
                    None,
                    reason,
                );
                // Its rows are unknown: resume at whatever the next file holds.
                if let Some(prev) = cw.prev_file.take() {
                    self.finish_file(&chain, prev);
                }
                cw.last = None;
                cw.check_start = false;
                return;
            }
        };
        cw.summary.files += 1;
        cw.summary.events += content.rows.len() as u64;
        self.tombstones.extend(content.tombstones.iter().cloned());
        if let Some(reason) = &content.misplaced {
            self.push(
                ProblemKind::MisplacedFile,
                &chain,
                Some(&path),
                None,
                None,
                reason.clone(),
            );
        }
        let problems_before = self.problems.len();

        // Rows in stored order, with their index; sorted by seq if out of order.
        let mut order: Vec<(usize, RowLink)> = content.rows.iter().copied().enumerate().collect();
        if order.windows(2).any(|w| w[1].1.seq < w[0].1.seq) {
            order.sort_by_key(|(_, r)| r.seq);
            // Stored rows that do not hold the seq their position should.
            let moved: Vec<(usize, i64)> = content
                .rows
                .iter()
                .zip(&order)
                .enumerate()
                .filter(|(_, (stored, (_, sorted)))| stored.seq != sorted.seq)
                .map(|(row, (stored, _))| (row, stored.seq))
                .collect();
            let (first_row, first_seq) = moved[0];
            let shown: Vec<String> = moved
                .iter()
                .take(8)
                .map(|(row, seq)| format!("row {row} holds seq {seq}"))
                .collect();
            self.push(
                ProblemKind::ReorderedRows,
                &chain,
                Some(&path),
                Some(first_row),
                Some((first_seq.max(0) as u64, first_seq.max(0) as u64)),
                format!(
                    "{} rows are out of seq order ({}{})",
                    moved.len(),
                    shown.join(", "),
                    if moved.len() > 8 { ", ..." } else { "" }
                ),
            );
        }

        // Rows sharing a seq: keep the one the chain links through.
        let mut kept: Vec<(usize, RowLink)> = Vec::with_capacity(order.len());
        let mut i = 0;
        while i < order.len() {
            let mut j = i + 1;
            while j < order.len() && order[j].1.seq == order[i].1.seq {
                j += 1;
            }
            if j - i == 1 {
                kept.push(order[i]);
            } else {
                let group = &order[i..j];
                let next_prev = order.get(j).map(|(_, r)| r.prev_hash);
                let before = kept.last().map(|(_, r)| r.hash).or(cw.last.map(|l| l.1));
                let genuine = group
                    .iter()
                    .position(|(_, r)| Some(r.hash) == next_prev)
                    .or_else(|| {
                        group
                            .iter()
                            .position(|(_, r)| Some(r.prev_hash) == before && r.hash_ok)
                    })
                    .unwrap_or(0);
                for (k, (row, r)) in group.iter().enumerate() {
                    if k != genuine {
                        self.push(
                            ProblemKind::InsertedRow,
                            &chain,
                            Some(&path),
                            Some(*row),
                            Some((r.seq.max(0) as u64, r.seq.max(0) as u64)),
                            format!(
                                "a second row with seq {} that the chain does not link through",
                                r.seq
                            ),
                        );
                    }
                }
                kept.push(group[genuine]);
            }
            i = j;
        }

        let mut first_in_file = true;
        for (row, r) in &kept {
            let row = *row;
            let Ok(seq) = u64::try_from(r.seq) else {
                self.push(
                    ProblemKind::ModifiedRow,
                    &chain,
                    Some(&path),
                    Some(row),
                    None,
                    format!("negative seq {}", r.seq),
                );
                continue;
            };
            if !r.hash_ok {
                self.push(
                    ProblemKind::ModifiedRow,
                    &chain,
                    Some(&path),
                    Some(row),
                    Some((seq, seq)),
                    "the row's content does not match its hash".into(),
                );
            }
            match cw.last {
                None => {
                    let name_first = file.listed.file.first_seq;
                    if cw.check_start && name_first > 0 {
                        self.push(
                            ProblemKind::MissingFile,
                            &chain,
                            None,
                            None,
                            Some((0, name_first - 1)),
                            format!("the chain's oldest file starts at seq {name_first}, not 0"),
                        );
                    }
                    // Whatever came before, a file's rows start at the seq its name gives.
                    if seq > name_first {
                        self.push(
                            ProblemKind::MissingRows,
                            &chain,
                            Some(&path),
                            Some(row),
                            Some((name_first, seq - 1)),
                            format!("the file is named for seq {name_first} but its first row is seq {seq}"),
                        );
                    }
                    if cw.check_start && seq == 0 && r.prev_hash != GENESIS_HASH {
                        self.push(
                            ProblemKind::BrokenLink,
                            &chain,
                            Some(&path),
                            Some(row),
                            Some((0, 0)),
                            "the first row of the chain does not link to the genesis hash".into(),
                        );
                    }
                }
                Some((pseq, phash)) if seq == pseq + 1 => {
                    if r.prev_hash != phash {
                        self.push(
                            ProblemKind::BrokenLink,
                            &chain,
                            Some(&path),
                            Some(row),
                            Some((seq, seq)),
                            format!(
                                "prev_hash is not the hash of seq {pseq}{}",
                                if first_in_file {
                                    " in the previous file"
                                } else {
                                    ""
                                }
                            ),
                        );
                    }
                }
                Some((pseq, _)) if seq > pseq + 1 => {
                    if first_in_file {
                        self.gap_between_files(
                            cw,
                            &chain,
                            &path,
                            file.listed.file.first_seq,
                            row,
                            pseq,
                            seq,
                        );
                    } else {
                        self.push(
                            ProblemKind::MissingRows,
                            &chain,
                            Some(&path),
                            Some(row),
                            Some((pseq + 1, seq - 1)),
                            format!("seq jumps from {pseq} to {seq}"),
                        );
                    }
                }
                Some((pseq, _)) => {
                    // Lower than what the chain already reached: rows of an
                    // earlier file turned up again.
                    self.push(
                        ProblemKind::InsertedRow,
                        &chain,
                        Some(&path),
                        Some(row),
                        Some((seq, seq)),
                        format!("seq {seq} repeats a seq the chain already passed (at {pseq})"),
                    );
                    continue;
                }
            }
            if first_in_file {
                if let Some(prev) = cw.prev_file.take() {
                    self.finish_file(&chain, prev);
                }
                first_in_file = false;
            }
            cw.last = Some((seq, r.hash));
            cw.summary.first_seq = Some(cw.summary.first_seq.map_or(seq, |f| f.min(seq)));
            cw.summary.last_seq = Some(seq);
            cw.summary.head_hash = Some(r.hash);
        }
        if first_in_file && let Some(prev) = cw.prev_file.take() {
            self.finish_file(&chain, prev);
        }
        cw.check_start = false;
        let row_problem = self.problems[problems_before..].iter().any(|p| {
            p.path.as_deref() == Some(path.as_str()) && p.kind != ProblemKind::MisplacedFile
        });
        cw.prev_file = Some(Walked {
            path,
            footer: content.footer,
            computed: content.computed,
            name_first_seq: file.listed.file.first_seq,
            row_problem,
            statistics: content.statistics,
        });
    }

    /// Seqs `pseq+1 ..= seq-1` are missing between the previous file's last
    /// row and this file's first: blame the previous file's end if its footer
    /// claims them, this file's start if its name does, else a missing file.
    #[allow(clippy::too_many_arguments)]
    fn gap_between_files(
        &mut self,
        cw: &mut ChainWalk,
        chain: &str,
        path: &str,
        name_first: u64,
        row: usize,
        pseq: u64,
        seq: u64,
    ) {
        let (mut lo, mut hi) = (pseq + 1, seq - 1);
        if let Some(prev) = cw.prev_file.as_mut()
            && let Ok(f) = &prev.footer
            && f.last_seq >= lo
        {
            let end = f.last_seq.min(hi);
            self.problems.push(Problem {
                        kind: ProblemKind::MissingRows,
                        chain_id: Some(chain.to_owned()),
                        path: Some(prev.path.clone()),
                        row: prev.computed.as_ref().map(|c| c.row_count),
                        row_end: None,
                        seq: Some(lo),
                        seq_end: Some(end),
                        digest_seqs: None,
                        detail: format!(
                            "the footer says the file ends at seq {}, its rows end at seq {pseq}: rows were cut from its end",
                            f.last_seq
                        ),
                    });
            prev.row_problem = true;
            lo = end + 1;
        }
        if name_first <= hi && lo <= hi {
            let from = name_first.max(lo);
            self.push(
                ProblemKind::MissingRows,
                chain,
                Some(path),
                Some(row),
                Some((from, hi)),
                format!("the file is named for seq {name_first} but its first row is seq {seq}"),
            );
            hi = from.saturating_sub(1);
            if from == 0 {
                return;
            }
        }
        if lo <= hi {
            self.push(
                ProblemKind::MissingFile,
                chain,
                None,
                None,
                Some((lo, hi)),
                format!(
                    "no file holds seq {lo}..={hi}: expected {chain}-{lo:020}.parquet before {path}"
                ),
            );
        }
    }
}

/// Verifies every data file of `store` overlapping the options' range.
///
/// Store I/O failures are errors; everything wrong with the data itself is a
/// [`Problem`] in the report.
pub async fn verify(
    store: &Store,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut listing = list_files(store, &opts.range).await?;
    let mut digest_listing = crate::digest::list_digests(store).await?;
    if let Some(t) = &opts.tenant {
        // Every tenant's data and digests live under its own `tenant=`
        // directory, and its chains (with their tombstones) are its own.
        let dir = format!("tenant={t}/");
        listing.files.retain(|f| &f.file.partition.tenant == t);
        listing.unexpected.retain(|u| u.starts_with(&dir));
        digest_listing
            .chains
            .retain(|_, ds| ds.first().is_some_and(|d| &d.tenant == t));
        let digest_dir = format!("{}/{dir}", crate::digest::DIGESTS_DIR);
        digest_listing
            .unexpected
            .retain(|u| u.starts_with(&digest_dir));
    }
    let nothing = || VerifyError::NothingToVerify {
        url: store.url().to_owned(),
        range: format!(
            "{}{}",
            opts.range.describe(),
            opts.tenant
                .as_ref()
                .map(|t| format!(" for tenant {t}"))
                .unwrap_or_default()
        ),
    };
    if listing.files.is_empty() && listing.unexpected.is_empty() && digest_listing.chains.is_empty()
    {
        return Err(nothing());
    }
    let mut v = Verifier {
        problems: Vec::new(),
        range: opts.range,
        seen: HashMap::new(),
        tombstones: Vec::new(),
    };
    for u in &listing.unexpected {
        v.problems.push(Problem::unexpected(
            u,
            "not a data file of this store's layout",
        ));
    }
    let mut files = listing.files;
    files.sort_by(|a, b| {
        (&a.file.chain_id, a.file.first_seq, &a.path).cmp(&(
            &b.file.chain_id,
            b.file.first_seq,
            &b.path,
        ))
    });
    // Which files' SHA-256 something will compare: every file when the
    // store holds digests, else only files claiming the same chain and
    // first seq as another (adjacent once sorted).
    let digests_held = !digest_listing.chains.is_empty();
    let same_place = |a: &ListedFile, b: &ListedFile| {
        a.file.chain_id == b.file.chain_id && a.file.first_seq == b.file.first_seq
    };
    let hash_file: Vec<bool> = (0..files.len())
        .map(|i| {
            digests_held
                || (i > 0 && same_place(&files[i - 1], &files[i]))
                || files.get(i + 1).is_some_and(|n| same_place(&files[i], n))
        })
        .collect();
    let bytes_total: u64 = files.iter().map(|f| f.size).sum();
    progress.start(files.len() as u64, bytes_total);

    // Two stages: fetches run `read_ahead` files ahead, while only
    // `scan_threads` files are decoded and hashed at once. More scans than
    // cores only time-slice: each then holds a file's buffers (and a
    // Parquet decoder per column) at the same time, with more memory
    // faulted in and more cache misses for the same work.
    //
    // Each fetch is a task of its own: a future in `buffered` only makes
    // progress when the stream is polled, which is when a scan slot frees
    // up, so reading a file (the second half of a `get`) waited until its
    // bytes were needed, with a core idle meanwhile.
    let scans = stream::iter(files.into_iter().zip(hash_file))
        .map(|(f, hash_file)| {
            let store = store.clone();
            let fetching = tokio::spawn(async move {
                let bytes = fetch(&store, &f.path).await?;
                Ok::<_, ReadError>((f, bytes, hash_file))
            });
            async move { fetching.await.expect("a fetch task panicked") }
        })
        .buffered(opts.read_ahead.max(1))
        .map(|fetched| async move {
            let (f, bytes, hash_file) = fetched?;
            Ok::<_, ReadError>(scan(f, bytes, hash_file).await)
        })
        .buffered(opts.scan_threads.max(1))
        .inspect(|s| {
            if let Ok(s) = s {
                let rows = s.content.as_ref().map_or(0, |c| c.rows.len() as u64);
                progress.file_done(s.listed.size, rows);
            }
        })
        .peekable();
    futures::pin_mut!(scans);
    let mut chains: BTreeMap<String, ChainSummary> = BTreeMap::new();
    let mut cw: Option<ChainWalk> = None;
    while let Some(current) = scans.next().await {
        let mut current = current?;
        // Files claiming the same chain and first seq are adjacent: all but one are copies.
        while let Some(Ok(n)) = scans.as_mut().peek().await {
            if n.listed.file.chain_id != current.listed.file.chain_id
                || n.listed.file.first_seq != current.listed.file.first_seq
            {
                break;
            }
            let n = scans.next().await.expect("peeked")?;
            current = v.keep_one(current, n);
        }
        let chain_id = current.listed.file.chain_id.clone();
        if cw.as_ref().is_none_or(|c| c.chain_id != chain_id) {
            if let Some(done) = cw.take() {
                v.finish_chain(done, &mut chains);
            }
            cw = Some(ChainWalk {
                chain_id: chain_id.clone(),
                check_start: v.range.from.is_none(),
                last: None,
                prev_file: None,
                summary: ChainSummary {
                    chain_id,
                    tenant: current.listed.file.partition.tenant.clone(),
                    files: 0,
                    events: 0,
                    first_seq: None,
                    last_seq: None,
                    head_hash: None,
                },
            });
        }
        v.walk(cw.as_mut().expect("set above"), current);
    }
    if let Some(done) = cw.take() {
        v.finish_chain(done, &mut chains);
    }
    let tombstones = v.tombstones;
    let mut problems = v.problems;
    let digests = crate::digest_check::check(
        store,
        opts,
        &digest_listing,
        &v.seen,
        &chains,
        &mut problems,
    )
    .await?;
    // Gaps that recorded deletions explain are intended, not problems.
    let before = problems.len();
    problems.retain(|p| !excused(p, &tombstones));
    let excused_count = (before - problems.len()) as u64;
    problems.sort_by(|a, b| {
        (&a.chain_id, a.seq, &a.path, a.row).cmp(&(&b.chain_id, b.seq, &b.path, b.row))
    });
    // A range with no file and no digest in it verified nothing, whatever
    // the store holds elsewhere: that must not read as "intact".
    if chains.is_empty() && digests.digests == 0 && problems.is_empty() {
        return Err(nothing());
    }
    Ok(VerifyReport {
        store: store.url().to_owned(),
        files_verified: chains.values().map(|c| c.files).sum(),
        events_verified: chains.values().map(|c| c.events).sum(),
        bytes_verified: bytes_total,
        chains: chains.into_values().collect(),
        digests,
        deletions_recorded: tombstones.len() as u64,
        gaps_explained_by_deletions: excused_count,
        problems,
    })
}

impl Verifier {
    /// Of two files with the same chain and first seq, keeps the one that is
    /// where its rows belong and reports the other as a duplicate.
    fn keep_one(&mut self, a: Scanned, b: Scanned) -> Scanned {
        let misplaced = |s: &Scanned| s.content.as_ref().map_or(true, |c| c.misplaced.is_some());
        let (keep, copy) = if misplaced(&a) && !misplaced(&b) {
            (b, a)
        } else {
            (a, b)
        };
        let identical = match (&keep.content, &copy.content) {
            (Ok(x), Ok(y)) => x.sha256.is_some() && x.sha256 == y.sha256,
            _ => false,
        };
        self.problems.push(Problem {
            kind: ProblemKind::DuplicateFile,
            chain_id: Some(copy.listed.file.chain_id.clone()),
            path: Some(copy.listed.path.clone()),
            row: None,
            row_end: None,
            seq: Some(copy.listed.file.first_seq),
            seq_end: None,
            digest_seqs: None,
            detail: if identical {
                format!("a byte-identical copy of {}", keep.listed.path)
            } else {
                format!(
                    "claims the same chain and first seq as {}",
                    keep.listed.path
                )
            },
        });
        keep
    }

    fn finish_chain(&mut self, mut cw: ChainWalk, chains: &mut BTreeMap<String, ChainSummary>) {
        if let Some(prev) = cw.prev_file.take() {
            self.finish_file(&cw.chain_id, prev);
        }
        chains.insert(cw.chain_id.clone(), cw.summary);
    }
}

/// Whether recorded deletions explain a problem: a missing file whose path
/// (or, for a gap in a chain, whose whole seq range) tombstones cover, or a
/// gap in a chain's digests that deleted digests cover.
fn excused(p: &Problem, tombstones: &[Tombstone]) -> bool {
    let covers = |kind: &str, lo: u64, hi: u64| {
        let chain = p.chain_id.as_deref();
        let mut ranges: Vec<(u64, u64)> = tombstones
            .iter()
            .filter(|t| t.kind == kind && Some(t.chain_id.as_str()) == chain)
            .map(|t| (t.first, t.last))
            .collect();
        ranges.sort_unstable();
        let mut next = lo;
        for (a, b) in ranges {
            if a > next {
                break;
            }
            next = next.max(b.saturating_add(1));
            if next > hi {
                return true;
            }
        }
        false
    };
    match p.kind {
        ProblemKind::MissingFile => match (&p.path, p.seq, p.seq_end) {
            (Some(path), _, _) => tombstones
                .iter()
                .any(|t| t.kind == "file" && &t.path == path),
            (None, Some(lo), Some(hi)) => covers("file", lo, hi),
            _ => false,
        },
        ProblemKind::MissingRows => match (&p.path, p.seq, p.seq_end) {
            (None, Some(lo), Some(hi)) => covers("file", lo, hi),
            _ => false,
        },
        ProblemKind::MissingDigest => match p.digest_seqs {
            Some((lo, hi)) => covers("digest", lo, hi),
            None => false,
        },
        _ => false,
    }
}
