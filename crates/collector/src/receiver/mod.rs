//! The OTLP receivers: OTLP/gRPC (`LogsService/Export`,
//! `TraceService/Export`) and OTLP/HTTP (`POST /v1/logs`, `POST /v1/traces`,
//! protobuf or JSON, optionally gzip), each on its own listener, plain TCP or
//! TLS (mutual TLS when a client CA is configured).
//!
//! Every request goes the same way, whatever the transport:
//! authenticate (bearer token → [`Principal`]) → bound and decode the body →
//! [`convert`] its records to audit events → hand them to the
//! [`Ingest`] → answer. The answer comes only after `Ingest::ingest`
//! returned, that is once the accepted events are durable. Records the
//! conversion or the pipeline rejected are reported as an OTLP partial
//! success (they are not retryable); a request refused as a whole gets the
//! status the OTLP specification prescribes (see [`serve_grpc`] and
//! [`serve_http`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::auth::Authenticator;
use crate::convert::{self, ConvertOptions, Converted};
use crate::ingest::{Ingest, IngestAck, IngestError, Principal, Rejection};
use crate::metrics::Metrics;

mod grpc;
mod http;
mod tls;

pub use grpc::serve_grpc;
pub use http::serve_http;

/// What the receivers share: where events go, who may send them, and the
/// counters they update.
pub struct ReceiverContext<I: Ingest> {
    /// Where converted events are delivered (the pipeline).
    pub ingest: Arc<I>,
    /// Checks the bearer token of each request.
    pub auth: Authenticator,
    /// The collector's counters.
    pub metrics: Arc<Metrics>,
    /// How OTLP records become audit events.
    pub convert: ConvertOptions,
}

impl<I: Ingest> std::fmt::Debug for ReceiverContext<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverContext")
            .field("auth", &self.auth)
            .field("convert", &self.convert)
            .finish_non_exhaustive()
    }
}

/// Why a receiver could not start or stopped with an error. Setup errors
/// name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// A TLS file could not be read.
    #[error("cannot read the TLS file {}: {source}", file.display())]
    TlsRead {
        /// The file (`cert_file`, `key_file` or `client_ca_file`).
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TLS file was read but does not hold what it should.
    #[error("invalid TLS file {}: {reason}", file.display())]
    TlsInvalid {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key were read but rustls refused them (for
    /// example: the key does not belong to the certificate).
    #[error(
        "cannot use the TLS certificate {} with the key {}: {source}",
        cert_file.display(),
        key_file.display()
    )]
    TlsConfig {
        /// `cert_file`.
        cert_file: PathBuf,
        /// `key_file`.
        key_file: PathBuf,
        /// rustls' reason.
        source: tokio_rustls::rustls::Error,
    },
    /// The listener's local address could not be read.
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("the OTLP/gRPC receiver failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("the OTLP/HTTP receiver failed: {0}")]
    Http(#[source] std::io::Error),
}

/// The largest request body (after decompression) an endpoint accepts, as a
/// `usize`.
fn message_limit(endpoint: &crate::config::Endpoint) -> usize {
    usize::try_from(endpoint.max_message_bytes).unwrap_or(usize::MAX)
}

/// Sets up a receiver's connections (TLS when the endpoint has it, offering
/// `alpn`) and logs where it listens; returns them with the message limit.
fn listen(
    listener: tokio::net::TcpListener,
    endpoint: &crate::config::Endpoint,
    alpn: &[&[u8]],
    name: &'static str,
) -> Result<(tls::Incoming, usize), ReceiveError> {
    let tls = endpoint
        .tls
        .as_ref()
        .map(|t| tls::server_config(t, alpn))
        .transpose()?;
    let with_tls = tls.is_some();
    let incoming = tls::Incoming::start(listener, tls, name)?;
    let limit = message_limit(endpoint);
    tracing::info!(
        address = %incoming.local(),
        tls = with_tls,
        max_message_bytes = limit,
        "OTLP/{} receiver listening",
        if name == "grpc" { "gRPC" } else { "HTTP" }
    );
    Ok((incoming, limit))
}

/// One OTLP signal: its request and response types and how its records are
/// counted and converted. Lets the transports share one code path.
trait Signal: Send + Sync + 'static {
    /// `logs` / `traces`: the metrics label.
    const NAME: &'static str;
    /// What the records are called in messages.
    const RECORDS: &'static str;
    /// `Export*ServiceRequest`.
    type Request: prost::Message + Default + serde::de::DeserializeOwned + Send + 'static;
    /// What a transport hands to [`export`]: the decoded request, or for
    /// logs possibly the protobuf bytes, decoded while converting.
    type Input: From<Self::Request> + Send + 'static;
    /// `Export*ServiceResponse`.
    type Response: prost::Message + serde::Serialize + Send + 'static;

    /// The input for a protobuf body: for logs the bytes themselves, for
    /// traces the decoded request.
    fn wire(body: bytes::Bytes) -> Result<Self::Input, prost::DecodeError>;
    /// Maps the records to audit events; `Err` (the decoding error) when
    /// the input is undecodable protobuf bytes.
    fn convert(
        input: Self::Input,
        principal: &Principal,
        options: &ConvertOptions,
    ) -> Result<Converted, prost::DecodeError>;
    /// The answer, with a partial success when records were rejected.
    fn response(partial: Option<PartialSuccess>) -> Self::Response;
}

/// An OTLP logs request as a transport hands it over.
#[derive(Debug)]
enum LogsInput {
    /// Decoded already (OTLP/JSON).
    Decoded(ExportLogsServiceRequest),
    /// Protobuf bytes: converted in place when every record is an
    /// otel-audit record ([`convert::logs_from_wire`]), else decoded with
    /// prost first. Either way the events are the same.
    Wire(bytes::Bytes),
}

impl From<ExportLogsServiceRequest> for LogsInput {
    fn from(request: ExportLogsServiceRequest) -> Self {
        LogsInput::Decoded(request)
    }
}

/// OTLP logs.
struct Logs;

impl Signal for Logs {
    const NAME: &'static str = "logs";
    const RECORDS: &'static str = "log records";
    type Request = ExportLogsServiceRequest;
    type Input = LogsInput;
    type Response = ExportLogsServiceResponse;

    fn wire(body: bytes::Bytes) -> Result<LogsInput, prost::DecodeError> {
        Ok(LogsInput::Wire(body))
    }

    fn convert(
        input: LogsInput,
        principal: &Principal,
        options: &ConvertOptions,
    ) -> Result<Converted, prost::DecodeError> {
        let request = match input {
            LogsInput::Decoded(request) => request,
            LogsInput::Wire(bytes) => {
                if let Some(converted) = convert::logs_from_wire(&bytes, principal, options) {
                    return Ok(converted);
                }
                <ExportLogsServiceRequest as prost::Message>::decode(bytes)?
            }
        };
        Ok(convert::logs(request, principal, options))
    }

    fn response(partial: Option<PartialSuccess>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: partial.map(|p| ExportLogsPartialSuccess {
                rejected_log_records: p.rejected,
                error_message: p.message,
            }),
        }
    }
}

/// OTLP traces.
struct Traces;

impl Signal for Traces {
    const NAME: &'static str = "traces";
    const RECORDS: &'static str = "spans";
    type Request = ExportTraceServiceRequest;
    type Input = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;

    fn wire(body: bytes::Bytes) -> Result<Self::Input, prost::DecodeError> {
        <ExportTraceServiceRequest as prost::Message>::decode(body)
    }

    fn convert(
        request: Self::Input,
        principal: &Principal,
        options: &ConvertOptions,
    ) -> Result<Converted, prost::DecodeError> {
        Ok(convert::traces(request, principal, options))
    }

    fn response(partial: Option<PartialSuccess>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: partial.map(|p| ExportTracePartialSuccess {
                rejected_spans: p.rejected,
                error_message: p.message,
            }),
        }
    }
}

/// The rejected part of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartialSuccess {
    /// Records not accepted.
    rejected: i64,
    /// Counts per reason and the first few rejections.
    message: String,
}

/// Why a decoded request was refused as a whole.
#[derive(Debug)]
enum Failure {
    /// The pipeline refused it.
    Ingest(IngestError),
    /// Its protobuf bytes could not be decoded (found while converting
    /// them, see [`LogsInput::Wire`]).
    Decode(prost::DecodeError),
    /// Converting or ingesting panicked: a bug, reported as an internal
    /// error so one bad request cannot take the receiver down.
    Panicked,
}

impl Failure {
    /// The `status` label of `otel_audit_requests_total`.
    fn label(&self) -> &'static str {
        match self {
            Failure::Ingest(IngestError::Backpressure { .. }) => "backpressure",
            Failure::Ingest(IngestError::Unavailable { .. }) => "unavailable",
            Failure::Decode(_) => "bad_request",
            _ => "internal",
        }
    }

    /// What the client is told.
    fn message(&self) -> String {
        match self {
            Failure::Ingest(e) => e.to_string(),
            Failure::Decode(e) => format!("invalid protobuf: {e}"),
            Failure::Panicked => PANIC_MESSAGE.to_owned(),
        }
    }
}

const PANIC_MESSAGE: &str = "the collector failed while handling the request (a bug: see its logs); \
     nothing of the request is acknowledged";

/// How many rejections the partial-success message lists one by one.
const LISTED_REJECTIONS: usize = 5;
/// The longest rejection message quoted in a partial success, in bytes.
const MAX_QUOTED_MESSAGE: usize = 200;

/// Converts a decoded request, hands it to the ingest and updates the
/// record counters. `Ok(None)` is a full success.
async fn export<I: Ingest, S: Signal>(
    ctx: &ReceiverContext<I>,
    principal: &Principal,
    input: S::Input,
) -> Result<Option<PartialSuccess>, Failure> {
    let metrics = &ctx.metrics;
    let started = std::time::Instant::now();
    let convert = || S::convert(input, principal, &ctx.convert);
    let converted = match std::panic::catch_unwind(AssertUnwindSafe(convert)) {
        Ok(Ok(converted)) => converted,
        Ok(Err(e)) => return Err(Failure::Decode(e)),
        Err(_) => {
            // As below: the panic hook printed the message.
            tracing::error!(
                signal = S::NAME,
                "converting an OTLP request panicked; answered INTERNAL"
            );
            return Err(Failure::Panicked);
        }
    };
    let records = converted.records;
    metrics
        .records_received
        .add(&[("signal", S::NAME)], records as u64);
    if records == 0 {
        // Nothing to store: some SDKs send empty exports, and they must not
        // wait for (or be refused by) the pipeline.
        return Ok(None);
    }
    let work = async move {
        metrics
            .records_unmapped
            .add(&[("signal", S::NAME)], converted.unmapped as u64);
        if converted.events.is_empty() && converted.rejected.is_empty() {
            return Ok(IngestAck::default());
        }
        ctx.ingest
            .ingest(principal, converted.events, converted.rejected)
            .await
    };
    let outcome = AssertUnwindSafe(work).catch_unwind().await;
    metrics.request_seconds.observe(started.elapsed());
    let ack = match outcome {
        Ok(Ok(ack)) => ack,
        Ok(Err(e)) => {
            match &e {
                // Counted by the ingest, which knows which limit was hit
                // (a bounded label, unlike the message).
                IngestError::Backpressure { .. } => {}
                IngestError::Unavailable { .. } => {
                    metrics.backpressure.add(&[("reason", "unavailable")], 1);
                }
                _ => tracing::error!(
                    signal = S::NAME,
                    error = %e,
                    "the pipeline could not store an OTLP request"
                ),
            }
            return Err(Failure::Ingest(e));
        }
        Err(_) => {
            // The panic message itself was printed by the panic hook; it is
            // not repeated here because it could quote record content.
            tracing::error!(
                signal = S::NAME,
                records,
                "ingesting an OTLP request panicked; answered INTERNAL"
            );
            return Err(Failure::Panicked);
        }
    };
    if ack.rejected.is_empty() {
        return Ok(None);
    }
    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in &ack.rejected {
        *by_reason.entry(r.reason).or_default() += 1;
    }
    for (reason, n) in by_reason {
        metrics.records_rejected.add(&[("reason", reason)], n);
    }
    Ok(Some(PartialSuccess {
        rejected: i64::try_from(ack.rejected.len()).unwrap_or(i64::MAX),
        message: summarize(&ack.rejected, records, S::RECORDS),
    }))
}

/// The partial-success message: how many of how many were rejected, the
/// count per reason, and the first few rejections with their record index,
/// e.g. `2 of 5 spans rejected (mapping: 1, validation: 1): #0 mapping: ...;
/// #3 validation: ...`.
fn summarize(rejected: &[Rejection], records: usize, what: &str) -> String {
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rejected {
        *by_reason.entry(r.reason).or_default() += 1;
    }
    let mut out = format!("{} of {records} {what} rejected (", rejected.len());
    for (i, (reason, n)) in by_reason.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{reason}: {n}");
    }
    out.push_str("): ");
    for (i, r) in rejected.iter().take(LISTED_REJECTIONS).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(
            out,
            "#{} {}: {}",
            r.index,
            r.reason,
            truncate(&r.message, MAX_QUOTED_MESSAGE)
        );
    }
    if rejected.len() > LISTED_REJECTIONS {
        let _ = write!(out, "; and {} more", rejected.len() - LISTED_REJECTIONS);
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary, with `...`
/// when cut.
fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end]).into()
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (0 would tell
/// clients to hammer the collector).
fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(index: usize, reason: &'static str, message: &str) -> Rejection {
        Rejection {
            index,
            reason,
            message: message.into(),
        }
    }

    #[test]
    fn summary_counts_reasons_and_lists_the_first_rejections() {
        let rejected: Vec<Rejection> = (0..7)
            .map(|i| {
                let reason = if i % 2 == 0 { "validation" } else { "mapping" };
                rejection(i * 2, reason, &format!("problem {i}"))
            })
            .collect();
        let s = summarize(&rejected, 20, "spans");
        assert!(
            s.starts_with("7 of 20 spans rejected (mapping: 3, validation: 4): "),
            "{s}"
        );
        assert!(
            s.contains("#0 validation: problem 0; #2 mapping: problem 1"),
            "{s}"
        );
        assert!(s.contains("#8 validation: problem 4"), "{s}");
        assert!(!s.contains("problem 5"), "{s}");
        assert!(s.ends_with("; and 2 more"), "{s}");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(300);
        let s = summarize(&[rejection(1, "mapping", &long)], 1, "log records");
        assert!(s.len() < 300, "{}", s.len());
        assert!(s.ends_with("..."), "{s}");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
