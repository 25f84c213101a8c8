//! `otel-audit`: verify the integrity of stores, prove single events, manage
//! digest keys, back stores up and restore them, report on a period,
//! generate synthetic stores.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use clap::{Args, Parser, Subcommand};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use otel_audit_cli::synth::{SynthSpec, generate};
use otel_audit_storage::digest::{DigestChain, DigestFile, put_digest};
use otel_audit_storage::{
    DigestSigner, ProblemKind, Progress, PublicKeys, Store, StoreOptions, TimeRange, VerifyOptions,
    VerifyReport, WriteOutcome, WriterOptions, split_runs, verify, write_file,
};

mod backup;
mod decrypt;
mod lookup;
mod prove;
mod prune;
mod report;

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
    about = "Tamper-evident audit trails for AI systems: verify, report, list, show, decrypt, prove, keys, backup, restore, generate",
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
        (the format's keys and the column statistics readers prune by) against its rows. Problems are listed with file, row, seq and kind: modified_row, \
        missing_rows, inserted_row, reordered_rows, broken_link, bad_footer, missing_file, \
        duplicate_file, misplaced_file, unreadable_file, unexpected_object.\n\n\
        Examples:\n  \
        otel-audit verify ./audit-data\n  \
        otel-audit verify s3://audit-bucket/prod --from 2026-01-05 --to 2026-01-06T12:00:00Z\n  \
        otel-audit verify ./audit-data --json > report.json\n\n\
        Exit codes: 0 intact, 1 integrity problems found, 2 usage or I/O error."
    )]
    Verify(VerifyArgs),
    /// Show one stored event: every field, where it is stored, its chain link.
    #[command(
        after_help = "Events are found fast by their UUIDv7 time (the partitions \
        around it first); --from/--to limit the search.\n\nExamples:\n  \
        otel-audit show 0199b2c4-0000-7000-8000-000000000000 --store ./audit-data\n  \
        otel-audit show 0199b2c4-0000-7000-8000-000000000000 --store s3://audit/prod --json"
    )]
    Show(lookup::ShowArgs),
    /// List the events matching filters, in time order, read from the partitions of the period.
    #[command(
        after_help = "Only the partitions of --from/--to (receive time) and --tenant \
        are read. Events are printed in time order within each hour of receipt.\n\nExamples:\n  \
        otel-audit list --store ./audit-data --from 2026-01-05 --to 2026-01-06 --actor alice\n  \
        otel-audit list --store ./audit-data --category admin --action 'project.*' --limit 0\n  \
        otel-audit list --store ./audit-data --subject user-42 --json > subject-42.jsonl"
    )]
    List(lookup::ListArgs),
    /// Open an event's sealed (encrypted) content; the access is recorded at the collector first.
    #[command(
        after_help = "The access is sent to the collector as a data_access event \
        (action audit.content.decrypt: actor, reason, event, fields, key ids, outcome) and the \
        content is printed only after the collector acknowledged it. If the access cannot be \
        recorded, nothing is shown.\n\nExamples:\n  \
        otel-audit decrypt 0199b2c4-0000-7000-8000-000000000000 --store ./audit-data \\\n    \
        --key aes-2025-06=/run/secrets/aes-2025-06.hex --reason 'incident INC-1234' \\\n    \
        --collector http://127.0.0.1:4317\n  \
        otel-audit decrypt EVENT_ID --store s3://audit/prod --policy /etc/otel-audit/policy.yaml \\\n    \
        --reason 'DSAR 2026-17' --collector https://audit.internal:4318 --protocol http --token-file ~/.audit-token\n\n\
        Exit codes: 0 opened, 1 the key did not open it (the attempt is recorded), 2 usage or \
        I/O error, or the access could not be recorded."
    )]
    Decrypt(decrypt::DecryptArgs),
    /// Write a self-contained proof that one event is in the store as signed.
    #[command(
        after_help = "The proof holds the event's row, its Merkle path to its file's root, \
        and the signed digest listing that root: an auditor checks it with verify-proof, \
        offline, seeing no other event.\n\nExample:\n  \
        otel-audit prove 0199b2c4-0000-7000-8000-000000000000 --store ./audit-data --out proof.json\n  \
        otel-audit verify-proof proof.json --public-key digest.pub.pem"
    )]
    Prove(prove::ProveArgs),
    /// Check a proof from `otel-audit prove` offline, against trusted public keys.
    #[command(
        name = "verify-proof",
        after_help = "Exit codes: 0 the proof holds, 1 it does not (the reason is printed), 2 usage or I/O error."
    )]
    VerifyProof(prove::VerifyProofArgs),
    /// List what retention would delete: whole expired files, digests no
    /// longer needed, and what legal holds keep.
    #[command(after_help = "Examples:\n  \
        otel-audit prune --store ./audit-data --dry-run --keep system=90 --keep inference=365 --keep security=2555\n  \
        otel-audit prune --store s3://audit/prod --dry-run --rules collector.yaml --json\n\n\
        The collector deletes (retention.enabled), recording every deletion in the chain first.")]
    Prune(prune::PruneArgs),
    /// Ed25519 keys that sign digests: generate a pair, show a key's id.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a store to a backup (local or S3), incrementally, then verify the backup.
    #[command(
        mut_arg("from", backup::backup_from),
        mut_arg("to", backup::backup_to),
        after_help = "Copies every data file, then every digest, that the backup does not \
        already hold (same name and size, or same SHA-256 with --checksum); an interrupted \
        backup is resumed by running it again. An object of the same name with different \
        content is never overwritten: the backup stops with an error naming it.\n\n\
        Examples:\n  \
        otel-audit backup --from ./audit-data --to s3://audit-backup/prod\n  \
        otel-audit backup --from s3://audit-bucket/prod --to /mnt/backup/audit --checksum\n  \
        otel-audit backup --from ./audit-data --to s3://audit-backup/prod --public-key digest.pub --json\n\n\
        Exit codes: 0 copied and intact, 1 integrity problems in the backup, 2 usage or I/O error \
        (or a conflicting object)."
    )]
    Backup(backup::BackupArgs),
    /// Copy a backup back into a store (the same copy as backup, the other way), then verify it.
    #[command(
        mut_arg("from", backup::restore_from),
        mut_arg("to", backup::restore_to),
        after_help = "The same incremental, create-only copy as `backup`, from --from BACKUP_URL \
        to --to STORE_URL: objects already in the store are skipped, none is overwritten.\n\n\
        Examples:\n  \
        otel-audit restore --from s3://audit-backup/prod --to ./audit-data\n  \
        otel-audit restore --from /mnt/backup/audit --to s3://audit-bucket/prod --public-key digest.pub\n\n\
        Exit codes: 0 restored and intact, 1 integrity problems in the restored store, \
        2 usage or I/O error (or a conflicting object)."
    )]
    Restore(backup::BackupArgs),
    /// Write a report on a period: the integrity verdict, then activity,
    /// outcomes, actors, model and token use, safety, administrative actions.
    #[command(
        after_help = "One self-contained HTML page (inline SVG charts, nothing loaded from \
        the network) or Markdown tables for tickets. The integrity verdict at the top is verify's \
        over the same period; a store with problems gets a red banner listing them, and the \
        report is still written.\n\n\
        Examples:\n  \
        otel-audit report --store ./audit-data --from 2026-01-05 --to 2026-01-06 --out report.html\n  \
        otel-audit report --store ./audit-data --public-key digest.pub.pem --format markdown > r.md\n\n\
        Exit codes: 0 intact (or no data in the period), 1 integrity problems found (the report is \
        written), 2 usage or I/O error."
    )]
    Report(report::ReportArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new key pair: the private key (PKCS#8 PEM, mode 0600) for the
    /// collector's digests.signing_key_file, the public key (SPKI PEM) for auditors.
    #[command(after_help = "Example:\n  \
        otel-audit keys generate --private-key /etc/otel-audit/digest.pem --public-key digest.pub.pem\n  \
        otel-audit verify ./audit-data --public-key digest.pub.pem\n\n\
        The private key file is never overwritten. Rotate by generating a new pair and pointing \
        the collector at it; keep the old public key: verify takes --public-key more than once.")]
    Generate(KeysGenerateArgs),
    /// Print the key id of a PEM key (public or private): the id digests name.
    Id {
        /// The PEM file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Args)]
struct KeysGenerateArgs {
    /// Where to write the private key.
    #[arg(long, value_name = "FILE", default_value = "otel-audit-signing.pem")]
    private_key: PathBuf,
    /// Where to write the public key.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "otel-audit-signing.pub.pem"
    )]
    public_key: PathBuf,
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
    /// Sign hourly digests with this private key (PEM), as a collector does.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Flags,
}

#[derive(Args)]
struct VerifyArgs {
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(value_name = "URL")]
    store: String,
    #[command(flatten)]
    period: Period,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// A trusted public key (PEM) for digest signatures; repeat for keys
    /// rotated out. Without one, signatures are not checked.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Check that digests were made up to this time instead of now (for a
    /// copy of a store taken at that time).
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Only this tenant's files, chains and digests.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
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
            Command::Keys(k) => cmd_keys(k),
            Command::Show(a) => lookup::cmd_show(a).await,
            Command::List(a) => lookup::cmd_list(a).await,
            Command::Decrypt(a) => decrypt::cmd_decrypt(a).await,
            Command::Prove(a) => prove::cmd_prove(a).await,
            Command::Prune(a) => prune::cmd_prune(a).await,
            Command::VerifyProof(a) => prove::cmd_verify_proof(a),
            Command::Backup(a) => backup::cmd_backup(a, backup::Direction::Backup).await,
            Command::Restore(a) => backup::cmd_backup(a, backup::Direction::Restore).await,
            Command::Report(a) => report::cmd_report(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The hint function follows the error's sources itself.
            let hint = otel_audit_storage::store_error_hint(e.as_ref())
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default();
            eprintln!("otel-audit: error: {}{hint}", one_line(&e));
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
    let mut written = Vec::new();
    for r in results {
        let (enc, outcome) = r?;
        files += 1;
        bytes += enc.bytes.len() as u64;
        if outcome == WriteOutcome::AlreadyPresent {
            present += 1;
        }
        written.push((enc.file.clone(), DigestFile::of(&enc)));
    }
    let mut digests = 0;
    if let Some(key) = &a.signing_key {
        let signer = DigestSigner::load(key).context("--signing-key")?;
        digests = write_synthetic_digests(&store, written, start, a.hours, &signer).await?;
    }
    eprintln!(
        "wrote {} events in {files} files ({}) to {} in {:.1}s{}{}",
        a.events,
        human_bytes(bytes),
        store.url(),
        t0.elapsed().as_secs_f64(),
        if digests > 0 {
            format!("; {digests} signed digests")
        } else {
            String::new()
        },
        if present > 0 {
            format!("; {present} identical files were already there")
        } else {
            String::new()
        }
    );
    Ok(EXIT_OK)
}

/// Digests as a collector would have made them: one per chain and hour,
/// each file counted as stored at the end of its hour, the last one final.
async fn write_synthetic_digests(
    store: &Store,
    mut written: Vec<(otel_audit_storage::DataFile, DigestFile)>,
    start: DateTime<Utc>,
    hours: u32,
    signer: &DigestSigner,
) -> anyhow::Result<u64> {
    written.sort_by(|a, b| (&a.0.chain_id, a.0.first_seq).cmp(&(&b.0.chain_id, b.0.first_seq)));
    let mut by_chain: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (file, entry) in written {
        by_chain
            .entry(file.chain_id.clone())
            .or_default()
            .push((file, entry));
    }
    let mut n = 0;
    for (chain, files) in by_chain {
        let tenant = files[0].0.partition.tenant.clone();
        let mut dc = DigestChain::new(&chain, &tenant, 3600, start);
        let mut files = files.into_iter().peekable();
        for h in 0..hours {
            let end = start + chrono::Duration::hours(i64::from(h) + 1);
            while let Some((f, _)) = files.peek() {
                if f.partition.end() > end {
                    break;
                }
                let (_, entry) = files.next().expect("peeked");
                dc.add_file(entry);
            }
            let sealed = dc.seal(end, h + 1 == hours, signer);
            put_digest(store, &sealed).await?;
            n += 1;
        }
    }
    Ok(n)
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

/// `--from`/`--to`: a period of receive time (the partitions' time), so
/// only the hour partitions it overlaps are listed and read.
#[derive(Args)]
struct Period {
    /// From this time (RFC 3339 or YYYY-MM-DD, UTC): only partitions from
    /// then are read.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
}

impl Period {
    /// The period as a range, the start before the end.
    fn range(&self) -> anyhow::Result<TimeRange> {
        let range = TimeRange {
            from: self
                .from
                .as_deref()
                .map(|s| parse_time("--from", s))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|s| parse_time("--to", s))
                .transpose()?,
        };
        if let (Some(f), Some(t)) = (range.from, range.to)
            && f >= t
        {
            bail!("--from must be before --to");
        }
        Ok(range)
    }
}

async fn cmd_verify(a: VerifyArgs) -> anyhow::Result<u8> {
    let range = a.period.range()?;
    let as_of = a
        .as_of
        .as_deref()
        .map(|s| parse_time("--as-of", s))
        .transpose()?;
    let keys = load_public_keys(&a.public_keys)?;
    check_tenant(a.tenant.as_deref())?;
    let store = Store::open(&a.store, &a.s3.options())?;
    let opts = VerifyOptions {
        range,
        keys,
        as_of,
        tenant: a.tenant.clone(),
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

/// Checks a `--tenant` value, when given: it names a `tenant=` directory.
fn check_tenant(tenant: Option<&str>) -> anyhow::Result<()> {
    let Some(t) = tenant else { return Ok(()) };
    otel_audit_event::check_path_token(t, otel_audit_event::MAX_TENANT_BYTES)
        .map_err(|reason| anyhow::anyhow!("--tenant {t:?}: {reason}"))
}

/// Reads `--public-key` files into the trusted key set.
fn load_public_keys(files: &[PathBuf]) -> anyhow::Result<PublicKeys> {
    let mut keys = PublicKeys::new();
    for f in files {
        keys.load(f).context("--public-key")?;
    }
    Ok(keys)
}

fn cmd_keys(k: KeysCommand) -> anyhow::Result<u8> {
    match k {
        KeysCommand::Generate(a) => {
            if a.private_key.exists() {
                bail!(
                    "--private-key {}: the file exists; refusing to overwrite a signing key",
                    a.private_key.display()
                );
            }
            let signer = DigestSigner::generate()?;
            signer.write_pair(&a.private_key, &a.public_key)?;
            println!(
                "key id {}: private key {} (keep it secret: the collector's digests.signing_key_file), public key {} (for otel-audit verify --public-key)",
                signer.key_id(),
                a.private_key.display(),
                a.public_key.display()
            );
        }
        KeysCommand::Id { file } => {
            let mut keys = PublicKeys::new();
            println!("{}", keys.load(&file)?);
        }
    }
    Ok(EXIT_OK)
}

/// The CloudTrail-style line: digests, files, events, chains.
fn digest_line(r: &VerifyReport) -> String {
    let d = &r.digests;
    let chain_kinds = [
        ProblemKind::MissingRows,
        ProblemKind::MissingFile,
        ProblemKind::BrokenLink,
        ProblemKind::InsertedRow,
        ProblemKind::ReorderedRows,
        ProblemKind::MissingDigest,
        ProblemKind::BrokenDigestLink,
    ];
    let chains_ok = !r.problems.iter().any(|p| chain_kinds.contains(&p.kind));
    let mut line = format!(
        "{}/{} digests valid, {}/{} files valid, {} events, {}",
        d.digests_valid,
        d.digests,
        r.files_valid(),
        r.files_verified,
        r.events_verified,
        if chains_ok {
            "chains intact"
        } else {
            "chains BROKEN"
        }
    );
    if d.digests == 0 {
        line.push_str(" (no signed digests: deleting the newest files could not be detected)");
    } else if !d.signatures_checked {
        line.push_str(" (signatures NOT checked: pass --public-key)");
    }
    // Without any digest every file is "pending"; the note above says it all.
    if d.files_pending > 0 && d.digests > 0 {
        line.push_str(&format!(
            "; {} newest files not yet in a digest",
            d.files_pending
        ));
    }
    line
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
    println!("{}", digest_line(r));
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
