//! The write-ahead log: chained records are durable (fsynced) here before the
//! collector acknowledges them, and stay until the store holds them.
//!
//! # Use
//!
//! ```
//! use otel_audit_collector::wal::{Wal, WalOptions};
//! use otel_audit_event::{AuditEvent, Category, Chain};
//! use otel_audit_storage::StoredRow;
//!
//! let dir = tempfile::tempdir()?;
//! let options = WalOptions { dir: dir.path().into(), ..WalOptions::default() };
//! let (wal, replay) = Wal::open(options.clone())?;
//! assert_eq!(replay.record_count(), 0);
//!
//! let mut chain = Chain::new("c1.acme", "acme")?;
//! let record = chain.append(chrono::Utc::now(), AuditEvent::new("acme", "svc", Category::Admin, "user.create"))?;
//! // `submit` enqueues (or refuses at once with a retryable `Full`/`QueueFull`);
//! // the returned future (here waited on synchronously) resolves after fsync.
//! let appended = wal.submit(std::slice::from_ref(&record))?.wait()?;
//! assert_eq!(appended.chains[0].1.seq, 0);
//! wal.shutdown()?;
//! drop(wal); // releases the directory lock
//!
//! // After a restart (or a crash), every acknowledged record comes back.
//! let (wal, replay) = Wal::open(options)?;
//! let head = replay.heads()["c1.acme"];
//! let chain = Chain::resume("c1.acme", "acme", head.seq + 1, head.hash)?;
//! let rows: Vec<_> = replay.collect::<Result<_, _>>()?;
//! // Records come back as stored (their canonical bytes): same hash, times
//! // at microsecond precision once decoded.
//! assert_eq!(rows.len(), 1);
//! assert_eq!(rows[0].hash(), &record.hash);
//! assert_eq!(rows[0].to_record()?.event.event_id, record.event.event_id);
//! // Once the store holds seq 0 of the chain, the WAL may forget it.
//! wal.release("c1.acme", head)?;
//! # drop(chain);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On disk
//!
//! The directory `dir` holds:
//!
//! - **Segments** `NNNNNNNNNNNNNNNNNNNN.wal`: the segment number in 20 decimal
//!   digits, increasing, never reused (the marker remembers the next one). A
//!   segment starts with a 24-byte header: `"OTAUDWAL"`, format version `u32`
//!   (1), segment number `u64`, CRC-32C of those 20 bytes `u32`. Then frames.
//!   A new segment is started when the next frame would take the segment past
//!   `max_segment_bytes`, and on every open.
//! - **Frames**: `len u32 | crc u32 | payload[len]`, where `crc` is the CRC-32C
//!   (Castagnoli) of the payload. One frame is one group commit (everything
//!   queued when the writer thread woke), written with one `write` and made
//!   durable with one `fdatasync` before the next frame is written. The
//!   payload is `segment u64 | offset u64 | count u32 | count × entry`: the
//!   segment number and the frame's own offset bind the frame to its place
//!   (a frame copied elsewhere, or a frame-like byte run inside a record, does
//!   not pass), and each entry is `canonical_len u32 | prev_hash[32] |
//!   hash[32] | canonical bytes`, the canonical bytes being the row's
//!   canonical encoding (docs/FORMAT.md), which holds every field of the
//!   record. All integers here are little-endian.
//! - **`released`**: what the store already holds, per chain the last `seq`
//!   and its `hash`, plus the next segment number:
//!   `"OTAUDREL" | version u32 | next_segment u64 | count u32 | count ×
//!   (len u16 | chain_id | seq u64 | hash[32]) | crc32c u32`. It is replaced
//!   atomically (write `released.tmp`, fsync, rename, fsync the directory).
//! - **`reserve`**: `reserve_bytes` of allocated disk and nothing else (see
//!   "Failure"); allocated as `reserve.tmp`, synced, then renamed.
//! - **`LOCK`**: locked (`flock`) while a process has the WAL open, until the
//!   last clone of the [`Wal`] is dropped. `open` waits up to a second for a
//!   held lock (a child process being spawned holds it for a moment) before
//!   failing with [`WalError::Locked`].
//!
//! # Crash recovery
//!
//! [`Wal::open`] reads every segment in order and checks each frame's length,
//! checksum and position, recomputes every record's hash
//! (`row_hash(prev_hash, canonical) == hash`, two records at a time), and
//! checks that each chain's records link (consecutive `seq`, `prev_hash` =
//! previous `hash`), reading a record's chain and seq from the end of its
//! canonical bytes (`otel_audit_event::chain_and_seq`); the records replayed
//! are decoded by the replay, once. Only the
//! last frame of the last segment can be incomplete after a crash, because
//! each frame is synced before the next is written and a new segment is
//! synced (header and directory entry) before its first frame; such a torn
//! tail was never acknowledged, and is truncated away. A bad frame anywhere
//! else — or in the last segment with a valid frame after it — is damage to
//! acknowledged data and an error naming the file and offset, as is any
//! record whose hash does not verify (at open; named a decode error, with
//! the field, when its bytes are no canonical encoding at all) or that
//! fails to decode (when replayed).
//!
//! # No duplicates after a restart
//!
//! [`Wal::release`] records durably, in `released`, that the store holds a
//! chain up to a `seq` *before* deleting any segment. Replay skips every
//! record at or below its chain's released `seq`, so what was released is
//! never handed to the sink again, even when it shares a segment with
//! unreleased records of other chains. The marker also keeps each chain's
//! head, so a WAL whose segments are all deleted still knows where every
//! chain continues.
//!
//! One window remains, and it is closed by the store: a sink that crashes
//! after a Parquet file is durable but before its `release` returns gets those
//! records again. Data files are create-only with deterministic names
//! (`<chain>-<first_seq>.parquet`): the sink should write the same runs again
//! (same first seq; `put_file` then answers `AlreadyPresent`), or, if its
//! runs differ, compare the existing file's footer (its first/last seq and
//! hashes) with the replayed records and release the rows it already holds.
//!
//! # Backpressure and memory
//!
//! An append that would take the WAL (segment files plus queued bytes) past
//! `max_wal_bytes` fails at once with [`WalError::Full`]; one that would take
//! the writer's queue (queued plus being written) past `max_queue_bytes`
//! fails at once with [`WalError::QueueFull`]. Both are
//! [retryable](WalError::is_retryable). Memory held by the WAL is at most
//! about twice `max_queue_bytes` (queued entries and the frame being
//! written), plus per-chain and per-segment bookkeeping.
//!
//! # Failure
//!
//! A write refused for lack of space (the file system full, a quota or a
//! file size limit reached) is not a failure of the WAL: the part of the
//! group's frame that reached the segment is cut off again, the group and
//! every append queued behind it are answered with
//! [`WalError::NoSpace`] (retryable), and each chain is rewound to its last
//! durable record, since the refused appends were chained on top of one
//! another ([`Wal::rewinds`] counts these rewinds; [`Entries::expect_rewinds`]
//! lets a caller that keeps chains in memory notice one). Later appends are
//! accepted again at once and succeed as soon as space is freed: a full disk
//! pushes back on clients and recovers without a restart.
//!
//! Two writes must get through on a full disk, because they are how it is
//! freed: the collector's records about itself ([`Entries::may_use_reserve`]:
//! retention records each deletion before deleting), and the `released`
//! marker a release writes before it deletes segments. For them the WAL
//! keeps a reserve, a file of [`WalOptions::reserve_bytes`] allocated while
//! there is room; when one of them finds no space the reserve is deleted and
//! the write tried again in its room (a group holding such records is
//! written whole, clients' records included, so the reserve is sized for the
//! largest group). [`Wal::restore_reserve`] allocates it again.
//!
//! Any other failed write, and any failed fsync, makes the WAL refuse every
//! later append with [`WalError::Failed`]: after a failed fsync the kernel's
//! page cache cannot be trusted to hold what was written, so the process
//! should restart and replay (which truncates whatever part of the failed
//! frame reached disk).

mod format;
mod replay;
mod reserve;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use otel_audit_event::{
    AuditEvent, Chain, ChainError, DecodeCanonicalError, Link, Record, row_hash,
};
use otel_audit_storage::{CanonicalRow, TaggedChain};
use tokio::sync::oneshot;

pub use replay::{Replay, TruncatedTail};
pub use reserve::ReserveState;

use format::{ENTRY_HEADER_BYTES, GROUP_OVERHEAD_BYTES, Marker, finish_entry};

const MIB: u64 = 1024 * 1024;

/// Settings of the write-ahead log (`wal.*` in the collector's config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalOptions {
    /// The directory holding the WAL's segments and marker; created if
    /// missing. Must be on a local file system that honours fsync, and used
    /// by one collector at a time (it is locked). Default `./audit-wal`.
    pub dir: PathBuf,
    /// A new segment file is started when the next group would take the
    /// current one past this size, in bytes. Segments are deleted whole, so
    /// smaller segments free disk sooner. Default 64 MiB; at least 4096.
    pub max_segment_bytes: u64,
    /// The most disk the WAL may use, in bytes (all segment files plus what
    /// is queued for writing). Appends beyond it fail with the retryable
    /// [`WalError::Full`] until the sink has stored and released enough.
    /// Default 2 GiB; at least `2 × max_segment_bytes + max_queue_bytes`.
    pub max_wal_bytes: u64,
    /// The most record bytes waiting for, or in, a write, in bytes; bounds the
    /// WAL's memory. Appends beyond it fail with the retryable
    /// [`WalError::QueueFull`]; one append larger than this always fails
    /// ([`WalError::TooLarge`]). Default 32 MiB; 4096 to 1 GiB.
    pub max_queue_bytes: u64,
    /// Recompute the hash of each record given to [`Wal::submit`] from its
    /// content, and refuse records whose stored hash differs, so that a
    /// record which would fail verification at replay never enters the WAL.
    /// Costs one SHA-256 of the record. [`Entries`] built where records are
    /// chained need no check: their hash is computed over the very bytes
    /// written. Default true.
    pub verify_hashes_on_append: bool,
    /// Disk space, in bytes, held back in `<dir>/reserve` for the WAL's own
    /// bookkeeping when its file system is full: the collector's own records
    /// (retention's tombstones, which must be durable before expired files
    /// are deleted to make room) and the marker a release writes before it
    /// deletes segments. Clients' data never uses it. Allocated at open and
    /// again whenever there is room for it twice over; not counted in
    /// `max_wal_bytes`. Default `max_queue_bytes` + 1 MiB (the largest group
    /// commit fits in it); 0 turns it off (and deletes a reserve left from
    /// before).
    pub reserve_bytes: Option<u64>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            dir: PathBuf::from("./audit-wal"),
            max_segment_bytes: 64 * MIB,
            max_wal_bytes: 2048 * MIB,
            max_queue_bytes: 32 * MIB,
            verify_hashes_on_append: true,
            reserve_bytes: None,
        }
    }
}

impl WalOptions {
    /// The reserve's size: `reserve_bytes`, or its default.
    pub fn effective_reserve_bytes(&self) -> u64 {
        self.reserve_bytes
            .unwrap_or(self.max_queue_bytes.saturating_add(MIB))
    }

    /// Checks the options; the error names the offending field.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad =
            |field: &'static str, reason: String| Err(WalError::InvalidOption { field, reason });
        if self.dir.as_os_str().is_empty() {
            return bad("dir", "must not be empty".into());
        }
        if self.max_segment_bytes < 4096 {
            return bad(
                "max_segment_bytes",
                format!("{} is below the minimum of 4096", self.max_segment_bytes),
            );
        }
        if !(4096..=1024 * MIB).contains(&self.max_queue_bytes) {
            return bad(
                "max_queue_bytes",
                format!(
                    "{} is outside the allowed range 4096 to {}",
                    self.max_queue_bytes,
                    1024 * MIB
                ),
            );
        }
        if let Some(n @ 1..4096) = self.reserve_bytes {
            return bad(
                "reserve_bytes",
                format!("{n} is below the minimum of 4096 (0 turns the reserve off)"),
            );
        }
        let least = self
            .max_segment_bytes
            .saturating_mul(2)
            .saturating_add(self.max_queue_bytes);
        if self.max_wal_bytes < least {
            return bad(
                "max_wal_bytes",
                format!(
                    "{} is below 2 × max_segment_bytes + max_queue_bytes = {least}: \
                     releasing could not always make room",
                    self.max_wal_bytes
                ),
            );
        }
        Ok(())
    }
}

/// Where a chain stands: the `seq` of a row and its `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// The row's position in its chain.
    pub seq: u64,
    /// The row's hash.
    pub hash: [u8; 32],
}

/// A place in the WAL: the end of a group commit's frame. Positions increase
/// in append order, so they can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalPosition {
    /// The segment number.
    pub segment: u64,
    /// The byte offset just after the frame in that segment.
    pub offset: u64,
}

/// What an acknowledged append made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The end of the frame that holds the records.
    pub position: WalPosition,
    /// For each chain in the append (in order of first appearance), its last
    /// record: what the chain's durable head now is at least.
    pub chains: Vec<(String, ChainHead)>,
}

/// What a [`Wal::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Released {
    /// Segment files deleted because every record in them is released.
    pub deleted_segments: usize,
    /// The bytes those files took.
    pub freed_bytes: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Record bytes queued or being written.
    pub queued_bytes: u64,
    /// Number of segment files, the current one included.
    pub segments: usize,
    /// Group commits written since open: one frame and one fsync each.
    pub groups_written: u64,
    /// Appends acknowledged since open.
    pub appends_written: u64,
    /// Records acknowledged since open.
    pub records_written: u64,
    /// The configured `max_wal_bytes`.
    pub max_wal_bytes: u64,
}

/// Errors of the WAL. [`WalError::is_retryable`] tells backpressure (answer
/// `RESOURCE_EXHAUSTED` / 429 / 503) from everything else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The WAL has reached `max_wal_bytes`: the sink has not stored and
    /// released enough yet. Retryable.
    #[error(
        "the WAL is full: {used_bytes} bytes used, max_wal_bytes is {max_bytes}; \
         retry when the store has caught up"
    )]
    Full {
        /// Bytes used by segments and the queue, without the refused append.
        used_bytes: u64,
        /// The configured `max_wal_bytes`.
        max_bytes: u64,
    },
    /// The writer's queue has reached `max_queue_bytes`. Retryable.
    #[error(
        "the WAL write queue is full: {queued_bytes} bytes queued, max_queue_bytes is {max_bytes}; retry shortly"
    )]
    QueueFull {
        /// Bytes queued or being written, without the refused append.
        queued_bytes: u64,
        /// The configured `max_queue_bytes`.
        max_bytes: u64,
    },
    /// One append is larger than the queue can ever hold.
    #[error("an append of {bytes} bytes can never be written: the limit is {max_bytes} bytes")]
    TooLarge {
        /// The append's size in the WAL.
        bytes: u64,
        /// The limit it exceeds (`max_queue_bytes`).
        max_bytes: u64,
    },
    /// A record's stored hash is not the hash of its content.
    #[error("record seq {seq} of chain {chain_id}: its hash does not match its content")]
    BadHash {
        /// The chain.
        chain_id: String,
        /// The record's seq.
        seq: u64,
    },
    /// A record does not continue its chain where the WAL has it: a gap, a
    /// repeat, or a `prev_hash` that is not the previous record's hash. The
    /// caller must append each chain's records in order, and roll its chain
    /// back when an append of it is refused.
    #[error(
        "record seq {seq} of chain {chain_id} does not link to the chain's last record \
         (expected seq {expected_seq} with prev_hash equal to its hash)"
    )]
    Unlinked {
        /// The chain.
        chain_id: String,
        /// The record's seq.
        seq: u64,
        /// The seq that would have continued the chain.
        expected_seq: u64,
    },
    /// [`Wal::shutdown`] was called.
    #[error("the WAL is shut down")]
    Closed,
    /// The file system had no room for a write (full, over a quota or a file
    /// size limit). Nothing of this append is in the WAL; the appends queued
    /// with it were refused too, and every chain was rewound to its last
    /// durable record (see the module's "Failure"). Retryable once space is
    /// freed.
    #[error("no space for the write-ahead log: cannot {op} {}: {reason}; retry once space is freed", path.display())]
    NoSpace {
        /// What was being done.
        op: &'static str,
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The append's records were chained before the chains were last rewound
    /// ([`Entries::expect_rewinds`] was given an older count than
    /// [`Wal::rewinds`]): chain them again from [`Wal::head`]. Retryable.
    #[error(
        "the write-ahead log rewound its chains after running out of space (rewind {rewinds}); chain again and retry"
    )]
    Rewound {
        /// [`Wal::rewinds`] now.
        rewinds: u64,
    },
    /// An earlier write or fsync failed; the WAL accepts nothing more until
    /// the process reopens it (replay recovers everything acknowledged).
    #[error("the WAL failed earlier and accepts no more appends; reopen it to recover: {source}")]
    Failed {
        /// The original failure.
        #[source]
        source: Arc<WalError>,
    },
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Damaged bytes where acknowledged data is (not a torn tail).
    #[error(
        "{} is corrupt at offset {offset}: {reason}{}",
        path.display(),
        valid_frame_after.map_or(String::new(), |o| format!(
            "; a valid frame follows at offset {o}, so acknowledged data is damaged"
        ))
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
        /// In the last segment, where a valid frame was found after the
        /// damage (which is why it is not a torn tail).
        valid_frame_after: Option<u64>,
    },
    /// A record submitted through [`Entries::push`] whose bytes are not a
    /// canonical encoding (its `append` wrote something else).
    #[error("submitted record {index} is not a canonical encoding: {source}")]
    NotCanonical {
        /// The record's index among those submitted.
        index: usize,
        /// Why it does not decode.
        #[source]
        source: DecodeCanonicalError,
    },
    /// A record in a frame with a valid checksum does not decode.
    #[error("{} frame at offset {offset}, record {index}: {source}", path.display())]
    Decode {
        /// The segment file.
        path: PathBuf,
        /// The frame's offset.
        offset: u64,
        /// The record's index in the frame.
        index: usize,
        /// Why it does not decode.
        #[source]
        source: DecodeCanonicalError,
    },
    /// A record whose hash is not the hash of its content.
    #[error(
        "{} frame at offset {offset}: record seq {seq} of chain {chain_id} fails its hash check",
        path.display()
    )]
    HashMismatch {
        /// The segment file.
        path: PathBuf,
        /// The frame's offset.
        offset: u64,
        /// The chain.
        chain_id: String,
        /// The record's seq.
        seq: u64,
    },
    /// Records of a chain in the WAL do not link: one is missing, repeated,
    /// or does not continue from what was released.
    #[error(
        "{} frame at offset {offset}: chain {chain_id} has seq {seq} where seq {expected_seq} \
         linking to the previous record was expected",
        path.display()
    )]
    ChainBroken {
        /// The segment file.
        path: PathBuf,
        /// The frame's offset.
        offset: u64,
        /// The chain.
        chain_id: String,
        /// The record's seq.
        seq: u64,
        /// The seq that would have continued the chain.
        expected_seq: u64,
    },
    /// The `released` marker file is damaged or disagrees with the segments.
    #[error("{}: {reason}", path.display())]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Another process has the WAL directory open.
    #[error("{} is locked: another collector is using this WAL directory", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A release that cannot be right.
    #[error("cannot release chain {chain_id} up to seq {seq}: {reason}")]
    Release {
        /// The chain.
        chain_id: String,
        /// The seq given.
        seq: u64,
        /// Why not.
        reason: &'static str,
    },
    /// An option is out of range.
    #[error("invalid WAL option {field}: {reason}")]
    InvalidOption {
        /// The option's name.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl WalError {
    /// Whether the same append may succeed later ([`Full`](Self::Full),
    /// [`QueueFull`](Self::QueueFull), [`NoSpace`](Self::NoSpace) and
    /// [`Rewound`](Self::Rewound)): receivers answer these with
    /// `RESOURCE_EXHAUSTED` or `UNAVAILABLE` / HTTP 429 or 503 and
    /// `Retry-After`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WalError::Full { .. }
                | WalError::QueueFull { .. }
                | WalError::NoSpace { .. }
                | WalError::Rewound { .. }
        )
    }
}

/// A submitted append; resolves once its records are fsynced (or failed).
///
/// Await it from async code, or call [`Appending::wait`] from a plain thread.
/// Dropping it does not cancel the append.
#[derive(Debug)]
#[must_use = "an append is acknowledged only when this resolves"]
pub struct Appending {
    rx: oneshot::Receiver<Result<Appended, WalError>>,
}

impl Appending {
    /// Blocks the current thread until the append is durable. Must not be
    /// called from inside an async runtime (await the future there).
    pub fn wait(self) -> Result<Appended, WalError> {
        self.rx.blocking_recv().unwrap_or(Err(WalError::Closed))
    }
}

impl Future for Appending {
    type Output = Result<Appended, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The writer thread answers every queued append before it exits; a
        // dropped sender means it is gone without answering.
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WalError::Closed)))
    }
}

/// One queued append.
struct Pending {
    /// Shared with the rows handed to the caller ([`Wal::submit_rows`]).
    entries: Bytes,
    count: u32,
    chains: Vec<(String, ChainHead)>,
    /// May be written into the reserve ([`Entries::may_use_reserve`]).
    system: bool,
    tx: oneshot::Sender<Result<Appended, WalError>>,
}

/// What is known of one segment file.
#[derive(Debug, Default)]
struct SegmentInfo {
    path: PathBuf,
    bytes: u64,
    /// The highest seq of each chain in the segment.
    chains: HashMap<String, u64>,
}

impl SegmentInfo {
    fn fully_released(&self, released: &HashMap<String, ChainHead>) -> bool {
        self.chains
            .iter()
            .all(|(chain, &max)| released.get(chain).is_some_and(|r| r.seq >= max))
    }
}

struct State {
    queue: Vec<Pending>,
    /// Entry bytes queued or being written.
    queued_bytes: u64,
    /// Bytes of all segment files.
    disk_bytes: u64,
    /// Each chain's last record, queued or written (what the next must link to).
    heads: HashMap<String, ChainHead>,
    /// Each chain's last fsynced record (or released head): what may be released.
    durable_heads: HashMap<String, ChainHead>,
    /// What the store holds (as in the marker file).
    released: HashMap<String, ChainHead>,
    segments: BTreeMap<u64, SegmentInfo>,
    /// The segment being written.
    active: u64,
    durable: WalPosition,
    writer_waiting: bool,
    closed: bool,
    failed: Option<Arc<WalError>>,
    stats: WalStats,
    /// Tests hold the writer to make group commits deterministic.
    #[cfg(test)]
    paused: bool,
    /// Tests make this many next group writes fail for lack of space, after
    /// a part of the frame reached the file.
    #[cfg(test)]
    no_space_writes: u32,
    /// Tests make this many next marker writes fail for lack of space.
    #[cfg(test)]
    no_space_markers: u32,
}

/// Counts down one of the tests' injected failures; whether there was one.
#[cfg(test)]
fn take_one(injected: &mut u32) -> bool {
    let had = *injected > 0;
    *injected = injected.saturating_sub(1);
    had
}

impl State {
    /// Whether the writer has nothing (it may take) to write.
    fn idle(&self) -> bool {
        #[cfg(test)]
        if self.paused {
            return true;
        }
        self.queue.is_empty()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dir: PathBuf,
    options: WalOptions,
    /// How long each group commit's write and fsync took.
    sync_seconds: crate::metrics::Histogram,
    /// How many times the chains were rewound after a write found no space.
    /// Changed only while holding `state`, so a check under the lock is
    /// exact; read without it by the pipeline once per request.
    rewinds: AtomicU64,
    /// Space held back for the WAL's own bookkeeping on a full disk.
    reserve: reserve::Reserve,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, never the files,
        // inconsistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Serialises releases (marker writes and segment deletions).
    release_lock: Mutex<()>,
    _lock_file: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = stop_writer(&self.shared, &self.writer);
    }
}

/// Records encoded for one WAL append, in chain order.
///
/// Built with [`Entries::push`] where events are chained, so each record's
/// canonical bytes are encoded once — by `Chain::append_into`, which hashes
/// exactly those bytes — and written to the WAL as they are, instead of being
/// encoded and hashed again by [`Wal::submit`].
///
/// ```
/// use otel_audit_collector::wal::{Entries, Wal, WalOptions};
/// use otel_audit_event::{AuditEvent, Category, Chain};
///
/// let dir = tempfile::tempdir()?;
/// let (wal, _) = Wal::open(WalOptions { dir: dir.path().into(), ..WalOptions::default() })?;
/// let mut chain = Chain::new("c1.acme", "acme")?;
/// let mut entries = Entries::default();
/// let event = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
/// let record = entries.push(|out| chain.append_into(chrono::Utc::now(), event, out))?;
/// wal.submit_entries(entries)?.wait()?;
/// # drop(record);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Entries {
    bytes: Vec<u8>,
    /// Each record, in order.
    records: Vec<EntryRecord>,
    /// The chains of the records, in order of their first record.
    chains: Vec<EntryChain>,
    /// The first record that could not be taken (unlinked, too large):
    /// reported by `submit_entries`, which then writes nothing.
    error: Option<WalError>,
    /// The [`Wal::rewinds`] count the records were chained under, if the
    /// caller asked for the check.
    rewinds: Option<u64>,
    /// See [`Entries::may_use_reserve`].
    system: bool,
}

/// A chain of [`Entries`]: its first and last record, checked against the
/// WAL's heads when submitted.
#[derive(Debug)]
struct EntryChain {
    id: String,
    tenant: String,
    first_seq: u64,
    first_prev: [u8; 32],
    last: ChainHead,
}

/// A record of [`Entries`]: what its row is made of when submitted
/// ([`Wal::submit_rows`]), kept as it is pushed so that its bytes need not
/// be read again.
#[derive(Debug)]
struct EntryRecord {
    /// Its canonical bytes in `Entries::bytes`.
    span: std::ops::Range<usize>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
    seq: u64,
    /// Its chain, an index into `Entries::chains`.
    chain: usize,
}

/// Where the canonical bytes of the entry being built begin.
#[derive(Debug, Clone, Copy)]
struct Open(usize);

impl Entries {
    /// Room for about `records` records.
    pub fn with_capacity(records: usize) -> Entries {
        Entries {
            bytes: Vec::with_capacity(records * 768),
            records: Vec::with_capacity(records),
            ..Entries::default()
        }
    }

    /// Declares that the records were chained from where the WAL's chains
    /// stood after `rewinds` rewinds ([`Wal::rewinds`], read while the
    /// chains were held): `submit_entries` refuses them with
    /// [`WalError::Rewound`] if the chains have been rewound since.
    pub fn expect_rewinds(&mut self, rewinds: u64) {
        self.rewinds = Some(rewinds);
    }

    /// Lets these records be written into the WAL's reserve
    /// ([`WalOptions::reserve_bytes`]) when the file system has no room for
    /// them: for the few records the collector makes about itself that must
    /// be durable for it to free space (retention's tombstones) or that
    /// record its own lifecycle. Never for clients' data, which the reserve
    /// exists to be kept apart from. A group commit holding such records
    /// is written whole, and the reserve is sized for the largest group.
    pub fn may_use_reserve(&mut self) {
        self.system = true;
    }

    /// Adds one record: `append` writes the record's canonical bytes at the
    /// end of the buffer it is given and returns the record, whose hash must
    /// cover exactly those bytes (`Chain::append_into` does both). When
    /// `append` fails, nothing is added and its error is returned.
    pub fn push<E>(
        &mut self,
        append: impl FnOnce(&mut Vec<u8>) -> Result<Record, E>,
    ) -> Result<Record, E> {
        let open = self.begin();
        match append(&mut self.bytes) {
            Ok(record) => {
                debug_assert_eq!(
                    row_hash(&record.prev_hash, &self.bytes[open.0..]),
                    record.hash
                );
                let (id, tenant) = (&record.chain_id, &record.event.tenant);
                if let Err(e) = self.end(open, id, tenant, record.link()) {
                    self.error.get_or_insert(e);
                }
                Ok(record)
            }
            Err(e) => {
                self.bytes.truncate(open.0 - ENTRY_HEADER_BYTES);
                Err(e)
            }
        }
    }

    /// Adds `event` as the next record of `chain`, received at
    /// `received_at` ([`Chain::link_into`]): [`push`](Self::push) for a
    /// caller that keeps its events and drops them after, which spares
    /// moving each one (some 800 bytes) into a `Record`. When the chain
    /// refuses the event, nothing is added and its error is returned.
    pub fn push_event(
        &mut self,
        chain: &mut Chain,
        received_at: DateTime<Utc>,
        event: &AuditEvent,
    ) -> Result<Link, ChainError> {
        let open = self.begin();
        match chain.link_into(received_at, event, &mut self.bytes) {
            Ok(link) => {
                if let Err(e) = self.end(open, chain.id(), chain.tenant(), link) {
                    self.error.get_or_insert(e);
                }
                Ok(link)
            }
            Err(e) => {
                self.bytes.truncate(open.0 - ENTRY_HEADER_BYTES);
                Err(e)
            }
        }
    }

    /// Starts an entry (`len | prev_hash | hash`, filled in by `end`);
    /// its canonical bytes follow.
    fn begin(&mut self) -> Open {
        self.bytes.extend_from_slice(&[0; ENTRY_HEADER_BYTES]);
        Open(self.bytes.len())
    }

    /// Completes the entry `begin` opened, whose canonical bytes are the
    /// buffer's tail, a row of chain `chain_id` of `tenant` linked as
    /// `link`, and checks that it links to its chain's previous record in
    /// these entries.
    fn end(
        &mut self,
        open: Open,
        chain_id: &str,
        tenant: &str,
        link: Link,
    ) -> Result<(), WalError> {
        finish_entry(&mut self.bytes, open.0, &link)?;
        let head = ChainHead {
            seq: link.seq,
            hash: link.hash,
        };
        let chain = match self.chains.iter().position(|c| c.id == chain_id) {
            Some(i) => {
                let last = self.chains[i].last;
                if link.seq != last.seq.wrapping_add(1) || link.prev_hash != last.hash {
                    return Err(WalError::Unlinked {
                        chain_id: chain_id.to_owned(),
                        seq: link.seq,
                        expected_seq: last.seq.wrapping_add(1),
                    });
                }
                self.chains[i].last = head;
                i
            }
            None => {
                self.chains.push(EntryChain {
                    id: chain_id.to_owned(),
                    tenant: tenant.to_owned(),
                    first_seq: link.seq,
                    first_prev: link.prev_hash,
                    last: head,
                });
                self.chains.len() - 1
            }
        };
        self.records.push(EntryRecord {
            span: open.0..self.bytes.len(),
            prev_hash: link.prev_hash,
            hash: link.hash,
            seq: link.seq,
            chain,
        });
        Ok(())
    }
}

/// The write-ahead log. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `options.dir`, recovers it after a crash,
    /// and starts its writer thread. Returns the WAL and the records to
    /// replay: every record not yet released, in append order, with each
    /// chain's head. Errors name the damaged file and offset.
    pub fn open(options: WalOptions) -> Result<(Wal, Replay), WalError> {
        replay::open(options)
    }

    /// The directory of this WAL.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Queues `records` for the next group commit and returns a future that
    /// resolves once they are fsynced. Refuses at once, writing nothing, when
    /// the WAL or its queue is full (retryable), or when a record does not
    /// link to its chain's last record in the WAL; the records of one call
    /// are written all together or not at all.
    ///
    /// Each chain's records must be submitted in chain order (one submitter
    /// per chain at a time, or a lock held across `Chain::append` and
    /// `submit`); a refused submission must not advance the caller's chain.
    pub fn submit(&self, records: &[Record]) -> Result<Appending, WalError> {
        // Encode and check outside the lock: this work runs on the callers'
        // threads, in parallel.
        let mut entries = Entries::with_capacity(records.len());
        let verify = self.inner.shared.options.verify_hashes_on_append;
        for r in records {
            let open = entries.begin();
            r.canonical_bytes(&mut entries.bytes);
            if verify && row_hash(&r.prev_hash, &entries.bytes[open.0..]) != r.hash {
                return Err(WalError::BadHash {
                    chain_id: r.chain_id.clone(),
                    seq: r.seq,
                });
            }
            entries.end(open, &r.chain_id, &r.event.tenant, r.link())?;
        }
        self.submit_entries(entries)
    }

    /// [`submit`](Self::submit) for entries built with [`Entries::push`]:
    /// the records' canonical bytes were encoded (and hashed) once, where
    /// they were chained, and are written as they are.
    pub fn submit_entries(&self, entries: Entries) -> Result<Appending, WalError> {
        self.submit_with(entries, None)
    }

    /// [`submit_entries`](Self::submit_entries), and the records as rows in
    /// their canonical bytes, appended to `rows` in order (on an error,
    /// `rows` may hold some of them: discard it). They share the one buffer
    /// the WAL writes, so a
    /// caller that passes the records on once durable (the collector's
    /// sink) need not keep anything else of them.
    pub fn submit_rows(
        &self,
        entries: Entries,
        rows: &mut Vec<CanonicalRow>,
    ) -> Result<Appending, WalError> {
        self.submit_with(entries, Some(rows))
    }

    fn submit_with(
        &self,
        entries: Entries,
        rows: Option<&mut Vec<CanonicalRow>>,
    ) -> Result<Appending, WalError> {
        if let Some(e) = entries.error {
            return Err(e);
        }
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        let Entries {
            bytes: entries,
            records,
            chains,
            rewinds,
            system,
            ..
        } = entries;
        // Far below u32::MAX: every entry takes at least its 68-byte header,
        // and a group over `max_queue_bytes` (at most 1 GiB) is refused below.
        let count = records.len() as u32;
        let entries = Bytes::from(entries);
        if let Some(rows) = rows {
            rows.reserve(records.len());
            // A tag per chain of the submit, so that the sink knows a row's
            // chain without reading its bytes (see `ChainTag`).
            let tagged: Vec<TaggedChain<'_>> = chains
                .iter()
                .map(|c| TaggedChain::new(&c.id, &c.tenant))
                .collect();
            for (index, r) in records.into_iter().enumerate() {
                let row = CanonicalRow::in_tagged_chain(
                    entries.slice(r.span),
                    r.prev_hash,
                    r.hash,
                    tagged[r.chain],
                    r.seq,
                )
                .map_err(|source| WalError::NotCanonical { index, source })?;
                rows.push(row);
            }
        }
        let bytes = entries.len() as u64;
        let max_queue = shared.options.max_queue_bytes;
        if bytes + GROUP_OVERHEAD_BYTES > max_queue {
            return Err(WalError::TooLarge {
                bytes: bytes + GROUP_OVERHEAD_BYTES,
                max_bytes: max_queue,
            });
        }

        let mut st = shared.lock();
        if let Some(source) = &st.failed {
            return Err(WalError::Failed {
                source: source.clone(),
            });
        }
        if st.closed {
            return Err(WalError::Closed);
        }
        let now = shared.rewinds.load(Ordering::Acquire);
        if rewinds.is_some_and(|r| r != now) {
            return Err(WalError::Rewound { rewinds: now });
        }
        if count == 0 {
            let _ = tx.send(Ok(Appended {
                position: st.durable,
                chains: Vec::new(),
            }));
            return Ok(Appending { rx });
        }
        let used = st.disk_bytes + st.queued_bytes;
        if used + bytes + GROUP_OVERHEAD_BYTES > shared.options.max_wal_bytes {
            return Err(WalError::Full {
                used_bytes: used,
                max_bytes: shared.options.max_wal_bytes,
            });
        }
        if st.queued_bytes + bytes > max_queue {
            return Err(WalError::QueueFull {
                queued_bytes: st.queued_bytes,
                max_bytes: max_queue,
            });
        }
        for c in &chains {
            if let Some(h) = st.heads.get(c.id.as_str())
                && (c.first_seq != h.seq.wrapping_add(1) || c.first_prev != h.hash)
            {
                return Err(WalError::Unlinked {
                    chain_id: c.id.clone(),
                    seq: c.first_seq,
                    expected_seq: h.seq.wrapping_add(1),
                });
            }
        }
        for c in &chains {
            match st.heads.get_mut(c.id.as_str()) {
                Some(h) => *h = c.last,
                None => {
                    st.heads.insert(c.id.clone(), c.last);
                }
            }
        }
        st.queued_bytes += bytes;
        st.queue.push(Pending {
            entries,
            count,
            chains: chains.into_iter().map(|c| (c.id, c.last)).collect(),
            system,
            tx,
        });
        let wake = st.writer_waiting;
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
        Ok(Appending { rx })
    }

    /// Appends `records` and resolves once they are durable: [`Wal::submit`]
    /// (which runs now, not when the future is first polled) followed by
    /// awaiting its answer.
    pub fn append(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<Appended, WalError>> + Send + 'static {
        let submitted = self.submit(records);
        async move { submitted?.await }
    }

    /// Records that the store durably holds chain `chain_id` up to and
    /// including row `upto` (`upto.hash` is that row's hash: the last hash of
    /// the data file), then deletes every segment whose records are all
    /// released. The record is made durable (the `released` marker file is
    /// replaced atomically) before any segment is deleted; replay skips
    /// released records. Releasing what is already released does nothing.
    ///
    /// Blocks on file system I/O (a few fsyncs): call it from a blocking
    /// thread (`tokio::task::spawn_blocking`), not from an async task.
    pub fn release(&self, chain_id: &str, upto: ChainHead) -> Result<Released, WalError> {
        let inner = &self.inner;
        let shared = &inner.shared;
        let _serial = inner.release_lock.lock().unwrap_or_else(|e| e.into_inner());
        let refuse = |reason| {
            Err(WalError::Release {
                chain_id: chain_id.to_owned(),
                seq: upto.seq,
                reason,
            })
        };
        let marker = {
            let st = shared.lock();
            let Some(head) = st.durable_heads.get(chain_id) else {
                return refuse(if st.heads.contains_key(chain_id) {
                    "no record of this chain is durable yet"
                } else {
                    "the WAL has no record of this chain"
                });
            };
            if upto.seq > head.seq {
                return refuse(
                    "the chain's last durable record in the WAL has a lower seq \
                     (release only acknowledged records)",
                );
            }
            if upto.seq == head.seq && upto.hash != head.hash {
                return refuse("the hash is not the hash of the chain's record at that seq");
            }
            if let Some(r) = st.released.get(chain_id) {
                if upto.seq < r.seq || (upto.seq == r.seq && upto.hash == r.hash) {
                    return Ok(Released::default());
                }
                if upto.seq == r.seq {
                    return refuse("the hash differs from the one released before at that seq");
                }
            }
            let mut released: BTreeMap<String, ChainHead> =
                st.released.iter().map(|(c, h)| (c.clone(), *h)).collect();
            released.insert(chain_id.to_owned(), upto);
            Marker {
                next_segment: st.active + 1,
                released,
            }
        };
        #[cfg(test)]
        let stored = if take_one(&mut shared.lock().no_space_markers) {
            Err(format::io_err("write marker", &shared.dir)(
                std::io::ErrorKind::StorageFull.into(),
            ))
        } else {
            marker.store(&shared.dir)
        };
        #[cfg(not(test))]
        let stored = marker.store(&shared.dir);
        match stored {
            Ok(()) => {}
            // Without room for the marker no segment could ever be deleted:
            // the reserve is there for this.
            Err(WalError::Io { ref source, .. })
                if writer::no_space(source)
                    && shared
                        .reserve
                        .release("what the store holds, so that segments can be deleted")? =>
            {
                marker.store(&shared.dir)?;
            }
            Err(e) => return Err(e),
        }

        let doomed: Vec<(u64, PathBuf, u64)> = {
            let mut st = shared.lock();
            match st.released.get_mut(chain_id) {
                Some(r) => *r = upto,
                None => {
                    st.released.insert(chain_id.to_owned(), upto);
                }
            }
            let active = st.active;
            let numbers: Vec<u64> = st
                .segments
                .iter()
                .filter(|(n, s)| **n != active && s.fully_released(&st.released))
                .map(|(n, _)| *n)
                .collect();
            numbers
                .into_iter()
                .filter_map(|n| st.segments.remove(&n).map(|s| (n, s.path, s.bytes)))
                .collect()
        };
        delete_segments(shared, doomed)
    }

    /// How long each group commit's write and fsync took (for `/metrics`).
    pub fn sync_seconds(&self) -> &crate::metrics::Histogram {
        &self.inner.shared.sync_seconds
    }

    /// Counters for metrics.
    pub fn stats(&self) -> WalStats {
        let st = self.inner.shared.lock();
        WalStats {
            disk_bytes: st.disk_bytes,
            queued_bytes: st.queued_bytes,
            segments: st.segments.len(),
            ..st.stats
        }
    }

    /// Allocates the reserve ([`WalOptions::reserve_bytes`]) if it is not in
    /// place and the file system has room for it twice over. The WAL does
    /// this at open; call it again once space has been freed after the
    /// reserve was used (the collector does after each retention run and
    /// when a full disk has room again).
    ///
    /// Blocks on file system I/O: call it from a blocking thread.
    pub fn restore_reserve(&self) -> Result<ReserveState, WalError> {
        self.inner.shared.reserve.restore()
    }

    /// Bytes the reserve holds now (0 after it was used, until restored).
    pub fn reserve_bytes(&self) -> u64 {
        self.inner.shared.reserve.held_bytes()
    }

    /// The end of the last durable (fsynced) group commit.
    pub fn durable_position(&self) -> WalPosition {
        self.inner.shared.lock().durable
    }

    /// Reads back what is durable now: every record after `after`'s head of
    /// its chain (and after what is released), in append order, from the
    /// segment files. For a sink that fell behind its in-memory feed and
    /// must catch up from disk; records made durable after this call are
    /// not included. The reader's [`Replay::record_count`] is 0 (not counted
    /// in advance).
    pub fn read_durable(&self, after: &BTreeMap<String, ChainHead>) -> Replay {
        let st = self.inner.shared.lock();
        let mut skip: BTreeMap<String, ChainHead> =
            st.released.iter().map(|(c, h)| (c.clone(), *h)).collect();
        for (c, h) in after {
            match skip.get_mut(c) {
                Some(s) if s.seq >= h.seq => {}
                Some(s) => *s = *h,
                None => {
                    skip.insert(c.clone(), *h);
                }
            }
        }
        let segments = st
            .segments
            .iter()
            // Frames are appended only after `bytes` is updated to the durable
            // length, so reading up to it never meets a half-written frame.
            .filter(|(n, _)| **n <= st.durable.segment)
            // Nor a segment all of whose records are skipped: a sink that
            // took everything (at every shutdown, before its last flush)
            // read the whole unreleased WAL back for nothing, 2% of the
            // collector's CPU in a load test.
            .filter(|(_, info)| {
                info.chains
                    .iter()
                    .any(|(c, &max)| skip.get(c).is_none_or(|s| s.seq < max))
            })
            .map(|(n, info)| (*n, info.path.clone(), info.bytes))
            .collect();
        let heads = st
            .durable_heads
            .iter()
            .map(|(c, h)| (c.clone(), *h))
            .collect();
        drop(st);
        Replay::reader(heads, segments, skip)
    }

    /// How many times the chains were rewound because a write found no space
    /// (see the module's "Failure"). A caller that holds chains in memory
    /// reads it while holding them, rewinds them from [`head`](Self::head)
    /// when it changed, and passes it to [`Entries::expect_rewinds`].
    pub fn rewinds(&self) -> u64 {
        self.inner.shared.rewinds.load(Ordering::Acquire)
    }

    /// A chain's last record in the WAL (queued, written or released), or
    /// `None` when the WAL holds none of it.
    pub fn head(&self, chain_id: &str) -> Option<ChainHead> {
        self.inner.shared.lock().heads.get(chain_id).copied()
    }

    /// Each chain's last record in the WAL (queued, written or released): where
    /// the chain continues.
    pub fn heads(&self) -> BTreeMap<String, ChainHead> {
        let st = self.inner.shared.lock();
        st.heads.iter().map(|(c, h)| (c.clone(), *h)).collect()
    }

    /// Stops accepting appends, writes and fsyncs everything already queued
    /// (answering its waiters), stops the writer thread, and deletes every
    /// segment whose records are all released, the current one included — so
    /// a collector that drained its sink leaves no segment behind. Later appends fail with
    /// [`WalError::Closed`]. Also done, ignoring errors, when the last clone
    /// is dropped.
    pub fn shutdown(&self) -> Result<(), WalError> {
        stop_writer(&self.inner.shared, &self.inner.writer)?;
        let _serial = self
            .inner
            .release_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<(u64, PathBuf, u64)> = {
            let mut st = self.inner.shared.lock();
            if st.failed.is_some() {
                Vec::new()
            } else {
                let numbers: Vec<u64> = st
                    .segments
                    .iter()
                    .filter(|(_, s)| s.fully_released(&st.released))
                    .map(|(n, _)| *n)
                    .collect();
                numbers
                    .into_iter()
                    .filter_map(|n| st.segments.remove(&n).map(|s| (n, s.path, s.bytes)))
                    .collect()
            }
        };
        delete_segments(&self.inner.shared, doomed).map(|_| ())
    }
}

/// Deletes segment files already removed from the state, then gives their
/// bytes back.
fn delete_segments(
    shared: &Shared,
    doomed: Vec<(u64, PathBuf, u64)>,
) -> Result<Released, WalError> {
    let mut out = Released::default();
    let mut result = Ok(());
    for (_, path, bytes) in &doomed {
        match format::remove_if_present(path, "delete segment") {
            Ok(deleted) => {
                out.deleted_segments += usize::from(deleted);
                out.freed_bytes += bytes;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    {
        let mut st = shared.lock();
        st.disk_bytes = st.disk_bytes.saturating_sub(out.freed_bytes);
        // A segment that could not be deleted stays accounted for.
        if result.is_err() {
            for (n, path, bytes) in doomed.into_iter().skip(out.deleted_segments) {
                st.segments.insert(
                    n,
                    SegmentInfo {
                        path,
                        bytes,
                        chains: HashMap::new(),
                    },
                );
            }
        }
    }
    result?;
    if out.deleted_segments > 0 {
        // Not needed for correctness (a resurrected segment is replayed
        // without its released records), but frees the space for good.
        format::sync_dir(&shared.dir)?;
    }
    Ok(out)
}

fn stop_writer(shared: &Shared, writer: &Mutex<Option<JoinHandle<()>>>) -> Result<(), WalError> {
    {
        let mut st = shared.lock();
        st.closed = true;
    }
    shared.wake.notify_all();
    let handle = writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(handle) = handle {
        // A panic in the writer thread has already failed its waiters.
        let _ = handle.join();
    }
    match &shared.lock().failed {
        Some(source) => Err(WalError::Failed {
            source: source.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_audit_event::{AuditEvent, Category, Chain};
    use otel_audit_storage::StoredRow;

    fn options(dir: &Path) -> WalOptions {
        WalOptions {
            dir: dir.to_owned(),
            max_segment_bytes: 64 * 1024,
            max_wal_bytes: 64 * MIB,
            max_queue_bytes: 64 * 1024,
            verify_hashes_on_append: true,
            reserve_bytes: None,
        }
    }

    fn record(chain: &mut Chain, i: usize) -> Record {
        let mut e = AuditEvent::new(chain.tenant(), "svc", Category::Inference, "llm.chat");
        e.attributes.insert("i".into(), i.to_string());
        e.attributes.insert("pad".into(), "x".repeat(400));
        chain.append(chrono::Utc::now(), e).unwrap()
    }

    /// A WAL in `dir` holding chain c1.acme's first record, durable.
    fn open_with_one_durable(dir: &Path) -> (Wal, Chain, Record) {
        let (wal, _) = Wal::open(options(dir)).unwrap();
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        let first = record(&mut chain, 0);
        wal.submit(std::slice::from_ref(&first))
            .unwrap()
            .wait()
            .unwrap();
        (wal, chain, first)
    }

    fn set_paused(wal: &Wal, paused: bool) {
        wal.inner.shared.lock().paused = paused;
        wal.inner.shared.wake.notify_all();
    }

    /// `read_durable` gives every durable record after the heads given,
    /// and opens no segment all of whose records are before them.
    #[test]
    fn reading_back_skips_segments_taken_already() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(options(dir.path())).unwrap();
        let mut a = Chain::new("c1.acme", "acme").unwrap();
        let mut b = Chain::new("c1.beta", "beta").unwrap();
        // 64 KiB segments of records of about 500 bytes: several segments,
        // chain b only in the first.
        let first_b: Vec<Record> = (0..5).map(|i| record(&mut b, i)).collect();
        wal.submit(&first_b).unwrap().wait().unwrap();
        for i in 0..400 {
            wal.submit(&[record(&mut a, i)]).unwrap().wait().unwrap();
        }
        let segments = wal.inner.shared.lock().segments.len();
        assert!(segments >= 3, "{segments} segments");
        let read = |after: &[(&str, u64)]| {
            let after = after
                .iter()
                .map(|(c, seq)| {
                    let head = ChainHead {
                        seq: *seq,
                        hash: [0; 32],
                    };
                    (c.to_string(), head)
                })
                .collect();
            let reader = wal.read_durable(&after);
            let opened = reader.segments.len();
            let rows: Vec<(String, u64)> = reader
                .map(|r| {
                    let r = r.unwrap();
                    (r.chain_id().to_owned(), r.seq())
                })
                .collect();
            (opened, rows)
        };
        let (opened, rows) = read(&[("c1.acme", 399), ("c1.beta", 4)]);
        assert_eq!((opened, rows), (0, vec![]));
        let (opened, rows) = read(&[("c1.acme", 399), ("c1.beta", 2)]);
        assert_eq!(opened, 1);
        assert_eq!(rows, [("c1.beta".to_owned(), 3), ("c1.beta".to_owned(), 4)]);
        let (opened, rows) = read(&[("c1.acme", 395), ("c1.beta", 4)]);
        assert_eq!(opened, 1, "only the last segment");
        assert_eq!(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            [396, 397, 398, 399]
        );
        let (opened, rows) = read(&[("c1.beta", 4)]);
        assert_eq!((opened, rows.len()), (segments, 400));
    }

    #[test]
    fn one_fsync_serves_every_appender_queued_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(options(dir.path())).unwrap();
        set_paused(&wal, true);
        let pending: Vec<Appending> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let wal = wal.clone();
                    s.spawn(move || {
                        let mut chain = Chain::new(format!("c{t}.acme"), "acme").unwrap();
                        let records = [record(&mut chain, 0), record(&mut chain, 1)];
                        wal.submit(&records).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wal.stats().groups_written, 0);
        set_paused(&wal, false);
        let acks: Vec<Appended> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
        let stats = wal.stats();
        assert_eq!(stats.groups_written, 1, "{stats:?}");
        assert_eq!(stats.appends_written, 16);
        assert_eq!(stats.records_written, 32);
        assert!(acks.iter().all(|a| a.position == acks[0].position));
        assert!(
            acks.iter()
                .all(|a| a.chains.len() == 1 && a.chains[0].1.seq == 1)
        );
        drop(wal);
        let (_, replay) = Wal::open(options(dir.path())).unwrap();
        assert_eq!(replay.record_count(), 32);
        assert_eq!(replay.heads().len(), 16);
    }

    #[test]
    fn a_full_queue_refuses_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(options(dir.path())).unwrap();
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        set_paused(&wal, true);
        let mut pending = Vec::new();
        let err = loop {
            let head = (chain.next_seq(), chain.head());
            let r = record(&mut chain, 0);
            match wal.submit(std::slice::from_ref(&r)) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    // Refused: roll the chain back, as the pipeline must.
                    chain = Chain::resume("c1.acme", "acme", head.0, head.1).unwrap();
                    break e;
                }
            }
        };
        assert!(err.is_retryable(), "{err}");
        let WalError::QueueFull {
            queued_bytes,
            max_bytes,
        } = err
        else {
            panic!("expected QueueFull, got {err}");
        };
        assert_eq!(max_bytes, 64 * 1024);
        assert!(queued_bytes <= max_bytes);
        assert!(wal.stats().queued_bytes > 0);
        set_paused(&wal, false);
        let n = pending.len() as u64;
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(wal.stats().queued_bytes, 0);
        let r = record(&mut chain, 0);
        assert_eq!(r.seq, n);
        wal.submit(&[r]).unwrap().wait().unwrap();
    }

    #[test]
    fn a_write_without_space_refuses_what_was_queued_rewinds_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, mut chain, first) = open_with_one_durable(dir.path());
        let durable = wal.durable_position();

        // Two appends queued together, chained one on the other; the write
        // of their group finds the file system full part way through.
        set_paused(&wal, true);
        wal.inner.shared.lock().no_space_writes = 1;
        let queued: Vec<Appending> = (1..3)
            .map(|i| wal.submit(&[record(&mut chain, i)]).unwrap())
            .collect();
        set_paused(&wal, false);
        for p in queued {
            let e = p.wait().unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(matches!(e, WalError::NoSpace { .. }), "{e}");
            assert!(e.to_string().contains("no space"), "{e}");
        }
        assert_eq!(wal.rewinds(), 1);
        assert_eq!(wal.stats().queued_bytes, 0);
        assert_eq!(wal.durable_position(), durable);
        // Clients' data never takes the reserve.
        assert_eq!(wal.reserve_bytes(), 64 * 1024 + MIB);
        assert!(dir.path().join("reserve").exists());
        // The chain is back at its last durable record.
        let head = wal.head("c1.acme").unwrap();
        assert_eq!((head.seq, head.hash), (0, first.hash));

        // Entries chained before the rewind are refused; chained again
        // from the WAL's head, they are written.
        let mut stale = Entries::default();
        stale.expect_rewinds(0);
        stale
            .push(|out| chain.append_into(chrono::Utc::now(), event(3), out))
            .unwrap();
        let e = wal.submit_entries(stale).unwrap_err();
        assert!(matches!(e, WalError::Rewound { rewinds: 1 }), "{e}");
        assert!(e.is_retryable());
        let mut chain = Chain::resume("c1.acme", "acme", head.seq + 1, head.hash).unwrap();
        let mut fresh = Entries::default();
        fresh.expect_rewinds(wal.rewinds());
        let second = fresh
            .push(|out| chain.append_into(chrono::Utc::now(), event(4), out))
            .unwrap();
        assert_eq!(second.seq, 1);
        wal.submit_entries(fresh).unwrap().wait().unwrap();
        drop(wal);

        // Replay finds exactly the two acknowledged records, and no damage
        // where the partial frame was.
        let (_, replay) = Wal::open(options(dir.path())).unwrap();
        assert_eq!(replay.record_count(), 2);
        let seqs: Vec<u64> = replay.map(|r| r.unwrap().seq()).collect();
        assert_eq!(seqs, [0, 1]);
    }

    fn event(i: usize) -> AuditEvent {
        let mut e = AuditEvent::new("acme", "svc", Category::Inference, "llm.chat");
        e.attributes.insert("i".into(), i.to_string());
        e
    }

    /// Bytes of disk a file holds.
    fn allocated(path: &Path) -> u64 {
        reserve::allocated_bytes(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn the_reserve_is_allocated_at_open_and_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(options(dir.path())).unwrap();
        assert_eq!(wal.reserve_bytes(), 64 * 1024 + MIB);
        assert!(allocated(&dir.path().join("reserve")) >= 64 * 1024 + MIB);
        assert_eq!(
            wal.restore_reserve().unwrap(),
            ReserveState::Held {
                bytes: 64 * 1024 + MIB
            }
        );
        drop(wal);

        let off = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(WalOptions {
            reserve_bytes: Some(0),
            ..options(off.path())
        })
        .unwrap();
        assert_eq!(wal.reserve_bytes(), 0);
        assert_eq!(wal.restore_reserve().unwrap(), ReserveState::Disabled);
        assert!(!off.path().join("reserve").exists());
        drop(wal);

        // A changed size takes effect at the next open; turned off, the
        // reserve left from before is deleted.
        let (wal, _) = Wal::open(WalOptions {
            reserve_bytes: Some(64 * 1024),
            ..options(dir.path())
        })
        .unwrap();
        assert_eq!(wal.reserve_bytes(), 64 * 1024);
        assert_eq!(
            std::fs::metadata(dir.path().join("reserve")).unwrap().len(),
            64 * 1024
        );
        drop(wal);
        let (wal, _) = Wal::open(WalOptions {
            reserve_bytes: Some(2 * MIB),
            ..options(dir.path())
        })
        .unwrap();
        assert!(allocated(&dir.path().join("reserve")) >= 2 * MIB);
        drop(wal);
        let (wal, _) = Wal::open(WalOptions {
            reserve_bytes: Some(0),
            ..options(dir.path())
        })
        .unwrap();
        assert_eq!(wal.reserve_bytes(), 0);
        assert!(!dir.path().join("reserve").exists());

        let e = WalOptions {
            reserve_bytes: Some(100),
            ..options(off.path())
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("reserve_bytes"), "{e}");
        assert!(e.to_string().contains("below the minimum"), "{e}");
    }

    #[test]
    fn the_collectors_own_records_get_the_reserve_on_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, mut chain, _) = open_with_one_durable(dir.path());
        let reserve = dir.path().join("reserve");
        assert!(reserve.exists());

        // A client's append and the collector's own, chained on it, in one
        // group whose first write finds the file system full.
        set_paused(&wal, true);
        wal.inner.shared.lock().no_space_writes = 1;
        let client = wal.submit(&[record(&mut chain, 1)]).unwrap();
        let mut own = Entries::default();
        own.may_use_reserve();
        let tombstone = own
            .push(|out| chain.append_into(chrono::Utc::now(), event(2), out))
            .unwrap();
        let own = wal.submit_entries(own).unwrap();
        set_paused(&wal, false);
        client.wait().unwrap();
        own.wait().unwrap();
        assert_eq!(wal.rewinds(), 0);
        assert_eq!(wal.head("c1.acme").unwrap().hash, tombstone.hash);
        // The reserve made the room, and is gone until restored.
        assert!(!reserve.exists());
        assert_eq!(wal.reserve_bytes(), 0);
        assert_eq!(
            wal.restore_reserve().unwrap(),
            ReserveState::Held {
                bytes: 64 * 1024 + MIB
            }
        );
        assert!(allocated(&reserve) >= 64 * 1024 + MIB);
        assert_eq!(wal.reserve_bytes(), 64 * 1024 + MIB);

        // With the reserve used, the same write is refused as any other.
        wal.inner.shared.lock().no_space_writes = 1;
        assert!(wal.inner.shared.reserve.release("a test").unwrap());
        let mut own = Entries::default();
        own.may_use_reserve();
        own.push(|out| chain.append_into(chrono::Utc::now(), event(3), out))
            .unwrap();
        let e = wal.submit_entries(own).unwrap().wait().unwrap_err();
        assert!(matches!(e, WalError::NoSpace { .. }), "{e}");
        assert_eq!(wal.rewinds(), 1);
        drop(wal);

        let (_, replay) = Wal::open(options(dir.path())).unwrap();
        let seqs: Vec<u64> = replay.map(|r| r.unwrap().seq()).collect();
        assert_eq!(seqs, [0, 1, 2]);
    }

    #[test]
    fn a_release_without_room_for_its_marker_takes_the_reserve() {
        for reserve_bytes in [None, Some(0)] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(WalOptions {
                reserve_bytes,
                ..options(dir.path())
            })
            .unwrap();
            let mut chain = Chain::new("c1.acme", "acme").unwrap();
            // Enough records for several segments.
            let records: Vec<Record> = (0..400).map(|i| record(&mut chain, i)).collect();
            for r in records.chunks(20) {
                wal.submit(r).unwrap().wait().unwrap();
            }
            let segments = wal.stats().segments;
            assert!(segments > 2, "{segments}");
            let last = records.last().unwrap();
            let upto = ChainHead {
                seq: last.seq,
                hash: last.hash,
            };
            wal.inner.shared.lock().no_space_markers = 1;
            match reserve_bytes {
                None => {
                    wal.release("c1.acme", upto).unwrap();
                    assert_eq!(wal.stats().segments, 1);
                    assert_eq!(wal.reserve_bytes(), 0);
                    assert!(!dir.path().join("reserve").exists());
                }
                _ => {
                    let e = wal.release("c1.acme", upto).unwrap_err();
                    assert!(e.to_string().contains("marker"), "{e}");
                    assert_eq!(wal.stats().segments, segments);
                    // Once there is room, the same release goes through.
                    wal.release("c1.acme", upto).unwrap();
                    assert_eq!(wal.stats().segments, 1);
                }
            }
        }
    }

    #[test]
    fn shutdown_answers_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(options(dir.path())).unwrap();
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        set_paused(&wal, true);
        let pending: Vec<_> = (0..5)
            .map(|i| wal.submit(&[record(&mut chain, i)]).unwrap())
            .collect();
        // Shutdown drains the queue even while paused.
        wal.shutdown().unwrap();
        for p in pending {
            p.wait().unwrap();
        }
        assert!(matches!(
            wal.submit(&[record(&mut chain, 9)]),
            Err(WalError::Closed)
        ));
        drop(wal);
        let (_, replay) = Wal::open(options(dir.path())).unwrap();
        assert_eq!(replay.record_count(), 5);
    }

    #[test]
    fn only_durable_records_can_be_released() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, mut chain, first) = open_with_one_durable(dir.path());
        set_paused(&wal, true);
        let second = record(&mut chain, 1);
        let pending = wal.submit(std::slice::from_ref(&second)).unwrap();
        let head = |r: &Record| ChainHead {
            seq: r.seq,
            hash: r.hash,
        };
        assert!(matches!(
            wal.release("c1.acme", head(&second)),
            Err(WalError::Release { seq: 1, .. })
        ));
        wal.release("c1.acme", head(&first)).unwrap();
        set_paused(&wal, false);
        pending.wait().unwrap();
        wal.release("c1.acme", head(&second)).unwrap();
    }
}
