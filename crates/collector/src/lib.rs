//! The otel-audit collector: it receives OTLP, applies the server-side
//! redaction policy, chains every event and makes it durable in a
//! write-ahead log before acknowledging, then writes partitioned Parquet.

pub mod auth;
pub mod config;
pub mod convert;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod receiver;
pub mod service;
pub mod sink;
pub mod telemetry;
pub mod wal;
