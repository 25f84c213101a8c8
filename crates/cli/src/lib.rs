//! Library side of the `otel-audit` command: the synthetic workload generator,
//! shared with benchmarks and tests.

pub mod synth;
