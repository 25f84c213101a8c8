//! policy → chain → WAL → acknowledge; then the [sink](crate::sink) writes
//! Parquet.
//!
//! [`Pipeline`] implements [`Ingest`]: it applies the server-side redaction
//! policy to every event before anything is written (the WAL included),
//! links the events into their tenant's chain (`<instance_id>.<tenant>`),
//! appends them to the WAL as one all-or-nothing group and answers only once
//! the WAL has fsynced them. Durable events are then handed to the sink
//! through a bounded in-memory feed; when the feed is full they are not
//! queued but read back from the WAL by the sink later, so memory stays
//! bounded however far the store falls behind. While the sink is only busy
//! (it took records lately), a request whose records do not fit waits for
//! room first (`storage.max_buffer_wait_ms`): reading records back from the
//! WAL costs disk reads and CPU the feed saves (a catch-up reads every
//! record still in the WAL to find the few it missed), so a sink that is
//! merely slower than the receivers slows their answers instead.
//!
//! What the feed carries is each record's canonical bytes, in the buffer
//! the WAL wrote ([`Wal::submit_rows`]): the events are dropped where they
//! were chained.
//!
//! A program can embed just this stage ("plugin" use): see
//! `examples/embedded_pipeline.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use otel_audit_event::redact::Redactor;
use otel_audit_event::{AuditEvent, Chain};
use otel_audit_storage::CanonicalRow;
use tokio::sync::mpsc;

use crate::ingest::{Ingest, IngestAck, IngestError, Principal, Rejection};
use crate::metrics::Metrics;
use crate::sink::{FeedMsg, approx_record_bytes};
use crate::wal::{Appending, ChainHead, Entries, ReserveState, Wal, WalError};

/// How long clients are told to wait when the collector is at a limit.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The in-memory feed from the pipeline to the sink.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: mpsc::UnboundedSender<FeedMsg>,
    /// Record bytes queued (approximately); the sink subtracts what it takes.
    pub(crate) bytes: Arc<AtomicU64>,
    max_bytes: u64,
    /// The longest a request waits for room, and how recently the sink must
    /// have taken records for a request to wait at all (a sink stuck on a
    /// store outage takes nothing: requests spill at once).
    max_wait: Duration,
    /// Set when durable records were not queued because the feed was full:
    /// the sink must read them back from the WAL.
    pub(crate) spilled: Arc<AtomicBool>,
    /// Wakes requests waiting for room (see [`Feed::records`]).
    room: Arc<tokio::sync::Notify>,
    /// When the sink last took records, in milliseconds since `epoch`.
    taken_ms: Arc<AtomicU64>,
    /// tokio's clock, so that tests can pause it.
    epoch: tokio::time::Instant,
    /// Row lists the sink has emptied, for the next requests (a list of
    /// 512 rows is 64 KB).
    spare: Arc<Mutex<Vec<Vec<CanonicalRow>>>>,
}

/// Emptied record lists kept for reuse, at most.
const SPARE_LISTS: usize = 8;

impl Feed {
    pub(crate) fn new(
        max_bytes: u64,
        max_wait: Duration,
    ) -> (Feed, mpsc::UnboundedReceiver<FeedMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Feed {
                tx,
                bytes: Arc::new(AtomicU64::new(0)),
                max_bytes,
                max_wait,
                spilled: Arc::new(AtomicBool::new(false)),
                room: Arc::new(tokio::sync::Notify::new()),
                taken_ms: Arc::new(AtomicU64::new(0)),
                epoch: tokio::time::Instant::now(),
                spare: Arc::new(Mutex::new(Vec::new())),
            },
            rx,
        )
    }

    fn start(&self, chain_id: &str, next_seq: u64) {
        // Tiny and needed to place the chain's first record: never spilled.
        let _ = self.tx.send(FeedMsg::Start {
            chain_id: chain_id.to_owned(),
            next_seq,
        });
    }

    /// An empty record list with room for `n` records, reused when one is
    /// spare.
    fn list(&self, n: usize) -> Vec<CanonicalRow> {
        let spare = lock(&self.spare).pop();
        let mut list = spare.unwrap_or_default();
        list.reserve(n);
        list
    }

    /// Gives an emptied list back for [`Feed::list`].
    pub(crate) fn give_back(&self, mut list: Vec<CanonicalRow>) {
        list.clear();
        let mut spare = lock(&self.spare);
        if spare.len() < SPARE_LISTS {
            spare.push(list);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Called by the sink when it took `bytes` of records off the feed.
    pub(crate) fn taken(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.taken_ms.store(self.now_ms(), Ordering::Release);
        self.room.notify_waiters();
    }

    /// Whether the sink took records within the last `max_wait`.
    fn sink_is_moving(&self) -> bool {
        let taken = self.taken_ms.load(Ordering::Acquire);
        u128::from(self.now_ms().saturating_sub(taken)) < self.max_wait.as_millis()
    }

    /// Queues durable records for the sink. When they do not fit, waits for
    /// room while the sink is moving (at most `max_wait`), then spills
    /// them: the sink reads them back from the WAL.
    async fn records(&self, records: Vec<CanonicalRow>) -> Duration {
        let bytes: u64 = records.iter().map(approx_record_bytes).sum();
        let started = tokio::time::Instant::now();
        loop {
            // Registered before the check, so a `taken` in between is seen.
            let room = self.room.notified();
            let queued = self.bytes.fetch_add(bytes, Ordering::AcqRel);
            // A single list larger than the whole feed always fits an empty
            // one, or it would wait in vain.
            if queued + bytes <= self.max_bytes || queued == 0 {
                if self.tx.send(FeedMsg::Records(records, bytes)).is_err() {
                    self.bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
                return started.elapsed();
            }
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            let left = self.max_wait.saturating_sub(started.elapsed());
            if left.is_zero() || !self.sink_is_moving() {
                self.spilled.store(true, Ordering::Release);
                let _ = self.tx.send(FeedMsg::Wake);
                return started.elapsed();
            }
            let _ = tokio::time::timeout(left, room).await;
        }
    }
}

/// What `chain_and_submit` queued: the WAL's answer to come, the rows to
/// feed the sink once durable, and per tenant how many events it chained.
struct Submitted {
    appending: Appending,
    rows: Vec<CanonicalRow>,
    accepted: Vec<(String, u64)>,
}

/// One tenant's chain and the last receive time given to it (receive times
/// never go backwards within a chain, so its files' hours only move forward).
#[derive(Debug)]
struct Slot {
    chain: Chain,
    last_received: DateTime<Utc>,
    /// The WAL's rewind count the chain is in step with.
    rewinds: u64,
}

/// Chain `id` of `tenant`, continuing after `head` (`None`: a new chain).
fn chain_after(id: String, tenant: &str, head: Option<ChainHead>) -> Result<Chain, String> {
    match head {
        Some(h) => Chain::resume(id, tenant, h.seq + 1, h.hash),
        None => Chain::new(id, tenant),
    }
    .map_err(|e| e.to_string())
}

/// The policy → chain → WAL stage. Cheap to share (`Arc<Pipeline>`).
pub struct Pipeline {
    redactor: Arc<Redactor>,
    instance_id: String,
    wal: Wal,
    feed: Feed,
    metrics: Arc<Metrics>,
    slots: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Where chains not in the WAL continue (found in the store at start).
    resume: HashMap<String, ChainHead>,
    accepting: AtomicBool,
    failed: AtomicBool,
    /// Whether the last WAL write found no space (for logging the change).
    disk_full: AtomicBool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("instance_id", &self.instance_id)
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    /// A pipeline writing to `wal`. `heads` are where chains continue (the
    /// WAL's heads, plus heads found in the store for chains the WAL does not
    /// know); `feed` goes to the sink.
    pub(crate) fn new(
        redactor: Arc<Redactor>,
        instance_id: String,
        wal: Wal,
        feed: Feed,
        metrics: Arc<Metrics>,
        heads: HashMap<String, ChainHead>,
    ) -> Pipeline {
        Pipeline {
            redactor,
            instance_id,
            wal,
            feed,
            metrics,
            slots: Mutex::new(HashMap::new()),
            resume: heads,
            accepting: AtomicBool::new(true),
            failed: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
        }
    }

    /// The chain id of `tenant`'s chain.
    pub fn chain_id(&self, tenant: &str) -> String {
        format!("{}.{tenant}", self.instance_id)
    }

    /// Whether requests are being accepted.
    pub fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Acquire) && !self.failed.load(Ordering::Acquire)
    }

    /// Stops accepting requests (they get `UNAVAILABLE` / 503); events
    /// already submitted still complete.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// The WAL.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Each chain's next seq, for metrics.
    pub fn chain_heads(&self) -> BTreeMap<String, u64> {
        let slots = lock(&self.slots);
        slots
            .values()
            .map(|s| {
                let s = lock(s);
                (s.chain.id().to_owned(), s.chain.next_seq())
            })
            .collect()
    }

    fn slot(&self, tenant: &str) -> Result<Arc<Mutex<Slot>>, String> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(tenant) {
            return Ok(s.clone());
        }
        let chain_id = self.chain_id(tenant);
        let chain = chain_after(
            chain_id.clone(),
            tenant,
            self.resume.get(&chain_id).copied(),
        )?;
        self.feed.start(&chain_id, chain.next_seq());
        let slot = Arc::new(Mutex::new(Slot {
            chain,
            last_received: DateTime::<Utc>::MIN_UTC,
            // Nothing of this chain was queued before now.
            rewinds: self.wal.rewinds(),
        }));
        slots.insert(tenant.to_owned(), slot.clone());
        Ok(slot)
    }

    /// Chains, makes durable and feeds the sink; the core of [`Ingest`].
    /// Events must already have been through the policy. `own`: the
    /// collector's records about itself, which may use the WAL's reserve.
    async fn commit(
        &self,
        by_tenant: BTreeMap<String, Vec<(usize, AuditEvent)>>,
        rejected: &mut Vec<Rejection>,
        own: bool,
    ) -> Result<usize, WalError> {
        let Some(Submitted {
            appending,
            rows,
            accepted,
        }) = self.chain_and_submit(by_tenant, rejected, own)?
        else {
            return Ok(0);
        };
        let waiting = std::time::Instant::now();
        let appended = appending.await;
        self.metrics.wal_wait_seconds.observe(waiting.elapsed());
        appended?;
        // A load first: every acknowledged request passes here, and
        // only the first after a full disk needs to write the flag.
        if self.disk_full.load(Ordering::Acquire) && self.disk_full.swap(false, Ordering::AcqRel) {
            tracing::info!("the WAL's file system has room again: accepting data");
            // In the background: a client's answer does not wait
            // for the allocation.
            tokio::spawn(restore_reserve(self.wal.clone()));
        }
        let n = rows.len();
        for (tenant, count) in accepted.iter().filter(|(_, n)| *n > 0) {
            self.metrics
                .events_accepted
                .add(&[("tenant", tenant.as_str())], *count);
        }
        let waited = self.feed.records(rows).await;
        self.metrics.feed_wait_seconds.observe(waited);
        Ok(n)
    }

    /// The synchronous half of `commit`: chain locks are never held across
    /// an await.
    fn chain_and_submit(
        &self,
        by_tenant: BTreeMap<String, Vec<(usize, AuditEvent)>>,
        rejected: &mut Vec<Rejection>,
        own: bool,
    ) -> Result<Option<Submitted>, WalError> {
        let mut slots = Vec::with_capacity(by_tenant.len());
        let mut batches = Vec::with_capacity(by_tenant.len());
        for (tenant, events) in by_tenant {
            match self.slot(&tenant) {
                Ok(s) => {
                    slots.push(s);
                    batches.push(events);
                }
                Err(message) => rejected.extend(events.into_iter().map(|(index, _)| Rejection {
                    index,
                    reason: "validation",
                    message: message.clone(),
                })),
            }
        }
        // Every chain of the request is locked (in tenant order, so two
        // requests never wait on each other crosswise) across append and
        // submit: the WAL then receives each chain's records in seq order,
        // and one all-or-nothing submit means a refused request leaves no
        // chain advanced.
        let mut guards: Vec<MutexGuard<'_, Slot>> = slots.iter().map(|s| lock(s)).collect();
        // After a write found no space, the WAL refused what was queued and
        // put its chains back at their last durable records: chains this
        // request continues follow them there first (or back to where they
        // resumed, when the WAL holds none of theirs).
        let rewinds = self.wal.rewinds();
        for g in guards.iter_mut().filter(|g| g.rewinds != rewinds) {
            let (id, tenant) = (g.chain.id().to_owned(), g.chain.tenant().to_owned());
            let head = self.wal.head(&id).or_else(|| self.resume.get(&id).copied());
            g.chain = chain_after(id, &tenant, head).expect("the chain was valid a moment ago");
            g.rewinds = rewinds;
        }
        let saved: Vec<(u64, [u8; 32])> = guards
            .iter()
            .map(|g| (g.chain.next_seq(), g.chain.head()))
            .collect();
        let total: usize = batches.iter().map(Vec::len).sum();
        let mut entries = Entries::with_capacity(total);
        // Refused if the chains are rewound between here and the submit.
        entries.expect_rewinds(rewinds);
        if own {
            entries.may_use_reserve();
        }
        let mut received = Vec::with_capacity(guards.len());
        // Per tenant, the events chained (the metric counts them once durable).
        let mut accepted = Vec::with_capacity(guards.len());
        for (guard, events) in guards.iter_mut().zip(&batches) {
            let now = Utc::now().max(guard.last_received);
            received.push(now);
            let mut chained = 0u64;
            for (index, event) in events {
                // The canonical bytes are encoded once: the chain hashes them
                // where the WAL entry holds them, and the sink takes them
                // from there. The events are dropped on the thread that made
                // them, without being moved, once the chains are unlocked
                // (declared before the guards, `batches` is dropped after).
                match entries.push_event(&mut guard.chain, now, event) {
                    Ok(_) => chained += 1,
                    Err(e) => rejected.push(Rejection {
                        index: *index,
                        reason: "validation",
                        message: e.to_string(),
                    }),
                }
            }
            accepted.push((guard.chain.tenant().to_owned(), chained));
        }
        let chained: u64 = accepted.iter().map(|(_, n)| n).sum();
        if chained == 0 {
            return Ok(None);
        }
        // A list the sink emptied has room already.
        let mut rows = self.feed.list(chained as usize);
        let appending = match self.wal.submit_rows(entries, &mut rows) {
            Ok(a) => {
                for (g, t) in guards.iter_mut().zip(received) {
                    g.last_received = t;
                }
                a
            }
            Err(e) => {
                for (g, (seq, head)) in guards.iter_mut().zip(saved) {
                    let (id, tenant) = (g.chain.id().to_owned(), g.chain.tenant().to_owned());
                    g.chain = Chain::resume(id, tenant, seq, head)
                        .expect("the chain was valid a moment ago");
                }
                return Err(e);
            }
        };
        drop(guards);
        Ok(Some(Submitted {
            appending,
            rows,
            accepted,
        }))
    }

    fn wal_error(&self, e: WalError) -> IngestError {
        match &e {
            WalError::Full { .. } => {
                self.metrics.backpressure.add(&[("reason", "wal_full")], 1);
                IngestError::Backpressure {
                    reason: e.to_string(),
                    retry_after: RETRY_AFTER,
                }
            }
            WalError::QueueFull { .. } => {
                self.metrics
                    .backpressure
                    .add(&[("reason", "queue_full")], 1);
                IngestError::Backpressure {
                    reason: e.to_string(),
                    retry_after: RETRY_AFTER,
                }
            }
            WalError::TooLarge { .. } => {
                self.metrics.backpressure.add(&[("reason", "too_large")], 1);
                IngestError::Backpressure {
                    reason: format!("{e}; send smaller batches"),
                    retry_after: RETRY_AFTER,
                }
            }
            // Records the chain encoded that do not read back: a bug, but
            // one request's, not the WAL's.
            WalError::NotCanonical { .. } => IngestError::Internal {
                reason: e.to_string(),
            },
            WalError::Closed => IngestError::Unavailable {
                reason: "shutting down".into(),
                retry_after: RETRY_AFTER,
            },
            WalError::NoSpace { .. } | WalError::Rewound { .. } => {
                self.metrics.backpressure.add(&[("reason", "disk_full")], 1);
                // Once per run of refusals, not once per request.
                if !self.disk_full.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "the WAL's file system is full: refusing data with a retryable status until space is freed");
                }
                IngestError::Unavailable {
                    reason: e.to_string(),
                    retry_after: RETRY_AFTER,
                }
            }
            _ => {
                // A failed write or fsync: nothing more can be acknowledged
                // until a restart replays the WAL.
                self.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "WAL write failed; refusing data until restarted");
                IngestError::Internal {
                    reason: "the write-ahead log failed; the collector must be restarted".into(),
                }
            }
        }
    }

    /// Appends one event the collector itself produces (lifecycle, retention,
    /// backup), through the same policy, chain and WAL.
    pub async fn record_own_event(&self, event: AuditEvent) -> Result<(), IngestError> {
        let mut by_tenant = BTreeMap::new();
        let mut event = event;
        self.redactor.redact_event(&mut event);
        by_tenant.insert(event.tenant.clone(), vec![(0, event)]);
        self.commit_own(by_tenant).await
    }

    /// Commits records the collector makes about itself: they may use the
    /// WAL's reserve, and when they are refused for lack of space (queued
    /// behind clients' data that found none, and refused with it) they are
    /// chained and submitted again, in a group of their own that gets the
    /// reserve.
    async fn commit_own(
        &self,
        by_tenant: BTreeMap<String, Vec<(usize, AuditEvent)>>,
    ) -> Result<(), IngestError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut rejected = Vec::new();
            match self.commit(by_tenant.clone(), &mut rejected, true).await {
                Ok(_) => {
                    return match rejected.pop() {
                        None => Ok(()),
                        Some(r) => Err(IngestError::Internal { reason: r.message }),
                    };
                }
                Err(WalError::NoSpace { .. } | WalError::Rewound { .. })
                    if attempts < OWN_COMMIT_ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(10 * attempts)).await;
                }
                Err(e) => return Err(self.wal_error(e)),
            }
        }
    }
}

/// Allocates the WAL's reserve again if it was used, when there is room for
/// it ([`Wal::restore_reserve`], on a blocking thread), and says so in the
/// log.
pub(crate) async fn restore_reserve(wal: Wal) {
    let was_held = wal.reserve_bytes() > 0;
    let restored = tokio::task::spawn_blocking(move || wal.restore_reserve())
        .await
        .expect("reserve task panicked");
    match restored {
        Ok(ReserveState::Held { bytes }) if !was_held => {
            tracing::info!(bytes, "the WAL's reserve is in place");
        }
        Ok(ReserveState::Held { .. } | ReserveState::Disabled) => {}
        Ok(ReserveState::NoRoom {
            bytes,
            available_bytes,
        }) => tracing::warn!(
            bytes,
            available_bytes,
            "no room for the WAL's reserve (it needs twice its size free); trying again after the next retention run or when a full disk has room again"
        ),
        Err(e) => tracing::warn!(error = %e, "could not allocate the WAL's reserve"),
    }
}

/// How often the collector's own records are tried when the WAL finds no
/// space: clients' groups refused ahead of them take them along, a group
/// of their own gets the reserve.
const OWN_COMMIT_ATTEMPTS: u64 = 5;

impl Pipeline {
    /// Appends records the collector makes about its own store (retention
    /// tombstones), each in its tenant's chain, durably, all or nothing.
    /// The redaction policy is not applied: these events carry object
    /// paths, seqs and hashes that `verify` must read back, and no content.
    pub async fn record_store_events(&self, events: Vec<AuditEvent>) -> Result<(), IngestError> {
        let mut by_tenant: BTreeMap<String, Vec<(usize, AuditEvent)>> = BTreeMap::new();
        for (i, e) in events.into_iter().enumerate() {
            by_tenant.entry(e.tenant.clone()).or_default().push((i, e));
        }
        self.commit_own(by_tenant).await
    }
}

impl Ingest for Pipeline {
    async fn ingest(
        &self,
        principal: &Principal,
        events: Vec<(usize, AuditEvent)>,
        rejected_before: Vec<Rejection>,
    ) -> Result<IngestAck, IngestError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(IngestError::Internal {
                reason: "the write-ahead log failed; the collector must be restarted".into(),
            });
        }
        if !self.accepting.load(Ordering::Acquire) {
            return Err(IngestError::Unavailable {
                reason: "shutting down".into(),
                retry_after: RETRY_AFTER,
            });
        }
        let mut rejected = rejected_before;
        let mut events = events;
        events.retain_mut(|(index, event)| {
            if let Some(t) = &principal.tenant
                && event.tenant != *t
            {
                rejected.push(Rejection {
                    index: *index,
                    reason: "tenant_mismatch",
                    message: format!(
                        "record {index} names tenant {:?}, but the token writes to tenant {t:?}",
                        event.tenant.chars().take(64).collect::<String>()
                    ),
                });
                return false;
            }
            // Before anything is written anywhere, the WAL included.
            self.redactor.redact_event(event);
            true
        });
        let mut by_tenant: BTreeMap<String, Vec<(usize, AuditEvent)>> = BTreeMap::new();
        match events.first() {
            None => {}
            // Requests usually carry one tenant: the list is passed on as it
            // is, instead of moving every event (≈ 1 KB each) into a new one.
            Some((_, first)) if events.iter().all(|(_, e)| e.tenant == first.tenant) => {
                by_tenant.insert(first.tenant.clone(), events);
            }
            Some(_) => {
                for (index, event) in events {
                    match by_tenant.get_mut(&event.tenant) {
                        Some(v) => v.push((index, event)),
                        None => {
                            by_tenant.insert(event.tenant.clone(), vec![(index, event)]);
                        }
                    }
                }
            }
        }
        let accepted = self
            .commit(by_tenant, &mut rejected, false)
            .await
            .map_err(|e| self.wal_error(e))?;
        for r in &rejected {
            self.metrics
                .records_rejected
                .add(&[("reason", r.reason)], 1);
        }
        rejected.sort_by_key(|r| r.index);
        Ok(IngestAck { accepted, rejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Vec<CanonicalRow> {
        let event = AuditEvent::new("acme", "svc", otel_audit_event::Category::Admin, "x");
        (0..n)
            .map(|i| {
                CanonicalRow::from_record(&otel_audit_event::Record {
                    received_at: Utc::now(),
                    event: event.clone(),
                    chain_id: "c.acme".into(),
                    seq: i as u64,
                    prev_hash: [0; 32],
                    hash: [0; 32],
                })
            })
            .collect()
    }

    /// A feed that holds one list of 10 records.
    fn feed(max_wait: Duration) -> (Arc<Feed>, mpsc::UnboundedReceiver<FeedMsg>) {
        let one: u64 = list(10).iter().map(approx_record_bytes).sum();
        let (feed, rx) = Feed::new(one, max_wait);
        (Arc::new(feed), rx)
    }

    fn taken(msg: FeedMsg) -> u64 {
        match msg {
            FeedMsg::Records(_, bytes) => bytes,
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_wait_for_a_moving_sink_instead_of_spilling() {
        let (feed, mut rx) = feed(Duration::from_secs(1));
        assert_eq!(feed.records(list(10)).await, Duration::ZERO);
        let second = tokio::spawn({
            let feed = feed.clone();
            async move { feed.records(list(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the feed is full: the second list waits"
        );
        let bytes = taken(rx.recv().await.unwrap());
        feed.taken(bytes);
        let waited = second.await.unwrap();
        assert_eq!(waited, Duration::from_millis(300));
        assert!(!feed.spilled.load(Ordering::Acquire));
        taken(rx.recv().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn records_spill_after_the_longest_wait() {
        let (feed, mut rx) = feed(Duration::from_secs(1));
        feed.records(list(10)).await;
        // The sink takes nothing: the second list waits a second, then is
        // left to the WAL.
        assert_eq!(feed.records(list(10)).await, Duration::from_secs(1));
        assert!(feed.spilled.load(Ordering::Acquire));
        taken(rx.recv().await.unwrap());
        assert!(matches!(rx.recv().await, Some(FeedMsg::Wake)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_took_nothing_lately_is_not_waited_for() {
        let (feed, _rx) = feed(Duration::from_secs(1));
        feed.records(list(10)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(feed.records(list(10)).await, Duration::ZERO);
        assert!(feed.spilled.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_records_spill_at_once() {
        let (feed, _rx) = feed(Duration::ZERO);
        feed.records(list(10)).await;
        assert_eq!(feed.records(list(10)).await, Duration::ZERO);
        assert!(feed.spilled.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_larger_than_the_feed_goes_in_when_it_is_empty() {
        let (feed, mut rx) = feed(Duration::from_secs(1));
        assert_eq!(feed.records(list(25)).await, Duration::ZERO);
        assert!(!feed.spilled.load(Ordering::Acquire));
        taken(rx.recv().await.unwrap());
    }
}
