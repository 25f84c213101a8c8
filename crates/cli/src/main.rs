//! `otel-audit`: generate synthetic stores and verify the integrity of stores.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use clap::{Args, Parser, Subcommand};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use otel_audit_cli::synth::{SynthSpec, generate};
use otel_audit_storage::{
    Progress, Store, StoreOptions, TimeRange, VerifyOptions, VerifyReport, WriteOutcome,
    WriterOptions, split_runs, verify, write_file,
};

/// Exit code: the store is intact / the command succeeded.
const EXIT_OK: u8 = 0;
/// Exit code: integrity problems were found.
const EXIT_PROBLEMS: u8 = 1;
/// Exit code: usage, configuration or I/O error.
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "otel-audit",
    version,
    about = "Tamper-evident audit trails for AI systems: generate, verify",
    long_about = "Tamper-evident audit trails for AI systems.\n\n\
        Stores are hive-partitioned Parquet (tenant=/date=/hour=) on local disk or S3; \
        every row is hash-chained. Store URLs: a local path, file:///abs/path, \
        s3://bucket/prefix (credentials from AWS_* variables; \
        ?endpoint=http://host:port&allow_http=true for S3-compatible servers), memory://.\n\n\
        Exit codes: 0 success (intact), 1 integrity problems found, 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a realistic synthetic store through the real writer.
    #[command(after_help = "Example:\n  \
        otel-audit generate --store ./demo-store --events 100000 --tenants 3 --hours 48\n  \
        otel-audit verify ./demo-store")]
    Generate(GenerateArgs),
    /// Prove that nothing in a store was altered, removed, inserted or reordered.
    #[command(
        after_help = "Recomputes every row hash, checks each row's link to the one before \
        and seq continuity within and across the files of every chain, and each file's footer \
        against its rows. Problems are listed with file, row, seq and kind: modified_row, \
        missing_rows, inserted_row, reordered_rows, broken_link, bad_footer, missing_file, \
        duplicate_file, misplaced_file, unreadable_file, unexpected_object.\n\n\
        Examples:\n  \
        otel-audit verify ./audit-data\n  \
        otel-audit verify s3://audit-bucket/prod --from 2026-01-05 --to 2026-01-06T12:00:00Z\n  \
        otel-audit verify ./audit-data --json > report.json\n\n\
        Exit codes: 0 intact, 1 integrity problems found, 2 usage or I/O error."
    )]
    Verify(VerifyArgs),
}

#[derive(Args)]
struct S3Flags {
    /// S3 endpoint for S3-compatible servers (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (also AWS_REGION).
    #[arg(long, value_name = "REGION", global = true)]
    s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints (local test servers only).
    #[arg(long, global = true)]
    allow_http: bool,
}

impl S3Flags {
    fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.allow_http.then_some(true),
            ..StoreOptions::default()
        }
    }
}

#[derive(Args)]
struct GenerateArgs {
    /// Where to write: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
    /// How many events.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// How many tenants.
    #[arg(long, default_value_t = 2)]
    tenants: u32,
    /// Chains per tenant (one per simulated collector instance).
    #[arg(long, default_value_t = 1)]
    chains: u32,
    /// Receive time of the first event's hour (RFC 3339 or YYYY-MM-DD); default: H hours before now.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Hours the events are spread over.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Random seed: the same seed and arguments give the same store.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most rows in one file.
    #[arg(long, default_value_t = 100_000)]
    max_file_rows: usize,
    #[command(flatten)]
    s3: S3Flags,
}

#[derive(Args)]
struct VerifyArgs {
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(value_name = "URL")]
    store: String,
    /// Only partitions from this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only partitions before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otel-audit: error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Generate(a) => cmd_generate(a).await,
            Command::Verify(a) => cmd_verify(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("otel-audit: error: {}", one_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The error and those causes its message does not already include, on one
/// line: store errors repeat their sources and carry multi-line XML bodies.
fn one_line(e: &anyhow::Error) -> String {
    let mut kept: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !kept.iter().any(|k| k.contains(&text)) {
            kept.push(text);
        }
    }
    let mut msg = kept.join(": ");
    const MAX: usize = 600;
    if msg.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| msg.is_char_boundary(i))
            .unwrap_or(0);
        msg.truncate(cut);
        msg.push_str(" ...");
    }
    msg
}

/// Parses RFC 3339, `YYYY-MM-DDTHH:MM:SS` (UTC) or `YYYY-MM-DD` (midnight UTC).
fn parse_time(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")));
    }
    bail!("{flag} {s:?} is not a time: use RFC 3339 (2026-01-05T10:00:00Z) or a date (2026-01-05)")
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} files {{msg}} ({{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

async fn cmd_generate(a: GenerateArgs) -> anyhow::Result<u8> {
    if a.events == 0 {
        bail!("--events must be at least 1");
    }
    if a.tenants == 0 || a.chains == 0 || a.hours == 0 {
        bail!("--tenants, --chains and --hours must be at least 1");
    }
    let start = match &a.start {
        Some(s) => parse_time("--start", s)?,
        None => {
            let now = Utc::now() - chrono::Duration::hours(i64::from(a.hours));
            now.with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .expect("valid hour")
        }
    };
    let store = Store::open(&a.store, &a.s3.options())?;
    let spec = SynthSpec {
        events: a.events,
        tenants: a.tenants,
        chains_per_tenant: a.chains,
        start,
        hours: a.hours,
        seed: a.seed,
    };
    let t0 = Instant::now();
    let records = tokio::task::spawn_blocking(move || generate(&spec))
        .await
        .context("generator panicked")??;
    let runs = split_runs(records, a.max_file_rows);
    let pb = progress_bar(runs.len() as u64, "writing");
    let opts = WriterOptions::default();
    let results: Vec<_> = stream::iter(runs)
        .map(|run| {
            let store = &store;
            let opts = &opts;
            let pb = &pb;
            async move {
                let r = write_file(store, run, opts).await;
                pb.inc(1);
                r
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    pb.finish_and_clear();
    let (mut files, mut present, mut bytes) = (0u64, 0u64, 0u64);
    for r in results {
        let (enc, outcome) = r?;
        files += 1;
        bytes += enc.bytes.len() as u64;
        if outcome == WriteOutcome::AlreadyPresent {
            present += 1;
        }
    }
    eprintln!(
        "wrote {} events in {files} files ({}) to {} in {:.1}s{}",
        a.events,
        human_bytes(bytes),
        store.url(),
        t0.elapsed().as_secs_f64(),
        if present > 0 {
            format!("; {present} identical files were already there")
        } else {
            String::new()
        }
    );
    Ok(EXIT_OK)
}

struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn start(&self, files: u64, _bytes: u64) {
        self.0.set_length(files);
    }
    fn file_done(&self, _bytes: u64, _rows: u64) {
        self.0.inc(1);
    }
}

async fn cmd_verify(a: VerifyArgs) -> anyhow::Result<u8> {
    let range = TimeRange {
        from: a
            .from
            .as_deref()
            .map(|s| parse_time("--from", s))
            .transpose()?,
        to: a.to.as_deref().map(|s| parse_time("--to", s)).transpose()?,
    };
    if let (Some(f), Some(t)) = (range.from, range.to)
        && f >= t
    {
        bail!("--from must be before --to");
    }
    let store = Store::open(&a.store, &a.s3.options())?;
    let opts = VerifyOptions {
        range,
        ..VerifyOptions::default()
    };
    let pb = BarProgress(progress_bar(0, "verifying"));
    let t0 = Instant::now();
    let result = verify(&store, &opts, &pb).await;
    pb.0.finish_and_clear();
    let report = result?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            intact: bool,
            seconds: f64,
            #[serde(flatten)]
            report: &'a VerifyReport,
        }
        let out = Out {
            intact: report.is_intact(),
            seconds: secs,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_report(&report, secs);
    }
    Ok(if report.is_intact() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

fn print_report(r: &VerifyReport, secs: f64) {
    for p in &r.problems {
        println!("{p}");
    }
    let summary = format!(
        "{} chains, {} files, {} events verified ({}) in {:.2}s",
        r.chains.len(),
        r.files_verified,
        r.events_verified,
        human_bytes(r.bytes_verified),
        secs
    );
    if r.is_intact() {
        println!("{}: intact: {summary}", r.store);
    } else {
        let mut counts = std::collections::BTreeMap::new();
        for p in &r.problems {
            *counts.entry(p.kind.as_str()).or_insert(0u64) += 1;
        }
        let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "{}: INTEGRITY PROBLEMS: {} found ({}); {summary}",
            r.store,
            r.problems.len(),
            kinds.join(", ")
        );
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
