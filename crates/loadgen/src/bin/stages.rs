//! `otel-audit-stages`: the collector's per-event work, stage by stage, on
//! one core, with prost decoding of the same requests as the same-run
//! baseline. See `otel_audit_loadgen::stages`.
//!
//! ```sh
//! cargo build --release -p otel-audit-loadgen
//! target/release/otel-audit-stages --events 200000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use otel_audit_loadgen::{stages, workload};

// The collector's allocator: the stages allocate and free several strings
// per event, and glibc's malloc would make them cost what they do not cost
// in the collector.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
Times the collector's own per-event work on one core, over the requests the load generator \
sends (inference audit events as the otel-audit SDK emits them, 15 attributes, about 650 bytes \
per record), with the collector's library code and its allocator:

  convert    OTLP protobuf bytes to audit events (the gRPC receiver's wire reader)
  + policy   the embedded default's server-side policy (HMAC of content)
  + chain    validation, canonical encoding and SHA-256 chaining
  + encode   Parquet, a chunk at a time, as the sink does

Each stage includes those before it; its own cost is the increment. Rounds alternate with prost \
decoding of the same requests (the baseline of the collector's target), and every figure is its \
fastest round (other work on a shared machine only slows a round down), also given as a ratio to prost decode. HTTP/2, the WAL's write and fsync \
and the hand-over between threads are not in it: `otel-audit-loadgen --spawn` measures those.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(version, about = "Times the collector's per-event stages on one core", long_about = LONG_ABOUT)]
struct Args {
    /// Events in the workload.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    events: u64,
    /// Events per request.
    #[arg(long, value_name = "B", default_value_t = 512)]
    batch: usize,
    /// Tenants; request i belongs to tenant `loadgen-<i mod T>`.
    #[arg(long, value_name = "T", default_value_t = 1)]
    tenants: usize,
    /// Rounds (each times prost decode and every stage).
    #[arg(long, value_name = "R", default_value_t = 5)]
    rounds: usize,
    /// CPU seconds each timing runs at least (whole passes over the requests).
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    min_cpu_secs: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otel-audit-stages: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.events == 0 || args.batch == 0 || args.tenants == 0 || args.rounds == 0 {
        anyhow::bail!("--events, --batch, --tenants and --rounds must be at least 1");
    }
    if !(args.min_cpu_secs.is_finite() && args.min_cpu_secs >= 0.0) {
        anyhow::bail!("--min-cpu-secs must be a number of seconds, 0 or more");
    }
    eprintln!(
        "building {} events in requests of {}...",
        args.events, args.batch
    );
    let w = workload::build(args.events, args.batch, args.tenants, 0x5eed);
    eprintln!("timing on one core ({} rounds)...", args.rounds);
    let r = stages::profile(
        &w.requests,
        args.rounds,
        Duration::from_secs_f64(args.min_cpu_secs),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} events in {} requests ({} attributes, {:.0} B per record); fastest of {} rounds",
        w.events,
        w.requests.len(),
        w.attributes_per_record,
        w.record_bytes,
        r.rounds
    );
    println!(
        "prost decode    {:>9.0} records/s per core  {:>6.2} us/event",
        r.prost_records_per_cpu_second,
        1e6 / r.prost_records_per_cpu_second
    );
    for s in &r.stages {
        println!(
            "{:<15} {:>9.0} events/s per core  {:>6.2} us/event  (stage {:>5.2} us)  {:.3} x prost",
            s.stage,
            s.events_per_cpu_second,
            s.micros_per_event,
            s.increment_micros,
            s.ratio_to_prost
        );
    }
    Ok(())
}
