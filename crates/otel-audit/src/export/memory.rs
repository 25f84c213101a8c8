//! An exporter that keeps events in memory, for tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use otel_audit_event::AuditEvent;

use super::{AuditExporter, ExportError, ExportStats};

/// Keeps every exported event in memory. Clones share the same store, so a
/// test keeps one handle and gives a clone to the layer.
///
/// Export is synchronous (no queue, no thread): an event is visible in
/// [`events`](Self::events) as soon as `export` returns.
///
/// ```
/// use otel_audit::export::{AuditExporter, InMemoryExporter};
/// use otel_audit::{AuditEvent, Category};
///
/// let exporter = InMemoryExporter::default();
/// let handle = exporter.clone();
/// exporter.export(AuditEvent::new("acme", "svc", Category::System, "backup.run"));
/// assert_eq!(handle.events()[0].action, "backup.run");
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryExporter {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Mutex<Vec<AuditEvent>>,
    shut_down: AtomicBool,
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl InMemoryExporter {
    /// An empty exporter.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AuditEvent>> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the events exported so far, in order.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.lock().clone()
    }

    /// Removes and returns the events exported so far.
    pub fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.lock())
    }

    /// Forgets the events exported so far (the counters stay).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many events are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl AuditExporter for InMemoryExporter {
    fn export(&self, event: AuditEvent) {
        if self.inner.shut_down.load(Ordering::Acquire) {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.lock().push(event);
        self.inner.exported.fetch_add(1, Ordering::Relaxed);
    }

    fn force_flush(&self) -> Result<(), ExportError> {
        Ok(())
    }

    fn shutdown(&self) -> Result<(), ExportError> {
        self.inner.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn stats(&self) -> ExportStats {
        ExportStats {
            exported: self.inner.exported.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            failed: 0,
            queued: 0,
        }
    }
}
