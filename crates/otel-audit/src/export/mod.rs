//! Where audit events go: OTLP logs to a collector, JSON lines for local
//! development, memory for tests.
//!
//! Every exporter implements [`AuditExporter`]. [`OtlpExporter`],
//! [`JsonLinesExporter`] and [`BatchExporter`] (your own delivery function)
//! put a bounded queue in front of their sink and write from a dedicated
//! background thread, so the thread that records an event never waits on
//! the network or a disk, and does not even assemble the event: the layer
//! hands over what the call captured ([`CapturedEvent`]) and the exporter's
//! thread builds the [`AuditEvent`] from it:
//!
//! - when the queue is full, the [`FullQueuePolicy`] decides: drop the new
//!   event ([`FullQueuePolicy::DropNewest`], the default) or wait up to a
//!   timeout and then drop it ([`FullQueuePolicy::Block`]);
//! - nothing vanishes silently: drops are counted in [`ExportStats`], a
//!   warning goes to stderr (at most once per [`QueueConfig::warn_interval`]),
//!   and the next event that is queued carries the attribute
//!   [`DROPPED_BEFORE_ATTRIBUTE`] (`otel_audit.dropped_before`) with the number
//!   of events lost just before it, so the collector and `otel-audit verify`
//!   can show the gap. Events whose delivery failed (after the OTLP exporter's
//!   retries) count towards the same marker;
//! - the export threads never emit `tracing` events (their thread-local
//!   dispatcher is a no-op one, and OpenTelemetry telemetry is suppressed on
//!   them), so the exporter can never feed the audit layer it serves.
//!
//! ```
//! use otel_audit::export::{AuditExporter, JsonLinesExporter};
//! use otel_audit::{AuditEvent, Category};
//!
//! let exporter = JsonLinesExporter::new(std::io::sink())?;
//! exporter.export(AuditEvent::new("acme", "svc", Category::Admin, "user.create"));
//! exporter.shutdown()?;
//! assert_eq!(exporter.stats().exported, 1);
//! # Ok::<(), otel_audit::export::ExportError>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use otel_audit_event::AuditEvent;

use crate::capture::Record;

mod batch;
mod json;
mod memory;
mod otlp;
mod queue;

pub use batch::{BatchError, BatchExporter};
pub use json::JsonLinesExporter;
pub use memory::InMemoryExporter;
pub use opentelemetry_otlp::RetryPolicy;
pub use otlp::{OtlpExporter, OtlpExporterBuilder, Protocol};
pub use queue::{FullQueuePolicy, QueueConfig};

/// The event attribute that carries the number of events lost (dropped at a
/// full queue, exported after shutdown, or failed delivery) since the
/// previous marker. Its value is a decimal count.
pub const DROPPED_BEFORE_ATTRIBUTE: &str = "otel_audit.dropped_before";

/// A destination for audit events.
///
/// Implementations are shared between threads (`Send + Sync`); the audit
/// layer calls [`export`](Self::export) on the thread that closed the span.
pub trait AuditExporter: Send + Sync + 'static {
    /// Hands one event over. Must not block the calling thread for long: it
    /// enqueues and applies the full-queue policy.
    fn export(&self, event: AuditEvent);

    /// Hands over an event as the [`AuditLayer`](crate::AuditLayer) captured
    /// it: redacted, but not yet assembled. The default assembles it on the
    /// calling thread and calls [`export`](Self::export). Exporters with a
    /// background thread queue it and assemble it there, which keeps the
    /// audited call's own cost (and its allocations) small.
    fn export_captured(&self, event: CapturedEvent) {
        self.export(event.into_event());
    }

    /// Blocks until everything handed over so far is exported (or failed),
    /// up to the exporter's flush timeout. Reports delivery failures that
    /// happened since the previous flush.
    fn force_flush(&self) -> Result<(), ExportError>;

    /// Flushes and stops; events exported later are counted as dropped.
    /// Calling it again does nothing.
    fn shutdown(&self) -> Result<(), ExportError>;

    /// Counters since the exporter was built.
    fn stats(&self) -> ExportStats;
}

impl<T: AuditExporter + ?Sized> AuditExporter for Arc<T> {
    fn export(&self, event: AuditEvent) {
        (**self).export(event)
    }
    fn export_captured(&self, event: CapturedEvent) {
        (**self).export_captured(event)
    }
    fn force_flush(&self) -> Result<(), ExportError> {
        (**self).force_flush()
    }
    fn shutdown(&self) -> Result<(), ExportError> {
        (**self).shutdown()
    }
    fn stats(&self) -> ExportStats {
        (**self).stats()
    }
}

impl<T: AuditExporter + ?Sized> AuditExporter for Box<T> {
    fn export(&self, event: AuditEvent) {
        (**self).export(event)
    }
    fn export_captured(&self, event: CapturedEvent) {
        (**self).export_captured(event)
    }
    fn force_flush(&self) -> Result<(), ExportError> {
        (**self).force_flush()
    }
    fn shutdown(&self) -> Result<(), ExportError> {
        (**self).shutdown()
    }
    fn stats(&self) -> ExportStats {
        (**self).stats()
    }
}

/// An audit event as an [`AuditLayer`](crate::AuditLayer) captured it on the
/// thread that made the audited call: every value already redacted, the
/// event not yet assembled. See [`AuditExporter::export_captured`].
pub struct CapturedEvent(pub(crate) Box<Record>);

impl CapturedEvent {
    /// Assembles the event (and applies the layer's policy to the identity
    /// fields: actor, target, error message, ...).
    pub fn into_event(self) -> AuditEvent {
        let mut spare = Vec::with_capacity(1);
        let ev = self.assemble(&mut spare);
        Record::recycle(&mut spare);
        ev
    }

    /// Assembles the event and leaves the record in `spare`, so a batch
    /// can return its records to the pool at once.
    #[allow(clippy::vec_box)] // the records go back to the pool in their boxes
    pub(crate) fn assemble(self, spare: &mut Vec<Box<Record>>) -> AuditEvent {
        let mut record = self.0;
        let ev = record.assemble();
        spare.push(record);
        ev
    }
}

impl std::fmt::Debug for CapturedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values are redacted, but only assembly applies the policy to
        // the identity fields: nothing is shown here.
        f.debug_struct("CapturedEvent").finish_non_exhaustive()
    }
}

/// What an exporter did with the events handed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Delivered to the sink (acknowledged by the OTLP receiver, written to
    /// the JSON writer, stored in memory).
    pub exported: u64,
    /// Never queued: the queue was full, or the exporter was shut down.
    pub dropped: u64,
    /// Queued, but delivery failed (after retries).
    pub failed: u64,
    /// In the queue right now.
    pub queued: u64,
}

/// Why an exporter could not be built, flushed or shut down, or why events
/// were not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A setting (builder or environment variable) has an unusable value.
    #[error("invalid exporter setting {setting}: {reason}")]
    Config {
        /// The builder method or environment variable.
        setting: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// `opentelemetry-otlp` refused the configuration.
    #[error("could not build the OTLP log exporter")]
    Build {
        /// The builder's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The background export thread could not be started.
    #[error("could not start the {exporter} export thread")]
    Spawn {
        /// Which exporter.
        exporter: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for OTLP/HTTP could not be built.
    #[error("could not build the HTTP client for OTLP/HTTP")]
    HttpClient {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The tokio runtime that drives OTLP export could not be started.
    #[error("could not start the runtime for OTLP export")]
    Runtime {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON-lines file could not be opened.
    #[error("could not open {path} for JSON lines")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An OTLP export request failed (after the exporter's retries).
    #[error("OTLP export of {count} events failed")]
    Otlp {
        /// Events in the failed request.
        count: usize,
        /// The SDK's error (status and message from the receiver).
        #[source]
        source: opentelemetry_sdk::error::OTelSdkError,
    },
    /// Writing JSON lines failed.
    #[error("writing {count} events as JSON lines failed")]
    Write {
        /// Events in the failed batch.
        count: usize,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An event could not be encoded as JSON.
    #[error("encoding an audit event as JSON failed")]
    Encode {
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A [`BatchExporter`]'s function failed a batch.
    #[error("the {exporter} exporter could not deliver a batch of {count} events")]
    Deliver {
        /// Which exporter.
        exporter: &'static str,
        /// Events in the failed batch.
        count: usize,
        /// The function's error.
        #[source]
        source: BatchError,
    },
    /// Shutting down the OTLP exporter failed.
    #[error("shutting down the OTLP exporter failed")]
    Shutdown {
        /// The SDK's error.
        #[source]
        source: opentelemetry_sdk::error::OTelSdkError,
    },
    /// Events were not delivered; `source` is the most recent failure.
    #[error("{count} audit events could not be delivered by the {exporter} exporter")]
    Delivery {
        /// Which exporter.
        exporter: &'static str,
        /// Events that failed since the previous flush or shutdown.
        count: u64,
        /// The most recent failure.
        #[source]
        source: Arc<ExportError>,
    },
    /// A flush or shutdown did not finish in time.
    #[error("{operation} of the {exporter} exporter did not finish within {timeout:?}")]
    Timeout {
        /// `force_flush` or `shutdown`.
        operation: &'static str,
        /// Which exporter.
        exporter: &'static str,
        /// How long it waited.
        timeout: Duration,
    },
    /// The background export thread stopped unexpectedly (it panicked).
    #[error("the {exporter} export thread stopped unexpectedly")]
    WorkerStopped {
        /// Which exporter.
        exporter: &'static str,
    },
}
