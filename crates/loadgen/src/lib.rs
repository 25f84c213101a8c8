//! What the load generator (`otel-audit-loadgen`) and the stage profiler
//! (`otel-audit-stages`) share: the workload they send or time, and the
//! same-run baselines of issue 4's references.

pub mod baseline;
pub mod stages;
pub mod workload;
