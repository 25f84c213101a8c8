//! The contract between the receivers and the pipeline.
//!
//! A receiver decodes a request, maps its records to [`AuditEvent`]s
//! ([`crate::convert`]), and hands them to an [`Ingest`] together with the
//! [`Principal`] that sent them. The answer comes only once the accepted
//! events are durable (fsynced in the WAL), so a receiver that answers `OK`
//! after `ingest` returns never acknowledges data that a crash could lose.

use std::future::Future;
use std::time::Duration;

use otel_audit_event::AuditEvent;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// With authentication on: the tenant the bearer token belongs to. Every
    /// event of the request is written to this tenant's chain, and an event
    /// whose payload names another tenant is rejected. `None` when
    /// authentication is off: events keep the tenant their payload names (or
    /// the configured default tenant).
    pub tenant: Option<String>,
    /// The name of the token that authenticated the request (for logs and
    /// metrics; never the token itself).
    pub token_name: Option<String>,
}

/// One record that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The record's index in the request (counting every log record or span,
    /// in request order).
    pub index: usize,
    /// A short, stable reason for metrics (`mapping`, `validation`,
    /// `tenant_mismatch`, `unmapped`, ...).
    pub reason: &'static str,
    /// What was wrong, naming the attribute or field. Never contains event
    /// content.
    pub message: String,
}

/// The answer to an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngestAck {
    /// Events made durable.
    pub accepted: usize,
    /// Events not accepted (a partial success when `accepted > 0`).
    pub rejected: Vec<Rejection>,
}

/// Why a whole request was refused. [`IngestError::retry_after`] tells
/// backpressure (the client should retry) from everything else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The collector is at a limit (WAL size, queue, memory); nothing of the
    /// request was written. gRPC `RESOURCE_EXHAUSTED`, HTTP 429 with
    /// `Retry-After`.
    #[error("the collector is at capacity ({reason}); retry after {retry_after:?}")]
    Backpressure {
        /// Which limit was reached.
        reason: String,
        /// A hint for the client.
        retry_after: Duration,
    },
    /// The collector is shutting down or not ready; nothing was written.
    /// gRPC `UNAVAILABLE`, HTTP 503 with `Retry-After`.
    #[error("the collector is not accepting data: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// A hint for the client.
        retry_after: Duration,
    },
    /// The durable write failed; nothing of the request is acknowledged.
    /// gRPC `INTERNAL`, HTTP 500.
    #[error("the collector could not store the data: {reason}")]
    Internal {
        /// What failed (no event content).
        reason: String,
    },
}

impl IngestError {
    /// When the client should retry, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Backpressure { retry_after, .. }
            | IngestError::Unavailable { retry_after, .. } => Some(*retry_after),
            IngestError::Internal { .. } => None,
        }
    }
}

/// Where receivers deliver events: the pipeline (policy → chain → WAL), or
/// anything else a program embedding the receivers provides.
pub trait Ingest: Send + Sync + 'static {
    /// Makes `events` durable and answers which were accepted. `events`
    /// carry their index in the request, so rejections name it.
    /// `rejected_before` are the records the receiver already rejected
    /// (mapping errors); they are counted and returned with the answer.
    fn ingest(
        &self,
        principal: &Principal,
        events: Vec<(usize, AuditEvent)>,
        rejected_before: Vec<Rejection>,
    ) -> impl Future<Output = Result<IngestAck, IngestError>> + Send;
}
