//! One-call set-up for a new application.

use std::sync::Arc;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

use crate::export::{AuditExporter, ExportError, JsonLinesExporter, OtlpExporter};
use crate::layer::{AuditLayer, LayerError};

/// Why [`init`] could not set up auditing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The exporter could not be built (bad endpoint, bad variable, ...).
    #[error("audit exporter")]
    Exporter(#[from] ExportError),
    /// The layer could not be built (bad key).
    #[error("audit layer")]
    Layer(#[from] LayerError),
    /// The redaction policy file could not be loaded.
    #[error("redaction policy {path}")]
    Policy {
        /// `OTEL_AUDIT_POLICY`.
        path: String,
        /// Why.
        #[source]
        source: otel_audit_event::redact::PolicyError,
    },
    /// `OTEL_AUDIT_EXPORTER` names no exporter.
    #[error("OTEL_AUDIT_EXPORTER={value:?}: expected otlp, stdout or file:<path>")]
    UnknownExporter {
        /// The value given.
        value: String,
    },
    /// A global subscriber is already installed: add [`AuditLayer`] to it instead.
    #[error("a global tracing subscriber is already set; add otel_audit::AuditLayer to it instead")]
    SubscriberSet(#[from] tracing::subscriber::SetGlobalDefaultError),
}

/// Flushes and stops the exporter when dropped (end of `main`).
#[must_use = "dropping the guard at once shuts the exporter down"]
pub struct AuditGuard {
    exporter: Arc<dyn AuditExporter>,
}

impl AuditGuard {
    /// The exporter, e.g. to read its counters.
    pub fn exporter(&self) -> &Arc<dyn AuditExporter> {
        &self.exporter
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if let Err(e) = self.exporter.shutdown() {
            eprintln!("otel-audit: shutting the exporter down: {}", one_line(&e));
        }
        let stats = self.exporter.stats();
        if stats.dropped > 0 || stats.failed > 0 {
            eprintln!(
                "otel-audit: {} audit events exported, {} dropped, {} failed",
                stats.exported, stats.dropped, stats.failed
            );
        }
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Sets up auditing for a new application in one call: an [`AuditLayer`]
/// and a human-readable log (stderr, `INFO` and above) as the global
/// subscriber. Keep the guard alive until the end of `main`; dropping it
/// flushes every queued event.
///
/// Configured by the standard variables and a few of ours:
///
/// | variable | meaning |
/// |---|---|
/// | `OTEL_AUDIT_EXPORTER` | `otlp` (default), `stdout` (JSON lines) or `file:<path>` (JSON lines, appended) |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`, ... | the OTLP exporter (default `http://localhost:4317`, gRPC) |
/// | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | `service.name`, version, environment |
/// | `OTEL_AUDIT_TENANT` | the tenant (default `default`) |
/// | `OTEL_AUDIT_POLICY` | a redaction policy YAML file (docs/REDACTION.md), with its keys |
/// | `OTEL_AUDIT_HMAC_KEY`, `OTEL_AUDIT_HMAC_KEY_ID` | HMAC key (hex) for the default policy |
///
/// Applications that already have a subscriber add [`AuditLayer`] to it.
///
/// ```no_run
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _audit = otel_audit::init()?;
///     // ... #[audit] functions record from here on
///     Ok(())
/// }
/// ```
pub fn init() -> Result<AuditGuard, InitError> {
    let exporter: Arc<dyn AuditExporter> = match std::env::var("OTEL_AUDIT_EXPORTER")
        .unwrap_or_default()
        .trim()
    {
        "" | "otlp" => Arc::new(OtlpExporter::builder().build()?),
        "stdout" => Arc::new(JsonLinesExporter::stdout()?),
        other => match other.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Arc::new(JsonLinesExporter::file(path)?),
            _ => {
                return Err(InitError::UnknownExporter {
                    value: other.to_owned(),
                });
            }
        },
    };
    let mut builder = AuditLayer::builder().shared_exporter(exporter.clone());
    if let Ok(tenant) = std::env::var("OTEL_AUDIT_TENANT") {
        builder = builder.tenant(tenant);
    }
    if let Ok(path) = std::env::var("OTEL_AUDIT_POLICY") {
        let redactor = otel_audit_event::redact::Policy::from_yaml_file(&path)
            .and_then(otel_audit_event::redact::Redactor::from_policy)
            .map_err(|source| InitError::Policy { path, source })?;
        builder = builder.redactor(redactor);
    }
    let layer = builder.build()?;
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::INFO),
    );
    tracing::subscriber::set_global_default(subscriber)?;
    Ok(AuditGuard { exporter })
}
