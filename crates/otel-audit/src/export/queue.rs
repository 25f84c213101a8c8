//! The bounded queue and background thread in front of every sink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otel_audit_event::AuditEvent;

use super::{CapturedEvent, DROPPED_BEFORE_ATTRIBUTE, ExportError, ExportStats};
use crate::capture::Record;

/// What [`AuditExporter::export`](super::AuditExporter::export) does when the
/// queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullQueuePolicy {
    /// Drop the new event at once (counted, and marked on the next queued
    /// event). The calling thread never waits.
    #[default]
    DropNewest,
    /// Wait up to `timeout` for room, then drop the event as above.
    Block {
        /// The longest the calling thread waits.
        timeout: Duration,
    },
}

/// The queue and batching settings of a queued exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Events the queue holds (at least 1). Default 4096
    /// (`OTEL_BLRP_MAX_QUEUE_SIZE` for the OTLP exporter).
    pub capacity: usize,
    /// Most events per export request (at least 1). Default 512
    /// (`OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch_size: usize,
    /// How long a partial batch waits for more events. Default 200 ms
    /// (`OTEL_BLRP_SCHEDULE_DELAY`, in milliseconds).
    pub batch_delay: Duration,
    /// What happens when the queue is full. Default [`FullQueuePolicy::DropNewest`].
    pub full_queue_policy: FullQueuePolicy,
    /// The longest [`force_flush`](super::AuditExporter::force_flush) waits. Default 30 s.
    pub flush_timeout: Duration,
    /// The longest [`shutdown`](super::AuditExporter::shutdown) waits. Default 30 s.
    pub shutdown_timeout: Duration,
    /// The shortest interval between two warnings of the same kind on stderr.
    /// Default 10 s.
    pub warn_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 4096,
            max_batch_size: 512,
            batch_delay: Duration::from_millis(200),
            full_queue_policy: FullQueuePolicy::DropNewest,
            flush_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            warn_interval: Duration::from_secs(10),
        }
    }
}

impl QueueConfig {
    /// The defaults, with `capacity`, `max_batch_size` and `batch_delay` taken
    /// from the standard batch-log-processor variables `OTEL_BLRP_MAX_QUEUE_SIZE`,
    /// `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` and `OTEL_BLRP_SCHEDULE_DELAY` (ms)
    /// when they are set.
    pub fn from_env() -> Result<Self, ExportError> {
        let mut config = QueueConfig::default();
        if let Some(n) = env_number("OTEL_BLRP_MAX_QUEUE_SIZE")? {
            config.capacity = n as usize;
        }
        if let Some(n) = env_number("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")? {
            config.max_batch_size = n as usize;
        }
        if let Some(n) = env_number("OTEL_BLRP_SCHEDULE_DELAY")? {
            config.batch_delay = Duration::from_millis(n);
        }
        Ok(config)
    }

    pub(crate) fn check(&self) -> Result<(), ExportError> {
        if self.capacity == 0 {
            return Err(ExportError::Config {
                setting: "queue capacity",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_batch_size == 0 {
            return Err(ExportError::Config {
                setting: "max batch size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn env_number(name: &'static str) -> Result<Option<u64>, ExportError> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ExportError::Config {
                    setting: name,
                    reason: format!("{text:?} is not a non-negative integer"),
                })
        }
        _ => Ok(None),
    }
}

/// What a queued exporter writes to. Built on (and only used from) the
/// background thread.
pub(crate) trait Sink: 'static {
    /// Delivers one batch (in order).
    fn write(&mut self, batch: &[AuditEvent]) -> Result<(), ExportError>;
    /// Releases the sink after the last batch.
    fn shutdown(&mut self) -> Result<(), ExportError>;
}

struct Item {
    /// The number of events lost just before this one, which it carries as
    /// its gap marker (set when the worker assembles the batch).
    carried_gap: u64,
    event: Payload,
}

enum Payload {
    /// Boxed: queue slots stay a few words wide for the captured events.
    Event(Box<AuditEvent>),
    /// Assembled on the worker, off the calling thread.
    Captured(CapturedEvent),
}

struct State {
    queue: VecDeque<Item>,
    /// Events ever queued.
    enqueued: u64,
    /// Events the worker has finished with (delivered or failed).
    completed: u64,
    /// Events lost since the last marker.
    gap: u64,
    /// The worker exports without waiting for a full batch until `completed` reaches this.
    flush_to: u64,
    shutdown: bool,
    worker_done: bool,
    /// Failures not yet reported by a flush or shutdown.
    failed_unreported: u64,
    last_error: Option<Arc<ExportError>>,
    shutdown_error: Option<ExportError>,
}

struct Shared {
    name: &'static str,
    config: QueueConfig,
    state: Mutex<State>,
    /// Signals the worker: a batch is full, a flush is wanted, or shutdown.
    wake_worker: Condvar,
    /// Signals producers waiting under [`FullQueuePolicy::Block`]: room in the queue.
    space: Condvar,
    /// Signals flushers and shutdown: the worker completed a batch or stopped.
    progress: Condvar,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    drop_warning: Warning,
    failure_warning: Warning,
}

/// Rate-limits one kind of stderr warning.
struct Warning {
    last: Mutex<Option<Instant>>,
    /// Occurrences since the last warning printed.
    pending: AtomicU64,
}

impl Warning {
    fn new() -> Self {
        Warning {
            last: Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts `n` occurrences and returns the count to report when a warning
    /// is due (at most once per `interval`).
    fn due(&self, n: u64, interval: Duration) -> Option<u64> {
        self.pending.fetch_add(n, Ordering::Relaxed);
        // Never wait for the lock: another thread is printing the same warning.
        let mut last = self.last.try_lock().ok()?;
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent counters; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `AuditExporter` for an exporter whose `queue` field is a [`Queued`]
/// (every method goes to the queue), and `Debug` showing the named fields
/// and the queue's counters.
macro_rules! queued_exporter {
    ($ty:ident $(, $field:ident)*) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field("stats", &$crate::export::AuditExporter::stats(self))
                    .finish()
            }
        }

        impl $crate::export::AuditExporter for $ty {
            fn export(&self, event: ::otel_audit_event::AuditEvent) {
                self.queue.export(event)
            }
            fn export_captured(&self, event: $crate::export::CapturedEvent) {
                self.queue.export_captured(event)
            }
            fn force_flush(&self) -> Result<(), $crate::export::ExportError> {
                self.queue.force_flush()
            }
            fn shutdown(&self) -> Result<(), $crate::export::ExportError> {
                self.queue.shutdown()
            }
            fn stats(&self) -> $crate::export::ExportStats {
                self.queue.stats()
            }
        }
    };
}
pub(crate) use queued_exporter;

/// A bounded queue drained by one background thread into a [`Sink`].
pub(crate) struct Queued {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Queued {
    /// Starts the background thread, which builds the sink with `make_sink`
    /// (so sinks that need thread-affine resources create them there) and
    /// reports whether that worked before this returns.
    pub(crate) fn start<S, F>(
        name: &'static str,
        config: QueueConfig,
        make_sink: F,
    ) -> Result<Self, ExportError>
    where
        S: Sink,
        F: FnOnce() -> Result<S, ExportError> + Send + 'static,
    {
        config.check()?;
        let shared = Arc::new(Shared {
            name,
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(config.capacity.min(4096)),
                enqueued: 0,
                completed: 0,
                gap: 0,
                flush_to: 0,
                shutdown: false,
                worker_done: false,
                failed_unreported: 0,
                last_error: None,
                shutdown_error: None,
            }),
            config,
            wake_worker: Condvar::new(),
            space: Condvar::new(),
            progress: Condvar::new(),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            drop_warning: Warning::new(),
            failure_warning: Warning::new(),
        });
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), ExportError>>(1);
        let worker_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("otel-audit-{name}"))
            .spawn(move || {
                let _quiet = quiet_thread();
                let _done = DoneGuard(&worker_shared);
                let sink = match make_sink() {
                    Ok(sink) => {
                        let _ = ready_tx.send(Ok(()));
                        sink
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                drop(ready_tx);
                run_worker(&worker_shared, sink);
            })
            .map_err(|source| ExportError::Spawn {
                exporter: name,
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Queued {
                shared,
                worker: Mutex::new(Some(handle)),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(ExportError::WorkerStopped { exporter: name })
            }
        }
    }

    pub(crate) fn export(&self, event: AuditEvent) {
        self.enqueue(Payload::Event(Box::new(event)));
    }

    pub(crate) fn export_captured(&self, event: CapturedEvent) {
        self.enqueue(Payload::Captured(event));
    }

    fn enqueue(&self, event: Payload) {
        let shared = &*self.shared;
        let config = &shared.config;
        let mut st = lock(&shared.state);
        if st.shutdown || st.worker_done {
            drop(st);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.warn_dropped(1, "it is shut down");
            return;
        }
        if st.queue.len() >= config.capacity {
            if let FullQueuePolicy::Block { timeout } = config.full_queue_policy {
                st = shared
                    .space
                    .wait_timeout_while(st, timeout, |st| {
                        st.queue.len() >= config.capacity && !(st.shutdown || st.worker_done)
                    })
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let room = st.queue.len() < config.capacity && !(st.shutdown || st.worker_done);
            if !room {
                // Counted towards the marker only while a later event can still carry it.
                if !(st.shutdown || st.worker_done) {
                    st.gap += 1;
                }
                drop(st);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.warn_dropped(1, "its queue is full");
                return;
            }
        }
        let gap = std::mem::take(&mut st.gap);
        st.queue.push_back(Item {
            carried_gap: gap,
            event,
        });
        st.enqueued += 1;
        let len = st.queue.len();
        drop(st);
        if len == config.max_batch_size.min(config.capacity) {
            shared.wake_worker.notify_one();
        }
    }

    fn warn_dropped(&self, n: u64, why: &str) {
        let shared = &*self.shared;
        if let Some(count) = shared.drop_warning.due(n, shared.config.warn_interval) {
            eprintln!(
                "otel-audit: the {} exporter dropped {count} audit event(s) because {why} \
                 ({} dropped in all); the next exported event carries {DROPPED_BEFORE_ATTRIBUTE}",
                shared.name,
                shared.dropped.load(Ordering::Relaxed),
            );
        }
    }

    pub(crate) fn force_flush(&self) -> Result<(), ExportError> {
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        let target = st.enqueued;
        st.flush_to = st.flush_to.max(target);
        shared.wake_worker.notify_one();
        let timeout = shared.config.flush_timeout;
        let (mut st, _) = shared
            .progress
            .wait_timeout_while(st, timeout, |st| st.completed < target && !st.worker_done)
            .unwrap_or_else(|p| p.into_inner());
        if st.completed < target {
            return Err(if st.worker_done {
                ExportError::WorkerStopped {
                    exporter: shared.name,
                }
            } else {
                ExportError::Timeout {
                    operation: "force_flush",
                    exporter: shared.name,
                    timeout,
                }
            });
        }
        take_failures(shared, &mut st)
    }

    pub(crate) fn shutdown(&self) -> Result<(), ExportError> {
        let shared = &*self.shared;
        let Some(handle) = lock(&self.worker).take() else {
            return Ok(());
        };
        let mut st = lock(&shared.state);
        st.shutdown = true;
        st.flush_to = st.enqueued;
        shared.wake_worker.notify_one();
        shared.space.notify_all();
        let timeout = shared.config.shutdown_timeout;
        let (mut st, _) = shared
            .progress
            .wait_timeout_while(st, timeout, |st| !st.worker_done)
            .unwrap_or_else(|p| p.into_inner());
        if !st.worker_done {
            // The thread goes on draining; it is not joined.
            return Err(ExportError::Timeout {
                operation: "shutdown",
                exporter: shared.name,
                timeout,
            });
        }
        let lost = std::mem::take(&mut st.gap);
        let shutdown_error = st.shutdown_error.take();
        let complete = st.completed == st.enqueued;
        let failures = take_failures(shared, &mut st);
        drop(st);
        if lost > 0 {
            eprintln!(
                "otel-audit: the {} exporter lost {lost} audit event(s) just before shutdown; \
                 no later event can carry {DROPPED_BEFORE_ATTRIBUTE}",
                shared.name
            );
        }
        let joined = handle.join();
        if joined.is_err() || !complete {
            return Err(ExportError::WorkerStopped {
                exporter: shared.name,
            });
        }
        failures?;
        match shutdown_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn stats(&self) -> ExportStats {
        let shared = &*self.shared;
        let queued = lock(&shared.state).queue.len() as u64;
        ExportStats {
            exported: shared.exported.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            queued,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("otel-audit: {e}");
        }
    }
}

/// Sets (or adds to) the gap marker on an event.
fn mark_gap(event: &mut AuditEvent, gap: u64) {
    let total = event
        .attributes
        .get(DROPPED_BEFORE_ATTRIBUTE)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(gap, |earlier| earlier.saturating_add(gap));
    event
        .attributes
        .insert(DROPPED_BEFORE_ATTRIBUTE.to_owned(), total.to_string());
}

fn take_failures(shared: &Shared, st: &mut State) -> Result<(), ExportError> {
    let count = std::mem::take(&mut st.failed_unreported);
    match (count, st.last_error.clone()) {
        (0, _) => Ok(()),
        (count, Some(source)) => Err(ExportError::Delivery {
            exporter: shared.name,
            count,
            source,
        }),
        (count, None) => Err(ExportError::Delivery {
            exporter: shared.name,
            count,
            source: Arc::new(ExportError::WorkerStopped {
                exporter: shared.name,
            }),
        }),
    }
}

/// Marks the worker as stopped however it ends (return or panic), so nobody
/// waits for it forever.
struct DoneGuard<'a>(&'a Shared);

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.worker_done = true;
        drop(st);
        self.0.progress.notify_all();
        self.0.space.notify_all();
    }
}

/// Makes the current thread silent: no `tracing` dispatcher and OpenTelemetry
/// telemetry suppressed, so nothing the export path logs (ours, the SDK's,
/// tonic's, hyper's) can reach the audit layer or any other layer.
pub(crate) fn quiet_thread() -> impl Sized {
    (
        tracing::dispatcher::set_default(&tracing::Dispatch::none()),
        opentelemetry::Context::enter_telemetry_suppressed_scope(),
    )
}

fn run_worker<S: Sink>(shared: &Shared, mut sink: S) {
    let config = &shared.config;
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(config.max_batch_size);
    let mut taken: Vec<Item> = Vec::with_capacity(config.max_batch_size);
    let mut spare = Vec::with_capacity(config.max_batch_size);
    let mut carried: u64;
    let mut next_due = Instant::now() + config.batch_delay;
    loop {
        let mut st = lock(&shared.state);
        loop {
            let now = Instant::now();
            let due = now >= next_due;
            let urgent = st.flush_to > st.completed || st.shutdown;
            if st.queue.len() >= config.max_batch_size || (!st.queue.is_empty() && (due || urgent))
            {
                break;
            }
            if st.shutdown && st.queue.is_empty() {
                drop(st);
                let result = sink.shutdown();
                let mut st = lock(&shared.state);
                st.shutdown_error = result.err();
                return;
            }
            if due {
                next_due = now + config.batch_delay;
            }
            st = shared
                .wake_worker
                .wait_timeout(st, next_due.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let n = st.queue.len().min(config.max_batch_size);
        taken.extend(st.queue.drain(..n));
        drop(st);
        shared.space.notify_all();
        carried = 0;
        for item in taken.drain(..) {
            let mut event = match item.event {
                Payload::Event(event) => *event,
                Payload::Captured(captured) => captured.assemble(&mut spare),
            };
            if item.carried_gap > 0 {
                mark_gap(&mut event, item.carried_gap);
            }
            carried += item.carried_gap;
            batch.push(event);
        }
        Record::recycle(&mut spare);

        let result = sink.write(&batch);
        let count = batch.len() as u64;
        batch.clear();

        let mut st = lock(&shared.state);
        st.completed += count;
        match result {
            Ok(()) => {
                shared.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                shared.failed.fetch_add(count, Ordering::Relaxed);
                // The lost events, and the gap their markers carried, move to the next marker.
                st.gap += count + carried;
                st.failed_unreported += count;
                let error = Arc::new(error);
                st.last_error = Some(Arc::clone(&error));
                drop(st);
                if let Some(n) = shared.failure_warning.due(count, config.warn_interval) {
                    eprintln!(
                        "otel-audit: the {} exporter could not deliver {n} audit event(s): {}",
                        shared.name,
                        ErrorChain(&*error)
                    );
                }
                st = lock(&shared.state);
            }
        }
        if st.queue.is_empty() {
            next_due = Instant::now() + config.batch_delay;
        }
        drop(st);
        shared.progress.notify_all();
    }
}

/// Displays an error with its sources: `a: b: c`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
