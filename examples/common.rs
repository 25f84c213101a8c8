// Shared by the examples: where events go, and a summary at the end.
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set (e.g. a running otel-audit collector on
// http://127.0.0.1:4317), events go there over OTLP; otherwise to a JSON-lines
// file under target/audit-examples/.

use std::path::PathBuf;
use std::sync::Arc;

use otel_audit::AuditLayer;
use otel_audit::export::{AuditExporter, JsonLinesExporter, OtlpExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

pub struct Setup {
    pub exporter: Arc<dyn AuditExporter>,
    pub destination: String,
    pub file: Option<PathBuf>,
}

/// Installs registry + AuditLayer + a stderr log for the example `name`.
pub fn install(name: &str, service: &str) -> Setup {
    let (exporter, destination, file): (Arc<dyn AuditExporter>, String, Option<PathBuf>) =
        match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Ok(endpoint) => (
                Arc::new(OtlpExporter::builder().build().expect("OTLP exporter")),
                format!("OTLP {endpoint}"),
                None,
            ),
            Err(_) => {
                let dir = PathBuf::from("target/audit-examples");
                std::fs::create_dir_all(&dir).expect("create target/audit-examples");
                let path = dir.join(format!("{name}.jsonl"));
                // One run per file, so the summary counts this run only.
                let _ = std::fs::remove_file(&path);
                (
                    Arc::new(JsonLinesExporter::file(&path).expect("open the JSON-lines file")),
                    format!("JSON lines {}", path.display()),
                    Some(path),
                )
            }
        };
    let layer = AuditLayer::builder()
        .service_name(service)
        .service_version(env!("CARGO_PKG_VERSION"))
        .environment("example")
        .tenant("acme")
        // A fixed demo key so digests can be recomputed; use a secret in production.
        .hmac_key("demo-hmac-2026", *b"demo-key-demo-key-demo-key-demo!")
        .encryption_key("demo-aes-2026", *b"demo-aes-demo-aes-demo-aes-demo!")
        .shared_exporter(exporter.clone())
        .build()
        .expect("audit layer");
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::INFO),
    );
    tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    Setup {
        exporter,
        destination,
        file,
    }
}

impl Setup {
    /// Flushes, then prints where the events went and a line per event.
    pub fn finish(self) {
        self.exporter.shutdown().expect("flush audit events");
        let stats = self.exporter.stats();
        println!(
            "{} audit events exported to {} ({} dropped, {} failed)",
            stats.exported, self.destination, stats.dropped, stats.failed
        );
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(&path).expect("read back the events");
            for line in text.lines() {
                let e: otel_audit::AuditEvent = serde_json::from_str(line).expect("an audit event");
                println!(
                    "  {:<11} {:<26} {:<9} actor={:<12} target={}",
                    e.category.as_str(),
                    e.action,
                    e.outcome.as_str(),
                    e.actor.id.as_deref().unwrap_or("-"),
                    e.target.id.as_deref().unwrap_or("-"),
                );
            }
        }
    }
}
