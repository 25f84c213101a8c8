//! `otel-audit-loadgen`: drives an otel-audit collector with OTLP/gRPC and
//! reports throughput, acknowledgement latency and — when it starts the
//! collector itself (`--spawn`) — the collector's CPU time per event, peak
//! RSS and bytes per stored event.
//!
//! ```text
//! otel-audit-loadgen --spawn target/release/otel-audit-collector --events 1000000 --baseline
//! otel-audit-loadgen --spawn target/release/otel-audit-collector --events 500000 --rate 20000
//! otel-audit-loadgen --endpoint http://127.0.0.1:4317 --events 100000 --json
//! ```

mod client;
mod collector;

use otel_audit_loadgen::{baseline, workload};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Serialize;

const ABOUT: &str = "Load generator for the otel-audit collector: sends OTLP/gRPC log records \
shaped like real GenAI audit events (15 attributes, about 650 bytes each) at a chosen rate or \
flat out, and reports events/s, acknowledgement latency (p50/p90/p99/max) and, with --spawn, the \
collector's CPU-seconds per million events, peak RSS and bytes per stored event.";

const LONG_ABOUT: &str = "Load generator for the otel-audit collector.

Sends OTLP/gRPC LogsService/Export requests holding inference audit events as the otel-audit \
SDK emits them (docs/OTLP.md): tenant, service, actor, GenAI provider, models, token counts, \
conversation, trace and span ids, and the raw prompt as `gen_ai.input.messages`, which the \
collector's server-side policy replaces by an HMAC digest. 15 attributes and about 650 bytes \
per record. All requests are built and protobuf-encoded before the clock starts (about 0.65 KB \
of memory per event), so the generator's own CPU stays small.

An OK answer is the collector's durable acknowledgement (events fsynced in its WAL); latency is \
measured per request from sending (with --rate: from its scheduled time, so a client-side queue \
counts) to that answer, retries included. RESOURCE_EXHAUSTED and UNAVAILABLE are retried after a \
pause (50 ms, doubling up to 2 s, at most 50 attempts); other errors count the request's events \
as failed.

With --spawn the generator starts the collector itself in a temporary directory (store, WAL, \
collector.log; every listener on 127.0.0.1:0), waits for its address file, sends the load, \
reads the collector's CPU time from /proc/<pid>/stat, stops it with SIGTERM, waits for the \
graceful exit (everything acknowledged is then in the store), and reads the store: rows per \
tenant from the Parquet footers, bytes on disk. Collector CPU counts from the start of the load \
to the collector's exit, so it includes writing the Parquet files; peak RSS is the collector's \
VmHWM (/proc/<pid>/status) read up to its exit.

--baseline first times, on one core and over the very same requests, the two references of the \
collector's target (issue 4): prost decoding into ExportLogsServiceRequest, and the naive \
single-thread design (prost decode, canonical JSON of each record, SHA-256 chain, Parquet \
zstd(3) with the JSON as one text column; no policy, no WAL, no server). The collector's \
figure is then also a ratio to each, measured in the same run (the machine may be shared and \
noisy).

The collector's own per-event work, stage by stage on one core without HTTP/2, the WAL or \
threads: otel-audit-stages (same package).

Exit status: 0 when every event was acknowledged (and, with --spawn, stored); 3 when events \
failed or stored rows differ from acknowledged events; 1 on errors.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// OTLP/gRPC endpoint of a running collector. Not used with --spawn.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Start this collector binary (otel-audit-collector) in a temporary
    /// directory, load it, stop it, and report its CPU time, peak RSS and
    /// store size as well.
    #[arg(long, value_name = "COLLECTOR_BINARY")]
    spawn: Option<PathBuf>,
    /// An extra `--set KEY=VALUE` for the spawned collector (repeatable),
    /// e.g. `--set storage.max_file_rows=200000`.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "spawn")]
    set: Vec<String>,
    /// Where the spawned collector's temporary directory is made (default:
    /// the system's temporary directory). Its file system decides what an
    /// fsync costs.
    #[arg(long, value_name = "DIR", requires = "spawn")]
    dir: Option<PathBuf>,
    /// Keep the spawned collector's directory (store, WAL, collector.log)
    /// and print its path.
    #[arg(long, requires = "spawn")]
    keep: bool,
    /// Events to send.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    events: u64,
    /// Events per request (OpenTelemetry SDKs batch 512 by default).
    #[arg(long, value_name = "B", default_value_t = 512)]
    batch: usize,
    /// Requests in flight at once (concurrent gRPC streams).
    #[arg(long, value_name = "C", default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, value_name = "K", default_value_t = 1)]
    connections: usize,
    /// Open-loop pacing: send at this many events per second (requests of
    /// --batch events at even intervals). Without it, send flat out.
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    rate: Option<f64>,
    /// Tenants; request i belongs to tenant `loadgen-<i mod T>`.
    #[arg(long, value_name = "T", default_value_t = 1)]
    tenants: usize,
    /// Also time, on one core, prost decoding of the same requests and the
    /// naive decode → JSON → chain → Parquet design over them (the same-run
    /// baselines), and report the collector's rate as a ratio to each.
    #[arg(long)]
    baseline: bool,
    /// Threads of the generator's runtime.
    #[arg(long, value_name = "N", default_value_t = 1)]
    client_threads: usize,
    /// Deadline of each request attempt, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
    /// How long to wait for the spawned collector's graceful exit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    stop_timeout_secs: u64,
    /// Print the report as one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Everything measured, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    events: u64,
    requests: usize,
    batch: usize,
    concurrency: usize,
    connections: usize,
    tenants: usize,
    rate_target: Option<f64>,
    attributes_per_record: usize,
    record_bytes: f64,
    request_bytes: f64,
    sent: u64,
    accepted: u64,
    rejected: u64,
    failed: u64,
    retries: u64,
    wall_seconds: f64,
    events_per_second: f64,
    latency_ms: Latency,
    client_cpu_seconds: f64,
    errors: BTreeMap<String, ErrorCount>,
    collector: Option<CollectorReport>,
    baseline: Option<BaselineReport>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct ErrorCount {
    count: u64,
    first_message: String,
}

#[derive(Debug, Serialize)]
struct CollectorReport {
    /// From the start of the load to the collector's exit.
    cpu_seconds: f64,
    /// From the start of the load to the last answer.
    cpu_seconds_during_load: f64,
    /// The kernel's part of `cpu_seconds`.
    system_cpu_seconds: f64,
    /// Minor page faults over the collector's life.
    minor_faults: u64,
    cpu_seconds_per_million_events: f64,
    /// Accepted events per collector CPU-second (per core).
    events_per_cpu_second: f64,
    peak_rss_mib: f64,
    vm_hwm_after_load_mib: f64,
    /// Rows of the generator's tenants.
    stored_rows: u64,
    /// Rows of other tenants (the collector's own events).
    other_rows: u64,
    files: usize,
    store_bytes: u64,
    parquet_bytes: u64,
    /// Bytes under the store directory ÷ stored rows.
    bytes_per_stored_event: f64,
    /// Bytes of WAL segments left after the graceful exit (0: drained).
    wal_segment_bytes_left: u64,
    /// The collector's exit code (`None`: killed by a signal).
    exit_code: Option<i32>,
    /// Where the acknowledgement latency goes inside the collector, from
    /// its `/metrics` histograms read after the load: `receive` (headers to
    /// decoded message), `request` (decoded request to answer), `wal_wait`
    /// (its part waiting for the group commit), `wal_sync` (each group
    /// commit's write + fsync).
    server_latency: BTreeMap<String, collector::HistogramSummary>,
    kept_dir: Option<String>,
}

#[derive(Debug, Serialize)]
struct BaselineReport {
    prost_decode_records_per_cpu_second: f64,
    records_decoded: u64,
    cpu_seconds: f64,
    /// Collector events per CPU-second ÷ prost decode records per CPU-second.
    collector_ratio: Option<f64>,
    /// The naive design's events per CPU-second (see `baseline::naive_path`).
    naive_path_events_per_cpu_second: f64,
    /// The naive design's Parquet bytes per event.
    naive_path_bytes_per_event: f64,
    /// Collector events per CPU-second ÷ the naive design's.
    collector_ratio_to_naive_path: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("otel-audit-loadgen: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print_human(&report);
            }
            let lost = report.failed > 0
                || report.accepted + report.rejected != report.sent
                || report
                    .collector
                    .as_ref()
                    .is_some_and(|c| c.stored_rows != report.accepted);
            if lost {
                eprintln!(
                    "otel-audit-loadgen: not every event was acknowledged and stored (see the report)"
                );
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("otel-audit-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    if args.events == 0 || args.batch == 0 || args.concurrency == 0 || args.connections == 0 {
        bail!("--events, --batch, --concurrency and --connections must be at least 1");
    }
    if args.tenants == 0 || args.client_threads == 0 {
        bail!("--tenants and --client-threads must be at least 1");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of events per second");
    }

    eprintln!(
        "building {} events in requests of {}...",
        args.events, args.batch
    );
    let workload = workload::build(args.events, args.batch, args.tenants, 0x5eed);
    let request_bytes = workload
        .requests
        .iter()
        .map(|r| r.bytes.len() as f64)
        .sum::<f64>()
        / workload.requests.len().max(1) as f64;

    let baseline = if args.baseline {
        eprintln!("baseline: prost-decoding the same requests on one core...");
        let prost = baseline::prost_decode(&workload.requests, Duration::from_secs(2))?;
        eprintln!("baseline: the naive decode -> JSON -> chain -> Parquet design on one core...");
        let naive = baseline::naive_path(&workload.requests, Duration::from_secs(2))?;
        Some((prost, naive))
    } else {
        None
    };

    let spawned = match &args.spawn {
        Some(binary) => {
            let s = collector::Spawned::start(binary, args.dir.as_deref(), &args.set)?;
            eprintln!("collector started in {} on {}", s.dir().display(), s.grpc);
            Some(s)
        }
        None => None,
    };
    let endpoint = match &spawned {
        Some(s) => format!("http://{}", s.grpc),
        None => args.endpoint.clone(),
    };

    let runtime = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    let options = client::LoadOptions {
        endpoint,
        concurrency: args.concurrency,
        connections: args.connections,
        rate: args.rate,
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let requests = Arc::new(workload.requests.clone());
    eprintln!(
        "sending {} requests over {} streams{}...",
        requests.len(),
        args.concurrency,
        args.rate
            .map(|r| format!(" at {r} events/s"))
            .unwrap_or_default()
    );
    let collector_cpu_before = spawned.as_ref().map(|s| s.cpu_seconds()).transpose()?;
    let client_cpu_before = collector::process_cpu_seconds("/proc/self/stat")?;
    let load = runtime.block_on(client::run(requests, &options))?;
    let client_cpu = collector::process_cpu_seconds("/proc/self/stat")? - client_cpu_before;
    // Closes the connections (their tasks live in the runtime): a graceful
    // collector shutdown waits for its clients to go.
    drop(runtime);

    let collector_report = match spawned {
        Some(s) => {
            let cpu_after_load = s.cpu_seconds()?;
            let hwm = s.vm_hwm_bytes()?;
            let metrics = s.metrics_text()?;
            let server_latency: BTreeMap<String, collector::HistogramSummary> = [
                ("receive", "otel_audit_grpc_receive_seconds"),
                ("request", "otel_audit_request_duration_seconds"),
                ("wal_wait", "otel_audit_wal_wait_seconds"),
                ("wal_sync", "otel_audit_wal_sync_seconds"),
            ]
            .into_iter()
            .filter_map(|(k, name)| {
                collector::histogram_summary(&metrics, name).map(|h| (k.to_owned(), h))
            })
            .collect();
            eprintln!("stopping the collector (it writes what it acknowledged)...");
            let stopped = s.stop(Duration::from_secs(args.stop_timeout_secs))?;
            let dir = stopped.dir.path().to_owned();
            let scan = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(collector::scan_store(&dir.join("store")))
                .context("reading the store")?;
            let wal_segment_bytes_left = collector::wal_segment_bytes(&dir.join("wal"))?;
            let before = collector_cpu_before.unwrap_or(0.0);
            let cpu = (stopped.cpu_seconds - before).max(0.0);
            let stored_rows: u64 = scan
                .rows_by_tenant
                .iter()
                .filter(|(t, _)| t.starts_with("loadgen-"))
                .map(|(_, n)| n)
                .sum();
            let all_rows: u64 = scan.rows_by_tenant.values().sum();
            let kept_dir = args.keep.then(|| {
                let p = stopped.dir.keep();
                p.display().to_string()
            });
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            Some(CollectorReport {
                cpu_seconds: cpu,
                cpu_seconds_during_load: cpu_after_load - before,
                system_cpu_seconds: stopped.system_cpu_seconds,
                minor_faults: stopped.minor_faults,
                cpu_seconds_per_million_events: cpu / load.accepted.max(1) as f64 * 1e6,
                events_per_cpu_second: load.accepted as f64 / cpu.max(1e-9),
                peak_rss_mib: mib(stopped.peak_rss_bytes),
                vm_hwm_after_load_mib: mib(hwm),
                stored_rows,
                other_rows: all_rows - stored_rows,
                files: scan.files,
                store_bytes: scan.total_bytes,
                parquet_bytes: scan.parquet_bytes,
                bytes_per_stored_event: scan.total_bytes as f64 / stored_rows.max(1) as f64,
                wal_segment_bytes_left,
                exit_code: stopped.status.code(),
                server_latency,
                kept_dir,
            })
        }
        None => None,
    };

    let baseline_report = baseline.map(|(b, naive)| BaselineReport {
        prost_decode_records_per_cpu_second: b.records_per_cpu_second,
        records_decoded: b.records,
        cpu_seconds: b.cpu.as_secs_f64(),
        collector_ratio: collector_report
            .as_ref()
            .map(|c| c.events_per_cpu_second / b.records_per_cpu_second),
        naive_path_events_per_cpu_second: naive.events_per_cpu_second,
        naive_path_bytes_per_event: naive.bytes_per_event,
        collector_ratio_to_naive_path: collector_report
            .as_ref()
            .map(|c| c.events_per_cpu_second / naive.events_per_cpu_second),
    });

    let wall = load.wall.as_secs_f64();
    Ok(Report {
        events: workload.events,
        requests: workload.requests.len(),
        batch: args.batch,
        concurrency: args.concurrency,
        connections: args.connections,
        tenants: args.tenants,
        rate_target: args.rate,
        attributes_per_record: workload.attributes_per_record,
        record_bytes: workload.record_bytes,
        request_bytes,
        sent: load.sent,
        accepted: load.accepted,
        rejected: load.rejected,
        failed: load.failed,
        retries: load.retries,
        wall_seconds: wall,
        events_per_second: load.accepted as f64 / wall.max(1e-9),
        latency_ms: Latency {
            p50: load.latency_ms(0.50),
            p90: load.latency_ms(0.90),
            p99: load.latency_ms(0.99),
            max: load.latency_ms(1.0),
        },
        client_cpu_seconds: client_cpu,
        errors: load
            .errors
            .into_iter()
            .map(|(code, (count, first_message))| {
                (
                    code,
                    ErrorCount {
                        count,
                        first_message,
                    },
                )
            })
            .collect(),
        collector: collector_report,
        baseline: baseline_report,
    })
}

fn print_human(r: &Report) {
    println!(
        "{} events in {} requests of {} ({} attributes, {:.0} B per record, {:.0} KiB per request), \
         {} streams over {} connection(s), {}",
        r.events,
        r.requests,
        r.batch,
        r.attributes_per_record,
        r.record_bytes,
        r.request_bytes / 1024.0,
        r.concurrency,
        r.connections,
        r.rate_target
            .map_or("flat out".to_owned(), |t| format!("paced at {t} events/s"))
    );
    println!(
        "sent {}  accepted {}  rejected {}  failed {}  retries {}",
        r.sent, r.accepted, r.rejected, r.failed, r.retries
    );
    for (code, e) in &r.errors {
        println!("  {code} x{}: {}", e.count, e.first_message);
    }
    println!(
        "throughput      {:.0} events/s over {:.2} s",
        r.events_per_second, r.wall_seconds
    );
    let l = &r.latency_ms;
    println!(
        "ack latency     p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        l.p50, l.p90, l.p99, l.max
    );
    println!("generator CPU   {:.2} s", r.client_cpu_seconds);
    if let Some(c) = &r.collector {
        println!(
            "collector CPU   {:.2} s from load start to exit ({:.2} s during the load): \
             {:.1} CPU-s per million events, {:.0} events/s per core",
            c.cpu_seconds,
            c.cpu_seconds_during_load,
            c.cpu_seconds_per_million_events,
            c.events_per_cpu_second
        );
        println!(
            "collector kernel {:.2} s system CPU over its life, {} minor page faults",
            c.system_cpu_seconds, c.minor_faults
        );
        println!(
            "collector RSS   peak {:.0} MiB (VmHWM after the load {:.0} MiB)",
            c.peak_rss_mib, c.vm_hwm_after_load_mib
        );
        println!(
            "store           {} rows (+{} of the collector's own) in {} files, {} bytes \
             ({} Parquet): {:.1} B per stored event; WAL segments left {} bytes; exit code {}",
            c.stored_rows,
            c.other_rows,
            c.files,
            c.store_bytes,
            c.parquet_bytes,
            c.bytes_per_stored_event,
            c.wal_segment_bytes_left,
            c.exit_code
                .map_or_else(|| "none (signal)".to_owned(), |c| c.to_string())
        );
        for (stage, h) in &c.server_latency {
            println!(
                "in collector    {stage:<9} p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  mean {:.1} ms  ({} observed)",
                h.p50_ms, h.p90_ms, h.p99_ms, h.mean_ms, h.count
            );
        }
        if let Some(d) = &c.kept_dir {
            println!("kept            {d}");
        }
    }
    if let Some(b) = &r.baseline {
        print!(
            "baseline        prost decode {:.0} records/s per core",
            b.prost_decode_records_per_cpu_second
        );
        match b.collector_ratio {
            Some(x) => println!("; collector events per CPU-second = {x:.3} x prost decode"),
            None => println!(),
        }
        print!(
            "baseline        naive decode -> JSON -> chain -> Parquet {:.0} events/s per core \
             ({:.1} B per event)",
            b.naive_path_events_per_cpu_second, b.naive_path_bytes_per_event
        );
        match b.collector_ratio_to_naive_path {
            Some(x) => println!("; collector = {x:.3} x the naive design"),
            None => println!(),
        }
    }
}
