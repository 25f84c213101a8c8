//! The OTLP receivers (being written).
