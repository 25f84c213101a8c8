//! The otel-audit collector: it receives OTLP, applies the server-side
//! redaction policy, chains every event and makes it durable in a
//! write-ahead log before acknowledging, then writes partitioned Parquet.
//!
//! So far this crate holds the [write-ahead log](wal).

pub mod wal;
