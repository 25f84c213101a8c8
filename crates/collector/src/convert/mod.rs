//! From OTLP requests to audit events.
//!
//! Log records written by otel-audit's layer (docs/OTLP.md) map back exactly;
//! spans and log records from other SDKs that carry OpenTelemetry GenAI
//! attributes become inference or tool events; everything else is
//! "unmapped" and handled per `receivers.unmapped`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otel_audit_event::AuditEvent;

use crate::config::Unmapped;
use crate::ingest::{Principal, Rejection};

/// How requests are converted.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Tenant of events whose payload names none, when no authenticated
    /// tenant applies.
    pub default_tenant: String,
    /// What happens to records that are not audit data.
    pub unmapped: Unmapped,
}

/// The events of one request, and what could not be converted.
#[derive(Debug, Default)]
pub struct Converted {
    /// Events with their record index in the request.
    pub events: Vec<(usize, AuditEvent)>,
    /// Records rejected (mapping errors, tenant mismatch, unmapped with
    /// `reject`).
    pub rejected: Vec<Rejection>,
    /// Records dropped as unmapped (`drop`).
    pub unmapped: usize,
    /// Records in the request.
    pub records: usize,
}

/// Converts an OTLP logs request.
pub fn logs(
    _request: &ExportLogsServiceRequest,
    _principal: &Principal,
    _options: &ConvertOptions,
) -> Converted {
    unimplemented!("being written")
}

/// Converts an OTLP traces request.
pub fn traces(
    _request: &ExportTraceServiceRequest,
    _principal: &Principal,
    _options: &ConvertOptions,
) -> Converted {
    unimplemented!("being written")
}
