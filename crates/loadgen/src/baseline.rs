//! The same-run baseline: how fast one core decodes the very requests the
//! generator sends, with prost, into `ExportLogsServiceRequest`. The
//! collector has to do at least this per event, so "collector events per
//! CPU-second ÷ prost decode records per CPU-second" is a ratio that carries
//! across machines and across noisy runs.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;
use rustix::time::{ClockId, clock_gettime};

use crate::workload::Request;

/// The baseline's result.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Log records decoded per second of this thread's CPU time.
    pub records_per_cpu_second: f64,
    /// Records decoded in total (whole passes over the requests).
    pub records: u64,
    /// CPU time spent.
    pub cpu: Duration,
}

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Decodes every request, pass after pass, until at least `min_cpu` of this
/// thread's CPU time has gone (at least one pass), and returns the rate.
pub fn prost_decode(requests: &[Request], min_cpu: Duration) -> anyhow::Result<Baseline> {
    let start = thread_cpu();
    let mut records = 0u64;
    loop {
        for r in requests {
            let decoded = ExportLogsServiceRequest::decode(r.bytes.clone())?;
            let n: usize = decoded
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum();
            records += n as u64;
            std::hint::black_box(decoded);
        }
        let cpu = thread_cpu().saturating_sub(start);
        if cpu >= min_cpu || requests.is_empty() {
            return Ok(Baseline {
                records_per_cpu_second: records as f64 / cpu.as_secs_f64().max(1e-9),
                records,
                cpu,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_record() {
        let w = crate::workload::build(50, 20, 1, 3);
        let b = prost_decode(&w.requests, Duration::ZERO).unwrap();
        assert_eq!(b.records, 50);
        assert!(b.records_per_cpu_second > 0.0);
    }
}
