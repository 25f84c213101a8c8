//! The queue and background thread of the built-in exporters, in front of
//! your own delivery function.

use otel_audit_event::AuditEvent;

use super::ExportError;
use super::queue::{QueueConfig, Queued, Sink, queued_exporter};

/// The error a [`BatchExporter`]'s function returns.
pub type BatchError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An exporter with the same bounded queue, batching, full-queue policy,
/// gap markers and background thread as [`OtlpExporter`](super::OtlpExporter)
/// and [`JsonLinesExporter`](super::JsonLinesExporter), delivering each batch
/// to a function of yours: a message bus, a database, a test counter.
///
/// The function runs on the exporter's thread, in order, one batch at a
/// time. A batch it fails counts as `failed` in [`ExportStats`](super::ExportStats), is reported
/// by the next [`force_flush`](super::AuditExporter::force_flush) or
/// [`shutdown`](super::AuditExporter::shutdown), and the next event carries the gap
/// marker ([`DROPPED_BEFORE_ATTRIBUTE`](super::DROPPED_BEFORE_ATTRIBUTE)).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use otel_audit::export::{AuditExporter, BatchExporter, QueueConfig};
/// use otel_audit::{AuditEvent, Category};
///
/// let actions = Arc::new(Mutex::new(Vec::new()));
/// let seen = Arc::clone(&actions);
/// let exporter = BatchExporter::new("bus", QueueConfig::default(), move |batch: &[AuditEvent]| {
///     seen.lock().unwrap().extend(batch.iter().map(|e| e.action.clone()));
///     Ok(())
/// })?;
/// exporter.export(AuditEvent::new("acme", "svc", Category::Admin, "user.create"));
/// exporter.shutdown()?;
/// assert_eq!(*actions.lock().unwrap(), ["user.create"]);
/// # Ok::<(), otel_audit::export::ExportError>(())
/// ```
pub struct BatchExporter {
    queue: Queued,
}

impl BatchExporter {
    /// Starts the exporter's thread (named `otel-audit-<name>`). `name` also
    /// names the exporter in warnings and errors.
    pub fn new<F>(name: &'static str, config: QueueConfig, deliver: F) -> Result<Self, ExportError>
    where
        F: FnMut(&[AuditEvent]) -> Result<(), BatchError> + Send + 'static,
    {
        let queue = Queued::start(name, config, move || Ok(FnSink { name, deliver }))?;
        Ok(BatchExporter { queue })
    }
}

queued_exporter!(BatchExporter);

struct FnSink<F> {
    name: &'static str,
    deliver: F,
}

impl<F> Sink for FnSink<F>
where
    F: FnMut(&[AuditEvent]) -> Result<(), BatchError> + 'static,
{
    fn write(&mut self, batch: &[AuditEvent]) -> Result<(), ExportError> {
        (self.deliver)(batch).map_err(|source| ExportError::Deliver {
            exporter: self.name,
            count: batch.len(),
            source,
        })
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}
