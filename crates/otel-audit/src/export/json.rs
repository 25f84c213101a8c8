//! JSON lines: one event per line, for local development.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use otel_audit_event::AuditEvent;

use super::ExportError;
use super::queue::{QueueConfig, Queued, Sink, queued_exporter};

/// Writes each event as one line of JSON (the serde form of
/// [`AuditEvent`], which `serde_json::from_str` reads back) to stdout, a file
/// or any writer.
///
/// Writing happens on a background thread behind the same bounded queue as
/// [`OtlpExporter`](super::OtlpExporter); each batch is flushed to the
/// writer, so [`force_flush`](super::AuditExporter::force_flush) returns once every
/// event handed over so far has reached the writer.
pub struct JsonLinesExporter {
    queue: Queued,
}

impl JsonLinesExporter {
    /// Writes to standard output.
    pub fn stdout() -> Result<Self, ExportError> {
        Self::new(std::io::stdout())
    }

    /// Appends to a file, creating it if needed.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ExportError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::new(file)
    }

    /// Writes to `writer` with the default [`QueueConfig`].
    pub fn new<W: Write + Send + 'static>(writer: W) -> Result<Self, ExportError> {
        Self::with_queue(writer, QueueConfig::default())
    }

    /// Writes to `writer` with the given queue settings.
    pub fn with_queue<W: Write + Send + 'static>(
        writer: W,
        config: QueueConfig,
    ) -> Result<Self, ExportError> {
        let queue = Queued::start("JSON lines", config, move || {
            Ok(JsonSink {
                out: BufWriter::new(writer),
            })
        })?;
        Ok(JsonLinesExporter { queue })
    }
}

queued_exporter!(JsonLinesExporter);

struct JsonSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write + 'static> Sink for JsonSink<W> {
    fn write(&mut self, batch: &[AuditEvent]) -> Result<(), ExportError> {
        let mut line = Vec::with_capacity(1024);
        for event in batch {
            line.clear();
            serde_json::to_writer(&mut line, event)
                .map_err(|source| ExportError::Encode { source })?;
            line.push(b'\n');
            self.out
                .write_all(&line)
                .map_err(|source| ExportError::Write {
                    count: batch.len(),
                    source,
                })?;
        }
        self.out.flush().map_err(|source| ExportError::Write {
            count: batch.len(),
            source,
        })
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        self.out
            .flush()
            .map_err(|source| ExportError::Write { count: 0, source })
    }
}
