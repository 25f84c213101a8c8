//! `otel-audit-stages`: the collector's per-event work, stage by stage,
//! timed on one core over the very requests the generator sends, with prost
//! decoding of the same requests as the same-run baseline.
//!
//! The collector's own figure (events per CPU-second under load) mixes its
//! stages with HTTP/2, threads, the WAL's fsyncs and the machine's noise,
//! which moves it by ±20% between runs here. This profile runs the
//! collector's library code (not a copy) in one thread: each stage includes
//! the ones before it, so a change to one stage shows in its increment.
//! Rounds alternate with the baseline, and each figure is its fastest round
//! (see [`profile`]).
//!
//! 1. `convert`: the OTLP bytes to audit events, as the gRPC receiver does
//!    (`convert::logs_from_wire`), events dropped after.
//! 2. `+ policy`: the server-side policy of the embedded default (HMAC of
//!    content), applied to every event.
//! 3. `+ chain`: each event validated, encoded canonically and hashed into
//!    its tenant's chain (`Chain::link_into`), the bytes left where the
//!    WAL would take them.
//! 4. `+ encode`: the rows as Parquet, from their canonical bytes (the
//!    events dropped where they were chained, as the pipeline does), a
//!    chunk of `ENCODER_CHUNK_ROWS` at a time (`FileEncoder`), as the sink
//!    does: files of the default
//!    `storage.max_file_rows`, each given room for about its predecessor's
//!    size.
//!
//! Not in it: HTTP/2 and gRPC framing, the WAL's write and fsync, the
//! hand-over between threads, the store's put.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use otel_audit_collector::config::{Config, Unmapped};
use otel_audit_collector::convert::{ConvertOptions, logs_from_wire};
use otel_audit_collector::ingest::Principal;
use otel_audit_event::Chain;
use otel_audit_event::redact::{Keyring, Keys, Redactor};
use otel_audit_storage::{CanonicalRow, ENCODER_CHUNK_ROWS, FileEncoder, StoredRow, WriterOptions};

use crate::baseline::{prost_decode, thread_cpu};
use crate::workload::Request;

/// How far each pass goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Convert,
    Policy,
    Chain,
    Encode,
}

const STAGES: [(Stage, &str); 4] = [
    (Stage::Convert, "convert"),
    (Stage::Policy, "+ policy"),
    (Stage::Chain, "+ chain"),
    (Stage::Encode, "+ encode"),
];

/// One stage's figure: its fastest round (see [`profile`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageFigure {
    /// The stage (each includes those before it).
    pub stage: &'static str,
    /// Events through this stage per CPU-second of one thread.
    pub events_per_cpu_second: f64,
    /// CPU microseconds per event up to and including this stage.
    pub micros_per_event: f64,
    /// This stage's own part: its microseconds minus the stage before's.
    pub increment_micros: f64,
    /// `events_per_cpu_second` ÷ prost decode's records per CPU-second
    /// (each its fastest round).
    pub ratio_to_prost: f64,
}

/// The whole profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    /// Rounds run (each: prost decode, then every stage).
    pub rounds: usize,
    /// Prost decode's records per CPU-second, its fastest round.
    pub prost_records_per_cpu_second: f64,
    /// The stages, in order.
    pub stages: Vec<StageFigure>,
}

/// Runs `rounds` rounds, each timing prost decode and then every stage for
/// at least `min_cpu` of this thread's CPU time, and keeps each one's
/// fastest round: on a shared machine, other work only ever slows a round
/// down (its caches, its core's clock), so the fastest is the least
/// disturbed, and medians moved by ±20% between runs here.
pub fn profile(
    requests: &[Request],
    rounds: usize,
    min_cpu: Duration,
) -> anyhow::Result<StageReport> {
    let rounds = rounds.max(1);
    let redactor = server_redactor()?;
    let options = ConvertOptions {
        default_tenant: "default".into(),
        unmapped: Unmapped::Drop,
    };
    let mut prost = Vec::new();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    for _ in 0..rounds {
        prost.push(prost_decode(requests, min_cpu)?.records_per_cpu_second);
        for (i, (stage, _)) in STAGES.iter().enumerate() {
            rates[i].push(run(requests, *stage, &redactor, &options, min_cpu)?);
        }
    }
    let prost = best(&prost);
    let mut stages = Vec::new();
    let mut before = 0.0;
    for (i, (_, name)) in STAGES.iter().enumerate() {
        let rate = best(&rates[i]);
        let micros = 1e6 / rate;
        stages.push(StageFigure {
            stage: name,
            events_per_cpu_second: rate,
            micros_per_event: micros,
            increment_micros: micros - before,
            ratio_to_prost: rate / prost,
        });
        before = micros;
    }
    Ok(StageReport {
        rounds,
        prost_records_per_cpu_second: prost,
        stages,
    })
}

/// The embedded default's policy with a fixed HMAC key (the collector
/// generates one at its first start).
fn server_redactor() -> anyhow::Result<Redactor> {
    let policy = Config::default().load_policy()?;
    let keys = Keys {
        hmac: Some(Keyring::hmac("server-stages", [7u8; 32].to_vec())?),
        ..policy.keys.load()?
    };
    Ok(Redactor::new(policy, keys)?)
}

/// Whole passes over the requests up to `stage` until `min_cpu` has gone;
/// events per CPU-second.
fn run(
    requests: &[Request],
    stage: Stage,
    redactor: &Redactor,
    options: &ConvertOptions,
    min_cpu: Duration,
) -> anyhow::Result<f64> {
    let principal = Principal::default();
    let start = thread_cpu();
    let mut events = 0u64;
    // Per tenant, as the sink keeps a file per chain; kept across passes
    // for the next file's size.
    let mut files: HashMap<String, File> = HashMap::new();
    let max_file_rows = Config::default().storage.max_file_rows;
    loop {
        let mut chains: HashMap<String, Chain> = HashMap::new();
        let mut canonical = Vec::new();
        // Once per pass: it decides the partition, and a file holds one.
        let received_at = Utc::now();
        for r in requests {
            let converted = logs_from_wire(&r.bytes, &principal, options)
                .context("the collector's wire reader gave up on a generated request")?;
            anyhow::ensure!(
                converted.rejected.is_empty(),
                "the collector rejected a generated event: {}",
                converted.rejected[0].message
            );
            events += converted.events.len() as u64;
            if stage == Stage::Convert {
                std::hint::black_box(converted);
                continue;
            }
            canonical.clear();
            // Each record's hashes and where its bytes are in `canonical`.
            let mut chained = Vec::new();
            // As the pipeline does: the policy on every event, then each
            // chained where it lies, and all dropped after.
            let mut events = converted.events;
            for (_, event) in &mut events {
                redactor.redact_event(event);
            }
            if stage == Stage::Policy {
                std::hint::black_box(events);
                continue;
            }
            for (_, event) in &events {
                let chain = match chains.get_mut(&event.tenant) {
                    Some(c) => c,
                    None => chains.entry(event.tenant.clone()).or_insert(Chain::new(
                        format!("stages.{}", event.tenant),
                        event.tenant.clone(),
                    )?),
                };
                let start = canonical.len();
                let link = chain.link_into(received_at, event, &mut canonical)?;
                // The sink takes the bytes the WAL wrote.
                chained.push((start..canonical.len(), link.prev_hash, link.hash));
            }
            drop(events);
            if stage != Stage::Encode {
                std::hint::black_box((&canonical, chained));
                continue;
            }
            let shared = Bytes::from(std::mem::take(&mut canonical));
            for (range, prev_hash, hash) in chained {
                let row = CanonicalRow::new(shared.slice(range), prev_hash, hash)?;
                let file = match files.get_mut(row.tenant()) {
                    Some(f) => f,
                    None => files.entry(row.tenant().to_owned()).or_default(),
                };
                file.pending.push(row);
                if file.pending.len() == ENCODER_CHUNK_ROWS {
                    file.push(max_file_rows)?;
                }
            }
        }
        for file in files.values_mut() {
            file.push(max_file_rows)?;
            file.finish()?;
        }
        let cpu = thread_cpu().saturating_sub(start);
        if cpu >= min_cpu || requests.is_empty() {
            return Ok(events as f64 / cpu.as_secs_f64().max(1e-9));
        }
    }
}

/// A chain's file being encoded, rolled as the sink rolls its files.
#[derive(Default)]
struct File {
    /// Rows waiting for a full chunk.
    pending: Vec<CanonicalRow>,
    encoder: Option<FileEncoder>,
    rows: usize,
    last_bytes: usize,
}

impl File {
    /// Encodes the pending records; closes the file at `max_rows`.
    fn push(&mut self, max_rows: usize) -> anyhow::Result<()> {
        let pending = &mut self.pending;
        let Some(first) = pending.first() else {
            return Ok(());
        };
        let e = match &mut self.encoder {
            Some(e) => e,
            None => {
                let room = self.last_bytes / 8 * 9;
                self.encoder.insert(FileEncoder::with_capacity(
                    first,
                    &WriterOptions::default(),
                    room,
                )?)
            }
        };
        e.push(pending)?;
        self.rows += pending.len();
        pending.clear();
        if self.rows >= max_rows {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(e) = self.encoder.take() {
            let encoded = e.finish()?;
            self.last_bytes = encoded.bytes.len();
            std::hint::black_box(encoded);
        }
        self.rows = 0;
        Ok(())
    }
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage runs over the workload without an error: the wire reader
    /// rejects no generated event, and the chain and the encoder take every
    /// record (each stops the profile otherwise). No timing is compared.
    #[test]
    fn every_stage_runs_over_the_workload() {
        let w = crate::workload::build(2_000, 500, 2, 1);
        let report = profile(&w.requests, 1, Duration::ZERO).unwrap();
        assert_eq!(report.stages.len(), 4);
        assert!(report.prost_records_per_cpu_second > 0.0);
        for s in &report.stages {
            assert!(s.events_per_cpu_second > 0.0, "{s:?}");
        }
    }
}
