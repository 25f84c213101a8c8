//! `otel-audit-collector` (being written).
fn main() {}
