//! The sink: durable records → Parquet files in the store → WAL release.
//!
//! Records reach the sink through the pipeline's in-memory feed, or — after
//! a restart, or when the feed was full — read back from the WAL. Per chain
//! the sink keeps one open file (one chain, one hour partition, consecutive
//! seqs), hands its rows to a streaming Parquet encoder in chunks as they
//! arrive, and closes it when it reaches `max_file_rows` or `max_file_bytes`
//! (encoded bytes held), when it is `flush_interval_secs` old, or when the
//! next record belongs to another hour. A file is put create-only; once the store
//! holds it, the WAL releases its rows. A failed put is retried with backoff
//! for as long as it takes: the WAL holds the data meanwhile, and the
//! pipeline pushes back once the WAL is full.
//!
//! After a crash between a put and its release, the same rows come back from
//! the WAL. Runs then start where the released rows end, so the first put
//! finds the file already there: an identical file counts as written; a file
//! holding the same first rows (with equal hashes) but more or fewer of them
//! is accepted as far as it goes, and the sink continues after it (reading
//! the rows after it back from the WAL).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use otel_audit_storage::digest::{
    DigestChain, DigestFile, SealedDigest, list_digests, period_boundary_after, put_digest,
};
use otel_audit_storage::{CanonicalRow, ChainTag, StoredRow};
use otel_audit_storage::{
    DigestSigner, ENCODER_CHUNK_ROWS, EncodedFile, FileEncoder, Partition, SinkError, Store,
    TimeRange, WriteOutcome, WriterOptions, batch_to_records, list_files, put_file,
};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::pipeline::Feed;
use crate::wal::{ChainHead, Replay, Wal, WalError};

/// What the pipeline sends the sink.
#[derive(Debug)]
pub(crate) enum FeedMsg {
    /// A chain's first record this run will have `next_seq`.
    Start {
        /// The chain.
        chain_id: String,
        /// Its next seq.
        next_seq: u64,
    },
    /// Durable records (in seq order per chain), and their approximate size.
    Records(Vec<CanonicalRow>, u64),
    /// Records were spilled: look at the WAL.
    Wake,
}

/// A row's memory, for the feed's and runs' byte limits: its canonical
/// bytes (shared with the rest of its request's rows) and itself.
pub(crate) fn approx_record_bytes(r: &CanonicalRow) -> u64 {
    (std::mem::size_of::<CanonicalRow>() + r.canonical().len()) as u64
}

/// Settings of the sink (from `storage.*`).
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Parquet encoding.
    pub parquet: WriterOptions,
    /// Rows per file at most.
    pub max_file_rows: usize,
    /// Approximate in-memory bytes per file at most.
    pub max_file_bytes: u64,
    /// Age at which a run is closed.
    pub flush_interval: Duration,
    /// First retry delay.
    pub retry_initial_backoff: Duration,
    /// Longest retry delay.
    pub retry_max_backoff: Duration,
    /// This collector's instance id: its chains are `<instance_id>.<tenant>`.
    pub instance_id: String,
    /// Signed digests; `None` when off.
    pub digests: Option<DigestOptions>,
}

/// How digests are made.
#[derive(Debug, Clone)]
pub struct DigestOptions {
    /// The signing key.
    pub signer: DigestSigner,
    /// Seconds per period (epoch-aligned).
    pub period_secs: u64,
}

/// A file being written: rows go through the encoder in chunks as they
/// arrive, so memory holds encoded column data, not records, and the CPU
/// cost is spread over the file's life instead of one burst at its close.
/// A chunk is encoded on the blocking pool while the next one fills, so the
/// sink's own work and the encoding run side by side (on two cores, the
/// sink alone was slower than the receivers feeding it).
struct OpenFile {
    /// The encoder when no chunk is being encoded.
    encoder: Option<FileEncoder>,
    /// The chunk being encoded: gives back the encoder, the chunk's emptied
    /// list, and the outcome.
    encoding: Option<tokio::task::JoinHandle<Encoded>>,
    /// The file's partition (every row's).
    partition: Partition,
    started: Instant,
    /// Rows not yet handed to the encoder: at most `ENCODER_CHUNK_ROWS`, so not
    /// counted against `max_file_bytes`.
    pending: Vec<CanonicalRow>,
    /// An emptied chunk list, for the next chunk.
    spare: Vec<CanonicalRow>,
    /// The hash of every row (row `i` has seq `first_seq + i`), to compare
    /// with a file found under the same name after a restart.
    hashes: Vec<[u8; 32]>,
    /// The tag of a row found to be of the partition's tenant (see
    /// [`OpenFile::takes`]).
    tenant_tag: Option<ChainTag>,
    /// The encoder's memory after its last chunk. It changes only when a
    /// chunk is encoded, and asking the Parquet writer walks every buffered
    /// page of every column: once per row, that was 3% of the collector's
    /// CPU.
    encoded_bytes: u64,
}

/// What encoding a chunk gives back.
type Encoded = (FileEncoder, Vec<CanonicalRow>, Result<(), SinkError>);

impl OpenFile {
    fn partition(&self) -> &Partition {
        &self.partition
    }

    fn memory_bytes(&self) -> u64 {
        self.encoded_bytes + self.hashes.len() as u64 * 32
    }

    /// Whether the chain's next row `r` goes into this file: whether it is
    /// of the file's partition. A row tagged as a row found to be of the
    /// partition's tenant is of it too (see [`ChainTag`]), and only its
    /// time is compared: the sink then never reads a row's bytes, whose
    /// first read is a cache miss (they were written on another core),
    /// cheaper where the encoder reads them in order.
    fn takes(&mut self, r: &CanonicalRow) -> bool {
        if r.has_tag(self.tenant_tag) {
            return self.partition.holds_time(r.received_at());
        }
        let held = self.partition.holds(r);
        if held {
            self.tenant_tag = r.chain_tag().or(self.tenant_tag);
        }
        held
    }

    /// Adds the chain's next row; [`Sink::after_push`] does what it calls for.
    fn push(&mut self, r: CanonicalRow) {
        self.hashes.push(*r.hash());
        self.pending.push(r);
    }

    /// The pending rows make a chunk for the encoder.
    fn chunk_full(&self) -> bool {
        self.pending.len() >= ENCODER_CHUNK_ROWS
    }

    /// The file is to be closed.
    fn full(&self, options: &SinkOptions) -> bool {
        self.hashes.len() >= options.max_file_rows || self.memory_bytes() >= options.max_file_bytes
    }
}

struct ChainState {
    /// The seq the next accepted record must have.
    next: u64,
    open: Option<OpenFile>,
    /// Rows up to this seq are already in the store (found there after a
    /// restart); later copies are released, not written.
    held_upto: Option<ChainHead>,
    /// Records that arrived ahead of `next` (concurrent requests finish in
    /// any order), drained as the gap fills: runs of consecutive seqs by
    /// their first seq. A request brings one run per chain; kept in one
    /// list, the records are moved once on the way in and once on the way
    /// out (a map of single records shifted up to ten of them whenever its
    /// smallest was taken).
    ahead: BTreeMap<u64, Vec<CanonicalRow>>,
    /// Records in `ahead`.
    ahead_rows: usize,
    /// Size of the chain's last file: the next one reserves about as much
    /// output room up front.
    last_file_bytes: usize,
}

impl ChainState {
    fn new(next: u64) -> Self {
        ChainState {
            next,
            open: None,
            held_upto: None,
            last_file_bytes: 0,
            ahead: BTreeMap::new(),
            ahead_rows: 0,
        }
    }

    /// Keeps a record that came before its turn.
    fn hold_ahead(&mut self, r: CanonicalRow) {
        let seq = r.seq();
        if let Some((&first, run)) = self.ahead.range_mut(..=seq).next_back() {
            let end = first + run.len() as u64;
            if seq < end {
                // A copy of a record held already.
                return;
            }
            if seq == end {
                run.push(r);
                self.ahead_rows += 1;
                return;
            }
        }
        let mut run = Vec::with_capacity(64);
        run.push(r);
        self.ahead.insert(seq, run);
        self.ahead_rows += 1;
    }

    /// Forgets the records held ahead (the sink reads them from the WAL).
    fn clear_ahead(&mut self) {
        self.ahead.clear();
        self.ahead_rows = 0;
    }

    /// The held run that holds `next`, without the records before `next`
    /// (taken meanwhile); runs wholly before `next` are dropped.
    fn take_ahead(&mut self) -> Option<Vec<CanonicalRow>> {
        loop {
            let entry = self.ahead.first_entry()?;
            let first = *entry.key();
            if first > self.next {
                return None;
            }
            let mut run = entry.remove();
            self.ahead_rows -= run.len();
            let stale = usize::try_from(self.next - first).unwrap_or(usize::MAX);
            if stale < run.len() {
                run.drain(..stale);
                return Some(run);
            }
        }
    }
}

/// Records held ahead of their turn before the sink stops waiting for the
/// gap to fill from the feed and reads the WAL instead.
const MAX_AHEAD: usize = 50_000;

/// The sink task. Run it with [`Sink::run`].
pub(crate) struct Sink {
    store: Store,
    wal: Wal,
    options: SinkOptions,
    metrics: Arc<Metrics>,
    rx: mpsc::UnboundedReceiver<FeedMsg>,
    feed: Feed,
    chains: HashMap<String, ChainState>,
    /// The chain of the row looked up last (see [`state_of`]).
    recent_chain: RecentChain,
    /// Set by `shutdown` → drain everything, then return.
    shutdown: watch::Receiver<bool>,
    /// When shutting down, give up retrying the store at this instant.
    give_up_at: Option<Instant>,
    shutdown_timeout: Duration,
    /// Each chain's digest state (this instance's chains only).
    digests: BTreeMap<String, DigestChain>,
    /// When the current digest period ends.
    next_digest_at: Option<DateTime<Utc>>,
}

/// The chain of the row the sink looked up last, and its tag when that
/// row had one.
#[derive(Debug, Default)]
struct RecentChain {
    id: String,
    tag: Option<ChainTag>,
}

/// The state of `r`'s chain, if known. Rows come in runs of one chain, and
/// those the pipeline submits carry a tag per chain and request: the chain
/// looked up last (`recent`) is recognised by its tag, without reading the
/// row's bytes (a cache miss on every row, the bytes having been written on
/// another core, which took 2% of the collector's CPU); otherwise by its id
/// compared as bytes, which spares reading it as text.
fn state_of<'a>(
    chains: &'a mut HashMap<String, ChainState>,
    recent: &mut RecentChain,
    r: &CanonicalRow,
) -> Option<&'a mut ChainState> {
    if !r.has_tag(recent.tag) {
        if !r.is_of_chain(&recent.id) {
            recent.id.clear();
            recent.id.push_str(r.chain_id());
        }
        recent.tag = r.chain_tag();
    }
    chains.get_mut(recent.id.as_str())
}

/// Why the sink stopped without storing everything.
#[derive(Debug, thiserror::Error)]
pub enum SinkStopError {
    /// The store did not take the data before the shutdown timeout; it stays
    /// in the WAL and is written after the next start.
    #[error("the store did not accept the remaining data within the shutdown timeout: {0}")]
    Timeout(String),
    /// Reading the WAL back failed.
    #[error("reading the WAL back failed: {0}")]
    Wal(#[from] WalError),
    /// Rows could not be encoded as Parquet (a bug: they passed validation).
    #[error("cannot encode a Parquet file: {0}")]
    Encode(String),
}

impl Sink {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        wal: Wal,
        options: SinkOptions,
        metrics: Arc<Metrics>,
        rx: mpsc::UnboundedReceiver<FeedMsg>,
        feed: Feed,
        shutdown: watch::Receiver<bool>,
        shutdown_timeout: Duration,
    ) -> Sink {
        Sink {
            store,
            wal,
            options,
            metrics,
            rx,
            feed,
            chains: HashMap::new(),
            recent_chain: RecentChain::default(),
            shutdown,
            give_up_at: None,
            shutdown_timeout,
            digests: BTreeMap::new(),
            next_digest_at: None,
        }
    }

    /// Writes what the WAL replayed at open, then follows the feed until
    /// shutdown, when it stores everything durable and returns.
    pub(crate) async fn run(mut self, replay: Replay) -> Result<(), SinkStopError> {
        self.recover_digests().await?;
        self.consume_wal(replay).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.feed.spilled.swap(false, Ordering::AcqRel) {
                self.metrics.sink_catch_ups.add(1);
                self.catch_up().await?;
            }
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await?,
                    None => break,
                },
                _ = tick.tick() => {
                    self.flush_aged().await?;
                    if self.next_digest_at.is_some_and(|t| Utc::now() >= t) {
                        self.write_digests(false).await?;
                    }
                }
                _ = self.shutdown.changed() => break,
            }
        }
        // Drain: what is in the feed, then anything durable it missed.
        self.give_up_at = Some(Instant::now() + self.shutdown_timeout);
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg).await?;
        }
        // A flush that finds its rows partly stored already rewinds its chain
        // to be read from the WAL again: repeat until nothing is left.
        loop {
            if self.feed.spilled.swap(false, Ordering::AcqRel) {
                self.metrics.sink_catch_ups.add(1);
            }
            self.catch_up().await?;
            let ids: Vec<String> = self.chains.keys().cloned().collect();
            for id in ids {
                self.flush(&id).await?;
            }
            if !self.feed.spilled.load(Ordering::Acquire) {
                return self.write_digests(true).await;
            }
        }
    }

    async fn handle(&mut self, msg: FeedMsg) -> Result<(), SinkStopError> {
        match msg {
            FeedMsg::Start { chain_id, next_seq } => {
                self.chains
                    .entry(chain_id)
                    .or_insert_with(|| ChainState::new(next_seq));
            }
            FeedMsg::Records(mut records, bytes) => {
                self.feed.taken(bytes);
                for r in records.drain(..) {
                    match self.take_in_order(r) {
                        Ok(None) => {}
                        Ok(Some(id)) => self.follow_up(&id).await?,
                        Err(r) => self.accept(r).await?,
                    }
                }
                self.feed.give_back(records);
            }
            FeedMsg::Wake => {}
        }
        Ok(())
    }

    /// Reads everything durable that the sink has not taken yet from the
    /// WAL.
    async fn catch_up(&mut self) -> Result<(), SinkStopError> {
        let after: BTreeMap<String, ChainHead> = self
            .chains
            .iter()
            .filter(|(_, s)| s.next > 0)
            .map(|(c, s)| {
                (
                    c.clone(),
                    ChainHead {
                        seq: s.next - 1,
                        hash: [0; 32],
                    },
                )
            })
            .collect();
        let reader = self.wal.read_durable(&after);
        self.consume_wal(reader).await
    }

    /// Feeds every record of a WAL reader through `accept`, reading in
    /// chunks on the blocking pool (the reader does file I/O).
    async fn consume_wal(&mut self, reader: Replay) -> Result<(), SinkStopError> {
        let mut reader = Some(reader);
        loop {
            let mut r = reader
                .take()
                .expect("the reader is put back after each chunk");
            let (r, chunk) = tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(4096);
                for item in r.by_ref().take(4096) {
                    match item {
                        Ok(rec) => chunk.push(rec),
                        Err(e) => return (r, Err(e)),
                    }
                }
                (r, Ok(chunk))
            })
            .await
            .expect("WAL read task panicked");
            reader = Some(r);
            let chunk = chunk?;
            if chunk.is_empty() {
                return Ok(());
            }
            for rec in chunk {
                self.accept(rec).await?;
            }
        }
    }

    /// [`accept`](Self::accept) for the usual record, its chain's next going
    /// into the open file, done without `await`: through `accept` and `take`
    /// a record was copied into each one's future on its way to the file.
    /// `Ok(Some(chain))` when the chain now needs
    /// [`follow_up`](Self::follow_up) (a full chunk or file, or held records
    /// that are now next); the record back when it is not such a record.
    // The record comes back by value on purpose: boxing it would allocate
    // for every record of the slow path.
    #[allow(clippy::result_large_err)]
    fn take_in_order(&mut self, r: CanonicalRow) -> Result<Option<String>, CanonicalRow> {
        let Some(state) = state_of(&mut self.chains, &mut self.recent_chain, &r) else {
            return Err(r);
        };
        if r.seq() != state.next || state.held_upto.is_some() {
            return Err(r);
        }
        let Some(file) = state.open.as_mut() else {
            return Err(r);
        };
        if !file.takes(&r) {
            return Err(r);
        }
        state.next = r.seq() + 1;
        file.push(r);
        let due = file.chunk_full()
            || file.full(&self.options)
            || state
                .ahead
                .first_key_value()
                .is_some_and(|(&first, _)| first <= state.next);
        Ok(due.then(|| self.recent_chain.id.clone()))
    }

    /// A record of a known chain that is not its next, done without
    /// `await` (see [`take_in_order`](Self::take_in_order)): one before
    /// `next` is a copy of a record taken already; one after it is held
    /// until its turn, or, when too many are held, dropped with them all
    /// (the sink reads them from the WAL). The record back when it is its
    /// chain's next or its chain is not known yet.
    #[allow(clippy::result_large_err)]
    fn hold_or_drop(&mut self, r: CanonicalRow) -> Result<(), CanonicalRow> {
        let Some(state) = state_of(&mut self.chains, &mut self.recent_chain, &r) else {
            return Err(r);
        };
        match r.seq().cmp(&state.next) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Err(r),
            std::cmp::Ordering::Greater if state.ahead_rows >= MAX_AHEAD => {
                state.clear_ahead();
                self.feed.spilled.store(true, Ordering::Release);
            }
            std::cmp::Ordering::Greater => state.hold_ahead(r),
        }
        Ok(())
    }

    /// After a record was taken: what the open file needs, then the records
    /// held ahead that are now next.
    async fn follow_up(&mut self, id: &str) -> Result<(), SinkStopError> {
        self.after_push(id).await?;
        self.drain_ahead(id).await
    }

    async fn drain_ahead(&mut self, id: &str) -> Result<(), SinkStopError> {
        loop {
            let Some(run) = self.chains.get_mut(id).and_then(ChainState::take_ahead) else {
                return Ok(());
            };
            for r in run {
                match self.take_in_order(r) {
                    Ok(None) => {}
                    Ok(Some(_)) => self.after_push(id).await?,
                    // Taking a record may close a file and find that the store
                    // holds fewer rows (`flush`): the chain then goes back and
                    // reads the rest from the WAL, and the run is no longer next.
                    Err(r) => {
                        if let Err(r) = self.hold_or_drop(r) {
                            self.take(id, r).await?;
                        }
                    }
                }
            }
        }
    }

    /// Any record: dropped as a copy, held until its turn, or taken
    /// (its chain's next, or the first of a chain not known yet) with what
    /// was held behind it.
    async fn accept(&mut self, r: CanonicalRow) -> Result<(), SinkStopError> {
        let Err(r) = self.hold_or_drop(r) else {
            return Ok(());
        };
        // A chain announces itself (`Start`) before its records reach the
        // feed; one first met in the WAL starts at its first unreleased record.
        if !self.chains.contains_key(r.chain_id()) {
            self.chains
                .insert(r.chain_id().to_owned(), ChainState::new(r.seq()));
        }
        let id = r.chain_id().to_owned();
        self.take(&id, r).await?;
        self.drain_ahead(&id).await
    }

    /// Adds the chain's next record to its open file, closing files as
    /// needed.
    async fn take(&mut self, id: &str, r: CanonicalRow) -> Result<(), SinkStopError> {
        let state = self.chains.get_mut(id).expect("chain present");
        state.next = r.seq() + 1;
        if let Some(held) = state.held_upto
            && r.seq() <= held.seq
        {
            // Already in the store: release instead of writing it again.
            if r.seq() == held.seq {
                if *r.hash() != held.hash {
                    tracing::error!(
                        chain = id,
                        seq = r.seq(),
                        "a stored file's last hash differs from the WAL's record"
                    );
                }
                let head = ChainHead {
                    seq: r.seq(),
                    hash: *r.hash(),
                };
                state.held_upto = None;
                self.release(id, head).await;
            }
            return Ok(());
        }
        if state
            .open
            .as_ref()
            .is_some_and(|f| !f.partition().holds(&r))
        {
            self.flush(id).await?;
        }
        if self.chains.get(id).is_some_and(|s| s.open.is_none()) {
            // A file about the size of the chain's last one, within half the
            // memory a file may take (the room counts against it).
            let last = self.chains.get(id).map_or(0, |s| s.last_file_bytes);
            let room = (last / 8 * 9)
                .min(usize::try_from(self.options.max_file_bytes / 2).unwrap_or(usize::MAX));
            let encoder = match FileEncoder::with_capacity(&r, &self.options.parquet, room) {
                Ok(e) => e,
                Err(e) => return Err(self.cannot_encode(id, e)),
            };
            let encoded_bytes = encoder.memory_bytes();
            self.chains.get_mut(id).expect("chain present").open = Some(OpenFile {
                encoder: Some(encoder),
                encoding: None,
                partition: Partition::of(&r),
                started: Instant::now(),
                pending: Vec::with_capacity(ENCODER_CHUNK_ROWS),
                spare: Vec::new(),
                hashes: Vec::new(),
                // The partition is this row's.
                tenant_tag: r.chain_tag(),
                encoded_bytes,
            });
        }
        self.open_file(id).push(r);
        self.after_push(id).await
    }

    /// After a row went into the chain's open file: hands a full chunk to
    /// the encoder, then closes the file when it is full.
    async fn after_push(&mut self, id: &str) -> Result<(), SinkStopError> {
        if self.open_file(id).chunk_full() {
            self.encode_pending(id).await?;
        }
        let full = self.chains.get(id).and_then(|s| s.open.as_ref());
        if full.is_some_and(|f| f.full(&self.options)) {
            self.flush(id).await?;
        }
        Ok(())
    }

    fn open_file(&mut self, id: &str) -> &mut OpenFile {
        self.chains
            .get_mut(id)
            .and_then(|s| s.open.as_mut())
            .expect("the chain has an open file")
    }

    fn cannot_encode(&self, id: &str, e: SinkError) -> SinkStopError {
        // Records that passed validation and the WAL's checks always encode;
        // if one does not, retrying cannot help, and the data stays in the
        // WAL for an operator to look at.
        tracing::error!(chain = id, error = %e, "cannot encode a file");
        SinkStopError::Encode(e.to_string())
    }

    /// Waits for the chunk being encoded, if any, and takes the encoder
    /// back.
    async fn settle(&mut self, id: &str) -> Result<(), SinkStopError> {
        let Some(encoding) = self.open_file(id).encoding.take() else {
            return Ok(());
        };
        let (encoder, mut list, result) = encoding.await.expect("encoding task panicked");
        let file = self.open_file(id);
        file.encoded_bytes = encoder.memory_bytes();
        file.encoder = Some(encoder);
        list.clear();
        file.spare = list;
        result.map_err(|e| self.cannot_encode(id, e))
    }

    /// Hands the open file's pending rows to its encoder on the blocking
    /// pool, once the chunk before them is encoded; returns without waiting
    /// for them.
    async fn encode_pending(&mut self, id: &str) -> Result<(), SinkStopError> {
        if self.open_file(id).pending.is_empty() {
            return Ok(());
        }
        self.settle(id).await?;
        let file = self.open_file(id);
        let mut pending = std::mem::take(&mut file.spare);
        std::mem::swap(&mut pending, &mut file.pending);
        if file.pending.capacity() == 0 {
            file.pending.reserve(ENCODER_CHUNK_ROWS);
        }
        let mut encoder = file
            .encoder
            .take()
            .expect("the encoder is back once the chunk before is encoded");
        file.encoding = Some(tokio::task::spawn_blocking(move || {
            let result = encoder.push(&pending);
            (encoder, pending, result)
        }));
        Ok(())
    }

    async fn flush_aged(&mut self) -> Result<(), SinkStopError> {
        let due: Vec<String> = self
            .chains
            .iter()
            .filter(|(_, s)| {
                s.open
                    .as_ref()
                    .is_some_and(|f| f.started.elapsed() >= self.options.flush_interval)
            })
            .map(|(c, _)| c.clone())
            .collect();
        for id in due {
            self.flush(&id).await?;
        }
        Ok(())
    }

    /// Closes the chain's open file, puts it (retrying until the store takes
    /// it) and releases its rows from the WAL.
    async fn flush(&mut self, id: &str) -> Result<(), SinkStopError> {
        if self.chains.get(id).is_none_or(|s| s.open.is_none()) {
            return Ok(());
        }
        self.encode_pending(id).await?;
        self.settle(id).await?;
        let state = self.chains.get_mut(id).expect("chain present");
        let file = state.open.take().expect("checked above");
        let hashes = file.hashes;
        let encoder = file.encoder.expect("settled: the encoder is back");
        // The file's digest entry (a SHA-256 of its bytes) is made with it on
        // the blocking pool: for a file of some MiB that is 10-20 ms of CPU,
        // which an async worker, shared with the receivers, should not spend.
        let digested = self.options.digests.is_some() && owns(&self.options.instance_id, id);
        let (encoded, digest_file) = tokio::task::spawn_blocking(move || {
            let encoded = encoder.finish()?;
            let entry = digested.then(|| DigestFile::of(&encoded));
            Ok((encoded, entry))
        })
        .await
        .expect("encoding task panicked")
        .map_err(|e| self.cannot_encode(id, e))?;
        if let Some(state) = self.chains.get_mut(id) {
            state.last_file_bytes = encoded.bytes.len();
        }
        let footer = &encoded.footer;
        let (first_seq, last_seq) = (footer.first_seq, footer.last_seq);
        let hash_at = |seq: u64| hashes[(seq - first_seq) as usize];
        match self.put(&encoded, &hashes).await? {
            Put::Stored(outcome) => {
                if let Some(entry) = digest_file {
                    let period = self.digest_period();
                    self.digests
                        .entry(id.to_owned())
                        .or_insert_with(|| {
                            let tenant = &encoded.file.partition.tenant;
                            DigestChain::new(id, tenant, period, Utc::now())
                        })
                        .add_file(entry);
                }
                if outcome == WriteOutcome::Written {
                    let tenant = &encoded.file.partition.tenant;
                    self.metrics.files_written.add(&[("tenant", tenant)], 1);
                    self.metrics.bytes_written.add(encoded.bytes.len() as u64);
                    self.metrics.rows_written.add(footer.row_count);
                }
                let head = ChainHead {
                    seq: last_seq,
                    hash: footer.last_hash,
                };
                self.release(id, head).await;
            }
            Put::Holds(held) => {
                // The store holds this file's first rows already (written
                // before a restart).
                tracing::info!(
                    chain = id,
                    first_seq,
                    held_upto = held.seq,
                    "the store already held these rows (written before a restart)"
                );
                let upto = held.seq.min(last_seq);
                let head = ChainHead {
                    seq: upto,
                    hash: hash_at(upto),
                };
                self.release(id, head).await;
                let state = self.chains.get_mut(id).expect("chain present");
                if held.seq > last_seq {
                    state.held_upto = Some(held);
                } else if held.seq < last_seq {
                    // Our rows after the stored file's end were encoded but not
                    // kept: read them back from the WAL.
                    state.next = held.seq + 1;
                    state.clear_ahead();
                    self.feed.spilled.store(true, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    fn digest_period(&self) -> u64 {
        self.options
            .digests
            .as_ref()
            .map_or(3600, |d| d.period_secs)
    }

    /// Finds where each of this instance's digest chains continues: its
    /// newest digest in the store, and the files stored after it (by a run
    /// that ended without its final digest). Writes a start-up digest for
    /// each, so the time the collector was down is a period of its own.
    async fn recover_digests(&mut self) -> Result<(), SinkStopError> {
        if self.options.digests.is_none() {
            return Ok(());
        }
        let mut delay = self.options.retry_initial_backoff;
        loop {
            let found =
                find_digest_chains(&self.store, &self.options.instance_id, self.digest_period());
            let err = match found.await {
                Ok(chains) => {
                    self.digests = chains;
                    break;
                }
                Err(e) => e,
            };
            self.metrics
                .store_errors
                .add(&[("op", "digest_recovery")], 1);
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "reading the store's digests failed; retrying");
            self.wait_retry(&err, &mut delay).await?;
        }
        let n: usize = self.digests.values().map(DigestChain::pending_files).sum();
        tracing::info!(
            chains = self.digests.len(),
            files_since_last_digest = n,
            "digest chains recovered"
        );
        if !self.digests.is_empty() {
            self.write_digests(false).await?;
        } else {
            self.schedule_next_digest();
        }
        Ok(())
    }
}

/// Whether `chain_id` is one of this instance's chains (`<instance_id>.<tenant>`).
fn owns(instance_id: &str, chain_id: &str) -> bool {
    chain_id
        .strip_prefix(instance_id)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The digest state of each of this instance's chains, from the store: the
/// newest digest, and the files stored after it.
async fn find_digest_chains(
    store: &Store,
    instance_id: &str,
    period: u64,
) -> Result<BTreeMap<String, DigestChain>, String> {
    let listing = list_digests(store).await.map_err(|e| {
        let hint = otel_audit_storage::store_error_hint(&e)
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        format!("{e}{hint}")
    })?;
    let mut out = BTreeMap::new();
    for (chain, digests) in &listing.chains {
        let Some(newest) = digests.last().filter(|_| owns(instance_id, chain)) else {
            continue;
        };
        let bytes = otel_audit_storage::reader::fetch(store, &newest.path)
            .await
            .map_err(|e| e.to_string())?;
        let state = match otel_audit_storage::StoredDigest::parse(&newest.path, &bytes) {
            Ok(d) => DigestChain::after(&d, period),
            Err(e) => {
                tracing::error!(error = %e, "the chain's newest digest is unreadable; the next digest links to its bytes");
                use sha2::Digest as _;
                DigestChain::after_unreadable(newest, sha2::Sha256::digest(&bytes).into(), period)
            }
        };
        out.insert(chain.clone(), state);
    }
    let files = list_files(store, &TimeRange::all())
        .await
        .map_err(|e| e.to_string())?;
    let mut mine: Vec<_> = files
        .files
        .into_iter()
        .filter(|f| owns(instance_id, &f.file.chain_id))
        .collect();
    mine.sort_by(|a, b| {
        (&a.file.chain_id, a.file.first_seq).cmp(&(&b.file.chain_id, b.file.first_seq))
    });
    for f in mine {
        let state = out.entry(f.file.chain_id.clone()).or_insert_with(|| {
            DigestChain::new(
                &f.file.chain_id,
                &f.file.partition.tenant,
                period,
                f.file.partition.start(),
            )
        });
        if state.head().is_some_and(|h| f.file.first_seq <= h.seq) {
            continue;
        }
        let bytes = otel_audit_storage::reader::fetch(store, &f.path)
            .await
            .map_err(|e| e.to_string())?;
        let footer = otel_audit_storage::reader::footer_of(bytes.clone())
            .map_err(|e| format!("{}: {e}", f.path))?;
        state.add_file(DigestFile::new(f.path.clone(), &bytes, &footer));
    }
    Ok(out)
}

impl Sink {
    fn schedule_next_digest(&mut self) {
        self.next_digest_at = Some(period_boundary_after(Utc::now(), self.digest_period()));
    }

    /// Closes the period of every chain and puts its signed digest (a
    /// quiet chain gets one too, so a missing period shows).
    async fn write_digests(&mut self, is_final: bool) -> Result<(), SinkStopError> {
        let Some(opts) = self.options.digests.clone() else {
            return Ok(());
        };
        let now = Utc::now();
        let sealed: Vec<SealedDigest> = self
            .digests
            .values_mut()
            .map(|c| c.seal(now, is_final, &opts.signer))
            .collect();
        for d in &sealed {
            self.put_digest(d).await?;
        }
        self.schedule_next_digest();
        Ok(())
    }

    async fn put_digest(&mut self, d: &SealedDigest) -> Result<(), SinkStopError> {
        let mut delay = self.options.retry_initial_backoff;
        loop {
            let err = match put_digest(&self.store, d).await {
                Ok(_) => {
                    self.metrics.digests_written.add(1);
                    tracing::debug!(path = %d.path, files = d.digest.files.len(), "digest written");
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.store_errors.add(&[("op", "digest")], 1);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "writing a digest failed; retrying");
                    e.to_string()
                }
            };
            self.wait_retry(&err, &mut delay).await?;
        }
    }

    /// Waits before the next retry; during shutdown, gives up at the
    /// deadline.
    async fn wait_retry(&mut self, err: &str, delay: &mut Duration) -> Result<(), SinkStopError> {
        if let Some(t) = self.give_up_at
            && Instant::now() + *delay > t
        {
            return Err(SinkStopError::Timeout(err.to_owned()));
        }
        self.metrics.store_retries.add(1);
        // A shutdown during the wait shortens it: the deadline is then
        // checked on the next round.
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(*delay) => {}
            _ = shutdown.changed(), if self.give_up_at.is_none() => {
                self.give_up_at = Some(Instant::now() + self.shutdown_timeout);
            }
        }
        *delay = (*delay * 2).min(self.options.retry_max_backoff);
        Ok(())
    }

    /// Puts a file, retrying with backoff; resolves a name conflict by
    /// reading the existing file.
    async fn put(&mut self, file: &EncodedFile, hashes: &[[u8; 32]]) -> Result<Put, SinkStopError> {
        let mut delay = self.options.retry_initial_backoff;
        loop {
            let err = match put_file(&self.store, file).await {
                Ok(outcome) => return Ok(Put::Stored(outcome)),
                Err(SinkError::Conflict { path, reason }) => {
                    match self.existing_prefix(&path, file, hashes).await {
                        Ok(held) => return Ok(Put::Holds(held)),
                        Err(why) => {
                            tracing::error!(
                                path = %path, %reason, problem = %why,
                                "a different file already has this name: is another collector \
                                 using the same collector.instance_id? Retrying."
                            );
                            self.metrics.store_errors.add(&[("op", "conflict")], 1);
                            why
                        }
                    }
                }
                Err(e) => {
                    self.metrics.store_errors.add(&[("op", "put")], 1);
                    let hint = otel_audit_storage::store_error_hint(&e);
                    tracing::warn!(error = %e, hint, retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                    e.to_string()
                }
            };
            self.wait_retry(&err, &mut delay).await?;
        }
    }

    /// For a name conflict: whether the existing file holds this file's
    /// first rows, and up to which row. Rows are hash-chained, so equal
    /// hashes at one seq mean equal rows up to it.
    async fn existing_prefix(
        &mut self,
        path: &str,
        file: &EncodedFile,
        hashes: &[[u8; 32]],
    ) -> Result<ChainHead, String> {
        let bytes = otel_audit_storage::reader::fetch(&self.store, path)
            .await
            .map_err(|e| e.to_string())?;
        let theirs = otel_audit_storage::reader::footer_of(bytes.clone())?;
        let ours = &file.footer;
        if theirs.chain_id != ours.chain_id
            || theirs.first_seq != ours.first_seq
            || theirs.prev_hash != ours.prev_hash
        {
            return Err("the existing file starts elsewhere in the chain".into());
        }
        let matches = if theirs.last_seq >= ours.last_seq {
            // It reaches at least as far: it must hold our last row.
            let decoded = otel_audit_storage::reader::decode(bytes).map_err(|e| e.to_string())?;
            let mut found = None;
            for batch in &decoded.batches {
                let records = batch_to_records(batch).map_err(|e| e.to_string())?;
                if let Some(r) = records.iter().find(|r| r.seq == ours.last_seq) {
                    found = Some(r.hash);
                }
            }
            found == Some(ours.last_hash)
        } else {
            hashes.get((theirs.last_seq - ours.first_seq) as usize) == Some(&theirs.last_hash)
        };
        if !matches {
            return Err("the existing file's rows differ from ours".into());
        }
        Ok(ChainHead {
            seq: theirs.last_seq,
            hash: theirs.last_hash,
        })
    }

    async fn release(&mut self, id: &str, head: ChainHead) {
        let wal = self.wal.clone();
        let chain = id.to_owned();
        let result = tokio::task::spawn_blocking(move || wal.release(&chain, head))
            .await
            .expect("release task panicked");
        if let Err(e) = result {
            tracing::error!(chain = id, seq = head.seq, error = %e, "WAL release failed");
        }
    }
}

enum Put {
    Stored(WriteOutcome),
    /// The store already holds the run's rows up to this head.
    Holds(ChainHead),
}

#[cfg(test)]
mod tests {
    use otel_audit_event::{AuditEvent, Category, Chain};
    use otel_audit_storage::TaggedChain;

    use super::*;

    fn records(n: usize) -> Vec<CanonicalRow> {
        let mut chain = Chain::new("c-1.acme", "acme").expect("chain id");
        (0..n)
            .map(|_| {
                let e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
                CanonicalRow::from_record(&chain.append(chrono::Utc::now(), e).expect("append"))
            })
            .collect()
    }

    /// Takes what the state lets through from `next` on, as the sink does.
    fn drain(state: &mut ChainState) -> Vec<u64> {
        let mut taken = Vec::new();
        while let Some(run) = state.take_ahead() {
            for r in run {
                assert_eq!(r.seq(), state.next, "runs give records in seq order");
                state.next += 1;
                taken.push(r.seq());
            }
        }
        taken
    }

    /// Rows of `chain` (tenant `acme`) as the WAL hands them out: tagged
    /// when submitted, untagged when replayed.
    fn rows_of(chain_id: &str, n: usize, tagged: bool) -> Vec<CanonicalRow> {
        let mut chain = Chain::new(chain_id, "acme").expect("chain id");
        let tag = TaggedChain::new(chain_id, "acme");
        (0..n)
            .map(|_| {
                let e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
                let r = chain.append(chrono::Utc::now(), e).expect("append");
                let row = CanonicalRow::from_record(&r);
                if !tagged {
                    return row;
                }
                let bytes = bytes::Bytes::copy_from_slice(row.canonical());
                CanonicalRow::in_tagged_chain(bytes, r.prev_hash, r.hash, tag, r.seq)
                    .expect("the row is of its chain")
            })
            .collect()
    }

    #[test]
    fn rows_are_told_to_their_chains_by_tag_or_by_id() {
        let (a, b) = ("c-1.acme", "c-1.acne");
        let mut chains = HashMap::new();
        chains.insert(a.to_owned(), ChainState::new(100));
        chains.insert(b.to_owned(), ChainState::new(200));
        let mut recent = RecentChain::default();
        // Runs of tagged and untagged rows of two chains whose ids have the
        // same length, and a second request's tag for a chain seen already.
        let runs = [
            (a, rows_of(a, 3, true)),
            (b, rows_of(b, 2, true)),
            (a, rows_of(a, 2, false)),
            (a, rows_of(a, 2, true)),
            (b, rows_of(b, 1, false)),
            (b, rows_of(b, 2, true)),
            (a, rows_of(a, 1, true)),
        ];
        for (id, rows) in &runs {
            for r in rows {
                let state = state_of(&mut chains, &mut recent, r).expect("a known chain");
                assert_eq!(state.next, if *id == a { 100 } else { 200 }, "{id}");
                assert_eq!(recent.id, *id);
            }
        }
        let unknown = rows_of("c-1.other", 1, true);
        assert!(state_of(&mut chains, &mut recent, &unknown[0]).is_none());
    }

    #[test]
    fn records_held_ahead_come_out_in_seq_order_once() {
        let all = records(40);
        let mut state = ChainState::new(0);
        // Requests finishing out of order, one holding a copy of another's
        // records, and one whose records are already taken by the time
        // the gap fills.
        let order: Vec<usize> = (20..30).chain(10..15).chain(12..20).chain(30..40).collect();
        for &i in &order {
            state.hold_ahead(all[i].clone());
        }
        assert_eq!(state.ahead_rows, 30, "copies are not held twice");
        assert!(state.take_ahead().is_none(), "nothing is next before 10");
        state.next = 13;
        assert_eq!(drain(&mut state), (13..40).collect::<Vec<_>>());
        assert_eq!(state.ahead_rows, 0);
        assert!(state.ahead.is_empty());
    }

    #[test]
    fn a_gap_stops_the_drain() {
        let all = records(10);
        let mut state = ChainState::new(0);
        for i in [1, 2, 5, 6, 3, 8] {
            state.hold_ahead(all[i].clone());
        }
        state.next = 1;
        assert_eq!(drain(&mut state), vec![1, 2, 3]);
        assert_eq!(state.ahead_rows, 3);
        state.next = 5;
        assert_eq!(drain(&mut state), vec![5, 6]);
        state.clear_ahead();
        assert_eq!(state.ahead_rows, 0);
        state.next = 8;
        assert!(drain(&mut state).is_empty(), "cleared records are gone");
    }
}
